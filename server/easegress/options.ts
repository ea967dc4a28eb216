/**
 * easegress-server start-up options, as Easegress v2.11's `pkg/option` parses them: pflag-style command line,
 * `EASEGRESS_<FLAG>` environment (applied as if given on the command line, before it), `EG_<KEY>` environment and the
 * YAML config file (`-f`) through viper's precedence rules, then legacy role renames, defaults and validation.
 *
 * The Options object uses Go's field names and field order, because it is stored verbatim (as JSON) in every
 * member's status under /status/members/<name>.
 */
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { toGoYaml } from "./goyaml.ts";
import { parseGoDuration } from "./gotime.ts";

/** The nested `cluster:` block. */
export interface ClusterOptions {
  ListenPeerURLs: string[] | null;
  ListenClientURLs: string[] | null;
  AdvertiseClientURLs: string[] | null;
  InitialAdvertisePeerURLs: string[] | null;
  InitialCluster: Record<string, string> | null;
  StateFlag: string;
  PrimaryListenPeerURLs: string[] | null;
  MaxCallSendMsgSize: number;
}

/** Go's option.Options (JSON keys = Go field names). */
export interface Options {
  ShowVersion: boolean;
  ShowHelp: boolean;
  ShowConfig: boolean;
  ConfigFile: string;
  ForceNewCluster: boolean;
  SignalUpgrade: boolean;
  Name: string;
  Labels: Record<string, string> | null;
  APIAddr: string;
  TLS: boolean;
  CertFile: string;
  KeyFile: string;
  ClientCAFile: string;
  Debug: boolean;
  DisableAccessLog: boolean;
  InitialObjectConfigFiles: string[] | null;
  ObjectsDumpInterval: string;
  BasicAuth: Record<string, string> | null;
  UseStandaloneEtcd: boolean;
  ClusterName: string;
  ClusterRole: string;
  ClusterRequestTimeout: string;
  Cluster: ClusterOptions;
  HomeDir: string;
  DataDir: string;
  WALDir: string;
  LogDir: string;
  CPUProfileFile: string;
  MemoryProfileFile: string;
  StatusUpdateMaxBatchSize: number;
  AbsHomeDir: string;
  AbsDataDir: string;
  AbsWALDir: string;
  AbsLogDir: string;
  /** --force-repair-wal (ours): truncate a damaged WAL at the damage; not one of Easegress's stored options */
  ForceRepairWAL: boolean;
  /** --log-max-size (ours): rotate a file of the log dir before it passes this many MB (0: never) */
  LogMaxSize: number;
  /** --log-max-age (ours): delete rotated log files older than this many days (0: keep) */
  LogMaxAge: number;
  /** --log-max-backups (ours): keep at most this many rotated files per log (0: all) */
  LogMaxBackups: number;
}

/** A bad command line, environment, config file or option value; the message is Easegress's. */
export class OptionError extends Error {}

type Kind = "bool" | "string" | "slice" | "map" | "int";
type Field = keyof Options | `Cluster.${keyof ClusterOptions}`;

interface FlagDef {
  name: string;
  short?: string;
  kind: Kind;
  def: unknown;
  field: Field;
  usage: string;
}

