/**
 * Reading and damaging WAL segment files for recovery tests, from the documented framing of server/wal/wal.ts:
 * records [u32 len][u32 crc][payload][zero padding to 8], a payload's first byte its type; each batch begins with a
 * batch record.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { type Entry, PREALLOCATE_BYTES, Wal } from "../../server/wal/wal.ts";

/** A page of the page cache: what a crash may leave unwritten, one at a time, in any order. */
export const PAGE = 4096;
/** Record type of a batch's first record. */
export const REC_BATCH = 6;

/** Where a record lies in its segment, and its type. */
export interface Rec {
  off: number;
  end: number;
  type: number;
}

/** The records of a segment, up to the zeros after them. */
export function records(buf: Uint8Array): Rec[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: Rec[] = [];
  for (let off = 0; off + 8 <= buf.length;) {
    const len = v.getUint32(off, true);
    if (len === 0) break;
    const end = off + 8 + len + ((8 - (len % 8)) % 8);
    out.push({ off, end, type: buf[off + 8] });
    off = end;
  }
  return out;
}

/** The record that holds byte `at`. */
export const recordAt = (recs: Rec[], at: number): Rec => recs.find((r) => r.off <= at && at < r.end)!;

/** The start of the page after the one holding `off`. */
export const nextPage = (off: number): number => (Math.floor(off / PAGE) + 1) * PAGE;

/** The newest segment file of a WAL directory. */
export async function lastSegment(dir: string): Promise<string> {
  const names = (await fs.readdir(dir)).filter((n) => n.endsWith(".wal")).sort();
  return path.join(dir, names[names.length - 1]);
}

/** A crash leaves the current segment's preallocated zeros after its records (a clean close trims them). */
export async function crashLeftovers(dir: string): Promise<void> {
  const file = await lastSegment(dir);
  const size = (await fs.stat(file)).size;
  await fs.truncate(file, Math.ceil((size + 1) / PREALLOCATE_BYTES) * PREALLOCATE_BYTES);
}

/**
 * Appends one batch of 6 entries of 1.5 KB (about 2.3 pages) after the log's last entry, as a crash's last batch:
 * written, its fdatasync taken not to have returned, so none of it was acknowledged. Returns where it lies in the last
 * segment.
 */
export async function appendUnsyncedBatch(dir: string): Promise<{ start: number; end: number }> {
  const { wal, contents } = await Wal.open(dir, { log: () => {} });
  const n = contents.entries.length;
  const lastIndex = n > 0 ? contents.entries.slice(n - 1)[0].index : contents.snapshot?.index ?? 0;
  const hs = contents.hardState;
  const term = Math.max(1, hs.term);
  contents.entries.release();
  const batch: Entry[] = [];
  for (let i = 1; i <= 6; i++) {
    batch.push({ index: lastIndex + i, term, type: 0, data: new Uint8Array(1500).fill(i) });
  }
  wal.append(batch, { term, vote: hs.vote, commit: hs.commit });
  wal.sync();
  wal.close();
  await crashLeftovers(dir);
  const recs = records(await fs.readFile(await lastSegment(dir)));
  const start = recs.findLast((r) => r.type === REC_BATCH)!.off;
  return { start, end: recs[recs.length - 1].end };
}

/** Zeros bytes [from, to) of a file. */
export async function zero(file: string, from: number, to: number): Promise<void> {
  const buf = new Uint8Array(await fs.readFile(file));
  buf.fill(0, from, to);
  await fs.writeFile(file, buf);
}

/** Flips a bit of the byte at `at`. */
export async function flip(file: string, at: number): Promise<void> {
  const buf = new Uint8Array(await fs.readFile(file));
  buf[at] ^= 0x40;
  await fs.writeFile(file, buf);
}
