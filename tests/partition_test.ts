/**
 * Network partitions with real processes: 3 members (scripts/etcd, or the real etcd with ETCD_SERVER=/usr/bin/etcd),
 * each in its own network namespace, connected by a bridge in a 4th namespace where the clients run (a client agent,
 * tests/fixtures/cluster_client.ts, started there with `ip netns exec`). A member is isolated with iptables DROP rules
 * inside its own namespace for traffic to and from the other members; the client namespace still reaches it.
 *
 *   (a) isolate the leader: the majority elects a new leader and keeps serving writes and linearizable reads; the
 *       isolated old leader steps down, refuses linearizable reads and writes (they time out or fail, never succeed),
 *       while its serializable reads are stale; healed, it rejoins as a follower and catches up, and the majority's
 *       leader stays leader (pre-vote; and answering all that was buffered for it must not swamp the leader).
 *   (b) the same with a follower isolated.
 *   (c) throughout, clients pinned to every member (3 per member) record a get/put/cas history, which must be
 *       linearizable; besides, no operation sent to an isolated member after the isolation may succeed before the heal.
 *
 * Needs root, `ip netns`, veth, bridges and iptables in a namespace; otherwise the test is ignored (the reason is
 * printed). Addresses: 10.213.0.0/24, only inside the namespaces this test creates; all of them, with their veths,
 * bridge and iptables rules, are removed in `finally` (and namespaces left by a test process that died are removed by
 * the next run). PARTITION_SEED=<n> replays the workload's operation mix.
 */
import assert from "node:assert/strict";
import { ClientAgent, Cluster, type ClusterMember, NetnsTopology, sleep } from "./lib/cluster.ts";
import { checkAndReport, type RecordedOp } from "./lib/history.ts";
import { serverBinary } from "./lib/server.ts";

const reason = await NetnsTopology.unavailableReason();
if (reason) console.log(`partition_test: ignored: ${reason}`);

/** How long each partition lasts. */
const HOLD_MS = 6000;
/** Deadline of the explicit probes sent to the isolated member. */
const PROBE_TIMEOUT_MS = 3000;

const envSeed = Deno.env.get("PARTITION_SEED");
const seed = envSeed ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);