const FLAGS: FlagDef[] = [
  { name: "version", short: "v", kind: "bool", def: false, field: "ShowVersion", usage: "Print the version and exit." },
  {
    name: "help",
    short: "h",
    kind: "bool",
    def: false,
    field: "ShowHelp",
    usage: "Print the helper message and exit.",
  },
  {
    name: "print-config",
    short: "c",
    kind: "bool",
    def: false,
    field: "ShowConfig",
    usage: "Print the configuration.",
  },
  {
    name: "config-file",
    short: "f",
    kind: "string",
    def: "",
    field: "ConfigFile",
    usage: "Load server configuration from a file(yaml format), other command line flags will be ignored if specified.",
  },
  {
    name: "force-new-cluster",
    kind: "bool",
    def: false,
    field: "ForceNewCluster",
    usage: "Force to create a new one-member cluster.",
  },
  {
    name: "force-repair-wal",
    kind: "bool",
    def: false,
    field: "ForceRepairWAL",
    usage:
      "Truncate the WAL at a damaged record (not a torn write) instead of refusing to start; what follows is lost.",
  },
  {
    name: "signal-upgrade",
    kind: "bool",
    def: false,
    field: "SignalUpgrade",
    usage:
      "Send an upgrade signal to the server based on the local pid file, then exit. The original server will start a graceful upgrade after signal received.",
  },
  {
    name: "name",
    kind: "string",
    def: "eg-default-name",
    field: "Name",
    usage: "Human-readable name for this member.",
  },
  { name: "labels", kind: "map", def: null, field: "Labels", usage: "The labels for the instance of Easegress." },
  {
    name: "use-standalone-etcd",
    kind: "bool",
    def: false,
    field: "UseStandaloneEtcd",
    usage: "Use standalone etcd instead of embedded .",
  },
  {
    name: "cluster-name",
    kind: "string",
    def: "eg-cluster-default-name",
    field: "ClusterName",
    usage: "Human-readable name for the new cluster, ignored while joining an existed cluster.",
  },
  {
    name: "cluster-role",
    kind: "string",
    def: "primary",
    field: "ClusterRole",
    usage: "Cluster role for this member (primary, secondary).",
  },
  {
    name: "cluster-request-timeout",
    kind: "string",
    def: "10s",
    field: "ClusterRequestTimeout",
    usage: "Timeout to handle request in the cluster.",
  },
  {
    name: "listen-client-urls",
    kind: "slice",
    def: ["http://localhost:2379"],
    field: "Cluster.ListenClientURLs",
    usage: "List of URLs to listen on for cluster client traffic.",
  },
  {
    name: "listen-peer-urls",
    kind: "slice",
    def: ["http://localhost:2380"],
    field: "Cluster.ListenPeerURLs",
    usage: "List of URLs to listen on for cluster peer traffic.",
  },
  {
    name: "advertise-client-urls",
    kind: "slice",
    def: ["http://localhost:2379"],
    field: "Cluster.AdvertiseClientURLs",
    usage: "List of this member's client URLs to advertise to the rest of the cluster.",
  },
  {
    name: "initial-advertise-peer-urls",
    kind: "slice",
    def: ["http://localhost:2380"],
    field: "Cluster.InitialAdvertisePeerURLs",
    usage: "List of this member's peer URLs to advertise to the rest of the cluster.",
  },
  {
    name: "initial-cluster",
    kind: "map",
    def: null,
    field: "Cluster.InitialCluster",
    usage: "List of (member name, URL) pairs that will form the cluster. E.g. primary-1=http://localhost:2380.",
  },
  {
    name: "state-flag",
    kind: "string",
    def: "new",
    field: "Cluster.StateFlag",
    usage: "Cluster state (new, existing)",
  },
  {
    name: "primary-listen-peer-urls",
    kind: "slice",
    def: ["http://localhost:2380"],
    field: "Cluster.PrimaryListenPeerURLs",
    usage: "List of peer URLs of primary members. Define this only, when cluster-role is secondary.",
  },
  {
    name: "max-call-send-msg-size",
    kind: "int",
    def: 10 * 1024 * 1024,
    field: "Cluster.MaxCallSendMsgSize",
    usage: "Maximum size in bytes for cluster synchronization messages.",
  },
  {
    name: "api-addr",
    kind: "string",
    def: "localhost:2381",
    field: "APIAddr",
    usage: "Address([host]:port) to listen on for administration traffic.",
  },
  { name: "tls", kind: "bool", def: false, field: "TLS", usage: "Flag to use secure transport protocol(https)." },
  {
    name: "cert-file",
    kind: "string",
    def: "",
    field: "CertFile",
    usage: "Flag to set the certificate file for https.",
  },
  { name: "key-file", kind: "string", def: "", field: "KeyFile", usage: "Flag to set the private key file for https." },
  {
    name: "debug",
    kind: "bool",
    def: false,
    field: "Debug",
    usage: "Flag to set lowest log level from INFO downgrade DEBUG.",
  },
  {
    name: "initial-object-config-files",
    kind: "slice",
    def: null,
    field: "InitialObjectConfigFiles",
    usage:
      "List of configuration files for initial objects, these objects will be created at startup if not already exist.",
  },
  {
    name: "objects-dump-interval",
    kind: "string",
    def: "",
    field: "ObjectsDumpInterval",
    usage: "The time interval to dump running objects config, for example: 30m",
  },
  {
    name: "disable-access",
    kind: "bool",
    def: false,
    field: "DisableAccessLog",
    usage: "Flag to set whether to disable access logs",
  },
  { name: "home-dir", kind: "string", def: "./", field: "HomeDir", usage: "Path to the home directory." },
  { name: "data-dir", kind: "string", def: "data", field: "DataDir", usage: "Path to the data directory." },
  { name: "wal-dir", kind: "string", def: "", field: "WALDir", usage: "Path to the WAL directory." },
  { name: "log-dir", kind: "string", def: "", field: "LogDir", usage: "Path to the log directory." },
  {
    name: "log-max-size",
    kind: "int",
    def: 128,
    field: "LogMaxSize",
    usage: "Rotate a log file of the log directory before it grows past this many megabytes (0: never).",
  },
  {
    name: "log-max-age",
    kind: "int",
    def: 30,
    field: "LogMaxAge",
    usage: "Delete rotated log files older than this many days (0: by age never).",
  },
  {
    name: "log-max-backups",
    kind: "int",
    def: 60,
    field: "LogMaxBackups",
    usage: "Keep at most this many rotated files of each log (0: all).",
  },
  {
    name: "cpu-profile-file",
    kind: "string",
    def: "",
    field: "CPUProfileFile",
    usage: "Path to the CPU profile file.",
  },
  {
    name: "memory-profile-file",
    kind: "string",
    def: "",
    field: "MemoryProfileFile",
    usage: "Path to the memory profile file.",
  },
  {
    name: "status-update-max-batch-size",
    kind: "int",
    def: 20,
    field: "StatusUpdateMaxBatchSize",
    usage: "Number of object statuses to update at maximum in one transaction.",
  },
];

