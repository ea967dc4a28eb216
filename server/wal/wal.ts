/**
 * Write-ahead log for the replicated (Raft) log: entries, hard state, snapshot marks and opaque metadata,
 * appended to segment files and made durable with one fdatasync per batch (group commit).
 *
 * On-disk record: [u32 payloadLen][u32 crc][payload][zero padding to a multiple of 8], little endian.
 * `payload` starts with a record-type byte. `crc` is crc32 (zlib polynomial) of the payload, seeded with the
 * previous record's crc, so the chain runs through every record of every segment. Each segment begins with a
 * segment record (magic, seq, first index, the crc it continues from), followed by metadata, hard state and the
 * newest snapshot mark, so older segments can be deleted without losing any of them. Each batch (one write and one
 * fdatasync) begins with a batch record holding the crc it continues from, the batch's length in bytes and how many
 * of its sectors were written as all zeros: like a segment record it can be verified on its own, so replay can tell
 * whether a later batch follows a damaged record, where the damaged record's batch ends, and whether a sector of that
 * batch reads as zeros that was written with data.
 *
 * Recovery tells torn writes from corruption, as etcd does. Power loss in the middle of a batch leaves some of its
 * sectors unwritten (zeros: the segment was preallocated), in any order. A damaged record is torn when it lies in the
 * last batch (no batch record follows it: that batch's fdatasync never returned, so nothing in it was acknowledged)
 * and that batch has lost a sector: it holds more all-zero 512-byte sectors (counted within the batch) than its batch
 * record says were written, it is cut off by the end of the file, or the batch record itself lies in an all-zero
 * sector. Zeros that were written (the high bytes of a number, padding, zeros in an entry's data) are no such
 * evidence: a checksum mismatch in the last synced record whose last sector holds only such zeros is corruption.
 * Replay truncates a torn write with a log line. Any other damage (a checksum mismatch in a batch that lost no
 * sector, a length running past its batch, damage in a batch that a later batch follows) is {@link WalCorruptError},
 * naming file and offset; `forceRepair` truncates there when the user asks for it.
 * Segment files are named `<seq>-<firstIndex>.wal` (16 hex digits each) and are created via a tmp file + rename.
 * The current segment is extended with zeros ahead of the writes ({@link PREALLOCATE_BYTES} at a time), so a segment's
 * records end where only zeros remain.
 */
import fs from "node:fs/promises";
import path from "node:path";
import zlib from "node:zlib";
import { readWholeFile } from "../util/files.ts";
import { Progress } from "../util/progress.ts";
import type { LogFields } from "../etcd/log.ts";

import type { Entry, HardState } from "../raft/types.ts";
export type { Entry, HardState };

/** Position of a snapshot in the log. */
export interface SnapshotMark {
  index: number;
  term: number;
}

/** What replay recovered from the log directory. */
export interface WalContents {
  hardState: HardState;
  /** The entries after the snapshot index, in log order. */
  entries: ReplayedEntries;
  snapshot: SnapshotMark | null;
  metadata: Uint8Array | null;
}

/** A WAL record that cannot be a torn write: the log must not be opened. */
export class WalCorruptError extends Error {
  file: string;
  offset: number;
  /** damage to the records themselves, which `forceRepair` can cut off (not, e.g., a gap left by a missing snapshot) */
  repairable: boolean;
  constructor(file: string, offset: number, why: string, repairable = true) {
    super(`wal: corrupt record in ${file} at offset ${offset}: ${why}`);
    this.name = "WalCorruptError";
    this.file = file;
    this.offset = offset;
    this.repairable = repairable;
  }
}

/** Options of {@link Wal.open}. */
export interface WalOptions {
  /** Roll over to a new segment once the current one reaches this size (default 64 MiB). */
  segmentBytes?: number;
  /** Receives notable events such as torn-tail truncation (default: console.error). */
  log?: (msg: string) => void;
  /** Receives the replay's progress lines (at most one a second) and its summary (default: none). */
  progress?: (msg: string, fields: LogFields) => void;
  /** Index of the snapshot the caller restored; replay returns entries after it. */
  snapshotIndex?: number;
  /**
   * Picks the snapshot to restore, from the snapshot marks the log records (oldest first) and its hard state; returns
   * its index (0: none). Replay returns entries after it. Overrides `snapshotIndex`.
   */
  chooseSnapshot?: (marks: SnapshotMark[], hardState: HardState) => Promise<number>;
  /** Opaque bytes stored at the head of every segment (used when the log is created). */
  metadata?: Uint8Array;
  /**
   * Truncate the log at a corrupt record instead of refusing to open (the user asked for it: what follows the damage
   * is lost). The damaged segment is first copied to `<name>.broken`; later segments are renamed to `<name>.broken`.
   */
  forceRepair?: boolean;
}

const REC_SEGMENT = 1;
const REC_METADATA = 2;
const REC_ENTRY = 3;
const REC_HARDSTATE = 4;
const REC_SNAPSHOT = 5;
const REC_BATCH = 6;
/**
 * payload of a batch record: type, u32 crc it continues from, u32 length of the batch in bytes, u32 number of the
 * batch's sectors (the parts of 512-byte sectors of the file that the batch covers) written as all zeros
 */
