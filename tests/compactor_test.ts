/**
 * Specification tests for the periodic auto-compaction schedule (server/etcd/compactor.ts), as etcd 3.4's: the
 * revision is sampled every tenth of the period, the store is compacted every period at the oldest sample kept, only
 * by the leader, and a failed compaction is tried again at the next sample.
 */
import assert from "node:assert/strict";
import { type CompactionTarget, parseRetention, PeriodicCompactor } from "../server/etcd/compactor.ts";

/** A store whose revision grows by 100 per second of the test's clock; records the compactions asked for. */
function fakeTarget() {
  const t = {
    now: 0,
    leader: true,
    fail: false,
    compactions: [] as Array<{ at: number; rev: number }>,
  };
  const target: CompactionTarget = {
    currentRev: () => 1 + Math.floor(t.now / 10),
    isLeader: () => t.leader,
    compact: (rev) => {
      t.compactions.push({ at: t.now, rev });
      return t.fail ? Promise.reject(new Error("no leader")) : Promise.resolve();
    },
  };
  return { t, target };
}

/** Runs the compactor's ticks up to `until` ms, letting each compaction's promise settle. */
async function runTo(c: PeriodicCompactor, t: { now: number }, until: number): Promise<void> {
  while (t.now + c.sampleEvery <= until) {
    t.now += c.sampleEvery;
    c.tick(t.now);
    await Promise.resolve();
    await Promise.resolve();
  }
}

Deno.test("compactor: periodic 10s compacts every 10 s, at the revision sampled 11 s before (the first at the start)", async () => {
  const { t, target } = fakeTarget();
  const c = new PeriodicCompactor(target, parseRetention("10s"), 0);
  assert.equal(c.sampleEvery, 1000);
  await runTo(c, t, 45_000);
  assert.deepEqual(t.compactions, [
    { at: 10_000, rev: 1 }, // the revision at the start
    { at: 20_000, rev: 1 + 900 }, // sampled at 9 s: the oldest of the 11 kept
    { at: 30_000, rev: 1 + 1900 },
    { at: 40_000, rev: 1 + 2900 },
  ]);
});

Deno.test("compactor: a period over an hour compacts every hour, keeping the whole period", async () => {
  const { t, target } = fakeTarget();
  const c = new PeriodicCompactor(target, parseRetention("2"), 0); // two hours
  assert.equal(c.sampleEvery, 360_000);
  assert.equal(c.interval, 3_600_000);
  await runTo(c, t, 5 * 3_600_000);
  const hours = t.compactions.map((x) => x.at / 3_600_000);
  assert.deepEqual(hours, [2, 3, 4, 5]);
  // the oldest of 21 samples, 6 minutes apart: 2 h 6 min before the compaction (at the first one, the start)
  assert.deepEqual(t.compactions.map((x) => x.rev), [1, 1 + 324_000, 1 + 684_000, 1 + 1_044_000]);
});

Deno.test("compactor: only the leader compacts; one that becomes leader compacts at once if a period passed", async () => {
  const { t, target } = fakeTarget();
  const c = new PeriodicCompactor(target, 10_000, 0);
  t.leader = false;
  await runTo(c, t, 25_000);
  assert.deepEqual(t.compactions, []);
  t.leader = true;
  await runTo(c, t, 26_000);
  assert.deepEqual(t.compactions, [{ at: 26_000, rev: 1 + 1500 }]); // still sampled while it followed
});

Deno.test("compactor: a failed compaction is tried again at the next sample, not a period later", async () => {
  const { t, target } = fakeTarget();
  const c = new PeriodicCompactor(target, 10_000, 0);
  t.fail = true;
  await runTo(c, t, 12_000);
  t.fail = false;
  await runTo(c, t, 23_000);
  assert.deepEqual(t.compactions.map((x) => x.at), [10_000, 11_000, 12_000, 13_000, 23_000]);
});

Deno.test("compactor: a tick a little early or late does not move the schedule by a tick", async () => {
  const { t, target } = fakeTarget();
  const c = new PeriodicCompactor(target, 10_000, 0);
  for (const at of [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000, 10_040]) {
    t.now = at;
    c.tick(at);
    await Promise.resolve();
    await Promise.resolve();
  }
  for (let k = 11; k <= 20; k++) {
    t.now = k * 1000 - (k === 20 ? 30 : 0);
    c.tick(t.now);
    await Promise.resolve();
    await Promise.resolve();
  }
  assert.deepEqual(t.compactions.map((x) => x.at), [10_040, 19_970]);
});
