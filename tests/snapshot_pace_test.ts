/**
 * The pace of snapshots with a state large against its log (server/node/node.ts: SNAPSHOT_LOG_SHARE,
 * #maybeCompactLog): a snapshot writes the whole state, so small writes over a large state do not bring one every
 * --snapshot-count entries; the in-memory log is still dropped at etcd's pace (and earlier, once the log since its last
 * cut is as large as the state: LOG_CUT_SHARE), and a follower that needs entries gone from it gets a snapshot the
 * leader takes for it.
 */
import assert from "node:assert/strict";
import { Cluster, type ClusterMember, sleep } from "./lib/cluster.ts";

const COUNT = 100;
/** Entries a leader keeps after a snapshot for slow followers (server/node: CATCH_UP_ENTRIES, as etcd). */
const CATCH_UP_ENTRIES = 5000;

/** The indexes of the snapshots a member saved of its own state, in order. */
function ownSnapshots(m: ClusterMember): number[] {
  return [...m.currentOutput().matchAll(/saved snapshot at index (\d+)/g)].map((x) => Number(x[1]));
}

/** Restarts `follower` and waits (at most 60 s) until it serves `lastValue` at `last` from its own state. */
async function restartUntilCaughtUp(
  c: Cluster,
  follower: ClusterMember,
  leader: ClusterMember,
  last: string,
  lastValue: string | null,
): Promise<void> {
  await c.restart(follower);
  const fc = c.client(follower);
  const deadline = Date.now() + 60000;
  while ((await fc.get(last, { serializable: true }).catch(() => ({ value: "" }))).value !== lastValue) {
    if (Date.now() > deadline) throw new Error(`${follower.name} did not catch up:\n${leader.currentOutput()}`);
    await sleep(100);
  }
}

Deno.test({
  name: "snapshot pace: small puts over a large state take no snapshot per count; a follower behind gets a new one",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await Cluster.start({ size: 3, snapshotCount: COUNT });
    try {
      const { leader } = await c.waitLeader();
      const follower = c.members.find((m) => m !== leader)!;
      const lc = c.client(leader);
      // a state of at least 16 MB: 2,000 values of 8 KiB, and more until the leader took a snapshot after those. Its
      // snapshots came at about every doubling of the state, and the small puts below must not reach the next one: a
      // run that stopped just short of a doubling took one during them (CI, once)
      const big = "b".repeat(8192);
      let grown = 0;
      const putBig = async () => {
        await Promise.all(Array.from({ length: 50 }, () => lc.put(`big/${grown++}`, big, 10000)));
      };
      while (grown < 2000) await putBig();
      const grownAt = (await c.status(leader)).raftIndex;
      while (!ownSnapshots(leader).some((index) => index > grownAt)) {
        assert.ok(grown < 8000, `the leader took no snapshot after index ${grownAt}: ${ownSnapshots(leader)}`);
        await putBig();
      }
      await c.stop(follower);
      const stoppedAt = (await c.status(leader)).raftIndex;
      const before = ownSnapshots(leader).length;
      // small puts: CATCH_UP_ENTRIES and more than COUNT besides, about 150 B of log each (< 1 MB in all, against the
      // newest snapshot's 16 MB and more): the leader's log drops the entries the follower needs, and no snapshot is due
      let n = 0;
      while ((await c.status(leader)).raftIndex - stoppedAt < CATCH_UP_ENTRIES + 3 * COUNT) {
        await Promise.all(Array.from({ length: 64 }, () => lc.put(`small/${n++ % 500}`, `v${n}`, 10000)));
      }
      const during = ownSnapshots(leader).slice(before);
      assert.deepEqual(during, [], `snapshots over ${n} small puts at a count of ${COUNT}`);
      const last = `small/${(n - 1) % 500}`, lastValue = (await lc.get(last)).value;

      await restartUntilCaughtUp(c, follower, leader, last, lastValue);
      // the snapshot the follower got was taken for it, past the entries the leader dropped
      const taken = ownSnapshots(leader).slice(before);
      assert.equal(taken.length, 1, `snapshots taken for the follower: ${taken}`);
      assert.ok(
        taken[0] >= stoppedAt + CATCH_UP_ENTRIES + 3 * COUNT,
        `snapshot at ${taken[0]}, stopped at ${stoppedAt}`,
      );
      const sent = [...leader.currentOutput().matchAll(/sent database snapshot.*snapshot-index[=":]+(\d+)/g)];
      assert.ok(sent.some((x) => Number(x[1]) === taken[0]), `no "sent database snapshot" of index ${taken[0]}`);
      await c.assertSameState();
    } finally {
      await c.destroy();
    }
  },
});

Deno.test({
  name:
    "snapshot pace: below --snapshot-count, a log grown past the state's size is cut; a follower that far behind gets a snapshot",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // etcd's default count of 100,000: the entries below are far fewer, and the state stays small (500 keys)
    const c = await Cluster.start({ size: 3, snapshotCount: 100_000 });
    try {
      const { leader } = await c.waitLeader();
      const follower = c.members.find((m) => m !== leader)!;
      const lc = c.client(leader);
      await c.stop(follower);
      const stoppedAt = (await c.status(leader)).raftIndex;
      // the log since the last cut (none yet: no snapshot either) reaches CATCH_UP_ENTRIES more than the entries the
      // leader keeps for slow followers: it is cut, with the entries the follower needs
      let n = 0;
      while ((await c.status(leader)).raftIndex - stoppedAt < 2 * CATCH_UP_ENTRIES + 500) {
        await Promise.all(Array.from({ length: 64 }, () => lc.put(`small/${n++ % 500}`, `v${n}`, 10000)));
      }
      const last = `small/${(n - 1) % 500}`, lastValue = (await lc.get(last)).value;
      assert.deepEqual(ownSnapshots(leader), [], "no snapshot was due");

      await restartUntilCaughtUp(c, follower, leader, last, lastValue);
      const taken = ownSnapshots(leader);
      assert.equal(taken.length, 1, `snapshots taken for the follower: ${taken}`);
      const sent = [...leader.currentOutput().matchAll(/sent database snapshot.*snapshot-index[=":]+(\d+)/g)];
      assert.ok(sent.some((x) => Number(x[1]) === taken[0]), `no "sent database snapshot" of index ${taken[0]}`);
      await c.assertSameState();
    } finally {
      await c.destroy();
    }
  },
});
