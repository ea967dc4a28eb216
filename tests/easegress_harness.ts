/**
 * Test harness for the Easegress member and egctl: starts `mod.ts server` processes on loopback with free ports,
 * runs `mod.ts egctl`, and starts real etcd 3.4 processes (/usr/bin/etcd) for the standalone-etcd tests.
 * Every process is killed by the test that started it (try/finally).
 */
import { freePorts } from "./lib/ports.ts";
import { type Proc, spawnProcess } from "./lib/process.ts";

export type { Proc };

const repo = new URL("../", import.meta.url).pathname;
const MOD = `${repo}mod.ts`;

/** Waits until `pred` holds, polling. */
export async function waitFor(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An Easegress member process. */
export interface Member extends Proc {
  name: string;
  apiAddr: string;
  home: string;
  args: string[];
}

/** `deno run mod.ts <args>`, inside network namespace `netns` when given: [command, arguments]. */
function modCommand(args: string[], netns?: string): [string, string[]] {
  const deno = [Deno.execPath(), "run", "-A", "--no-check", MOD, ...args];
  return netns ? ["ip", ["netns", "exec", netns, ...deno]] : [deno[0], deno.slice(1)];
}

/**
 * Starts `easegress-server` with these flags in `home` (created if needed), inside network namespace `netns` when
 * given; waits for the API unless told not to.
 */
export async function startMember(
  name: string,
  args: string[],
  opts: { home?: string; wait?: boolean; env?: Record<string, string>; apiAddr?: string; netns?: string } = {},
): Promise<Member> {
  const home = opts.home ?? await Deno.makeTempDir({ prefix: `eg-${name}-` });
  await Deno.mkdir(home, { recursive: true });
  const p = spawnProcess(...modCommand(["server", ...args], opts.netns), {
    cwd: home,
    env: opts.env,
    tag: name,
  });
  const apiAddr = opts.apiAddr ?? /--api-addr[= ](\S+)/.exec(args.join(" "))?.[1] ?? "localhost:2381";
  const m: Member = { ...p, name, apiAddr, home, args };
  if (opts.wait ?? true) {
    try {
      await waitFor(`${name} api server`, () => {
        if (p.exited()) throw new Error(`${name} exited:\n${p.output()}`);
        return /api server (\(https\) )?running in/.test(p.output());
      }, 30000);
    } catch (err) {
      await p.kill();
      throw err;
    }
  }
  return m;
}

/**
 * Registers a test that starts member processes: `fn` pushes each member it starts onto `procs`, and all of them are
 * killed when it ends, pass or fail. The op and resource sanitizers are off, as for any test with child processes.
 */
export function memberTest(name: string, fn: (procs: Member[], t: Deno.TestContext) => Promise<void>): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async (t) => {
      const procs: Member[] = [];
      try {
        await fn(procs, t);
      } finally {
        for (const p of procs) await p.kill();
      }
    },
  });
}

/** Ports of a primary. */
export interface PrimaryPorts {
  client: number;
  peer: number;
  api: number;
}

/** Free ports for `n` members (client, peer, api each). */
export async function memberPorts(n: number): Promise<PrimaryPorts[]> {
  const ps = await freePorts(3 * n);
  return Array.from({ length: n }, (_, i) => ({ client: ps[3 * i], peer: ps[3 * i + 1], api: ps[3 * i + 2] }));
}

/** Command-line flags of a primary on loopback. */
export function primaryArgs(name: string, p: PrimaryPorts, extra: string[] = []): string[] {
  return [
    "--name",
    name,
    "--api-addr",
    `127.0.0.1:${p.api}`,
    "--listen-client-urls",
    `http://127.0.0.1:${p.client}`,
    "--advertise-client-urls",
    `http://127.0.0.1:${p.client}`,
    "--listen-peer-urls",
    `http://127.0.0.1:${p.peer}`,
    "--initial-advertise-peer-urls",
    `http://127.0.0.1:${p.peer}`,
    ...extra,
  ];
}

