/**
 * Auto-compaction in a cluster (server/etcd/compactor.ts): with --auto-compaction-mode periodic, only the leader
 * proposes compactions, one per period, each at a revision about 1.1 periods old; every member then refuses reads
 * below it. (The schedule itself is specified in compactor_test.ts.)
 */
import assert from "node:assert/strict";
import { Cluster, sleep } from "./lib/cluster.ts";

Deno.test({
  name: "auto-compaction: periodic 1s, the leader alone compacts, once a second, and every member refuses older reads",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await Cluster.start({
      size: 3,
      extraArgs: ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1s"],
    });
    try {
      const { leader } = await c.waitLeader();
      const lc = c.client(leader);
      const first = (await lc.put("ac/0", "v")).revision;
      const started = performance.now();
      let i = 0;
      while (performance.now() - started < 4500) {
        await lc.put(`ac/${++i % 20}`, `v${i}`);
        await sleep(5);
      }
      const lines = (text: string) =>
        [...text.matchAll(/finished scheduled compaction at (\d+)/g)].map((m) => Number(m[1]));
      const compacted = lines(leader.currentOutput());
      for (const m of c.members) {
        if (m !== leader) assert.deepEqual(lines(m.currentOutput()), [], `${m.name} compacted`);
      }
      // about one a second over 4.5 s, not ten (a sample every 100 ms)
      assert.ok(compacted.length >= 2 && compacted.length <= 5, `compactions at ${compacted}`);
      for (let k = 1; k < compacted.length; k++) assert.ok(compacted[k] > compacted[k - 1], `${compacted}`);
      const last = compacted.at(-1)!;
      assert.ok(last > first, `compacted at ${last}, first put at ${first}`);
      for (const m of c.members) {
        await assert.rejects(
          () => c.client(m).get("ac/0", { revision: last - 1, serializable: true }),
          /required revision has been compacted/,
          `${m.name} served a read below ${last}`,
        );
      }
    } finally {
      await c.destroy();
    }
  },
});
