/**
 * kill -9 of the leader under writes through the followers: the writes a follower had forwarded to the dead leader
 * are answered ("request timed out, possibly due to previous leader failure") as soon as the follower sees the
 * connection close, not after the request timeout (7 s), so clients write again within the failover.
 */
import assert from "node:assert/strict";
import { Cluster, errorText, sleep } from "./lib/cluster.ts";

Deno.test("failover: writes forwarded to a killed leader are answered at once, not after the request timeout", async () => {
  const c = await Cluster.start({ size: 3 });
  try {
    const { leader } = await c.waitLeader();
    const followers = c.members.filter((m) => m !== leader);
    let stop = false;
    let kill = 0;
    let firstAfterKill = 0;
    const slowest: { ms: number; what: string }[] = [];
    const writers = followers.flatMap((m) =>
      [0, 1, 2, 3].map(async (w) => {
        const client = c.client(m);
        while (!stop) {
          const t = performance.now();
          let what = "ok";
          try {
            await client.put(`k${w}`, "v", 10000);
            if (kill && t >= kill && !firstAfterKill) firstAfterKill = performance.now();
          } catch (e) {
            what = errorText(e);
            await sleep(2);
          }
          if (kill && performance.now() >= kill) slowest.push({ ms: performance.now() - t, what });
        }
      })
    );
    await sleep(500);
    kill = performance.now();
    await c.kill(leader);
    const deadline = Date.now() + 15000;
    while (!firstAfterKill && Date.now() < deadline) await sleep(10);
    await sleep(300);
    stop = true;
    await Promise.all(writers);
    assert.ok(firstAfterKill > 0, `no write succeeded within 15 s of the kill\n${c.logs()}`);
    const worst = slowest.sort((a, b) => b.ms - a.ms)[0];
    assert.ok(worst.ms < 3000, `a write took ${worst.ms.toFixed(0)} ms (${worst.what})\n${c.logs()}`);
  } finally {
    await c.destroy();
  }
});
