/**
 * The members of a cluster take their snapshots at staggered indexes (server/node/node.ts, #snapshotDue): member k of
 * n, by ID, every --snapshot-count entries at k·count/n past each multiple of count. At one index every member would
 * encode and write its state at the same moment.
 */
import assert from "node:assert/strict";
import { Cluster } from "./lib/cluster.ts";

const COUNT = 300;

Deno.test({
  name: "snapshot stagger: three members snapshot every --snapshot-count entries, a third of it apart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await Cluster.start({ size: 3, snapshotCount: COUNT });
    try {
      const { leader } = await c.waitLeader();
      const lc = c.client(leader);
      // one put at a time: each Ready applies one or two entries, so a snapshot is taken right at its point. The
      // history is compacted as it goes: the state stays far smaller than the log between two snapshots, so the count
      // alone decides when one is due (see SNAPSHOT_LOG_SHARE in server/node/node.ts)
      for (let i = 0; i < 4 * COUNT; i++) {
        const { revision } = await lc.put(`stagger/${i % 50}`, `v${i}`, 10000);
        if (i % 50 === 49) await lc.compact(revision);
      }
      await c.assertSameState();
      const snapshots = c.members.map((m) =>
        [...m.currentOutput().matchAll(/saved snapshot at index (\d+)/g)].map((x) => Number(x[1]))
      );
      console.log(`  snapshot indexes: ${snapshots.map((s, i) => `${c.members[i].name} ${s.join(", ")}`).join("; ")}`);
      const phases = snapshots.map((s) => {
        assert.ok(s.length >= 3, `a member took ${s.length} snapshots in ${4 * COUNT} entries: ${s}`);
        // every count entries, after the first
        for (let i = 2; i < s.length; i++) assert.ok(Math.abs(s[i] - s[i - 1] - COUNT) <= 3, `intervals ${s}`);
        return s[s.length - 1] % COUNT;
      }).sort((a, b) => a - b);
      // a third of count apart, round the circle
      const gaps = phases.map((p, i) => ((i + 1 < phases.length ? phases[i + 1] : phases[0] + COUNT) - p));
      for (const g of gaps) assert.ok(Math.abs(g - COUNT / 3) <= 5, `phases ${phases} (gaps ${gaps})`);
    } finally {
      await c.destroy();
    }
  },
});
