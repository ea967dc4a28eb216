/**
 * The operator's view of the tutorial cluster (3 primaries + 1 secondary, real processes): the dashboard JSON and
 * /apis/v2/metrics of the admin API (prometheus_client and promtool), and the dashboard page itself, one page load in
 * headless Chromium driven over the DevTools protocol: the four members and the leader, an object's per-member rows
 * with request and error rates after known traffic, and a leader change after the leader is SIGKILLed, all updating
 * in place (screenshots of each stage are written under a temp dir; its path is printed).
 */
import assert from "node:assert/strict";
import { freePorts } from "./lib/ports.ts";
import {
  egctlOk,
  type Member,
  memberPorts,
  memberTest,
  primaryArgs,
  startMember,
  waitFor,
} from "./easegress_harness.ts";
import { Browser } from "./lib/chromium.ts";
import type { ClusterView } from "../server/dashboard/view.ts";
import { TrafficMetrics } from "../server/metrics/traffic.ts";
import { parseMetrics, promtoolCheck, sampleValue } from "./lib/prometheus.ts";

async function view(addr: string): Promise<ClusterView> {
  const r = await fetch(`http://${addr}/apis/v2/dashboard/cluster`);
  assert.equal(r.status, 200);
  return await r.json();
}

/** The member rows the page shows now: [name, raft state, healthy]. */
function pageMembers(b: Browser): Promise<[string, string, string][]> {
  return b.evaluate(
    `[...document.querySelectorAll("#members tr")].map((tr) => [tr.dataset.member, tr.dataset.state, tr.dataset.healthy])`,
  );
}

/** The rows the page shows now for object `name`, one per member: Kind, Name, Member, Status, Requests, Req/s (1m),
 * Errors/s (1m), Error rate. */
function pageObject(b: Browser, name: string): Promise<string[][]> {
  return b.evaluate(
    `[...document.querySelectorAll('#objects tr[data-object="${name}"]')].map((tr) => [...tr.cells].map((td) => td.textContent))`,
  );
}

