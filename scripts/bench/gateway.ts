/**
 * `deno task bench -- --gateway`: the same backend (nginx, one worker, a 19-byte body) behind four reverse proxies,
 * loaded by wrk (1 thread) at 64 and 256 connections:
 *
 *   ours     a member process started as `deno task start` starts it (its V8 flags are read from deno.json) running
 *            HTTPServer + Pipeline + Proxy created through its admin API
 *   nginx    one worker, upstream keep-alive 256
 *   haproxy  one thread, http-reuse always
 *   caddy    reverse_proxy (Go, the class of Easegress)
 *
 * The machine is shared and noisy, so all contenders run at once (idle when not measured) and are measured in
 * several short interleaved rounds (ours nginx haproxy caddy, ours nginx ...; each round at every connection count).
 * Each proxy is pinned to CPU 0 and wrk and the backend to CPU 1 (taskset), so that every proxy gets the same one-core
 * budget (nginx: one worker, haproxy: one thread, Caddy: GOMAXPROCS follows the affinity, ours: one JS thread plus
 * V8's helpers) and the load generator never competes with the proxy.
 *
 * Prints, per proxy and connection count, the median and range over the rounds of req/s, p50/p99 latency and proxy CPU
 * per request (user+system of the proxy's processes over the run), the ratios of ours to the others round by round
 * (median and range), each round's load average and busy share of both CPUs (CPU 1 near 100 % means wrk or the
 * backend limited the row), and the memory per idle keep-alive connection (RSS growth with 1000 idle connections
 * open, each after one request, measured after the warm-up and before the rounds).
 *
 * Flags: --rounds N (default 5), --gateway-seconds N (default 3; env BENCH_SECONDS), --only ours,nginx,haproxy,caddy,
 * --conns 64,256, --no-pin, --ours-v8 FLAGS (repeatable: adds a contender "ours#N" running our member with
 * --v8-flags=FLAGS instead of deno.json's, to compare V8 settings in the same rounds), --ours-tree DIR (repeatable:
 * adds a contender "ours#N" running the member of another checkout, e.g. `git worktree add /tmp/base main`, to compare
 * code changes in the same rounds), --fairness (after the rounds, each proxy once more per connection count under
 * scripts/bench/fairness.go, a closed-loop generator counting requests per client connection: the spread of the
 * per-connection counts, among them the slowest 1 % of the connections against the median one; needs `go`).
 */
import { freePorts } from "../../tests/lib/ports.ts";

const repo = new URL("../../", import.meta.url).pathname;
/** The V8 flags of `deno task start` (deno.json), which our member runs with here as well. */
function startV8Flags(): string {
  const tasks = JSON.parse(Deno.readTextFileSync(`${repo}deno.json`)).tasks as Record<string, string>;
  return /--v8-flags=(\S+)/.exec(tasks.start)?.[1] ?? "";
}
/** Seconds of load per connection count before the rounds, the same for every proxy. */
const WARMUP_SECONDS = 4;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Proc {
  child: Deno.ChildProcess;
  pid: number;
}

const children: Proc[] = [];

