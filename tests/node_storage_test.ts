/**
 * server/node/storage.ts and server/node/waiters.ts on their own. DiskStorage writes real files in a temporary
 * directory and is opened again to read them back (the start-up path); no Raft core, no network.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { DiskStorage } from "../server/node/storage.ts";
import { newWaiter, Proposals } from "../server/node/waiters.ts";
import { type Entry, EntryType } from "../server/raft/types.ts";

const entry = (index: number, term = 1): Entry => ({
  index,
  term,
  type: EntryType.Normal,
  data: new TextEncoder().encode(`e${index}`),
});
const confState = { voters: ["1"], learners: [] };

/** Opens DiskStorage on `dir`; `observed` counts the histogram observations by name. */
function open(dir: string, observed: Record<string, number> = {}, log: string[] = []) {
  const histogram = (name: string) => ({ observe: () => void (observed[name] = (observed[name] ?? 0) + 1) });
  return DiskStorage.open({
    snapDir: path.join(dir, "snap"),
    walDir: path.join(dir, "wal"),
    metadata: new TextEncoder().encode("identity"),
    stats: { walFsync: histogram("walFsync"), snapshotSave: histogram("snapshotSave") },
    log: (m) => log.push(m),
  });
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "node-storage-"));
  try {
    await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

Deno.test("storage: a new data dir starts empty, with the given metadata", () =>
  withDir(async (dir) => {
    const { disk, snapshot, contents } = await open(dir);
    disk.close();
    assert.equal(snapshot, null);
    assert.equal(contents.entries.length, 0);
    assert.deepEqual(contents.hardState, { term: 0, vote: "0", commit: 0 });
    assert.equal(new TextDecoder().decode(contents.metadata!), "identity");
  }));

Deno.test("storage: synced entries and hard state are read back; each sync is one fsync observation", () =>
  withDir(async (dir) => {
    const observed: Record<string, number> = {};
    const first = await open(dir, observed);
    first.disk.append([entry(1), entry(2)], { term: 1, vote: "1", commit: 1 });
    first.disk.sync();
    first.disk.append([entry(3)]);
    first.disk.sync();
    first.disk.close();
    assert.deepEqual(observed, { walFsync: 2 });

    const again = await open(dir);
    again.disk.close();
    assert.deepEqual(again.contents.entries.slice().map((e) => e.index), [1, 2, 3]);
    assert.deepEqual(again.contents.hardState, { term: 1, vote: "1", commit: 1 });
  }));

Deno.test("storage: this member's snapshot is chosen at start-up, with the entries after it", () =>
  withDir(async (dir) => {
    const observed: Record<string, number> = {};
    const first = await open(dir, observed);
    first.disk.append([entry(1), entry(2), entry(3)], { term: 1, vote: "1", commit: 3 });
    first.disk.sync();
    await first.disk.saveSnapshot(2, 1, new TextEncoder().encode("state at 2"));
    assert.deepEqual(observed, { walFsync: 1, snapshotSave: 1 });
    await first.disk.releaseBefore(2);
    first.disk.close();

    const again = await open(dir);
    again.disk.close();
    assert.equal(again.snapshot?.index, 2);
    assert.equal(again.snapshot?.term, 1);
    assert.equal(new TextDecoder().decode(again.snapshot!.data), "state at 2");
    assert.deepEqual(again.contents.entries.slice().map((e) => e.index), [3]);
  }));

Deno.test("storage: a snapshot beyond the commit index the WAL holds is not chosen", () =>
  withDir(async (dir) => {
    const first = await open(dir);
    first.disk.append([entry(1), entry(2)], { term: 1, vote: "1", commit: 1 });
    first.disk.sync();
    await first.disk.saveSnapshot(2, 1, new Uint8Array([2]));
    first.disk.close();

    const again = await open(dir);
    again.disk.close();
    assert.equal(again.snapshot, null);
    assert.deepEqual(again.contents.entries.slice().map((e) => e.index), [1, 2]);
  }));

Deno.test("storage: a leader's snapshot is chosen once the Ready's sync made its mark and commit durable", () =>
  withDir(async (dir) => {
    const first = await open(dir);
    first.disk.append([entry(1)], { term: 1, vote: "1", commit: 1 });
    first.disk.sync();
    const data = new TextEncoder().encode("the leader's state at 10");
    await first.disk.saveLeaderSnapshot({ metadata: { index: 10, term: 3, confState }, data });
    first.disk.append([], { term: 3, vote: "0", commit: 10 });
    first.disk.sync();
    first.disk.close();

    const again = await open(dir);
    again.disk.close();
    assert.equal(again.snapshot?.index, 10);
    assert.equal(again.snapshot?.term, 3);
    assert.equal(again.contents.entries.length, 0);
  }));

Deno.test("waiters: request IDs carry the member and never repeat", () => {
  const a = new Proposals("1", 1000), b = new Proposals("2", 1000);
  const ids = [a.nextId(), a.nextId(), b.nextId()];
  assert.equal(new Set(ids).size, 3);
  assert.equal(BigInt(ids[1]) - BigInt(ids[0]), 1n);
  assert.equal(BigInt(ids[0]) >> 48n, 1n);
  assert.equal(BigInt(ids[2]) >> 48n, 2n);
});

Deno.test("waiters: a taken proposal is settled by its taker; expiry fails the oldest until one has time left", () => {
  const p = new Proposals("1", 0);
  const failed: string[] = [];
  const waiter = (name: string, deadline: number) =>
    newWaiter(() => failed.push(`${name} answered`), (e) => failed.push(`${name}: ${e}`), deadline);
  p.add("1", waiter("one", 10));
  p.add("2", waiter("two", 20));
  p.add("3", waiter("three", 30));
  const two = p.take("2");
  assert.equal(two?.settled, true, "taken: the taker answers it");
  assert.equal(p.take("2"), undefined);
  assert.equal(p.expire(25, () => "timeout"), 1);
  assert.deepEqual(failed, ["one: timeout"]);
  p.drop("3");
  assert.equal(p.size, 0);
  p.add("4", waiter("four", 40));
  p.rejectAll("stopped");
  assert.deepEqual(failed, ["one: timeout", "four: stopped"]);
  assert.equal(p.size, 0);
});

Deno.test("waiters: out-of-order answers, IDs of other members, IDs alike in their last nine digits, long queues", () => {
  const mine = new Proposals("1", 1000), theirs = new Proposals("2", 1000);
  const answered: string[] = [];
  const w = (name: string, deadline = Infinity) =>
    newWaiter(() => answered.push(name), (e) => answered.push(`${name}: ${e}`), deadline);
  // another member's IDs, and IDs that end in the same nine digits as ours, are not ours to take
  const ids = Array.from({ length: 3 }, () => mine.nextId());
  for (const id of ids) mine.add(id, w(id));
  for (let i = 0; i < 3; i++) assert.equal(mine.take(theirs.nextId()), undefined);
  for (const id of ids) assert.equal(mine.take((BigInt(id) + 7n * 10n ** 9n).toString()), undefined);
  assert.equal(mine.size, 3);
  assert.equal(mine.take(ids[2])?.settled, true);
  assert.equal(mine.take(ids[0])?.settled, true);
  assert.equal(mine.size, 1);
  // two IDs with the same last nine digits wait side by side
  mine.add("41000000007", w("a", 50));
  mine.add("7", w("b", 60));
  assert.equal(mine.size, 3);
  assert.equal(mine.take("1000000007"), undefined);
  assert.equal(mine.expire(55, () => "timeout"), 0, `${ids[1]} waits with no deadline and is older`);
  assert.equal(mine.take(ids[1])?.settled, true);
  assert.equal(mine.expire(55, () => "timeout"), 1);
  assert.deepEqual(answered, ["a: timeout"]);
  assert.equal(mine.take("7")?.settled, true);
  assert.equal(mine.size, 0);
  // 20,000 in flight, answered in a shuffled order; the rest fail in proposal order
  const many = Array.from({ length: 20000 }, () => mine.nextId());
  for (const id of many) mine.add(id, w(id));
  for (let i = 0; i < many.length; i += 3) assert.ok(mine.take(many[(i * 7919) % many.length]));
  answered.length = 0;
  const left = mine.size;
  assert.equal(mine.rejectAll("stopped"), left);
  const failedOrder = answered.map((x) => BigInt(x.split(":")[0]));
  assert.ok(failedOrder.every((id, i) => i === 0 || id > failedOrder[i - 1]), "rejected in proposal order");
  assert.equal(mine.size, 0);
});
