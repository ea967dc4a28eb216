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

/** Entries per page of MemoryStorage's columns. */
const LOG_PAGE = 1024;
/**
 * Entry data is copied into arena chunks of this size, so it holds no share of some larger, unrelated buffer. Above
 * malloc's mmap threshold (server/util/malloc.ts: 128 KiB), so each chunk is a mapping of its own that goes back to the
 * OS when it is freed. With 64 KiB chunks (and entries of 16 KiB and more in buffers of their own) the chunks freed
 * after each snapshot stayed in malloc's arenas, between live allocations: 3 members, 1 M keys, about 300 MB per member
 * beyond V8's heap and its array buffers, against 100 MB now (peak RSS of the count, range and catch-up rows 3.2 → 2.5-
 * 2.9 GB).
 */
const ARENA_CHUNK = 256 * 1024;
/** Entry data of at least this size gets a buffer of its own. */
const OWN_BUFFER = ARENA_CHUNK / 4;
const NO_DATA = new Uint8Array(0);

/** Columns of LOG_PAGE consecutive entries; the data of entry j is bufs[j] [offs[j], offs[j] + lens[j]). */
class LogPage {
  readonly terms = new Float64Array(LOG_PAGE);
  readonly offs = new Uint32Array(LOG_PAGE);
  readonly lens = new Uint32Array(LOG_PAGE);
  readonly types = new Uint8Array(LOG_PAGE);
  readonly bufs: Array<ArrayBufferLike | undefined> = new Array(LOG_PAGE);
}

/**
 * A Storage held in memory: a snapshot plus the entries after it.
 *
 * Entries are held in columns (no object per entry) and their data in arena chunks: `append` copies each entry's
 * data into the arena (unless it is large and owns its buffer) and points the given entry's `data` at the copy (same
 * bytes), so that what the application decodes from a committed entry — e.g. the values the MVCC store keeps —
 * shares the arena instead of pinning the (pooled, network or file) buffer the entry arrived in. `entries()`
 * returns new Entry objects whose data are views into the arena.
 */
export class MemoryStorage implements Storage {
  #hardState: HardState = emptyHardState();
  #snapshot: Snapshot = emptySnapshot();
  /** index and term of the entry before the first one held (the snapshot's, or the last compacted one) */
  #offset = 0;
  #offsetTerm = 0;
  #last = 0;
  #pages: LogPage[] = [];
  /** page number (index / LOG_PAGE) of #pages[0] */
  #firstPage = 0;
  #chunk: Uint8Array | null = null;
  #chunkPos = 0;

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
    if (lo <= this.#offset) throw new CompactedError();
    if (hi > this.#last + 1) throw new UnavailableError();
    if (this.#last === this.#offset) throw new UnavailableError();
    if (lo >= hi) return [];
    // as limitSize: at least one entry, then while the total stays within maxBytes
    let n = 1;
    let size = this.#len(lo) + 16;
    while (lo + n < hi) {
      size += this.#len(lo + n) + 16;
      if (size > maxBytes) break;
      n++;
    }
    const out: Entry[] = new Array(n);
    for (let k = 0; k < n; k++) {
      const i = lo + k;
      const p = this.#page(i), j = i % LOG_PAGE;
      const len = p.lens[j];
      out[k] = {
        index: i,
        term: p.terms[j],
        type: p.types[j],
        data: len === 0 ? NO_DATA : new Uint8Array(p.bufs[j]!, p.offs[j], len),
      };
    }
    return out;
  }

  #page(i: number): LogPage {
    return this.#pages[Math.floor(i / LOG_PAGE) - this.#firstPage];
  }

  #len(i: number): number {
    return this.#page(i).lens[i % LOG_PAGE];
  }

