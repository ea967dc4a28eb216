/**
 * The reference model of tests/mvcc_model_test.ts: the MVCC store as it was before the columnar record table (one
 * object per version, per-key version arrays, an event array as the history). Kept verbatim in behaviour; the test
 * drives it and server/mvcc/store.ts with the same random operations and compares everything observable.
 */
import { Buffer } from "node:buffer";
import { Errors } from "../../server/errors.ts";
import { type BKey, fromBKey, type RangeEnd, toBKey } from "../../server/mvcc/keys.ts";
import { StateHasher } from "../../server/mvcc/hash.ts";

import {
  DELETE,
  isTombstone,
  type KeyValue,
  PUT,
  type RangeOptions,
  type RangeResult,
  type StoreEvent,
} from "../../server/mvcc/store.ts";
export { DELETE, type KeyValue, PUT, type RangeOptions, type RangeResult, type StoreEvent };

const EMPTY = Buffer.alloc(0);

/** The version of a key visible at `rev` in a list sorted by mod_revision, or null. */
function visibleAt(versions: KeyValue[], rev: number): KeyValue | null {
  let lo = 0, hi = versions.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (versions[mid].mod_revision <= rev) lo = mid + 1;
    else hi = mid;
  }
  if (lo === 0) return null;
  const kv = versions[lo - 1];
  return isTombstone(kv) ? null : kv;
}

/** Approximate bytes a record occupies, for the size quota and Status.dbSize. */
function sizeOf(kv: KeyValue): number {
  return kv.key.length + kv.value.length + 64;
}

/** The MVCC store. */
export class ReferenceStore {
  /** Latest committed revision; 1 for an empty store. */
  currentRev = 1;
  /** Revision of the last compaction, -1 if never compacted. */
  compactRev = -1;
  /** Bytes held by all versions (approximate). */
  sizeBytes = 0;

  #index = new SortedStrings();
  #versions = new Map<BKey, KeyValue[]>();
  /** Events in revision order, every event with revision >= max(compactRev, 1). */
  #history: StoreEvent[] = [];
  #listeners: Array<(events: StoreEvent[], rev: number) => void> = [];

  /** Registers a listener called synchronously after each revision is committed. */
  onCommit(fn: (events: StoreEvent[], rev: number) => void): void {
    this.#listeners.push(fn);
  }

