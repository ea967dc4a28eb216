/**
 * `deno task bench`: the same workloads against the real etcd and against our server, one after the other, with one
 * Go load generator (scripts/bench/loadgen.go, built on etcd 3.4's clientv3 from Debian's golang-etcd-server-dev).
 *
 *   deno run -A scripts/bench.ts [--only etcd|ours] [--rows put1,put16,...] [--rounds N] [--json out.json]
 *                                [--members 1]
 *   deno run -A scripts/bench.ts --failover   (the failover row alone: --members 3 --rows failover, 7 kills)
 *   deno run -A scripts/bench.ts --scale [--members 3] [--only etcd|ours] [--rows ...] [--rounds N]
 *                                        (rows at scale: 1 M keys, 10,000 watchers, 100,000 leases, soak, restart;
 *                                        scripts/bench/scale.ts)
 *   deno run -A scripts/bench.ts --gateway [--rounds 5] [--only ours,nginx,haproxy,caddy] [--conns 64,256]
 *                                          (the traffic gateway against other proxies: scripts/bench/gateway.ts)
 *
 * --rows picks rows by id (always run in the table's order): put1 put16 put256 range16 rangeser16 txn16 keepalive16
 * watch failover, plus grant16 (lease grant) and checkperf (`etcdctl check perf --load s`, 60 s; with --members 3 or
 * more), not run by default. --rounds N repeats both sides in alternating order
 * (etcd, ours, ours, etcd, ...) and reports the mean per row: the machine is shared and noisy, a single run can be off
 * by 20-30 %.
 *
 * --members N (N >= 3; default 1) runs each side as an N-member cluster on loopback (one --initial-cluster, distinct
 * ports, data dirs side by side under BENCH_CACHE), first etcd's, then, after it stopped, ours. Every row's clients
 * are spread over all members' client URLs, as etcd's `benchmark --endpoints` does (so "put" is etcd's "put, all
 * members", not "to leader"). CPU per request and peak RSS are summed over the members (RSS also shown per member).
 * Multi-member runs add the "failover" row (default on): 8 writers on all members, the leader (found through
 * Maintenance.Status) is SIGKILLed, and the row reports the milliseconds from the kill to the completion of the first
 * successful put issued after it; BENCH_FAILOVER_KILLS times (default 3, 7 with --failover), the killed member
 * restarted on its data dir and caught up (its applied index reaches the leader's commit index) between kills; the
 * row shows the median and the range. Lower is better, so that row's ratio is etcd/ours (above 1 = ours recovers
 * faster). Both sides run with the same --heartbeat-interval and --election-timeout (BENCH_HEARTBEAT_MS,
 * BENCH_ELECTION_MS: etcd's defaults 100 and 1000). With 3 members the defaults are 4 s per row and 1000 watch
 * puts, so that the whole run stays under about 4 minutes.
 *
 * Environment:
 *   BENCH_SECONDS  measured seconds per row (default 5; 4 with --members > 1)
 *   BENCH_WARMUP   unmeasured warm-up seconds per row (0.5)
 *   BENCH_WARMUP_PUTS  unmeasured puts (16 clients) each side's server or cluster serves before its first row
 *                  (default 20000; 0 = none). The same work on both sides, so that the rows compare servers in steady
 *                  state: V8 runs a function unoptimized for its first few thousand calls (etcd is compiled ahead of
 *                  time), and "put, 1 client", the first row, used to be measured about a second after start.
 *   BENCH_ETCD     reference server (default /usr/bin/etcd)  BENCH_OURS    our server (default <repo>/scripts/etcd)
 *   BENCH_CACHE    loadgen binary, Go caches, data dirs (default /var/tmp/eg-bench)
 *   BENCH_WATCH_PUTS  puts fanned out to the 1000 watchers (default 2000; 1000 with --members > 1)
 *   BENCH_FAILOVER_KILLS  leader kills of the failover row (default 3; 7 with --failover)
 *   BENCH_HEARTBEAT_MS, BENCH_ELECTION_MS  --heartbeat-interval and --election-timeout of both sides (100, 1000)
 *   BENCH_LOG_DIR  keep every server process's whole output there as <binary>-<pid>.log (with its own timestamps)
 *
 * Each server (or cluster) runs on free ports with its data dirs under BENCH_CACHE, never both at once. Prints a table
 * of req/s, ratio, p50/p99 latency and server CPU per request, the servers' peak RSS (VmHWM of the real server
 * processes, not of wrapper shells) and the load average before and after.
 */
import { freePorts } from "../tests/lib/ports.ts";
import { type CheckPerfResult, etcdctlBinary, parseCheckPerf } from "../tests/lib/etcdctl.ts";
import { cleanupGatewayBench, runGatewayBench } from "./bench/gateway.ts";
import { printMarkdownTable } from "./bench/table.ts";

const repo = new URL("../", import.meta.url).pathname;
const env = (k: string) => Deno.env.get(k) || undefined;
const cacheDir = env("BENCH_CACHE") ?? "/var/tmp/eg-bench";
/** --members, parsed before anything else because it changes the defaults below */
const membersArg = (() => {
  if (Deno.args.includes("--failover")) return 3;
  const i = Deno.args.findIndex((a) => a === "--members" || a.startsWith("--members="));
  if (i < 0) return 1;
  const v = Number(Deno.args[i].includes("=") ? Deno.args[i].split("=")[1] : Deno.args[i + 1]);
  return Number.isInteger(v) && v >= 1 ? v : 1;
})();
const multi = membersArg > 1;
const seconds = Number(env("BENCH_SECONDS") ?? (multi ? 4 : 5));
const warmup = Number(env("BENCH_WARMUP") ?? 0.5);
const warmupPuts = Math.max(0, Math.floor(Number(env("BENCH_WARMUP_PUTS") ?? 20000)));
const watchPuts = Number(env("BENCH_WATCH_PUTS") ?? (multi ? 1000 : 2000));
const failoverOnly = Deno.args.includes("--failover");
const failoverKills = Math.max(1, Math.floor(Number(env("BENCH_FAILOVER_KILLS") ?? (failoverOnly ? 7 : 3)) || 3));
/** --heartbeat-interval and --election-timeout of every server, ours and etcd alike */
const heartbeatMs = Number(env("BENCH_HEARTBEAT_MS") ?? 100);
const electionMs = Number(env("BENCH_ELECTION_MS") ?? 1000);
const logDir = env("BENCH_LOG_DIR");
const loadgenSrc = `${repo}scripts/bench/loadgen.go`;

