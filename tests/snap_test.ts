/** Specification tests for snapshot files (server/snap/snapshotter.ts). */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ARRIVING_PACE, SERVING_PACE, type Snapshot, Snapshotter } from "../server/snap/snapshotter.ts";

async function tempDir(): Promise<string> {
  return await fs.mkdtemp(path.join(os.tmpdir(), "snap-test-"));
}

function snap(index: number, term: number, size = 1000): Snapshot {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (index + i * 13) & 0xff;
  return { index, term, data };
}

Deno.test("snap: an empty or missing directory has no snapshot", async () => {
  const dir = await tempDir();
  assert.equal(await new Snapshotter(dir).loadNewest([{ index: 1, term: 1 }]), null);
  assert.equal(await new Snapshotter(path.join(dir, "missing")).loadNewest([{ index: 1, term: 1 }]), null);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: save then loadNewest returns the newest snapshot with exact binary data", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(path.join(dir, "snap")); // created on first save
  await s.save(snap(10, 1));
  await s.save(snap(2 ** 40 + 5, 3, 0)); // large index, empty data
  await s.save(snap(20, 2, 100_000));
  const all = [{ index: 10, term: 1 }, { index: 2 ** 40 + 5, term: 3 }, { index: 20, term: 2 }];
  const got = await new Snapshotter(path.join(dir, "snap")).loadNewest(all);
  assert.deepEqual(got, snap(2 ** 40 + 5, 3, 0));
  const names = await fs.readdir(path.join(dir, "snap"));
  assert.ok(!names.some((n) => n.endsWith(".tmp")), `leftover tmp file in ${names}`);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: only the newest `keep` snapshots are kept", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir, { keep: 3 });
  for (let i = 1; i <= 7; i++) await s.save(snap(i * 100, 1, 10));
  const names = (await fs.readdir(dir)).sort();
  assert.deepEqual(names.map((n) => parseInt(n.slice(17, 33), 16)), [500, 600, 700]);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: a corrupt newest snapshot is renamed *.broken and the next older one is loaded", async () => {
  const dir = await tempDir();
  const logs: string[] = [];
  const s = new Snapshotter(dir, { log: (m) => logs.push(m) });
  await s.save(snap(100, 1));
  await s.save(snap(200, 2));
  await s.save(snap(300, 2));
  const names = (await fs.readdir(dir)).sort();
  const newest = path.join(dir, names[2]);
  const middle = path.join(dir, names[1]);
  const buf = await fs.readFile(newest);
  buf[500] ^= 1; // bit flip in the data
  await fs.writeFile(newest, buf);
  await fs.truncate(middle, 30); // torn/short file

  const all = [{ index: 100, term: 1 }, { index: 200, term: 2 }, { index: 300, term: 2 }];
  assert.deepEqual(await s.loadNewest(all), snap(100, 1));
  assert.equal(logs.length, 2);
  assert.ok(logs[0].includes(newest) && logs[0].includes("crc mismatch"), logs[0]);
  assert.ok(logs[1].includes(middle), logs[1]);
  const after = (await fs.readdir(dir)).sort();
  assert.deepEqual(after, [names[0], `${names[1]}.broken`, `${names[2]}.broken`]);
  // broken files are no longer considered
  logs.length = 0;
  assert.deepEqual(await s.loadNewest(all), snap(100, 1));
  assert.deepEqual(logs, []);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: a file whose contents do not match its name is rejected; stale tmp files are removed", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir, { log: () => {} });
  await s.save(snap(5, 1));
  const [name] = await fs.readdir(dir);
  await fs.copyFile(path.join(dir, name), path.join(dir, "0000000000000009-0000000000000009.snap"));
  await fs.writeFile(path.join(dir, "0000000000000009-0000000000000010.snap.tmp"), "partial");
  await fs.writeFile(path.join(dir, "0000000000000009-0000000000000011.snap.3.tmp"), "partial");
  assert.deepEqual(await s.loadNewest([{ index: 5, term: 1 }, { index: 9, term: 9 }]), snap(5, 1));
  assert.deepEqual((await fs.readdir(dir)).sort(), [name, "0000000000000009-0000000000000009.snap.broken"]);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: only a snapshot the WAL records is loaded; a newer unrecorded one is ignored with a log line", async () => {
  const dir = await tempDir();
  const logs: string[] = [];
  const s = new Snapshotter(dir, { log: (m) => logs.push(m) });
  await s.save(snap(100, 1));
  await s.save(snap(200, 2)); // written, then the member crashed before the WAL's mark for it was synced
  assert.deepEqual(await s.loadNewest([{ index: 100, term: 1 }]), snap(100, 1));
  assert.equal(logs.length, 1);
  assert.match(logs[0], /ignoring .*0000000000000002-00000000000000c8\.snap: the WAL does not record it/);
  // the mark must match the term too; no recorded file at all: no snapshot
  assert.equal(await s.loadNewest([{ index: 100, term: 2 }]), null);
  assert.equal(await s.loadNewest([]), null);
  // the file is left in place: once a mark records it, it loads
  assert.deepEqual(await s.loadNewest([{ index: 100, term: 1 }, { index: 200, term: 2 }]), snap(200, 2));
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: a snapshot written as its data arrives, in pieces of one buffer and of others, is the file save writes", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir);
  const ref = snap(30, 4, 5 << 20);
  await s.save(ref);
  const saved = await fs.readFile(path.join(dir, "0000000000000004-000000000000001e.snap"));
  await fs.rm(path.join(dir, "0000000000000004-000000000000001e.snap"));
  // pieces as a transfer hands them over: views of one receive buffer (contiguous), with turns between, and a copy
  const w = s.begin(30, 4, ref.data.length);
  let off = 0;
  for (const n of [1, 65536, 3000, 1 << 20, 7]) {
    w.write(ref.data.subarray(off, off + n));
    off += n;
    await new Promise((r) => setTimeout(r, 0));
  }
  w.write(ref.data.slice(off, off + 100_000));
  off += 100_000;
  while (off < ref.data.length) {
    const n = Math.min(65536, ref.data.length - off);
    w.write(ref.data.subarray(off, off + n));
    off += n;
  }
  assert.throws(() => w.write(new Uint8Array(1)), /more data than announced/);
  await s.commit(w);
  const streamed = await fs.readFile(path.join(dir, "0000000000000004-000000000000001e.snap"));
  assert.ok(streamed.equals(saved), "the same bytes as save's file");
  assert.deepEqual(await new Snapshotter(dir).loadNewest([{ index: 30, term: 4 }]), ref);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: a member's own snapshot is fdatasync'ed every MiB; one arriving from a leader every 32 MiB", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir);
  const syncData = Deno.FsFile.prototype.syncData;
  const writes: number[] = [];
  const write = Deno.FsFile.prototype.write;
  let syncs = 0;
  Deno.FsFile.prototype.syncData = function (this: Deno.FsFile) {
    syncs++;
    return syncData.call(this);
  };
  Deno.FsFile.prototype.write = function (this: Deno.FsFile, p: Uint8Array) {
    writes.push(p.length);
    return write.call(this, p);
  };
  try {
    const own = snap(40, 5, 5 << 20);
    await s.save(own); // SERVING_PACE
    // a sync after each of the 5 MiB, then the crc's own (the header goes out before the data)
    assert.equal(syncs, 6, "fdatasyncs of the own snapshot");
    assert.ok(Math.max(...writes) <= SERVING_PACE.piece, `own snapshot writes of ${Math.max(...writes)} bytes`);
    syncs = 0;
    writes.length = 0;
    const w = s.begin(41, 5, own.data.length); // ARRIVING_PACE
    w.write(own.data);
    await s.commit(w);
    assert.equal(syncs, 1, "fdatasyncs of an arriving snapshot: the crc's only");
    assert.equal(Math.max(...writes), own.data.length, "an arriving snapshot's data in one write");
    assert.deepEqual(ARRIVING_PACE, { piece: 16 << 20, syncEvery: 32 << 20 });
  } finally {
    Deno.FsFile.prototype.syncData = syncData;
    Deno.FsFile.prototype.write = write;
  }
  const quiet = new Snapshotter(dir, { log: () => {} }); // the newer file (41) is not recorded: ignored
  assert.deepEqual(await quiet.loadNewest([{ index: 40, term: 5 }]), snap(40, 5, 5 << 20));
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: two writers of the same snapshot at once (a transfer sent again) write files of their own", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir);
  const ref = snap(40, 5, 3 << 20);
  const first = s.begin(40, 5, ref.data.length), second = s.begin(40, 5, ref.data.length);
  assert.notEqual(first.tmp, second.tmp);
  first.write(ref.data.subarray(0, 1 << 20));
  second.write(ref.data);
  await first.abort(); // the first transfer broke off: its file goes, the second's stays
  await s.commit(second);
  assert.deepEqual(await fs.readdir(dir), ["0000000000000005-0000000000000028.snap"]);
  assert.deepEqual(await new Snapshotter(dir).loadNewest([{ index: 40, term: 5 }]), ref);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: an aborted or short snapshot writer leaves no file behind, and a finish short of its data throws", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir);
  const ref = snap(30, 4, 1 << 20);
  const aborted = s.begin(30, 4, ref.data.length);
  aborted.write(ref.data.subarray(0, 1000));
  await aborted.abort();
  assert.throws(() => aborted.write(ref.data.subarray(1000, 2000)), /after finish or abort/);
  const short = s.begin(31, 4, ref.data.length);
  short.write(ref.data.subarray(0, 1000));
  await assert.rejects(s.commit(short), /1000 of the 1048576 bytes announced/);
  await short.abort();
  assert.deepEqual(await fs.readdir(dir), []);
  assert.equal(await s.loadNewest([{ index: 30, term: 4 }, { index: 31, term: 4 }]), null);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: open reads a snapshot's data back piece by piece, and null for a snapshot with no file", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir);
  await s.save(snap(100, 2, 250_000));
  await s.save(snap(7, 1, 0));
  assert.equal(await s.open(100, 3), null, "same index, other term");
  assert.equal(await s.open(101, 2), null);
  for (const max of [1, 4096, 100_000, 1 << 20]) {
    const r = (await s.open(100, 2))!;
    assert.equal(r.size, 250_000);
    const pieces: Uint8Array[] = [];
    for (let p; (p = await r.next(max));) {
      assert.ok(p.length > 0 && p.length <= max);
      pieces.push(p);
      if (max === 1 && pieces.length === 10) break; // byte by byte: enough
    }
    if (max === 1) {
      assert.deepEqual(Buffer.concat(pieces), Buffer.from(snap(100, 2, 250_000).data.subarray(0, 10)));
      r.close();
      await assert.rejects(() => r.next(1), /closed/);
    } else assert.deepEqual(Buffer.concat(pieces), Buffer.from(snap(100, 2, 250_000).data));
  }
  const empty = (await s.open(7, 1))!;
  assert.equal(empty.size, 0);
  assert.equal(await empty.next(10), null);
  await fs.rm(dir, { recursive: true });
});

Deno.test("snap: open refuses a damaged file: a bit flip fails the last piece (crc), a short or renamed file at once", async () => {
  const dir = await tempDir();
  const s = new Snapshotter(dir);
  await s.save(snap(100, 2, 300_000));
  const file = path.join(dir, (await fs.readdir(dir))[0]);
  const good = await fs.readFile(file);
  const flipped = Buffer.from(good);
  flipped[24 + 123_456] ^= 0x10;
  await fs.writeFile(file, flipped);
  const r = (await s.open(100, 2))!;
  let read = 0;
  const drain = async () => {
    for (let p; (p = await r.next(65536));) read += p.length;
  };
  await assert.rejects(drain, /crc mismatch/);
  assert.ok(read < 300_000, "the last piece was not handed out");
  await fs.writeFile(file, good.subarray(0, good.length - 10));
  await assert.rejects(() => s.open(100, 2), /does not match file size/);
  await fs.writeFile(file, good);
  await fs.rename(file, path.join(dir, "0000000000000002-0000000000000065.snap")); // index 101
  await assert.rejects(() => s.open(101, 2), /contents do not match file name/);
  await fs.rm(dir, { recursive: true });
});
