/** Specification tests for the write-ahead log (server/wal/wal.ts). */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type Entry, PREALLOCATE_BYTES, Wal, WalCorruptError } from "../server/wal/wal.ts";
import { dataFor, writeUntilKilled } from "./fixtures/wal_writer.ts";
import type { LogFields } from "../server/etcd/log.ts";

async function tempDir(): Promise<string> {
  return await fs.mkdtemp(path.join(os.tmpdir(), "wal-test-"));
}

function ent(index: number, term = 1, data: Uint8Array = dataFor(index), type = 0): Entry {
  return { index, term, type, data };
}

function range(from: number, to: number, term = 1): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(ent(i, term));
  return out;
}

async function segmentFiles(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => n.endsWith(".wal")).sort().map((n) => path.join(dir, n));
}

/** Offsets of records in a segment file, from the documented framing [u32 len][u32 crc][payload][pad to 8]. */
async function recordOffsets(file: string): Promise<number[]> {
  const buf = await fs.readFile(file);
  const out: number[] = [];
  for (let off = 0; off + 8 <= buf.length;) {
    const len = buf.readUInt32LE(off);
    if (len === 0) break;
    out.push(off);
    off += 8 + len + ((8 - (len % 8)) % 8);
  }
  return out;
}

/** A new log in a temp dir holding entries 1..n, each synced on its own, closed. */
async function logOfSyncedEntries(n: number, opts: Parameters<typeof Wal.open>[1] = {}): Promise<string> {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir, opts);
  for (let i = 1; i <= n; i++) {
    wal.append([ent(i)]);
    wal.sync();
  }
  wal.close();
  return dir;
}

/** Opens the log: `logs` holds its notable lines, `replayed` the fields of the replay's summary line. */
async function reopen(dir: string, opts: Parameters<typeof Wal.open>[1] = {}) {
  const logs: string[] = [];
  let replayed: LogFields | undefined;
  const r = await Wal.open(dir, {
    log: (m) => logs.push(m),
    progress: (m, fields) => {
      if (m === "replayed WAL") replayed = fields;
    },
    ...opts,
  });
  return { ...r, logs, replayed };
}

