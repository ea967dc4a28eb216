/**
 * `deno task bench -- --gateway`: the same backend (nginx, one worker, a 19-byte body) behind four reverse proxies,
 * one after the other, loaded by wrk (1 thread) at 64 and 256 connections:
 *
 *   ours     a member process (`mod.ts server`) running HTTPServer + Pipeline + Proxy created through its admin API
 *   nginx    one worker, upstream keep-alive 256
 *   haproxy  one thread, http-reuse always
 *   caddy    reverse_proxy (Go, the class of Easegress)
 *
 * Prints req/s, p50/p99 latency, proxy CPU per request (user+system of the proxy's processes over the run) and the
 * ratios of ours to the others, the memory per idle keep-alive connection (RSS growth with 1000 idle connections open,
 * each after one request), and the load average before and after (the machine is shared: compare ratios).
 *
 * Flags: --gateway-seconds N (default 8; env BENCH_SECONDS), --only ours,nginx,haproxy,caddy, --conns 64,256.
 * Env: BENCH_GW_V8 the V8 flags of our member.
 */
import { freePorts } from "../../tests/lib/ports.ts";

const repo = new URL("../../", import.meta.url).pathname;
/**
 * V8 flags of our member: those of `deno task start` with a 32 MiB semi-space instead of 2 (BENCH_GW_V8 overrides).
 * A proxy makes many short-lived objects per request; with 2 MiB young-generation scavenges ran so often that CPU per
 * request was 68-70 µs against 46-58 µs with 32 MiB (alternating 5 s runs, 64 connections, load average 8-9).
 */
const OURS_V8_FLAGS = Deno.env.get("BENCH_GW_V8") ??
  "--v8-flags=--max-semi-space-size=32,--heap-growing-percent=100,--invocation-count-for-turbofan=600";
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Proc {
  child: Deno.ChildProcess;
  pid: number;
}

const children: Proc[] = [];

function spawn(cmd: string, args: string[], cwd?: string, env?: Record<string, string>): Proc {
  const child = new Deno.Command(cmd, { args, cwd, env, stdin: "null", stdout: "null", stderr: "piped" }).spawn();
  const p = { child, pid: child.pid };
  children.push(p);
  return p;
}

async function stop(p: Proc): Promise<void> {
  for (const pid of [...descendants(p.pid), p.pid]) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  await p.child.status.catch(() => {});
  await p.child.stderr.cancel().catch(() => {});
}

/** pid's descendants (from /proc). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(e.name), ppid);
    } catch { /* exited */ }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) {
      if (pp === p) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(pid);
  return out;
}

/** CPU seconds (user + system) of a process tree. */
function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${p}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]);
    } catch { /* exited */ }
  }
  return ticks / 100;
}

