/**
 * etcd's command-line flags, so that this server is a drop-in for `etcd` (scripts, etcd's e2e suite, Easegress).
 * Flags we implement are parsed into EtcdConfig; flags etcd has that we do not implement yet are accepted and
 * reported in the log; anything else is an error, as with etcd.
 */

/** Parsed configuration of the etcd mode. */
export interface EtcdConfig {
  name: string;
  dataDir: string;
  walDir: string;
  listenClientUrls: string[];
  advertiseClientUrls: string[];
  listenPeerUrls: string[];
  initialAdvertisePeerUrls: string[];
  /** name → peer URLs */
  initialCluster: Map<string, string[]>;
  initialClusterToken: string;
  initialClusterState: "new" | "existing";
  snapshotCount: number;
  quotaBackendBytes: number;
  maxRequestBytes: number;
  maxTxnOps: number;
  heartbeatMs: number;
  electionMs: number;
  autoCompactionMode: "periodic" | "revision";
  autoCompactionRetention: string;
  /** how often idle watchers that asked for progress notifications get one, ms */
  watchProgressNotifyMs: number;
  /** TLS of the client listeners (https client URLs), when --cert-file/--key-file are given */
  clientTls: TlsFiles | null;
  /** TLS among primaries (https peer URLs), when --peer-cert-file/--peer-key-file are given */
  peerTls: TlsFiles | null;
  /** flags given that are accepted but have no effect yet */
  ignored: string[];
}

/** Certificate files of one side (client or peer) and whether client certificates are required. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  trustedCaFile: string;
  clientCertAuth: boolean;
}

/** Thrown for a bad command line; the message is what etcd would print. */
export class FlagError extends Error {}

const VALUE_FLAGS = new Set([
  "name",
  "data-dir",
  "wal-dir",
  "listen-client-urls",
  "advertise-client-urls",
  "listen-peer-urls",
  "initial-advertise-peer-urls",
  "initial-cluster",
  "initial-cluster-token",
  "initial-cluster-state",
  "snapshot-count",
  "quota-backend-bytes",
  "max-request-bytes",
  "max-txn-ops",
  "heartbeat-interval",
  "election-timeout",
  "auto-compaction-mode",
  "auto-compaction-retention",
  "cert-file",
  "key-file",
  "trusted-ca-file",
  "peer-cert-file",
  "peer-key-file",
  "peer-trusted-ca-file",
  "experimental-watch-progress-notify-interval",
]);

/** etcd flags accepted without effect (TLS, auth, logging, metrics, tuning we do not have yet). */
const IGNORED_VALUE_FLAGS = new Set([
  "client-crl-file",
  "peer-crl-file",
  "peer-cert-allowed-cn",
  "peer-cert-allowed-hostname",
  "cipher-suites",
  "auth-token",
  "auth-token-ttl",
  "bcrypt-cost",
  "listen-metrics-urls",
  "metrics",
  "max-concurrent-streams",
  "logger",
  "log-outputs",
  "log-level",
  "log-package-levels",
  "max-snapshots",
  "max-wals",
  "cors",
  "host-whitelist",
  "discovery",
  "discovery-fallback",
  "discovery-proxy",
  "discovery-srv",
  "discovery-srv-name",
  "proxy",
  "proxy-failure-wait",
  "proxy-refresh-interval",
  "proxy-dial-timeout",
  "proxy-write-timeout",
  "proxy-read-timeout",
  "grpc-keepalive-min-time",
  "grpc-keepalive-interval",
  "grpc-keepalive-timeout",
  "initial-election-tick-advance",
  "backend-batch-interval",
  "backend-batch-limit",
  "config-file",
  "experimental-corrupt-check-time",
  "experimental-enable-v2v3",
  "experimental-backend-bbolt-freelist-type",
  "experimental-compaction-batch-limit",
  "experimental-peer-skip-client-san-verification",
  "experimental-warning-apply-duration",
  "tls-min-version",
  "tls-max-version",
]);

