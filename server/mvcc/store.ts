/**
 * The multi-version key-value store: every change gets a revision, old versions stay readable until compacted,
 * and every change is an event in the history that watchers replay from.
 *
 * Shape: a sorted key index (SortedKeys, over the keys' bytes in a KeyArena outside V8's heap) over a table of records,
 * one per version, in revision order (the table is also the history). Each key points at its newest record and each
 * record at the key's previous one, so a key's versions are a chain. The table is columnar (typed-array pages, no
 * object per version): a version costs ~56 bytes plus its value, which is not copied but referenced as (ArrayBuffer,
 * offset, length): a slice of the Raft log arena the value arrived in, or of the snapshot blob the state codec last
 * wrote or read (see state_codec.ts). Compaction takes effect at once for reads and drops the records in steps (a copy
 * of the kept ones into a new table, which then replaces the old), and copies the live values out of buffers that are
 * mostly dead. Reads build mvccpb.KeyValue objects (keepCase names) on demand; the history's events are built when read
 * (watch catch-up) and the recent ones memoized.
 * The store is driven by the apply layer only; it performs no I/O.
 */
import { Buffer } from "node:buffer";
import { Errors } from "../errors.ts";
import { type BKey, fromBKey, type RangeEnd, toBKey } from "./keys.ts";
import { KeyArena, keyBytes } from "./key_arena.ts";
import { PagedInt32Array } from "./paged_array.ts";
import { SortedKeys, SortedKeysBuilder } from "./sorted_keys.ts";
import { StateHasher } from "./hash.ts";

/** mvccpb.KeyValue as stored and sent. A tombstone has create_revision 0 (as in etcd's DELETE events). */
export interface KeyValue {
  key: Buffer;
  create_revision: number;
  mod_revision: number;
  version: number;
  value: Buffer;
  /** lease ID as a decimal string, "0" for none */
  lease: string;
}

/** mvccpb.Event.EventType */
export const PUT = 0, DELETE = 1;

/** One change: the new record (a tombstone for DELETE) and the record it replaced, if any. */
export interface StoreEvent {
  type: typeof PUT | typeof DELETE;
  kv: KeyValue;
  prev: KeyValue | null;
  /**
   * @internal its `events` field of a WatchResponse, without and with the previous key-value, once encoded (by
   * `eventField` in watch/encode.ts; held here, not in a WeakMap: a WeakMap entry per event made every full
   * collection trace them as ephemerons)
   */
  field?: Uint8Array;
  fieldPrev?: Uint8Array;
}

/** The fields of one record (`MvccStore.record`): a key's version as the store holds it. */
export interface RecordFields {
  /** a view of the key's bytes, valid until the store's next write */
  key: Uint8Array;
  create: number;
  mod: number;
  version: number;
  /** lease ID as a decimal string, "0" for none */
  lease: string;
  value: Uint8Array;
}

/** A record's fields as `MvccStore._readRecord` leaves them. */
export class RecordCursor {
  keyId = 0;
  create = 0;
  mod = 0;
  version = 0;
  /** lease ID as a decimal string, "0" for none */
  lease = "0";
  /** where the value's bytes are (null: an empty value) */
  buf: ArrayBufferLike | null = null;
  off = 0;
  len = 0;
  /** whether `buf` is one of the store's own value buffers (see `MvccStore._ownBuffer`) */
  owned = false;
}

/** A resumable walk over key ids (SortedKeys.walk): visits up to `max` more, returns whether it is done. */
type KeyWalk = (max: number, fn: (kid: number) => void) => boolean;

/** Options of a read. */
export interface RangeOptions {
  /** revision to read at; <= 0 means the latest */
  rev?: number;
  /** maximum number of kvs returned; 0 = all */
  limit?: number;
  /** count only, return no kvs */
  countOnly?: boolean;
}

/** Result of a read: the records (key order), total matching count and the revision read at. */
export interface RangeResult {
  kvs: KeyValue[];
  count: number;
  rev: number;
}

const EMPTY = Buffer.alloc(0);
/** The upper bound of a range (not "" for a single key) as bytes, for the key index; null: no bound. */
const endBytes = (end: BKey | null): Uint8Array | null => end === null ? null : keyBytes(end);

/** Whether a record is a deletion marker. */
export function isTombstone(kv: KeyValue): boolean {
  return kv.create_revision === 0;
}

// ---------------------------------------------------------------------------------------------------------------
// The record table

const PAGE_BITS = 11;
const PAGE = 1 << PAGE_BITS;
const MASK = PAGE - 1;
/** float64 columns: revisions, version and the value's byte offset (exact integers up to 2^53) */
const F_MOD = 0, F_CREATE = 1, F_VER = 2, F_OFF = 3, NF = 4;
/** int32 columns: key id, previous record of the key (-1 none), lease id, value buffer id (-1 empty), length, flags */
const I_KEY = 0, I_PREV = 1, I_LEASE = 2, I_BUF = 3, I_LEN = 4, I_FLAGS = 5, NI = 6;
/**
 * Flag of a record that is held for the history only, not as a version of its key: a tombstone at the compaction
 * revision, an older record of the same key at that revision, or the predecessor of the key's event at that revision
 * (its `prev`). Versions are what reads, hashKV, dump's base part and sizeBytes see.
 */
const HISTORY_ONLY = 1;

class Page {
  readonly f = new Float64Array(PAGE * NF);
  readonly i = new Int32Array(PAGE * NI);
}

/** Records in pages of PAGE, addressed by index. */
class Table {
  pages: Page[] = [];
  length = 0;

  push(): number {
    const idx = this.length++;
    if ((idx >>> PAGE_BITS) === this.pages.length) this.pages.push(new Page());
    return idx;
  }

  /** Drops the records from `n` on (and the pages no longer used). */
  truncate(n: number): void {
    this.length = n;
    this.pages.length = (n + MASK) >>> PAGE_BITS;
  }

  f(idx: number, col: number): number {
    return this.pages[idx >>> PAGE_BITS].f[(idx & MASK) * NF + col];
  }

  setF(idx: number, col: number, v: number): void {
    this.pages[idx >>> PAGE_BITS].f[(idx & MASK) * NF + col] = v;
  }

  i(idx: number, col: number): number {
    return this.pages[idx >>> PAGE_BITS].i[(idx & MASK) * NI + col];
  }

  setI(idx: number, col: number, v: number): void {
    this.pages[idx >>> PAGE_BITS].i[(idx & MASK) * NI + col] = v;
  }

