/**
 * The Raft log as the core sees it: a stable part the application has persisted (read through `Storage`) followed
 * by an unstable tail (entries, or a snapshot, not yet reported durable).
 */
import {
  CompactedError,
  type ConfState,
  emptyHardState,
  emptySnapshot,
  type Entry,
  entrySize,
  type HardState,
  invariant,
  type Snapshot,
  SnapshotTemporarilyUnavailableError,
  UnavailableError,
} from "./types.ts";

/**
 * Read access to what the application has persisted. The core never writes to it: the application appends
 * entries / applies snapshots after persisting what a Ready gave it, before calling `advance`.
 */
export interface Storage {
  /** Persisted hard state and the membership of the newest snapshot. */
  initialState(): { hardState: HardState; confState: ConfState };
  /**
   * Entries [lo, hi), cut after `maxBytes` but always at least one entry when lo < hi.
   * Throws CompactedError if lo <= the snapshot index, UnavailableError if hi > lastIndex + 1.
   */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of entry i; i may be the snapshot index. Throws CompactedError below it, UnavailableError above last. */
  term(i: number): number;
  /** Index of the first entry still held (snapshot index + 1). */
  firstIndex(): number;
  /** Index of the last entry held (the snapshot index when there is none after it). */
  lastIndex(): number;
  /** The newest snapshot (may throw SnapshotTemporarilyUnavailableError). */
  snapshot(): Snapshot;
}

