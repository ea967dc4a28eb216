/**
 * `deno task bench`: the same workloads against the real etcd and against our server, one after the other, with one
 * Go load generator (scripts/bench/loadgen.go, built on etcd 3.4's clientv3 from Debian's golang-etcd-server-dev).
 *
 *   deno run -A scripts/bench.ts [--only etcd|ours] [--rows put1,put16,...] [--rounds N] [--json out.json]
 *                                [--members 1]
 *
 * --rows picks rows by id (always run in the table's order): put1 put16 put256 range16 rangeser16 txn16 keepalive16
 * watch, plus grant16 (lease grant, not run by default). --rounds N repeats both sides in alternating order (etcd,
 * ours, ours, etcd, ...) and reports the mean per row: the machine is shared and noisy, a single run can be off by
 * 20-30 %. --members N > 1 is reserved for multi-member clusters (not implemented yet).
 *
 * Environment:
 *   BENCH_SECONDS  measured seconds per row (default 5)      BENCH_WARMUP  unmeasured warm-up seconds per row (0.5)
 *   BENCH_ETCD     reference server (default /usr/bin/etcd)  BENCH_OURS    our server (default <repo>/scripts/etcd)
 *   BENCH_CACHE    loadgen binary, Go caches, data dirs (default /var/tmp/eg-bench)
 *   BENCH_WATCH_PUTS  puts fanned out to the 1000 watchers (default 2000)
 *
 * Each server runs single-member on free ports with its data dir under BENCH_CACHE, never both at once. Prints a table
 * of req/s, ratio, p50/p99 latency and server CPU per request, and the servers' peak RSS (VmHWM of the real server
 * process, not of a wrapper shell).
 */
import { freePorts } from "../tests/lib/ports.ts";

const repo = new URL("../", import.meta.url).pathname;
const env = (k: string) => Deno.env.get(k) || undefined;
const cacheDir = env("BENCH_CACHE") ?? "/var/tmp/eg-bench";
const seconds = Number(env("BENCH_SECONDS") ?? 5);
const warmup = Number(env("BENCH_WARMUP") ?? 0.5);
const watchPuts = Number(env("BENCH_WATCH_PUTS") ?? 2000);
const loadgenSrc = `${repo}scripts/bench/loadgen.go`;

interface RowDef {
  id: string;
  label: string;
  args: string[];
  /** unit of the throughput column */
  unit?: string;
  defaultRow: boolean;
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
];

interface RowResult {
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
  raw?: unknown;
}