  /** Appends a copy of record `from` of table `src`; returns its index. */
  pushCopy(src: Table, from: number): number {
    const to = this.push();
    const a = src.pages[from >>> PAGE_BITS], b = this.pages[to >>> PAGE_BITS];
    const fa = (from & MASK) * NF, fb = (to & MASK) * NF, ia = (from & MASK) * NI, ib = (to & MASK) * NI;
    for (let c = 0; c < NF; c++) b.f[fb + c] = a.f[fa + c];
    for (let c = 0; c < NI; c++) b.i[ib + c] = a.i[ia + c];
    return to;
  }
}

/** Record bytes counted against the quota (Status.dbSize): key + value + 64, as before. */
const OVERHEAD = 64;

/** Events built for history readers (watch catch-up) are kept for reuse (their encodings are cached on them). */
const EVENT_MEMO = 4096;

/** A value buffer below this size, or used by live values for at least a quarter, is never repacked. */
const REPACK_MIN_BYTES = 8192;

/** A compaction's steps look at the clock once per this many keys or records (a power of two, minus one). */
const CLOCK_EVERY_MASK = 63;

/**
 * A compaction under way ({@link MvccStore.beginCompaction}): the kept records are copied into a new table, a step at
 * a time, while the old one serves; the new one replaces it when the copy has caught up.
 */
interface CompactionJob {
  rev: number;
  /** the table's length at the first step: the records it may drop (later ones are newer than `rev`) */
  n: number;
  /** key ids at the first step: the keys the marking visits */
  keys: number;
  /** per record below `n`: 0 dropped, 1 kept as a version, 2 kept for the history only */
  mark: Uint8Array;
  /** the next key id to mark */
  nextKid: number;
  /** key ids left without a kept record below `n`: gone at the swap unless written since */
  emptied: number[];
  /** bytes of kept values per buffer id of the old table (found by the marking) */
  bufLive: Float64Array;
  /** per buffer id of the old table: 1 if its values are packed into new buffers (chosen once the marking is done) */
  moved: Uint8Array | null;
  /** the next record of the old table to copy */
  next: number;
  table: Table;
  /** newest record of each key id, in the new table */
  latest: PagedInt32Array;
  /** old record index → new (-1: dropped) */
  remap: Int32Array;
  leases: Interned<string>;
  /** old lease id → new */
  leaseMap: number[];
  bufs: Interned<ArrayBufferLike>;
  /** old buffer id → new (-1: not yet seen) */
  bufMap: Int32Array;
  /** the buffer packed values go to, its id in the new table and the bytes used */
  packed: Uint8Array | null;
  packedId: number;
  packedPos: number;
  /** the new table's first record at or after `rev` (-1: none yet) */
  histStart: number;
  /** what `sizeBytes` loses at the swap */
  sizeDrop: number;
}

/** A copy of `a` with room for at least `need` elements (twice its length or more); new slots hold `fill`. */
function grown(a: Int32Array, need: number, fill: number): Int32Array {
  const b = new Int32Array(Math.max(need, a.length * 2));
  if (fill !== 0) b.fill(fill, a.length);
  b.set(a);
  return b;
}

/** Values numbered in order of first use, so that the record table stores a number instead. */
class Interned<T> {
  readonly values: T[];
  readonly #ids: Map<T, number>;

  constructor(values: T[]) {
    this.values = values;
    this.#ids = new Map(values.map((v, i) => [v, i]));
  }

  /** The number of `v` (given one on first use). */
  id(v: T): number {
    let id = this.#ids.get(v);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(v);
      this.#ids.set(v, id);
    }
    return id;
  }
}

/** @internal the records a dump walks: the base versions below `histStart`, the history up to `end`. */
export interface DumpBounds {
  histStart: number;
  end: number;
}

/** The MVCC store. */
export class MvccStore {
  /** Latest committed revision; 1 for an empty store. */
  currentRev = 1;
  /** Revision of the last compaction, -1 if never compacted. */
  compactRev = -1;
  /** Bytes held by all versions (approximate). */
  sizeBytes = 0;

  /** key id → key bytes; an id keeps its key while the key has records (the index maps key → id) */
  #keys = new KeyArena();
  #index = new SortedKeys(this.#keys);
  /** the bytes of the key of a lookup (see #probe) */
  #scratch = new Uint8Array(1024);
  #t = new Table();
  /** index of the first record of the history (every record from it on has revision >= max(compactRev, 1)) */
  #histStart = 0;
  /** newest record of each key id; -1 for a free id */
  #latest = new PagedInt32Array();
  #freeKeyIds: number[] = [];
  /** lease IDs of records (id 0 is no lease) */
  #leases = new Interned(["0"]);
  /** buffers the values live in */
  #bufs = new Interned<ArrayBufferLike>([]);
  /**
   * the buffers of #bufs that hold values only (the store's own: a compaction's repack, a snapshot encode's move, a
   * restored snapshot blob); the others are buffers of requests (the Raft log's arena chunks), where a value pins the
   * rest of its chunk: a snapshot encode moves those values out (`_moveValue`)
   */
  #owned = new WeakSet<ArrayBufferLike>();
  /** #owned by buffer id of #bufs, filled as asked (reset when #bufs is rebuilt) */
  #ownedById: boolean[] = [];
  #memo = new Map<number, StoreEvent>();
  #listeners: Array<(events: StoreEvent[], rev: number) => void> = [];
  #beforeRestructure = new Set<() => void>();
  /** the snapshot encodes under way (`_dumpBegin`): a subset of #beforeRestructure */
  #dumps = new Set<() => void>();
  /** the revision of a compaction begun whose first step has not run yet (-1: none) */
  #pendingRev = -1;
  /** the compaction under way, from its first step on */
  #job: CompactionJob | null = null;
  /** between `_restoreBegin` and `_restoreEnd`: key → id, and the key index being built (once, at the end) */
  #restoring: SortedKeysBuilder | null = null;
  /**
   * between `_restoreBegin` and `_restoreEnd` of a restore from a key table (`_restoreKey`): the key index, built as
   * the keys come, and how many of its keys have records so far
   */
  #restoredKeys: { index: SortedKeys; withRecords: number } | null = null;

  /** Registers a listener called synchronously after each revision is committed. */
  onCommit(fn: (events: StoreEvent[], rev: number) => void): void {
    this.#listeners.push(fn);
  }

  /** Number of keys that currently exist. */
  get keyCount(): number {
    let n = 0;
    for (let kid = 0; kid < this.#latest.length; kid++) {
      const idx = this.#latest.get(kid);
      if (idx >= 0 && this.#t.f(idx, F_CREATE) !== 0) n++;
    }
    return n;
  }

  /** Number of records held (versions and history), for diagnostics. */
  get recordCount(): number {
    return this.#t.length;
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
      const kid = this.#index.get(this.#probe(key));
      const idx = kid === undefined ? -1 : this.#visible(kid, rev);
      if (idx >= 0) {
        count = 1;
        if (!countOnly) kvs.push(this.#kv(idx));
      }
      return { kvs, count, rev };
    }
    if (end !== null && end <= key) return { kvs, count, rev };
    this.#index.forEach(this.#probe(key), endBytes(end), (kid) => {
      const idx = this.#visible(kid, rev);
      if (idx < 0) return;
      count++;
      if (!countOnly && (limit <= 0 || kvs.length < limit)) kvs.push(this.#kv(idx));
    });
    return { kvs, count, rev };
  }