interface RowDef {
  id: string;
  label: string;
  args: string[];
  /** unit of the throughput column */
  unit?: string;
  defaultRow: boolean;
  /** only in multi-member runs */
  cluster?: boolean;
}

const rowDefs: RowDef[] = [
  { id: "put1", label: "put, 1 client", args: ["--op", "put", "--clients", "1"], defaultRow: true },
  { id: "put16", label: "put, 16 clients", args: ["--op", "put", "--clients", "16"], defaultRow: true },
  { id: "put256", label: "put, 256 clients", args: ["--op", "put", "--clients", "256"], defaultRow: true },
  { id: "range16", label: "range linearizable, 16", args: ["--op", "range", "--clients", "16"], defaultRow: true },
  {
    id: "rangeser16",
    label: "range serializable, 16",
    args: ["--op", "range-serializable", "--clients", "16"],
    defaultRow: true,
  },
  { id: "txn16", label: "txn (1 put), 16", args: ["--op", "txn-put", "--clients", "16"], defaultRow: true },
  {
    id: "keepalive16",
    label: "lease keepalive, 16",
    args: ["--op", "lease-keepalive", "--clients", "16"],
    defaultRow: true,
  },
  { id: "grant16", label: "lease grant, 16", args: ["--op", "lease-grant", "--clients", "16"], defaultRow: false },
  {
    id: "watch",
    label: `watch 1000 w / ${watchPuts} puts`,
    args: ["--op", "watch", "--watchers", "1000", "--streams", "10", "--puts", String(watchPuts), "--clients", "1"],
    unit: "events/s; p50/p99 = put→event",
    defaultRow: true,
  },
  {
    id: "failover",
    label: "failover: kill -9 leader, ms ↓",
    args: [],
    unit: "ms from the kill to the first write; ratio = etcd/ours",
    defaultRow: true,
    cluster: true,
  },
  {
    id: "checkperf",
    label: "etcdctl check perf --load s",
    args: [],
    unit: "writes/s (PASS/FAIL); slowest / stddev ms",
    defaultRow: false,
    cluster: true,
  },
];

export interface RowResult {
  ok: boolean;
  reason?: string;
  rps?: number;
  p50?: number;
  p99?: number;
  requests?: number;
  errors?: number;
  firstError?: string;
  /** server CPU (user+sys, whole process tree) per request over the measured interval, µs */
  cpuUs?: number;
  /** failover row: ms from each kill to the first successful write issued after it */
  attempts?: number[];
  /** checkperf row: etcdctl's verdicts and values */
  checkPerf?: CheckPerfResult;
  raw?: unknown;
}

interface SideResult {
  name: string;
  binary: string;
  rows: Map<string, RowResult>;
  /** summed VmHWM of the server's (non-shell) processes, KiB; summed over the members of a cluster */
  peakRssKb?: number;
  /** per member (a restarted member: the maximum over its incarnations), KiB */
  memberRssKb?: number[];
  startError?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// process bookkeeping: everything we spawn is killed on exit and on Ctrl-C

const children = new Set<Deno.ChildProcess>();
const tempDirs = new Set<string>();
const serverPids = new Set<number>();

function killTree(pid: number, sig: Deno.Signal) {
  for (const p of treePids(pid).reverse()) {
    try {
      Deno.kill(p, sig);
    } catch { /* gone */ }
  }
}

function cleanupNow() {
  cleanupGatewayBench();
  for (const pid of serverPids) killTree(pid, "SIGKILL");
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
  }
  for (const d of tempDirs) {
    try {
      Deno.removeSync(d, { recursive: true });
    } catch { /* ignore */ }
  }
}

let interrupted = false;

async function onSignal() {
  interrupted = true;
  console.error("\ninterrupted: stopping servers and load generators");
  const waits = [...children].map((c) => c.status.catch(() => {}));
  cleanupNow();
  await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 2000))]); // reap them
  Deno.exit(130);
}

// ---------------------------------------------------------------------------------------------------------------
// /proc helpers

export function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** pid and all its descendants (depth first, parent before children). */
export function treePids(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    let tids: string[] = [];
    try {
      tids = [...Deno.readDirSync(`/proc/${p}/task`)].map((e) => e.name);
    } catch {
      return;
    }
    for (const t of tids) {
      const kids = readText(`/proc/${p}/task/${t}/children`)?.trim();
      if (!kids) continue;
      for (const k of kids.split(/\s+/)) if (!out.includes(Number(k))) walk(Number(k));
    }
  };
  walk(pid);
  return out;
}

export const shells = new Set(["sh", "bash", "dash", "zsh", "env", "timeout"]);

function statusField(pid: number, field: string): number | undefined {
  const m = readText(`/proc/${pid}/status`)?.match(new RegExp(`^${field}:\\s+(\\d+)`, "m"));
  return m ? Number(m[1]) : undefined;
}

/** VmHWM (KiB) per pid of the server's process tree, wrapper shells excluded. */
function peakRss(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const p of treePids(pid)) {
    const comm = readText(`/proc/${p}/comm`)?.trim() ?? "";
    if (shells.has(comm)) continue;
    const hwm = statusField(p, "VmHWM");
    if (hwm !== undefined) out.set(p, hwm);
  }
  return out;
}

const clockTicks = 100; // USER_HZ on Linux

/** user+system CPU seconds of the process tree (live processes only). */
function treeCpu(pid: number): number {
  let ticks = 0;
  for (const p of treePids(pid)) {
    const stat = readText(`/proc/${p}/stat`);
    if (!stat) continue;
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(f[11]) + Number(f[12]); // fields 14 and 15 of proc(5)
  }
  return ticks / clockTicks;
}

// ---------------------------------------------------------------------------------------------------------------
// loadgen build