Deno.test("wal: append, sync and reopen round-trips entries, binary data, hard state and metadata", async () => {
  const dir = await tempDir();
  const metadata = new Uint8Array([0, 1, 2, 255, 0]);
  const binary = new Uint8Array(1000);
  for (let i = 0; i < binary.length; i++) binary[i] = (i * 131) & 0xff;
  const entries = [ent(1, 1, binary), ent(2, 1, new Uint8Array(0), 1), ent(3, 2, new Uint8Array([0, 0, 0]))];
  const hs = { term: 2, vote: "18446744073709551615", commit: 2 }; // max u64 member id survives
  const { wal, contents } = await Wal.open(dir, { metadata });
  assert.deepEqual(contents.entries.slice(), []);
  assert.deepEqual(contents.hardState, { term: 0, vote: "0", commit: 0 });
  wal.append(entries, hs);
  wal.sync();
  wal.close();

  const r = await reopen(dir);
  assert.deepEqual(r.contents.entries.slice(), entries);
  assert.deepEqual([...r.contents.entries], entries, "iterable");
  assert.deepEqual(r.contents.entries.slice(1, 2), [entries[1]], "a range");
  assert.deepEqual(r.contents.entries.slice(2, 99), [entries[2]], "a range past the end");
  assert.deepEqual(r.contents.hardState, hs);
  assert.deepEqual(r.contents.metadata, metadata);
  assert.equal(r.contents.snapshot, null);
  assert.deepEqual(r.logs, []);
  // the replay's summary line: what was read, and how long it took
  assert.equal(r.replayed?.segments, 1);
  assert.equal(r.replayed?.entries, 3);
  assert.ok(Number(r.replayed?.bytes) > 1000, JSON.stringify(r.replayed));
  assert.match(String(r.replayed?.took), /^[\d.]+(ns|µs|ms|s)$/);
  // appending after reopen continues the log and its crc chain
  r.wal.append([ent(4, 2)]);
  r.wal.close();
  const r2 = await reopen(dir);
  assert.deepEqual(r2.contents.entries.slice().map((e) => e.index), [1, 2, 3, 4]);
  r2.wal.close();
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: everything appended between two syncs shares one fdatasync", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir);
  const callers = 500;
  for (let i = 0; i < callers; i++) wal.append([ent(i + 1)], { term: 1, vote: "1", commit: i });
  wal.sync();
  assert.equal(wal.syncCount, 1);
  // a sync with nothing new to write does not touch the disk
  wal.sync();
  assert.equal(wal.syncCount, 1);
  wal.close();
  const r = await reopen(dir);
  assert.equal(r.contents.entries.length, callers);
  r.wal.close();
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: segments roll over; releaseBefore deletes only segments wholly below the index", async () => {
  const dir = await tempDir();
  const metadata = new TextEncoder().encode("cluster=7,member=9");
  const { wal } = await Wal.open(dir, { segmentBytes: 4096, metadata });
  for (let i = 1; i <= 500; i += 10) {
    wal.append(range(i, i + 9), { term: 1, vote: "9", commit: i + 9 });
    wal.sync();
  }
  const files = await segmentFiles(dir);
  assert.ok(files.length >= 10, `expected many segments, got ${files.length}`);
  assert.match(path.basename(files[0]), /^0000000000000001-0000000000000001\.wal$/);

  wal.markSnapshot({ index: 300, term: 1 });
  wal.sync();
  await wal.releaseBefore(300);
  const left = await segmentFiles(dir);
  assert.ok(left.length < files.length / 2, `release kept ${left.length} of ${files.length}`);
  const firstIndexLeft = parseInt(path.basename(left[0]).slice(17, 33), 16);
  assert.ok(firstIndexLeft <= 301, `first kept segment starts at ${firstIndexLeft}`);
  wal.close();

  const r = await reopen(dir, { snapshotIndex: 300 });
  assert.deepEqual(r.contents.entries.slice(), range(301, 500));
  assert.deepEqual(r.contents.snapshot, { index: 300, term: 1 });
  assert.deepEqual(r.contents.metadata, metadata); // every segment carries the metadata
  assert.deepEqual(r.contents.hardState, { term: 1, vote: "9", commit: 500 });
  r.wal.close();
  // without the released prefix, replaying from index 0 would leave a gap: refuse
  await assert.rejects(Wal.open(dir, { snapshotIndex: 0, log: () => {} }), WalCorruptError);
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: an entry with an index <= an earlier one replaces the tail (Raft truncation)", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir, { segmentBytes: 2048 });
  wal.append(range(1, 40, 1));
  wal.sync();
  wal.append(range(10, 12, 2)); // leader change: 10.. replaced, 13..40 dropped
  wal.sync();
  wal.append(range(13, 14, 2));
  wal.append(range(5, 6, 3)); // truncation across a segment boundary
  wal.close();
  const r = await reopen(dir);
  assert.deepEqual(r.contents.entries.slice(), [...range(1, 4, 1), ...range(5, 6, 3)]);
  r.wal.append(range(7, 8, 3));
  r.wal.close();
  const r2 = await reopen(dir);
  assert.deepEqual(r2.contents.entries.slice().map((e) => `${e.index}/${e.term}`), [
    ..."1234".split("").map((i) => `${i}/1`),
    "5/3",
    "6/3",
    "7/3",
    "8/3",
  ]);
  r2.wal.close();
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: a torn last record is truncated at every cut point and all earlier records recover", async () => {
  const dir = await logOfSyncedEntries(5);
  const [file] = await segmentFiles(dir);
  const full = await fs.readFile(file);
  const offsets = await recordOffsets(file);
  const lastOff = offsets[offsets.length - 1];
  assert.ok(full.length - lastOff > 16);

  for (let cut = lastOff; cut < full.length; cut++) {
    await fs.writeFile(file, full.subarray(0, cut));
    const r = await reopen(dir);
    assert.deepEqual(r.contents.entries.slice(), range(1, 4), `cut at ${cut}`);
    if (cut === lastOff) assert.deepEqual(r.logs, []);
    else assert.ok(r.logs.some((l) => l.includes(`wal: repaired a torn write at ${file}:${lastOff}`)), `cut ${cut}`);
    assert.equal((await fs.stat(file)).size, lastOff);
    // the log is usable afterwards: append index 5 again and find it on the next open
    r.wal.append([ent(5)]);
    r.wal.close();
    const r2 = await reopen(dir);
    assert.deepEqual(r2.contents.entries.slice(), range(1, 5));
    assert.deepEqual(r2.logs, []);
    r2.wal.close();
  }
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: release() hands the replayed segments' bytes back at once; the log stays usable", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir);
  wal.append(range(1, 50));
  wal.close();
  const r = await reopen(dir);
  const copies = r.contents.entries.slice().map((e) => ({ ...e, data: e.data.slice() }));
  const views = r.contents.entries.slice(0, 1);
  r.contents.entries.release();
  assert.equal(views[0].data.byteLength, 0, "the segment's buffer is detached, not left to the garbage collector");
  assert.deepEqual(copies, range(1, 50));
  r.wal.append([ent(51)]);
  r.wal.close();
  const r2 = await reopen(dir);
  assert.deepEqual(r2.contents.entries.slice(), range(1, 51));
  r2.wal.close();
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: the current segment grows in preallocated steps, so most syncs do not change its size", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir);
  const [file] = await segmentFiles(dir);
  const sizes = new Set<number>();
  for (let i = 1; i <= 200; i++) {
    wal.append([ent(i)]);
    wal.sync();
    sizes.add((await fs.stat(file)).size);
  }
  assert.deepEqual([...sizes], [PREALLOCATE_BYTES]);
  wal.close(); // a clean close drops the zeros
  const offsets = await recordOffsets(file);
  const buf = await fs.readFile(file);
  const lastLen = buf.readUInt32LE(offsets[offsets.length - 1]);
  assert.equal((await fs.stat(file)).size, offsets[offsets.length - 1] + 8 + lastLen + ((8 - (lastLen % 8)) % 8));
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: zeros after the last record are the preallocated end, in any segment; writing resumes there", async () => {
  const dir = await logOfSyncedEntries(12, { segmentBytes: 1024 });
  const files = await segmentFiles(dir);
  assert.ok(files.length >= 2);
  // as a crash leaves them: zeros after every segment's records (the older ones' were not trimmed yet)
  for (const f of files) await fs.appendFile(f, new Uint8Array(PREALLOCATE_BYTES - 40));
  const r = await reopen(dir);
  assert.deepEqual(r.contents.entries.slice(), range(1, 12));
  assert.deepEqual(r.logs, []);
  r.wal.append([ent(13)]);
  r.wal.sync();
  const r2 = await reopen(dir); // the zeros still follow the new record: the writer has not closed
  assert.deepEqual(r2.contents.entries.slice(), range(1, 13));
  assert.deepEqual(r2.logs, []);
  r2.wal.close();
  r.wal.close();
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: garbage after the last good record is not a torn write (a crash leaves zeros, not garbage)", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir);
  wal.append(range(1, 3));
  wal.close();
  const [file] = await segmentFiles(dir);
  const good = await fs.readFile(file);
  const garbage = new Uint8Array(333);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 97 + 13) & 0xff;
  const zeros = new Uint8Array(4096);
  for (const tail of [garbage, new Uint8Array([...garbage, ...zeros])]) {
    await fs.writeFile(file, new Uint8Array([...good, ...tail]));
    const err = await Wal.open(dir, { log: () => {} }).then(() => null, (e) => e);
    assert.ok(err instanceof WalCorruptError, `expected WalCorruptError, got ${err}`);
    assert.equal(err.file, file);
    assert.equal(err.offset, good.length);
    assert.match(err.message, /not a torn write/);
  }
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: corruption followed by valid records stops the open with file and offset", async () => {
  const dir = await logOfSyncedEntries(10);
  const [file] = await segmentFiles(dir);
  const good = await fs.readFile(file);
  const offsets = await recordOffsets(file);
  const mid = offsets[offsets.length - 5];
  // flip a payload byte, a crc byte, a length byte, and the second-to-last record's payload
  const cases: [string, number, number][] = [
    ["payload", mid, mid + 20],
    ["crc", mid, mid + 5],
    ["length", mid, mid + 1],
    ["second-to-last", offsets[offsets.length - 2], offsets[offsets.length - 2] + 12],
  ];
  for (const [what, recordOff, byte] of cases) {
    const bad = new Uint8Array(good);
    bad[byte] ^= 0x40;
    await fs.writeFile(file, bad);
    const err = await Wal.open(dir, { log: () => {} }).then(() => null, (e) => e);
    assert.ok(err instanceof WalCorruptError, `${what}: expected WalCorruptError, got ${err}`);
    assert.equal(err.file, file, what);
    assert.equal(err.offset, recordOff, what);
    assert.ok(err.message.includes(`${file} at offset ${recordOff}`), err.message);
  }
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: any bad record in a non-last segment is corruption, even at its end", async () => {
  const dir = await logOfSyncedEntries(40, { segmentBytes: 1024 });
  const files = await segmentFiles(dir);
  assert.ok(files.length >= 3);
  const offsets = await recordOffsets(files[0]);
  const last = offsets[offsets.length - 1];
  const buf = new Uint8Array(await fs.readFile(files[0]));
  await fs.writeFile(files[0], buf.subarray(0, buf.length - 3)); // cut the first segment's last record short
  await assert.rejects(Wal.open(dir, { log: () => {} }), (e: unknown) => {
    assert.ok(e instanceof WalCorruptError);
    assert.equal(e.file, files[0]);
    assert.equal(e.offset, last);
    return true;
  });
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: the latest hard state wins, across segments and releases", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir, { segmentBytes: 512 });
  for (let t = 1; t <= 30; t++) {
    wal.append([ent(t, t)], { term: t, vote: String(t % 3), commit: t - 1 });
    wal.sync();
  }
  wal.append([], { term: 31, vote: "0", commit: 30 }); // hard state alone
  wal.markSnapshot({ index: 30, term: 30 });
  wal.sync();
  await wal.releaseBefore(30);
  wal.close();
  const r = await reopen(dir);
  assert.deepEqual(r.contents.hardState, { term: 31, vote: "0", commit: 30 });
  assert.deepEqual(r.contents.snapshot, { index: 30, term: 30 });
  assert.deepEqual(r.contents.entries.slice(), []);
  r.wal.close();
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: replay starts after the snapshot index the caller restored", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir);
  wal.append(range(1, 20));
  wal.markSnapshot({ index: 10, term: 1 });
  wal.append(range(21, 30));
  wal.markSnapshot({ index: 25, term: 1 });
  wal.close();

  const newest = await reopen(dir); // default: newest mark
  assert.deepEqual(newest.contents.snapshot, { index: 25, term: 1 });
  assert.deepEqual(newest.contents.entries.slice(), range(26, 30));
  newest.wal.close();

  const older = await reopen(dir, { snapshotIndex: 10 }); // e.g. snapshot 25's file was corrupt
  assert.deepEqual(older.contents.snapshot, { index: 10, term: 1 });
  assert.deepEqual(older.contents.entries.slice(), range(11, 30));
  older.wal.close();

  const none = await reopen(dir, { snapshotIndex: 0 });
  assert.deepEqual(none.contents.entries.slice(), range(1, 30));
  none.wal.close();

  // a follower that installed a snapshot ahead of its log continues after the snapshot
  const f = await reopen(dir);
  f.wal.markSnapshot({ index: 100, term: 4 });
  f.wal.append([ent(101, 4), ent(102, 4)]);
  f.wal.close();
  const f2 = await reopen(dir);
  assert.deepEqual(f2.contents.entries.slice(), [ent(101, 4), ent(102, 4)]);
  f2.wal.close();
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: acknowledged appends survive SIGKILL of the writer process", async () => {
  const dir = await tempDir();
  const acked = new Set<number>();
  const rounds = 6;
  for (let round = 0; round < rounds; round++) {
    const roundAcks = await writeUntilKilled(dir, 16, 20 + Math.random() * 300);
    assert.ok(roundAcks.size > 0, `round ${round} acknowledged nothing`);
    for (const i of roundAcks) acked.add(i);

    const r = await reopen(dir);
    const byIndex = new Map(r.contents.entries.slice().map((e) => [e.index, e]));
    for (const i of acked) {
      const e = byIndex.get(i);
      assert.ok(e, `acknowledged index ${i} lost after SIGKILL in round ${round}`);
      assert.deepEqual(e.data, dataFor(i));
    }
    r.contents.entries.slice().forEach((e, k) => assert.equal(e.index, k + 1));
    r.wal.close();
  }
  assert.ok(acked.size > rounds * 10, `only ${acked.size} acknowledged`);
  console.log(`crash test: ${rounds} SIGKILLs, ${acked.size} acknowledged entries all recovered`);
  await fs.rm(dir, { recursive: true });
});