  /**
   * A read of [key, end) at revision `rev` (checked as `range` checks it) in steps, for reads too large for one turn
   * of the event loop: see {@link RangeScan}.
   */
  scan(key: BKey, end: RangeEnd, rev: number, visit: (record: number) => void): RangeScan {
    rev = this.checkRev(rev);
    let walk: KeyWalk;
    if (end === "") {
      const kid = this.#index.get(this.#probe(key));
      walk = (max, fn) => {
        if (kid !== undefined && max > 0) fn(kid);
        return true;
      };
    } else if (end !== null && end <= key) walk = () => true;
    else walk = this.#index.walk(keyBytes(key), endBytes(end));
    return new RangeScan(walk, (kid) => this.#visible(kid, rev), visit, this.#beforeRestructure);
  }

  /** @internal the mvccpb.KeyValue of a record handed out by `scan` (a new object). */
  _kv(record: number): KeyValue {
    return this.#kv(record);
  }

  /** The record of key id `kid` visible at `rev`, or -1 (none, or a tombstone). */
  #visible(kid: number, rev: number): number {
    const pages = this.#t.pages;
    let idx = this.#latest.get(kid);
    while (idx >= 0) {
      const p = pages[idx >>> PAGE_BITS], j = idx & MASK;
      if (p.f[j * NF + F_MOD] <= rev) {
        if (p.f[j * NF + F_CREATE] === 0 || (p.i[j * NI + I_FLAGS] & HISTORY_ONLY) !== 0) return -1;
        return idx;
      }
      idx = p.i[j * NI + I_PREV];
    }
    return -1;
  }

  /** The record as an mvccpb.KeyValue (a new object). */
  #kv(idx: number, key?: Buffer): KeyValue {
    const p = this.#t.pages[idx >>> PAGE_BITS];
    const f = (idx & MASK) * NF, i = (idx & MASK) * NI;
    const b = p.i[i + I_BUF];
    return {
      key: key ?? this.#keys.buffer(p.i[i + I_KEY]),
      create_revision: p.f[f + F_CREATE],
      mod_revision: p.f[f + F_MOD],
      version: p.f[f + F_VER],
      value: b < 0 ? EMPTY : Buffer.from(this.#bufs.values[b], p.f[f + F_OFF], p.i[i + I_LEN]),
      lease: this.#leases.values[p.i[i + I_LEASE]],
    };
  }

