/**
 * Runs the system's etcdctl (v3 API) against a test server: one-shot commands with optional stdin, background
 * processes (e.g. `etcdctl watch`) whose output can be awaited, and a JSON parser that keeps 64-bit IDs exact.
 */

/** The etcdctl executable: `$ETCDCTL` or /usr/bin/etcdctl (Debian's 3.4). */
export const etcdctlBinary = Deno.env.get("ETCDCTL") ?? "/usr/bin/etcdctl";

export interface EtcdctlResult {
  code: number;
  stdout: string;
  stderr: string;
}

function command(endpoint: string, args: string[], stdin: boolean): Deno.Command {
  return new Deno.Command(etcdctlBinary, {
    args: ["--endpoints", endpoint, ...args],
    env: { ETCDCTL_API: "3" },
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs `etcdctl --endpoints <endpoint> <args...>` with ETCDCTL_API=3, feeding `stdin` if given. */
export async function etcdctl(
  endpoint: string,
  args: string[],
  stdin?: string | Uint8Array,
): Promise<EtcdctlResult> {
  const proc = command(endpoint, args, stdin !== undefined).spawn();
  if (stdin !== undefined) {
    const w = proc.stdin.getWriter();
    await w.write(typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin);
    await w.close();
  }
  const out = await proc.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Like etcdctl() but throws (with the full output) unless the exit code is 0; returns stdout. */
export async function etcdctlOk(endpoint: string, args: string[], stdin?: string | Uint8Array): Promise<string> {
  const r = await etcdctl(endpoint, args, stdin);
  if (r.code !== 0) {
    throw new Error(`etcdctl ${args.join(" ")} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r.stdout;
}

export interface BackgroundEtcdctl {
  /** Everything printed to stdout so far. */
  stdout(): string;
  /** Everything printed to stderr so far. */
  stderr(): string;
  /** Resolves once `pred(stdout)` holds; rejects after `timeoutMs` (or if the process exits first). */
  waitFor(pred: (stdout: string) => boolean, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code once the process ended by itself. */
  status: Promise<number>;
  /** SIGTERM (if still running) and wait for exit and output. */
  stop(): Promise<void>;
}

/** Starts a long-running etcdctl command (e.g. watch) in the background. */
export function etcdctlSpawn(endpoint: string, args: string[]): BackgroundEtcdctl {
  const proc = command(endpoint, args, false).spawn();
  let out = "";
  let err = "";
  let exited = false;
  const status = proc.status.then((s) => {
    exited = true;
    return s.code;
  });
  const pump = async (stream: ReadableStream<Uint8Array>, add: (s: string) => void) => {
    const dec = new TextDecoder();
    for await (const chunk of stream) add(dec.decode(chunk, { stream: true }));
  };
  const pumps = Promise.all([pump(proc.stdout, (s) => out += s), pump(proc.stderr, (s) => err += s)]);
  return {
    stdout: () => out,
    stderr: () => err,
    status: status.then(async (code) => {
      await pumps;
      return code;
    }),
    async waitFor(pred, timeoutMs = 10000) {
      const deadline = Date.now() + timeoutMs;
      while (!pred(out)) {
        if (exited) await pumps;
        if (pred(out)) return;
        if (exited || Date.now() > deadline) {
          throw new Error(`etcdctl ${args.join(" ")}: condition not met${exited ? " (exited)" : ""}\n${out}\n${err}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      if (!exited) {
        try {
          proc.kill("SIGTERM");
        } catch { /* already gone */ }
      }
      await status;
      await pumps;
    },
  };
}

/**
 * JSON.parse that turns integers beyond 2^53 (cluster/member/lease IDs) into decimal strings instead of rounding
 * them, so that IDs can be compared exactly (`BigInt(x)` works on either form).
 */
// deno-lint-ignore no-explicit-any
export function parseJson(text: string): any {
  return JSON.parse(
    text,
    (_k: string, v: unknown, ctx?: { source?: string }) =>
      typeof v === "number" && !Number.isSafeInteger(v) && ctx?.source && /^-?\d+$/.test(ctx.source) ? ctx.source : v,
  );
}

/** What `etcdctl check perf` reported: each criterion's verdict and value, and the overall verdict. */
export interface CheckPerfResult {
  pass: boolean;
  throughput: { pass: boolean; writesPerSec: number };
  slowest: { pass: boolean; ms: number };
  stddev: { pass: boolean; ms: number };
}

/**
 * Reads `etcdctl check perf` output ("PASS: Throughput is 150 writes/s", "FAIL: Slowest request took 0.61s",
 * "PASS: Stddev is 0.0075s", then "PASS" or "FAIL"; the progress bar's carriage returns are skipped); undefined if
 * it holds no verdict.
 */
export function parseCheckPerf(output: string): CheckPerfResult | undefined {
  const lines = output.split(/[\r\n]+/).map((l) => l.trim());
  const find = (re: RegExp) => {
    for (const l of lines) {
      const m = re.exec(l);
      if (m) return { pass: m[1] === "PASS", value: Number(m[2]) };
    }
  };
  const tp = find(/^(PASS|FAIL): Throughput is (\d+) writes\/s/);
  const slow = find(/^(PASS|FAIL): Slowest request took ([\d.]+)s/);
  const sd = find(/^(PASS|FAIL): Stddev is ([\d.]+)s/);
  const verdict = lines.findLast((l) => l === "PASS" || l === "FAIL");
  if (!tp || !slow || !sd || !verdict) return undefined;
  return {
    pass: verdict === "PASS",
    throughput: { pass: tp.pass, writesPerSec: tp.value },
    slowest: { pass: slow.pass, ms: slow.value * 1000 },
    stddev: { pass: sd.pass, ms: sd.value * 1000 },
  };
}