/** An HTTPServer on `port` whose Pipeline's Mock answers /fail with 503 and everything else with 200. */
function mockYaml(port: number): string {
  return `kind: HTTPServer
name: dash-demo
port: ${port}
rules:
- paths:
  - pathPrefix: /
    backend: dash-mock
---
kind: Pipeline
name: dash-mock
flow:
- filter: mock
filters:
- name: mock
  kind: Mock
  rules:
  - match: {pathPrefix: /fail}
    code: 503
    body: down
  - match: {pathPrefix: /}
    code: 200
    body: ok
`;
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
    // promtool: the secondary's text (the gateway's families) is clean; the primary's only adds the lint complaints
    // promtool makes about etcd's own names (see metrics_test.ts)
    assert.deepEqual(await promtoolCheck(sm), { code: 0, complaints: [] });
    const pc = await promtoolCheck(await (await fetch(`http://${primaries[0].apiAddr}/apis/v2/metrics`)).text());
    assert.ok(pc.code === 0 || pc.code === 3, pc.complaints.join("\n"));
    assert.ok(pc.complaints.every((l) => l.startsWith("etcd_")), pc.complaints.join("\n"));

    // the page, served by the secondary, in one Chromium page from here on: every change below shows without a reload
    const shots = await Deno.makeTempDir({ prefix: "dashboard-shots-" });
    const browser = await Browser.open();
    try {
      await browser.navigate(`http://${secondary.apiAddr}/dashboard`);
      await waitFor("the page listing four members", async () => (await pageMembers(browser)).length === 4, 15000);
      await browser.evaluate("window.sameLoad = true"); // gone if the page were loaded again
      let rows = await pageMembers(browser);
      assert.deepEqual(rows.map(([name]) => name), ["machine-1", "machine-2", "machine-3", "machine-4"]);
      assert.deepEqual(rows.find(([name]) => name === leaderName), [leaderName, "Leader", "true"]);
      assert.ok(rows.every(([, , healthy]) => healthy === "true"));
      assert.equal(await browser.evaluate(`document.getElementById("leader").textContent`), leaderName);
      await browser.screenshot(`${shots}/before.png`);

      // an object with traffic: its row per member, with request and error rates, appears on the open page
      assert.deepEqual(await pageObject(browser, "dash-demo"), []);
      const [port] = await freePorts(1);
      const file = `${shots}/dash-demo.yaml`;
      await Deno.writeTextFile(file, mockYaml(port));
      await egctlOk(["--server", primaries[1].apiAddr, "apply", "-f", file]);
      // the four members share 127.0.0.1: one of them gets the port, the others report the listen error
      // every response counts as a request of the member that serves the port, those ≥ 400 as errors
      let requests = 0, errors = 0;
      const get = async (path: string) => {
        const r = await fetch(`http://127.0.0.1:${port}${path}`).catch(() => null);
        await r?.body?.cancel();
        if (r) requests++;
        if (r && r.status >= 400) errors++;
        return r?.status ?? 0;
      };
      await waitFor("dash-demo serving", async () => (await get("/ok")) === 200, 15000);
      for (let i = 0; i < 20; i++) assert.equal(await get(`/ok/${i}`), 200);
      for (let i = 0; i < 10; i++) assert.equal(await get(`/fail/${i}`), 503);
      let demo: string[][] = [];
      await waitFor("dash-demo's traffic on the page", async () => {
        demo = await pageObject(browser, "dash-demo");
        return demo.length === 4 && demo.some((r) => r[4] === String(requests));
      }, 20000).catch((err) => {
        throw new Error(`${err.message}: ${requests} requests, rows ${JSON.stringify(demo)}`);
      });
      assert.deepEqual(demo.map((r) => r[2]), ["machine-1", "machine-2", "machine-3", "machine-4"]);
      assert.deepEqual(demo[0].slice(0, 2), ["HTTPServer", "dash-demo"]);
      const serving = demo.filter((r) => r[3] === "running");
      assert.equal(serving.length, 1, JSON.stringify(demo));
      const [, , , , shown, rps, eps, errRate] = serving[0];
      assert.equal(shown, String(requests));
      assert.ok(Number(rps) > 0 && Number(eps) > 0, `rates ${rps} ${eps}`);
      // the 1-minute rates' ratio: all the traffic came within one status period
      const expected = 100 * errors / requests;
      assert.ok(Math.abs(parseFloat(errRate) - expected) < 1, `error rate ${errRate}, ${expected} expected`);
      assert.ok(demo.filter((r) => r !== serving[0]).every((r) => r[3] === "error" && r[4] === "0"));
      // the same traffic in the serving member's /apis/v2/metrics: its count, errors and latency histogram
      const server = [...primaries, secondary].find((m) => m.name === serving[0][2])!;
      const gm = await parseMetrics(await (await fetch(`http://${server.apiAddr}/apis/v2/metrics`)).text());
      const route = { name: "dash-demo", instanceName: server.name, backend: "dash-mock" };
      assert.equal(sampleValue(gm, "httpserver_total_requests_total", route), requests);
      assert.equal(sampleValue(gm, "httpserver_total_error_requests_total", route), errors);
      assert.equal(sampleValue(gm, "httpserver_requests_duration_count", route), requests);
      assert.equal(sampleValue(gm, "httpserver_requests_duration_bucket", { ...route, le: "+Inf" }), requests);
      assert.equal(sampleValue(gm, "httpserver_health", { name: "dash-demo", instanceName: server.name }), 1);
      await browser.screenshot(`${shots}/traffic.png`);

      // SIGKILL the leader: the open page shows another Leader and the killed member down
      const idx = primaries.findIndex((m: Member) => m.name === leaderName);
      await primaries[idx].kill();
      await waitFor("the page showing a new leader and the old one down", async () => {
        rows = await pageMembers(browser);
        const leaders = rows.filter(([, state]) => state === "Leader").map(([name]) => name);
        const old = rows.find(([name]) => name === leaderName);
        return leaders.length === 1 && leaders[0] !== leaderName && old?.[2] === "false";
      }, 40000);
      assert.deepEqual(rows.find(([name]) => name === leaderName), [leaderName, "Offline", "false"]);
      assert.notEqual(await browser.evaluate(`document.getElementById("leader").textContent`), leaderName);
      assert.equal(await browser.evaluate("window.sameLoad"), true, "the page was not reloaded");
      await browser.screenshot(`${shots}/after-leader-killed.png`);

      // a surviving primary sees at once, by its peer connections, that the old leader is unreachable
      const survivor = primaries[(idx + 1) % 3];
      await browser.navigate(`http://${survivor.apiAddr}/`);
      await waitFor("the survivor's page", async () => {
        rows = await pageMembers(browser);
        return rows.find(([name]) => name === leaderName)?.[1] === "Unreachable";
      }, 15000);
      assert.deepEqual(rows.find(([name]) => name === leaderName), [leaderName, "Unreachable", "false"]);
    } finally {
      await browser.close();
    }
    for (const f of ["before.png", "traffic.png", "after-leader-killed.png"]) {
      assert.ok((await Deno.stat(`${shots}/${f}`)).size > 10_000, `${f} is an image`);
    }
    console.log(`dashboard screenshots: ${shots}/{before,traffic,after-leader-killed}.png`);
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