interface SideResult {
  name: string;
  binary: string;
  rows: Map<string, RowResult>;
  /** summed VmHWM of the server's (non-shell) processes, KiB */
  peakRssKb?: number;
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

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** pid and all its descendants (depth first, parent before children). */
function treePids(pid: number): number[] {
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

const shells = new Set(["sh", "bash", "dash", "zsh", "env", "timeout"]);

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

async function buildLoadgen(): Promise<string> {
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

interface Server {
  pid: number;
  endpoint: string;
  exited(): boolean;
  exitInfo(): string;
  tail(): string;
  stop(): Promise<void>;
}

async function startServer(binary: string, name: string, loadgen: string): Promise<Server> {
  const [cp, pp] = await freePorts(2);
  const dataDir = await Deno.makeTempDir({ dir: cacheDir, prefix: `data-${name}-` });
  tempDirs.add(dataDir);
  const clientUrl = `http://127.0.0.1:${cp}`;
  const peerUrl = `http://127.0.0.1:${pp}`;
  const args = [
    "--name",
    "bench",
    "--data-dir",
    `${dataDir}/data`,
    "--listen-client-urls",
    clientUrl,
    "--advertise-client-urls",
    clientUrl,
    "--listen-peer-urls",
    peerUrl,
    "--initial-advertise-peer-urls",
    peerUrl,
    "--initial-cluster",
    `bench=${peerUrl}`,
  ];
  const proc = new Deno.Command(binary, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  children.add(proc);
  serverPids.add(proc.pid);
  let log = "";
  let published = false;
  let done = false;
  let exitStatus: Deno.CommandStatus | undefined;
  const status = proc.status.then((s) => {
    done = true;
    exitStatus = s;
    children.delete(proc);
    return s;
  });
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      log += dec.decode(chunk, { stream: true });
      if (!published && log.includes("published")) published = true;
      if (log.length > 65536) log = log.slice(-32768);
    }
  };
  const pumps = Promise.all([pump(proc.stdout), pump(proc.stderr)]).catch(() => {});
  const server: Server = {
    pid: proc.pid,
    endpoint: `127.0.0.1:${cp}`,
    exited: () => done,
    exitInfo: () =>
      exitStatus ? `exit code ${exitStatus.code}${exitStatus.signal ? ` (${exitStatus.signal})` : ""}` : "running",
    tail: () => log.trim().split("\n").slice(-5).join("\n"),
    stop: async () => {
      const pids = treePids(proc.pid);
      for (const p of pids.reverse()) {
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
      await status;
      clearTimeout(t);
      for (const p of pids) {
        try {
          Deno.kill(p, "SIGKILL"); // leftovers of a non-exec wrapper
        } catch { /* gone */ }
      }
      await pumps;
      serverPids.delete(proc.pid);
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      tempDirs.delete(dataDir);
    },
  };
  // Ready when it printed "published" (as etcd does) and answers a request; a server that answers without the log
  // line is accepted after 30 s.
  const started = Date.now();
  let lastPing = 0;
  while (true) {
    if (done) {
      await pumps;
      throw new Error(`exited before it was ready (${server.exitInfo()}): ${server.tail() || "(no output)"}`);
    }
    const waited = Date.now() - started;
    if (waited > 60000) {
      await server.stop();
      throw new Error(`not ready after 60 s: ${server.tail() || "(no output)"}`);
    }
    if ((published || waited > 30000) && Date.now() - lastPing > 1000) {
      lastPing = Date.now();
      const r = await runLoadgen(loadgen, server, ["--op", "ping", "--dial-timeout", "2s", "--req-timeout", "2s"]);
      if (r.ok) return server;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// rows

async function runLoadgen(loadgen: string, server: Server, args: string[], hardMs = 60000): Promise<RowResult> {
  const proc = new Deno.Command(loadgen, {
    args: ["--endpoints", server.endpoint, "--marks", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  children.add(proc);
  const killer = setTimeout(() => {
    try {
      proc.kill("SIGKILL");
    } catch { /* gone */ }
  }, hardMs);
  let cpuStart: number | undefined, cpuEnd: number | undefined;
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
        if (line === "#start") cpuStart = treeCpu(server.pid);
        else if (line === "#end") cpuEnd = treeCpu(server.pid);
        else if (line) out = line;
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
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(out);
  } catch {
    const why = status.signal === "SIGKILL" ? `load generator killed after ${hardMs / 1000} s` : `exit ${status.code}`;
    return { ok: false, reason: `${why}: ${(err.trim().split("\n").pop() ?? "").slice(0, 200) || "(no output)"}` };
  }
  const requests = Number(j.requests ?? 0);
  const errors = Number(j.errors ?? 0);
  const res: RowResult = {
    ok: status.code === 0 && (requests > 0 || j.op === "ping") && !(j.op === "ping" && errors > 0),
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

function commonArgs(): string[] {
  return [
    "--duration",
    `${seconds}s`,
    "--warmup",
    `${warmup}s`,
    "--key-size",
    "8",
    "--val-size",
    "256",
    "--key-space",
    "100000",
  ];
}

async function benchSide(
  name: string,
  binary: string,
  rows: RowDef[],
  loadgen: string,
): Promise<SideResult> {
  const side: SideResult = { name, binary, rows: new Map() };
  const failAll = (reason: string) => {
    for (const r of rows) if (!side.rows.has(r.id)) side.rows.set(r.id, { ok: false, reason });
  };
  console.error(`[${name}] starting ${binary}`);
  let server: Server;
  try {
    server = await startServer(binary, name, loadgen);
  } catch (e) {
    side.startError = `failed to start: ${e instanceof Error ? e.message : e}`;
    console.error(`[${name}] ${side.startError}`);
    failAll(side.startError);
    return side;
  }
  const rss = new Map<number, number>();
  const sampleRss = () => {
    for (const [p, kb] of peakRss(server.pid)) rss.set(p, Math.max(rss.get(p) ?? 0, kb));
  };
  try {
    for (const row of rows) {
      if (server.exited()) {
        failAll(`server died (${server.exitInfo()}): ${server.tail()}`);
        break;
      }
      const hardMs = (row.id === "watch" ? 200 : seconds + warmup + 60) * 1000 + 10000;
      let res: RowResult;
      try {
        res = await runLoadgen(loadgen, server, [...row.args, ...commonArgs()], hardMs);
      } catch (e) {
        res = { ok: false, reason: String(e) };
      }
      if ((!res.ok || res.errors) && server.exited()) {
        res.ok = false;
        res.reason = `server died (${server.exitInfo()}): ${server.tail()}`;
      }
      side.rows.set(row.id, res);
      if (interrupted) break;
      if (!server.exited()) sampleRss();
      console.error(
        `[${name}] ${row.id}: ` +
          (res.ok
            ? `${fmtNum(res.rps!)} ${row.id === "watch" ? "events" : "req"}/s, p50 ${res.p50} ms, p99 ${res.p99} ms` +
              (res.errors ? `, ${res.errors} errors (${res.firstError})` : "")
            : `failed: ${res.reason}`),
      );
    }
    if (!server.exited()) sampleRss();
    if (rss.size) side.peakRssKb = [...rss.values()].reduce((a, b) => a + b, 0);
  } finally {
    await server.stop();
  }
  return side;
}

/** Mean of the successful runs of each row (a row failed in every run stays failed); peak RSS is the maximum. */
function combine(sides: SideResult[]): SideResult | undefined {
  if (sides.length <= 1) return sides[0];
  const out: SideResult = { name: sides[0].name, binary: sides[0].binary, rows: new Map() };
  const rss = sides.map((s) => s.peakRssKb).filter((x): x is number => x !== undefined);
  if (rss.length) out.peakRssKb = Math.max(...rss);
  out.startError = sides.find((s) => s.startError)?.startError;
  const mean = (xs: (number | undefined)[]) => {
    const v = xs.filter((x): x is number => x !== undefined);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
  };
  for (const id of sides[0].rows.keys()) {
    const all = sides.map((s) => s.rows.get(id)).filter((r): r is RowResult => !!r);
    const good = all.filter((r) => r.ok);
    if (!good.length) {
      out.rows.set(id, all[0]);
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

function fmtNum(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function fmtLat(r?: RowResult): string {
  if (!r?.ok) return "";
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  return `${f(r.p50!)} / ${f(r.p99!)}`;
}

function printTable(rows: RowDef[], rounds: number, etcd?: SideResult, ours?: SideResult) {
  const notes: string[] = [];
  const cell = (side: SideResult | undefined, r: RowDef): string => {
    if (!side) return "-";
    const res = side.rows.get(r.id);
    if (!res) return "-";
    if (!res.ok) {
      notes.push(`[${side.name} ${r.id}] failed: ${(res.reason ?? "").replace(/\s+/g, " ").slice(0, 300)}`);
      return "failed";
    }
    if (res.errors) notes.push(`[${side.name} ${r.id}] ${res.errors} errors, first: ${res.firstError}`);
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
  const mb = (s?: SideResult) => s?.peakRssKb !== undefined ? `${(s.peakRssKb / 1024).toFixed(1)} MB` : "-";
  table.push([
    "peak RSS (VmHWM)",
    mb(etcd),
    mb(ours),
    etcd?.peakRssKb && ours?.peakRssKb ? (ours.peakRssKb / etcd.peakRssKb).toFixed(2) : "-",
    "",
    "",
    "",
    "",
  ]);
  const widths = header.map((_, i) => Math.max(...table.map((row) => row[i].length)));
  const line = (row: string[]) =>
    "| " + row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(" | ") + " |";
  console.log(line(table[0]));
  console.log("|" + widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|") + "|");
  for (const row of table.slice(1)) console.log(line(row));
  console.log(
    `\n${
      rounds > 1 ? `mean of ${rounds} rounds; ` : ""
    }${seconds} s per row (+${warmup} s warm-up), 8 B keys, 256 B values; watch: events/s delivered to 1000 watchers` +
      ` on 10 streams, latency = put→event at 100 puts/s; cpu = server user+sys CPU per request (per event for watch).`,
  );
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
    if (k === "--only") opts.only = val();
    else if (k === "--rows") opts.rows = val();
    else if (k === "--members") opts.members = Number(val());
    else if (k === "--rounds") opts.rounds = Math.max(1, Math.floor(Number(val()) || 1));
    else if (k === "--json") opts.json = val();
    else if (k === "-h" || k === "--help") {
      console.log(
        "usage: deno run -A scripts/bench.ts [--only etcd|ours] [--rows " + rowDefs.map((r) => r.id).join(",") +
          "] [--rounds N] [--json FILE] [--members N]\nenv: BENCH_SECONDS BENCH_WARMUP BENCH_ETCD BENCH_OURS BENCH_CACHE BENCH_WATCH_PUTS",
      );
      Deno.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}

async function main(): Promise<number> {
  let opts;
  try {
    opts = parseArgs(Deno.args);
  } catch (e) {
    console.error(String(e instanceof Error ? e.message : e));
    return 2;
  }
  if (opts.members !== 1) {
    console.log(`--members ${opts.members}: not implemented yet (only single-member runs are supported)`);
    return 1;
  }
  if (opts.only && opts.only !== "etcd" && opts.only !== "ours") {
    console.error(`--only must be etcd or ours`);
    return 2;
  }
  let rows = rowDefs.filter((r) => r.defaultRow);
  if (opts.rows) {
    const want = opts.rows.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = want.filter((w) => !rowDefs.some((r) => r.id === w));
    if (unknown.length) {
      console.error(`unknown rows ${unknown.join(",")}; available: ${rowDefs.map((r) => r.id).join(",")}`);
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

  // rounds > 1 alternate the order (etcd, ours, ours, etcd, ...) so that drift in the machine's load hits both sides
  const runs: Record<string, SideResult[]> = { etcd: [], ours: [] };
  for (let round = 0; round < opts.rounds && !interrupted; round++) {
    const order = round % 2 === 0 ? ["etcd", "ours"] : ["ours", "etcd"];
    for (const name of order) {
      if (opts.only && opts.only !== name) continue;
      if (interrupted) break;
      if (opts.rounds > 1) console.error(`round ${round + 1}/${opts.rounds}`);
      runs[name].push(await benchSide(name, name === "etcd" ? etcdBin : oursBin, rows, loadgen));
    }
  }
  const etcd = combine(runs.etcd);
  const ours = combine(runs.ours);
  console.log("");
  printTable(rows, opts.rounds, etcd, ours);
  if (opts.json) {
    const dump = (s?: SideResult) =>
      s && {
        binary: s.binary,
        peakRssKb: s.peakRssKb,
        startError: s.startError,
        rows: Object.fromEntries([...s.rows].map(([k, v]) => [k, { ...v }])),
      };
    await Deno.writeTextFile(
      opts.json,
      JSON.stringify({ seconds, warmup, date: new Date().toISOString(), etcd: dump(etcd), ours: dump(ours) }, null, 2),
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
