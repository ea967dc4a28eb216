/**
 * The operator's view of the tutorial cluster (3 primaries + 1 secondary, real processes): the dashboard JSON and
 * /apis/v2/metrics of the admin API, and the dashboard page itself rendered by headless Chromium before and after
 * the leader is killed (a screenshot of each is written under a temp dir; its path is printed).
 */
import assert from "node:assert/strict";
import { freePorts } from "./lib/ports.ts";
import { type Member, memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import type { ClusterView } from "../server/dashboard/view.ts";
import { TrafficMetrics } from "../server/metrics/traffic.ts";
import { parseMetrics, sampleValue } from "./lib/prometheus.ts";

const CHROMIUM = "/usr/bin/chromium";

async function view(addr: string): Promise<ClusterView> {
  const r = await fetch(`http://${addr}/apis/v2/dashboard/cluster`);
  assert.equal(r.status, 200);
  return await r.json();
}

/** Runs headless Chromium on `url` with a fresh profile; returns what it printed (the DOM with `--dump-dom`). */
async function chromium(url: string, args: string[]): Promise<string> {
  const profile = await Deno.makeTempDir({ prefix: "chromium-profile-" });
  try {
    const out = await new Deno.Command(CHROMIUM, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${profile}`,
        "--window-size=1280,720",
        // let the page's first polls run (virtual time waits for its fetches)
        "--virtual-time-budget=3000",
        ...args,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stdout);
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}

/** The member rows of a dumped dashboard: name → [raft state, healthy]. */
function memberRows(dom: string): Map<string, [string, string]> {
  const rows = new Map<string, [string, string]>();
  for (const m of dom.matchAll(/<tr data-member="([^"]+)" data-state="([^"]+)" data-healthy="([^"]+)">/g)) {
    rows.set(m[1], [m[2], m[3]]);
  }
  return rows;
}

Deno.test("gateway metrics: Easegress's httpserver_* series after known requests, parsed by prometheus_client", async () => {
  const t = new TrafficMetrics();
  t.member = { clusterName: "c", clusterRole: "primary", instanceName: "m1" };
  const route = t.httpServer("demo").route("Ordered", "demo-0");
  t.httpServer("demo").setHealthy(true);
  for (let i = 0; i < 10; i++) route.record(i < 7 ? 200 : 503, 30 + i, 100, 2000);
  const m = await parseMetrics(t.registry.render());
  const labels = { name: "demo", kind: "HTTPServer", instanceName: "m1", routerKind: "Ordered", backend: "demo-0" };
  // prometheus_client names a counter's sample <family>_total
  assert.equal(sampleValue(m, "httpserver_total_requests_total", labels), 10);
  assert.equal(sampleValue(m, "httpserver_total_error_requests_total", labels), 3);
  assert.equal(sampleValue(m, "httpserver_requests_duration_bucket", { ...labels, le: "10" }), 0);
  assert.equal(sampleValue(m, "httpserver_requests_duration_bucket", { ...labels, le: "50" }), 10);
  assert.equal(sampleValue(m, "httpserver_requests_duration_sum", labels), 345);
  assert.equal(sampleValue(m, "httpserver_health", { name: "demo" }), 1);
});

memberTest(
  "dashboard: the tutorial's four members, live, and a leader change after the leader is killed",
  async (procs) => {
    const ps = await memberPorts(3);
    const [a4] = await freePorts(1);
    const initial = ps.map((p, i) => `machine-${i + 1}=http://127.0.0.1:${p.peer}`).join(",");
    const primaries = await Promise.all(
      ps.map((p, i) =>
        startMember(
          `machine-${i + 1}`,
          primaryArgs(`machine-${i + 1}`, p, ["--cluster-name", "dash-test", "--initial-cluster", initial]),
        )
      ),
    );
    procs.push(...primaries);
    const secondary = await startMember("machine-4", [
      "--name",
      "machine-4",
      "--cluster-name",
      "dash-test",
      "--cluster-role",
      "secondary",
      "--api-addr",
      `127.0.0.1:${a4}`,
      "--primary-listen-peer-urls",
      `http://127.0.0.1:${ps[0].peer}`,
      "--state-flag",
      "existing",
    ]);
    procs.push(secondary);
    await waitFor("four members in the view", async () => (await view(secondary.apiAddr)).members.length === 4, 30000);

    // the JSON: three primaries (one Leader), one secondary, all healthy, the leader named
    const v = await view(primaries[0].apiAddr);
    assert.deepEqual(v.members.map((m) => [m.name, m.role]), [
      ["machine-1", "primary"],
      ["machine-2", "primary"],
      ["machine-3", "primary"],
      ["machine-4", "secondary"],
    ]);
    assert.equal(v.members.filter((m) => m.raftState === "Leader").length, 1);
    assert.equal(v.members.filter((m) => m.raftState === "Follower").length, 2);
    assert.equal(v.members[3].raftState, "-");
    assert.ok(v.members.every((m) => m.healthy && m.heartbeatAgeMs >= 0 && m.heartbeatAgeMs < 12000));
    const leaderName = v.members.find((m) => m.raftState === "Leader")!.name;
    assert.equal(v.leader?.name, leaderName);
    assert.ok(v.objects.length >= 4, "the system controllers are listed"); // written at start-up by every member

    // /apis/v2/metrics: the store's etcd metrics on a primary (with the gateway's families), parsed by prometheus_client
    const pm = await parseMetrics(await (await fetch(`http://${primaries[0].apiAddr}/apis/v2/metrics`)).text());
    assert.equal(sampleValue(pm, "etcd_server_has_leader"), 1);
    assert.ok(sampleValue(pm, "etcd_server_proposals_committed_total") > 0);
    const sm = await (await fetch(`http://${secondary.apiAddr}/apis/v2/metrics`)).text();
    assert.ok(sm.includes("# TYPE httpserver_total_requests counter") && !sm.includes("etcd_server_has_leader"));
    await parseMetrics(sm);

    // the page, served by the secondary, rendered by Chromium
    const shots = await Deno.makeTempDir({ prefix: "dashboard-shots-" });
    const url = `http://${secondary.apiAddr}/dashboard`;
    let rows = memberRows(await chromium(url, ["--dump-dom"]));
    assert.deepEqual([...rows.keys()], ["machine-1", "machine-2", "machine-3", "machine-4"]);
    assert.deepEqual(rows.get(leaderName), ["Leader", "true"]);
    assert.ok([...rows.values()].every(([, healthy]) => healthy === "true"));
    await chromium(url, [`--screenshot=${shots}/before.png`]);

    // SIGKILL the leader: a survivor's page shows another Leader and the killed member as unreachable
    const idx = primaries.findIndex((m: Member) => m.name === leaderName);
    await primaries[idx].kill();
    const survivor = primaries[(idx + 1) % 3];
    await waitFor("a new leader", async () => {
      const w = await view(survivor.apiAddr).catch(() => undefined);
      return !!w?.leader && w.leader.name !== leaderName;
    }, 30000);
    const surl = `http://${survivor.apiAddr}/`;
    rows = memberRows(await chromium(surl, ["--dump-dom"]));
    const leaders = [...rows].filter(([, [state]]) => state === "Leader").map(([name]) => name);
    assert.equal(leaders.length, 1);
    assert.notEqual(leaders[0], leaderName);
    assert.deepEqual(rows.get(leaderName), ["Unreachable", "false"]);
    await chromium(surl, [`--screenshot=${shots}/after-leader-killed.png`]);
    for (const f of ["before.png", "after-leader-killed.png"]) {
      assert.ok((await Deno.stat(`${shots}/${f}`)).size > 10_000, `${f} is an image`);
    }
    console.log(`dashboard screenshots: ${shots}/before.png ${shots}/after-leader-killed.png`);
  },
);

memberTest(
  "dashboard and /apis/v2/metrics ask for the member's basic auth like the rest of the admin API",
  async (procs) => {
    const [p] = await memberPorts(1);
    const home = await Deno.makeTempDir({ prefix: "eg-dash-auth-" });
    const peer = `http://127.0.0.1:${p.peer}`, client = `http://127.0.0.1:${p.client}`;
    await Deno.writeTextFile(
      `${home}/eg.yaml`,
      [
        "name: machine-1",
        "cluster-name: dash-auth",
        "cluster-role: primary",
        `api-addr: 127.0.0.1:${p.api}`,
        "basic-auth:",
        "  admin: s3cret",
        "cluster:",
        `  listen-peer-urls: [${peer}]`,
        `  listen-client-urls: [${client}]`,
        `  advertise-client-urls: [${client}]`,
        `  initial-advertise-peer-urls: [${peer}]`,
        "  initial-cluster:",
        `    machine-1: ${peer}`,
        "",
      ].join("\n"),
    );
    const m = await startMember("machine-1", ["-f", `${home}/eg.yaml`], { home, apiAddr: `127.0.0.1:${p.api}` });
    procs.push(m);
    const auth = { Authorization: `Basic ${btoa("admin:s3cret")}` };
    for (const path of ["/", "/dashboard", "/apis/v2/metrics", "/apis/v2/dashboard/cluster"]) {
      const denied = await fetch(`http://${m.apiAddr}${path}`);
      await denied.body?.cancel();
      assert.equal(denied.status, 401, path);
      const ok = await fetch(`http://${m.apiAddr}${path}`, { headers: auth });
      await ok.body?.cancel();
      assert.equal(ok.status, 200, path);
    }
  },
);