  term(i: number): number {
    if (i < this.#offset) throw new CompactedError();
    if (i > this.#last) throw new UnavailableError();
    if (i === this.#offset) return this.#offsetTerm;
    return this.#page(i).terms[i % LOG_PAGE];
  }

  firstIndex(): number {
    return this.#offset + 1;
  }

  lastIndex(): number {
    return this.#last;
  }

  /**
   * The newest snapshot. Once the log was compacted past it ({@link compact} drops entries whether or not a snapshot
   * covers them), a follower catching up from it would need entries that are gone: throws
   * SnapshotTemporarilyUnavailableError (the core sends nothing then, and tries again later) and sets
   * `snapshotWanted`, so that the application takes a newer snapshot.
   */
  snapshot(): Snapshot {
    if (this.#snapshot.metadata.index < this.#offset) {
      this.snapshotWanted = true;
      throw new SnapshotTemporarilyUnavailableError();
    }
    return this.#snapshot;
  }

  /** A follower needs a snapshot newer than the log's first entry (see {@link snapshot}); cleared by a new one. */
  snapshotWanted = false;

  /** Number of entries held. */
  get length(): number {
    return this.#last - this.#offset;
  }

  /** Replaces the whole content with a snapshot (received from the leader). Older snapshots are ignored. */
  applySnapshot(snap: Snapshot): void {
    if (snap.metadata.index <= this.#snapshot.metadata.index) return;
    this.#snapshot = snap;
    this.snapshotWanted = false;
    this.#offset = this.#last = snap.metadata.index;
    this.#offsetTerm = snap.metadata.term;
    this.#pages = [];
  }

  /** Records a snapshot of the applied state at index i (≤ last index); entries are kept until `compact`. */
  createSnapshot(i: number, confState: ConfState, data: Uint8Array): Snapshot {
    const cur = this.#snapshot.metadata.index;
    if (i <= cur) throw new SnapshotTemporarilyUnavailableError();
    invariant(i <= this.lastIndex(), () => `snapshot ${i} is out of bound lastindex(${this.lastIndex()})`);
    this.#snapshot = {
      metadata: { index: i, term: this.term(i), confState: structuredClone(confState) },
      data,
    };
    this.snapshotWanted = false;
    return this.#snapshot;
  }

  /** Discards entries up to and including `compactIndex` (which must be ≤ last index). */
  compact(compactIndex: number): void {
    if (compactIndex <= this.#offset) return;
    invariant(compactIndex <= this.lastIndex(), () => `compact ${compactIndex} beyond last ${this.lastIndex()}`);
    this.#offsetTerm = this.term(compactIndex);
    this.#offset = compactIndex;
    const first = Math.floor((compactIndex + 1) / LOG_PAGE);
    if (first > this.#firstPage) {
      this.#pages.splice(0, first - this.#firstPage);
      this.#firstPage = first;
    }
    // let go of the data of the compacted entries that share the first page with kept ones
    const p = this.#pages[0];
    if (p && this.#firstPage * LOG_PAGE <= compactIndex) {
      for (let j = 0; j <= compactIndex % LOG_PAGE; j++) p.bufs[j] = undefined;
    }
  }

  /**
   * Appends entries, replacing any existing ones from the first new index on (entries below `firstIndex` are skipped).
   * The appended entries' `data` are re-pointed at the arena copies (same bytes).
   */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[entries.length - 1].index;
    if (last < first) return;
    if (first > entries[0].index) entries = entries.slice(first - entries[0].index);
    const at = entries[0].index;
    invariant(at <= this.#last + 1, () => `missing log entry [last: ${this.lastIndex()}, append at: ${at}]`);
    if (at <= this.#last) this.#truncate(at - 1);
    for (const e of entries) this.#push(e);
  }

  /** Drops the entries after `last` (> offset - 1). */
  #truncate(last: number): void {
    this.#last = last;
    const keep = last > this.#offset ? Math.floor(last / LOG_PAGE) - this.#firstPage + 1 : 0;
    if (this.#pages.length > keep) this.#pages.length = keep;
    const p = this.#pages[keep - 1];
    if (p) { for (let j = last % LOG_PAGE + 1; j < LOG_PAGE; j++) p.bufs[j] = undefined; }
  }

  #push(e: Entry): void {
    const i = ++this.#last;
    const pn = Math.floor(i / LOG_PAGE);
    if (this.#pages.length === 0) this.#firstPage = pn;
    while (pn - this.#firstPage >= this.#pages.length) this.#pages.push(new LogPage());
    const p = this.#pages[pn - this.#firstPage], j = i % LOG_PAGE;
    p.terms[j] = e.term;
    p.types[j] = e.type;
    const d = e.data;
    const len = d.length;
    p.lens[j] = len;
    if (len === 0) {
      p.bufs[j] = undefined;
      p.offs[j] = 0;
      return;
    }
    let copy: Uint8Array;
    if (len >= OWN_BUFFER) {
      if (d.byteOffset === 0 && d.byteLength === d.buffer.byteLength) {
        // a large entry that owns its buffer: nothing to gain from a copy
        p.bufs[j] = d.buffer;
        p.offs[j] = 0;
        return;
      }
      copy = new Uint8Array(d); // a copy (Buffer#slice would be a view)
    } else {
      // small data always goes to the arena, even when it has a buffer of its own (as WAL replay gives): a buffer
      // per entry costs more in ArrayBuffer bookkeeping than the entry's bytes
      if (this.#chunk === null || this.#chunkPos + len > ARENA_CHUNK) {
        this.#chunk = new Uint8Array(ARENA_CHUNK);
        this.#chunkPos = 0;
      }
      copy = this.#chunk.subarray(this.#chunkPos, this.#chunkPos + len);
      copy.set(d);
      this.#chunkPos += len;
    }
    p.bufs[j] = copy.buffer;
    p.offs[j] = copy.byteOffset;
    e.data = copy;
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

/**
 * Stable storage + unstable tail, with the commit and apply cursors: committed entries are handed out for applying
 * (`applying`, moved by `acceptApplying`) and applied later (`applied`, moved by `appliedTo`), so the application may
 * apply beside the Raft loop. At most `maxApplyingBytes` of entry payload are handed out and not yet applied.
 */
export class RaftLog {
  readonly storage: Storage;
  readonly unstable: Unstable;
  committed: number;
  /** highest index the application has applied (or restored a snapshot at) */
  applied: number;
  /** highest index handed out for applying (>= applied) */
  applying: number;
  readonly maxNextEntsSize: number;
  readonly maxApplyingBytes: number;
  /** payload bytes handed out and not yet applied, as (last index, bytes) per hand-out */
  #applyingBatches: { last: number; bytes: number }[] = [];
  #applyingBytes = 0;

  constructor(storage: Storage, maxNextEntsSize: number, maxApplyingBytes = Infinity) {
    this.storage = storage;
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    this.committed = first - 1;
    this.applied = first - 1;
    this.applying = first - 1;
    this.maxNextEntsSize = maxNextEntsSize;
    this.maxApplyingBytes = maxApplyingBytes;
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

  /**
   * Committed entries not yet handed out for applying, bounded by maxNextEntsSize; none while maxApplyingBytes are
   * handed out and not yet applied.
   */
  nextEnts(): Entry[] {
    if (!this.hasNextEnts()) return [];
    return this.slice(Math.max(this.applying + 1, this.firstIndex()), this.committed + 1, this.maxNextEntsSize);
  }

  hasNextEnts(): boolean {
    return this.#applyingBytes < this.maxApplyingBytes &&
      this.committed + 1 > Math.max(this.applying + 1, this.firstIndex());
  }

  /** Entries up to `last`, of `bytes` payload in all, were handed out for applying. */
  acceptApplying(last: number, bytes: number): void {
    invariant(
      last > this.applying && last <= this.committed,
      () => `applying(${last}) is out of range (${this.applying}, committed(${this.committed})]`,
    );
    this.applying = last;
    this.#applyingBatches.push({ last, bytes });
    this.#applyingBytes += bytes;
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

  /** The application applied everything up to `i` (or restored a snapshot at `i`, past what was handed out). */
  appliedTo(i: number): void {
    if (i === 0) return;
    invariant(
      this.committed >= i && i >= this.applied,
      () => `applied(${i}) is out of range [prevApplied(${this.applied}), committed(${this.committed})]`,
    );
    this.applied = i;
    if (i > this.applying) this.applying = i;
    let n = 0;
    while (n < this.#applyingBatches.length && this.#applyingBatches[n].last <= i) {
      this.#applyingBytes -= this.#applyingBatches[n++].bytes;
    }
    if (n > 0) this.#applyingBatches.splice(0, n);
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