/** Polls until `fn` returns true; throws after `timeoutMs` with the last reason. */
async function until(what: string, timeoutMs: number, fn: () => Promise<boolean | string>): Promise<number> {
  const t0 = performance.now();
  let last = "";
  for (;;) {
    try {
      const r = await fn();
      if (r === true) return performance.now() - t0;
      last = typeof r === "string" ? r : "condition false";
    } catch (e) {
      last = (e as Error).message;
    }
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: not reached after ${timeoutMs} ms (${last})`);
    await sleep(50);
  }
}

interface Window {
  label: string;
  endpoint: string;
  /** agent clock: isolation in place (taken after the rules were added) */
  from: number;
  /** agent clock: taken before the rules were removed */
  to: number;
}

Deno.test({
  name: `partition: isolated leader / follower in network namespaces, linearizable history${
    reason ? ` (ignored: ${reason})` : ""
  }`,
  ignore: reason !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    console.log(`partition_test: server=${serverBinary} seed=${seed} (replay with PARTITION_SEED=${seed})`);
    const topo = await NetnsTopology.create(3);
    let agent: ClientAgent | undefined;
    let c: Cluster | undefined;
    let workloadRunning = false;
    try {
      agent = await ClientAgent.start(topo.clientNs);
      const ag = agent;
      c = await Cluster.start({
        size: 3,
        netns: topo.memberNs,
        ips: topo.memberIps,
        status: (m, timeoutMs) => ag.status(m.endpoint, timeoutMs),
        // ours always runs pre-vote; etcd 3.4 (ETCD_SERVER=/usr/bin/etcd) needs the flag
        extraArgs: ["--pre-vote"],
      });
      const cl = c;
      const endpoints = cl.members.map((m) => m.endpoint);
      await cl.waitLeader();
      await ag.startWorkload({
        endpoints,
        clients: 9,
        keys: 3,
        seed,
        failover: false,
        opTimeoutMs: 2000,
        pauseAfterErrorMs: 100,
        keyPrefix: "lin/",
      });
      workloadRunning = true;
      await sleep(1000);
      const windows: Window[] = [];

      /** One partition: isolate `victim`, check both sides, heal, check it rejoins. */
      const partition = async (label: string, victim: ClusterMember, wasLeader: boolean) => {
        const i = cl.members.indexOf(victim);
        const majority = cl.members.filter((m) => m !== victim);
        const before = await cl.waitLeader();
        await topo.isolate(i);
        const isolatedAt = performance.now();
        const from = await ag.now();
        console.log(`  (${label}) isolated ${victim.name} (${wasLeader ? "leader" : "follower"}, term ${before.term})`);
        const key = `part/${label}`;
        // From the first moment of the isolation until the heal, a linearizable get of `key` through the isolated
        // member every 100 ms: none may succeed (the majority side writes `key` meanwhile; an old leader that has not
        // noticed the partition yet must not answer from its stale state either).
        let healing = false;
        const probe = { sent: 0, failed: 0, okBeforeHeal: [] as string[], inFlight: [] as Promise<void>[] };
        const prober = (async () => {
          while (!healing) {
            probe.sent++;
            probe.inFlight.push(
              ag.request({ cmd: "get", endpoint: victim.endpoint, key, timeoutMs: 1000 }).then((r) => {
                if (r.error) probe.failed++;
                else if (!healing) probe.okBeforeHeal.push(JSON.stringify(r.value));
              }),
            );
            await sleep(100);
          }
        })();

        // The majority side has (or elects) a leader among itself.
        const elected = await cl.waitLeader({
          among: majority,
          notId: wasLeader ? victim.id : undefined,
          timeoutMs: 15000,
        });
        console.log(
          `  (${label}) majority leader ${elected.leader.name} (term ${elected.term}) agreed ` +
            `${(elected.at - isolatedAt).toFixed(0)} ms after the isolation`,
        );
        // ... and serves writes and linearizable reads through both of its members.
        let value = "";
        for (const m of majority) {
          value = `${label}-via-${m.name}`;
          const w = await ag.request({ cmd: "put", endpoint: m.endpoint, key, value, timeoutMs: 5000 });
          assert.ok(!w.error, `(${label}) put through ${m.name} on the majority side failed: ${w.error}`);
        }
        for (const m of majority) {
          const r = await ag.request({ cmd: "get", endpoint: m.endpoint, key, timeoutMs: 5000 });
          assert.ok(!r.error, `(${label}) linearizable get through ${m.name} failed: ${r.error}`);
          assert.equal(r.value, value, `(${label}) linearizable get through ${m.name}`);
        }
        // The isolated member refuses linearizable reads and writes; its serializable reads are stale.
        const probeStart = performance.now();
        const [w, r, s] = await Promise.all([
          ag.request({
            cmd: "put",
            endpoint: victim.endpoint,
            key: `${key}/isolated`,
            value: "x",
            timeoutMs: PROBE_TIMEOUT_MS,
          }),
          ag.request({ cmd: "get", endpoint: victim.endpoint, key, timeoutMs: PROBE_TIMEOUT_MS }),
          ag.request({ cmd: "get", endpoint: victim.endpoint, key, serializable: true, timeoutMs: PROBE_TIMEOUT_MS }),
        ]);
        assert.ok(w.error, `(${label}) a put through the isolated ${victim.name} succeeded: ${JSON.stringify(w)}`);
        assert.ok(
          r.error,
          `(${label}) a linearizable get through the isolated ${victim.name} succeeded: ${JSON.stringify(r)} ` +
            `(the majority side holds ${JSON.stringify(value)})`,
        );
        assert.ok(!s.error, `(${label}) serializable get on the isolated ${victim.name} failed: ${s.error}`);
        assert.equal(s.value, null, `(${label}) the isolated ${victim.name} cannot know ${key} yet`);
        console.log(
          `  (${label}) isolated ${victim.name}: put → ${w.error}; linearizable get → ${r.error}; ` +
            `serializable get → ${JSON.stringify(s.value)} (stale: the majority has ${JSON.stringify(value)}) ` +
            `[${(performance.now() - probeStart).toFixed(0)} ms]`,
        );
        // An isolated leader steps down (check-quorum).
        const st = await ag.status(victim.endpoint);
        if (wasLeader) {
          await until(
            `(${label}) the isolated ${victim.name} stops claiming leadership`,
            10000,
            async () => {
              const s = await ag.status(victim.endpoint);
              return s.leader !== victim.id || `it still names itself leader (term ${s.raftTerm})`;
            },
          );
          console.log(
            `  (${label}) isolated ${victim.name} no longer claims to lead ` +
              `(${(performance.now() - isolatedAt).toFixed(0)} ms after the isolation)`,
          );
        } else {
          console.log(`  (${label}) isolated ${victim.name} reports leader ${st.leader} term ${st.raftTerm}`);
        }
        const left = HOLD_MS - (performance.now() - isolatedAt);
        if (left > 0) await sleep(left);

        healing = true;
        const to = await ag.now();
        await topo.heal(i);
        const healedAt = performance.now();
        await prober;
        await Promise.all(probe.inFlight);
        console.log(
          `  (${label}) linearizable gets through the isolated ${victim.name} every 100 ms: ${probe.sent} sent, ` +
            `${probe.failed} failed, ${probe.okBeforeHeal.length} succeeded before the heal`,
        );
        assert.deepEqual(
          probe.okBeforeHeal,
          [],
          `(${label}) linearizable gets through the isolated ${victim.name} succeeded during the partition`,
        );
        windows.push({ label, endpoint: victim.endpoint, from, to });
        // Healed: it follows the cluster's leader again and catches up.
        const rejoined = await until(`(${label}) ${victim.name} rejoins`, 30000, async () => {
          const all = await cl.waitLeader({ timeoutMs: 1000 });
          const r = await ag.request({
            cmd: "get",
            endpoint: victim.endpoint,
            key,
            serializable: true,
            timeoutMs: 1000,
          });
          if (r.error) return r.error;
          return r.value === value || `serializable read ${JSON.stringify(r.value)}; leader ${all.leader.name}`;
        });
        const after = await cl.waitLeader();
        const vs = await ag.status(victim.endpoint);
        assert.notEqual(vs.leader, "0");
        // Rejoining disturbs nobody: pre-vote keeps the old leader from deposing the new one, and the leader stays
        // responsive while the member answers everything buffered for it during the partition.
        assert.equal(
          `${after.leader.name} term ${after.term}`,
          `${elected.leader.name} term ${elected.term}`,
          `(${label}) the heal changed the leader`,
        );
        console.log(
          `  (${label}) healed: ${victim.name} follows ${after.leader.name} (term ${after.term}) and read its own ` +
            `copy of ${key} ${rejoined.toFixed(0)} ms after the heal (partition lasted ` +
            `${(healedAt - isolatedAt).toFixed(0)} ms)`,
        );
        // It serves linearizable reads again.
        await until(`(${label}) linearizable get through ${victim.name} after the heal`, 10000, async () => {
          const r = await ag.request({ cmd: "get", endpoint: victim.endpoint, key, timeoutMs: 2000 });
          return r.error ? r.error : r.value === value || `read ${JSON.stringify(r.value)}`;
        });
      };

      const a = await t.step("(a) isolate the leader", async () => {
        const { leader } = await cl.waitLeader();
        await partition("a", leader, true);
      });
      if (a) {
        await t.step("(b) isolate a follower", async () => {
          const { leader } = await cl.waitLeader();
          const follower = cl.members.find((m) => m !== leader)!;
          await partition("b", follower, false);
        });
      }

      await sleep(1000);
      const { ops, summary } = await ag.stopWorkload();
      workloadRunning = false;
      await t.step("(c) the history recorded against all members throughout is linearizable", () => {
        assert.ok(ops.length > 200, `only ${ops.length} operations recorded`);
        const r = checkAndReport("  (c)", ops, summary);
        // Per member: how the clients pinned to it fared.
        for (const m of cl.members) {
          const mine = ops.filter((o) => o.endpoint === m.endpoint);
          console.log(
            `  (c) ${m.name}: ${mine.length} ops, ${mine.filter((o) => o.outcome === "ok").length} ok, ` +
              `${mine.filter((o) => o.outcome === "unknown").length} unknown`,
          );
        }
        // No operation sent to an isolated member after the isolation succeeded before the heal.
        for (const w of windows) {
          const inside = ops.filter((o: RecordedOp) => o.endpoint === w.endpoint && o.invoke > w.from);
          const bad = inside.filter((o) => o.outcome === "ok" && o.return < w.to);
          console.log(
            `  (c) (${w.label}) ops sent to the isolated member during the partition: ` +
              `${inside.filter((o) => o.invoke < w.to).length}, succeeded before the heal: ${bad.length}`,
          );
          assert.deepEqual(
            bad.slice(0, 5),
            [],
            `(${w.label}) ${bad.length} operations on the isolated member succeeded during the partition`,
          );
        }
        assert.equal(r.ok, true, r.explanation ?? r.reason ?? "");
      });
    } catch (e) {
      if (c) console.log(c.logs(4000));
      if (agent) console.log(`client agent stderr:\n${agent.stderr().slice(-2000)}`);
      throw e;
    } finally {
      if (workloadRunning) await agent?.stopWorkload().catch(() => {});
      await c?.destroy();
      await agent?.close();
      await topo.destroy();
    }
  },
});
