/**
 * The tutorial on four machines (and a fifth one for (e)): three Easegress primaries and one secondary, each in its
 * own network namespace with its own address (as on four hosts), connected by a bridge in another namespace where the
 * test's backends, egctl, curl and load generator run (tests/fixtures/gateway_tutorial_agent.ts via `ip netns exec`).
 *
 *   (a) The reference's hello world (§5.2) applied with `egctl apply -f`, and the quick start's `egctl create
 *       httpproxy`: every member, primary or secondary, serves both on the same ports of its own address; curl shows
 *       round robin over the backends through each of them.
 *   (b) SIGKILL of the Raft leader while the load generator (keep-alive HTTP/1.1) sends requests to the other three
 *       members: zero failed requests on them, none of their connections closed, requests keep succeeding after the
 *       kill, and the survivors elect a new leader. The leader killed is the primary the secondary's store client is
 *       connected to (leadership is moved there first), so the secondary loses its watch at the same time.
 *   (c) With the old leader still down, a spec update by `egctl apply -f` under load on the three others (the
 *       HTTPServer's setHeaders, a live change, and the Pipeline's filters): zero failed requests, no connection
 *       closed (no listener restart), the new behaviour on every member within 2 s of the store's commit (seen by an
 *       `etcdctl watch`), never the old one again after that.
 *   (d) The old leader restarted on its data (serving its running_objects.json, then the store's newer spec), and
 *       the same as (c) on all four members.
 *   (e) A fifth machine added online as a primary (`egctl create member`, started with the flags it prints: a
 *       learner that promotes itself) and then removed (`egctl delete member`; it stops by itself), while `etcdctl
 *       put` writes go on: writes acknowledged after each change, every acknowledged one on the three primaries.
 *
 * Needs root, `ip netns`, veth and bridges; otherwise the test is ignored (the reason is printed). Addresses:
 * 10.214.0.0/24, only inside the namespaces this test creates; they, every process started in them and the members'
 * home dirs are removed in `finally`.
 */
import assert from "node:assert/strict";
import { egctl, egctlOk, type Member, startMember, waitFor } from "./easegress_harness.ts";
import { NetnsTopology, sleep } from "./lib/cluster.ts";
import { type Proc, spawnProcess } from "./lib/process.ts";
import type { Load, LoadResult } from "./fixtures/gateway_tutorial_agent.ts";

const reason = await NetnsTopology.unavailableReason();
if (reason) console.log(`gateway_tutorial_test: ignored: ${reason}`);

const AGENT = new URL("./fixtures/gateway_tutorial_agent.ts", import.meta.url).pathname;
const SUBNET = "10.214.0";
/** The HTTPServer port of the hello world, and of the quick start's `egctl create httpproxy`, on every member. */
const HELLO_PORT = 10080;
const PROXY_PORT = 10081;
const BACKEND_PORTS = [9095, 9096, 9097];
const BACKEND_NAMES = ["b1", "b2", "b3"];
/** Keep-alive connections of the load generator per member, in (b) and in (c). */
const KILL_CONCURRENCY = 4;
const UPDATE_CONCURRENCY = 3;
/** The issue's bound on how long a spec change may take to show on every member. */
const PROPAGATION_LIMIT_MS = 2000;

/**
 * The reference's hello world (§5.2) with our backends and the path's `setHeaders: {X-Tutorial: v<version>}`; from
 * version 2 on, the pipeline also stamps its responses with `X-Tutorial-Version: <version>` (a ResponseAdaptor).
 */
function helloYaml(backendHost: string, version: number): string {
  const servers = BACKEND_PORTS.map((p) => `      - url: http://${backendHost}:${p}`).join("\n");
  const stamped = version >= 2;
  return `kind: HTTPServer
name: server-demo
port: ${HELLO_PORT}
keepAlive: true
https: false
rules:
  - paths:
    - pathPrefix: /pipeline
      backend: pipeline-demo
      setHeaders:
        X-Tutorial: v${version}
---
name: pipeline-demo
kind: Pipeline
flow:
  - filter: proxy
${stamped ? "  - filter: stamp\n" : ""}filters:
  - name: proxy
    kind: Proxy
    pools:
    - servers:
${servers}
      loadBalance:
        policy: roundRobin
${
    stamped
      ? `  - name: stamp
    kind: ResponseAdaptor
    header:
      set:
        X-Tutorial-Version: "${version}"
`
      : ""
  }`;
}

