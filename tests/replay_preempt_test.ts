/**
 * A restarted follower whose own log holds many committed entries to apply again, and which the leader brings up to
 * date with a snapshot (issue 14):
 *
 *   preempt    3 members; m3 (--snapshot-count 1000000: it never snapshots, so at restart it applies its whole log
 *              again) sees TXNS txns of 100 puts, is killed, and the others (--snapshot-count 200) move on until
 *              the leader no longer holds the entries m3 lacks. Restarted, m3 begins to apply its log and dials its
 *              peers meanwhile; the leader's snapshot arrives while it applies. Its log says what it skipped, in one
 *              line: replayed entries only, all below the snapshot's index (the rest of the batch it was applying, and
 *              the batches queued behind it for the apply loop). When the snapshot took several turns of the event loop to arrive (it pauses
 *              applying then, and logs where), the skipped range begins at the entry it paused at: nothing was applied
 *              after the pause. Then all members hold the same state. Without the skip, or with the peers dialled only
 *              after the replayed log was applied (then the snapshot comes after it), no entry is skipped.
 *              PREEMPT_TXNS, PREEMPT_KEYS, PREEMPT_VALUE_SIZE and PREEMPT_SNAPSHOT_COUNT change the sizes (3000,
 *              10,000, 200, 200), e.g. to 10000, 1000000, 256, 10000 for the benchmark's follower-restart scale.
 *   redial     a transport that backed off from a peer it could not reach dials it at once when that peer opens a
 *              stream to it (as a restarted member does), instead of waiting for its backoff and next send.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Cluster, sleep } from "./lib/cluster.ts";
import { freePorts } from "./lib/ports.ts";
import { PeerTransport, RaftPeerService } from "../server/peer/transport.ts";
import { GrpcServer } from "../server/transport/grpc_server.ts";
import { message } from "../server/raft/types.ts";
import { Snapshotter } from "../server/snap/snapshotter.ts";

const env = (k: string, d: number) => Number(Deno.env.get(k) ?? d);
/** txns of 100 puts m3 applies again at its restart (overwrites of KEYS keys: the leader's snapshot stays small) */
const TXNS = env("PREEMPT_TXNS", 3000);
const PUTS_PER_TXN = 100;
const KEYS = env("PREEMPT_KEYS", 10_000);
const VALUE_SIZE = env("PREEMPT_VALUE_SIZE", 200);
/** --snapshot-count of m1 and m2 */
const SNAPSHOT_COUNT = env("PREEMPT_SNAPSHOT_COUNT", 200);

async function until(what: string, ms: number, ok: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  let last = "";
  while (Date.now() < deadline) {
    try {
      if (await ok()) return;
    } catch (e) {
      last = String(e);
    }
    await sleep(50);
  }
  throw new Error(`${what}: not within ${ms} ms ${last}`);
}

