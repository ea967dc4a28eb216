/**
 * Snapshot files: `<term>-<index>.snap` (16 hex digits each) holding
 * [magic "SNP1"][u64 index][u64 term][u32 dataLen][data][u32 crc32 of everything before it], little endian.
 * Written atomically (tmp file, fdatasync, rename, directory fsync).
 */
import fs from "node:fs/promises";
import path from "node:path";
import zlib from "node:zlib";
import { readWholeFile } from "../util/files.ts";

/** A state-machine snapshot at a log position. */
export interface Snapshot {
  index: number;
  term: number;
  data: Uint8Array;
}

const MAGIC = 0x31504e53; // "SNP1" read as little-endian u32
const HEAD = 24;
const NAME_RE = /^([0-9a-f]{16})-([0-9a-f]{16})\.snap$/;
/** a snapshot file being written: `<name>.<n>.tmp` (and `<name>.tmp`, as earlier versions named it) */
const TMP_RE = /\.snap(\.\d+)?\.tmp$/;
/** numbers the tmp files of this process: two transfers of the same snapshot must not write one file */
let tmpSeq = 0;
const TWO32 = 2 ** 32;
const hex16 = (n: number): string => n.toString(16).padStart(16, "0");

/** Saves and loads snapshots in one directory. */
export class Snapshotter {
  private log: (m: string) => void;
  private keep: number;

  /** `keep`: how many snapshot files to retain (default 5). */
  constructor(private dir: string, opts: { log?: (m: string) => void; keep?: number } = {}) {
    this.log = opts.log ?? ((m) => console.error(m));
    this.keep = Math.max(1, opts.keep ?? 5);
  }

  /**
   * Atomically writes `snap` (tmp file, crc, fdatasync, rename, dir fsync), then deletes files beyond `keep`. The file
   * is written at `pace` (default {@link SERVING_PACE}).
   */
  async save(snap: Snapshot, pace = SERVING_PACE): Promise<void> {
    const w = this.begin(snap.index, snap.term, snap.data.length, pace);
    w.write(snap.data);
    await this.commit(w);
  }

  /**
   * Begins the file of a snapshot whose `size` bytes of data are handed to the writer as they come (a leader's
   * snapshot is written while it arrives), at `pace`; `commit` makes it the newest snapshot, `abort` deletes it.
   */
  begin(index: number, term: number, size: number, pace = ARRIVING_PACE): SnapshotWriter {
    const file = path.join(this.dir, `${hex16(term)}-${hex16(index)}.snap`);
    return new SnapshotWriter(this.dir, file, index, term, size, pace);
  }

  /**
   * Finishes `w` (its data all written: crc, fdatasync) and puts it in place atomically (rename, dir fsync), then
   * deletes files beyond `keep`.
   */
  async commit(w: SnapshotWriter): Promise<void> {
    await w.finish();
    await fs.rename(w.tmp, w.file);
    await this.syncDir();
    const names = await this.list();
    const old = names.slice(0, Math.max(0, names.length - this.keep));
    for (const n of old) await fs.rm(path.join(this.dir, n), { force: true });
    if (old.length) await this.syncDir();
  }