const BOOL_FLAGS = new Set([
  "strict-reconfig-check",
  "enable-v2",
  "force-new-cluster",
  "auto-tls",
  "peer-auto-tls",
  "client-cert-auth",
  "peer-client-cert-auth",
  "enable-pprof",
  "debug",
  "experimental-initial-corrupt-check",
  "experimental-enable-lease-checkpoint",
  "experimental-memory-mlock",
  "enable-grpc-gateway",
  "pre-vote",
  "socket-reuse-port",
  "socket-reuse-address",
  "unsafe-no-fsync",
  "enable-log-rotation",
]);

/** Security flags we accept but do not implement yet: we say so loudly. */
const SECURITY_FLAGS = new Set(["auto-tls", "peer-auto-tls", "auth-token", "client-crl-file", "peer-crl-file"]);

function urls(v: string, flag: string): string[] {
  const out = v.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  for (const u of out) {
    let ok = false;
    try {
      const x = new URL(u);
      ok = (x.protocol === "http:" || x.protocol === "https:" || x.protocol === "unix:" || x.protocol === "unixs:") &&
        x.hostname !== "";
    } catch { /* handled below */ }
    if (!ok) {
      throw new FlagError(
        `invalid value "${v}" for flag -${flag}: URL scheme must be http, https, unix, or unixs: ${u}`,
      );
    }
  }
  return out;
}

function int(v: string, flag: string): number {
  if (!/^-?\d+$/.test(v)) throw new FlagError(`invalid value "${v}" for flag -${flag}: parse error`);
  return Number(v);
}

/** Parses "a=http://x:1,b=http://y:2" (a name may repeat for several URLs). */
export function parseInitialCluster(v: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const part of v.split(",").map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new FlagError(`invalid value "${v}" for flag -initial-cluster: expected name=url pairs`);
    const name = part.slice(0, eq);
    const [u] = urls(part.slice(eq + 1), "initial-cluster");
    m.set(name, [...(m.get(name) ?? []), u]);
  }
  return m;
}

