/**
 * A broken Raft invariant stops the member, wherever it is raised (issue 10 item 5). The test plays a second leader of
 * the member's own term on its peer URL — a Heartbeat of the current term sent to the leader, which two leaders in one
 * term would produce — and expects the process to exit with a message that names the violated invariant, instead of
 * logging the message as dropped and serving on with a state that can no longer be trusted.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { grpcRoot } from "../proto/grpc_js.ts";
import { PeerTransport } from "../server/peer/transport.ts";
import { message } from "../server/raft/types.ts";
import { startServer } from "./lib/server.ts";

interface StatusHeader {
  cluster_id: string;
  member_id: string;
  raft_term: string;
}

function status(endpoint: string): Promise<{ header: StatusHeader; leader: string }> {
  const client = new grpcRoot.etcdserverpb.Maintenance(endpoint, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.Status({}, { deadline: Date.now() + 10_000 }, (err: Error | null, resp: never) => {
      client.close();
      if (err) reject(err);
      else resolve(resp);
    });
  });
}

Deno.test({
  name: "raft invariant: a Heartbeat of its own term sent to a leader (two leaders in one term) stops the member",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await startServer();
    let transport: PeerTransport | undefined;
    try {
      const st = await status(server.endpoint);
      assert.equal(st.leader, st.header.member_id, "a single member leads");
      const term = Number(st.header.raft_term);
      const impostor = "4242"; // not a member: a leader of the same term elsewhere is what the invariant rules out
      transport = new PeerTransport({
        selfId: impostor,
        clusterId: st.header.cluster_id,
        addressOf: () => new URL(server.peerUrl).host,
        receive: () => {},
        unreachable: () => {},
        disconnected: () => {},
        snapshotSent: () => {},
        lease: () => Promise.reject(new Error("not a leader")),
        log: () => {},
      });
      transport.send([message({ type: "Heartbeat", from: impostor, to: st.header.member_id, term })]);
      transport.flush();

      const exit = await Promise.race([
        server.status,
        new Promise<null>((r) => setTimeout(() => r(null), 15_000)),
      ]);
      const out = server.output();
      assert.ok(exit, `the member still runs 15 s after the violation; its output ends with:\n${out.slice(-2000)}`);
      assert.equal(exit.code, 1, out.slice(-2000));
      assert.match(
        out,
        new RegExp(
          `stopping this member: raft invariant violated: leader ${st.header.member_id} of term ${term} got ` +
            `Heartbeat from ${impostor} in its own term \\(while stepping Heartbeat from ${impostor}`,
        ),
      );
    } finally {
      transport?.stop();
      await server.kill();
      await Deno.remove(server.dataDir, { recursive: true }).catch(() => {});
    }
  },
});
