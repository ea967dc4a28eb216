/**
 * Starts an etcd-flag-compatible server process for tests: ours (scripts/etcd) by default, or the real etcd when
 * ETCD_SERVER=/usr/bin/etcd is set, so every client test can also be run against the reference implementation.
 */
import { freePorts } from "./ports.ts";
import { spawnProcess } from "./process.ts";

const repo = new URL("../../", import.meta.url).pathname;

/** The server executable under test: `$ETCD_SERVER` or this project's scripts/etcd. */
export const serverBinary = Deno.env.get("ETCD_SERVER") ?? `${repo}scripts/etcd`;

export interface RunningServer {
  name: string;
  clientUrl: string;
  peerUrl: string;
  /** host:port of the client URL, for etcdctl --endpoints */
  endpoint: string;
  dataDir: string;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  /** How the process ended, once it did. */
  status: Promise<Deno.CommandStatus>;
  /** SIGKILL the process and wait for it to exit. */
  kill(): Promise<void>;
  /** SIGTERM, wait; SIGKILL after 5 s. */
  stop(): Promise<void>;
}

export interface StartOptions {
  name?: string;
  dataDir?: string;
  clientPort?: number;
  peerPort?: number;
  extraArgs?: string[];
  /** serve clients on an https URL (give the certificate in extraArgs, e.g. --auto-tls) */
  clientTls?: boolean;
  /** How long to wait for the "published" log line, ms (default 30000). */
  timeoutMs?: number;
}

/** Starts a single-member server and resolves once it printed its "published" line (as etcd does when ready). */
export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const name = opts.name ?? "default";
  const [cp, pp] = opts.clientPort && opts.peerPort ? [opts.clientPort, opts.peerPort] : await freePorts(2);
  const dataDir = opts.dataDir ?? await Deno.makeTempDir({ prefix: "egtest-" });
  const clientUrl = `${opts.clientTls ? "https" : "http"}://127.0.0.1:${cp}`;
  const peerUrl = `http://127.0.0.1:${pp}`;
  const args = [
    "--name",
    name,
    "--data-dir",
    dataDir,
    "--listen-client-urls",
    clientUrl,
    "--advertise-client-urls",
    clientUrl,
    "--listen-peer-urls",
    peerUrl,
    "--initial-advertise-peer-urls",
    peerUrl,
    "--initial-cluster",
    `${name}=${peerUrl}`,
    ...(opts.extraArgs ?? []),
  ];
  // SERVER_LOG=<file> keeps every test server's output for debugging (spawnProcess appends it on kill/stop)
  const proc = spawnProcess(serverBinary, args, { tag: name });
  const server: RunningServer = {
    name,
    clientUrl,
    peerUrl,
    endpoint: `127.0.0.1:${cp}`,
    dataDir,
    output: proc.output,
    status: proc.status,
    kill: proc.kill,
    stop: proc.stop,
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 30000);
  while (!/published/.test(proc.output())) {
    if (proc.exited()) throw new Error(`server exited before it was ready:\n${proc.output()}`);
    if (Date.now() > deadline) {
      await server.kill();
      throw new Error(`server not ready after ${opts.timeoutMs ?? 30000} ms:\n${proc.output()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return server;
}