/** Returns entries from the front of `ents` until their total size exceeds maxBytes (always at least one). */
export function limitSize(ents: Entry[], maxBytes: number): Entry[] {
  if (ents.length <= 1) return ents;
  let size = entrySize(ents[0]);
  let n = 1;
  for (; n < ents.length; n++) {
    size += entrySize(ents[n]);
    if (size > maxBytes) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

/** A Storage held in memory: a snapshot plus the entries after it. */
export class MemoryStorage implements Storage {
  #hardState: HardState = emptyHardState();
  #snapshot: Snapshot = emptySnapshot();
  /** ents[0] is a placeholder carrying the snapshot's index and term. */
  #ents: Entry[] = [{ index: 0, term: 0, type: 0, data: new Uint8Array(0) }];

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.#hardState }, confState: this.#snapshot.metadata.confState };
  }

  setHardState(hs: HardState): void {
    this.#hardState = { ...hs };
  }

  get hardState(): HardState {
    return this.#hardState;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.#ents[0].index;
    if (lo <= offset) throw new CompactedError();
    if (hi > this.lastIndex() + 1) throw new UnavailableError();
    if (this.#ents.length === 1) throw new UnavailableError();
    return limitSize(this.#ents.slice(lo - offset, hi - offset), maxBytes);
  }

  term(i: number): number {
    const offset = this.#ents[0].index;
    if (i < offset) throw new CompactedError();
    if (i - offset >= this.#ents.length) throw new UnavailableError();
    return this.#ents[i - offset].term;
  }

  firstIndex(): number {
    return this.#ents[0].index + 1;
  }

  lastIndex(): number {
    return this.#ents[0].index + this.#ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.#snapshot;
  }

  /** Replaces the whole content with a snapshot (received from the leader). Older snapshots are ignored. */
  applySnapshot(snap: Snapshot): void {
    if (snap.metadata.index <= this.#snapshot.metadata.index) return;
    this.#snapshot = snap;
    this.#ents = [{ index: snap.metadata.index, term: snap.metadata.term, type: 0, data: new Uint8Array(0) }];
  }

  /** Records a snapshot of the applied state at index i (≤ last index); entries are kept until `compact`. */
  createSnapshot(i: number, confState: ConfState, data: Uint8Array): Snapshot {
    const cur = this.#snapshot.metadata.index;
    if (i <= cur) throw new SnapshotTemporarilyUnavailableError();
    invariant(i <= this.lastIndex(), () => `snapshot ${i} is out of bound lastindex(${this.lastIndex()})`);
    const offset = this.#ents[0].index;
    this.#snapshot = {
      metadata: { index: i, term: this.#ents[i - offset].term, confState: structuredClone(confState) },
      data,
    };
    return this.#snapshot;
  }

  /** Discards entries up to and including `compactIndex` (which must be ≤ last index). */
  compact(compactIndex: number): void {
    const offset = this.#ents[0].index;
    if (compactIndex <= offset) return;
    invariant(compactIndex <= this.lastIndex(), () => `compact ${compactIndex} beyond last ${this.lastIndex()}`);
    const i = compactIndex - offset;
    const head = { index: this.#ents[i].index, term: this.#ents[i].term, type: 0, data: new Uint8Array(0) };
    this.#ents = [head, ...this.#ents.slice(i + 1)];
  }

  /** Appends entries, replacing any existing ones from the first new index on (entries below `firstIndex` are skipped). */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[entries.length - 1].index;
    if (last < first) return;
    if (first > entries[0].index) entries = entries.slice(first - entries[0].index);
    const offset = entries[0].index - this.#ents[0].index;
    invariant(
      offset <= this.#ents.length,
      () => `missing log entry [last: ${this.lastIndex()}, append at: ${entries[0].index}]`,
    );
    if (offset < this.#ents.length) this.#ents.length = offset;
    for (const e of entries) this.#ents.push(e);
  }
}

/** Entries (or a snapshot) the core has accepted but the application has not yet reported persisted. */
export class Unstable {
  snapshot: Snapshot | null = null;
  entries: Entry[] = [];
  /** index of entries[0] */
  offset: number;

  constructor(offset: number) {
    this.offset = offset;
  }

  maybeFirstIndex(): number | undefined {
    return this.snapshot ? this.snapshot.metadata.index + 1 : undefined;
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    return this.snapshot ? this.snapshot.metadata.index : undefined;
  }

  maybeTerm(i: number): number | undefined {
    if (i < this.offset) {
      if (this.snapshot && this.snapshot.metadata.index === i) return this.snapshot.metadata.term;
      return undefined;
    }
    const last = this.maybeLastIndex();
    if (last === undefined || i > last) return undefined;
    return this.entries[i - this.offset].term;
  }

  /** Entries up to (i, t) are durable: drop them, unless the entry at i was replaced meanwhile. */
  stableTo(i: number, t: number): void {
    const gt = this.maybeTerm(i);
    if (gt === undefined || gt !== t || i < this.offset) return;
    this.entries = this.entries.slice(i + 1 - this.offset);
    this.offset = i + 1;
  }

  stableSnapTo(i: number): void {
    if (this.snapshot && this.snapshot.metadata.index === i) this.snapshot = null;
  }

  restore(s: Snapshot): void {
    this.offset = s.metadata.index + 1;
    this.entries = [];
    this.snapshot = s;
  }

  truncateAndAppend(ents: Entry[]): void {
    const after = ents[0].index;
    if (after === this.offset + this.entries.length) {
      for (const e of ents) this.entries.push(e);
    } else if (after <= this.offset) {
      // Replaces the whole unstable tail (and, once persisted, the stable entries from `after` on).
      this.offset = after;
      this.entries = ents.slice();
    } else {
      this.entries = this.entries.slice(0, after - this.offset).concat(ents);
    }
  }

  slice(lo: number, hi: number): Entry[] {
    invariant(
      lo >= this.offset && hi <= this.offset + this.entries.length && lo <= hi,
      () => `unstable.slice[${lo},${hi}) out of bound [${this.offset},${this.offset + this.entries.length}]`,
    );
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}

/** Stable storage + unstable tail, with the commit and apply cursors. */
export class RaftLog {
  readonly storage: Storage;
  readonly unstable: Unstable;
  committed: number;
  applied: number;
  readonly maxNextEntsSize: number;

  constructor(storage: Storage, maxNextEntsSize: number) {
    this.storage = storage;
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    this.committed = first - 1;
    this.applied = first - 1;
    this.maxNextEntsSize = maxNextEntsSize;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /** Index of the last entry known durable (what the application reported via advance). */
  stableLastIndex(): number {
    // With a snapshot pending, nothing of the current log is known durable (only followers restore snapshots).
    if (this.unstable.snapshot) return 0;
    return this.unstable.offset - 1;
  }

  /** Term of entry i; undefined when i was compacted away or is beyond the last index. */
  term(i: number): number | undefined {
    const dummy = this.firstIndex() - 1;
    if (i < dummy || i > this.lastIndex()) return undefined;
    const t = this.unstable.maybeTerm(i);
    if (t !== undefined) return t;
    try {
      return this.storage.term(i);
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return undefined;
      throw err;
    }
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex());
    invariant(t !== undefined, () => `no term for last index ${this.lastIndex()}`);
    return t;
  }

  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t;
  }

  /** A candidate's log (lastIndex, lastTerm) is at least as up to date as ours. */
  isUpToDate(lasti: number, term: number): boolean {
    const lt = this.lastTerm();
    return term > lt || (term === lt && lasti >= this.lastIndex());
  }

  /**
   * Follower side of AppendEntries: if the entry at `index` has `logTerm`, adds `ents` (dropping a conflicting
   * suffix) and advances commit to min(committed, last new index). Returns the last new index, or undefined.
   */
  maybeAppend(index: number, logTerm: number, committed: number, ents: Entry[]): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) {
      invariant(ci > this.committed, () => `entry ${ci} conflicts with committed entry [committed(${this.committed})]`);
      this.append(ents.slice(ci - (index + 1)));
    }
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }

  /** Appends entries (the first may replace existing ones); returns the new last index. */
  append(ents: Entry[]): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0].index - 1;
    invariant(after >= this.committed, () => `after(${after}) is out of range [committed(${this.committed})]`);
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  /** First index whose entry is new or conflicts with ours (0 when all given entries are already there). */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * For a rejected append: the largest index ≤ `index` whose term is ≤ `term` (so the leader can skip whole
   * terms it knows cannot match).
   */
  findConflictByTerm(index: number, term: number): number {
    for (;;) {
      const t = this.term(index);
      if (t === undefined || t <= term) return index;
      index--;
    }
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries.slice();
  }

  /** Committed entries not yet applied, bounded by maxNextEntsSize. */
  nextEnts(): Entry[] {
    const off = Math.max(this.applied + 1, this.firstIndex());
    if (this.committed + 1 > off) return this.slice(off, this.committed + 1, this.maxNextEntsSize);
    return [];
  }

  hasNextEnts(): boolean {
    return this.committed + 1 > Math.max(this.applied + 1, this.firstIndex());
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== null && this.unstable.snapshot.metadata.index > 0;
  }

  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  commitTo(toCommit: number): void {
    if (this.committed < toCommit) {
      invariant(
        this.lastIndex() >= toCommit,
        () => `tocommit(${toCommit}) is out of range [lastIndex(${this.lastIndex()})]; log truncated or lost?`,
      );
      this.committed = toCommit;
    }
  }

  appliedTo(i: number): void {
    if (i === 0) return;
    invariant(
      this.committed >= i && i >= this.applied,
      () => `applied(${i}) is out of range [prevApplied(${this.applied}), committed(${this.committed})]`,
    );
    this.applied = i;
  }

  stableTo(i: number, t: number): void {
    this.unstable.stableTo(i, t);
  }

  stableSnapTo(i: number): void {
    this.unstable.stableSnapTo(i);
  }

  /** Entries from i on, at most maxBytes (at least one). Throws CompactedError when i was compacted. */
  entries(i: number, maxBytes: number): Entry[] {
    if (i > this.lastIndex()) return [];
    return this.slice(i, this.lastIndex() + 1, maxBytes);
  }

  /** Leader side: commits maxIndex if its entry is from the current term (Raft §5.4.2). */
  maybeCommit(maxIndex: number, term: number): boolean {
    if (maxIndex > this.committed && this.term(maxIndex) === term) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  restore(s: Snapshot): void {
    this.committed = s.metadata.index;
    this.unstable.restore(s);
  }

  /** Entries [lo, hi) from storage and/or the unstable tail. Throws CompactedError if lo is compacted. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo === hi) return [];
    const fi = this.firstIndex();
    if (lo < fi) throw new CompactedError();
    invariant(
      hi <= this.lastIndex() + 1 && lo < hi,
      () => `slice[${lo},${hi}) out of bound [${fi},${this.lastIndex()}]`,
    );
    let ents: Entry[] = [];
    if (lo < this.unstable.offset) {
      ents = this.storage.entries(lo, Math.min(hi, this.unstable.offset), maxBytes);
      // Storage cut the batch short: return what fits.
      if (ents.length < Math.min(hi, this.unstable.offset) - lo) return ents;
    }
    if (hi > this.unstable.offset) {
      const u = this.unstable.slice(Math.max(lo, this.unstable.offset), hi);
      ents = ents.length > 0 ? ents.concat(u) : u;
    }
    return limitSize(ents, maxBytes);
  }
}