async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function run(cmd: string, args: string[], extraEnv: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, env: extraEnv, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

export async function buildLoadgen(): Promise<string> {
  await Deno.mkdir(cacheDir, { recursive: true });
  const src = await Deno.readFile(loadgenSrc);
  const goVersion = (await run("go", ["version"])).stdout.trim();
  const hash = (await sha256Hex(new Uint8Array([...src, ...new TextEncoder().encode(goVersion)]))).slice(0, 16);
  const bin = `${cacheDir}/loadgen-${hash}`;
  try {
    await Deno.stat(bin);
    return bin;
  } catch { /* build it */ }
  console.error(`building load generator (${goVersion}) -> ${bin} ...`);
  const tmp = `${bin}.tmp${Deno.pid}`;
  const res = await run("go", ["build", "-o", tmp, loadgenSrc], {
    GO111MODULE: "off",
    GOPATH: `${cacheDir}/gopath:/usr/share/gocode`,
    GOPROXY: "off",
    GOFLAGS: "",
    GOCACHE: `${cacheDir}/gocache`,
  });
  if (res.code !== 0) throw new Error(`go build failed:\n${res.stderr}${res.stdout}`);
  await Deno.rename(tmp, bin);
  // drop binaries of older loadgen sources (not touched for an hour, so a concurrent run keeps its own)
  for (const e of Deno.readDirSync(cacheDir)) {
    const p = `${cacheDir}/${e.name}`;
    if (!/^loadgen-[0-9a-f]{16}$/.test(e.name) || p === bin) continue;
    const st = Deno.statSync(p);
    if (Date.now() - (st.mtime?.getTime() ?? 0) > 3600_000) Deno.removeSync(p);
  }
  return bin;
}

// ---------------------------------------------------------------------------------------------------------------
// servers

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Wall-clock time in Unix microseconds (the load generator's time base for the failover row). */
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

/** One server process: one incarnation of a member. */
export class ServerProc {
  readonly pid: number;
  readonly status: Promise<Deno.CommandStatus>;
  readonly pumps: Promise<unknown>;
  log = "";
  published = false;
  done = false;
  exitStatus?: Deno.CommandStatus;
  /** VmHWM per pid of this incarnation's process tree (wrapper shells excluded), KiB */
  readonly rss = new Map<number, number>();

  constructor(binary: string, args: string[]) {
    if (interrupted) throw new Error("interrupted");
    const proc = new Deno.Command(binary, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
    children.add(proc);
    serverPids.add(proc.pid);
    this.pid = proc.pid;
    this.status = proc.status.then((s) => {
      this.done = true;
      this.exitStatus = s;
      children.delete(proc);
      return s;
    });
    const file = logDir
      ? Deno.openSync(`${logDir}/${binary.split("/").at(-1)}-${proc.pid}.log`, { append: true, create: true })
      : undefined;
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      const dec = new TextDecoder();
      for await (const chunk of stream) {
        file?.writeSync(chunk);
        this.log += dec.decode(chunk, { stream: true });
        if (!this.published && this.log.includes("published")) this.published = true;
        if (this.log.length > 65536) this.log = this.log.slice(-32768);
      }
    };
    this.pumps = Promise.all([pump(proc.stdout), pump(proc.stderr)]).catch(() => {}).finally(() => file?.close());
  }

  exitInfo(): string {
    const s = this.exitStatus;
    return s ? `exit code ${s.code}${s.signal ? ` (${s.signal})` : ""}` : "running";
  }

  tail(): string {
    return this.log.trim().split("\n").slice(-5).join("\n");
  }

  sampleRss() {
    if (this.done) return;
    for (const [p, kb] of peakRss(this.pid)) this.rss.set(p, Math.max(this.rss.get(p) ?? 0, kb));
  }

  rssKb(): number {
    return [...this.rss.values()].reduce((a, b) => a + b, 0);
  }

  /** SIGKILL the whole tree at once; returns the wall-clock time of the kill (Unix µs). */
  kill9(): number {
    const pids = treePids(this.pid).reverse();
    const t = nowUs();
    for (const p of pids) {
      try {
        Deno.kill(p, "SIGKILL");
      } catch { /* gone */ }
    }
    return t;
  }

  async stop() {
    const pids = treePids(this.pid);
    for (const p of [...pids].reverse()) {
      try {
        Deno.kill(p, "SIGTERM");
      } catch { /* gone */ }
    }
    const t = setTimeout(() => {
      for (const p of pids) {
        try {
          Deno.kill(p, "SIGKILL");
        } catch { /* gone */ }
      }
    }, 5000);
    await this.status;
    clearTimeout(t);
    for (const p of pids) {
      try {
        Deno.kill(p, "SIGKILL"); // leftovers of a non-exec wrapper
      } catch { /* gone */ }
    }
    await this.pumps;
    serverPids.delete(this.pid);
  }
}

export interface Member {
  name: string;
  /** host:port of its client URL */
  endpoint: string;
  args(state: "new" | "existing"): string[];
  proc: ServerProc;
  /** peak RSS of earlier incarnations (the member was killed and restarted), KiB */
  earlierRssKb: number;
}

const memberRssKb = (m: Member) => Math.max(m.earlierRssKb, m.proc.rssKb());

/** What the load generator's `status` op reports per endpoint (IDs in hex). */
interface MemberStatus {
  endpoint: string;
  id?: string;
  leader?: string;
  raft_term?: number;
  raft_index?: number;
  applied_index?: number;
  error?: string;
}

/** Something the load generator can run against: its endpoints and the servers' CPU time. */
interface Target {
  endpoints: string;
  cpu(): number;
}

export class Cluster implements Target {
  constructor(
    readonly binary: string,
    readonly members: Member[],
    readonly baseDir: string,
  ) {}

  get endpoints(): string {
    return this.members.map((m) => m.endpoint).join(",");
  }

  /** user+sys CPU seconds of all live members */
  cpu(): number {
    return this.members.reduce((a, m) => a + (m.proc.done ? 0 : treeCpu(m.proc.pid)), 0);
  }

  sampleRss() {
    for (const m of this.members) m.proc.sampleRss();
  }

  dead(): Member | undefined {
    return this.members.find((m) => m.proc.done);
  }

  /** "server died (...)" for a single member, "member m2 died (...)" in a cluster */
  diedReason(m: Member): string {
    return `${this.members.length > 1 ? `member ${m.name}` : "server"} died (${m.proc.exitInfo()}): ${m.proc.tail()}`;
  }

  async stop() {
    await Promise.all(this.members.map((m) => m.proc.stop()));
    await Deno.remove(this.baseDir, { recursive: true }).catch(() => {});
    tempDirs.delete(this.baseDir);
  }
}

/** Maintenance.Status of each endpoint through the load generator (undefined if it could not run). */
export async function memberStatus(loadgen: string, endpoints: string): Promise<MemberStatus[] | undefined> {
  const r = await runLoadgen(loadgen, { endpoints, cpu: () => 0 }, [
    "--op",
    "status",
    "--dial-timeout",
    "1s",
    "--req-timeout",
    "1s",
  ], 20000);
  const members = (r.raw as { members?: MemberStatus[] } | undefined)?.members;
  return Array.isArray(members) ? members : undefined;
}

/** The leader's ID if every member answered and all name the same leader. */
export function agreedLeader(st: MemberStatus[] | undefined): string | undefined {
  if (!st?.length || st.some((m) => m.error || !m.leader || m.leader === "0")) return undefined;
  return st.every((m) => m.leader === st[0].leader) ? st[0].leader : undefined;
}

/**
 * Starts `size` members with one --initial-cluster on loopback (a single member keeps the name "bench"), data dirs
 * side by side under BENCH_CACHE. Ready when every member printed "published" (as etcd does) and the cluster answers
 * a request (and, with several members, all of them agree on a leader); a member that answers without the log line
 * is accepted after 30 s.
 */
export async function startCluster(
  binary: string,
  name: string,
  size: number,
  loadgen: string,
  extraArgs: string[] = [],
): Promise<Cluster> {
  const ports = await freePorts(2 * size);
  const baseDir = await Deno.makeTempDir({ dir: cacheDir, prefix: `data-${name}-` });
  tempDirs.add(baseDir);
  const names = size === 1 ? ["bench"] : Array.from({ length: size }, (_, i) => `m${i + 1}`);
  const clientUrl = (i: number) => `http://127.0.0.1:${ports[2 * i]}`;
  const peerUrl = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
  const initialCluster = names.map((n, i) => `${n}=${peerUrl(i)}`).join(",");
  const members: Member[] = names.map((n, i) => {
    const args = (state: "new" | "existing") => [
      "--name",
      n,
      "--data-dir",
      size === 1 ? `${baseDir}/data` : `${baseDir}/${n}`,
      "--listen-client-urls",
      clientUrl(i),
      "--advertise-client-urls",
      clientUrl(i),
      "--listen-peer-urls",
      peerUrl(i),
      "--initial-advertise-peer-urls",
      peerUrl(i),
      "--initial-cluster",
      initialCluster,
      "--heartbeat-interval",
      String(heartbeatMs),
      "--election-timeout",
      String(electionMs),
      ...(size === 1 ? [] : ["--initial-cluster-token", `bench-${name}-${Deno.pid}`, "--initial-cluster-state", state]),
      ...extraArgs,
    ];
    return {
      name: n,
      endpoint: `127.0.0.1:${ports[2 * i]}`,
      args,
      proc: new ServerProc(binary, args("new")),
      earlierRssKb: 0,
    };
  });
  const cluster = new Cluster(binary, members, baseDir);
  const who = (m: Member) => (size > 1 ? `${m.name} ` : "");
  const started = Date.now();
  let lastPing = 0;
  while (true) {
    const dead = cluster.dead();
    if (dead) {
      await dead.proc.pumps;
      const msg = `${who(dead)}exited before it was ready (${dead.proc.exitInfo()}): ${
        dead.proc.tail() || "(no output)"
      }`;
      await cluster.stop();
      throw new Error(msg);
    }
    const waited = Date.now() - started;
    if (waited > 60000) {
      const m = members.find((m) => !m.proc.published) ?? members[0];
      await cluster.stop();
      throw new Error(`${who(m)}not ready after 60 s: ${m.proc.tail() || "(no output)"}`);
    }
    if (members.every((m) => m.proc.published || waited > 30000) && Date.now() - lastPing > 1000) {
      lastPing = Date.now();
      const agreed = size === 1 || agreedLeader(await memberStatus(loadgen, cluster.endpoints)) !== undefined;
      if (agreed) {
        const r = await runLoadgen(loadgen, cluster, ["--op", "ping", "--dial-timeout", "2s", "--req-timeout", "2s"]);
        if (r.ok) return cluster;
      }
    }
    await sleep(20);
  }
}

/**
 * Restarts a killed member on its data dir (--initial-cluster-state existing) and waits until it published itself,
 * all members agree on a leader and its applied index reached the leader's committed index.
 */
export async function restartMember(loadgen: string, cluster: Cluster, m: Member, timeoutMs = 60000) {
  await m.proc.status;
  m.earlierRssKb = memberRssKb(m);
  serverPids.delete(m.proc.pid);
  m.proc = new ServerProc(cluster.binary, m.args("existing"));
  const started = Date.now();
  while (!m.proc.published) {
    if (m.proc.done) {
      await m.proc.pumps;
      throw new Error(`restarted ${m.name} exited (${m.proc.exitInfo()}): ${m.proc.tail() || "(no output)"}`);
    }
    if (Date.now() - started > timeoutMs) throw new Error(`restarted ${m.name} not ready: ${m.proc.tail()}`);
    await sleep(20);
  }
  while (true) {
    const st = await memberStatus(loadgen, cluster.endpoints);
    const lead = agreedLeader(st);
    const leader = st?.find((s) => s.id === lead);
    const mine = st?.find((s) => s.endpoint === m.endpoint);
    if (leader && mine && (mine.applied_index ?? 0) >= (leader.raft_index ?? Infinity)) return;
    if (m.proc.done) throw new Error(`restarted ${m.name} exited (${m.proc.exitInfo()}): ${m.proc.tail()}`);
    if (Date.now() - started > timeoutMs) {
      throw new Error(`restarted ${m.name} did not catch up within ${timeoutMs / 1000} s: ${JSON.stringify(st)}`);
    }
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// rows

/** What a load generator run left: its exit status, its last stdout line that was not a mark, and its stderr tail. */
interface LoadgenExit {
  status: Deno.CommandStatus;
  out: string;
  err: string;
}

/**
 * Waits for a spawned load generator, SIGKILLing it after `hardMs`: every non-empty stdout line goes to `onMark`,
 * which returns true when it handled the line (a mark such as "#start"); the last other line is returned as `out`.
 */
async function superviseLoadgen(
  proc: Deno.ChildProcess,
  hardMs: number,
  onMark: (line: string) => boolean | Promise<boolean>,
): Promise<LoadgenExit> {
  children.add(proc);
  const killer = setTimeout(() => {
    try {
      proc.kill("SIGKILL");
    } catch { /* gone */ }
  }, hardMs);
  let out = "";
  let err = "";
  const readOut = (async () => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line && !(await onMark(line))) out = line;
      }
    }
    if (buf.trim()) out = buf.trim();
  })();
  const readErr = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) {
      err += dec.decode(chunk, { stream: true });
      if (err.length > 16384) err = err.slice(-8192);
    }
  })();
  const status = await proc.status;
  await Promise.all([readOut, readErr]).catch(() => {});
  clearTimeout(killer);
  children.delete(proc);
  return { status, out, err };
}