Deno.test("wal: syncAsync fdatasyncs off the event loop; records appended meanwhile go to the next batch, none is lost", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir, { segmentBytes: 64 * 1024 }); // several segments
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  let next = 1;
  for (let round = 0; round < 40; round++) {
    wal.append(range(next, next + 9));
    next += 10;
    const first = wal.syncAsync();
    // while that batch is written: more records, a snapshot mark, a second caller, and a blocking sync refused
    wal.append(range(next, next + 4));
    next += 5;
    wal.markSnapshot({ index: next - 1, term: 1 });
    assert.throws(() => wal.sync(), /still writing/);
    const second = wal.syncAsync();
    await Promise.all([first, second]);
  }
  clearInterval(timer);
  assert.ok(ticks > 0, "timers ran while the batches were written");
  assert.equal(wal.syncCount, 80);
  wal.close();
  let marks: number[] = [];
  const r = await reopen(dir, {
    chooseSnapshot: (m) => {
      marks = m.map((x) => x.index);
      return Promise.resolve(0); // replay everything
    },
  });
  assert.deepEqual(r.contents.entries.slice(), range(1, next - 1));
  // (a new segment's head repeats the newest mark)
  assert.deepEqual([...new Set(marks)], Array.from({ length: 40 }, (_, i) => 15 * (i + 1)), "every mark is durable");
  assert.ok((await segmentFiles(dir)).length > 1, "rolled over to new segments while writing asynchronously");
  r.wal.close();
});