  /** Number of keys that currently exist. */
  get keyCount(): number {
    let n = 0;
    for (const v of this.#versions.values()) if (!isTombstone(v[v.length - 1])) n++;
    return n;
  }

  /** Checks a read revision against the compaction point and the current revision. */
  checkRev(rev: number): number {
    if (rev <= 0) return this.currentRev;
    if (rev > this.currentRev) throw Errors.futureRev();
    if (rev < this.compactRev) throw Errors.compacted();
    return rev;
  }

  /** Reads [key, end) at a revision; the result's `rev` is the current revision (as etcd reports it). */
  range(key: BKey, end: RangeEnd, opts: RangeOptions = {}): RangeResult {
    const rev = this.checkRev(opts.rev ?? 0);
    return { ...this.#rangeAt(key, end, rev, opts.limit ?? 0, opts.countOnly ?? false), rev: this.currentRev };
  }

  #rangeAt(key: BKey, end: RangeEnd, rev: number, limit: number, countOnly: boolean): RangeResult {
    const kvs: KeyValue[] = [];
    let count = 0;
    if (end === "") {
      const v = this.#versions.get(key);
      const kv = v ? visibleAt(v, rev) : null;
      if (kv) {
        count = 1;
        if (!countOnly) kvs.push(kv);
      }
      return { kvs, count, rev };
    }
    if (end !== null && end <= key) return { kvs, count, rev };
    for (const k of this.#index.range(key, end)) {
      const kv = visibleAt(this.#versions.get(k)!, rev);
      if (!kv) continue;
      count++;
      if (!countOnly && (limit <= 0 || kvs.length < limit)) kvs.push(kv);
    }
    return { kvs, count, rev };
  }

  /** Starts a write transaction: all its changes share one revision, committed by `end()`. */
  write(): ReferenceTxn {
    return new ReferenceTxn(this);
  }

  /** @internal applies one change (used by ReferenceTxn). */
  _apply(ev: StoreEvent): void {
    const k = toBKey(ev.kv.key);
    let list = this.#versions.get(k);
    if (!list) {
      list = [];
      this.#versions.set(k, list);
      this.#index.insert(k);
    }
    list.push(ev.kv);
    this.sizeBytes += sizeOf(ev.kv);
  }

  /** @internal the visible record of a key at the latest state, including uncommitted changes of a txn. */
  _latest(k: BKey): KeyValue | null {
    const list = this.#versions.get(k);
    if (!list) return null;
    const kv = list[list.length - 1];
    return isTombstone(kv) ? null : kv;
  }

  /** @internal reads at rev including a txn's own writes. */
  _rangeRaw(key: BKey, end: RangeEnd, rev: number, limit: number, countOnly: boolean): RangeResult {
    return this.#rangeAt(key, end, rev, limit, countOnly);
  }

  /** @internal commits a revision's events. */
  _commit(events: StoreEvent[]): void {
    if (events.length === 0) return;
    this.currentRev++;
    for (const ev of events) this.#history.push(ev);
    for (const fn of this.#listeners) fn(events, this.currentRev);
  }

  /** Events with revision >= from (up to `max` revisions' worth, whole revisions only). */
  eventsSince(from: number, maxRevs = Infinity): StoreEvent[] {
    const h = this.#history;
    let lo = 0, hi = h.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (h[mid].kv.mod_revision < from) lo = mid + 1;
      else hi = mid;
    }
    if (maxRevs === Infinity) return h.slice(lo);
    const out: StoreEvent[] = [];
    let revs = 0, last = -1;
    for (let i = lo; i < h.length; i++) {
      const r = h[i].kv.mod_revision;
      if (r !== last) {
        if (++revs > maxRevs) break;
        last = r;
      }
      out.push(h[i]);
    }
    return out;
  }

  /**
   * Discards versions superseded at or before `rev` (the newest version <= rev of each key stays, unless it is a
   * tombstone) and the history below `rev`.
   */
  compact(rev: number): void {
    if (rev <= this.compactRev) throw Errors.compacted();
    if (rev > this.currentRev) throw Errors.futureRev();
    this.compactRev = rev;
    this.#pruneVersions(rev);
    let cut = 0;
    while (cut < this.#history.length && this.#history[cut].kv.mod_revision < rev) cut++;
    if (cut > 0) this.#history = this.#history.slice(cut);
  }

  /** Drops the versions superseded at or before `rev`, and a tombstone that is the newest version <= rev. */
  #pruneVersions(rev: number): void {
    const emptied: BKey[] = [];
    for (const [k, list] of this.#versions) {
      // index of the newest version <= rev
      let keep = -1;
      for (let i = list.length - 1; i >= 0; i--) {
        if (list[i].mod_revision <= rev) {
          keep = i;
          break;
        }
      }
      if (keep < 0) continue;
      let from = keep;
      if (isTombstone(list[keep])) from = keep + 1;
      if (from === 0) continue;
      for (let i = 0; i < from; i++) this.sizeBytes -= sizeOf(list[i]);
      list.splice(0, from);
      if (list.length === 0) emptied.push(k);
    }
    for (const k of emptied) this.#versions.delete(k);
    if (emptied.length > 0) {
      const gone = new Set(emptied);
      this.#index.filterOut((k) => gone.has(k));
    }
  }

  /**
   * Every version held, for snapshots: first the base versions older than the history window (key order), then
   * the history in revision order. Feeding them to `restore` rebuilds an identical store.
   */
  *dump(): Generator<KeyValue> {
    const start = this.#history.length > 0 ? this.#history[0].kv.mod_revision : Infinity;
    for (const k of this.#index.range("", null)) {
      for (const kv of this.#versions.get(k)!) if (kv.mod_revision < start) yield kv;
    }
    for (const ev of this.#history) yield ev.kv;
  }

  /** Rebuilds the store from `dump()` output. */
  restore(currentRev: number, compactRev: number, records: Iterable<KeyValue>): void {
    this.#index = new SortedStrings();
    this.#versions.clear();
    this.#history = [];
    this.sizeBytes = 0;
    this.currentRev = currentRev;
    this.compactRev = compactRev;
    for (const kv of records) {
      const k = toBKey(kv.key);
      const prev = this._latest(k);
      this._apply({ type: isTombstone(kv) ? DELETE : PUT, kv, prev });
      if (kv.mod_revision >= compactRev) {
        this.#history.push({ type: isTombstone(kv) ? DELETE : PUT, kv, prev });
      }
    }
    // the records at the compaction revision that compact() held for the history only are not versions
    if (compactRev > 0) this.#pruneVersions(compactRev);
  }

  /** Maintenance.HashKV, as MvccStore.hashKV: the versions at or below `rev` that a compaction at `rev` would keep. */
  hashKV(rev: number): { hash: number; rev: number; compactRev: number } {
    if (rev > 0 && rev <= this.compactRev) throw Errors.compacted();
    if (rev > this.currentRev) throw Errors.futureRev();
    const at = rev <= 0 ? this.currentRev : rev;
    const h = new StateHasher();
    for (const k of this.#index.range("", null)) {
      const list = this.#versions.get(k)!;
      for (let v = 0; v < list.length; v++) {
        const kv = list[v];
        if (kv.mod_revision > at) break;
        if (kv.mod_revision <= this.compactRev && v + 1 < list.length && list[v + 1].mod_revision <= at) continue;
        h.record(kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.lease, kv.value);
      }
    }
    return { hash: h.value, rev: at, compactRev: this.compactRev };
  }
}

/**
 * A write transaction. Changes are visible to the txn's own reads at once and become one revision at `end()`.
 * A txn with no change does not advance the revision.
 */
export class ReferenceTxn {
  readonly rev: number;
  readonly events: StoreEvent[] = [];
  #store: ReferenceStore;

  constructor(store: ReferenceStore) {
    this.#store = store;
    this.rev = store.currentRev + 1;
  }

  /** Reads at the latest state including this txn's changes. */
  range(key: BKey, end: RangeEnd, opts: RangeOptions = {}): RangeResult {
    const s = this.#store;
    const latest = this.events.length > 0 ? this.rev : s.currentRev;
    const rev = opts.rev && opts.rev > 0 ? opts.rev : latest;
    if (rev > latest) throw Errors.futureRev();
    if (rev < s.compactRev) throw Errors.compacted();
    // like etcd, the result carries the txn's latest revision, not the revision read at
    return { ...s._rangeRaw(key, end, rev, opts.limit ?? 0, opts.countOnly ?? false), rev: latest };
  }

  /** The current record of a key (including this txn's changes), or null. */
  get(key: BKey): KeyValue | null {
    return this.#store._latest(key);
  }

  /** Sets a key; returns the record it replaced. */
  put(key: BKey, value: Buffer, lease: string): { kv: KeyValue; prev: KeyValue | null } {
    const prev = this.#store._latest(key);
    const kv: KeyValue = {
      key: prev ? prev.key : fromBKey(key), // versions of a key share one key buffer
      create_revision: prev ? prev.create_revision : this.rev,
      mod_revision: this.rev,
      version: prev ? prev.version + 1 : 1,
      value,
      lease,
    };
    const ev: StoreEvent = { type: PUT, kv, prev };
    this.#store._apply(ev);
    this.events.push(ev);
    return { kv, prev };
  }

  /** Deletes the live keys in [key, end); returns the deleted records in key order. */
  deleteRange(key: BKey, end: RangeEnd): KeyValue[] {
    const s = this.#store;
    const latest = this.events.length > 0 ? this.rev : s.currentRev;
    const { kvs } = s._rangeRaw(key, end, latest, 0, false);
    for (const prev of kvs) {
      const kv: KeyValue = {
        key: prev.key,
        create_revision: 0,
        mod_revision: this.rev,
        version: 0,
        value: EMPTY,
        lease: "0",
      };
      const ev: StoreEvent = { type: DELETE, kv, prev };
      s._apply(ev);
      this.events.push(ev);
    }
    return kvs;
  }

  /** The revision a read inside this txn reports: the txn's own revision once it changed something. */
  get latestRev(): number {
    return this.events.length > 0 ? this.rev : this.#store.currentRev;
  }

  /** Commits: the revision advances by one if anything changed. Returns the store revision after the txn. */
  end(): number {
    this.#store._commit(this.events);
    return this.#store.currentRev;
  }
}

/** The reference's key index: a sorted array of keys (string order is byte order for store keys). */
class SortedStrings {
  #keys: BKey[] = [];

  #lowerBound(k: BKey): number {
    let lo = 0, hi = this.#keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#keys[mid] < k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  insert(k: BKey): void {
    const i = this.#lowerBound(k);
    if (this.#keys[i] !== k) this.#keys.splice(i, 0, k);
  }

  filterOut(drop: (k: BKey) => boolean): void {
    this.#keys = this.#keys.filter((k) => !drop(k));
  }

  /** Keys in [from, end); end null means no upper bound. */
  *range(from: BKey, end: BKey | null): Generator<BKey> {
    for (let i = this.#lowerBound(from); i < this.#keys.length; i++) {
      const k = this.#keys[i];
      if (end !== null && k >= end) return;
      yield k;
    }
  }
}