/** The last line of a load generator's stderr, for a failure reason. */
function lastErrorLine(err: string): string {
  return (err.trim().split("\n").pop() ?? "").slice(0, 200) || "(no output)";
}

export async function runLoadgen(loadgen: string, target: Target, args: string[], hardMs = 60000): Promise<RowResult> {
  if (interrupted) return { ok: false, reason: "interrupted" };
  const proc = new Deno.Command(loadgen, {
    args: ["--endpoints", target.endpoints, "--marks", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let cpuStart: number | undefined, cpuEnd: number | undefined;
  const { status, out, err } = await superviseLoadgen(proc, hardMs, (line) => {
    if (line === "#start") cpuStart = target.cpu();
    else if (line === "#end") cpuEnd = target.cpu();
    else return false;
    return true;
  });
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(out);
  } catch {
    const why = status.signal === "SIGKILL" ? `load generator killed after ${hardMs / 1000} s` : `exit ${status.code}`;
    return { ok: false, reason: `${why}: ${lastErrorLine(err)}` };
  }
  const requests = Number(j.requests ?? 0);
  const errors = Number(j.errors ?? 0);
  const control = j.op === "ping" || j.op === "status";
  const res: RowResult = {
    ok: status.code === 0 && (requests > 0 || control) && !(j.op === "ping" && errors > 0),
    rps: Number(j.rps ?? 0),
    p50: Number(j.p50_ms ?? 0),
    p99: Number(j.p99_ms ?? 0),
    requests,
    errors,
    firstError: j.error ? String(j.error) : undefined,
    raw: j,
  };
  if (cpuStart !== undefined && cpuEnd !== undefined && cpuEnd >= cpuStart && requests > 0) {
    res.cpuUs = (cpuEnd - cpuStart) / requests * 1e6;
  }
  if (!res.ok) res.reason = res.firstError ?? `exit ${status.code}, ${requests} requests`;
  return res;
}

/** Key and value sizes and the key space of every row, the failover row included. */
const keyArgs = ["--key-size", "8", "--val-size", "256", "--key-space", "100000"];

function commonArgs(): string[] {
  return ["--duration", `${seconds}s`, "--warmup", `${warmup}s`, ...keyArgs];
}

const failoverWriters = 8;
const failoverTimeoutMs = 250;

interface FailoverAttempt {
  ms?: number;
  /** first put of any issue time completed after the kill */
  firstAnyMs?: number;
  killed?: Member;
  newLeader?: string;
  reason?: string;
  raw?: unknown;
}

/**
 * One kill: the load generator runs the writers and names the leader; we SIGKILL that member's process tree and
 * hand the load generator the kill's wall-clock time; it reports when the first put issued after it completed.
 */
async function failoverAttempt(loadgen: string, cluster: Cluster): Promise<FailoverAttempt> {
  if (interrupted) return { reason: "interrupted" };
  const proc = new Deno.Command(loadgen, {
    args: [
      "--endpoints",
      cluster.endpoints,
      "--op",
      "failover",
      "--clients",
      String(failoverWriters),
      "--warmup",
      "1s",
      "--req-timeout",
      `${failoverTimeoutMs}ms`,
      "--failover-max",
      "20s",
      ...keyArgs,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdin = proc.stdin.getWriter();
  const res: FailoverAttempt = {};
  const { status, out, err } = await superviseLoadgen(proc, 90000, async (line) => {
    const m = line.match(/^#leader (\S+)/);
    if (!m) return false;
    const victim = cluster.members.find((x) => x.endpoint === m[1]);
    if (!victim) {
      await stdin.write(new TextEncoder().encode("abort\n")).catch(() => {});
      return true;
    }
    cluster.sampleRss();
    const t = victim.proc.kill9();
    res.killed = victim;
    await stdin.write(new TextEncoder().encode(`${t}\n`)).catch(() => {});
    return true;
  });
  await stdin.close().catch(() => {});
  if (res.killed) await res.killed.proc.status;
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(out);
  } catch {
    res.reason = `exit ${status.code}${status.signal ? ` (${status.signal})` : ""}: ${lastErrorLine(err)}`;
    return res;
  }
  res.raw = j;
  if (status.code === 0 && Number(j.failover_ms) > 0) {
    res.ms = Number(j.failover_ms);
    res.firstAnyMs = Number(j.first_any_ms);
    res.newLeader = cluster.members.find((x) => x.endpoint === j.new_leader)?.name;
  } else res.reason = String(j.error ?? `exit ${status.code}`);
  return res;
}

/** The failover row: `failoverKills` kills of the current leader, the killed member restarted and caught up between. */
async function failoverRow(name: string, loadgen: string, cluster: Cluster): Promise<RowResult> {
  const ms: number[] = [];
  const raws: unknown[] = [];
  let failed = 0;
  let firstError: string | undefined;
  for (let a = 0; a < failoverKills && !interrupted; a++) {
    const dead = cluster.dead();
    if (dead) {
      const t0 = Date.now();
      try {
        await restartMember(loadgen, cluster, dead);
      } catch (e) {
        firstError ??= String(e instanceof Error ? e.message : e);
        failed += failoverKills - a;
        break;
      }
      console.error(
        `[${name}] failover: restarted ${dead.name}, caught up in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
      const other = cluster.dead();
      if (other) {
        firstError ??= cluster.diedReason(other);
        failed += failoverKills - a;
        break;
      }
    }
    const r = await failoverAttempt(loadgen, cluster);
    if (interrupted) break;
    raws.push(r.raw);
    const victim = r.killed ? `killed leader ${r.killed.name}` : "no kill";
    if (r.ms !== undefined) {
      ms.push(r.ms);
      console.error(
        `[${name}] failover ${a + 1}/${failoverKills}: ${victim}; first write issued after the kill done after ` +
          `${r.ms.toFixed(0)} ms (any write: ${r.firstAnyMs?.toFixed(0)} ms), new leader ${r.newLeader ?? "?"}`,
      );
    } else {
      failed++;
      firstError ??= r.reason;
      console.error(`[${name}] failover ${a + 1}/${failoverKills}: ${victim}; failed: ${r.reason}`);
      if (!r.killed) break;
    }
  }
  const res: RowResult = { ok: ms.length > 0, attempts: ms, errors: failed, firstError, raw: raws };
  if (!res.ok) res.reason = firstError ?? "no kill measured";
  return res;
}

/**
 * `etcdctl check perf --load s` on all members' endpoints (50 clients, 150 puts/s for 60 s): etcdctl's criteria are
 * throughput >= 90 % of 150 writes/s, slowest request <= 500 ms, stddev <= 100 ms.
 */
async function checkPerfRow(target: Target): Promise<RowResult> {
  const proc = new Deno.Command(etcdctlBinary, {
    args: ["--endpoints", target.endpoints, "check", "perf", "--load", "s"],
    env: { ETCDCTL_API: "3" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const cpu0 = target.cpu();
  const lines: string[] = [];
  const { status, err } = await superviseLoadgen(proc, 120_000, (line) => {
    lines.push(line);
    return true;
  });
  const cpu1 = target.cpu();
  const perf = parseCheckPerf(`${lines.join("\n")}\n${err}`);
  if (!perf) {
    return { ok: false, reason: `etcdctl check perf: exit ${status.code}: ${lastErrorLine(err || lines.join("\n"))}` };
  }
  const requests = perf.throughput.writesPerSec * 60;
  return {
    ok: true,
    rps: perf.throughput.writesPerSec,
    requests,
    checkPerf: perf,
    cpuUs: requests > 0 ? (cpu1 - cpu0) / requests * 1e6 : undefined,
  };
}

async function benchSide(
  name: string,
  binary: string,
  rows: RowDef[],
  loadgen: string,
  size: number,
): Promise<SideResult> {
  const side: SideResult = { name, binary, rows: new Map() };
  const failAll = (reason: string) => {
    for (const r of rows) if (!side.rows.has(r.id)) side.rows.set(r.id, { ok: false, reason });
  };
  console.error(`[${name}] starting ${size > 1 ? `${size} members of ` : ""}${binary}`);
  const t0 = Date.now();
  let cluster: Cluster;
  try {
    cluster = await startCluster(binary, name, size, loadgen);
  } catch (e) {
    side.startError = `failed to start: ${e instanceof Error ? e.message : e}`;
    console.error(`[${name}] ${side.startError}`);
    failAll(side.startError);
    return side;
  }
  try {
    if (warmupPuts > 0) {
      const w = await runLoadgen(loadgen, cluster, [
        ...["--op", "put", "--clients", "16", "--total", String(warmupPuts), "--warmup", "0s", ...keyArgs],
      ]);
      console.error(
        `[${name}] warm-up: ${warmupPuts} puts${w.ok ? `, ${fmtNum(w.rps!)} req/s` : ` failed: ${w.reason}`}`,
      );
    }
    for (const row of rows) {
      const dead = cluster.dead();
      if (dead) {
        failAll(cluster.diedReason(dead));
        break;
      }
      let res: RowResult;
      if (row.id === "failover") {
        res = await failoverRow(name, loadgen, cluster);
        side.rows.set(row.id, res);
        if (!res.ok) console.error(`[${name}] failover: failed: ${res.reason}`);
        if (interrupted) break;
        cluster.sampleRss();
        continue;
      }
      if (row.id === "checkperf") {
        res = await checkPerfRow(cluster);
        side.rows.set(row.id, res);
        const p = res.checkPerf;
        console.error(
          `[${name}] checkperf: ` +
            (p
              ? `${p.pass ? "PASS" : "FAIL"}: ${p.throughput.writesPerSec} writes/s, slowest ${
                p.slowest.ms.toFixed(1)
              } ms,` +
                ` stddev ${p.stddev.ms.toFixed(1)} ms`
              : `failed: ${res.reason}`),
        );
        if (interrupted) break;
        cluster.sampleRss();
        continue;
      }
      const hardMs = (row.id === "watch" ? 200 : seconds + warmup + 60) * 1000 + 10000;
      try {
        res = await runLoadgen(loadgen, cluster, [...row.args, ...commonArgs()], hardMs);
      } catch (e) {
        res = { ok: false, reason: String(e) };
      }
      const died = cluster.dead();
      if ((!res.ok || res.errors) && died) {
        res.ok = false;
        res.reason = cluster.diedReason(died);
      }
      side.rows.set(row.id, res);
      if (interrupted) break;
      cluster.sampleRss();
      console.error(
        `[${name}] ${row.id}: ` +
          (res.ok
            ? `${fmtNum(res.rps!)} ${row.id === "watch" ? "events" : "req"}/s, p50 ${res.p50} ms, p99 ${res.p99} ms` +
              (res.errors ? `, ${res.errors} errors (${res.firstError})` : "")
            : `failed: ${res.reason}`),
      );
    }
    cluster.sampleRss();
    const perMember = cluster.members.map(memberRssKb);
    if (perMember.some((kb) => kb > 0)) {
      side.peakRssKb = perMember.reduce((a, b) => a + b, 0);
      side.memberRssKb = perMember;
    }
  } finally {
    await cluster.stop();
  }
  console.error(`[${name}] done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return side;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const mean = (xs: (number | undefined)[]) => {
  const v = xs.filter((x): x is number => x !== undefined);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
};

/**
 * Mean of the successful runs of each row (a row failed in every run stays failed); peak RSS is the maximum, per
 * member too; failover attempts of all runs are pooled.
 */
function combine(sides: SideResult[]): SideResult | undefined {
  if (sides.length <= 1) return sides[0];
  const out: SideResult = { name: sides[0].name, binary: sides[0].binary, rows: new Map() };
  const rss = sides.map((s) => s.peakRssKb).filter((x): x is number => x !== undefined);
  if (rss.length) out.peakRssKb = Math.max(...rss);
  const per = sides.map((s) => s.memberRssKb).filter((x): x is number[] => x !== undefined);
  if (per.length) out.memberRssKb = per[0].map((_, i) => Math.max(...per.map((p) => p[i] ?? 0)));
  out.startError = sides.find((s) => s.startError)?.startError;
  for (const id of sides[0].rows.keys()) {
    const all = sides.map((s) => s.rows.get(id)).filter((r): r is RowResult => !!r);
    const good = all.filter((r) => r.ok);
    if (!good.length) {
      out.rows.set(id, all[0]);
      continue;
    }
    if (id === "checkperf") {
      // the worst run: the slowest request of all, and FAIL if any run failed
      const worst = good.reduce((a, r) => (r.checkPerf!.slowest.ms > a.checkPerf!.slowest.ms ? r : a));
      out.rows.set(id, {
        ...worst,
        rps: mean(good.map((r) => r.rps)),
        checkPerf: { ...worst.checkPerf!, pass: good.every((r) => r.checkPerf!.pass) && good.length === all.length },
      });
      continue;
    }
    if (id === "failover") {
      out.rows.set(id, {
        ok: true,
        attempts: good.flatMap((r) => r.attempts ?? []),
        errors: all.reduce((a, r) => a + (r.errors ?? 0), 0),
        firstError: all.find((r) => r.firstError)?.firstError ?? all.find((r) => !r.ok)?.reason,
        raw: all.map((r) => r.raw),
      });
      continue;
    }
    out.rows.set(id, {
      ok: true,
      rps: mean(good.map((r) => r.rps)),
      p50: mean(good.map((r) => r.p50)),
      p99: mean(good.map((r) => r.p99)),
      requests: good.reduce((a, r) => a + (r.requests ?? 0), 0),
      errors: all.reduce((a, r) => a + (r.errors ?? 0), 0) + (all.length - good.length),
      firstError: all.find((r) => r.firstError)?.firstError ?? all.find((r) => !r.ok)?.reason,
      cpuUs: mean(good.map((r) => r.cpuUs)),
      raw: all.map((r) => r.raw),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// output

export function fmtNum(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function fmtLat(r?: RowResult): string {
  if (!r?.ok) return "";
  if (r.checkPerf) return `${fmtMs(r.checkPerf.slowest.ms)} / ${fmtMs(r.checkPerf.stddev.ms)}`;
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  return `${f(r.p50!)} / ${f(r.p99!)}`;
}

function fmtMs(x: number): string {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

export function loadAvg(): string {
  return readText("/proc/loadavg")?.split(" ").slice(0, 3).join(" ") ?? "?";
}

function printTable(
  rows: RowDef[],
  rounds: number,
  size: number,
  etcd?: SideResult,
  ours?: SideResult,
  load?: { before: string; after: string },
) {
  const notes: string[] = [];
  const cell = (side: SideResult | undefined, r: RowDef): string => {
    if (!side) return "-";
    const res = side.rows.get(r.id);
    if (!res) return "-";
    if (!res.ok) {
      notes.push(`[${side.name} ${r.id}] failed: ${(res.reason ?? "").replace(/\s+/g, " ").slice(0, 300)}`);
      return "failed";
    }
    if (res.errors) {
      notes.push(
        r.id === "failover"
          ? `[${side.name} failover] ${res.errors} of the kills failed, first: ${res.firstError}`
          : `[${side.name} ${r.id}] ${res.errors} errors, first: ${res.firstError}`,
      );
    }
    if (r.id === "failover") return `${fmtMs(median(res.attempts!))} ms` + (res.errors ? "*" : "");
    if (res.checkPerf) return `${fmtNum(res.rps!)} ${res.checkPerf.pass ? "PASS" : "FAIL"}`;
    return fmtNum(res.rps!) + (res.errors ? "*" : "");
  };
  const header = [
    "row",
    "etcd req/s",
    "ours req/s",
    "ours/etcd",
    "etcd p50/p99 ms",
    "ours p50/p99 ms",
    "etcd cpu µs/req",
    "ours cpu µs/req",
  ];
  const table: string[][] = [header];
  for (const r of rows) {
    const e = etcd?.rows.get(r.id), o = ours?.rows.get(r.id);
    if (r.id === "failover") {
      const em = e?.ok ? median(e.attempts!) : undefined, om = o?.ok ? median(o.attempts!) : undefined;
      const minMax = (x?: RowResult) =>
        x?.ok ? `${fmtMs(Math.min(...x.attempts!))} / ${fmtMs(Math.max(...x.attempts!))}` : "-";
      table.push([
        `failover ms, kill -9 leader (${failoverKills}×)`,
        cell(etcd, r),
        cell(ours, r),
        em !== undefined && om !== undefined && om > 0 ? `${(em / om).toFixed(2)} e/o` : "-",
        minMax(e),
        minMax(o),
        "-",
        "-",
      ]);
      continue;
    }
    const ratio = e?.ok && o?.ok && e.rps! > 0 ? (o.rps! / e.rps!).toFixed(2) : "-";
    table.push([
      r.label,
      cell(etcd, r),
      cell(ours, r),
      ratio,
      fmtLat(e) || "-",
      fmtLat(o) || "-",
      e?.cpuUs !== undefined ? e.cpuUs.toFixed(r.id === "watch" ? 2 : 0) : "-",
      o?.cpuUs !== undefined ? o.cpuUs.toFixed(r.id === "watch" ? 2 : 0) : "-",
    ]);
  }
  const mb = (kb?: number) => kb !== undefined ? `${(kb / 1024).toFixed(1)} MB` : "-";
  table.push([
    size > 1 ? `peak RSS (VmHWM), sum of ${size}` : "peak RSS (VmHWM)",
    mb(etcd?.peakRssKb),
    mb(ours?.peakRssKb),
    etcd?.peakRssKb && ours?.peakRssKb ? (ours.peakRssKb / etcd.peakRssKb).toFixed(2) : "-",
    "",
    "",
    "",
    "",
  ]);
  printMarkdownTable(table);
  console.log(
    `\n${rounds > 1 ? `mean of ${rounds} rounds; ` : ""}${
      warmupPuts > 0 ? `${warmupPuts} unmeasured puts (16 clients) before the first row; ` : ""
    }${seconds} s per row (+${warmup} s warm-up), 8 B keys, 256 B values; watch: events/s delivered to 1000 watchers` +
      ` on 10 streams, latency = put→event at 100 puts/s; cpu = server user+sys CPU per request (per event for watch)` +
      (size > 1 ? `, summed over the members.` : "."),
  );
  if (size > 1) {
    console.log(
      `${size}-member clusters on 127.0.0.1, one after the other; every row's clients are spread over all members'` +
        ` client URLs (etcd's "all members", not "to leader").`,
    );
  }
  if (rows.some((r) => r.id === "checkperf")) {
    console.log(
      `check perf: etcdctl 3.4's \`check perf --load s\` on all members (50 clients, 150 puts/s, 60 s); the latency` +
        ` columns hold the slowest request / the standard deviation (ms); it passes at >= 135 writes/s, slowest` +
        ` <= 500 ms, stddev <= 100 ms.`,
    );
  }
  if (rows.some((r) => r.id === "failover")) {
    const per = (s?: SideResult) => {
      const r = s?.rows.get("failover");
      return r?.ok ? r.attempts!.map((x) => x.toFixed(0)).join(", ") + " ms" : "-";
    };
    console.log(
      `failover: ${failoverWriters} writers on all members (per-request timeouts ${failoverTimeoutMs}-${
        2 * failoverTimeoutMs
      } ms), the leader (from Maintenance.Status) is SIGKILLed; ms = kill → completion of the first successful put` +
        ` issued after the kill, median of the kills (min / max in the p50/p99 columns); lower is better, so the ratio` +
        ` is etcd/ours ("e/o", > 1 = ours recovers faster). The killed member is restarted and caught up between` +
        ` kills. Both sides: --heartbeat-interval ${heartbeatMs} --election-timeout ${electionMs}. Per kill: etcd` +
        ` ${per(etcd)}; ours ${per(ours)}.`,
    );
  }
  if (size > 1) {
    const per = (s?: SideResult) => s?.memberRssKb?.map((kb, i) => `m${i + 1} ${mb(kb)}`).join(", ") ?? "-";
    console.log(`peak RSS per member: etcd ${per(etcd)}; ours ${per(ours)}.`);
  }
  if (load) console.log(`load average (1/5/15 min): ${load.before} before, ${load.after} after.`);
  if (etcd) console.log(`etcd: ${etcd.binary}`);
  if (ours) console.log(`ours: ${ours.binary}`);
  if (notes.length) console.log("\n" + notes.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// main

function parseArgs(argv: string[]) {
  const opts: { only?: string; rows?: string; members: number; json?: string; rounds: number } = {
    members: 1,
    rounds: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [k, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const val = () => inline ?? argv[++i];
    if (k === "--") continue; // `deno task bench -- --members 3` passes the separator on
    else if (k === "--only") opts.only = val();
    else if (k === "--rows") opts.rows = val();
    else if (k === "--failover") { // the failover row of a 3-member cluster alone
      opts.members = 3;
      opts.rows = "failover";
    } else if (k === "--members") opts.members = Number(val());
    else if (k === "--rounds") opts.rounds = Math.max(1, Math.floor(Number(val()) || 1));
    else if (k === "--json") opts.json = val();
    else if (k === "-h" || k === "--help") {
      console.log(
        "usage: deno run -A scripts/bench.ts [--only etcd|ours] [--rows " + rowDefs.map((r) => r.id).join(",") +
          "] [--rounds N] [--json FILE] [--members N] [--failover]\nenv: BENCH_SECONDS BENCH_WARMUP BENCH_ETCD" +
          " BENCH_OURS BENCH_CACHE BENCH_WATCH_PUTS BENCH_FAILOVER_KILLS BENCH_HEARTBEAT_MS BENCH_ELECTION_MS",
      );
      Deno.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}

async function main(): Promise<number> {
  // --scale: a million keys, ten thousand watchers, a hundred thousand leases (scripts/bench/scale.ts)
  if (Deno.args.includes("--scale")) {
    return await (await import("./bench/scale.ts")).runScaleBench(
      Deno.args.filter((a) => a !== "--scale" && a !== "--"),
      {
        agreedLeader,
        buildLoadgen,
        fmtNum,
        loadAvg,
        memberStatus,
        readText,
        restartMember,
        runLoadgen,
        ServerProc,
        shells,
        sleep,
        startCluster,
        treePids,
      },
    );
  }
  // --gateway: the traffic gateway against nginx, haproxy and Caddy (scripts/bench/gateway.ts)
  if (Deno.args.includes("--gateway")) return await runGatewayBench(Deno.args.filter((a) => a !== "--gateway"));
  let opts;
  try {
    opts = parseArgs(Deno.args);
  } catch (e) {
    console.error(String(e instanceof Error ? e.message : e));
    return 2;
  }
  if (!Number.isInteger(opts.members) || opts.members < 1 || opts.members === 2) {
    console.error(`--members must be 1 or at least 3 (a cluster that survives the loss of its leader)`);
    return 2;
  }
  if (opts.only && opts.only !== "etcd" && opts.only !== "ours") {
    console.error(`--only must be etcd or ours`);
    return 2;
  }
  const size = opts.members;
  let rows = rowDefs.filter((r) => r.defaultRow && (!r.cluster || size > 1));
  if (opts.rows) {
    const want = opts.rows.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = want.filter((w) => !rowDefs.some((r) => r.id === w));
    if (unknown.length) {
      console.error(`unknown rows ${unknown.join(",")}; available: ${rowDefs.map((r) => r.id).join(",")}`);
      return 2;
    }
    const clusterOnly = want.find((w) => rowDefs.find((r) => r.id === w)?.cluster);
    if (size === 1 && clusterOnly) {
      console.error(`the ${clusterOnly} row needs --members 3 or more`);
      return 2;
    }
    rows = rowDefs.filter((r) => want.includes(r.id));
  }
  const etcdBin = env("BENCH_ETCD") ?? "/usr/bin/etcd";
  const oursBin = env("BENCH_OURS") ?? `${repo}scripts/etcd`;

  let loadgen: string;
  try {
    loadgen = await buildLoadgen();
  } catch (e) {
    console.error(`cannot build the load generator: ${e instanceof Error ? e.message : e}`);
    return 1;
  }

  const loadBefore = loadAvg();
  const t0 = Date.now();
  console.error(`load average ${loadBefore}`);
  // rounds > 1 alternate the order (etcd, ours, ours, etcd, ...) so that drift in the machine's load hits both sides
  const runs: Record<string, SideResult[]> = { etcd: [], ours: [] };
  for (let round = 0; round < opts.rounds && !interrupted; round++) {
    const order = round % 2 === 0 ? ["etcd", "ours"] : ["ours", "etcd"];
    for (const name of order) {
      if (opts.only && opts.only !== name) continue;
      if (interrupted) break;
      if (opts.rounds > 1) console.error(`round ${round + 1}/${opts.rounds}`);
      runs[name].push(await benchSide(name, name === "etcd" ? etcdBin : oursBin, rows, loadgen, size));
    }
  }
  const etcd = combine(runs.etcd);
  const ours = combine(runs.ours);
  const load = { before: loadBefore, after: loadAvg() };
  console.error(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  console.log("");
  printTable(rows, opts.rounds, size, etcd, ours, load);
  if (opts.json) {
    const dump = (s?: SideResult) =>
      s && {
        binary: s.binary,
        peakRssKb: s.peakRssKb,
        memberRssKb: s.memberRssKb,
        startError: s.startError,
        rows: Object.fromEntries([...s.rows].map(([k, v]) => [k, { ...v }])),
      };
    await Deno.writeTextFile(
      opts.json,
      JSON.stringify(
        {
          seconds,
          warmup,
          members: size,
          loadavg: load,
          date: new Date().toISOString(),
          etcd: dump(etcd),
          ours: dump(ours),
        },
        null,
        2,
      ),
    );
  }
  return 0;
}

if (import.meta.main) {
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.stack : e}`);
  } finally {
    cleanupNow();
  }
  Deno.exit(code);
}