  /**
   * The newest snapshot that the WAL records (one of `recorded`, matched by index and term) and whose crc verifies,
   * or null. A newer file the WAL does not record (the member crashed after writing it, before its mark was synced)
   * is ignored with a log line, as etcd does; a corrupt recorded file is renamed to `*.broken` (logged).
   */
  async loadNewest(recorded: { index: number; term: number }[]): Promise<Snapshot | null> {
    let names: string[];
    try {
      names = await this.list();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
    for (const n of await fs.readdir(this.dir)) {
      if (TMP_RE.test(n)) await fs.rm(path.join(this.dir, n), { force: true });
    }
    const marks = new Set(recorded.map((m) => `${hex16(m.term)}-${hex16(m.index)}.snap`));
    const newestMark = Math.max(0, ...recorded.map((m) => m.index));
    for (const n of names.reverse()) {
      const file = path.join(this.dir, n);
      if (!marks.has(n)) {
        if (parseInt(NAME_RE.exec(n)![2], 16) > newestMark) {
          this.log(`snap: ignoring ${file}: the WAL does not record it (written just before a crash?)`);
        }
        continue;
      }
      const buf = await readWholeFile(file);
      const why = verify(buf, n);
      if (why === null) {
        const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
        return { ...headerPosition(v), data: buf.subarray(HEAD, HEAD + v.getUint32(20, true)) };
      }
      await fs.rename(file, file + ".broken");
      this.log(`snap: ${file} is corrupt (${why}); renamed to ${n}.broken, trying an older snapshot`);
    }
    return null;
  }

  /**
   * Opens the snapshot file of `index` and `term` to read its data piece by piece (a leader sends it to a follower),
   * or null when there is none. Its size and header are checked at once, its crc as the last piece is read.
   */
  async open(index: number, term: number): Promise<SnapshotReader | null> {
    const file = path.join(this.dir, `${hex16(term)}-${hex16(index)}.snap`);
    let fh: Deno.FsFile;
    try {
      fh = await Deno.open(file, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
    try {
      const head = new Uint8Array(HEAD);
      await readFully(fh, head);
      const v = new DataView(head.buffer);
      const why = headerProblem(v, (await fh.stat()).size, index, term);
      if (why) throw new Error(`snap: ${file} is corrupt (${why})`);
      return new SnapshotReader(file, fh, v.getUint32(20, true), zlib.crc32(head));
    } catch (e) {
      fh.close();
      throw e;
    }
  }

  /** Snapshot file names sorted oldest first (by index, then term). */
  private async list(): Promise<string[]> {
    const names = (await fs.readdir(this.dir)).filter((n) => NAME_RE.test(n));
    const key = (n: string) => {
      const m = NAME_RE.exec(n)!;
      return m[2] + m[1];
    };
    return names.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  }

  private async syncDir(): Promise<void> {
    const d = await fs.open(this.dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}

/** The index and term a snapshot file's header records. */
function headerPosition(v: DataView): { index: number; term: number } {
  return {
    index: v.getUint32(4, true) * TWO32 + v.getUint32(8, true),
    term: v.getUint32(12, true) * TWO32 + v.getUint32(16, true),
  };
}

/** null if `v` (from a file's start) is the header of a file of `fileSize` bytes at `index` and `term`, else why not. */
function headerProblem(v: DataView, fileSize: number, index: number, term: number): string | null {
  if (v.getUint32(0, true) !== MAGIC) return "bad magic";
  const len = v.getUint32(20, true);
  if (HEAD + len + 4 !== fileSize) return `length ${len} does not match file size ${fileSize}`;
  const at = headerPosition(v);
  if (at.index !== index || at.term !== term) return "contents do not match file name";
  return null;
}

/** null if `buf` is a valid snapshot file named `name`, else the reason it is not. */
function verify(buf: Uint8Array, name: string): string | null {
  if (buf.length < HEAD + 4) return "file too short";
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const m = NAME_RE.exec(name)!;
  const why = headerProblem(v, buf.length, parseInt(m[2], 16), parseInt(m[1], 16));
  if (why) return why;
  const len = v.getUint32(20, true);
  return zlib.crc32(buf.subarray(0, HEAD + len)) === v.getUint32(HEAD + len, true) ? null : "crc mismatch";
}

/** How a snapshot file is written: bytes per write call, and bytes written between two fdatasyncs. */
export interface WritePace {
  piece: number;
  syncEvery: number;
}

/**
 * A leader's snapshot arriving at a follower (which is catching up, not serving writes): one write call (a hop to
 * Deno's I/O threads) per 16 MiB, since a writer gets a turn of the event loop per piece, and while a restore ran in
 * 20 ms slices beside it, 1 MiB pieces wrote a 300 MB snapshot at 50 MB/s. An fdatasync every 32 MiB: a snapshot
 * arrives over seconds, and without one the kernel held the whole file dirty until the last fdatasync, which then
 * wrote it all (300 MB: 1 s here).
 */
export const ARRIVING_PACE: WritePace = { piece: 16 << 20, syncEvery: 32 << 20 };

/**
 * A member's own snapshot, written while it serves: 1 MiB at a time, each followed by an fdatasync. An fdatasync
 * makes the disk flush everything written before it, so a put's WAL fdatasync waits behind whatever snapshot bytes
 * are in flight. 3 members sharing a disk, 2,000 puts/s with auto-compaction, snapshots of 4-24 MB (five alternating
 * pairs of 40 s runs): 41-99 puts per run took 25 ms or more during a snapshot's write with 16 MiB pieces and one
 * fdatasync per 32 MiB, and 0-12 with 1 MiB; put p99.9 35-48 ms against 31-48. A write takes about as long as before
 * (save 48-99 ms against 66-91); 256 KiB pieces took half as long again and did no better.
 */
export const SERVING_PACE: WritePace = { piece: 1 << 20, syncEvery: 1 << 20 };

/**
 * The tmp file of one snapshot, written as its data is handed over: the header at once, each piece as it comes (in
 * order, by one write loop; contiguous pieces of one buffer are written together), the crc computed along the way.
 */
export class SnapshotWriter {
  #size: number;
  #pace: WritePace;
  #head: Uint8Array;
  /** pieces handed over and not yet written */
  #pending: Uint8Array[] = [];
  #handed = 0;
  #crc = 0;
  /** bytes written since the last fdatasync */
  #unsynced = 0;
  #fh: Promise<Deno.FsFile>;
  #loop: Promise<void> | null = null;
  #failed: unknown = null;
  #finished = false;
  #aborted = false;

  /** @internal see `Snapshotter.begin` */
  /** the file written, renamed to `file` by `Snapshotter.commit` */
  readonly tmp: string;
  /** when the writer was begun (performance.now()) */
  readonly begun = performance.now();

  constructor(
    dir: string,
    readonly file: string,
    readonly index: number,
    readonly term: number,
    size: number,
    pace: WritePace,
  ) {
    this.tmp = `${file}.${++tmpSeq}.tmp`;
    this.#pace = pace;
    this.#size = size;
    this.#head = new Uint8Array(HEAD);
    const v = new DataView(this.#head.buffer);
    v.setUint32(0, MAGIC, true);
    v.setUint32(4, Math.floor(index / TWO32), true);
    v.setUint32(8, index >>> 0, true);
    v.setUint32(12, Math.floor(term / TWO32), true);
    v.setUint32(16, term >>> 0, true);
    v.setUint32(20, size, true);
    this.#fh = fs.mkdir(dir, { recursive: true }).then(() =>
      Deno.open(this.tmp, { write: true, create: true, truncate: true })
    );
    this.#fh.catch(() => {});
    this.#pending.push(this.#head);
    this.#kick();
  }

  /** Hands over the next bytes of the data; they must stay unchanged until `finish` (or `abort`) settled. */
  write(bytes: Uint8Array): void {
    if (this.#finished || this.#aborted) throw new Error("snapshot writer: write after finish or abort");
    if (this.#handed + bytes.length > this.#size) throw new Error("snapshot writer: more data than announced");
    this.#handed += bytes.length;
    const last = this.#pending[this.#pending.length - 1];
    if (
      last && last !== this.#head && last.buffer === bytes.buffer && last.byteOffset + last.length === bytes.byteOffset
    ) {
      this.#pending[this.#pending.length - 1] = new Uint8Array(
        last.buffer,
        last.byteOffset,
        last.length + bytes.length,
      );
    } else this.#pending.push(bytes);
    this.#kick();
  }

  #kick(): void {
    this.#loop ??= this.#drain().catch((e) => void (this.#failed ??= e)).finally(() => {
      this.#loop = null;
      // handed over after the loop's last look
      if (this.#pending.length > 0 && !this.#aborted && !this.#failed) this.#kick();
    });
  }

  async #drain(): Promise<void> {
    const fh = await this.#fh;
    while (this.#pending.length > 0 && !this.#aborted) {
      const piece = this.#pending.shift()!;
      for (let off = 0; off < piece.length; off += this.#pace.piece) {
        const part = piece.subarray(off, Math.min(off + this.#pace.piece, piece.length));
        this.#crc = zlib.crc32(part, this.#crc);
        await writeAll(fh, part);
        this.#unsynced += part.length;
        if (this.#unsynced >= this.#pace.syncEvery) {
          this.#unsynced = 0;
          await fh.syncData();
        }
      }
    }
  }

  /** Resolves once every piece handed over so far is written (rejects if a write failed). */
  async written(): Promise<void> {
    while (this.#loop) await this.#loop;
    if (this.#failed) throw this.#failed;
  }

  /** All data handed over: writes the crc and syncs the file (throws if a write failed or data is missing). */
  async finish(): Promise<void> {
    if (this.#aborted) throw new Error("snapshot writer: finish after abort");
    if (this.#handed !== this.#size) {
      throw new Error(`snapshot writer: ${this.#handed} of the ${this.#size} bytes announced`);
    }
    this.#finished = true;
    await this.written();
    const tail = new Uint8Array(4);
    new DataView(tail.buffer).setUint32(0, this.#crc, true);
    const fh = await this.#fh;
    try {
      await writeAll(fh, tail);
      await fh.syncData();
    } finally {
      fh.close();
    }
  }

  /** Gives the file up: stops writing, closes and deletes it. */
  async abort(): Promise<void> {
    if (this.#aborted || this.#finished) return;
    this.#aborted = true;
    while (this.#loop) await this.#loop;
    const fh = await this.#fh.catch(() => null);
    fh?.close();
    await fs.rm(this.tmp, { force: true });
  }
}

/** The data of one snapshot file, read in order piece by piece ({@link Snapshotter.open}). */
export class SnapshotReader {
  #fh: Deno.FsFile | null;
  #read = 0;
  #crc: number;

  /** @internal see `Snapshotter.open`; `crc`: the crc32 of the header */
  constructor(readonly file: string, fh: Deno.FsFile, readonly size: number, crc: number) {
    this.#fh = fh;
    this.#crc = crc;
  }

  /**
   * The next bytes of the data, at most `max`, or null once all were read. Rejects (and closes the file) when the file
   * ends early or its crc does not match: the last piece is handed out only after the whole data was checked.
   */
  async next(max: number): Promise<Uint8Array | null> {
    if (this.#read === this.size) return null;
    if (!this.#fh) throw new Error(`snapshot reader: ${this.file} is closed`);
    try {
      const piece = new Uint8Array(Math.min(max, this.size - this.#read));
      await readFully(this.#fh, piece);
      this.#read += piece.length;
      this.#crc = zlib.crc32(piece, this.#crc);
      if (this.#read === this.size) {
        const tail = new Uint8Array(4);
        await readFully(this.#fh, tail);
        if (new DataView(tail.buffer).getUint32(0, true) !== this.#crc) {
          throw new Error(`snap: ${this.file} is corrupt (crc mismatch)`);
        }
        this.close();
      }
      return piece;
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Closes the file (a reader that was not read to its end). */
  close(): void {
    this.#fh?.close();
    this.#fh = null;
  }
}

/** Fills `buf` from the file's position on; throws if the file ends first. */
async function readFully(fh: Deno.FsFile, buf: Uint8Array): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const n = await fh.read(buf.subarray(off));
    if (n === null) throw new Error("snapshot file ends early");
    off += n;
  }
}

async function writeAll(fh: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await fh.write(bytes.subarray(off));
}
