/**
 * Peer isolation, against a real 3-member cluster of our server (tests/lib/cluster.ts), with hostile peer traffic
 * sent by this test itself:
 *
 *   client port   a Heartbeat with term 1,000,000 sent to the leader's CLIENT port, from a made-up ID and from a real
 *                 member's ID, finds no Raft service (UNIMPLEMENTED) and changes no member's term.
 *   non-member    the same Heartbeat to the leader's PEER port from an ID that is not a member is refused
 *                 (PERMISSION_DENIED) and changes no term; a member's stream carrying a message that claims to come
 *                 from someone else has that message dropped.
 *   snapshot      a snapshot larger than the backend quota (--quota-backend-bytes 1 MiB, plus the headroom) streamed
 *                 to a follower's peer port is refused with RESOURCE_EXHAUSTED; the follower keeps serving with its
 *                 data unchanged. A snapshot whose data is longer or shorter than the size its sender announced is
 *                 refused (INVALID_ARGUMENT), also with the data unchanged.
 *   removed       a member killed while the others remove it, restarted on its data, is told by its former peers that
 *                 it was removed and exits, as etcd's removed members do.
 */
import assert from "node:assert/strict";
import { Cluster, type ClusterMember, sleep } from "./lib/cluster.ts";
import { freePorts } from "./lib/ports.ts";
import { serverBinary } from "./lib/server.ts";
import { ClusterService, MaintenanceService, RaftService } from "../proto/mod.ts";
import { GrpcClient, type GrpcError, Status } from "../server/transport/http2_client.ts";
import { encodeFrame, encodeMessages } from "../server/peer/codec.ts";
import { type Message, message } from "../server/raft/types.ts";
import { ERR_MEMBER_REMOVED, SNAPSHOT_HEADROOM, SNAPSHOT_SIZE_HEADER } from "../server/peer/transport.ts";

const QUOTA = 1 << 20;
const FORGED_TERM = 1_000_000;
/** a member ID no member has */
const STRANGER = "4242424242";

function hostPortOf(port: number): string {
  return `127.0.0.1:${port}`;
}

/** The cluster ID, from a Status response header. */
async function clusterIdOf(m: ClusterMember): Promise<string> {
  const c = new GrpcClient(m.endpoint);
  try {
    const rpc = MaintenanceService.Status;
    const resp = rpc.responseDeserialize(await c.unary(rpc.path, rpc.requestSerialize({}), undefined, 3000)) as {
      header: { cluster_id: string };
    };
    return String(resp.header.cluster_id);
  } finally {
    c.destroy();
  }
}

/** Opens a peer call as `from` would, writes `messages`, half-closes, and resolves with how the call ended. */
function peerCall(
  addr: string,
  path: string,
  clusterId: string,
  from: string,
  messages: Uint8Array[],
  metadata: Record<string, string> = {},
): Promise<GrpcError | null> {
  const client = new GrpcClient(addr);
  const call = client.clientStream(path, { "eg-cluster-id": clusterId, "eg-from": from, ...metadata });
  return new Promise<GrpcError | null>((resolve) => {
    let result: GrpcError | null = null;
    call.on("error", (e: GrpcError) => result = e);
    call.on("close", () => resolve(result));
    let i = 0;
    const pump = () => {
      while (i < messages.length) {
        if (call.closed) return;
        if (!call.write(messages[i++])) return void call.once("drain", pump);
      }
      call.end();
    };
    pump();
  }).finally(() => client.destroy());
}

function sendFrame(addr: string, clusterId: string, from: string, msgs: Message[]): Promise<GrpcError | null> {
  return peerCall(addr, RaftService.Send.path, clusterId, from, [encodeFrame(msgs)]);
}

async function terms(cluster: Cluster): Promise<number[]> {
  return await Promise.all(
    cluster.members.filter((m) => m.running).map(async (m) => (await cluster.status(m)).raftTerm),
  );
}

