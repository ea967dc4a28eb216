/**
 * /metrics speaks etcd 3.4's dialect: after known traffic on a real 3-member cluster, the text scraped from a client
 * URL and a peer URL parses with Prometheus's own tools (promtool, python3-prometheus-client) and holds the values
 * that traffic must have produced, under etcd's names, types, labels and buckets.
 */
import nodeAssert from "node:assert/strict";

const assert: (v: unknown, msg?: string) => asserts v = (v, msg) => nodeAssert.ok(v, msg ?? "assertion failed");
const assertEquals = <T>(a: T, b: T, msg?: string) => nodeAssert.deepStrictEqual(a, b, msg ?? "not equal");
import { Cluster } from "./lib/cluster.ts";
import { etcdctlOk } from "./lib/etcdctl.ts";
import { type ParsedMetrics, parseMetrics, promtoolCheck, sampleValue } from "./lib/prometheus.ts";
import { startServer } from "./lib/server.ts";
import { exponentialBuckets, Registry } from "../server/metrics/registry.ts";
import { NodeMetrics, SLOW_APPLY_MS } from "../server/metrics/node.ts";

async function scrape(url: string): Promise<string> {
  const r = await fetch(`${url}/metrics`);
  assertEquals(r.status, 200);
  assert(r.headers.get("content-type")!.startsWith("text/plain; version=0.0.4"));
  return await r.text();
}

/** The real etcd 3.4's own /metrics after a few puts: its promtool lint complaints (its gauges named *_total) and
 * its parsed families. */
async function etcdsOwn(): Promise<{ complaints: string[]; parsed: ParsedMetrics }> {
  const etcd = await startServer({ binary: "/usr/bin/etcd" });
  try {
    for (let i = 0; i < 3; i++) await etcdctlOk(etcd.endpoint, ["put", `metrics-key-${i}`, `v${i}`]);
    const text = await scrape(etcd.clientUrl);
    return { complaints: (await promtoolCheck(text)).complaints, parsed: await parseMetrics(text) };
  } finally {
    await etcd.kill();
    await Deno.remove(etcd.dataDir, { recursive: true });
  }
}

/** A family's shape as a dashboard sees it: its type, the label names of its series and its bucket bounds. */
function shape(p: ParsedMetrics, family: string): { type: string; labels: string[]; buckets: number[] } {
  const samples = p.samples.filter((s) => s.name === family || s.name.startsWith(`${family}_`));
  const labels = new Set(samples.map((s) => Object.keys(s.labels).filter((k) => k !== "le").sort().join(",")));
  const buckets = new Set(
    samples.filter((s) => s.labels.le !== undefined && s.labels.le !== "+Inf").map((s) => s.labels.le),
  );
  return {
    type: p.types[family],
    labels: [...labels].sort(),
    buckets: [...buckets].map(Number).sort((a, b) => a - b),
  };
}

Deno.test("registry: cumulative buckets, +Inf, sum and count; escaped label values; 0 for unset series", async () => {
  const r = new Registry();
  const h = r.histogram("x_seconds", "h", exponentialBuckets(0.001, 2, 3)).labels(); // 0.001 0.002 0.004
  for (const v of [0.0005, 0.001, 0.003, 9]) h.observe(v);
  r.counter("c_total", "help with \\ and\nnewline", ["k"]).labels('a"b\\c\nd').inc(2);
  r.gauge("g", "g");
  const text = r.render();
  for (
    const line of [
      'x_seconds_bucket{le="0.001"} 2',
      'x_seconds_bucket{le="0.002"} 2',
      'x_seconds_bucket{le="0.004"} 3',
      'x_seconds_bucket{le="+Inf"} 4',
      "x_seconds_count 4",
      'c_total{k="a\\"b\\\\c\\nd"} 2',
      "g 0",
    ]
  ) assert(text.split("\n").includes(line), `missing ${line} in\n${text}`);
  const parsed = await parseMetrics(text);
  assertEquals(sampleValue(parsed, "c_total", { k: 'a"b\\c\nd' }), 2);
  assertEquals(sampleValue(parsed, "x_seconds_sum"), 9.0045);
  assertEquals((await promtoolCheck(text)).code, 0);
});