const BATCH_PAYLOAD = 13;
const MAGIC = 0x57414c31; // "WAL1"
const HEADER = 8;
const SEGMENT_RE = /^([0-9a-f]{16})-([0-9a-f]{16})\.wal$/;
const TWO32 = 2 ** 32;
/** The unit a disk writes atomically, at least: a torn write leaves whole sectors unwritten. */
const SECTOR = 512;

/**
 * The current segment grows in steps of this many zero bytes ahead of the writes. An fdatasync that must also record
 * a new file size costs about a third more than one that only flushes data (3 writers appending 360-byte records in
 * lockstep on ext4: p50 83–113 µs against 59–81 µs), and every batch would change the size; etcd preallocates its
 * segments for the same reason. A step rather than a whole segment keeps the zeros that replay reads small.
 */
export const PREALLOCATE_BYTES = 1 << 20;
/** A batch up to this size is written on the event loop before its fdatasync (see writeBatchAsync). */
const INLINE_WRITE_BYTES = 64 * 1024;

const crc32 = (data: Uint8Array, seed: number): number => zlib.crc32(data, seed);
const padLen = (len: number): number => len + ((8 - (len % 8)) % 8);
const hex16 = (n: number): string => n.toString(16).padStart(16, "0");
const segmentName = (seq: number, firstIndex: number): string => `${hex16(seq)}-${hex16(firstIndex)}.wal`;

function putU64(v: DataView, off: number, n: number): void {
  v.setUint32(off, Math.floor(n / TWO32), true);
  v.setUint32(off + 4, n >>> 0, true);
}

function getU64(v: DataView, off: number): number {
  return v.getUint32(off, true) * TWO32 + v.getUint32(off + 4, true);
}

/**
 * Records framed in place in one reused buffer, [u32 len][u32 crc][payload][pad]: the payloads are written as records
 * are added, the lengths and the crc chain when the batch is sealed (the chain's seed is known only then).
 */
class RecordBatch {
  static readonly INITIAL = 64 << 10;
  /** a buffer grown beyond this (a large catch-up batch) is not kept for the next batch */
  static readonly KEEP = 1 << 20;

  buf = new Uint8Array(RecordBatch.INITIAL);
  view = new DataView(this.buf.buffer);
  length = 0;
  /** [offset, payload length] of each record */
  private recs: number[] = [];

  get empty(): boolean {
    return this.recs.length === 0;
  }

  /** Adds a record with an `n`-byte payload (zero padding included); returns where the payload goes. */
  add(n: number): number {
    const total = HEADER + padLen(n);
    if (this.length + total > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < this.length + total) size *= 2;
      const b = new Uint8Array(size);
      b.set(this.buf.subarray(0, this.length));
      this.buf = b;
      this.view = new DataView(b.buffer);
    }
    const off = this.length;
    this.recs.push(off, n);
    this.buf.fill(0, off + HEADER + n, off + total);
    this.length += total;
    return off + HEADER;
  }

  /**
   * Fills in lengths, the batch record and the crc chain from `crc`, for bytes that go to file offset `pos`; returns
   * the framed bytes (a view) and the chain's last crc.
   */
  seal(crc: number, pos: number): { bytes: Uint8Array; crc: number } {
    for (let i = 0; i < this.recs.length; i += 2) this.view.setUint32(this.recs[i], this.recs[i + 1], true);
    // A record header lies in one sector, which then holds its non-zero length; a sector holding the batch record's
    // fields holds its header or the next record's (a batch has a record after its batch record). So the crcs and
    // those fields, filled in below, cannot change which sector pieces are all zeros: count them now.
    const zeros = zeroSectors(this.buf, 0, this.length, pos);
    for (let i = 0; i < this.recs.length; i += 2) {
      const off = this.recs[i], n = this.recs[i + 1];
      if (this.buf[off + HEADER] === REC_BATCH) {
        this.view.setUint32(off + HEADER + 1, crc, true);
        this.view.setUint32(off + HEADER + 5, this.length - off, true);
        this.view.setUint32(off + HEADER + 9, zeros, true);
      }
      crc = crc32(this.buf.subarray(off + HEADER, off + HEADER + n), crc);
      this.view.setUint32(off + 4, crc, true);
    }
    return { bytes: this.buf.subarray(0, this.length), crc };
  }

  clear(): void {
    this.length = 0;
    this.recs.length = 0;
    if (this.buf.length > RecordBatch.KEEP) {
      this.buf = new Uint8Array(RecordBatch.INITIAL);
      this.view = new DataView(this.buf.buffer);
    }
  }
}

function addEntry(b: RecordBatch, e: Entry): void {
  const p = b.add(18 + e.data.length);
  b.buf[p] = REC_ENTRY;
  putU64(b.view, p + 1, e.index);
  putU64(b.view, p + 9, e.term);
  b.buf[p + 17] = e.type;
  b.buf.set(e.data, p + 18);
}

function addHardState(b: RecordBatch, hs: HardState): void {
  const p = b.add(25);
  b.buf[p] = REC_HARDSTATE;
  putU64(b.view, p + 1, hs.term);
  b.view.setBigUint64(p + 9, BigInt(hs.vote), true);
  putU64(b.view, p + 17, hs.commit);
}