/** Top-level YAML keys (struct yaml tags) → field and kind; `cluster` is handled on its own. */
const TOP_KEYS: [string, keyof Options, Kind][] = [
  ["name", "Name", "string"],
  ["labels", "Labels", "map"],
  ["api-addr", "APIAddr", "string"],
  ["tls", "TLS", "bool"],
  ["cert-file", "CertFile", "string"],
  ["key-file", "KeyFile", "string"],
  ["client-ca-file", "ClientCAFile", "string"],
  ["debug", "Debug", "bool"],
  ["disable-access-log", "DisableAccessLog", "bool"],
  ["initial-object-config-files", "InitialObjectConfigFiles", "slice"],
  ["objects-dump-interval", "ObjectsDumpInterval", "string"],
  ["basic-auth", "BasicAuth", "map"],
  ["use-standalone-etcd", "UseStandaloneEtcd", "bool"],
  ["cluster-name", "ClusterName", "string"],
  ["cluster-role", "ClusterRole", "string"],
  ["cluster-request-timeout", "ClusterRequestTimeout", "string"],
  ["home-dir", "HomeDir", "string"],
  ["data-dir", "DataDir", "string"],
  ["wal-dir", "WALDir", "string"],
  ["log-dir", "LogDir", "string"],
  ["log-max-size", "LogMaxSize", "int"],
  ["log-max-age", "LogMaxAge", "int"],
  ["log-max-backups", "LogMaxBackups", "int"],
  ["cpu-profile-file", "CPUProfileFile", "string"],
  ["memory-profile-file", "MemoryProfileFile", "string"],
  ["status-update-max-batch-size", "StatusUpdateMaxBatchSize", "int"],
];

const CLUSTER_KEYS: [string, keyof ClusterOptions, Kind][] = [
  ["listen-peer-urls", "ListenPeerURLs", "slice"],
  ["listen-client-urls", "ListenClientURLs", "slice"],
  ["advertise-client-urls", "AdvertiseClientURLs", "slice"],
  ["initial-advertise-peer-urls", "InitialAdvertisePeerURLs", "slice"],
  ["initial-cluster", "InitialCluster", "map"],
  ["state-flag", "StateFlag", "string"],
  ["primary-listen-peer-urls", "PrimaryListenPeerURLs", "slice"],
  ["max-call-send-msg-size", "MaxCallSendMsgSize", "int"],
];

function newOptions(): Options {
  return {
    ShowVersion: false,
    ShowHelp: false,
    ShowConfig: false,
    ConfigFile: "",
    ForceNewCluster: false,
    SignalUpgrade: false,
    Name: "",
    Labels: null,
    APIAddr: "",
    TLS: false,
    CertFile: "",
    KeyFile: "",
    ClientCAFile: "",
    Debug: false,
    DisableAccessLog: false,
    InitialObjectConfigFiles: null,
    ObjectsDumpInterval: "",
    BasicAuth: null,
    UseStandaloneEtcd: false,
    ClusterName: "",
    ClusterRole: "",
    ClusterRequestTimeout: "",
    Cluster: {
      ListenPeerURLs: null,
      ListenClientURLs: null,
      AdvertiseClientURLs: null,
      InitialAdvertisePeerURLs: null,
      InitialCluster: null,
      StateFlag: "",
      PrimaryListenPeerURLs: null,
      MaxCallSendMsgSize: 0,
    },
    HomeDir: "",
    DataDir: "",
    WALDir: "",
    LogDir: "",
    CPUProfileFile: "",
    MemoryProfileFile: "",
    StatusUpdateMaxBatchSize: 0,
    AbsHomeDir: "",
    AbsDataDir: "",
    AbsWALDir: "",
    AbsLogDir: "",
    ForceRepairWAL: false,
    LogMaxSize: 0,
    LogMaxAge: 0,
    LogMaxBackups: 0,
  };
}

// deno-lint-ignore no-explicit-any
type Any = any;