Deno.test("node metrics: an apply batch over 100 ms is a slow apply, and every batch is a backend commit", () => {
  const m = new NodeMetrics();
  m.batchApplied(3);
  m.batchApplied(SLOW_APPLY_MS + 1);
  assertEquals(m.slowApplies.value, 1);
  assertEquals(m.backendCommit.count, 2);
});

Deno.test({
  name:
    "a 3-member cluster's /metrics after N puts: etcd's series and values, parsed by promtool and prometheus_client",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const c = await Cluster.start({ size: 3 });
    try {
      const leaderOf = async () => {
        for (const m of c.members) {
          if ((await scrape(m.clientUrl)).includes("\netcd_server_is_leader 1\n")) return m;
        }
        throw new Error("no leader");
      };
      const leader = await leaderOf();
      const before = await parseMetrics(await scrape(leader.clientUrl));
      const N = 25;
      for (let i = 0; i < N; i++) await etcdctlOk(leader.endpoint, ["put", `metrics-key-${i}`, `v${i}`]);
      await new Promise((r) => setTimeout(r, 300)); // a few heartbeats for the round-trip times
      const text = await scrape(leader.clientUrl);
      const after = await parseMetrics(text);

      // types and buckets as etcd 3.4 declares them
      assertEquals(after.types["etcd_server_has_leader"], "gauge");
      assertEquals(after.types["etcd_server_leader_changes_seen"], "counter");
      assertEquals(after.types["etcd_disk_wal_fsync_duration_seconds"], "histogram");
      assertEquals(after.types["etcd_network_peer_round_trip_time_seconds"], "histogram");
      assertEquals(after.types["grpc_server_handled"], "counter");
      const les = (name: string) =>
        after.samples.filter((s) => s.name === `${name}_bucket` && s.labels.le !== "+Inf").map((s) =>
          Number(s.labels.le)
        );
      assertEquals(les("etcd_disk_wal_fsync_duration_seconds"), exponentialBuckets(0.001, 2, 14));
      assertEquals(les("etcd_disk_backend_commit_duration_seconds"), exponentialBuckets(0.001, 2, 14));

      // values after N puts through the leader
      assertEquals(sampleValue(after, "etcd_server_has_leader"), 1);
      assertEquals(sampleValue(after, "etcd_server_is_leader"), 1);
      assert(sampleValue(after, "etcd_server_leader_changes_seen_total") >= 1);
      const committed = sampleValue(after, "etcd_server_proposals_committed_total");
      assert(committed - sampleValue(before, "etcd_server_proposals_committed_total") >= N, "committed grew by N");
      assert(
        sampleValue(after, "etcd_server_proposals_applied_total") -
            sampleValue(before, "etcd_server_proposals_applied_total") >= N,
      );
      assertEquals(sampleValue(after, "etcd_server_proposals_pending"), 0);
      assertEquals(sampleValue(after, "etcd_server_proposals_failed_total"), 0);
      const put = { grpc_type: "unary", grpc_service: "etcdserverpb.KV", grpc_method: "Put" };
      assertEquals(sampleValue(after, "grpc_server_handled_total", { ...put, grpc_code: "OK" }), N);
      assertEquals(sampleValue(after, "grpc_server_started_total", put), N);
      assertEquals(sampleValue(after, "grpc_server_handled_total", { ...put, grpc_code: "Unavailable" }), 0);
      // each put request carries its key and value; each response at least its header
      const bytesIn = sampleValue(after, "etcd_network_client_grpc_received_bytes_total") -
        sampleValue(before, "etcd_network_client_grpc_received_bytes_total");
      assert(bytesIn >= N * "metrics-key-0v0".length, `received ${bytesIn} bytes`);
      assert(
        sampleValue(after, "etcd_network_client_grpc_sent_bytes_total") >
          sampleValue(before, "etcd_network_client_grpc_sent_bytes_total") + N * 5,
      );
      assertEquals(sampleValue(after, "etcd_debugging_mvcc_keys_total"), N);
      assert(sampleValue(after, "etcd_mvcc_db_total_size_in_bytes") > 0);
      const fsyncs = sampleValue(after, "etcd_disk_wal_fsync_duration_seconds_count") -
        sampleValue(before, "etcd_disk_wal_fsync_duration_seconds_count");
      assert(fsyncs >= 1 && fsyncs <= N + 10, `fsyncs ${fsyncs}`);
      assert(sampleValue(after, "etcd_disk_backend_commit_duration_seconds_count") > 0);
      assert(sampleValue(after, "process_resident_memory_bytes") > 10e6);
      assert(sampleValue(after, "process_open_fds") > 3);
      assert(Math.abs(sampleValue(after, "process_start_time_seconds") - Date.now() / 1000) < 600);
      // both followers: bytes each way and round-trip times, labelled by hexadecimal member ID
      for (const m of c.members) {
        if (m === leader) continue;
        const hex = BigInt(m.id).toString(16);
        assert(sampleValue(after, "etcd_network_peer_sent_bytes_total", { To: hex }) > 0, `sent to ${hex}`);
        assertEquals(sampleValue(after, "etcd_network_active_peers", { Remote: hex }), 1);
        assert(sampleValue(after, "etcd_network_peer_received_bytes_total", { From: hex }) > 0, `received from ${hex}`);
        const rtts = sampleValue(after, "etcd_network_peer_round_trip_time_seconds_count", { To: hex });
        assert(rtts > 0, `round trips to ${hex}`);
        assert(sampleValue(after, "etcd_network_peer_round_trip_time_seconds_sum", { To: hex }) / rtts < 1);
      }

      // a follower serves the same families on its peer URL; it has applied the N puts too
      const follower = c.members.find((m) => m !== leader)!;
      const peerSide = await parseMetrics(await scrape(follower.peerUrl));
      assertEquals(sampleValue(peerSide, "etcd_server_is_leader"), 0);
      assertEquals(sampleValue(peerSide, "etcd_debugging_mvcc_keys_total"), N);

      // promtool parses it; its only lint complaints are the ones it makes about etcd's own names
      const ours = await promtoolCheck(text);
      assert(ours.code === 0 || ours.code === 3, `promtool exit ${ours.code}: ${ours.complaints.join("\n")}`);
      const etcd = await etcdsOwn();
      for (const line of ours.complaints) {
        assert(etcd.complaints.includes(line), `promtool: ${line} (etcd has no such complaint)`);
      }

      // every family the real etcd 3.4.23 also exports has its type, label names and buckets
      const common = Object.keys(after.types).filter((f) => f in etcd.parsed.types);
      for (const f of common) assertEquals(shape(after, f), shape(etcd.parsed, f), `${f} differs from etcd's`);
      for (
        const f of [
          "etcd_server_has_leader",
          "etcd_server_leader_changes_seen",
          "etcd_server_proposals_committed_total",
          "etcd_server_proposals_applied_total",
          "etcd_server_proposals_pending",
          "etcd_server_proposals_failed",
          "etcd_disk_wal_fsync_duration_seconds",
          "etcd_disk_backend_commit_duration_seconds",
          "etcd_mvcc_db_total_size_in_bytes",
          "etcd_debugging_mvcc_keys_total",
          "etcd_server_slow_apply",
          "grpc_server_handled",
          "grpc_server_started",
          "process_cpu_seconds",
          "process_resident_memory_bytes",
          "process_open_fds",
        ]
      ) assert(common.includes(f), `${f} compared with etcd's`);
      // a single etcd has no peers; these are the shapes of a 3-member etcd 3.4.23's peer series
      assertEquals(shape(after, "etcd_network_peer_round_trip_time_seconds"), {
        type: "histogram",
        labels: ["To"],
        buckets: exponentialBuckets(0.0001, 2, 16),
      });
      assertEquals(shape(after, "etcd_network_peer_sent_bytes").labels, ["To"]);
      assertEquals(shape(after, "etcd_network_peer_received_bytes").labels, ["From"]);
      // and the same label values on the gRPC series of every KV, Watch and Lease method etcd has
      const methods = (p: ParsedMetrics) =>
        new Set(
          p.samples.filter((s) => s.name === "grpc_server_handled_total").map((s) =>
            `${s.labels.grpc_type} ${s.labels.grpc_service} ${s.labels.grpc_method} ${s.labels.grpc_code}`
          ),
        );
      const oursMethods = methods(after);
      for (const m of methods(etcd.parsed)) assert(oursMethods.has(m), `grpc_server_handled_total{${m}} missing`);
    } finally {
      await c.destroy();
    }
  },
});