  /** The event of history record `idx` (a new object unless memoized). */
  #event(idx: number, key?: Buffer): StoreEvent {
    const t = this.#t;
    const k = key ?? this.#keys.buffer(t.i(idx, I_KEY));
    const p = t.i(idx, I_PREV);
    return {
      type: t.f(idx, F_CREATE) === 0 ? DELETE : PUT,
      kv: this.#kv(idx, k),
      prev: p >= 0 && t.f(p, F_CREATE) !== 0 ? this.#kv(p, k) : null,
      field: undefined,
      fieldPrev: undefined,
    };
  }

  /** Key `k` as bytes, in a buffer reused by the next call (a long key gets its own). */
  #probe(k: BKey): Uint8Array {
    return keyBytes(k, this.#scratch);
  }

  #keyId(k: BKey): number {
    const probe = this.#probe(k);
    let kid = this.#index.get(probe);
    if (kid === undefined) {
      kid = this.#freeKeyIds.pop();
      if (kid === undefined) {
        kid = this.#latest.length;
        this.#latest.push(-1);
      }
      this.#keys.set(kid, probe);
      this.#index.insert(kid);
    }
    return kid;
  }

  /** Appends a record as the newest of its key; returns its index. */
  #append(
    kid: number,
    create: number,
    mod: number,
    version: number,
    lease: string,
    buf: ArrayBufferLike | null,
    off: number,
    len: number,
  ): number {
    const t = this.#t;
    const idx = t.push();
    t.setF(idx, F_MOD, mod);
    t.setF(idx, F_CREATE, create);
    t.setF(idx, F_VER, version);
    t.setF(idx, F_OFF, len > 0 ? off : 0);
    t.setI(idx, I_KEY, kid);
    t.setI(idx, I_PREV, this.#latest.get(kid));
    t.setI(idx, I_LEASE, lease === "0" ? 0 : this.#leases.id(lease));
    t.setI(idx, I_BUF, len > 0 ? this.#bufs.id(buf!) : -1);
    t.setI(idx, I_LEN, len);
    t.setI(idx, I_FLAGS, 0);
    this.#latest.set(kid, idx);
    this.sizeBytes += this.#keys.length(kid) + len + OVERHEAD;
    return idx;
  }

  /** Starts a write transaction: all its changes share one revision, committed by `end()`. */
  write(): WriteTxn {
    return new WriteTxn(this);
  }

  /** @internal the newest record of a key including uncommitted changes of a txn, if not a tombstone. */
  _latest(k: BKey): KeyValue | null {
    const kid = this.#index.get(this.#probe(k));
    if (kid === undefined) return null;
    const idx = this.#latest.get(kid);
    return idx < 0 || this.#t.f(idx, F_CREATE) === 0 ? null : this.#kv(idx);
  }

  /** @internal a put at revision `rev` (used by WriteTxn). */
  _put(k: BKey, value: Buffer, lease: string, rev: number): StoreEvent {
    const kid = this.#keyId(k);
    const t = this.#t;
    const p = this.#latest.get(kid);
    const live = p >= 0 && t.f(p, F_CREATE) !== 0;
    const key = fromBKey(k);
    const prev = live ? this.#kv(p, key) : null;
    const create = prev ? prev.create_revision : rev;
    const version = prev ? prev.version + 1 : 1;
    this.#append(kid, create, rev, version, lease, value.buffer, value.byteOffset, value.length);
    const kv: KeyValue = { key, create_revision: create, mod_revision: rev, version, value, lease };
    return { type: PUT, kv, prev, field: undefined, fieldPrev: undefined };
  }

  /** @internal deletes the live keys of [key, end) at revision `rev` (used by WriteTxn). */
  _deleteRange(key: BKey, end: RangeEnd, rev: number): StoreEvent[] {
    const kids: number[] = [];
    if (end === "") {
      const kid = this.#index.get(this.#probe(key));
      if (kid !== undefined) kids.push(kid);
    } else if (end === null || end > key) {
      this.#index.forEach(this.#probe(key), endBytes(end), (kid) => kids.push(kid));
    }
    const events: StoreEvent[] = [];
    const t = this.#t;
    for (const kid of kids) {
      const p = this.#latest.get(kid);
      if (p < 0 || t.f(p, F_CREATE) === 0) continue;
      const prev = this.#kv(p);
      this.#append(kid, 0, rev, 0, "0", null, 0, 0);
      const kv: KeyValue = {
        key: prev.key,
        create_revision: 0,
        mod_revision: rev,
        version: 0,
        value: EMPTY,
        lease: "0",
      };
      events.push({ type: DELETE, kv, prev, field: undefined, fieldPrev: undefined });
    }
    return events;
  }

  /** @internal reads at rev including a txn's own writes. */
  _rangeRaw(key: BKey, end: RangeEnd, rev: number, limit: number, countOnly: boolean): RangeResult {
    return this.#rangeAt(key, end, rev, limit, countOnly);
  }

  /** @internal the number of records held: where a write txn starts, for `_rollback`. */
  _records(): number {
    return this.#t.length;
  }

  /** @internal drops every record from `records` on (an uncommitted txn), as if it never ran. */
  _rollback(records: number, sizeBytes: number): void {
    const t = this.#t;
    for (let idx = t.length - 1; idx >= records; idx--) {
      const kid = t.i(idx, I_KEY);
      const prev = t.i(idx, I_PREV);
      this.#latest.set(kid, prev);
      if (prev >= 0) continue;
      // the key was new in this txn: free its id again
      this.#index.delete(kid);
      this.#keys.free(kid);
      this.#freeKeyIds.push(kid);
    }
    t.truncate(records);
    this.sizeBytes = sizeBytes;
  }

  /** @internal commits a revision's events. */
  _commit(events: StoreEvent[]): void {
    if (events.length === 0) return;
    this.currentRev++;
    for (const fn of this.#listeners) fn(events, this.currentRev);
  }

  /** Events with revision >= from (up to `max` revisions' worth, whole revisions only). */
  eventsSince(from: number, maxRevs = Infinity): StoreEvent[] {
    // none below the compaction point: a compaction under way still holds them
    if (from < this.compactRev) from = this.compactRev;
    const t = this.#t;
    let lo = this.#histStart, hi = t.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t.f(mid, F_MOD) < from) lo = mid + 1;
      else hi = mid;
    }
    const out: StoreEvent[] = [];
    let revs = 0, last = -1;
    for (let i = lo; i < t.length; i++) {
      const r = t.f(i, F_MOD);
      if (r > this.currentRev) break; // a txn being applied
      if (r !== last) {
        if (++revs > maxRevs) break;
        last = r;
      }
      let ev = this.#memo.get(i);
      if (!ev) {
        ev = this.#event(i);
        if (this.#memo.size >= EVENT_MEMO) this.#trimMemo();
        this.#memo.set(i, ev);
      }
      out.push(ev);
    }
    return out;
  }

  #trimMemo(): void {
    let drop = this.#memo.size - EVENT_MEMO / 2;
    for (const i of this.#memo.keys()) {
      if (drop-- <= 0) break;
      this.#memo.delete(i);
    }
  }

  /**
   * Discards versions superseded at or before `rev` (the newest version <= rev of each key stays, unless it is a
   * tombstone) and the history below `rev`, at once: {@link beginCompaction} and then {@link settleCompaction}.
   */
  compact(rev: number): void {
    this.beginCompaction(rev);
    this.settleCompaction();
  }

  /**
   * Compacts at `rev` as etcd does: reads below `rev` are refused from the call on, and what the store sees at `rev`
   * and later is the same as after `compact(rev)`; the records are dropped in steps (`compactionStep`), as etcd
   * deletes them from its backend in batches after the apply. Until the last step `sizeBytes` and `recordCount` still
   * count them. A compaction still under way is finished first, at once.
   */
  beginCompaction(rev: number): void {
    if (rev <= this.compactRev) throw Errors.compacted();
    if (rev > this.currentRev) throw Errors.futureRev();
    this.settleCompaction();
    this.compactRev = rev;
    this.#pendingRev = rev;
  }

  /**
   * A compaction's first step: the records it may drop are those held now (the later ones are newer than its
   * revision), the buffers as numbered now (a snapshot encode moves values between buffers and renumbers them at its
   * end: the steps wait for an encode under way).
   */
  #newJob(rev: number): CompactionJob {
    const n = this.#t.length, bufs = this.#bufs.values.length;
    return {
      rev,
      n,
      keys: this.#latest.length,
      mark: new Uint8Array(n),
      nextKid: 0,
      emptied: [],
      bufLive: new Float64Array(bufs),
      moved: null,
      next: 0,
      table: new Table(),
      latest: new PagedInt32Array(),
      remap: new Int32Array(Math.max(16, n + (n >>> 3))),
      leases: new Interned(["0"]),
      leaseMap: [0],
      bufs: new Interned<ArrayBufferLike>([]),
      bufMap: new Int32Array(bufs).fill(-1),
      packed: null,
      packedId: -1,
      packedPos: 0,
      histStart: -1,
      sizeDrop: 0,
    };
  }

  /** Drops a compaction under way (the store's contents are replaced). */
  #dropCompaction(): void {
    this.#pendingRev = -1;
    this.#job = null;
  }

  /** Whether a compaction's records are still being dropped (see `beginCompaction`). */
  get compacting(): boolean {
    return this.#job !== null || this.#pendingRev >= 0;
  }

  /** Drops records of the compaction under way for about `ms`; returns whether it is done (or none is under way). */
  compactionStep(ms: number): boolean {
    if (!this.compacting) return true;
    if (this.#dumps.size > 0) return false; // a snapshot encode under way: see #newJob
    if (!this.#job) {
      this.#job = this.#newJob(this.#pendingRev);
      this.#pendingRev = -1;
    }
    const job = this.#job, stop = performance.now() + ms;
    if (job.nextKid < job.keys && !this.#markStep(job, stop)) return false;
    job.moved ??= this.#chooseRepack(job);
    if (!this.#copyStep(job, stop)) return false;
    this.#swapIn(job);
    return true;
  }

  /** Finishes the compaction under way, if any, at once. */
  settleCompaction(): void {
    if (!this.compacting) return;
    this.#finishDumps();
    // with no limit on time a step stops short only at the records of a txn being applied
    if (!this.compactionStep(Infinity)) throw new Error("store: a compaction cannot finish inside a write txn");
  }

  /**
   * Marks the records below `job.n` a key at a time: 1 kept as a version, 2 kept for the history only, 0 dropped
   * (those the walk does not reach). Records written since the compaction began are newer than its revision: kept.
   */
  #markStep(job: CompactionJob, stop: number): boolean {
    const t = this.#t, rev = job.rev, mark = job.mark, n = job.n;
    while (job.nextKid < job.keys) {
      const kid = job.nextKid++;
      job.latest.push(-1);
      let idx = this.#latest.get(kid);
      while (idx >= n) idx = t.i(idx, I_PREV);
      const had = idx >= 0; // records below n (a free id, or a key new since, has none)
      let atRev = false; // a record of this key at exactly `rev` was seen: it is the newest version <= rev
      let kept = false;
      while (idx >= 0) {
        const m = t.f(idx, F_MOD);
        const tomb = t.f(idx, F_CREATE) === 0;
        const historyOnly = (t.i(idx, I_FLAGS) & HISTORY_ONLY) !== 0;
        let v = 0;
        if (m > rev) {
          v = historyOnly ? 2 : 1;
        } else if (m === rev) {
          v = atRev || tomb || historyOnly ? 2 : 1;
          atRev = true;
        } else {
          // the newest version < rev: kept as the key's base version unless a tombstone, or, when the key has an
          // event at `rev`, kept as that event's previous record
          if (!tomb && !historyOnly) v = atRev ? 2 : 1;
          else if (!tomb && atRev) v = 2;
        }
        if (v !== 0) {
          mark[idx] = v;
          kept = true;
          const b = t.i(idx, I_BUF);
          if (b >= 0) job.bufLive[b] += t.i(idx, I_LEN);
        }
        if (m < rev) break;
        idx = t.i(idx, I_PREV);
      }
      if (had && !kept) job.emptied.push(kid);
      if ((kid & CLOCK_EVERY_MASK) === 0 && performance.now() >= stop) return false;
    }
    return true;
  }

  /**
   * Copies the kept records, in order, into the table that replaces the store's: the records below `job.n` as
   * marked, then every record written since (up to the store's end, which moves while the copy goes on). Values in
   * buffers that are mostly dead are copied into one new buffer on the way (see REPACK_MIN_BYTES).
   */
  #copyStep(job: CompactionJob, stop: number): boolean {
    const t = this.#t, t2 = job.table, n = job.n, keys = this.#keys;
    for (;;) {
      const idx = job.next;
      if (idx >= t.length || t.f(idx, F_MOD) > this.currentRev) return idx >= t.length; // the end, or a txn being applied
      job.next++;
      const kid = t.i(idx, I_KEY);
      let m = 1;
      if (idx < n) {
        m = job.mark[idx];
        if (m !== 1 && (t.i(idx, I_FLAGS) & HISTORY_ONLY) === 0) {
          job.sizeDrop += keys.length(kid) + t.i(idx, I_LEN) + OVERHEAD;
        }
      }
      if (idx >= job.remap.length) job.remap = grown(job.remap, idx + 1, 0);
      if (m === 0) {
        job.remap[idx] = -1;
      } else {
        // the same fields, with the previous record, the lease and the buffer renumbered for the new table
        const w = t2.pushCopy(t, idx);
        const p = t.i(idx, I_PREV);
        t2.setI(w, I_PREV, p >= 0 ? job.remap[p] : -1);
        if (idx < n) t2.setI(w, I_FLAGS, m === 2 ? HISTORY_ONLY : 0);
        const lid = t.i(idx, I_LEASE);
        if (lid !== 0) t2.setI(w, I_LEASE, job.leaseMap[lid] ??= job.leases.id(this.#leases.values[lid]));
        const b = t.i(idx, I_BUF);
        if (b >= 0) t2.setI(w, I_BUF, this.#copyBuf(job, b, t.f(idx, F_OFF), t.i(idx, I_LEN), w));
        while (job.latest.length <= kid) job.latest.push(-1);
        job.latest.set(kid, w);
        if (job.histStart < 0 && t.f(idx, F_MOD) >= job.rev) job.histStart = w;
        job.remap[idx] = w;
      }
      if ((idx & CLOCK_EVERY_MASK) === 0 && performance.now() >= stop) return false;
    }
  }

  /** The buffers whose live values are moved into one new buffer: at least REPACK_MIN_BYTES, under a quarter live. */
  #chooseRepack(job: CompactionJob): Uint8Array {
    const bufs = this.#bufs.values, live = job.bufLive;
    const moved = new Uint8Array(live.length);
    let total = 0;
    for (let b = 0; b < live.length; b++) {
      if (bufs[b].byteLength >= REPACK_MIN_BYTES && live[b] * 4 < bufs[b].byteLength) {
        moved[b] = 1;
        total += live[b];
      }
    }
    if (total > 0) this.#newPacked(job, total);
    return moved;
  }

  #newPacked(job: CompactionJob, bytes: number): void {
    job.packed = new Uint8Array(bytes);
    this.#owned.add(job.packed.buffer);
    job.packedPos = 0;
    job.packedId = job.bufs.id(job.packed.buffer);
  }

  /** The new table's buffer id of a value in buffer `b` of the old one; a moved value is copied (record `w`). */
  #copyBuf(job: CompactionJob, b: number, off: number, len: number, w: number): number {
    if (b < job.moved!.length && job.moved![b] === 1) {
      // a record written since the compaction began may use a moved buffer too: it gets a buffer of its own
      if (!job.packed || job.packedPos + len > job.packed.length) this.#newPacked(job, Math.max(len, 65536));
      job.packed!.set(new Uint8Array(this.#bufs.values[b], off, len), job.packedPos);
      job.table.setF(w, F_OFF, job.packedPos);
      job.packedPos += len;
      return job.packedId;
    }
    if (b >= job.bufMap.length) job.bufMap = grown(job.bufMap, b + 1, -1);
    let id = job.bufMap[b];
    if (id < 0) id = job.bufMap[b] = job.bufs.id(this.#bufs.values[b]);
    return id;
  }

  /**
   * The copy is complete: the new table replaces the old one. Keys left without records lose their ids; reads in
   * slices that still walk the old table finish first.
   */
  #swapIn(job: CompactionJob): void {
    this.#dropCompaction();
    this.#restructuring();
    const t2 = job.table;
    this.#t = t2;
    this.#histStart = job.histStart < 0 ? t2.length : job.histStart;
    while (job.latest.length < this.#latest.length) job.latest.push(-1);
    const latest = job.latest;
    // written since the marking: the key has records again
    const gone = job.emptied.filter((kid) => latest.get(kid) < 0);
    this.#latest = latest;
    // a few keys are deleted from the index one by one; many at once in one pass
    if (gone.length * 64 < this.#index.size) {
      for (const kid of gone) this.#index.delete(kid);
    } else if (gone.length > 0) {
      const set = new Set(gone);
      this.#index.filterOut((kid) => set.has(kid));
    }
    for (const kid of gone) {
      this.#keys.free(kid);
      this.#freeKeyIds.push(kid);
    }
    this.#leases = job.leases;
    this.#useBufs(job.bufs);
    this.#memo.clear();
    this.sizeBytes -= job.sizeDrop;
  }

  /** Records of key id `kid` that are versions, oldest first. */
  #versionsOf(kid: number): number[] {
    const t = this.#t;
    const out: number[] = [];
    for (let idx = this.#latest.get(kid); idx >= 0; idx = t.i(idx, I_PREV)) {
      if ((t.i(idx, I_FLAGS) & HISTORY_ONLY) === 0) out.push(idx);
    }
    return out.reverse();
  }

  /**
   * Every version held, for snapshots: first the base versions older than the history window (key order), then
   * the history in revision order. Feeding them to `restore` rebuilds an identical store.
   */
  *dump(): Generator<KeyValue> {
    for (const r of this.dumpRecords()) {
      yield this.#kv(r);
    }
  }

  /**
   * @internal `dump()` as record handles (read them with `record`), as of the call or of `bounds` (from
   * `_dumpBounds`, to walk the same records again): the walk may be resumed after later writes (a snapshot encoded
   * in slices), which it does not see, but not after the store was restructured (compacted or restored): see
   * `_dumpBegin`.
   */
  dumpRecords(bounds: DumpBounds = this._dumpBounds()): Generator<number> {
    return this.#dumpWalk(bounds.histStart, bounds.end);
  }

  /** @internal where a dump taken now starts its history and ends. */
  _dumpBounds(): DumpBounds {
    this.settleCompaction();
    const t = this.#t, histStart = this.#histStart;
    let end = t.length;
    while (end > histStart && t.f(end - 1, F_MOD) > this.currentRev) end--; // a txn being applied
    return { histStart, end };
  }

  /** The records of a dump: the base versions below `hs` in key order, then the history from `hs` to `end`. */
  *#dumpWalk(hs: number, end: number): Generator<number> {
    // keys written later have no record below hs
    if (hs > 0) {
      for (const kid of this.#index.values()) for (const idx of this.#versionsOf(kid)) if (idx < hs) yield idx;
    }
    for (let i = hs; i < end; i++) yield i;
  }

  /**
   * @internal a snapshot encode's `dumpRecords` walk began: `finish` runs it to its end before the store is next
   * restructured (a compaction's swap, a restore), which would move the records it still has to visit. A
   * compaction's steps wait until `_dumpEnd` (the encode moves values between buffers), unless something must
   * finish the compaction at once. The walk's records are the store's as of its start: a compaction begun meanwhile
   * drops nothing of them before it ended.
   */
  _dumpBegin(finish: () => void): void {
    this.#beforeRestructure.add(finish);
    this.#dumps.add(finish);
  }

  /** @internal the walk registered with `_dumpBegin` is done (or given up). */
  _dumpEnd(finish: () => void): void {
    this.#beforeRestructure.delete(finish);
    this.#dumps.delete(finish);
  }

  /** Runs the snapshot encodes under way to their end. */
  #finishDumps(): void {
    for (const fn of [...this.#dumps]) fn();
  }

  #restructuring(): void {
    const fns = [...this.#beforeRestructure];
    this.#beforeRestructure.clear();
    this.#dumps.clear();
    for (const fn of fns) fn();
  }

  /** @internal the key of a key id (of a record handle from `dumpRecords`), as a view valid until the next write. */
  _keyBytes(kid: number): Uint8Array {
    return this.#keys.view(kid);
  }

  /** @internal one more than the highest key id in use. */
  _keyIdLimit(): number {
    return this.#latest.length;
  }

  /**
   * @internal the ids of all keys in key order, lazily: safe to resume after writes (see `SortedKeys.values`); keys
   * that have records throughout the walk are seen once each.
   */
  _keyIdsInOrder(): Generator<number> {
    return this.#index.values();
  }

  /**
   * @internal reads the fields of a record handle from `dumpRecords` into `into`, a holder the caller reuses from record
   * to record (`record` makes an object and two views per record). The value is `len` bytes at `off` in `buf`.
   */
  _readRecord(idx: number, into: RecordCursor): void {
    const t = this.#t, b = t.i(idx, I_BUF);
    into.keyId = t.i(idx, I_KEY);
    into.create = t.f(idx, F_CREATE);
    into.mod = t.f(idx, F_MOD);
    into.version = t.f(idx, F_VER);
    into.lease = this.#leases.values[t.i(idx, I_LEASE)];
    into.buf = b < 0 ? null : this.#bufs.values[b];
    into.off = b < 0 ? 0 : t.f(idx, F_OFF);
    into.len = b < 0 ? 0 : t.i(idx, I_LEN);
    into.owned = b >= 0 && this.#isOwned(b);
  }

  /** Makes `bufs` the buffers the records' ids refer to (the owned-by-id cache follows). */
  #useBufs(bufs: Interned<ArrayBufferLike>): void {
    this.#bufs = bufs;
    this.#ownedById = [];
  }

  #isOwned(b: number): boolean {
    return this.#ownedById[b] ??= this.#owned.has(this.#bufs.values[b]);
  }

  /**
   * @internal `buf` holds values only, and is the store's to keep (a snapshot blob restored, the buffer a snapshot
   * encode moves values into): a snapshot encode leaves the values in it where they are.
   */
  _ownBuffer(buf: ArrayBufferLike): void {
    this.#owned.add(buf);
    this.#ownedById = []; // the buffer may have an id already
  }

  /** @internal the length of key id `kid`'s bytes. */
  _keyLength(kid: number): number {
    return this.#keys.length(kid);
  }

  /** @internal the fields of a record handle from `dumpRecords` (the value as a view, not copied). */
  record(idx: number): RecordFields {
    const t = this.#t;
    const b = t.i(idx, I_BUF);
    return {
      key: this.#keys.view(t.i(idx, I_KEY)),
      create: t.f(idx, F_CREATE),
      mod: t.f(idx, F_MOD),
      version: t.f(idx, F_VER),
      lease: this.#leases.values[t.i(idx, I_LEASE)],
      value: b < 0 ? EMPTY : new Uint8Array(this.#bufs.values[b], t.f(idx, F_OFF), t.i(idx, I_LEN)),
    };
  }

  /**
   * @internal points the value of record `idx` (from `dumpRecords`) at a copy of the same bytes at `off` in `buf`, a
   * buffer of the store's own (`_ownBuffer`): a snapshot encode moves the values that live in request buffers (the
   * Raft log's arena chunks) out of them, so that those can be freed once the log is compacted. Call `_moveDone`
   * after the last one.
   */
  _moveValue(idx: number, buf: ArrayBufferLike, off: number): void {
    const t = this.#t;
    if (t.i(idx, I_BUF) < 0) return;
    t.setI(idx, I_BUF, this.#bufs.id(buf));
    t.setF(idx, F_OFF, off);
  }

  /**
   * @internal after the `_moveValue` calls of a dump taken when the table held `upTo` records: the values below `upTo`
   * still in request buffers (records a dump leaves out: the previous records of the events at the compaction
   * revision) are copied into one new buffer of the store's, and the buffers no record uses any more are let go.
   * Records from `upTo` on (written while the dump was encoded) keep theirs until the next encode.
   */
  _moveDone(upTo: number): void {
    const t = this.#t;
    let rest = 0;
    for (let idx = 0; idx < upTo; idx++) {
      const b = t.i(idx, I_BUF);
      if (b >= 0 && !this.#isOwned(b)) rest += t.i(idx, I_LEN);
    }
    if (rest > 0) {
      const copy = new Uint8Array(rest);
      this._ownBuffer(copy.buffer);
      const id = this.#bufs.id(copy.buffer);
      let pos = 0;
      for (let idx = 0; idx < upTo; idx++) {
        const b = t.i(idx, I_BUF);
        if (b < 0 || this.#isOwned(b)) continue;
        const len = t.i(idx, I_LEN);
        copy.set(new Uint8Array(this.#bufs.values[b], t.f(idx, F_OFF), len), pos);
        t.setI(idx, I_BUF, id);
        t.setF(idx, F_OFF, pos);
        pos += len;
      }
    }
    const bufs = new Interned<ArrayBufferLike>([]);
    const renumbered = new Int32Array(this.#bufs.values.length).fill(-1);
    for (let idx = 0; idx < t.length; idx++) {
      const b = t.i(idx, I_BUF);
      if (b < 0) continue;
      let nb = renumbered[b];
      if (nb < 0) nb = renumbered[b] = bufs.id(this.#bufs.values[b]);
      t.setI(idx, I_BUF, nb);
    }
    this.#useBufs(bufs);
    this.#memo.clear(); // its events hold views of the old buffers
  }

  /** Rebuilds the store from `dump()` output. */
  restore(currentRev: number, compactRev: number, records: Iterable<KeyValue>): void {
    this._restoreBegin(currentRev, compactRev);
    for (const kv of records) {
      const v = kv.value;
      this._restoreAdd(
        toBKey(kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease,
        v.buffer,
        v.byteOffset,
        v.length,
      );
    }
    this._restoreEnd();
  }

  /** @internal empties the store for `_restoreAdd` (restore without KeyValue objects). */
  _restoreBegin(currentRev: number, compactRev: number): void {
    this.#restructuring();
    this.#dropCompaction();
    this.#keys = new KeyArena();
    this.#index = new SortedKeys(this.#keys);
    this.#t = new Table();
    this.#histStart = 0;
    this.#latest = new PagedInt32Array();
    this.#freeKeyIds = [];
    this.#leases = new Interned(["0"]);
    this.#useBufs(new Interned<ArrayBufferLike>([]));
    this.#memo.clear();
    this.sizeBytes = 0;
    this.currentRev = currentRev;
    this.compactRev = compactRev;
    this.#restoring = new SortedKeysBuilder(new Map());
    this.#restoredKeys = null;
  }

  /**
   * @internal a restore may pause here (yield to the event loop): the keys added since the last pause are sorted
   * into the index being built, a piece of the work `_restoreEnd` would do at once.
   */
  _restorePause(): void {
    this.#restoring?.seal();
  }

  /**
   * @internal a restore from a key table: the next key, which gets the next key id (0, 1, ...) for `_restoreRecord`.
   * Keys must come in strictly increasing order (the key index is then built without sorting), before any record.
   */
  _restoreKey(k: Uint8Array): void {
    if (!this.#restoredKeys) {
      if (this.#restoring?.ids.size !== 0) {
        throw new Error("store: a key table without _restoreBegin, or after records");
      }
      this.#restoring = null;
      this.#restoredKeys = { index: new SortedKeys(this.#keys), withRecords: 0 };
    }
    const kid = this.#latest.length;
    this.#keys.set(kid, k);
    this.#restoredKeys.index._append(kid);
    this.#latest.push(-1);
  }

  /** @internal the records are all added: builds the key index. */
  _restoreEnd(): void {
    const keys = this.#restoredKeys;
    if (keys) {
      if (keys.withRecords !== keys.index.size) {
        let kid = 0;
        while (this.#latest.get(kid) >= 0) kid++;
        throw new Error(`store: restored key ${kid} has no records`);
      }
      keys.index._appendEnd();
      this.#index = keys.index;
      this.#restoredKeys = null;
    }
    if (this.#restoring) {
      this.#index = this.#restoring.build(this.#keys);
      this.#restoring = null;
    }
  }

  /**
   * @internal takes over the whole contents of `other` (a store just restored, which must not be used afterwards):
   * a restore built beside this store, while this one kept serving, replaces it at once.
   */
  _adopt(other: MvccStore): void {
    if (other.#restoring || other.#restoredKeys) throw new Error("store: adopting an unfinished restore");
    this.#restructuring();
    this.#dropCompaction();
    this.#keys = other.#keys;
    this.#index = other.#index;
    this.#t = other.#t;
    this.#histStart = other.#histStart;
    this.#latest = other.#latest;
    this.#freeKeyIds = other.#freeKeyIds;
    this.#leases = other.#leases;
    this.#owned = other.#owned;
    this.#useBufs(other.#bufs);
    this.#memo.clear();
    this.sizeBytes = other.sizeBytes;
    this.currentRev = other.currentRev;
    this.compactRev = other.compactRev;
  }

  /** @internal adds the next record of a `dump()`, naming its key; the value is referenced, not copied. */
  _restoreAdd(
    key: BKey,
    create: number,
    mod: number,
    version: number,
    lease: string,
    buf: ArrayBufferLike,
    off: number,
    len: number,
  ): void {
    this._restoreRecord(this.#restoredKeyId(key), create, mod, version, lease, buf, off, len);
  }

  /**
   * @internal adds the next record of a `dump()`, naming its key by id: its number in the key table given by
   * `_restoreKey`. The value is referenced, not copied.
   */
  _restoreRecord(
    kid: number,
    create: number,
    mod: number,
    version: number,
    lease: string,
    buf: ArrayBufferLike,
    off: number,
    len: number,
  ): void {
    if (!this.#restoring && !this.#restoredKeys) throw new Error("store: a record restored without _restoreBegin");
    if (!(kid >= 0 && kid < this.#latest.length)) throw new Error(`store: restored record of unknown key ${kid}`);
    const prev = this.#latest.get(kid);
    if (prev < 0 && this.#restoredKeys) this.#restoredKeys.withRecords++;
    const idx = this.#append(kid, create, mod, version, lease, buf, off, len);
    if (idx === this.#histStart && mod < this.compactRev) this.#histStart++;
    if (mod !== this.compactRev) return;
    // At the compaction revision only a key's newest record there is a version, and only if it is not a tombstone;
    // the rest is history only, as compact() left it (and not counted in sizeBytes).
    if (prev >= 0 && this.#t.f(prev, F_MOD) === mod) this.#markHistoryOnly(prev);
    if (create === 0) this.#markHistoryOnly(idx);
  }

  /** The id of key k during a restore (the index is built at its end). */
  #restoredKeyId(k: BKey): number {
    const r = this.#restoring;
    if (!r) throw new Error("store: a record added by key without _restoreBegin, or in a restore from a key table");
    let kid = r.ids.get(k);
    if (kid === undefined) {
      kid = this.#latest.length;
      this.#keys.set(kid, this.#probe(k));
      this.#latest.push(-1);
      r.ids.set(k, kid);
      r.add(k);
    }
    return kid;
  }

  #markHistoryOnly(idx: number): void {
    const t = this.#t;
    if ((t.i(idx, I_FLAGS) & HISTORY_ONLY) !== 0) return;
    t.setI(idx, I_FLAGS, HISTORY_ONLY);
    this.sizeBytes -= this.#keys.length(t.i(idx, I_KEY)) + t.i(idx, I_LEN) + OVERHEAD;
  }

  /**
   * Live keys that are attached to a lease, with the lease ID. The walk goes through the records in table order and
   * looks up a key only for records with a lease: after a restore, key ids are in key order and records in revision
   * order, and a walk by key id touched the record table at random (a million keys: 110 ms, against 30 ms).
   */
  *leasedKeys(): Generator<[BKey, string]> {
    const t = this.#t;
    for (let idx = 0; idx < t.length; idx++) {
      const lid = t.i(idx, I_LEASE);
      if (lid === 0) continue;
      const kid = t.i(idx, I_KEY);
      if (this.#latest.get(kid) !== idx || t.f(idx, F_CREATE) === 0) continue;
      yield [this.#keys.string(kid), this.#leases.values[lid]];
    }
  }

  /**
   * Maintenance.HashKV: a digest of the versions at or below `rev` (0 = the current revision) that a compaction at
   * `rev` would keep, as etcd's HashByRev: every version after the compaction point, and of the older ones only each
   * key's visible version at `rev`. A revision at or below the compaction point is refused, as in etcd.
   */
  hashKV(rev: number): { hash: number; rev: number; compactRev: number } {
    if (rev > 0 && rev <= this.compactRev) throw Errors.compacted();
    if (rev > this.currentRev) throw Errors.futureRev();
    this.settleCompaction();
    const at = rev <= 0 ? this.currentRev : rev;
    const t = this.#t;
    const h = new StateHasher();
    const kids: number[] = [];
    this.#index.forEach(keyBytes(""), null, (kid) => kids.push(kid));
    for (const kid of kids) {
      const k = this.#keys.view(kid);
      const versions = this.#versionsOf(kid);
      for (let v = 0; v < versions.length; v++) {
        const idx = versions[v];
        const mod = t.f(idx, F_MOD);
        if (mod > at) break;
        // a base version superseded by a later one at or below `rev` would be compacted away at `rev`
        if (mod <= this.compactRev && v + 1 < versions.length && t.f(versions[v + 1], F_MOD) <= at) continue;
        const r = this.record(idx);
        h.record(k, r.create, r.mod, r.version, r.lease, r.value);
      }
    }
    return { hash: h.value, rev: at, compactRev: this.compactRev };
  }
}

/**
 * A read of a key range at a fixed revision, a slice of keys at a time: `step(n)` visits the next `n` keys of the
 * range and hands each one's record visible at the revision to `visit` (key order), so a caller can yield to the event
 * loop between steps. Writes made between steps are newer than the revision and change nothing it sees; the keys
 * they add have no record at the revision. A compaction or restore, which would move or drop the records it still has
 * to visit, first runs it to its end (see `_dumpBegin`): the result is the one a read in one go would give.
 */
export class RangeScan {
  /** keys visited that had a record at the revision */
  count = 0;
  #done = false;
  readonly #finishNow = () => this.#run(Infinity);
  readonly #visitKey = (kid: number) => {
    const idx = this.visible(kid);
    if (idx < 0) return;
    this.count++;
    this.visit(idx);
  };

  constructor(
    readonly walk: KeyWalk,
    readonly visible: (kid: number) => number,
    readonly visit: (record: number) => void,
    readonly restructures: Set<() => void>,
  ) {
    restructures.add(this.#finishNow);
  }

  /** Whether every key of the range was visited. */
  get done(): boolean {
    return this.#done;
  }

  /** Visits up to `keys` more keys; returns whether the range is done. */
  step(keys: number): boolean {
    if (!this.#done) this.#run(keys);
    return this.#done;
  }

  #run(keys: number): void {
    if (!this.walk(keys, this.#visitKey)) return;
    this.#done = true;
    this.restructures.delete(this.#finishNow);
  }
}

/**
 * A write transaction. Changes are visible to the txn's own reads at once and become one revision at `end()`.
 * A txn with no change does not advance the revision.
 */
export class WriteTxn {
  readonly rev: number;
  readonly events: StoreEvent[] = [];
  #store: MvccStore;
  /** the store's record count and size when the txn began (what `abort` restores) */
  #startRecords: number;
  #startSize: number;

  constructor(store: MvccStore) {
    this.#store = store;
    this.rev = store.currentRev + 1;
    this.#startRecords = store._records();
    this.#startSize = store.sizeBytes;
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
    const ev = this.#store._put(key, value, lease, this.rev);
    this.events.push(ev);
    return ev;
  }

  /** Deletes the live keys in [key, end); returns the deleted records in key order. */
  deleteRange(key: BKey, end: RangeEnd): KeyValue[] {
    const evs = this.#store._deleteRange(key, end, this.rev);
    for (const ev of evs) this.events.push(ev);
    return evs.map((ev) => ev.prev!);
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

  /** Undoes every change of the txn instead of committing it: the store is as before the txn began. */
  abort(): void {
    this.#store._rollback(this.#startRecords, this.#startSize);
    this.events.length = 0;
  }
}