function addMark(b: RecordBatch, m: SnapshotMark): void {
  const p = b.add(17);
  b.buf[p] = REC_SNAPSHOT;
  putU64(b.view, p + 1, m.index);
  putU64(b.view, p + 9, m.term);
}

/** The record a batch begins with: the crc it continues from and the batch's length (filled in by `seal`). */
function addBatchStart(b: RecordBatch): void {
  const p = b.add(BATCH_PAYLOAD);
  b.buf[p] = REC_BATCH;
}

function addSegment(b: RecordBatch, prevCrc: number, seq: number, firstIndex: number): void {
  const p = b.add(25);
  b.buf[p] = REC_SEGMENT;
  b.view.setUint32(p + 1, prevCrc, true);
  b.view.setUint32(p + 5, MAGIC, true);
  putU64(b.view, p + 9, seq);
  putU64(b.view, p + 17, firstIndex);
}

function addMetadata(b: RecordBatch, md: Uint8Array): void {
  const p = b.add(1 + md.length);
  b.buf[p] = REC_METADATA;
  b.buf.set(md, p + 1);
}

type ReadResult = { ok: true; payload: Uint8Array; crc: number; end: number } | { ok: false; why: string };

/**
 * Reads and verifies the record at `off`; `seed` null means a record that carries its own seed (a segment or batch
 * record: the crc it continues from follows the type byte).
 */
function readRecord(buf: Uint8Array, v: DataView, off: number, seed: number | null): ReadResult {
  if (off + HEADER > buf.length) return { ok: false, why: "short record header" };
  const len = v.getUint32(off, true);
  if (len === 0) return { ok: false, why: "zero record length" };
  const end = off + HEADER + padLen(len);
  if (end > buf.length) return { ok: false, why: `record length ${len} runs past end of file` };
  const payload = buf.subarray(off + HEADER, off + HEADER + len);
  if (seed === null) {
    if (len < 5) return { ok: false, why: "self-seeded record too short" };
    seed = v.getUint32(off + HEADER + 1, true);
  }
  const crc = v.getUint32(off + 4, true);
  if (crc32(payload, seed) !== crc) return { ok: false, why: "crc mismatch" };
  return { ok: true, payload, crc, end };
}

