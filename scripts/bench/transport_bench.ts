/**
 * Transport micro-benchmark: unary calls/s and server CPU µs per call for @grpc/grpc-js's Server vs our GrpcServer
 * (server/transport/) on Deno, both serving etcd's KV service with trivial handlers (canned responses, no store).
 *
 *   deno run -A scripts/bench/transport_bench.ts [--seconds 5] [--inflight 64] [--rounds 1] [--client grpcjs|go|both]
 *
 * Each server runs alone in its own Deno process; its CPU time (user+sys from /proc/<pid>/stat) is sampled around the
 * measured interval. Load generators:
 *   grpcjs  a @grpc/grpc-js client in a separate Deno process, `inflight` unary Range calls in flight on one channel
 *   go      scripts/bench/loadgen.go (etcd 3.4 clientv3, Put, `inflight` clients over 16 connections); needs a built
 *           loadgen: $BENCH_LOADGEN or the newest /var/tmp/eg-bench/loadgen-* (built by `deno task bench`)
 * Internal sub-commands: `serve <grpcjs|ours> <port>` and `load <port> <inflight> <seconds>`.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { GrpcServer } from "../../server/transport/grpc_server.ts";
import { grpcRoot } from "../../proto/grpc_js.ts";
import { KVService } from "../../proto/mod.ts";
import { freePorts } from "../../tests/lib/ports.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const header = {
  cluster_id: "14841639068965178418",
  member_id: "10276657743932975437",
  revision: "42",
  raft_term: "2",
};
const kv = {
  key: Buffer.from("foo"),
  value: Buffer.from("bar"),
  create_revision: "2",
  mod_revision: "42",
  version: "7",
};

function handlers(): Record<string, Any> {
  return {
    Range: (_call: Any, cb: Any) => cb(null, { header, kvs: [kv], count: "1" }),
    Put: (_call: Any, cb: Any) => cb(null, { header }),
    DeleteRange: (_call: Any, cb: Any) => cb(null, { header, deleted: "0" }),
    Txn: (_call: Any, cb: Any) => cb(null, { header, succeeded: true, responses: [] }),
    Compact: (_call: Any, cb: Any) => cb(null, { header }),
  };
}

async function serve(impl: string, port: number): Promise<void> {
  if (impl === "grpcjs") {
    const srv = new grpc.Server({ "grpc.max_concurrent_streams": 2 ** 31 - 1 });
    srv.addService(KVService, handlers());
    await new Promise<void>((res, rej) =>
      srv.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res()))
    );
  } else {
    const srv = new GrpcServer();
    srv.addService(KVService as Any, handlers());
    await srv.listen("127.0.0.1", port);
  }
  console.log("ready");
}

async function load(port: number, inflight: number, seconds: number): Promise<void> {
  const client = new grpcRoot.etcdserverpb.KV(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const req = { key: Buffer.from("foo"), serializable: true };
  const call = () => new Promise<void>((res, rej) => client.Range(req, (e: Error | null) => (e ? rej(e) : res())));
  // warm-up
  const warmEnd = performance.now() + 1000;
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (performance.now() < warmEnd) await call();
  }));
  console.log("#start");
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let calls = 0;
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (performance.now() < end) {
      await call();
      calls++;
    }
  }));
  const t1 = performance.now();
  console.log(JSON.stringify({ calls, seconds: (t1 - t0) / 1000 }));
  client.close();
}

const clockTicks = 100;
/** CPU seconds (user+sys) of a live process; NaN once it is gone. */
function cpuSeconds(pid: number): number {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return NaN;
  }
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / clockTicks; // utime, stime
}

function findLoadgen(): string | undefined {
  const env = Deno.env.get("BENCH_LOADGEN");
  if (env) return env;
  try {
    const dir = "/var/tmp/eg-bench";
    const bins = [...Deno.readDirSync(dir)].filter((e) => /^loadgen-[0-9a-f]{16}$/.test(e.name))
      .map((e) => ({ p: `${dir}/${e.name}`, t: Deno.statSync(`${dir}/${e.name}`).mtime?.getTime() ?? 0 }))
      .sort((a, b) => b.t - a.t);
    return bins[0]?.p;
  } catch {
    return undefined;
  }
}

interface Row {
  impl: string;
  client: string;
  rps: number;
  cpuUs: number;
  cpuPct: number;
}

/** Reads lines of a child's stdout, calling `onLine` for each. */
async function lines(stream: ReadableStream<Uint8Array>, onLine: (l: string) => void): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  if (buf) onLine(buf);
}