/** RSS in KiB of a process tree. */
function rssKb(pid: number): number {
  let kb = 0;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${p}/status`));
      if (m) kb += Number(m[1]);
    } catch { /* exited */ }
  }
  return kb;
}

async function waitHttp(url: string, want = 200, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url);
      await r.body?.cancel();
      if (r.status === want) return;
    } catch { /* not yet */ }
    await sleep(200);
  }
  throw new Error(`${url} did not answer ${want}`);
}

interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
}

function parseMs(s: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s.trim());
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "ms" ? v : m[2] === "s" ? v * 1000 : v * 60000;
}

async function wrk(url: string, conns: number, seconds: number): Promise<WrkResult> {
  const out = await new Deno.Command("wrk", {
    args: ["-t1", `-c${conns}`, `-d${seconds}s`, "--latency", url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: parseMs(/50%\s+(\S+)/.exec(text)?.[1] ?? ""),
    p99: parseMs(/99%\s+(\S+)/.exec(text)?.[1] ?? ""),
    requests: num(/(\d+) requests in/),
    errors: (errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + num(/Non-2xx or 3xx responses: (\d+)/) || 0,
  };
}

/** RSS growth per idle keep-alive connection: opens `n` connections, one request each, and keeps them open. */
async function idleConnCost(pid: number, port: number, n = 1000): Promise<number> {
  await sleep(500);
  const before = rssKb(pid);
  const conns: Deno.Conn[] = [];
  const req = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: bench\r\n\r\n");
  try {
    for (let i = 0; i < n; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(c);
      await c.write(req);
      const buf = new Uint8Array(4096);
      await c.read(buf);
    }
    await sleep(1000);
    return ((rssKb(pid) - before) * 1024) / n;
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  }
}

interface Side {
  name: string;
  start(backendPort: number, port: number, dir: string): Promise<Proc>;
}

const nginxBackendConf = (port: number, dir: string) =>
  `worker_processes 1;
daemon off;
pid ${dir}/backend.pid;
error_log ${dir}/backend-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  server { listen 127.0.0.1:${port}; location / { return 200 "hello from backend\\n"; } }
}
`;

const sides: Side[] = [
  {
    name: "ours",
    async start(backendPort, port, dir) {
      const [client, peer, api] = await freePorts(3);
      const home = `${dir}/ours`;
      await Deno.mkdir(home, { recursive: true });
      const p = spawn(Deno.execPath(), [
        "run",
        "-A",
        "--no-check",
        OURS_V8_FLAGS,
        `${repo}mod.ts`,
        "server",
        "--name",
        "bench",
        "--api-addr",
        `127.0.0.1:${api}`,
        "--listen-client-urls",
        `http://127.0.0.1:${client}`,
        "--advertise-client-urls",
        `http://127.0.0.1:${client}`,
        "--listen-peer-urls",
        `http://127.0.0.1:${peer}`,
        "--initial-advertise-peer-urls",
        `http://127.0.0.1:${peer}`,
      ], home);
      await waitHttp(`http://127.0.0.1:${api}/apis/v2/healthz`);
      const objects = [
        `kind: Pipeline\nname: bench-pipeline\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n` +
        `  pools:\n  - servers: [{url: http://127.0.0.1:${backendPort}}]\n`,
        `kind: HTTPServer\nname: bench-server\nport: ${port}\naddress: 127.0.0.1\n` +
        `rules:\n- paths:\n  - pathPrefix: /\n    backend: bench-pipeline\n`,
      ];
      for (const o of objects) {
        const r = await fetch(`http://127.0.0.1:${api}/apis/v2/objects`, { method: "POST", body: o });
        await r.body?.cancel();
        if (r.status !== 201) throw new Error(`creating the bench objects: ${r.status}`);
      }
      return p;
    },
  },
  {
    name: "nginx",
    start(backendPort, port, dir) {
      Deno.writeTextFileSync(
        `${dir}/nginx-proxy.conf`,
        `worker_processes 1;\ndaemon off;\npid ${dir}/proxy.pid;\nerror_log ${dir}/proxy-error.log;\n` +
          `events { worker_connections 8192; }\nhttp {\n  access_log off;\n  keepalive_requests 10000000;\n` +
          `  upstream be { server 127.0.0.1:${backendPort}; keepalive 256; }\n` +
          `  server { listen 127.0.0.1:${port}; location / { proxy_pass http://be; proxy_http_version 1.1; ` +
          `proxy_set_header Connection ""; } }\n}\n`,
      );
      return Promise.resolve(spawn("nginx", ["-c", `${dir}/nginx-proxy.conf`, "-p", dir]));
    },
  },
  {
    name: "haproxy",
    start(backendPort, port, dir) {
      Deno.writeTextFileSync(
        `${dir}/haproxy.cfg`,
        `global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n` +
          `  timeout server 60s\n  http-reuse always\nfrontend fe\n  bind 127.0.0.1:${port}\n  default_backend be\n` +
          `backend be\n  server s1 127.0.0.1:${backendPort}\n`,
      );
      return Promise.resolve(spawn("haproxy", ["-f", `${dir}/haproxy.cfg`, "-db"]));
    },
  },
  {
    name: "caddy",
    start(backendPort, port, dir) {
      Deno.writeTextFileSync(
        `${dir}/Caddyfile`,
        `{\n  admin off\n  auto_https off\n}\nhttp://127.0.0.1:${port} {\n` +
          `  reverse_proxy 127.0.0.1:${backendPort}\n}\n`,
      );
      return Promise.resolve(
        spawn("caddy", ["run", "--config", `${dir}/Caddyfile`, "--adapter", "caddyfile"], dir, {
          HOME: dir,
          XDG_DATA_HOME: dir,
          XDG_CONFIG_HOME: dir,
        }),
      );
    },
  },
];

