/**
 * The gateway and its store through real member processes (issue 12, "Objects run on every member" and "Status"): one
 * primary and one secondary on loopback share one HTTPServer port, so the test makes the secondary the member that
 * holds it (the primary's listener fails and retries, as Easegress's does). Then: the status of every object of every
 * member rewritten every 5 s under /status/objects/eg-traffic-default/<object>/<member> (read with etcdctl) with the
 * traffic the test sent; `egctl get`/`describe` with one status entry per member; SIGKILL of the only primary while
 * the secondary serves with zero failures; and, after the primary restarts, a change made then (and a compaction to
 * the latest revision) reaches the secondary's data plane.
 */
import assert from "node:assert/strict";

import { egctlOk, memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

const serverYaml = (port: number) => `
kind: HTTPServer
name: store-server
port: ${port}
keepAlive: true
https: false
rules:
- paths:
  - path: /only-post
    methods: [POST]
    backend: store-pipeline
  - pathPrefix: /p
    backend: store-pipeline
`;

const pipelineYaml = (url: string) => `
name: store-pipeline
kind: Pipeline
flow:
- filter: proxy
filters:
- name: proxy
  kind: Proxy
  pools:
  - servers: [{url: ${url}}]
`;

/** Runs etcdctl against `endpoint`; returns stdout, throws unless it exits 0. */
async function etcdctl(endpoint: string, args: string[]): Promise<string> {
  const r = await new Deno.Command("etcdctl", {
    args: ["--endpoints", endpoint, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(" ")}: ${dec.decode(r.stderr)}`);
  return dec.decode(r.stdout);
}

/** Occurrences of the HTTPServer's listen-failure log line in a member's output. */
const listenFailures = (out: string) => out.split("httpserver store-server: listen tcp").length - 1;

memberTest(
  "gateway store: status every 5 s per member, describe per member, serving with every primary down, re-read after reconnect",
  async (procs) => {
    const [p1] = await memberPorts(1);
    const [httpPort, secApi] = await freePorts(2);
    const endpoint = `http://127.0.0.1:${p1.client}`;
    const primary = await startMember("gs-primary", primaryArgs("gs-primary", p1, ["--cluster-name", "gs"]));
    procs.push(primary);
    const b1 = await startBackend("b1");
    const b2 = await startBackend("b2");
    // the test holds the HTTPServer's port so that neither member gets it yet
    let holder: Deno.Listener | null = Deno.listen({ hostname: "0.0.0.0", port: httpPort });
    try {
      await putObject(primary.apiAddr, pipelineYaml(b1.url));
      await putObject(primary.apiAddr, serverYaml(httpPort));
      await waitFor("primary's listen failure", () => listenFailures(primary.output()) >= 1);
      const secondary = await startMember("gs-secondary", [
        "--name",
        "gs-secondary",
        "--cluster-name",
        "gs",
        "--cluster-role",
        "secondary",
        "--api-addr",
        `127.0.0.1:${secApi}`,
        "--primary-listen-peer-urls",
        `http://127.0.0.1:${p1.peer}`,
        "--cluster-request-timeout",
        "3s",
      ]);
      procs.push(secondary);
      await waitFor("secondary's listen failure", () => listenFailures(secondary.output()) >= 1);
      // release the port right after the primary's next retry failed: the secondary's retry (10 s after its own
      // failure, which came before) is the next one
      const seen = listenFailures(primary.output());
      await waitFor("primary's next retry", () => listenFailures(primary.output()) > seen, 15000);
      holder.close();
      holder = null;
      const base = `http://127.0.0.1:${httpPort}`;
      await waitFor("secondary serving", async () => (await get(`${base}/px`).catch(() => [0]))[0] === 200, 15000);
      assert.deepStrictEqual(await get(`${base}/phello`), [200, "b1 GET /phello"]);
      const before = listenFailures(secondary.output());

      // (2) status rewritten every 5 s, per member, with the numbers of the traffic sent meanwhile: a GET every 100 ms,
      // every fourth one a 405 (GET on a POST-only path)
      let sending = true;
      let sent200 = 0, sent405 = 0;
      const traffic = (async () => {
        for (let i = 0; sending; i++) {
          const [s] = await get(i % 4 === 3 ? `${base}/only-post` : `${base}/pt${i}`);
          if (s === 200) sent200++;
          else if (s === 405) sent405++;
          else throw new Error(`unexpected status ${s}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      const key = (member: string) => `/status/objects/eg-traffic-default/store-server/${member}`;
      const read = async (member: string) => {
        const out = await etcdctl(endpoint, ["get", key(member), "--print-value-only"]);
        return out.trim() === "" ? null : JSON.parse(out);
      };
      type Stat = { count: number; errCount: number; codes: Record<string, number>; [k: string]: unknown };
      const changes: { at: number; ts: number; status: Stat; spec: Record<string, unknown> }[] = [];
      let last = "";
      try {
        await waitFor("three status rewrites during the traffic", async () => {
          const raw = (await etcdctl(endpoint, ["get", key("gs-secondary"), "--print-value-only"])).trim();
          if (raw !== "" && raw !== last) {
            last = raw;
            const v = JSON.parse(raw);
            if (sent200 > 0) changes.push({ at: Date.now(), ts: v.timestamp, status: v.status, spec: v.spec });
          }
          return changes.length >= 3;
        }, 20000);
      } finally {
        sending = false;
        await traffic;
      }
      // the first observed change may fall anywhere in a period: the 2nd and 3rd are one whole period apart
      const [, c1, c2] = changes;
      const gapMs = c2.at - c1.at;
      assert.ok(gapMs >= 4000 && gapMs <= 6500, `status rewritten ${gapMs} ms apart`);
      assert.ok(c2.ts - c1.ts >= 4 && c2.ts - c1.ts <= 6, JSON.stringify(changes.map((c) => c.ts)));
      const st = c2.status;
      assert.deepStrictEqual([st.name, st.state, st.health], ["store-server", "running", ""]);
      // counts are cumulative, codes cover the 5 s window since the previous write: the window's codes add up to
      // the counts' growth, about 50 requests (one per ~100 ms), three 200s for one 405
      const w200 = st.codes["200"] ?? 0, w405 = st.codes["405"] ?? 0;
      assert.deepStrictEqual(Object.keys(st.codes).sort(), ["200", "405"], JSON.stringify(st));
      assert.deepStrictEqual(st.count - c1.status.count, w200 + w405, JSON.stringify([c1.status, st]));
      assert.deepStrictEqual(st.errCount - c1.status.errCount, w405, JSON.stringify([c1.status, st]));
      assert.ok(w200 + w405 >= 15 && w200 + w405 <= 60, JSON.stringify(st));
      assert.ok(w200 >= 2 * w405 && w200 <= 4 * w405, JSON.stringify(st));
      assert.ok(st.count <= sent200 + sent405 + 3 && st.count >= w200 + w405, JSON.stringify([sent200, sent405, st]));
      for (const f of ["m1", "m1Err", "p50", "p99", "max"]) assert.equal(typeof st[f], "number", f);
      assert.ok((st.m1 as number) > 0 && (st.m1Err as number) > 0, JSON.stringify(st));
      assert.ok((st.p50 as number) <= (st.p99 as number) && (st.p99 as number) <= (st.max as number));
      assert.deepStrictEqual(c2.spec.port, httpPort);
      // the primary's entry: the same object, failed to listen (the secondary holds the port)
      const ps = (await read("gs-primary")).status;
      assert.deepStrictEqual(ps.state, "failed");
      assert.match(ps.error, new RegExp(`listen tcp 0\\.0\\.0\\.0:${httpPort}`));

      // egctl: the object in `get`, one status entry per member in `describe`
      const got = await egctlOk(["--server", primary.apiAddr, "get", "httpserver"]);
      assert.match(got, /^NAME\s+KIND\s+AGE[^\n]*\nstore-server\s+HTTPServer\s/);
      const described = await egctlOk(["--server", primary.apiAddr, "describe", "httpserver", "store-server"]);
      const nodes = [...described.matchAll(/^ {2}- node: (\S+)$/gm)].map((m) => m[1]).sort();
      assert.deepStrictEqual(nodes, ["gs-primary", "gs-secondary"], described);
      assert.match(described, /- node: gs-secondary\n {4}status:\n( {6}.*\n)*? {6}state: running\n/);

      // (3) SIGKILL the only primary: the secondary keeps serving, zero failures for 4 s with the store unreachable
      await primary.kill();
      const until = Date.now() + 4000;
      let ok = 0;
      const failed: string[] = [];
      while (Date.now() < until) {
        try {
          const [s, body] = await get(`${base}/pduring`);
          if (s === 200 && body === "b1 GET /pduring") ok++;
          else failed.push(`${s} ${body}`);
        } catch (err) {
          failed.push((err as Error).message);
        }
      }
      assert.deepStrictEqual(failed, []);
      assert.ok(ok >= 20, `only ${ok} requests in 4 s`);
      assert.deepStrictEqual(listenFailures(secondary.output()), before, "the secondary's listener restarted");

      // (1) a change the secondary misses, and a compaction past it: the secondary is frozen (SIGSTOP) while the
      // primary restarts on its data, the pipeline is changed to backend b2 and the store is compacted to its latest
      // revision. Resumed, the secondary's watch resumes from before the compaction (it is refused as compacted) and
      // the member re-reads /config/objects/: its data plane follows.
      const compactedBefore =
        secondary.output().split("objects watch: etcdserver: mvcc: required revision has been compacted").length;
      Deno.kill(secondary.pid, "SIGSTOP");
      try {
        const restarted = await startMember("gs-primary", primary.args, { home: primary.home });
        procs.push(restarted);
        await putObject(restarted.apiAddr, pipelineYaml(b2.url), true);
        const status = JSON.parse(await etcdctl(endpoint, ["endpoint", "status", "-w", "json"]));
        const rev = status[0].Status.header.revision;
        await etcdctl(endpoint, ["compact", String(rev)]);
        // the change is in the store, older revisions are gone
        assert.match(await etcdctl(endpoint, ["get", "/config/objects/store-pipeline"]), new RegExp(b2.url));
        const old = await new Deno.Command("etcdctl", {
          args: ["--endpoints", endpoint, "get", "/config/objects/store-pipeline", "--rev", String(rev - 1)],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.match(new TextDecoder().decode(old.stderr), /compacted/);
      } finally {
        Deno.kill(secondary.pid, "SIGCONT");
      }
      await waitFor("the change on the secondary", async () => {
        const [s, body] = await get(`${base}/pafter`);
        assert.ok(s === 200 && (body === "b1 GET /pafter" || body === "b2 GET /pafter"), `${s} ${body}`);
        return body === "b2 GET /pafter";
      }, 15000);
      for (let i = 0; i < 5; i++) assert.deepStrictEqual(await get(`${base}/pafter${i}`), [200, `b2 GET /pafter${i}`]);
      // and it got there by the compacted watch's re-read (logged once per compaction it met)
      assert.ok(
        secondary.output().split("objects watch: etcdserver: mvcc: required revision has been compacted").length >
          compactedBefore,
        secondary.output(),
      );
    } finally {
      holder?.close();
      await b1.stop();
      await b2.stop();
    }
  },
);