/** Result of one egctl run. */
export interface EgctlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `egctl` (mod.ts egctl) as a process (with `env` added to this process's environment), inside network namespace
 * `netns` when given.
 */
export async function egctl(
  args: string[],
  stdin?: string,
  cwd?: string,
  env?: Record<string, string>,
  netns?: string,
): Promise<EgctlResult> {
  const [command, cmdArgs] = modCommand(["egctl", ...args], netns);
  const cmd = new Deno.Command(command, {
    args: cmdArgs,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    cwd,
    env,
  });
  const child = cmd.spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const r = await child.output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

/** Runs egctl (inside network namespace `netns` when given) and fails unless it exits 0; returns stdout. */
export async function egctlOk(args: string[], stdin?: string, netns?: string): Promise<string> {
  const r = await egctl(args, stdin, undefined, undefined, netns);
  if (r.code !== 0) throw new Error(`egctl ${args.join(" ")} exited ${r.code}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Seconds per unit of egctl's ages (Go durations shown by their most significant unit: 59s, 1m, 2h, 3d). */
const AGE_UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/**
 * Matches `actual` byte for byte against `template`, where `{N}` stands for a run of digits (heartbeats), `{AGE}` for
 * an age as egctl prints it (`42s`, `1m`: on a loaded machine a member can be over a minute old), and `{*}` for any
 * text within one line (timestamps, IDs). Returns the `{N}` and `{AGE}` values in order, ages in seconds (a lower
 * bound for `1m` and longer).
 */
export function matchTemplate(actual: string, template: string): number[] {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const tokens = /\{N\}|\{AGE\}|\{\*\}/g;
  let source = "^";
  let last = 0;
  for (const t of template.matchAll(tokens)) {
    source += esc(template.slice(last, t.index));
    source += t[0] === "{N}" ? "(\\d+)" : t[0] === "{AGE}" ? "(\\d+[smhd])" : "(?:[^\\n]*)";
    last = t.index + t[0].length;
  }
  const re = new RegExp(source + esc(template.slice(last)) + "$");
  const m = re.exec(actual);
  if (!m) {
    throw new Error(
      `output does not match the expected format\n--- expected (template) ---\n${
        JSON.stringify(template)
      }\n--- actual ---\n${JSON.stringify(actual)}`,
    );
  }
  return m.slice(1).map((v) => /[smhd]$/.test(v) ? Number(v.slice(0, -1)) * AGE_UNIT_SECONDS[v.at(-1)!] : Number(v));
}

/** A real etcd 3.4 member process. */
export interface EtcdProc extends Proc {
  name: string;
  clientUrl: string;
  peerUrl: string;
}

/** Starts a 3-member (or n-member) cluster of the real etcd on loopback; resolves when all are ready. */
export async function startRealEtcdCluster(n = 3): Promise<EtcdProc[]> {
  const ports = await freePorts(2 * n);
  const names = Array.from({ length: n }, (_, i) => `etcd-${i + 1}`);
  const peer = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
  const client = (i: number) => `http://127.0.0.1:${ports[2 * i]}`;
  const initial = names.map((nm, i) => `${nm}=${peer(i)}`).join(",");
  const procs: EtcdProc[] = [];
  for (let i = 0; i < n; i++) {
    const dir = await Deno.makeTempDir({ prefix: `realetcd-${i}-` });
    const p = spawnProcess("/usr/bin/etcd", [
      "--name",
      names[i],
      "--data-dir",
      dir,
      "--listen-client-urls",
      client(i),
      "--advertise-client-urls",
      client(i),
      "--listen-peer-urls",
      peer(i),
      "--initial-advertise-peer-urls",
      peer(i),
      "--initial-cluster",
      initial,
      "--initial-cluster-token",
      "eg-real-etcd",
      "--initial-cluster-state",
      "new",
    ], { tag: names[i], env: { ETCD_UNSUPPORTED_ARCH: "" } });
    procs.push({ ...p, name: names[i], clientUrl: client(i), peerUrl: peer(i) });
  }
  try {
    await waitFor(
      "real etcd cluster",
      () => procs.every((p) => /ready to serve client requests|serving insecure client requests/.test(p.output())),
      30000,
    );
  } catch (err) {
    for (const p of procs) await p.kill();
    throw new Error(`${(err as Error).message}\n${procs.map((p) => p.output()).join("\n")}`);
  }
  return procs;
}

/** GET on a member's admin API. */
export async function apiGet(addr: string, path: string): Promise<{ status: number; body: string; headers: Headers }> {
  const r = await fetch(`http://${addr}/apis/v2${path}`);
  return { status: r.status, body: await r.text(), headers: r.headers };
}