/** What a response of hello world version `version` (≥ 2) looks like to the load generator (see Load.marker). */
const helloMarker = (version: number) => `^${version} .* x-tutorial=v${version}$`;

/** A process started in a namespace with `ip netns exec`. */
function spawnIn(netns: string, tag: string, cmd: string[]): Proc {
  return spawnProcess("ip", ["netns", "exec", netns, ...cmd], { tag });
}

/**
 * `etcdctl watch` of /config/objects/ from inside `netns`, each printed line stamped with the wall clock when it
 * arrived: when the store committed a change, as a client sees it (a few ms late at most). The range also holds
 * PROBE_KEY, written once to know the watch is live.
 */
class ObjectsWatch {
  static readonly PROBE_KEY = "/config/objects0-tutorial-probe";
  readonly lines: { line: string; at: number }[] = [];
  #proc: Deno.ChildProcess;
  #reading: Promise<void>;

  constructor(readonly netns: string, readonly endpoint: string) {
    const proc = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        netns,
        "etcdctl",
        "--endpoints",
        endpoint,
        "watch",
        "/config/objects/",
        "/config/objects1",
      ],
      env: { ETCDCTL_API: "3" },
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#proc = proc;
    this.#reading = (async () => {
      let rest = "";
      for await (const chunk of proc.stdout.pipeThrough(new TextDecoderStream())) {
        const at = Date.now();
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        for (const line of parts) this.lines.push({ line, at });
      }
    })();
  }

  /** Writes the probe key until the watch reports it. */
  async ready(): Promise<void> {
    await waitFor("etcdctl watch", async () => {
      await etcdctl(this.netns, this.endpoint, ["put", ObjectsWatch.PROBE_KEY, String(Date.now())]);
      await sleep(200);
      return this.lines.some((l) => l.line === ObjectsWatch.PROBE_KEY);
    }, 15000);
    await etcdctl(this.netns, this.endpoint, ["del", ObjectsWatch.PROBE_KEY]);
  }

  /** When the watch saw the last change of `key` (wall clock ms), or null. */
  lastChange(key: string): number | null {
    return this.lines.findLast((l) => l.line === key)?.at ?? null;
  }

  async close(): Promise<void> {
    try {
      this.#proc.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#proc.status;
    await this.#reading.catch(() => {});
  }
}