function setField(opt: Options, field: Field, v: unknown): void {
  if (field.startsWith("Cluster.")) (opt.Cluster as Any)[field.slice(8)] = v;
  else (opt as Any)[field] = v;
}

function getField(opt: Options, field: Field): unknown {
  return field.startsWith("Cluster.") ? (opt.Cluster as Any)[field.slice(8)] : (opt as Any)[field];
}

/** Go's strconv.ParseBool. */
function parseBool(s: string): boolean {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(s)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(s)) return false;
  throw new Error(`strconv.ParseBool: parsing ${JSON.stringify(s)}: invalid syntax`);
}

/** pflag's int parsing (strconv.ParseInt(s, 0, 64)). */
function parseInt64(s: string): number {
  const t = s.replace(/^[+-]/, "");
  const ok = /^(0|[1-9][0-9]*(_[0-9]+)*)$/.test(t) || /^0[xX][0-9a-fA-F]+$/.test(t) || /^0[oO]?[0-7]+$/.test(t) ||
    /^0[bB][01]+$/.test(t);
  if (!ok) throw new Error(`strconv.ParseInt: parsing ${JSON.stringify(s)}: invalid syntax`);
  const body = t.replaceAll("_", "");
  let n: number;
  if (/^0[oO]?[0-7]+$/.test(body) && body !== "0") n = parseInt(body.replace(/^0[oO]?/, ""), 8);
  else n = Number(body);
  return s.startsWith("-") ? -n : n;
}