/** Whether only zeros remain from `off`: the clean end of a preallocated segment. */
function zeroTail(buf: Uint8Array, off: number): boolean {
  for (let i = off; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Offset of the first batch record after `off` (it verifies on its own), or -1. */
function batchAfter(buf: Uint8Array, v: DataView, off: number): number {
  for (let p = off + 8; p + HEADER + 8 <= buf.length; p += 8) {
    if (v.getUint32(p, true) === BATCH_PAYLOAD && buf[p + HEADER] === REC_BATCH && readRecord(buf, v, p, null).ok) {
      return p;
    }
  }
  return -1;
}

/** The start of the sector after the one holding file offset `off`. */
const nextSector = (off: number): number => (Math.floor(off / SECTOR) + 1) * SECTOR;

/** Whether bytes [from, to) of `buf` are all zeros. */
function allZero(buf: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

/**
 * How many pieces of bytes [from, to) of `buf`, cut where the file's sectors begin (`buf[0]` lies at file offset `pos`),
 * are all zeros. Most pieces hold a non-zero byte near their start, so this reads little of a batch.
 */
function zeroSectors(buf: Uint8Array, from: number, to: number, pos = 0): number {
  let n = 0;
  for (let lo = from; lo < to;) {
    const hi = Math.min(to, nextSector(pos + lo) - pos);
    if (allZero(buf, lo, hi)) n++;
    lo = hi;
  }
  return n;
}

/** A batch as its (verified) batch record describes it: bytes [start, end) of the segment. */
interface Batch {
  start: number;
  end: number;
  /** how many of its sector pieces were written as all zeros */
  zeros: number;
}

/**
 * Whether the bad record at `off` of the last segment is a torn write (the last batch, cut short by a crash before its
 * fdatasync returned), and why. `batch`: the batch the record lies in, or null when a batch record belongs at `off`.
 */
function tornWrite(buf: Uint8Array, v: DataView, off: number, batch: Batch | null): { torn: boolean; why: string } {
  const later = batchAfter(buf, v, off);
  if (later >= 0) {
    return {
      torn: false,
      why: `a later batch begins at offset ${later}, so this record had been synced: not a torn write`,
    };
  }
  if (batch === null) {
    // the batch record itself: lost when the file ends in it or a sector holding it was not written. Each such sector
    // holds a record header (the batch record's or the next record's), so it was written with data, not zeros.
    if (off + HEADER + padLen(BATCH_PAYLOAD) > buf.length) return { torn: true, why: "the file ends inside it" };
    for (let s = off; s < off + HEADER + padLen(BATCH_PAYLOAD); s = nextSector(s)) {
      const to = Math.min(nextSector(s), buf.length);
      if (allZero(buf, s, to)) return { torn: true, why: `the sector piece in bytes ${s}..${to} is all zeros` };
    }
    return { torn: false, why: "no sector of this batch record is unwritten (zeros): not a torn write" };
  }
  if (off + HEADER <= buf.length) {
    const end = off + HEADER + padLen(v.getUint32(off, true));
    if (end > batch.end) {
      return { torn: false, why: `its length runs past the end of its batch at offset ${batch.end}: not a torn write` };
    }
  }
  if (batch.end > buf.length) {
    return { torn: true, why: `the file ends inside its batch (bytes ${batch.start}..${batch.end})` };
  }
  const zeros = zeroSectors(buf, batch.start, batch.end);
  return zeros > batch.zeros
    ? {
      torn: true,
      why: `${zeros - batch.zeros} sector(s) of its batch (bytes ${batch.start}..${batch.end}) hold zeros ` +
        `that were written with data`,
    }
    : {
      torn: false,
      why: `its batch (bytes ${batch.start}..${batch.end}) lost no sector (all-zero sectors: ${zeros}, ` +
        `as written): not a torn write`,
    };
}

interface Segment {
  seq: number;
  firstIndex: number;
  file: string;
}

/**
 * Write-ahead log with group commit: everything appended between two `sync()` calls goes to disk with one write and
 * one fdatasync. Create with {@link Wal.open}.
 */
export class Wal {
  /** Number of fdatasync calls made for appended data (segment creation not counted). */
  syncCount = 0;

  private fh: Deno.FsFile;
  private pos: number;
  /** length of the current segment file: `pos` plus the zeros preallocated after it */
  private allocated: number;
  private crc: number;
  private segments: Segment[];
  private pending = new RecordBatch();
  /** a written batch whose buffer the next sealed one hands its records to */
  private spare: RecordBatch | null = null;
  /** the batch a `syncAsync` is writing */
  private writing: Promise<void> | null = null;
  private pendingHardState: HardState | null = null;
  private pendingMark: SnapshotMark | null = null;
  private appendedLastIndex: number;
  private written: { hardState: HardState; mark: SnapshotMark | null; lastIndex: number };
  private failed: unknown = null;
  private closed = false;

  private constructor(
    private dir: string,
    private metadata: Uint8Array | null,
    private segmentBytes: number,
    private log: (msg: string) => void,
    state: { fh: Deno.FsFile; pos: number; allocated: number; crc: number; segments: Segment[]; hardState: HardState },
    mark: SnapshotMark | null,
    lastIndex: number,
  ) {
    this.fh = state.fh;
    this.pos = state.pos;
    this.allocated = state.allocated;
    this.crc = state.crc;
    this.segments = state.segments;
    this.appendedLastIndex = lastIndex;
    this.written = { hardState: state.hardState, mark, lastIndex };
  }

  /**
   * Creates `dir` if missing (writing `metadata` into the first segment), or opens and replays it.
   * Returned entries are those after `snapshotIndex` (default: the newest snapshot mark in the log);
   * an entry whose index is <= an earlier one replaces the tail from that index (Raft log truncation).
   * A torn write in the last batch is truncated with a log line; any other damage throws {@link WalCorruptError}, or
   * with `forceRepair` is cut off (see the module's doc).
   */
  static async open(dir: string, opts: WalOptions = {}): Promise<{ wal: Wal; contents: WalContents }> {
    const log = opts.log ?? ((m: string) => console.error(m));
    const segmentBytes = opts.segmentBytes ?? 64 * 1024 * 1024;
    await fs.mkdir(dir, { recursive: true });
    const names = (await fs.readdir(dir)).sort();
    for (const n of names) if (n.endsWith(".wal.tmp")) await fs.rm(path.join(dir, n), { force: true });
    let segNames = names.filter((n) => SEGMENT_RE.test(n));
    const pick = opts.chooseSnapshot ?? (() => Promise.resolve(opts.snapshotIndex));
    let r: ReplayResult | null = null;
    let repaired = false;
    const progress = new Progress("bytes");
    while (segNames.length > 0 && !r) {
      try {
        progress.done = 0;
        r = await replay(dir, segNames, pick, log, progress, opts.progress ?? (() => {}));
      } catch (e) {
        if (!(e instanceof WalCorruptError && e.repairable && opts.forceRepair)) throw e;
        segNames = await cutAt(dir, segNames, e, log);
        repaired = true;
      }
    }
    if (r) {
      opts.progress?.("replayed WAL", { segments: r.segments.length, entries: r.entries.length, ...progress.fields() });
    }
    if (r && repaired && r.hardState.commit > r.lastIndex) {
      log(`wal: the repaired log ends at index ${r.lastIndex}; commit index ${r.hardState.commit} lowered to it`);
      r.hardState.commit = r.lastIndex;
    }

    if (!r) {
      const hardState: HardState = { term: 0, vote: "0", commit: 0 };
      const base = opts.snapshotIndex ?? 0;
      const wal = new Wal(
        dir,
        opts.metadata ?? null,
        segmentBytes,
        log,
        {
          fh: null as unknown as Deno.FsFile,
          pos: 0,
          allocated: 0,
          crc: 0,
          segments: [],
          hardState,
        },
        null,
        base,
      );
      wal.createSegment(1, base + 1, 0);
      return {
        wal,
        contents: {
          hardState: { ...hardState },
          entries: ReplayedEntries.EMPTY,
          snapshot: null,
          metadata: wal.metadata,
        },
      };
    }

    const last = r.segments[r.segments.length - 1];
    const fh = await Deno.open(last.file, { read: true, write: true });
    let allocated: number;
    try {
      if (r.truncateAt !== null) {
        await fh.truncate(r.truncateAt);
        await fh.syncData();
        allocated = r.truncateAt;
      } else {
        allocated = (await fh.stat()).size;
      }
    } catch (e) {
      fh.close();
      throw e;
    }
    const wal = new Wal(
      dir,
      r.metadata,
      segmentBytes,
      log,
      { fh, pos: r.end, allocated, crc: r.crc, segments: r.segments, hardState: r.hardState },
      r.newestMark,
      r.lastIndex,
    );
    return {
      wal,
      contents: { hardState: { ...r.hardState }, entries: r.entries, snapshot: r.snapshot, metadata: r.metadata },
    };
  }

  /** Buffers entries (and optionally a new HardState) for the next sync; cheap and synchronous. */
  append(entries: Entry[], hardState?: HardState): void {
    this.checkUsable();
    if (entries.length === 0 && !hardState) return;
    if (this.pending.empty) addBatchStart(this.pending);
    for (const e of entries) {
      addEntry(this.pending, e);
      this.appendedLastIndex = e.index;
    }
    if (hardState) {
      addHardState(this.pending, hardState);
      this.pendingHardState = { ...hardState };
    }
  }

  /** Records that a snapshot at (index, term) exists; durable after the next sync. */
  markSnapshot(mark: SnapshotMark): void {
    this.checkUsable();
    if (this.pending.empty) addBatchStart(this.pending);
    addMark(this.pending, mark);
    this.pendingMark = { ...mark };
    if (mark.index > this.appendedLastIndex) this.appendedLastIndex = mark.index;
  }

  /**
   * Makes everything appended so far durable with one write and one fdatasync, before returning, on the calling
   * thread (start-up, close, tools; the Raft loop uses {@link syncAsync}). Nothing pending: no I/O.
   * A failed write or fdatasync leaves the file in an unknown state, so every later use throws.
   */
  sync(): void {
    this.checkSyncable();
    if (this.pending.empty) return;
    try {
      this.writeBatch();
    } catch (e) {
      this.failed = e instanceof Error ? e : new Error(String(e));
      throw this.failed;
    }
  }

  /**
   * `sync` with the write and the fdatasync on Deno's blocking-I/O threads: the event loop goes on serving reads,
   * keep-alives and watchers while the disk works (on a busy disk an fdatasync took 50-140 ms, every one of them an
   * event-loop stall on the calling thread). Records appended meanwhile go to the next batch; a call made while a
   * batch is being written waits for it first, and returns once everything appended before the call is durable.
   */
  async syncAsync(): Promise<void> {
    while (this.writing) await this.writing;
    this.checkSyncable();
    if (this.pending.empty) return;
    const w = this.writing = this.writeBatchAsync();
    try {
      await w;
    } catch (e) {
      this.failed = e instanceof Error ? e : new Error(String(e));
      throw this.failed;
    } finally {
      if (this.writing === w) this.writing = null;
    }
  }

  /** Deletes whole segment files that only hold entries below `index` (call after a snapshot at `index`). */
  async releaseBefore(index: number): Promise<void> {
    let n = 0;
    // segment i holds live entries below segments[i + 1].firstIndex; the last segment is never released.
    while (n + 1 < this.segments.length && this.segments[n + 1].firstIndex <= index) n++;
    if (n === 0) return;
    const gone = this.segments.splice(0, n);
    for (const s of gone) await fs.rm(s.file, { force: true });
    await syncDir(this.dir);
  }

  /** Syncs whatever is pending, drops the preallocated zeros and closes the current segment file. */
  close(): void {
    if (this.closed) return;
    try {
      // a batch still being written (a snapshot's mark at shutdown) finishes on its own; nothing after it was acked
      if (!this.failed && !this.writing) {
        this.sync();
        this.trimTo(this.fh, this.pos);
      }
    } finally {
      this.closed = true;
      this.fh.close();
    }
  }

  /** Drops a segment's preallocated zeros after `end`: best effort, replay skips them anyway. */
  private trimTo(fh: Deno.FsFile, end: number): void {
    try {
      fh.truncateSync(end);
    } catch (e) {
      this.log(`wal: could not drop the preallocated zeros of a segment: ${e}`);
    }
  }

  private checkUsable(): void {
    if (this.closed) throw new Error("wal: closed");
    if (this.failed) throw this.failed;
  }

  /** A sync may start: the log is usable and no `syncAsync` is still writing. */
  private checkSyncable(): void {
    this.checkUsable();
    if (this.writing) throw new Error("wal: a sync is still writing");
  }

  private writeBatch(): void {
    const { fh, bytes, pos, batch } = this.sealBatch();
    writeAllSync(fh, bytes, pos);
    fh.syncDataSync();
    this.batchDone(batch);
  }

  /**
   * `writeBatch` with the fdatasync (and the write of a large batch) on Deno's blocking-I/O threads. Every operation
   * handed to those threads costs a wake-up of the event loop when it completes, which on a busy host waits for the
   * scheduler: a seek, a write and an fdatasync each took up to 16, 32 and 12 ms (load average 4-5, 2 cores), and a
   * put waited for all three. The seek (no I/O) and the write of a small batch (a copy into the page cache) run here
   * instead, so such a batch makes one hand-off.
   */
  private async writeBatchAsync(): Promise<void> {
    const { fh, bytes, pos, batch } = this.sealBatch();
    if (bytes.length <= INLINE_WRITE_BYTES) writeAllSync(fh, bytes, pos);
    else {
      fh.seekSync(pos, Deno.SeekMode.Start);
      await writeAllFrom(fh, bytes);
    }
    await fh.syncData();
    this.batchDone(batch);
  }

  /**
   * Seals the pending records into the next batch and takes its place in the file (a new segment first when the
   * current one is full, zeros preallocated ahead): what remains is to write `bytes` at `pos` and fdatasync. Records
   * appended from now on go to another batch (the sealed bytes live in this one's buffer until written).
   */
  private sealBatch(): { fh: Deno.FsFile; bytes: Uint8Array; pos: number; batch: RecordBatch } {
    if (this.pos >= this.segmentBytes) {
      const cur = this.segments[this.segments.length - 1];
      this.createSegment(cur.seq + 1, this.written.lastIndex + 1, this.crc);
    }
    if (this.pendingHardState) this.written.hardState = this.pendingHardState;
    if (this.pendingMark) this.written.mark = this.pendingMark;
    this.pendingHardState = null;
    this.pendingMark = null;
    this.written.lastIndex = this.appendedLastIndex;
    const batch = this.pending;
    const { bytes, crc } = batch.seal(this.crc, this.pos);
    if (this.pos + bytes.length > this.allocated) {
      this.allocated = Math.ceil((this.pos + bytes.length) / PREALLOCATE_BYTES) * PREALLOCATE_BYTES;
      this.fh.truncateSync(this.allocated);
    }
    const pos = this.pos;
    this.pos += bytes.length;
    this.crc = crc;
    this.pending = this.spare ?? new RecordBatch();
    this.spare = null;
    return { fh: this.fh, bytes, pos, batch };
  }

  /** A sealed batch is written and synced: its buffer takes the next records but one. */
  private batchDone(batch: RecordBatch): void {
    batch.clear();
    this.spare = batch;
    this.syncCount++;
  }

  /** Creates a segment via tmp file + rename, with the current durable state at its head, and makes it current. */
  private createSegment(seq: number, firstIndex: number, prevCrc: number): void {
    const name = segmentName(seq, firstIndex);
    const file = path.join(this.dir, name);
    const head = new RecordBatch();
    addSegment(head, prevCrc, seq, firstIndex);
    if (this.metadata) addMetadata(head, this.metadata);
    addHardState(head, this.written.hardState);
    if (this.written.mark) addMark(head, this.written.mark);
    const { bytes: buf, crc } = head.seal(prevCrc, 0);
    const fh = Deno.openSync(file + ".tmp", { read: true, write: true, create: true, truncate: true });
    try {
      writeAllSync(fh, buf, 0);
      fh.syncDataSync();
      Deno.renameSync(file + ".tmp", file);
      syncDirSync(this.dir);
    } catch (e) {
      fh.close();
      throw e;
    }
    const old = this.fh;
    const oldEnd = this.pos;
    this.fh = fh;
    this.pos = buf.length;
    this.allocated = buf.length;
    this.crc = crc;
    this.segments.push({ seq, firstIndex, file });
    if (old) {
      try {
        this.trimTo(old, oldEnd);
      } finally {
        old.close();
      }
    }
  }
}

/** Writes all of `buf` at `pos`. */
function writeAllSync(fh: Deno.FsFile, buf: Uint8Array, pos: number): void {
  fh.seekSync(pos, Deno.SeekMode.Start);
  let off = 0;
  while (off < buf.length) off += fh.writeSync(buf.subarray(off));
}

/** Writes all of `buf` at the file's position, off the event loop. */
async function writeAllFrom(fh: Deno.FsFile, buf: Uint8Array): Promise<void> {
  let off = 0;
  while (off < buf.length) off += await fh.write(buf.subarray(off));
}

/** fsyncs a directory so that created, renamed or deleted entries are durable. */
export async function syncDir(dir: string): Promise<void> {
  const d = await fs.open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** fsyncs a directory, blocking. */
function syncDirSync(dir: string): void {
  const d = Deno.openSync(dir, { read: true });
  try {
    d.syncSync();
  } finally {
    d.close();
  }
}

/** Growable columns describing entry records: index, term, type, and where the data is (segment, offset, length). */
class EntryColumns {
  n = 0;
  index = new Float64Array(0);
  term = new Float64Array(0);
  type = new Uint8Array(0);
  seg = new Uint32Array(0);
  /** where the data starts in the segment's bytes, and its length */
  off = new Uint32Array(0);
  len = new Uint32Array(0);
  /** where the record starts (for error messages) */
  rec = new Uint32Array(0);

  push(index: number, term: number, type: number, seg: number, off: number, len: number, rec: number): void {
    if (this.n === this.index.length) this.#grow(Math.max(1024, this.n * 2));
    const i = this.n++;
    this.index[i] = index;
    this.term[i] = term;
    this.type[i] = type;
    this.seg[i] = seg;
    this.off[i] = off;
    this.len[i] = len;
    this.rec[i] = rec;
  }

  #grow(cap: number): void {
    const grow = <T extends Float64Array | Uint32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    this.index = grow(this.index, (n) => new Float64Array(n));
    this.term = grow(this.term, (n) => new Float64Array(n));
    this.type = grow(this.type, (n) => new Uint8Array(n));
    this.seg = grow(this.seg, (n) => new Uint32Array(n));
    this.off = grow(this.off, (n) => new Uint32Array(n));
    this.len = grow(this.len, (n) => new Uint32Array(n));
    this.rec = grow(this.rec, (n) => new Uint32Array(n));
  }
}

/**
 * Replayed entries without an object per entry: their positions in the segments' bytes, in typed columns. `slice`
 * makes Entry objects (data: views into those bytes) for a range, so a caller can take a large log in pieces and let
 * each go (a replayed 100k-entry log held as Entry objects cost about 290 B of heap per entry).
 */
export class ReplayedEntries implements Iterable<Entry> {
  static readonly EMPTY = new ReplayedEntries([], new EntryColumns(), new Int32Array(0));

  constructor(
    private readonly bufs: Uint8Array<ArrayBuffer>[],
    private readonly cols: EntryColumns,
    /** rows of `cols`, in log order */
    private readonly rows: Int32Array,
  ) {}

  get length(): number {
    return this.rows.length;
  }

  /** Entries [from, to) (default: all) as Entry objects. */
  slice(from = 0, to = this.length): Entry[] {
    to = Math.min(to, this.length);
    const out: Entry[] = [];
    for (let k = Math.max(0, from); k < to; k++) {
      const r = this.rows[k], c = this.cols;
      const off = c.off[r];
      out.push({
        index: c.index[r],
        term: c.term[r],
        type: c.type[r],
        data: this.bufs[c.seg[r]].subarray(off, off + c.len[r]),
      });
    }
    return out;
  }

  /**
   * Returns the segments' bytes to the system now rather than at the next full garbage collection (which may come only
   * after the replayed log was applied, with the bytes still held). Entries sliced earlier are invalid afterwards.
   */
  release(): void {
    for (const b of this.bufs) if (b.byteLength > 0) b.buffer.transfer(0);
    this.bufs.length = 0;
  }

  *[Symbol.iterator](): Iterator<Entry> {
    for (let k = 0; k < this.length; k += 1024) yield* this.slice(k, k + 1024);
  }
}

interface ReplayResult {
  segments: Segment[];
  entries: ReplayedEntries;
  hardState: HardState;
  metadata: Uint8Array | null;
  snapshot: SnapshotMark | null;
  newestMark: SnapshotMark | null;
  lastIndex: number;
  crc: number;
  end: number;
  truncateAt: number | null;
}

/**
 * `forceRepair`: cuts the log at the damage `err` names. The damaged segment is copied to `<name>.broken` and
 * truncated there (moved aside whole when the damage is at its start); every later segment is moved aside to
 * `<name>.broken`. Returns the segment names left.
 */
async function cutAt(dir: string, segNames: string[], err: WalCorruptError, log: (m: string) => void) {
  const i = segNames.indexOf(path.basename(err.file));
  if (i < 0) throw err;
  const aside = err.offset === 0 ? segNames.slice(i) : segNames.slice(i + 1);
  if (err.offset > 0) {
    await fs.copyFile(err.file, err.file + ".broken");
    const fh = await Deno.open(err.file, { write: true });
    try {
      await fh.truncate(err.offset);
      await fh.syncData();
    } finally {
      fh.close();
    }
  }
  for (const n of aside) await fs.rename(path.join(dir, n), path.join(dir, n + ".broken"));
  await syncDir(dir);
  log(
    `wal: repaired by request (--force-repair-wal): ${err.message}; ` +
      (err.offset > 0 ? `truncated ${err.file} at offset ${err.offset} (its old copy: ${err.file}.broken)` : "") +
      (aside.length > 0 ? `${err.offset > 0 ? "; " : ""}moved aside as *.broken: ${aside.join(", ")}` : "") +
      "; everything after the damage is lost from this member's log",
  );
  return segNames.slice(0, i + (err.offset > 0 ? 1 : 0));
}

async function replay(
  dir: string,
  segNames: string[],
  pick: (marks: SnapshotMark[], hardState: HardState) => Promise<number | undefined>,
  log: (m: string) => void,
  progress: Progress,
  report: (m: string, fields: LogFields) => void,
): Promise<ReplayResult> {
  const segments: Segment[] = [];
  let hardState: HardState = { term: 0, vote: "0", commit: 0 };
  let metadata: Uint8Array | null = null;
  const marks: SnapshotMark[] = [];
  // Entry records in log order; resolved against the snapshot base after all marks are known.
  const bufs: Uint8Array<ArrayBuffer>[] = [];
  const cols = new EntryColumns();
  let lastIndex = 0;
  let crc = 0;
  let end = 0;
  let truncateAt: number | null = null;

  for (let i = 0; i < segNames.length; i++) {
    const m = SEGMENT_RE.exec(segNames[i])!;
    const seq = parseInt(m[1], 16);
    const firstIndex = parseInt(m[2], 16);
    const file = path.join(dir, segNames[i]);
    const isLast = i === segNames.length - 1;
    if (i > 0 && seq !== segments[i - 1].seq + 1) {
      throw new WalCorruptError(file, 0, `segment sequence ${seq} does not follow ${segments[i - 1].seq}`);
    }
    segments.push({ seq, firstIndex, file });
    const buf = await readWholeFile(file);
    bufs.push(buf);
    const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let off = 0;
    /** the batch being read, from its batch record */
    let batch: Batch = { start: 0, end: 0, zeros: 0 };
    while (off < buf.length) {
      const r = readRecord(buf, v, off, off === 0 ? null : crc);
      if (!r.ok) {
        const torn = (why: string) => {
          log(
            `wal: repaired a torn write at ${file}:${off} (${r.why}: ${why}); the last batch's fdatasync had not ` +
              `returned, so nothing in it was acknowledged: the segment is cut there`,
          );
          truncateAt = off;
        };
        if (off > 0 && zeroTail(buf, off)) {
          // preallocated and never written: the segment's end, unless a batch was cut short (its last sectors lost,
          // which only the last batch may have had)
          if (off < batch.end) {
            const why = `the batch's bytes ${off}..${batch.end} are all zeros`;
            if (!isLast) throw new WalCorruptError(file, off, `${r.why}; ${why}, though a later segment follows`);
            torn(why);
          }
          break;
        }
        if (off === 0 || !isLast) throw new WalCorruptError(file, off, r.why);
        const t = tornWrite(buf, v, off, off < batch.end ? batch : null);
        if (!t.torn) throw new WalCorruptError(file, off, `${r.why}; ${t.why}`);
        torn(t.why);
        break;
      }
      const p = r.payload;
      const pv = new DataView(p.buffer, p.byteOffset, p.byteLength);
      const bad = (why: string) => new WalCorruptError(file, off, why);
      if (off === 0 && p[0] !== REC_SEGMENT) throw bad("segment does not start with a segment record");
      switch (p[0]) {
        case REC_SEGMENT: {
          if (off !== 0 || p.length !== 25 || pv.getUint32(5, true) !== MAGIC) throw bad("bad segment record");
          if (getU64(pv, 9) !== seq || getU64(pv, 17) !== firstIndex) throw bad("segment record does not match name");
          if (i > 0 && pv.getUint32(1, true) !== crc) throw bad("crc chain broken between segments");
          lastIndex = Math.max(lastIndex, firstIndex - 1);
          break;
        }
        case REC_METADATA:
          metadata = p.slice(1);
          break;
        case REC_ENTRY: {
          if (p.length < 18) throw bad("short entry record");
          lastIndex = getU64(pv, 1);
          cols.push(lastIndex, getU64(pv, 9), p[17], i, p.byteOffset - buf.byteOffset + 18, p.length - 18, off);
          break;
        }
        case REC_HARDSTATE:
          if (p.length !== 25) throw bad("bad hard state record");
          hardState = { term: getU64(pv, 1), vote: pv.getBigUint64(9, true).toString(), commit: getU64(pv, 17) };
          break;
        case REC_BATCH:
          if (p.length !== BATCH_PAYLOAD) throw bad("bad batch record");
          if (pv.getUint32(1, true) !== crc) throw bad("batch record does not continue the chain");
          batch = { start: off, end: off + pv.getUint32(5, true), zeros: pv.getUint32(9, true) };
          break;
        case REC_SNAPSHOT: {
          if (p.length !== 17) throw bad("bad snapshot record");
          const mark = { index: getU64(pv, 1), term: getU64(pv, 9) };
          marks.push(mark);
          lastIndex = Math.max(lastIndex, mark.index);
          break;
        }
        default:
          throw bad(`unknown record type ${p[0]}`);
      }
      crc = r.crc;
      off = r.end;
    }
    end = off;
    progress.done += buf.length;
    if (!isLast && progress.due()) {
      report("replaying WAL: progress", {
        segment: `${i + 1}/${segNames.length}`,
        "entries-read": cols.n,
        ...progress.fields(),
      });
    }
  }

  const newestMark = marks.length ? marks[marks.length - 1] : null;
  const snapshotIndex = await pick(marks, hardState);
  let snapshot: SnapshotMark | null = newestMark;
  let base = newestMark?.index ?? 0;
  if (snapshotIndex !== undefined) {
    base = snapshotIndex;
    snapshot = marks.findLast((mk) => mk.index === snapshotIndex) ?? null;
    if (!snapshot && snapshotIndex > 0) log(`wal: no snapshot mark for index ${snapshotIndex} in ${dir}`);
  }
  // the surviving rows: a later entry at an index <= an earlier one's replaces the tail from there
  const rows = new Int32Array(cols.n);
  let n = 0;
  for (let r = 0; r < cols.n; r++) {
    const index = cols.index[r];
    if (index <= base) {
      n = 0; // a truncation below the snapshot: everything after it is superseded
      continue;
    }
    const next = n > 0 ? cols.index[rows[n - 1]] + 1 : base + 1;
    if (index > next) {
      throw new WalCorruptError(
        segments[cols.seg[r]].file,
        cols.rec[r],
        `entry ${index} leaves a gap (expected ${next})`,
        false,
      );
    }
    if (index < next) n -= next - index;
    rows[n++] = r;
  }
  const entries = new ReplayedEntries(bufs, cols, rows.slice(0, n));
  return { segments, entries, hardState, metadata, snapshot, newestMark, lastIndex, crc, end, truncateAt };
}