Deno.test("wal: syncAsync writes a small batch before it returns (one hand-off to the I/O threads), a large one on those threads", async () => {
  // Which write the batch took is seen by spying on Deno.FsFile's two writes, not by reading the file between the
  // call and its await: the I/O threads run beside the event loop, so the large write may already be in the file.
  const proto = Deno.FsFile.prototype;
  const { write, writeSync } = proto;
  const calls: string[] = [];
  proto.write = function (this: Deno.FsFile, p: Uint8Array) {
    calls.push(`write ${p.length}`);
    return write.call(this, p);
  };
  proto.writeSync = function (this: Deno.FsFile, p: Uint8Array) {
    calls.push(`writeSync ${p.length}`);
    return writeSync.call(this, p);
  };
  const dir = await tempDir();
  try {
    const { wal } = await Wal.open(dir);
    wal.append(range(1, 50));
    await wal.syncAsync();
    const [file] = await segmentFiles(dir);
    const before = Deno.readFileSync(file);
    wal.append(range(51, 55));
    calls.length = 0;
    const small = wal.syncAsync(); // not awaited: the write already happened, only the fdatasync is pending
    assert.deepEqual(calls.map((c) => c.split(" ")[0]), ["writeSync"], "the small batch is one synchronous write");
    assert.ok(!sameBytes(Deno.readFileSync(file), before), "the small batch is in the file before any await");
    await small;
    const big = Array.from({ length: 100 }, (_, i) => ent(56 + i, 1, new Uint8Array(1024).fill(i + 1)));
    wal.append(big); // 100 KiB: written on the I/O threads
    calls.length = 0;
    const large = wal.syncAsync();
    assert.ok(
      calls.length > 0 && calls.every((c) => c.startsWith("write ")),
      `the large batch goes to fh.write: ${calls}`,
    );
    await large;
    wal.close();
    const r = await reopen(dir);
    assert.deepEqual(r.contents.entries.slice(0, 55), range(1, 55));
    assert.deepEqual(r.contents.entries.slice(55), big);
    r.wal.close();
  } finally {
    proto.write = write;
    proto.writeSync = writeSync;
    await fs.rm(dir, { recursive: true });
  }
});

/** Byte equality without node:assert's diff, which on a preallocated segment's megabytes runs out of memory. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test("wal: close while a syncAsync is writing leaves a log that opens (the batch written or torn, never acked)", async () => {
  const dir = await tempDir();
  const { wal } = await Wal.open(dir);
  wal.append(range(1, 50));
  await wal.syncAsync();
  wal.append(range(51, 60));
  const writing = wal.syncAsync();
  wal.close();
  await writing.catch(() => {});
  const r = await reopen(dir);
  const n = r.contents.entries.length;
  assert.ok(n === 50 || n === 60, `entries 1..50 (the acked ones) and maybe the batch in flight: got ${n}`);
  assert.deepEqual(r.contents.entries.slice(0, 50), range(1, 50));
  r.wal.close();
});