/** pflag reads slice values with encoding/csv. */
function readCsv(s: string): string[] {
  if (s === "") return [];
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (c === '"' && s[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"' && cur === "") quoted = true;
    else if (c === ",") {
      out.push(cur);
      cur = "";
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** The command line as pflag keeps it: values and which flags were set. */
class FlagSet {
  values = new Map<string, unknown>();
  changed = new Set<string>();

  constructor() {
    for (const f of FLAGS) this.values.set(f.name, structuredClone(f.def));
  }

  /** pflag's FlagSet.Set: slices replace the default on first set and append afterwards, maps merge likewise. */
  set(f: FlagDef, raw: string): void {
    const first = !this.changed.has(f.name);
    switch (f.kind) {
      case "bool":
        this.values.set(f.name, parseBool(raw));
        break;
      case "int":
        this.values.set(f.name, parseInt64(raw));
        break;
      case "string":
        this.values.set(f.name, raw);
        break;
      case "slice": {
        const v = readCsv(raw);
        this.values.set(f.name, first ? v : [...(this.values.get(f.name) as string[] ?? []), ...v]);
        break;
      }
      case "map": {
        const m: Record<string, string> = {};
        for (const pair of readCsv(raw)) {
          const eq = pair.indexOf("=");
          if (eq < 0) throw new Error(`${pair} must be formatted as key=value`);
          m[pair.slice(0, eq)] = pair.slice(eq + 1);
        }
        this.values.set(f.name, first ? m : { ...(this.values.get(f.name) as Record<string, string> ?? {}), ...m });
        break;
      }
    }
    this.changed.add(f.name);
  }
}

function flagTitle(f: FlagDef): string {
  return f.short ? `-${f.short}, --${f.name}` : `--${f.name}`;
}

/** pflag's Parse over os.Args[1:] (interspersed positional arguments are ignored). */
function parseArgs(fs: FlagSet, args: string[]): void {
  const byName = new Map(FLAGS.map((f) => [f.name, f]));
  const byShort = new Map(FLAGS.filter((f) => f.short).map((f) => [f.short!, f]));
  const setOrFail = (f: FlagDef, v: string) => {
    try {
      fs.set(f, v);
    } catch (err) {
      throw new OptionError(
        `invalid argument ${JSON.stringify(v)} for ${JSON.stringify(flagTitle(f))} flag: ${(err as Error).message}`,
      );
    }
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") break;
    if (a.startsWith("--")) {
      const body = a.slice(2);
      const eq = body.indexOf("=");
      const name = eq >= 0 ? body.slice(0, eq) : body;
      const f = byName.get(name);
      if (!f) throw new OptionError(`unknown flag: --${name}`);
      if (eq >= 0) setOrFail(f, body.slice(eq + 1));
      else if (f.kind === "bool") setOrFail(f, "true");
      else if (i + 1 < args.length) setOrFail(f, args[++i]);
      else throw new OptionError(`flag needs an argument: --${name}`);
    } else if (a.startsWith("-") && a.length > 1) {
      let rest = a.slice(1);
      while (rest.length > 0) {
        const c = rest[0];
        const f = byShort.get(c);
        if (!f) throw new OptionError(`unknown shorthand flag: '${c}' in ${a}`);
        rest = rest.slice(1);
        if (rest.startsWith("=")) {
          setOrFail(f, rest.slice(1));
          rest = "";
        } else if (f.kind === "bool") setOrFail(f, "true");
        else if (rest.length > 0) {
          setOrFail(f, rest);
          rest = "";
        } else if (i + 1 < args.length) setOrFail(f, args[++i]);
        else throw new OptionError(`flag needs an argument: '${c}' in -${c}`);
      }
    }
  }
}

/** mapstructure's weakly typed decoding of one config value into a field of `kind`. */
function weak(kind: Kind, v: unknown, key: string, prev: unknown): unknown {
  const typeErr = () =>
    new OptionError(`'${key}' expected type '${kindGo(kind)}', got unconvertible type '${goType(v)}'`);
  switch (kind) {
    case "string":
      if (typeof v === "string") return v;
      if (typeof v === "number" || typeof v === "bigint") return String(v);
      if (typeof v === "boolean") return v ? "1" : "0";
      throw typeErr();
    case "bool":
      if (typeof v === "boolean") return v;
      if (typeof v === "number") return v !== 0;
      if (typeof v === "string") {
        if (v === "") return false;
        try {
          return parseBool(v);
        } catch {
          throw new OptionError(
            `cannot parse '${key}' as bool: strconv.ParseBool: parsing ${JSON.stringify(v)}: invalid syntax`,
          );
        }
      }
      throw typeErr();
    case "int":
      if (typeof v === "number" && Number.isInteger(v)) return v;
      if (typeof v === "boolean") return v ? 1 : 0;
      if (typeof v === "string") {
        try {
          return v === "" ? 0 : parseInt64(v);
        } catch {
          throw new OptionError(
            `cannot parse '${key}' as int: strconv.ParseInt: parsing ${JSON.stringify(v)}: invalid syntax`,
          );
        }
      }
      throw typeErr();
    case "slice":
      if (Array.isArray(v)) return v.map((x, i) => weak("string", x, `${key}[${i}]`, undefined));
      if (typeof v === "string") return v === "" ? [] : v.split(",");
      if (typeof v === "number" || typeof v === "boolean") return [weak("string", v, key, undefined)];
      throw typeErr();
    case "map": {
      const out: Record<string, string> = prev && typeof prev === "object"
        ? { ...(prev as Record<string, string>) }
        : {};
      const merge = (m: unknown) => {
        if (!m || typeof m !== "object" || Array.isArray(m)) throw typeErr();
        for (const [k, x] of Object.entries(m)) out[k] = weak("string", x, `${key}[${k}]`, undefined) as string;
      };
      if (Array.isArray(v)) v.forEach(merge); // a list of single-key maps is merged into one map
      else merge(v);
      return out;
    }
  }
}

function kindGo(k: Kind): string {
  return { string: "string", bool: "bool", int: "int", slice: "[]string", map: "map[string]string" }[k];
}

function goType(v: unknown): string {
  if (Array.isArray(v)) return "[]interface {}";
  if (v === null) return "<nil>";
  if (typeof v === "object") return "map[string]interface {}";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float64";
  return typeof v;
}

/** Where options come from; `env` and `readFile` are injectable for tests. */
export interface ParseSource {
  args: string[];
  env?: Record<string, string | undefined>;
  cwd?: string;
  hostname?: string;
  readFile?: (p: string) => string;
}

/** Go's url.Parse is lenient; these are the inputs it rejects. */
function goUrlParse(u: string): void {
  if ([...u].some((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f)) {
    throw new Error(`parse ${JSON.stringify(u)}: net/url: invalid control character in URL`);
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(u);
  if (u.startsWith(":") || (!m && /^[^/?#]*:/.test(u) && !/^[^/?#]*:\d*$/.test(u))) {
    throw new Error(`parse ${JSON.stringify(u)}: missing protocol scheme`);
  }
  const hostPart = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/.exec(u)?.[1];
  if (hostPart !== undefined) {
    const host = hostPart.replace(/^.*@/, "");
    const port = /^\[[^\]]*\](?::(.*))?$/.exec(host)?.[1] ??
      (host.includes(":") ? host.slice(host.lastIndexOf(":") + 1) : "");
    if (!/^\d*$/.test(port)) {
      throw new Error(`parse ${JSON.stringify(u)}: invalid port ${JSON.stringify(":" + port)} after host`);
    }
  }
}

/** Go's net.SplitHostPort. */
export function splitHostPort(hostport: string): [string, string] {
  const missingPort = `address ${hostport}: missing port in address`;
  const tooMany = `address ${hostport}: too many colons in address`;
  const i = hostport.lastIndexOf(":");
  if (i < 0) throw new Error(missingPort);
  let host: string;
  if (hostport.startsWith("[")) {
    const end = hostport.indexOf("]");
    if (end < 0) throw new Error(`address ${hostport}: missing ']' in address`);
    if (end + 1 === hostport.length) throw new Error(missingPort);
    if (end + 1 !== i) {
      if (hostport[end + 1] === ":") throw new Error(tooMany);
      throw new Error(missingPort);
    }
    host = hostport.slice(1, end);
  } else {
    host = hostport.slice(0, i);
    if (host.includes(":")) throw new Error(tooMany);
  }
  if (hostport.indexOf("[", 1) >= 0 || hostport.indexOf("]") > hostport.indexOf("[") + 1 && !hostport.startsWith("[")) {
    throw new Error(`address ${hostport}: unexpected '[' in address`);
  }
  return [host, hostport.slice(i + 1)];
}

const NAME_RE = /^[A-Za-z0-9\-_.~]{1,253}$/;

/** common.ValidateName. */
export function validateName(name: string): void {
  if (!NAME_RE.test(name)) throw new OptionError(`invalid constant: ${name}`);
}

/** The parsed options plus what the caller must print. */
export interface ParsedOptions {
  opt: Options;
  /** the YAML dump (`-c` prints it) */
  yaml: string;
  /** messages printed to stdout while parsing (legacy role renames) */
  notices: string[];
}

/** option.Parse(): throws OptionError with Easegress's message on any problem. */
export function parseOptions(src: ParseSource): ParsedOptions {
  const env = src.env ?? Deno.env.toObject();
  const cwd = src.cwd ?? Deno.cwd();
  const readFile = src.readFile ?? ((p: string) => Deno.readTextFileSync(p));
  const fs = new FlagSet();

  // 1. EASEGRESS_<FLAG> environment, in pflag's VisitAll (sorted) order.
  for (const f of [...FLAGS].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const key = `EASEGRESS_${f.name.toUpperCase().replaceAll("-", "_")}`;
    const val = env[key];
    if (val) {
      try {
        fs.set(f, val);
      } catch (err) {
        throw new OptionError(`invalid value ${JSON.stringify(val)} for ${key}: ${(err as Error).message}`);
      }
    }
  }
  // 2. the command line
  parseArgs(fs, src.args);

  const opt = newOptions();
  for (const f of FLAGS) setField(opt, f.field, structuredClone(fs.values.get(f.name)));
  if (opt.ShowVersion || opt.ShowHelp) return { opt, yaml: "", notices: [] };

  // 3. viper: config file, EG_* environment
  let file: Record<string, unknown> = {};
  if (opt.ConfigFile !== "") {
    let text: string;
    try {
      text = readFile(path.resolve(cwd, opt.ConfigFile));
    } catch (err) {
      const msg = err instanceof Deno.errors.NotFound
        ? `open ${opt.ConfigFile}: no such file or directory`
        : (err as Error).message;
      throw new OptionError(`read config file ${opt.ConfigFile} failed: ${msg}`);
    }
    try {
      const doc = parseYaml(text, { merge: true });
      if (doc !== null && doc !== undefined && (typeof doc !== "object" || Array.isArray(doc))) {
        throw new Error("yaml: unmarshal errors: cannot unmarshal into map[string]interface {}");
      }
      // viper lower-cases keys
      file = Object.fromEntries(Object.entries(doc ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    } catch (err) {
      throw new OptionError(
        `read config file ${opt.ConfigFile} failed: While parsing config: ${(err as Error).message.split("\n")[0]}`,
      );
    }
  }
  const flagByName = new Map(FLAGS.map((f) => [f.name, f]));
  try {
    for (const [key, field, kind] of TOP_KEYS) {
      const f = flagByName.get(key);
      const envVal = env[`EG_${key.toUpperCase().replaceAll("-", "_")}`];
      const known = f !== undefined || key in file;
      let v: unknown = undefined;
      if (f && fs.changed.has(key)) continue; // the changed flag's value is already in place
      if (known && envVal !== undefined) v = envVal;
      else if (key in file) v = file[key];
      else continue;
      if (v === null) continue; // mapstructure leaves fields alone for nil input
      setField(opt, field, weak(kind, v, key, kind === "map" ? null : undefined));
    }
    const cl = file["cluster"];
    if (cl !== undefined && cl !== null) {
      if (typeof cl !== "object" || Array.isArray(cl)) {
        throw new OptionError(`'cluster' expected a map, got '${goType(cl)}'`);
      }
      const block = Object.fromEntries(Object.entries(cl).map(([k, v]) => [k.toLowerCase(), v]));
      for (const [key, field, kind] of CLUSTER_KEYS) {
        if (!(key in block) || block[key] === null) continue;
        (opt.Cluster as Any)[field] = weak(kind, block[key], `cluster.${key}`, (opt.Cluster as Any)[field]);
      }
    }
  } catch (err) {
    throw new OptionError(
      `yaml file unmarshal failed, please make sure you provide valid yaml file, 1 error(s) decoding:\n\n* ${
        (err as Error).message
      }`,
    );
  }

  // 4. legacy role names, standalone etcd, default initial cluster
  const notices: string[] = [];
  const warning = (from: string, to: string) =>
    `Cluster roles writer/reader are deprecated. \nRenamed cluster role '${from}' to '${to}'. Please use primary/secondary instead. \n`;
  if (opt.ClusterRole === "writer") {
    opt.ClusterRole = "primary";
    notices.push(warning("writer", "primary"));
  }
  if (opt.ClusterRole === "reader") {
    opt.ClusterRole = "secondary";
    notices.push(warning("reader", "secondary"));
  }
  if (opt.UseStandaloneEtcd) opt.ClusterRole = "secondary";
  if (opt.ClusterRole === "primary" && Object.keys(opt.Cluster.InitialCluster ?? {}).length === 0) {
    const first = opt.Cluster.InitialAdvertisePeerURLs?.[0];
    if (first === undefined) throw new OptionError("empty initial-advertise-peer-urls");
    opt.Cluster.InitialCluster = { [opt.Name]: first };
  }

  validate(opt, src.hostname);
  prepare(opt, cwd);
  return { opt, yaml: optionsYaml(opt), notices };
}

function validate(opt: Options, hostname?: string): void {
  if (opt.ClusterName === "") throw new OptionError("empty cluster-name");
  const rotation: [string, number][] = [
    ["log-max-size", opt.LogMaxSize],
    ["log-max-age", opt.LogMaxAge],
    ["log-max-backups", opt.LogMaxBackups],
  ];
  for (const [flag, v] of rotation) if (v < 0) throw new OptionError(`invalid ${flag} ${v}: must be 0 or more`);
  validateName(opt.ClusterName);
  switch (opt.ClusterRole) {
    case "secondary":
      if (opt.ForceNewCluster) throw new OptionError("secondary got force-new-cluster");
      if ((opt.Cluster.PrimaryListenPeerURLs ?? []).length === 0) {
        throw new OptionError("secondary got empty cluster.primary-listen-peer-urls");
      }
      break;
    case "primary": {
      for (const u of Object.values(opt.Cluster.InitialCluster ?? {})) {
        try {
          goUrlParse(u);
        } catch (err) {
          throw new OptionError(`invalid initial-cluster:  ${u}: ${(err as Error).message}`);
        }
      }
      const lists: [string, string[] | null][] = [
        ["listen-client-urls", opt.Cluster.ListenClientURLs],
        ["listen-peer-urls", opt.Cluster.ListenPeerURLs],
        ["advertise-client-urls", opt.Cluster.AdvertiseClientURLs],
        ["initial-advertise-peer-urls", opt.Cluster.InitialAdvertisePeerURLs],
      ];
      for (const [arg, urls] of lists) {
        if (!urls || urls.length === 0) throw new OptionError(`empty ${arg}`);
        for (const u of urls) {
          try {
            goUrlParse(u);
          } catch (err) {
            throw new OptionError(`invalid ${arg}:  ${u}: ${(err as Error).message}`);
          }
        }
      }
      break;
    }
    default:
      throw new OptionError("invalid cluster-role: supported roles are primary/secondary");
  }
  try {
    parseGoDuration(opt.ClusterRequestTimeout);
  } catch (err) {
    throw new OptionError(`invalid cluster-request-timeout: ${(err as Error).message}`);
  }
  try {
    splitHostPort(opt.APIAddr);
  } catch (err) {
    throw new OptionError(`invalid api-addr: ${(err as Error).message}`);
  }
  if (opt.HomeDir === "") throw new OptionError("empty home-dir");
  if (opt.DataDir === "") throw new OptionError("empty data-dir");
  if (opt.TLS && (opt.CertFile === "" || opt.KeyFile === "")) throw new OptionError("empty cert file or key file");
  if (opt.Name === "") {
    const host = hostname ?? Deno.hostname();
    opt.Name = `${host}-${opt.APIAddr}`.replaceAll(",", "-").replaceAll(":", "-").replaceAll("=", "-");
  }
  validateName(opt.Name);
}

function prepare(opt: Options, cwd: string): void {
  opt.AbsHomeDir = path.isAbsolute(opt.HomeDir) ? path.normalize(opt.HomeDir) : path.resolve(cwd, opt.HomeDir);
  const abs = (d: string) => (path.isAbsolute(d) ? path.normalize(d) : path.join(opt.AbsHomeDir, d));
  const clean = (p: string) => (p.length > 1 ? p.replace(/\/+$/, "") : p);
  opt.AbsHomeDir = clean(opt.AbsHomeDir);
  if (opt.DataDir !== "") opt.AbsDataDir = clean(abs(opt.DataDir));
  if (opt.WALDir !== "") opt.AbsWALDir = clean(abs(opt.WALDir));
  if (opt.LogDir !== "") opt.AbsLogDir = clean(abs(opt.LogDir));
}

/** codectool.MarshalYAML(opt): yaml tags, struct order, `yaml:"-"` fields left out. */
export function optionsYaml(opt: Options): string {
  const sorted = (m: Record<string, string> | null) =>
    m === null ? null : Object.fromEntries(Object.keys(m).sort().map((k) => [k, m[k]]));
  const doc = {
    name: opt.Name,
    labels: sorted(opt.Labels),
    "api-addr": opt.APIAddr,
    tls: opt.TLS,
    "cert-file": opt.CertFile,
    "key-file": opt.KeyFile,
    "client-ca-file": opt.ClientCAFile,
    debug: opt.Debug,
    "disable-access-log": opt.DisableAccessLog,
    "initial-object-config-files": opt.InitialObjectConfigFiles,
    "objects-dump-interval": opt.ObjectsDumpInterval,
    "basic-auth": sorted(opt.BasicAuth),
    "use-standalone-etcd": opt.UseStandaloneEtcd,
    "cluster-name": opt.ClusterName,
    "cluster-role": opt.ClusterRole,
    "cluster-request-timeout": opt.ClusterRequestTimeout,
    cluster: {
      "listen-peer-urls": opt.Cluster.ListenPeerURLs,
      "listen-client-urls": opt.Cluster.ListenClientURLs,
      "advertise-client-urls": opt.Cluster.AdvertiseClientURLs,
      "initial-advertise-peer-urls": opt.Cluster.InitialAdvertisePeerURLs,
      "initial-cluster": sorted(opt.Cluster.InitialCluster),
      "state-flag": opt.Cluster.StateFlag,
      "primary-listen-peer-urls": opt.Cluster.PrimaryListenPeerURLs,
      "max-call-send-msg-size": opt.Cluster.MaxCallSendMsgSize,
    },
    "home-dir": opt.HomeDir,
    "data-dir": opt.DataDir,
    "wal-dir": opt.WALDir,
    "log-dir": opt.LogDir,
    "cpu-profile-file": opt.CPUProfileFile,
    "memory-profile-file": opt.MemoryProfileFile,
    "status-update-max-batch-size": opt.StatusUpdateMaxBatchSize,
  };
  return toGoYaml(doc, { sortKeys: false });
}

/** The options a member stores in its status: Easegress's, without our own start-up flags. */
export type StoredOptions = Omit<Options, "ForceRepairWAL" | "LogMaxSize" | "LogMaxAge" | "LogMaxBackups">;

/** Go's encoding/json of Options: struct order, maps with sorted keys. */
export function optionsJson(opt: Options): StoredOptions {
  const sorted = (m: Record<string, string> | null) =>
    m === null ? null : Object.fromEntries(Object.keys(m).sort().map((k) => [k, m[k]]));
  const { ForceRepairWAL: _, LogMaxSize: _s, LogMaxAge: _a, LogMaxBackups: _b, ...stored } = opt;
  return {
    ...stored,
    Labels: sorted(opt.Labels),
    BasicAuth: sorted(opt.BasicAuth),
    Cluster: { ...opt.Cluster, InitialCluster: sorted(opt.Cluster.InitialCluster) },
  };
}

/** The peer URLs the member's etcd client dials (GetPeerURLs). */
export function peerUrls(opt: Options): string[] {
  if (opt.ClusterRole === "secondary") return opt.Cluster.PrimaryListenPeerURLs ?? [];
  return Object.values(opt.Cluster.InitialCluster ?? {});
}

/** pflag's FlagUsages (as printed by `--help`). */
export function flagUsages(): string {
  const rows = FLAGS.map((f) => {
    let left = f.short ? `  -${f.short}, --${f.name}` : `      --${f.name}`;
    const typ = { bool: "", string: " string", slice: " strings", map: " stringToString", int: " int" }[f.kind];
    left += typ;
    let def = "";
    if (f.kind === "string" && f.def !== "") def = ` (default ${JSON.stringify(f.def)})`;
    if (f.kind === "int") def = ` (default ${f.def})`;
    if (f.kind === "slice" && Array.isArray(f.def)) def = ` (default [${(f.def as string[]).join(",")}])`;
    if (f.kind === "map") def = " (default [])";
    return [left, f.usage + def] as const;
  });
  const width = Math.max(...rows.map(([l]) => l.length));
  return rows.map(([l, u]) => `${l.padEnd(width)}   ${u}`).join("\n") + "\n";
}

/** For tests: the field a flag sets. */
export function flagField(name: string): Field | undefined {
  return FLAGS.find((f) => f.name === name)?.field;
}

export { getField };