/** Parses etcd's flags (both -flag and --flag, `--flag value` and `--flag=value`). */
export function parseEtcdFlags(args: string[]): EtcdConfig {
  const given = new Map<string, string>();
  const bools = new Map<string, boolean>();
  const ignored: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("-") || a === "-" || a === "--") throw new FlagError(`'${a}' is not a valid flag`);
    const body = a.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    let value: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (BOOL_FLAGS.has(name)) {
      if (value !== undefined && !["true", "false", "1", "0"].includes(value)) {
        throw new FlagError(`invalid boolean value "${value}" for -${name}`);
      }
      const on = value === undefined || value === "true" || value === "1";
      if (name === "client-cert-auth" || name === "peer-client-cert-auth") bools.set(name, on);
      else ignored.push(name);
      continue;
    }
    if (!VALUE_FLAGS.has(name) && !IGNORED_VALUE_FLAGS.has(name)) {
      throw new FlagError(`flag provided but not defined: -${name}`);
    }
    if (value === undefined) {
      if (i + 1 >= args.length) throw new FlagError(`flag needs an argument: -${name}`);
      value = args[++i];
    }
    if (IGNORED_VALUE_FLAGS.has(name)) ignored.push(name);
    else given.set(name, value);
  }
  const get = (k: string, d: string) => given.get(k) ?? d;
  const name = get("name", "default");
  const peerAdvertise = urls(
    get("initial-advertise-peer-urls", "http://localhost:2380"),
    "initial-advertise-peer-urls",
  );
  const state = get("initial-cluster-state", "new");
  if (state !== "new" && state !== "existing") {
    throw new FlagError(`invalid value "${state}" for flag -initial-cluster-state: valid values are "new", "existing"`);
  }
  const mode = get("auto-compaction-mode", "periodic");
  if (mode !== "periodic" && mode !== "revision") {
    throw new FlagError(`unknown auto-compaction-mode ${JSON.stringify(mode)}`);
  }
  const quota = int(get("quota-backend-bytes", "0"), "quota-backend-bytes");
  const cfg: EtcdConfig = {
    name,
    dataDir: get("data-dir", `${name}.etcd`),
    walDir: get("wal-dir", ""),
    listenClientUrls: urls(get("listen-client-urls", "http://localhost:2379"), "listen-client-urls"),
    advertiseClientUrls: urls(get("advertise-client-urls", "http://localhost:2379"), "advertise-client-urls"),
    listenPeerUrls: urls(get("listen-peer-urls", "http://localhost:2380"), "listen-peer-urls"),
    initialAdvertisePeerUrls: peerAdvertise,
    initialCluster: parseInitialCluster(get("initial-cluster", `${name}=${peerAdvertise.join(`,${name}=`)}`)),
    initialClusterToken: get("initial-cluster-token", "etcd-cluster"),
    initialClusterState: state,
    snapshotCount: int(get("snapshot-count", "100000"), "snapshot-count"),
    quotaBackendBytes: quota > 0 ? quota : 2 * 1024 * 1024 * 1024,
    maxRequestBytes: int(get("max-request-bytes", `${1.5 * 1024 * 1024}`), "max-request-bytes"),
    maxTxnOps: int(get("max-txn-ops", "128"), "max-txn-ops"),
    heartbeatMs: int(get("heartbeat-interval", "100"), "heartbeat-interval"),
    electionMs: int(get("election-timeout", "1000"), "election-timeout"),
    autoCompactionMode: mode,
    autoCompactionRetention: get("auto-compaction-retention", "0"),
    watchProgressNotifyMs: goDuration(
      get("experimental-watch-progress-notify-interval", "10m"),
      "experimental-watch-progress-notify-interval",
    ),
    clientTls: tlsFiles(
      given.get("cert-file"),
      given.get("key-file"),
      given.get("trusted-ca-file"),
      bools.get("client-cert-auth") ?? false,
      "",
    ),
    peerTls: tlsFiles(
      given.get("peer-cert-file"),
      given.get("peer-key-file"),
      given.get("peer-trusted-ca-file"),
      bools.get("peer-client-cert-auth") ?? false,
      "peer-",
    ),
    ignored,
  };
  if (!cfg.initialCluster.has(name)) {
    throw new FlagError(
      `couldn't find local name "${name}" in the initial cluster configuration`,
    );
  }
  if (cfg.electionMs < 5 * cfg.heartbeatMs) {
    throw new FlagError(
      `--election-timeout[${cfg.electionMs}ms] should be at least as 5 times as --heartbeat-interval[${cfg.heartbeatMs}ms]`,
    );
  }
  if (cfg.snapshotCount <= 0) throw new FlagError(`invalid value for flag -snapshot-count: must be positive`);
  return cfg;
}

/** Parses a Go duration such as "10m", "1.5s", "100ms" or "1h30m" into milliseconds. */
export function goDuration(v: string, flag: string): number {
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const parts = [...v.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== v) {
    throw new FlagError(`invalid value "${v}" for flag -${flag}: parse error`);
  }
  return parts.reduce((ms, p) => ms + Number(p[1]) * unit[p[2]], 0);
}

function tlsFiles(
  cert: string | undefined,
  key: string | undefined,
  ca: string | undefined,
  clientCertAuth: boolean,
  prefix: string,
): TlsFiles | null {
  if (!cert && !key) return null;
  if (!cert || !key) throw new FlagError(`--${prefix}cert-file and --${prefix}key-file must be given together`);
  return { certFile: cert, keyFile: key, trustedCaFile: ca ?? "", clientCertAuth };
}

/** Names of given flags that only matter for TLS/auth, which we do not implement yet. */
export function securityFlags(cfg: EtcdConfig): string[] {
  return cfg.ignored.filter((f) => SECURITY_FLAGS.has(f));
}