async function measure(impl: string, client: string, inflight: number, seconds: number): Promise<Row> {
  const [port] = await freePorts(1);
  const self = new URL(import.meta.url).pathname;
  const srv = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", self, "serve", impl, String(port)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let lg: Deno.ChildProcess | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      let ok = false;
      lines(srv.stdout, (l) => {
        if (l === "ready" && !ok) {
          ok = true;
          resolve();
        }
      }).then(() => ok || reject(new Error("server exited")));
    });
    let cpu0 = 0;
    let result: { calls: number; seconds: number } | undefined;
    if (client === "grpcjs") {
      lg = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", self, "load", String(port), String(inflight), String(seconds)],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      await lines(lg.stdout, (l) => {
        if (l === "#start") cpu0 = cpuSeconds(srv.pid);
        else if (l.startsWith("{")) result = JSON.parse(l);
      });
    } else {
      lg = new Deno.Command(findLoadgen()!, {
        args: [
          `--endpoints=127.0.0.1:${port}`,
          "--op=put",
          `--clients=${inflight}`,
          `--duration=${seconds}s`,
          "--warmup=1s",
          "--marks",
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      await lines(lg.stdout, (l) => {
        if (l === "#start") cpu0 = cpuSeconds(srv.pid);
        else if (l.startsWith("{")) {
          const r = JSON.parse(l);
          if (r.error) throw new Error(r.error);
          result = { calls: r.requests, seconds: r.seconds };
        }
      });
    }
    const cpu1 = cpuSeconds(srv.pid);
    await lg.status;
    lg = undefined;
    if (!result || Number.isNaN(cpu1)) {
      console.error(`${impl}: the server process died or the load generator failed (no result)`);
      return { impl, client, rps: NaN, cpuUs: NaN, cpuPct: NaN };
    }
    const cpu = cpu1 - cpu0;
    return {
      impl,
      client,
      rps: result.calls / result.seconds,
      cpuUs: (cpu / result.calls) * 1e6,
      cpuPct: (cpu / result.seconds) * 100,
    };
  } finally {
    if (lg) {
      try {
        lg.kill("SIGKILL");
      } catch { /* gone */ }
      await lg.status;
    }
    try {
      srv.kill("SIGKILL");
    } catch { /* gone */ }
    await srv.status;
  }
}

async function main(): Promise<void> {
  const [cmd, ...rest] = Deno.args;
  if (cmd === "serve") return await serve(rest[0], Number(rest[1]));
  if (cmd === "load") return await load(Number(rest[0]), Number(rest[1]), Number(rest[2]));
  const opt = (name: string, def: string) => {
    const i = Deno.args.indexOf(`--${name}`);
    return i >= 0 ? Deno.args[i + 1] : def;
  };
  const seconds = Number(opt("seconds", "5"));
  const inflight = Number(opt("inflight", "64"));
  const rounds = Number(opt("rounds", "1"));
  const clientOpt = opt("client", "both");
  const clients = clientOpt === "both" ? ["grpcjs", "go"] : [clientOpt];
  if (clients.includes("go") && !findLoadgen()) {
    console.error("no Go loadgen found (set BENCH_LOADGEN or run `deno task bench` once); skipping the go client");
    clients.splice(clients.indexOf("go"), 1);
  }
  const rows: Row[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const client of clients) {
      const order = r % 2 === 0 ? ["grpcjs", "ours"] : ["ours", "grpcjs"];
      for (const impl of order) {
        const row = await measure(impl, client, inflight, seconds);
        rows.push(row);
        console.error(
          `${impl.padEnd(7)} client=${client.padEnd(6)} ${row.rps.toFixed(0).padStart(7)} calls/s  ` +
            `server CPU ${row.cpuUs.toFixed(1).padStart(6)} µs/call (${row.cpuPct.toFixed(0)}% of a core)`,
        );
      }
    }
  }
  console.log(`\nmean over ${rounds} round(s), ${inflight} in flight, ${seconds} s:`);
  console.log("| server | client | calls/s | server CPU µs/call |");
  console.log("|---|---|---|---|");
  for (const client of clients) {
    for (const impl of ["grpcjs", "ours"]) {
      const all = rows.filter((x) => x.impl === impl && x.client === client);
      const sel = all.filter((x) => !Number.isNaN(x.rps));
      const crashed = all.length - sel.length;
      const rps = sel.reduce((a, x) => a + x.rps, 0) / sel.length;
      const cpu = sel.reduce((a, x) => a + x.cpuUs, 0) / sel.length;
      const name = impl === "ours" ? "GrpcServer (server/transport)" : "@grpc/grpc-js Server";
      const note = crashed > 0 ? ` (server crashed in ${crashed} of ${all.length} runs)` : "";
      console.log(`| ${name} | ${client} | ${rps.toFixed(0)}${note} | ${cpu.toFixed(1)} |`);
    }
  }
}

if (import.meta.main) await main();