/** Starts a process, pinned to `cpu` when given (taskset execs it: the pid is the command's). */
function spawn(cmd: string, args: string[], cpu: string | null, cwd?: string, env?: Record<string, string>): Proc {
  if (cpu !== null) [cmd, args] = ["taskset", ["-c", cpu, cmd, ...args]];
  const child = new Deno.Command(cmd, { args, cwd, env, stdin: "null", stdout: "null", stderr: "null" }).spawn();
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

async function wrk(url: string, conns: number, seconds: number, cpu: string | null): Promise<WrkResult> {
  const args = ["-t1", `-c${conns}`, `-d${seconds}s`, "--latency", url];
  const out = await new Deno.Command(cpu === null ? "wrk" : "taskset", {
    args: cpu === null ? args : ["-c", cpu, "wrk", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: parseMs(/^\s*50%\s+(\S+)/m.exec(text)?.[1] ?? ""), // not the "75.50%" of a stdev column
    p99: parseMs(/^\s*99%\s+(\S+)/m.exec(text)?.[1] ?? ""),
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
  start(backendPort: number, port: number, dir: string, cpu: string | null): Promise<Proc>;
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

/** Our member (of the checkout at `root`) with these V8 flags. */
function oursSide(name: string, v8Flags: string, root = repo): Side {
  return {
    name,
    async start(backendPort, port, dir, cpu) {
      const [client, peer, api] = await freePorts(3);
      const home = `${dir}/${name.replace(/[^\w]/g, "_")}`;
      await Deno.mkdir(home, { recursive: true });
      const p = spawn(
        Deno.execPath(),
        [
          "run",
          "-A",
          "--no-check",
          ...(v8Flags ? [`--v8-flags=${v8Flags}`] : []),
          `${root}/mod.ts`,
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
        ],
        cpu,
        home,
      );
      await waitHttp(`http://127.0.0.1:${api}/apis/v2/healthz`);
      const objects = [
        `kind: Pipeline\nname: bench-pipeline\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n` +
        `  pools:\n  - servers: [{url: http://127.0.0.1:${backendPort}}]\n`,
        `kind: HTTPServer\nname: bench-server\nport: ${port}\naddress: 127.0.0.1\n` +
        `rules:\n- paths:\n  - pathPrefix: /\n    backend: bench-pipeline\n`,
      ];
      for (const o of objects) {
        const r = await fetch(`http://127.0.0.1:${api}/apis/v2/objects`, {
          method: "POST",
          body: o,
          headers: { "content-type": "application/yaml" },
        });
        await r.body?.cancel();
        if (r.status !== 201) throw new Error(`creating the bench objects: ${r.status}`);
      }
      return p;
    },
  };
}

const otherSides: Side[] = [
  {
    name: "nginx",
    start(backendPort, port, dir, cpu) {
      Deno.writeTextFileSync(
        `${dir}/nginx-proxy.conf`,
        `worker_processes 1;\ndaemon off;\npid ${dir}/proxy.pid;\nerror_log ${dir}/proxy-error.log;\n` +
          `events { worker_connections 8192; }\nhttp {\n  access_log off;\n  keepalive_requests 10000000;\n` +
          `  upstream be { server 127.0.0.1:${backendPort}; keepalive 256; }\n` +
          `  server { listen 127.0.0.1:${port}; location / { proxy_pass http://be; proxy_http_version 1.1; ` +
          `proxy_set_header Connection ""; } }\n}\n`,
      );
      return Promise.resolve(spawn("nginx", ["-c", `${dir}/nginx-proxy.conf`, "-p", dir], cpu));
    },
  },
  {
    name: "haproxy",
    start(backendPort, port, dir, cpu) {
      Deno.writeTextFileSync(
        `${dir}/haproxy.cfg`,
        `global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n` +
          `  timeout server 60s\n  http-reuse always\nfrontend fe\n  bind 127.0.0.1:${port}\n  default_backend be\n` +
          `backend be\n  server s1 127.0.0.1:${backendPort}\n`,
      );
      return Promise.resolve(spawn("haproxy", ["-f", `${dir}/haproxy.cfg`, "-db"], cpu));
    },
  },
  {
    name: "caddy",
    start(backendPort, port, dir, cpu) {
      Deno.writeTextFileSync(
        `${dir}/Caddyfile`,
        `{\n  admin off\n  auto_https off\n}\nhttp://127.0.0.1:${port} {\n` +
          `  reverse_proxy 127.0.0.1:${backendPort}\n}\n`,
      );
      return Promise.resolve(
        spawn("caddy", ["run", "--config", `${dir}/Caddyfile`, "--adapter", "caddyfile"], cpu, dir, {
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
  round: number;
  wrk: WrkResult;
  cpuUs: number;
  /** busy share of each CPU during the run (all processes of the machine) */
  busy: number[];
  load: string;
}

function loadAvg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

/** Per-CPU [busy, total] jiffies from /proc/stat. */
function cpuTimes(): [number, number][] {
  const out: [number, number][] = [];
  for (const line of Deno.readTextFileSync("/proc/stat").split("\n")) {
    if (!/^cpu\d/.test(line)) continue;
    const f = line.split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    out.push([total - f[3] - f[4], total]);
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** "median (min–max)" */
function spread(xs: number[], digits: number): string {
  if (xs.length === 0) return "-";
  const f = (x: number) => x.toFixed(digits);
  return xs.length === 1 ? f(xs[0]) : `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
}

/** Runs the gateway benchmark; returns the exit code. */
export async function runGatewayBench(argv: string[]): Promise<number> {
  let seconds = Number(Deno.env.get("BENCH_SECONDS") ?? 3);
  let rounds = 5;
  let only: string[] | null = null;
  let connsList = [64, 256];
  let pin = true;
  const oursV8: string[] = [];
  const oursTrees: string[] = [];
  let fairness = false;
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].includes("=") && !argv[i].startsWith("--ours-v8=")
      ? argv[i].split("=", 2)
      : argv[i].startsWith("--ours-v8=")
      ? ["--ours-v8", argv[i].slice("--ours-v8=".length)]
      : [argv[i], undefined];
    const val = () => inline ?? argv[++i];
    if (k === "--gateway-seconds") seconds = Number(val());
    else if (k === "--rounds") rounds = Number(val());
    else if (k === "--only") only = val().split(",");
    else if (k === "--conns") connsList = val().split(",").map(Number);
    else if (k === "--no-pin") pin = false;
    else if (k === "--fairness") fairness = true;
    else if (k === "--ours-v8") oursV8.push(val());
    else if (k === "--ours-tree") oursTrees.push(val());
    else if (k === "--") continue; // `deno task bench -- --gateway` passes it through
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  const startFlags = startV8Flags();
  const sides = [
    oursSide("ours", startFlags),
    ...oursV8.map((f, i) => oursSide(`ours#${i + 1}`, f)),
    ...oursTrees.map((d, i) => oursSide(`ours#${oursV8.length + i + 1}`, startFlags, d)),
    ...otherSides,
  ].filter((s) => only === null || only.includes(s.name) || (s.name.startsWith("ours#") && only.includes("ours")));
  // one core for the proxy under test, the other for wrk and the backend
  const proxyCpu = pin ? "0" : null;
  const loadCpu = pin ? "1" : null;
  const dir = await Deno.makeTempDir({ prefix: "eg-gw-bench-" });
  const [backendPort] = await freePorts(1);
  Deno.writeTextFileSync(`${dir}/backend.conf`, nginxBackendConf(backendPort, dir));
  const backend = spawn("nginx", ["-c", `${dir}/backend.conf`, "-p", dir], loadCpu);
  const rows: Row[] = [];
  const idle = new Map<string, number>();
  const fair: string[] = [];
  const loadBefore = loadAvg();
  const running: { side: Side; proc: Proc; url: string; port: number }[] = [];
  try {
    await waitHttp(`http://127.0.0.1:${backendPort}/`);
    for (const side of sides) {
      const [port] = await freePorts(1);
      const proc = await side.start(backendPort, port, dir, proxyCpu);
      running.push({ side, proc, url: `http://127.0.0.1:${port}/`, port });
    }
    for (const r of running) {
      await waitHttp(r.url);
      // the same warm-up for every proxy, at every connection count of the rounds: the JIT (V8 tiers up over
      // seconds of load, which ours needs and the C and Go proxies do not) and the upstream connections
      for (const conns of connsList) await wrk(r.url, conns, WARMUP_SECONDS, loadCpu);
      // after the warm-up (the JIT's code is not the connections' cost) and before the rounds (a heap that grew under
      // them shrinks while the connections open, which hid their cost)
      idle.set(r.side.name, await idleConnCost(r.proc.pid, r.port));
    }
    for (let round = 1; round <= rounds; round++) {
      for (const conns of connsList) {
        for (const r of running) {
          const load = loadAvg();
          const cpu0 = cpuSeconds(r.proc.pid);
          const t0 = cpuTimes();
          const w = await wrk(r.url, conns, seconds, loadCpu);
          const t1 = cpuTimes();
          const cpu = cpuSeconds(r.proc.pid) - cpu0;
          const busy = t1.map(([b, t], i) => (b - t0[i][0]) / Math.max(1, t - t0[i][1]));
          rows.push({
            side: r.side.name,
            conns,
            round,
            wrk: w,
            cpuUs: w.requests > 0 ? (cpu * 1e6) / w.requests : NaN,
            busy,
            load,
          });
          console.error(
            `round ${round} ${r.side.name} c${conns}: ${Math.round(w.rps)} req/s, p99 ${w.p99.toFixed(1)} ms, ` +
              `${((cpu * 1e6) / w.requests).toFixed(1)} µs CPU/req, CPUs busy ${
                busy.map((b) => `${Math.round(b * 100)}%`).join(" ")
              }, load ${load}`,
          );
        }
      }
    }
    if (fairness) {
      const tool = `${dir}/fairness`;
      const built = await new Deno.Command("go", {
        args: ["build", "-o", tool, `${repo}scripts/bench/fairness.go`],
        env: { GO111MODULE: "off", GOFLAGS: "", GOCACHE: `${dir}/gocache` },
        stdout: "null",
        stderr: "inherit",
      }).output();
      if (!built.success) throw new Error("building scripts/bench/fairness.go failed");
      for (const conns of connsList) {
        for (const r of running) {
          const load = loadAvg();
          const [cmd, args] = loadCpu === null ? [tool, [] as string[]] : ["taskset", ["-c", loadCpu, tool]];
          const out = await new Deno.Command(cmd, {
            args: [...args, "-addr", `127.0.0.1:${r.port}`, "-c", String(conns), "-d", String(seconds)],
            stdout: "piped",
            stderr: "inherit",
          }).output();
          const line = `${r.side.name.padEnd(10)} ${new TextDecoder().decode(out.stdout).trim()} [load ${load}]`;
          console.error(`fairness ${line}`);
          fair.push(line);
        }
      }
    }
  } finally {
    for (const r of running) await stop(r.proc);
    await stop(backend);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  printGatewayReport(rows, idle, fair, {
    variants: [...oursV8.map((f) => `the same with --v8-flags=${f}`), ...oursTrees.map((d) => `the member of ${d}`)],
    seconds,
    rounds,
    pinned: pin,
    startFlags,
    load: `${loadBefore} -> ${loadAvg()}`,
  });
  return 0;
}

function printGatewayReport(
  rows: Row[],
  idle: Map<string, number>,
  fair: string[],
  o: { variants: string[]; seconds: number; rounds: number; pinned: boolean; startFlags: string; load: string },
): void {
  const names = [...new Set(rows.map((r) => r.side))];
  const connsList = [...new Set(rows.map((r) => r.conns))];
  const pad = (s: string, n: number) => s.padStart(n);
  console.log(
    `\ngateway: nginx backend (19-byte body), wrk -t1, ${o.rounds} interleaved rounds of ${o.seconds} s per row; ` +
      `load average ${o.load}`,
  );
  console.log(
    o.pinned ? "each proxy pinned to CPU 0, wrk and the backend to CPU 1" : "not pinned (--no-pin)",
  );
  console.log(`ours: a member process (deno task start's flags: --v8-flags=${o.startFlags})`);
  o.variants.forEach((v, i) => console.log(`ours#${i + 1}: ${v}`));
  console.log("medians over the rounds (min–max):");
  console.log(
    `${"proxy".padEnd(10)}${pad("conns", 6)}${pad("req/s", 22)}${pad("p50 ms", 20)}${pad("p99 ms", 22)}${
      pad("CPU/req µs", 22)
    }${pad("errors", 8)}`,
  );
  for (const conns of connsList) {
    for (const name of names) {
      const rs = rows.filter((r) => r.side === name && r.conns === conns);
      console.log(
        `${name.padEnd(10)}${pad(String(conns), 6)}${pad(spread(rs.map((r) => r.wrk.rps), 0), 22)}${
          pad(spread(rs.map((r) => r.wrk.p50), 2), 20)
        }${pad(spread(rs.map((r) => r.wrk.p99), 1), 22)}${pad(spread(rs.map((r) => r.cpuUs), 1), 22)}${
          pad(String(rs.reduce((a, r) => a + r.wrk.errors, 0)), 8)
        }`,
      );
    }
  }
  const ours = names.filter((n) => n === "ours" || n.startsWith("ours#"));
  const others = names.filter((n) => !ours.includes(n));
  console.log("ratios round by round (req/s of ours / req/s of the other; p99 of ours / p99 of the other):");
  for (const me of ours) {
    for (const conns of connsList) {
      for (const other of [...ours.filter((n) => n !== me && me === "ours"), ...others]) {
        const rps: number[] = [];
        const p99: number[] = [];
        for (const r of rows.filter((r) => r.side === me && r.conns === conns)) {
          const x = rows.find((q) => q.side === other && q.conns === conns && q.round === r.round);
          if (!x) continue;
          rps.push(r.wrk.rps / x.wrk.rps);
          p99.push(r.wrk.p99 / x.wrk.p99);
        }
        console.log(
          `  ${me}/${other} c${conns}: req/s ${spread(rps, 2)} [${rps.map((x) => x.toFixed(2)).join(" ")}]` +
            `, p99 ${spread(p99, 2)}`,
        );
      }
    }
  }
  console.log("rounds: load average at the start of each row, CPU 0 / CPU 1 busy during it:");
  for (const round of [...new Set(rows.map((r) => r.round))]) {
    console.log(
      `  ${round}: ` +
        rows.filter((r) => r.round === round).map((r) =>
          `${r.side} c${r.conns} [${r.load.split(" ")[0]}] ${r.busy.map((b) => Math.round(b * 100)).join("/")}%`
        ).join(", "),
    );
  }
  console.log("memory per idle keep-alive connection (RSS growth over 1000 connections):");
  for (const [s, b] of idle) console.log(`  ${s.padEnd(10)} ${(b / 1024).toFixed(1)} KiB`);
  if (fair.length > 0) {
    console.log(
      "fairness (scripts/bench/fairness.go, one run each; per-conn = requests per client connection, slowest1% = the " +
        "1 % of the connections served least):",
    );
    for (const l of fair) console.log(`  ${l}`);
  }
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