/** Runs etcdctl (v3 API) in `netns` against `endpoints` (comma-separated); returns its output, throws unless 0. */
async function etcdctl(netns: string, endpoints: string, args: string[]): Promise<string> {
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", netns, "etcdctl", "--endpoints", endpoints, ...args],
    env: { ETCDCTL_API: "3" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`etcdctl ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/**
 * `etcdctl put` of `<PREFIX><seq>` one after another from inside `netns` until stopped: the keys whose put was
 * acknowledged (exit 0), and how many failed.
 */
class NetnsWriter {
  static readonly PREFIX = "/tutorial/writes/";
  readonly acked: string[] = [];
  failed = 0;
  #stopped = false;
  #loop: Promise<void>;

  constructor(netns: string, endpoints: string) {
    this.#loop = (async () => {
      for (let seq = 0; !this.#stopped; seq++) {
        const key = `${NetnsWriter.PREFIX}${seq}`;
        try {
          await etcdctl(netns, endpoints, ["put", key, String(seq)]);
          this.acked.push(key);
        } catch {
          this.failed++;
        }
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }
}

/** What `etcdctl endpoint status` says of one endpoint. */
interface EndpointStatus {
  endpoint: string;
  /** member ID, hex */
  id: string;
  isLeader: boolean;
}

/** `etcdctl endpoint status` of each of `endpoints` that answers (simple format: one line each). */
async function endpointStatus(netns: string, endpoints: string[]): Promise<EndpointStatus[]> {
  const out: EndpointStatus[] = [];
  for (const e of endpoints) {
    const line = await etcdctl(netns, e, ["endpoint", "status"]).catch(() => "");
    const f = line.trim().split(", ");
    if (f.length >= 5) out.push({ endpoint: f[0], id: f[1], isLeader: f[4] === "true" });
  }
  return out;
}

/** The addresses that the processes of namespace `netns` have TCP connections to on port 2379 or 2380. */
async function storeConnections(netns: string): Promise<string[]> {
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", netns, "ss", "-Htn", "state", "established"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const peers = new TextDecoder().decode(out.stdout).split("\n").map((l) => l.trim().split(/\s+/).pop() ?? "");
  return [...new Set(peers.filter((p) => /:(2379|2380)$/.test(p)).map((p) => p.replace(/:\d+$/, "")))];
}

/** The longest time (ms) without a successful response between `from` and `to`. */
function longestGap(okAt: number[], from: number, to: number): number {
  let gap = 0;
  let last = from;
  for (const at of okAt) {
    if (at < from) continue;
    if (at > to) break;
    gap = Math.max(gap, at - last);
    last = at;
  }
  return Math.max(gap, to - last);
}

/** Runs the agent's load mode in `netns`; resolves once it started, with a promise of its results. */
async function startLoad(netns: string, load: Load): Promise<{ proc: Proc; results: Promise<LoadResult[]> }> {
  const proc = spawnIn(netns, "load", [
    Deno.execPath(),
    "run",
    "-A",
    "--no-check",
    AGENT,
    "load",
    JSON.stringify(load),
  ]);
  await waitFor("load generator started", () => {
    if (proc.exited()) throw new Error(`load generator exited:\n${proc.output()}`);
    return proc.output().includes("started\n");
  }, 30000);
  const results = proc.status.then((st) => {
    if (!st.success) throw new Error(`load generator failed (${st.code}):\n${proc.output()}`);
    return proc.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as LoadResult);
  });
  return { proc, results };
}

/** One line per target: requests, failures, connections, backends, first failures. */
function describeLoad(results: LoadResult[], names: Map<string, string>): string {
  return results.map((r) =>
    `    ${names.get(r.target)}: ${r.ok + r.failed} requests, ${r.failed} failed, ${r.connections} connections ` +
    `(${r.reusedClosed} closed by the server while idle), backends ${JSON.stringify(r.backends)}` +
    (r.errors.length ? `, first failures: ${r.errors.join(" | ")}` : "")
  ).join("\n");
}

/**
 * Every request of the load succeeded, and on the connections it opened at the start: the member never closed a
 * keep-alive connection (no listener restart).
 */
function assertNoFailure(r: LoadResult, name: string, concurrency: number): void {
  assert.equal(r.failed, 0, `${name}: ${r.errors.join(" | ")}`);
  assert.equal(r.reusedClosed, 0, `${name} closed idle keep-alive connections`);
  assert.equal(r.connections, concurrency, `${name}: connections`);
}

Deno.test({
  name: `gateway tutorial on four machines: curl through every member, leader SIGKILL and a spec update under load, ` +
    `a fifth primary added and removed online${reason ? ` (ignored: ${reason})` : ""}`,
  ignore: reason !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const topo = await NetnsTopology.create(5, SUBNET);
    const base = await Deno.makeTempDir({ prefix: "eg-tutorial-" });
    const procs: Proc[] = [];
    try {
      const ns = topo.clientNs;
      const ips = topo.memberIps;
      const names = ips.map((_, i) => `machine-${i + 1}`);
      const backendHost = topo.clientIp;
      const backends = spawnIn(ns, "backends", [
        Deno.execPath(),
        "run",
        "-A",
        "--no-check",
        AGENT,
        "backends",
        JSON.stringify({ host: backendHost, names: BACKEND_NAMES, ports: BACKEND_PORTS }),
      ]);
      procs.push(backends);

      const initialCluster = [0, 1, 2].map((i) => `${names[i]}=http://${ips[i]}:2380`).join(",");
      const primaryArgs = (i: number, extra: string[] = []) => [
        "--name",
        names[i],
        "--cluster-name",
        "eg-cluster",
        "--cluster-role",
        "primary",
        "--api-addr",
        `${ips[i]}:2381`,
        "--listen-client-urls",
        `http://${ips[i]}:2379`,
        "--advertise-client-urls",
        `http://${ips[i]}:2379`,
        "--listen-peer-urls",
        `http://${ips[i]}:2380`,
        "--initial-advertise-peer-urls",
        `http://${ips[i]}:2380`,
        "--initial-cluster",
        initialCluster,
        ...extra,
      ];
      const secondaryArgs = [
        "--name",
        names[3],
        "--cluster-name",
        "eg-cluster",
        "--cluster-role",
        "secondary",
        "--api-addr",
        `${ips[3]}:2381`,
        "--primary-listen-peer-urls",
        [0, 1, 2].map((i) => `http://${ips[i]}:2380`).join(","),
        "--state-flag",
        "existing",
      ];
      const start = async (i: number, args: string[]): Promise<Member> => {
        const m = await startMember(names[i], args, {
          home: `${base}/${names[i]}`,
          netns: topo.memberNs[i],
          apiAddr: `${ips[i]}:2381`,
        });
        procs.push(m);
        return m;
      };
      // the primaries wait for a quorum: start all three together
      const members = await Promise.all([0, 1, 2].map((i) => start(i, primaryArgs(i))));
      members.push(await start(3, secondaryArgs));
      await waitFor("backends", () => backends.output().includes("ready\n"), 30000);

      const eg = (i: number, args: string[], stdin?: string) =>
        egctlOk(["--server", `${ips[i]}:2381`, ...args], stdin, ns);
      const clientUrl = (i: number) => `http://${ips[i]}:2379`;
      /** index of the member `etcdctl endpoint status` of these primaries reports as leader, or -1 */
      const leaderAmong = async (primaries: number[]): Promise<number> => {
        const st = await endpointStatus(ns, primaries.map(clientUrl));
        const l = st.find((s) => s.isLeader);
        return l ? primaries.find((i) => clientUrl(i) === l.endpoint)! : -1;
      };
      await waitFor("four members and a leader", async () => {
        const out = await egctl(["--server", `${ips[3]}:2381`, "get", "member"], undefined, undefined, undefined, ns);
        return names.slice(0, 4).every((n) => out.stdout.includes(`${n}\t`)) && /\tLeader\t/.test(out.stdout);
      }, 30000);

      /** `curl` from the client namespace: [status, body]. */
      const curl = async (url: string): Promise<[number, string]> => {
        const out = await new Deno.Command("ip", {
          args: ["netns", "exec", ns, "curl", "-s", "-m", "5", "-w", "\n%{http_code}", url],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder().decode(out.stdout);
        const nl = text.lastIndexOf("\n");
        return [Number(text.slice(nl + 1)), text.slice(0, nl)];
      };
      const hello = (i: number) => `http://${ips[i]}:${HELLO_PORT}/pipeline`;
      const memberOf = new Map(names.map((name, i) => [hello(i), name]));

      await t.step(
        "(a) egctl apply -f of the hello world and create httpproxy, then curl through each of the four members",
        async () => {
          const file = `${base}/hello.yaml`;
          await Deno.writeTextFile(file, helloYaml(backendHost, 1));
          assert.equal(
            await eg(0, ["apply", "-f", file]),
            "create HTTPServer server-demo successfully\ncreate Pipeline pipeline-demo successfully\n",
          );
          const [b1, b2] = BACKEND_PORTS.map((p) => `http://${backendHost}:${p}`);
          assert.equal(
            await eg(3, ["create", "httpproxy", "demo", "--port", String(PROXY_PORT), "--rule", `/api/*=${b1},${b2}`]),
            "create HTTPServer demo successfully\ncreate Pipeline demo-0 successfully\n",
          );
          const demo = (i: number) => `http://${ips[i]}:${PROXY_PORT}/api/q`;
          for (let i = 0; i < 4; i++) {
            await waitFor(`${names[i]} serving`, async () => {
              const [a, b] = [await curl(hello(i)), await curl(demo(i))];
              return a[0] === 200 && b[0] === 200;
            }, 15000);
            // round robin: three curls reach the three backends, each once, with the path's setHeaders applied
            const bodies: string[] = [];
            for (let k = 0; k < 3; k++) {
              const [status, body] = await curl(`${hello(i)}/hello?from=${names[i]}`);
              assert.equal(status, 200, body);
              bodies.push(body);
            }
            assert.deepEqual(
              bodies.map((b) => b.split(" ")[0]).sort(),
              BACKEND_NAMES,
              `${names[i]}: ${bodies.join(" | ")}`,
            );
            for (const b of bodies) {
              assert.match(b, new RegExp(` GET /pipeline/hello\\?from=${names[i]} x-tutorial=v1$`));
            }
            // the quick start's pipeline demo-0 alternates between its two backends
            const quick = [await curl(demo(i)), await curl(demo(i))];
            assert.deepEqual(quick.map(([st, b]) => `${st} ${b.split(" ")[0]}`).sort(), ["200 b1", "200 b2"]);
            console.log(
              `    ${names[i]} (${ips[i]}): hello world ${bodies.map((b) => b.split(" ")[0]).join(", ")}; ` +
                `httpproxy demo ${quick.map(([, b]) => b.split(" ")[0]).join(", ")}`,
            );
          }
        },
      );

      let killed = -1;
      await t.step("(b) SIGKILL the Raft leader under load: zero failed requests on the other three", async () => {
        // the leader to kill is the primary the secondary's store client is connected to (leadership moved there
        // if needed), so that the secondary loses its watch too and re-reads the objects while the store has no leader
        const [storeIp] = await storeConnections(topo.memberNs[3]);
        killed = ips.indexOf(storeIp);
        assert.ok(killed >= 0 && killed < 3, `the secondary's store connection: ${storeIp}`);
        const [target] = await endpointStatus(ns, [clientUrl(killed)]);
        if ((await leaderAmong([0, 1, 2])) !== killed) {
          await etcdctl(ns, [0, 1, 2].map(clientUrl).join(","), ["move-leader", target.id]);
        }
        await waitFor(`${names[killed]} leader`, async () => (await leaderAmong([0, 1, 2])) === killed, 15000);
        const leader = names[killed];
        const others = [0, 1, 2, 3].filter((i) => i !== killed);
        const load = await startLoad(ns, {
          targets: others.map(hello),
          concurrency: KILL_CONCURRENCY,
          durationMs: 9000,
          timeoutMs: 3000,
        });
        procs.push(load.proc);
        await sleep(2000);
        const connected = await storeConnections(topo.memberNs[3]);
        const killAt = Date.now();
        await members[killed].kill();
        console.log(
          `    SIGKILLed the leader ${leader}; the secondary's store connections went to ${connected.join(", ")}`,
        );
        const results = await load.results;
        console.log(describeLoad(results, memberOf));
        for (const r of results) {
          const after = r.okAt.filter((at) => at > killAt).length;
          const gap = longestGap(r.okAt, killAt - 1000, killAt + 3000);
          console.log(
            `    ${memberOf.get(r.target)}: ${after} requests succeeded after the kill; ` +
              `longest time without a response from 1 s before to 3 s after it: ${gap} ms`,
          );
          assertNoFailure(r, memberOf.get(r.target)!, KILL_CONCURRENCY);
          assert.ok(after > 0, `${memberOf.get(r.target)} served nothing after the kill`);
          assert.ok(r.ok > 0 && r.endedAt - killAt > 4000, "the load ran on well after the kill");
        }
        // the store recovered: the survivors elected a new leader, the secondary's store client moved to another one
        const survivors = [0, 1, 2].filter((i) => i !== killed);
        await waitFor("a new leader", async () => (await leaderAmong(survivors)) >= 0, 20000);
        const now = await storeConnections(topo.memberNs[3]);
        console.log(`    new leader ${names[await leaderAmong(survivors)]}; the secondary's store: ${now.join(", ")}`);
      });

      /**
       * `egctl apply -f` of hello world `version` through member `via` while the load generator runs against
       * `targets`: zero failures, no connection closed, and the new behaviour on every target within 2 s of the
       * commit (and never the old one after it showed).
       */
      const updateUnderLoad = async (version: number, targets: number[], via: number) => {
        const file = `${base}/hello-v${version}.yaml`;
        await Deno.writeTextFile(file, helloYaml(backendHost, version));
        const watch = new ObjectsWatch(ns, clientUrl(via));
        try {
          await watch.ready();
          const load = await startLoad(ns, {
            targets: targets.map(hello),
            concurrency: UPDATE_CONCURRENCY,
            durationMs: 25000, // at most: it stops 1.5 s after every target showed the change
            timeoutMs: 3000,
            marker: helloMarker(version),
            afterMarkerMs: 1500,
          });
          procs.push(load.proc);
          await sleep(1000);
          const applyAt = Date.now();
          assert.equal(
            await eg(via, ["apply", "-f", file]),
            "update HTTPServer server-demo successfully\nupdate Pipeline pipeline-demo successfully\n",
          );
          const appliedAt = Date.now();
          const results = await load.results;
          // the new behaviour needs both objects: it can show once the later of the two writes committed
          const committed = ["server-demo", "pipeline-demo"].map((n) => watch.lastChange(`/config/objects/${n}`));
          assert.ok(committed.every((c) => c !== null && c >= applyAt), `watch saw ${JSON.stringify(committed)}`);
          const committedAt = Math.max(...(committed as number[]));
          console.log(describeLoad(results, memberOf));
          console.log(
            `    egctl apply through ${names[via]} ran ${appliedAt - applyAt} ms; the store committed server-demo ` +
              `${committed[0]! - applyAt} ms and pipeline-demo ${committed[1]! - applyAt} ms after it started`,
          );
          for (const r of results) {
            const name = memberOf.get(r.target)!;
            assertNoFailure(r, name, UPDATE_CONCURRENCY);
            assert.ok(r.markerAt !== null, `${name} never showed the change`);
            const took = r.markerAt - committedAt;
            console.log(
              `    ${name}: the change showed ${took} ms after the commit ` +
                `(${r.markerAt - appliedAt} ms after egctl returned); ${r.staleAfterMarker} old responses after that`,
            );
            assert.ok(took <= PROPAGATION_LIMIT_MS, `${name}: ${took} ms`);
            assert.equal(r.staleAfterMarker, 0, `${name} went back to the old spec`);
          }
        } finally {
          await watch.close();
        }
      };

      await t.step("(c) with the old leader down, egctl apply under load: on the other three within 2 s", async () => {
        const live = [0, 1, 2, 3].filter((i) => i !== killed);
        await updateUnderLoad(2, live, live[0]);
      });

      await t.step("(d) the old leader restarted, egctl apply under load: on all four within 2 s", async () => {
        // it serves its running_objects.json (version 1) at once, then the store's version 2
        members[killed] = await start(killed, primaryArgs(killed, ["--state-flag", "existing"]));
        await waitFor(`${names[killed]} serving version 2`, async () => {
          const [status, body] = await curl(hello(killed));
          return status === 200 && body.endsWith("x-tutorial=v2");
        }, 15000);
        await waitFor(
          `${names[killed]} back in the cluster`,
          () => etcdctl(ns, clientUrl(killed), ["endpoint", "health"]).then(() => true, () => false),
          20000,
        );
        await updateUnderLoad(3, [0, 1, 2, 3], killed);
      });

      await t.step("(e) a fifth member added online as a primary, then removed, while etcdctl writes", async () => {
        const writer = new NetnsWriter(ns, [0, 1, 2].map(clientUrl).join(","));
        const phases: [string, number][] = [];
        const phase = async (what: string, fn: () => Promise<void>) => {
          await fn();
          const acked = writer.acked.length;
          await waitFor(`a write acknowledged after: ${what}`, () => writer.acked.length > acked, 20000);
          phases.push([what, writer.acked.length]);
        };
        try {
          let flags: string[] = [];
          await phase("egctl create member", async () => {
            const out = await eg(2, ["create", "member", names[4], "--peer-urls", `http://${ips[4]}:2380`]);
            assert.match(out, new RegExp(`^create Member ${names[4]} successfully\nAdded as a learner`), out);
            flags = out.split("\n")[3].trim().split(" ");
            // listed at once, before it has started: a Learner, by its ID
            const id = /\(ID ([0-9a-f]+)\)/.exec(out)![1];
            const listed = await egctl(
              ["--server", `${ips[3]}:2381`, "get", "member", id],
              undefined,
              undefined,
              undefined,
              ns,
            );
            assert.ok(
              listed.stdout.split("\n")[1]?.split("\t").map((c) => c.trim()).includes("Learner"),
              listed.stdout,
            );
          });
          await phase(`${names[4]} started, caught up and promoted`, async () => {
            members[4] = await start(4, [
              "--api-addr",
              `${ips[4]}:2381`,
              "--listen-client-urls",
              clientUrl(4),
              "--advertise-client-urls",
              clientUrl(4),
              "--listen-peer-urls",
              `http://${ips[4]}:2380`,
              ...flags,
            ]);
            await waitFor(`${names[4]} a Follower`, async () => {
              const out = await egctl(
                ["--server", `${ips[3]}:2381`, "get", "member", names[4]],
                undefined,
                undefined,
                undefined,
                ns,
              );
              return out.stdout.split("\n")[1]?.split("\t").map((c) => c.trim()).includes("Follower") ?? false;
            }, 60000);
            // a full member: it serves the gateway's objects too
            await waitFor(`${names[4]} serving`, async () => {
              const [status, body] = await curl(hello(4));
              return status === 200 && body.endsWith("x-tutorial=v3");
            }, 15000);
          });
          await phase("egctl delete member", async () => {
            assert.equal(await eg(1, ["delete", "member", names[4]]), `purge Member ${names[4]} successfully\n`);
            assert.equal((await members[4].status).code, 0, "the removed member stops by itself, cleanly");
            await waitFor(`${names[4]} gone from egctl get member`, async () => {
              const out = await egctl(
                ["--server", `${ips[0]}:2381`, "get", "member"],
                undefined,
                undefined,
                undefined,
                ns,
              );
              return out.code === 0 && !out.stdout.includes(`${names[4]}\t`);
            }, 20000);
          });
        } finally {
          await writer.stop();
        }
        console.log(
          `    etcdctl put: ${writer.acked.length} acknowledged, ${writer.failed} failed; acknowledged by the end of ` +
            phases.map(([what, n]) => `${what}: ${n}`).join(", "),
        );
        for (const i of [0, 1, 2]) {
          await waitFor(`${names[i]} holding every acknowledged write`, async () => {
            const out = await etcdctl(ns, clientUrl(i), ["get", "--prefix", NetnsWriter.PREFIX, "--consistency=s"]);
            // key and value lines: each acknowledged key holds the value it was written with
            const lines = out.split("\n");
            const have = new Map<string, string>();
            for (let l = 0; l + 1 < lines.length; l += 2) have.set(lines[l], lines[l + 1]);
            return writer.acked.every((k) => have.get(k) === k.slice(NetnsWriter.PREFIX.length));
          }, 20000);
        }
      });
    } finally {
      for (const p of procs.reverse()) await p.kill();
      await topo.destroy();
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});