Deno.test({
  name: "replay preempt: a restarted follower stops applying its replayed log once the leader's snapshot arrives",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await Cluster.start({
      size: 3,
      memberArgs: [
        ["--snapshot-count", `${SNAPSHOT_COUNT}`],
        ["--snapshot-count", `${SNAPSHOT_COUNT}`],
        ["--snapshot-count", "1000000"],
      ],
    });
    try {
      const m3 = c.members[2];
      let { leader } = await c.waitLeader();
      if (leader === m3) {
        const lc3 = c.client(m3);
        await lc3.call(lc3.maintenance, "MoveLeader", { targetID: c.members[0].id }, 10000);
        ({ leader } = await c.waitLeader({ notId: m3.id }));
      }
      const lc = c.client(leader);
      const value = "v".repeat(VALUE_SIZE);
      let next = 0;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next < TXNS) {
          const t = next++;
          const success = Array.from({ length: PUTS_PER_TXN }, (_, i) => ({
            request_put: {
              key: Buffer.from(`pre/${String((t * PUTS_PER_TXN + i) % KEYS).padStart(7, "0")}`),
              value: Buffer.from(`${value}${t}`),
            },
          }));
          await lc.call(lc.kv, "Txn", { compare: [], success, failure: [] }, 20000);
        }
      }));
      // the history goes: the leader's snapshot holds KEYS keys, not every revision
      const { revision } = await lc.put("pre/last", "x", 10000);
      await lc.call(lc.kv, "Compact", { revision, physical: true }, 20000);
      await until("m3 applied the compaction", 60000, async () => {
        const [s3, sl] = await Promise.all([c.status(m3, 3000), c.status(leader, 3000)]);
        return s3.appliedIndex === sl.appliedIndex;
      });
      console.log(`  wrote ${TXNS} txns of ${PUTS_PER_TXN} puts in ${(performance.now() - t0).toFixed(0)} ms`);

      await c.kill(m3);
      const stoppedAt = (await c.status(leader)).raftIndex;
      let filler = 0;
      while ((await c.status(leader)).raftIndex - stoppedAt < 5000 + 4 * SNAPSHOT_COUNT) {
        await Promise.all(Array.from({ length: 64 }, () => lc.put("filler", `f${filler++}`, 10000)));
      }

      const restartAt = performance.now();
      await c.restart(m3);
      const fc = c.client(m3);
      await until("m3 catches up", 60000, async () => {
        const [f, l] = await Promise.all([
          fc.get("filler", { serializable: true }),
          lc.get("filler", { serializable: true }),
        ]);
        return f.value === l.value && f.modRevision === l.modRevision;
      });
      const out = m3.currentOutput();
      const logged = (re: RegExp) => out.split("\n").find((l) => re.test(l));
      const replay = logged(/log holds entries up to \d+ \(commit \d+/);
      const paused = logged(/paused applying at entry \d+/);
      const skipped = logged(/skipped \d+ committed entries/);
      const restored = logged(/restored state from the leader's snapshot at index \d+/);
      const saved = logged(/saved the leader's snapshot at index \d+/);
      console.log(`  m3 caught up ${(performance.now() - restartAt).toFixed(0)} ms after its restart`);
      for (const l of [replay, paused, skipped, saved, restored]) if (l) console.log(`  m3: ${l.trim().slice(0, 200)}`);
      assert.ok(replay && restored, `m3 replayed no log or installed no snapshot:\n${out.slice(-4000)}`);
      // its file was written as it arrived (and is whole: checked below)
      assert.match(saved ?? "", /written as it arrived/);
      assert.match(restored, /decoded as it arrived/);
      const commit = Number(/\(commit (\d+)/.exec(replay)![1]);
      assert.ok(skipped, `m3 skipped no entry covered by the leader's snapshot:\n${out.slice(-4000)}`);
      const [, n, from, to] = /skipped (\d+) committed entries \((\d+)\.\.(\d+)\)/.exec(skipped)!.map(Number);
      const snapIndex = Number(/at index (\d+)/.exec(restored)![1]);
      // the skipped entries are replayed ones, the snapshot covers them, and the batches after them never came
      assert.equal(n, to - from + 1);
      assert.ok(to <= commit, `skipped up to ${to}, beyond the replayed commit index ${commit}`);
      assert.ok(snapIndex > to, `the snapshot at ${snapIndex} does not cover the skipped entries up to ${to}`);
      assert.equal(out.match(/skipped \d+ committed entries/g)?.length, 1, "m3 skipped entries of two batches");
      if (paused) {
        // the snapshot arrived over several turns of the event loop (not all between two slices of applying): m3
        // applied nothing after it paused, the rest of that batch was skipped
        const pausedAt = Number(/paused applying at entry (\d+)/.exec(paused)![1]);
        assert.equal(from, pausedAt, "m3 applied entries after it paused");
        assert.ok(!/paused applying/.test(out.slice(out.indexOf(restored))), "m3 paused again after the snapshot");
      }

      // the same data everywhere
      const want = await lc.range("pre/", { timeoutMs: 10000 });
      const got = await fc.range("pre/", { serializable: true, timeoutMs: 10000 });
      assert.equal(want.kvs.length, KEYS + 1);
      assert.deepEqual(got.kvs, want.kvs, "m3's pre/ keys differ from the leader's");
      await c.assertSameState();

      // the snapshot file m3 wrote as it arrived is whole: it loads, crc and all, after a SIGKILL
      await c.kill(m3);
      const snapDir = `${m3.dataDir}/member/snap`;
      const name = [...Deno.readDirSync(snapDir)].map((e) => e.name)
        .find((n) => n.endsWith(`-${snapIndex.toString(16).padStart(16, "0")}.snap`));
      assert.ok(name, `no file of the snapshot at ${snapIndex} in ${snapDir}`);
      const term = parseInt(name.slice(0, 16), 16);
      const file = await new Snapshotter(snapDir).loadNewest([{ index: snapIndex, term }]);
      assert.equal(file?.index, snapIndex);
      assert.ok(!Deno.readDirSync(snapDir).some((e) => e.name.endsWith(".tmp")), "a snapshot tmp file left behind");
    } finally {
      await c.destroy();
    }
  },
});

Deno.test({
  name: "replay preempt: a peer that opens a stream to us is dialled at once, whatever the backoff",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const [portA, portB] = await freePorts(2);
    const made: { server: GrpcServer; transport: PeerTransport }[] = [];
    const member = async (self: string, port: number, peer: string, peerPort: number) => {
      const transport = new PeerTransport({
        selfId: self,
        clusterId: "77",
        addressOf: (id) => id === peer ? `127.0.0.1:${peerPort}` : undefined,
        receive: () => {},
        unreachable: () => {},
        disconnected: () => {},
        snapshotSent: () => {},
        lease: () => Promise.reject(new Error("not a leader")),
        standing: (id) => id === peer ? "member" : "unknown",
        removed: () => {},
        peerURLs: () => [],
        maxSnapshotBytes: 1 << 20,
        log: () => {},
      });
      const server = new GrpcServer();
      server.addService(RaftPeerService, transport.service());
      await server.listen("127.0.0.1", port);
      made.push({ server, transport });
      return transport;
    };
    try {
      const a = await member("1", portA, "2", portB);
      // B is down: A's attempts fail and its backoff grows to the most (1 s)
      for (let i = 0; i < 30; i++) {
        a.keepConnected(["2"]);
        await sleep(50);
      }
      assert.equal(a.activeSince("2"), 0);
      // B comes up and sends to A; A is asked for nothing (no send, no keepConnected)
      const b = await member("2", portB, "1", portA);
      const at = performance.now();
      b.send([message({ type: "Heartbeat", from: "2", to: "1", term: 1 })]);
      b.flush();
      await until("A dials B", 3000, () => Promise.resolve(a.activeSince("2") > 0));
      console.log(`  A connected to B ${(performance.now() - at).toFixed(0)} ms after B's first frame`);
    } finally {
      for (const { server, transport } of made) {
        transport.stop();
        server.forceShutdown();
      }
    }
  },
});
