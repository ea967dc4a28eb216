/**
 * A broken Raft invariant stops the member, wherever it is raised (issue 10 item 5). In a 3-member cluster the test
 * kills a follower and plays it as a second leader of the leader's own term on the leader's peer URL — a Heartbeat of
 * the current term, which two leaders in one term would produce — and expects the leader's process to exit with a
 * message that names the violated invariant, instead of logging the message as dropped and serving on with a state
 * that can no longer be trusted. (The impostor must be a current member: the peer service refuses anyone else.)
 */
import assert from "node:assert/strict";
import { PeerTransport } from "../server/peer/transport.ts";
import { message } from "../server/raft/types.ts";
import { Cluster } from "./lib/cluster.ts";

Deno.test({
  name: "raft invariant: a Heartbeat of its own term sent to a leader (two leaders in one term) stops the member",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const cluster = await Cluster.start({ size: 3 });
    let transport: PeerTransport | undefined;
    try {
      const { leader, term } = await cluster.waitLeader();
      const impostor = cluster.members.find((m) => m !== leader)!;
      await cluster.kill(impostor);
      const { clusterId } = await cluster.status(leader);
      transport = new PeerTransport({
        selfId: impostor.id,
        clusterId,
        addressOf: () => new URL(leader.peerUrl).host,
        receive: () => {},
        unreachable: () => {},
        disconnected: () => {},
        snapshotSent: () => {},
        lease: () => Promise.reject(new Error("not a leader")),
        standing: () => "member",
        removed: () => {},
        maxSnapshotBytes: 0,
        log: () => {},
      });
      transport.send([message({ type: "Heartbeat", from: impostor.id, to: leader.id, term })]);
      transport.flush();

      const exit = await Promise.race([leader.exited(), new Promise<null>((r) => setTimeout(() => r(null), 15_000))]);
      const out = leader.output();
      assert.ok(exit, `the leader still runs 15 s after the violation; its output ends with:\n${out.slice(-2000)}`);
      assert.equal(exit.code, 1, out.slice(-2000));
      assert.match(
        out,
        new RegExp(
          `stopping this member: raft invariant violated: leader ${leader.id} of term ${term} got ` +
            `Heartbeat from ${impostor.id} in its own term \\(while stepping Heartbeat from ${impostor.id}`,
        ),
      );
    } finally {
      transport?.stop();
      await cluster.destroy();
    }
  },
});