Deno.test("peer isolation: Raft only on peer URLs, only from members, snapshots within the quota", async (t) => {
  const cluster = await Cluster.start({ size: 3, extraArgs: ["--quota-backend-bytes", String(QUOTA)] });
  try {
    const { leader, term } = await cluster.waitLeader();
    const clusterId = await clusterIdOf(leader);
    const followers = cluster.members.filter((m) => m !== leader);
    const heartbeat = (from: string) =>
      message({ type: "Heartbeat", from, to: leader.id, term: FORGED_TERM, commit: 0 });

    await t.step("a forged Heartbeat sent to the client port finds no Raft service and changes no term", async () => {
      for (const from of [STRANGER, followers[0].id]) {
        const err = await sendFrame(leader.endpoint, clusterId, from, [heartbeat(from)]);
        assert.equal(err?.code, Status.UNIMPLEMENTED, `from ${from}: ${err?.message}`);
      }
      await sleep(500);
      const after = await terms(cluster);
      assert.ok(after.every((x) => x < FORGED_TERM), `terms ${after}`);
      assert.equal((await cluster.waitLeader()).leader, leader);
      await cluster.client(leader).put("still", "served");
    });

    await t.step("a message from a non-member to the peer port is refused and changes no term", async () => {
      const err = await sendFrame(hostPortOf(leader.peerPort), clusterId, STRANGER, [heartbeat(STRANGER)]);
      assert.equal(err?.code, Status.PERMISSION_DENIED, String(err?.message));
      assert.match(err!.details, /not a member/);
      // a member's stream: a message claiming another sender is dropped, not applied
      const spoofed = await sendFrame(hostPortOf(leader.peerPort), clusterId, followers[0].id, [heartbeat(STRANGER)]);
      assert.equal(spoofed, null);
      await sleep(500);
      const after = await terms(cluster);
      assert.ok(after.every((x) => x < FORGED_TERM), `terms ${after}`);
      assert.equal((await cluster.waitLeader()).term, term);
      assert.match(leader.currentOutput(), /refused peer 4242424242: the sender 4242424242 is not a member/);
    });

    await t.step("a snapshot larger than the quota is refused; the follower keeps its data and serves", async () => {
      const target = followers[1];
      await cluster.client(leader).put("before-snapshot", "kept");
      const chunk = RaftService.Snapshot.requestSerialize;
      const head = message({
        type: "Snap",
        from: leader.id,
        to: target.id,
        term,
        snapshot: { metadata: { index: 1e9, term, confState: { voters: [], learners: [] } }, data: new Uint8Array(0) },
      });
      const piece = new Uint8Array(1 << 20).fill(0x41);
      const pieces = Math.ceil((QUOTA + SNAPSHOT_HEADROOM) / piece.length) + 2;
      const parts = [chunk({ message: encodeMessages([head]) })];
      for (let i = 0; i < pieces; i++) parts.push(chunk({ data: piece }));
      const err = await peerCall(hostPortOf(target.peerPort), RaftService.Snapshot.path, clusterId, leader.id, parts);
      assert.equal(err?.code, Status.RESOURCE_EXHAUSTED, String(err?.message));
      assert.match(err!.details, /exceeds/);
      const kv = await cluster.client(target).get("before-snapshot", { serializable: true });
      assert.equal(kv.value, "kept");
      await cluster.client(target).put("after-snapshot", "served");
      assert.ok((await cluster.status(target)).raftTerm < FORGED_TERM);

      // a sender announces the size of its data (the receiver fills one buffer): more or less than that is refused
      const piece1 = chunk({ data: piece });
      for (
        const [announced, sent, why] of [
          [3, 1, /exceeds the 3 bytes it announced/],
          [2 << 20, 1, /holds 1048576 of the 2097152 bytes it announced/],
        ] as const
      ) {
        const parts = [chunk({ message: encodeMessages([head]) }), ...Array(sent).fill(piece1)];
        const err = await peerCall(
          hostPortOf(target.peerPort),
          RaftService.Snapshot.path,
          clusterId,
          leader.id,
          parts,
          {
            [SNAPSHOT_SIZE_HEADER]: String(announced),
          },
        );
        assert.equal(err?.code, Status.INVALID_ARGUMENT, String(err?.message));
        assert.match(err!.details, why);
      }
      assert.equal((await cluster.client(target).get("after-snapshot", { serializable: true })).value, "served");
      // the file each refused snapshot began to be written to, as it arrived, is deleted
      await sleep(300);
      const snapDir = `${target.dataDir}/member/snap`;
      const files = [...Deno.readDirSync(snapDir)].map((e) => e.name);
      assert.ok(!files.some((n) => n.endsWith(".tmp")), `left in ${snapDir}: ${files}`);
    });

    await t.step("a removed member is told so by its former peers and stops", async () => {
      const victim = followers[1];
      const { leader: lead } = await cluster.waitLeader();
      // stopped while the others remove it, it never sees its removal in its log
      await cluster.kill(victim);
      // strict reconfiguration: the remaining members must have been connected for 5 s
      const deadline = Date.now() + 20_000;
      for (;;) {
        const c = new GrpcClient(lead.endpoint);
        try {
          const rpc = ClusterService.MemberRemove;
          await c.unary(rpc.path, rpc.requestSerialize({ ID: victim.id }), undefined, 10_000);
          break;
        } catch (e) {
          if (!/unhealthy cluster/.test(String(e)) || Date.now() > deadline) throw e;
          await sleep(500);
        } finally {
          c.destroy();
        }
      }
      await cluster.restart(victim, { waitReady: false });
      const exited = await Promise.race([victim.exited(), sleep(15_000).then(() => "still running")]);
      assert.notEqual(exited, "still running", victim.currentOutput().slice(-3000));
      // told by a peer (not by applying its own removal, which it never saw)
      assert.match(victim.currentOutput(), new RegExp(`peer \\d+ says ${ERR_MEMBER_REMOVED}`));
      await cluster.client(lead).put("after-removal", "served");
    });
  } finally {
    await cluster.destroy();
  }
});

Deno.test("a client URL on a peer URL's address is refused at start (the Raft service must not reach clients)", async () => {
  const [port] = await freePorts(1);
  const url = `http://127.0.0.1:${port}`;
  const dir = await Deno.makeTempDir({ prefix: "peer-iso-" });
  try {
    const out = await new Deno.Command(serverBinary, {
      args: [
        "--name",
        "solo",
        "--data-dir",
        dir,
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
        "--listen-peer-urls",
        url,
        "--initial-advertise-peer-urls",
        url,
        "--initial-cluster",
        `solo=${url}`,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.notEqual(out.code, 0, text);
    assert.match(text, /client and peer URLs must differ/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