interface Row {
  side: string;
  conns: number;
  wrk: WrkResult;
  cpuUs: number;
}

function loadAvg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

/** Runs the gateway benchmark; returns the exit code. */
export async function runGatewayBench(argv: string[]): Promise<number> {
  let seconds = Number(Deno.env.get("BENCH_SECONDS") ?? 8);
  let only = sides.map((s) => s.name);
  let connsList = [64, 256];
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].includes("=") ? argv[i].split("=", 2) : [argv[i], undefined];
    const val = () => inline ?? argv[++i];
    if (k === "--gateway-seconds") seconds = Number(val());
    else if (k === "--only") only = val().split(",");
    else if (k === "--conns") connsList = val().split(",").map(Number);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  const dir = await Deno.makeTempDir({ prefix: "eg-gw-bench-" });
  const [backendPort] = await freePorts(1);
  Deno.writeTextFileSync(`${dir}/backend.conf`, nginxBackendConf(backendPort, dir));
  const backend = spawn("nginx", ["-c", `${dir}/backend.conf`, "-p", dir]);
  const rows: Row[] = [];
  const idle = new Map<string, number>();
  const loadBefore = loadAvg();
  try {
    await waitHttp(`http://127.0.0.1:${backendPort}/`);
    for (const side of sides.filter((s) => only.includes(s.name))) {
      const [port] = await freePorts(1);
      const p = await side.start(backendPort, port, dir);
      try {
        const url = `http://127.0.0.1:${port}/`;
        await waitHttp(url);
        await wrk(url, 64, 2); // warm-up (JIT, upstream connections)
        for (const conns of connsList) {
          const cpu0 = cpuSeconds(p.pid);
          const w = await wrk(url, conns, seconds);
          const cpu = cpuSeconds(p.pid) - cpu0;
          rows.push({ side: side.name, conns, wrk: w, cpuUs: w.requests > 0 ? (cpu * 1e6) / w.requests : NaN });
          console.error(`${side.name} c${conns}: ${Math.round(w.rps)} req/s`);
        }
        idle.set(side.name, await idleConnCost(p.pid, port));
      } finally {
        await stop(p);
      }
    }
  } finally {
    await stop(backend);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const pad = (s: string, n: number) => s.padStart(n);
  console.log(
    `\ngateway: nginx backend (19-byte body), wrk -t1, ${seconds} s per row; load average ${loadBefore} -> ${loadAvg()}`,
  );
  console.log(`ours: a member process running HTTPServer + Pipeline + Proxy, ${OURS_V8_FLAGS}`);
  console.log(
    `${"proxy".padEnd(8)}${pad("conns", 6)}${pad("req/s", 9)}${pad("p50 ms", 8)}${pad("p99 ms", 8)}${
      pad("CPU/req µs", 11)
    }${pad("errors", 8)}${pad("ours/x", 8)}`,
  );
  for (const r of rows) {
    const ours = rows.find((o) => o.side === "ours" && o.conns === r.conns);
    const ratio = ours && r.side !== "ours" ? (ours.wrk.rps / r.wrk.rps).toFixed(2) : "";
    console.log(
      `${r.side.padEnd(8)}${pad(String(r.conns), 6)}${pad(String(Math.round(r.wrk.rps)), 9)}${
        pad(r.wrk.p50.toFixed(2), 8)
      }${pad(r.wrk.p99.toFixed(2), 8)}${pad(r.cpuUs.toFixed(1), 11)}${pad(String(r.wrk.errors), 8)}${pad(ratio, 8)}`,
    );
  }
  console.log("memory per idle keep-alive connection (RSS growth over 1000 connections):");
  for (const [s, b] of idle) console.log(`  ${s.padEnd(8)} ${(b / 1024).toFixed(1)} KiB`);
  return 0;
}

/** Kills what the benchmark started (on a signal). */
export function cleanupGatewayBench(): void {
  for (const p of children) {
    for (const pid of [...descendants(p.pid), p.pid]) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
}
