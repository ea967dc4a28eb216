/**
 * egctl, the admin CLI of Easegress v2.5+ (`cmd/client`): a stateless HTTP client of one member's admin API.
 * Commands: get, describe, create -f, apply -f, delete (objects and members), health, api-resources, apis.
 * Output formats (-o default|json|yaml), messages and exit codes follow the Go client.
 */
import http from "node:http";
import https from "node:https";
import { Buffer } from "node:buffer";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { errorMsg, formatBody, Ordered, printMapInterface, successMsg, tabwrite } from "./print.ts";
import { createHTTPProxy, extractHTTPProxyFlags, HTTPPROXY_HELP, type HTTPProxyFlags } from "./create_httpproxy.ts";
import { durationMostSignificantUnit, parseRfc3339 } from "../server/easegress/gotime.ts";
import { isOffline, OFFLINE } from "../server/easegress/liveness.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

/** Where egctl writes and reads; injectable for in-process use. */
export interface EgctlIO {
  stdout(s: string): void;
  stderr(s: string): void;
  readStdin(): Promise<string>;
  readFile(p: string): Promise<string>;
  env: Record<string, string | undefined>;
  isTTY: boolean;
}

/** Exit with an error message (ExitWithError). */
class ExitError extends Error {
  constructor(message: string, readonly code = 1) {
    super(message);
  }
}

interface APIResource {
  Category?: string;
  Kind: string;
  Name: string;
  Aliases: string[] | null;
}

const MEMBER: APIResource = { Kind: "Member", Name: "member", Aliases: ["m", "mem", "members"] };
const CUSTOM_DATA: APIResource = { Kind: "CustomData", Name: "customdata", Aliases: ["customdatas", "cd"] };
const CUSTOM_DATA_KIND: APIResource = {
  Kind: "CustomDataKind",
  Name: "customdatakind",
  Aliases: ["customdatakinds", "cdk"],
};

const COMMANDS = [
  "create",
  "delete",
  "get",
  "describe",
  "apply",
  "edit",
  "convert",
  "apis",
  "completion",
  "health",
  "profile",
  "api-resources",
  "wasm",
  "config",
  "logs",
  "metrics",
  "ai",
  "api",
  "object",
  "member",
  "custom-data-kind",
  "custom-data",
  "help",
];

const SHORT: Record<string, string> = {
  create: "Create a resource from a file or from stdin.",
  apply: "Apply a configuration to a resource by filename or stdin",
};

const HELP = `A command line admin tool for Easegress.

Usage:
  egctl [command]

Basic Commands:
  create        Create a resource from a file or from stdin.
  delete        Delete a resource or group of resources
  get           Display one or many resources
  describe      Show details of a specific resource or group of resources
  apply         Apply a configuration to a resource by filename or stdin

Other Commands:
  apis          View Easegress APIs
  health        Probe Easegress health
  api-resources View all API resources

Flags:
      --ca-file string         CA certificate file to verify the server's certificate with (HTTPS)
      --cert-file string       Client certificate file (HTTPS, for a server with client-ca-file)
      --force-tls              Whether to forcibly use HTTPS, if not, client will auto upgrade to HTTPS on-demand
  -h, --help                   help for egctl
      --insecure-skip-verify   Whether to verify the server's certificate chain and host name
      --key-file string        Client private key file (with --cert-file)
  -o, --output string          Output format(default, json, yaml) (default "default")
      --server string          The address of the Easegress endpoint
  -u, --user string            Basic auth credentials, user:password

Use "egctl [command] --help" for more information about a command.
`;

interface Flags {
  server: string;
  forceTLS: boolean;
  insecure: boolean;
  caFile: string;
  /** --cert-file/--key-file outside `create httpproxy` (argv has them taken out by extractHTTPProxyFlags) */
  certFile: string;
  keyFile: string;
  /** user:password for Basic auth */
  user: string;
  output: string;
  file: string;
  /** `create member`: the new primary's peer URLs, comma-separated */
  peerUrls: string;
  all: boolean;
  namespace: string;
  allNamespaces: boolean;
  verbose: boolean;
  help: boolean;
}

const BOOL_FLAGS: Record<string, keyof Flags> = {
  "force-tls": "forceTLS",
  "insecure-skip-verify": "insecure",
  all: "all",
  "all-namespaces": "allNamespaces",
  verbose: "verbose",
  help: "help",
};
const VALUE_FLAGS: Record<string, keyof Flags> = {
  server: "server",
  "ca-file": "caFile",
  user: "user",
  output: "output",
  file: "file",
  namespace: "namespace",
  "peer-urls": "peerUrls",
};
const SHORTS: Record<string, string> = { o: "output", f: "file", v: "verbose", h: "help", u: "user" };

function parseFlags(args: string[]): { flags: Flags; positional: string[] } {
  const flags: Flags = {
    server: "",
    forceTLS: false,
    insecure: false,
    caFile: "",
    certFile: "",
    keyFile: "",
    user: "",
    output: "default",
    file: "",
    peerUrls: "",
    all: false,
    namespace: "",
    allNamespaces: false,
    verbose: false,
    help: false,
  };
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    let name: string | undefined;
    let value: string | undefined;
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      if (eq >= 0) value = a.slice(eq + 1);
      if (!(name in BOOL_FLAGS) && !(name in VALUE_FLAGS)) throw new ExitError(`unknown flag: --${name}`);
    } else if (a.startsWith("-") && a.length > 1 && a !== "-") {
      const c = a[1];
      name = SHORTS[c];
      if (!name) throw new ExitError(`unknown shorthand flag: '${c}' in ${a}`);
      if (a.length > 2) value = a[2] === "=" ? a.slice(3) : a.slice(2);
    } else {
      positional.push(a);
      continue;
    }
    if (name in BOOL_FLAGS) {
      (flags as unknown as Obj)[BOOL_FLAGS[name]] = value === undefined ? true : value === "true";
    } else {
      if (value === undefined) {
        if (i + 1 >= args.length) throw new ExitError(`flag needs an argument: --${name}`);
        value = args[++i];
      }
      (flags as unknown as Obj)[VALUE_FLAGS[name]] = value;
    }
  }
  return { flags, positional };
}

/** cobra's prefix matching over command names. */
function resolveCommand(word: string): string | undefined {
  if (COMMANDS.includes(word)) return word;
  const m = COMMANDS.filter((c) => c.startsWith(word));
  return m.length === 1 ? m[0] : undefined;
}

/** How egctl reaches the server: the flags over the current context of ~/.egctlrc. */
interface Connection {
  server: string;
  /** HTTPS even for a bare host:port (--force-tls, or certificates in the context, as Easegress's egctl does) */
  https: boolean;
  auth?: { user: string; pass: string };
  tls: https.RequestOptions;
}

/** Combines the flags with the current context of ~/.egctlrc (flags win). */
function connection(flags: Flags, io: EgctlIO): Connection {
  const rc = rcContext(io);
  const file = (p: string | undefined) => (p ? Deno.readTextFileSync(p) : undefined);
  const data = (b64: string | undefined) => (b64 ? Buffer.from(b64, "base64").toString() : undefined);
  const ca = file(flags.caFile) ?? file(rc.cluster?.["certificate-authority"]) ??
    data(rc.cluster?.["certificate-authority-data"]);
  const cert = file(flags.certFile) ?? file(rc.user?.["client-certificate"]) ??
    data(rc.user?.["client-certificate-data"]);
  const key = file(flags.keyFile) ?? file(rc.user?.["client-key"]) ?? data(rc.user?.["client-key-data"]);
  if (!!cert !== !!key) throw new ExitError("a client certificate needs its key: give both --cert-file and --key-file");
  let auth: Connection["auth"];
  if (flags.user) {
    const i = flags.user.indexOf(":");
    if (i < 0) throw new ExitError(`--user wants user:password, got ${JSON.stringify(flags.user)}`);
    auth = { user: flags.user.slice(0, i), pass: flags.user.slice(i + 1) };
  } else if (rc.user?.username) {
    auth = { user: String(rc.user.username), pass: String(rc.user.password ?? "") };
  }
  return {
    server: flags.server || rc.cluster?.server || "localhost:2381",
    https: flags.forceTLS || !!(ca || cert),
    auth,
    tls: { rejectUnauthorized: !flags.insecure, ...(ca ? { ca } : {}), ...(cert ? { cert, key } : {}) },
  };
}

class Client {
  #resources?: APIResource[];
  constructor(readonly conn: Connection) {}

  url(p: string): string {
    let server = this.conn.server;
    if (server.startsWith("https://")) return server + p;
    server = server.replace(/^http:\/\//, "");
    return (this.conn.https ? "https://" : "http://") + server + p;
  }

  /** One request; resolves with status and body text, or rejects with Go's url.Error text. */
  raw(method: string, url: string, body?: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const u = new URL(url);
      const mod = u.protocol === "https:" ? https : http;
      const headers: Record<string, string> = {};
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        headers["Content-Length"] = String(Buffer.byteLength(body));
      }
      const auth = this.conn.auth;
      if (auth) headers["Authorization"] = "Basic " + Buffer.from(`${auth.user}:${auth.pass}`).toString("base64");
      const req = mod.request(
        u,
        { method, headers, ...(u.protocol === "https:" ? this.conn.tls : {}) } as http.RequestOptions,
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
          res.on("error", reject);
        },
      );
      const op = method[0] + method.slice(1).toLowerCase();
      req.on("error", (err: Error & { code?: string; address?: string; port?: number }) => {
        let detail = err.message;
        if (err.code === "ECONNREFUSED") {
          const addr = err.address?.includes(":") ? `[${err.address}]` : err.address;
          detail = `dial tcp ${addr}:${err.port}: connect: connection refused`;
        } else if (err.code === "ECONNRESET" || /socket hang up/.test(err.message)) {
          detail = "EOF";
        } else if (err.code?.startsWith("HPE_")) {
          // not HTTP: e.g. the TLS alert an HTTPS server answers plaintext with
          detail = "net/http: HTTP/1.x transport connection broken: malformed HTTP response";
        } else if (err.code === "ENOTFOUND" || err.code === "EAI_AGAIN") {
          detail = `dial tcp: lookup ${u.hostname}: no such host`;
        }
        reject(new Error(`${op} ${JSON.stringify(url)}: ${detail}`));
      });
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  /** general.HandleRequest: returns the body of a 2xx answer, else throws `<code>: <message>`. */
  async request(method: string, p: string, yamlBody?: string): Promise<string> {
    let json: string | undefined;
    if (yamlBody !== undefined) {
      try {
        json = JSON.stringify(parseYaml(yamlBody) ?? null);
      } catch (err) {
        throw new Error(`yaml ${yamlBody} to json failed: ${(err as Error).message}`);
      }
    }
    const url = this.url(p);
    let resp: { status: number; body: string };
    try {
      resp = await this.raw(method, url, json);
    } catch (err) {
      // An HTTPS admin API of ours answers plaintext with a TLS alert, not Go's 400 "Client sent an HTTP request to an
      // HTTPS server" (Deno's TLS server cannot), so a bare host:port whose answer was not HTTP (or EOF) is tried over
      // https; the request never reached a handler. If that fails too, the first error stands.
      if (
        !url.startsWith("http://") || /^http:\/\//.test(this.conn.server) ||
        !/: (EOF|.*malformed HTTP response)$/.test((err as Error).message)
      ) {
        throw err;
      }
      resp = await this.raw(method, "https://" + url.slice(7), json).catch(() => Promise.reject(err));
    }
    if (
      url.startsWith("http://") && resp.status === 400 &&
      resp.body.includes("Client sent an HTTP request to an HTTPS server")
    ) {
      resp = await this.raw(method, "https://" + url.slice(7), json);
    }
    if (resp.status < 200 || resp.status > 299) {
      let code = 0;
      let msg = resp.body;
      try {
        const e = JSON.parse(resp.body);
        if (e && typeof e === "object" && !Array.isArray(e)) {
          code = typeof e.code === "number" ? e.code : 0;
          msg = typeof e.message === "string" ? e.message : "";
        }
      } catch { /* not JSON */ }
      throw new Error(`${code}: ${msg}`);
    }
    return resp.body;
  }

  async apiResources(): Promise<APIResource[]> {
    if (!this.#resources) this.#resources = JSON.parse(await this.request("GET", "/apis/v2/object-api-resources"));
    return this.#resources!;
  }

  async resourceKind(arg: string): Promise<string> {
    for (const r of [CUSTOM_DATA, CUSTOM_DATA_KIND, MEMBER]) if (inResource(arg, r)) return r.Kind;
    for (const r of await this.apiResources()) if (inResource(arg, r)) return r.Kind;
    throw new Error(`unknown resource: ${arg}`);
  }
}

function inResource(arg: string, r: APIResource): boolean {
  return arg === r.Name || arg === r.Kind || (r.Aliases ?? []).includes(arg);
}

/** The cluster and user of the current context in ~/.egctlrc (kubeconfig-like YAML), if any. */
function rcContext(io: EgctlIO): { cluster?: Obj; user?: Obj } {
  const home = io.env["HOME"];
  if (!home) return {};
  try {
    const cfg = parseYaml(Deno.readTextFileSync(`${home}/.egctlrc`)) as Obj;
    const ctx = (cfg.contexts ?? []).find((c: Obj) => c.name === cfg["current-context"])?.context;
    const cluster = (cfg.clusters ?? []).find((c: Obj) => c.name === ctx?.cluster)?.cluster;
    const user = (cfg.users ?? []).find((u: Obj) => u.name === ctx?.user)?.user;
    return { cluster, user };
  } catch {
    return {};
  }
}

function age(t: unknown): string {
  const d = parseRfc3339(t);
  return d ? durationMostSignificantUnit(Date.now() - d.getTime()) : "unknown";
}

/** An egctl run. */
class Egctl {
  out = "";
  constructor(readonly c: Client, readonly flags: Flags, readonly io: EgctlIO) {}

  print(s: string) {
    this.io.stdout(s);
  }

  get defaultFormat(): boolean {
    return this.flags.output === "default";
  }

  printBody(body: string) {
    this.print(formatBody(body, this.flags.output === "json" ? "json" : "yaml"));
  }

  // ---- members
  async getMember(name?: string): Promise<void> {
    const what = name ? `Member ${name}` : "all Member";
    let body: string;
    try {
      body = await this.c.request("GET", "/apis/v2/status/members");
    } catch (err) {
      throw errorMsg("get", err, what);
    }
    if (!this.defaultFormat) return this.printBody(body);
    const members = JSON.parse(body) as Obj[];
    const rows = (ms: Obj[]) => [
      ["NAME", "ROLE", "AGE", "STATE", "API-ADDR", "HEARTBEAT"],
      ...ms.map((m) => {
        const hb = parseRfc3339(m.lastHeartbeatTime);
        return [
          String(m.options?.Name ?? ""),
          String(m.options?.ClusterRole ?? ""),
          m.etcd ? age(m.etcd.startTime) : "unknown",
          isOffline(m.lastHeartbeatTime) ? OFFLINE : m.etcd ? String(m.etcd.state ?? "") : "",
          String(m.options?.APIAddr ?? ""),
          hb ? durationMostSignificantUnit(Date.now() - hb.getTime()) + " ago" : "unknown",
        ];
      }),
    ];
    if (!name) return this.print(tabwrite(rows(members)));
    const m = members.find((x) => x.options?.Name === name);
    if (!m) throw errorMsg("get", new Error(`member ${name} not found`), what);
    this.print(tabwrite(rows([m])));
  }

  async describeMember(name?: string): Promise<void> {
    const what = name ? `Member ${name}` : "all Member";
    let body: string;
    try {
      body = await this.c.request("GET", "/apis/v2/status/members");
    } catch (err) {
      throw errorMsg("describe", err, what);
    }
    if (!this.defaultFormat) return this.printBody(body);
    let members = JSON.parse(body) as Obj[];
    if (name) {
      members = members.filter((m) => m.options?.Name === name).slice(0, 1);
      if (members.length === 0) throw errorMsg("describe", new Error(`member ${name} not found`), what);
    }
    const maps = members.map((m) => {
      const r: Obj = {
        etcd: m.etcd
          ? new Ordered({ id: m.etcd.id ?? "", startTime: m.etcd.startTime ?? "", state: m.etcd.state ?? "" })
          : null,
        lastHeartbeatTime: m.lastHeartbeatTime ?? "",
        lastDefragTime: m.lastDefragTime ?? "",
      };
      for (const [k, v] of Object.entries(m.options ?? {})) r[k] = v;
      return r;
    });
    this.print(printMapInterface(maps, ["name", "lastHeartbeatTime", "", "etcd", ""], [], this.flags.verbose));
  }

  /**
   * `create member NAME --peer-urls URL[,URL]` (ours): adds a primary as a learner, which promotes itself once it
   * has caught up; prints the flags to start it with.
   */
  async createMember(args: string[]): Promise<void> {
    if (args.length !== 1) {
      throw new Error("create member needs exactly one name: egctl create member NAME --peer-urls URL");
    }
    const name = args[0];
    const peerURLs = this.flags.peerUrls.split(",").map((u) => u.trim()).filter((u) => u !== "");
    if (peerURLs.length === 0) throw new Error("--peer-urls is required: the new member's peer URLs");
    let body: string;
    try {
      body = await this.c.request("POST", "/apis/v2/members", JSON.stringify({ name, peerURLs }));
    } catch (err) {
      throw errorMsg("create", err, "Member", name);
    }
    if (!this.defaultFormat) return this.printBody(body);
    const added = JSON.parse(body) as { id: string; flags: string[] };
    this.print(
      successMsg("create", "Member", name) + "\n" +
        `Added as a learner (ID ${added.id}); it becomes a voting member once it has caught up.\n` +
        "Start it with its own --api-addr, --listen-client-urls, --advertise-client-urls, --listen-peer-urls and:\n" +
        `  ${added.flags.join(" ")}\n`,
    );
  }

  async deleteMember(names: string[]): Promise<void> {
    for (const n of names) {
      try {
        await this.c.request("DELETE", `/apis/v2/status/members/${n}`);
      } catch (err) {
        throw errorMsg("purge", err, "Member", n);
      }
      this.print(successMsg("purge", "Member", n) + "\n");
    }
  }

  // ---- objects
  objectPath(name: string | undefined, withFlags: boolean): string {
    let p = name ? `/apis/v2/objects/${name}` : "/apis/v2/objects";
    if (withFlags) {
      const q = new URLSearchParams();
      q.set("all-namespaces", String(this.flags.allNamespaces));
      q.set("namespace", this.flags.namespace);
      p += `?${q.toString()}`;
    }
    return p;
  }

  metaTable(metas: Obj[]): string {
    return tabwrite([
      ["NAME", "KIND", "AGE"],
      ...metas.map((m) => [String(m.name ?? ""), String(m.kind ?? ""), age(m.createdAt)]),
    ]);
  }

  nsMetaTable(all: Record<string, Obj[]>): string {
    const rows = [["NAME", "KIND", "NAMESPACE", "AGE"]];
    for (const m of all["default"] ?? []) rows.push([m.name, m.kind, "default", age(m.createdAt)]);
    for (const [ns, metas] of Object.entries(all)) {
      if (ns === "default") continue;
      for (const m of metas) rows.push([m.name, m.kind, ns, age(m.createdAt)]);
    }
    return tabwrite(rows);
  }

  async getAllObjects(): Promise<void> {
    let body: string;
    try {
      body = await this.c.request("GET", this.objectPath(undefined, true));
    } catch (err) {
      throw errorMsg("get", err, "resource");
    }
    if (!this.defaultFormat) return this.printBody(body);
    if (this.flags.allNamespaces) {
      const all = JSON.parse(body) as Record<string, Obj[]>;
      for (const k of Object.keys(all)) all[k] = [...(all[k] ?? [])].sort(byName);
      return this.print(this.nsMetaTable(all));
    }
    this.print(this.metaTable((JSON.parse(body) as Obj[]).sort(byName)));
  }

  async getObject(kind: string, name?: string): Promise<void> {
    const what = name ? `${kind} ${name}` : `all ${kind}`;
    let body: string;
    try {
      body = await this.c.request("GET", this.objectPath(name, true));
    } catch (err) {
      throw errorMsg("get", err, what);
    }
    if (!this.defaultFormat) {
      if (name) return this.printBody(body);
      const maps = (JSON.parse(body) as Obj[]).filter((m) => m.kind === kind);
      return this.printBody(maps.length === 0 ? "null" : goJson(maps));
    }
    if (this.flags.allNamespaces) {
      const all = JSON.parse(body) as Record<string, Obj[]>;
      for (const k of Object.keys(all)) all[k] = (all[k] ?? []).filter((m) => m.kind === kind).sort(byName);
      return this.print(this.nsMetaTable(all));
    }
    const parsed = JSON.parse(body);
    const metas = (name ? [parsed] : parsed as Obj[]).filter((m: Obj) => m.kind === kind).sort(byName);
    this.print(this.metaTable(metas));
  }

  async describeObject(kind: string, name?: string): Promise<void> {
    const what = name ? `${kind} ${name}` : `all ${kind}`;
    const fail = (err: unknown) => errorMsg("get", err, what);
    let body: string;
    try {
      body = await this.c.request("GET", this.objectPath(name, true));
    } catch (err) {
      throw fail(err);
    }
    let nsSpecs: Record<string, Obj[]>;
    if (this.flags.allNamespaces) nsSpecs = JSON.parse(body);
    else {
      const parsed = JSON.parse(body);
      nsSpecs = { [this.flags.namespace || "default"]: name ? [parsed] : parsed };
    }
    for (const ns of Object.keys(nsSpecs)) nsSpecs[ns] = (nsSpecs[ns] ?? []).filter((m) => m.kind === kind);
    try {
      const statusPath = !name || this.flags.allNamespaces
        ? "/apis/v2/status/objects"
        : `/apis/v2/status/objects/${name}?namespace=${this.flags.namespace}`;
      const status = JSON.parse(await this.c.request("GET", statusPath)) as Obj;
      const byKey: Record<string, Obj[]> = {};
      for (const [k, v] of Object.entries(status)) {
        const parts = k.split("/");
        if (parts.length !== 3) throw new Error("invalid status key");
        if (name && parts[1] !== name) continue;
        const st = v && typeof v === "object" && ("spec" in v || "status" in v) ? v.status ?? null : v;
        (byKey[`${parts[0]}/${parts[1]}`] ??= []).push(new Ordered({ node: parts[2], status: st }) as never);
      }
      const categories: Record<string, string> = {};
      for (const r of await this.c.apiResources().catch(() => [] as APIResource[])) {
        categories[r.Kind] = r.Category ?? "";
      }
      for (const [ns, specs] of Object.entries(nsSpecs)) {
        for (const s of specs) {
          const cat = categories[s.kind] ||
            (s.kind === "HTTPServer" ? "TrafficGate" : s.kind === "Pipeline" ? "Pipeline" : "");
          const sns = cat === "Pipeline" || cat === "TrafficGate" ? `eg-traffic-${ns}` : ns;
          s.allStatus = byKey[`${sns}/${s.name}`] ?? null;
        }
      }
    } catch (err) {
      throw fail(err);
    }
    if (!this.defaultFormat) {
      const input = this.flags.allNamespaces ? nsSpecs : Object.values(nsSpecs)[0];
      return this.printBody(goJson(plain(input)));
    }
    const specials = ["name", "kind", "version", "", "flow", "", "filters", "", "rules", ""];
    let printSpace = false;
    const banner = (ns: string) => {
      const msg = `In Namespace ${ns}:`;
      return `${"=".repeat(msg.length)}\n${msg}\n${"=".repeat(msg.length)}\n`;
    };
    const def = nsSpecs["default"] ?? [];
    if (def.length > 0) {
      this.print(banner("default") + printMapInterface(def, specials, ["allStatus"], this.flags.verbose));
      printSpace = true;
    }
    for (const [ns, specs] of Object.entries(nsSpecs)) {
      if (ns === "default" || specs.length === 0) continue;
      if (printSpace) this.print("\n\n");
      this.print(banner(ns) + printMapInterface(specs, specials, ["allStatus"], this.flags.verbose));
      printSpace = true;
    }
  }

  async specsFromFile(cmd: string): Promise<{ kind: string; name: string; doc: string }[]> {
    let text: string;
    try {
      text = this.flags.file === "-" ? await this.io.readStdin() : await this.io.readFile(this.flags.file);
    } catch (err) {
      const msg = err instanceof Deno.errors.NotFound
        ? `open ${this.flags.file}: no such file or directory`
        : (err as Error).message;
      throw new Error(`${SHORT[cmd]} failed: ${msg}`);
    }
    const specs = [];
    for (const doc of splitYamlDocuments(text)) {
      let v: Obj;
      try {
        v = (parseYaml(doc) ?? {}) as Obj;
        if (typeof v !== "object" || Array.isArray(v)) v = {};
      } catch (err) {
        throw new Error(`error parsing ${doc}: ${(err as Error).message.split("\n")[0]}`);
      }
      const get = (k: string) => {
        const key = Object.keys(v).find((x) => x.toLowerCase() === k);
        return key === undefined || v[key] === null ? "" : String(v[key]);
      };
      if (get("kind") === "") throw new Error(`kind is empty: ${doc}`);
      specs.push({ kind: get("kind"), name: get("name"), doc });
    }
    return specs;
  }

  async create(): Promise<void> {
    for (const s of await this.specsFromFile("create")) {
      if (s.kind === "CustomDataKind" || s.kind === "CustomData") {
        throw errorMsg("create", new Error("404: not found"), s.kind, s.name);
      }
      try {
        await this.c.request("POST", "/apis/v2/objects", s.doc);
      } catch (err) {
        throw errorMsg("create", err, s.kind, s.name);
      }
      this.print(successMsg("create", s.kind, s.name) + "\n");
    }
  }

  async apply(): Promise<void> {
    for (const s of await this.specsFromFile("apply")) {
      let exist = true;
      try {
        await this.c.request("GET", `/apis/v2/objects/${s.name}`);
      } catch {
        exist = false;
      }
      const action = exist ? "update" : "create";
      try {
        if (exist) await this.c.request("PUT", `/apis/v2/objects/${s.name}`, s.doc);
        else await this.c.request("POST", "/apis/v2/objects", s.doc);
      } catch (err) {
        throw errorMsg(action, err, s.kind, s.name);
      }
      this.print(successMsg(action, s.kind, s.name) + "\n");
    }
  }

  async deleteObjects(kind: string, names: string[]): Promise<void> {
    const what = this.flags.all ? `all ${kind}` : `${kind} ${names.join(", ")}`;
    const fail = (err: unknown) => errorMsg("delete", err, what);
    let metas: Obj[];
    try {
      metas = (JSON.parse(await this.c.request("GET", this.objectPath(undefined, false))) as Obj[])
        .filter((m) => m.kind === kind);
    } catch (err) {
      throw fail(err);
    }
    if (this.flags.all) {
      for (const m of metas) {
        try {
          await this.c.request("DELETE", `/apis/v2/objects/${m.name}`);
        } catch (err) {
          throw fail(err);
        }
        this.print(successMsg("delete", m.kind, m.name) + "\n");
      }
      return;
    }
    const have = new Set(metas.map((m) => m.name));
    for (const n of names) {
      if (!have.has(n)) throw fail(new Error(`no such ${kind} ${n}`));
      try {
        await this.c.request("DELETE", `/apis/v2/objects/${n}`);
      } catch (err) {
        throw fail(err);
      }
      this.print(successMsg("delete", kind, n) + "\n");
    }
  }

  async getCustomDataKinds(): Promise<void> {
    let body: string;
    try {
      body = await this.c.request("GET", "/apis/v2/customdatakinds");
    } catch (err) {
      throw errorMsg("get", err, "all CustomDataKind");
    }
    if (!this.defaultFormat) return this.printBody(body);
    const kinds = (JSON.parse(body) as Obj[]).sort(byName);
    this.print(tabwrite([
      ["NAME", "ID-FIELD", "JSON-SCHEMA", "DATA-NUM"],
      ...kinds.map((k) => [k.name, k.idField || "-", k.jsonSchema ? "yes" : "no", String(k.len ?? 0)]),
    ]));
  }

  async getAll(): Promise<void> {
    const errs: string[] = [];
    for (
      const f of [
        () => this.getAllObjects(),
        ...(this.flags.namespace !== "" && this.flags.namespace !== "default"
          ? []
          : [() => this.getMember(), () => this.getCustomDataKinds()]),
      ]
    ) {
      try {
        await f();
        this.print("\n");
      } catch (err) {
        errs.push((err as Error).message);
      }
    }
    if (errs.length > 0) throw new Error(errs.join("\n"));
  }

  async apiResources(): Promise<void> {
    const action = "create,apply,delete,get,describe";
    const rows = (await this.c.apiResources()).map((r) => {
      const aliases = [...(r.Aliases ?? [])].sort((a, b) => a.length - b.length);
      return [r.Name, aliases.join(","), r.Category ?? "", r.Kind, action];
    }).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    rows.unshift(["NAME", "ALIASES", "CATEGORY", "KIND", "ACTION"]);
    rows.push([CUSTOM_DATA_KIND.Name, CUSTOM_DATA_KIND.Aliases!.join(","), CUSTOM_DATA_KIND.Kind, action]);
    rows.push([CUSTOM_DATA.Name, CUSTOM_DATA.Aliases!.join(","), CUSTOM_DATA.Kind, action]);
    rows.push([MEMBER.Name, MEMBER.Aliases!.join(","), MEMBER.Kind, "delete,get,describe"]);
    this.print(tabwrite(rows));
  }

  async apis(): Promise<void> {
    const body = await this.c.request("GET", "/apis/v2");
    if (!this.defaultFormat) return this.printBody(body);
    const rows: string[][] = [];
    for (const g of JSON.parse(body) as Obj[]) {
      for (const e of g.Entries ?? []) rows.push([e.path, e.method, "/apis/v2", g.Group]);
    }
    rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.print(tabwrite([["PATH", "METHOD", "VERSION", "GROUP"], ...rows]));
  }
}

function byName(a: Obj, b: Obj): number {
  const x = String(a.name ?? ""), y = String(b.name ?? "");
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Replaces Ordered wrappers by their plain objects. */
function plain(v: unknown): unknown {
  if (v instanceof Ordered) return Object.fromEntries(Object.entries(v.value).map(([k, x]) => [k, plain(x)]));
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v as Obj).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

/** Go's json.Marshal of decoded JSON: map keys sorted, HTML characters escaped. */
function goJson(v: unknown): string {
  const sortDeep = (x: unknown): unknown => {
    if (x instanceof Ordered) return Object.fromEntries(Object.entries(x.value).map(([k, y]) => [k, sortDeep(y)]));
    if (Array.isArray(x)) return x.map(sortDeep);
    if (x && typeof x === "object") {
      const o = x as Obj;
      return Object.fromEntries(Object.keys(o).sort().map((k) => [k, sortDeep(o[k])]));
    }
    return x;
  };
  return JSON.stringify(sortDeep(v)).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** k8s YAMLReader: documents separated by `---` lines; empty chunks are skipped. */
export function splitYamlDocuments(text: string): string[] {
  const docs: string[] = [];
  let cur = "";
  for (const line of text.split(/(?<=\n)/)) {
    if (/^---\s*$/.test(line.replace(/\n$/, "")) || line.startsWith("--- ")) {
      if (cur.length > 0) docs.push(cur);
      cur = "";
      continue;
    }
    cur += line;
  }
  if (cur.length > 0) docs.push(cur);
  void parseAllDocuments;
  return docs;
}

/** Runs egctl with these arguments; returns the exit code. */
export async function egctl(args: string[], io: EgctlIO = denoIO()): Promise<number> {
  const fail = (msg: string) => {
    io.stderr((io.isTTY ? "\x1b[31mError: \x1b[0m" : "Error: ") + msg + "\n");
    return 1;
  };
  let parsed;
  let proxyFlags: HTTPProxyFlags;
  try {
    const extracted = extractHTTPProxyFlags(args);
    proxyFlags = extracted.flags;
    parsed = parseFlags(extracted.rest);
  } catch (err) {
    return fail((err as Error).message);
  }
  const { flags, positional } = parsed;
  if (positional.length === 0 || (flags.help && positional.length <= 1)) {
    io.stdout(HELP);
    return 0;
  }
  const cmd = resolveCommand(positional[0]);
  if (!cmd) return fail(`unknown command ${JSON.stringify(positional[0])} for "egctl"`);
  if (cmd === "help") {
    io.stdout(HELP);
    return 0;
  }
  if (!["yaml", "json", "default"].includes(flags.output)) {
    return fail(`unsupported output format: ${flags.output}, only support (yaml, json and default)`);
  }
  const rest = positional.slice(1);
  const httpproxy = cmd === "create" && rest[0] === "httpproxy";
  if (!httpproxy) {
    // --cert-file/--key-file name egctl's client certificate, except in `create httpproxy` where they are the
    // HTTPServer's (as in Easegress; its client certificate then comes from ~/.egctlrc)
    const other = proxyFlags.given.find((f) => f !== "cert-file" && f !== "key-file");
    if (other) return fail(`unknown flag: --${other}`);
    flags.certFile = proxyFlags.certFiles.at(-1) ?? "";
    flags.keyFile = proxyFlags.keyFiles.at(-1) ?? "";
  }
  let client: Client;
  try {
    client = new Client(connection(flags, io));
  } catch (err) {
    return fail((err as Error).message);
  }
  const e = new Egctl(client, flags, io);
  try {
    switch (cmd) {
      case "get":
      case "describe": {
        if (rest.length === 0) throw new Error("no resource specified");
        if (rest.length === 1 && inResource(rest[0], CUSTOM_DATA)) throw new Error("no custom data kind specified");
        if (rest[0] === "all" && rest.length !== 1) throw new Error("no more args allowed for arg 'all'");
        if (rest.length > 2 && !(rest.length === 3 && inResource(rest[0], CUSTOM_DATA))) {
          throw new Error("invalid args");
        }
        if (cmd === "get" && rest[0] === "all") {
          await e.getAll();
          break;
        }
        const kind = await client.resourceKind(rest[0]);
        if (kind === "Member") await (cmd === "get" ? e.getMember(rest[1]) : e.describeMember(rest[1]));
        else if (kind === "CustomDataKind" && cmd === "get") await e.getCustomDataKinds();
        else if (kind === "CustomData" || kind === "CustomDataKind") {
          throw new Error(`${cmd} ${kind} failed, 404: not found`);
        } else await (cmd === "get" ? e.getObject(kind, rest[1]) : e.describeObject(kind, rest[1]));
        break;
      }
      case "create":
        if (httpproxy) {
          if (flags.help) io.stdout(HTTPPROXY_HELP);
          else {
            await createHTTPProxy(rest.slice(1), proxyFlags, {
              request: (method, path, body) => client.request(method, path, body),
              readFile: (p) => Deno.readFile(p),
              print: (s) => io.stdout(s),
            });
          }
          break;
        }
        if (rest[0] !== undefined && inResource(rest[0], MEMBER)) {
          await e.createMember(rest.slice(1));
          break;
        }
        // falls through
      case "apply":
        if (flags.file === "") throw new Error("yaml file is required");
        await (cmd === "create" ? e.create() : e.apply());
        break;
      case "delete": {
        if (rest.length === 0) throw new Error("no resource specified");
        let kind: string;
        try {
          kind = await client.resourceKind(rest[0]);
        } catch (err) {
          throw new Error(`invalid resource for ${rest[0]}, ${(err as Error).message}`);
        }
        if (flags.all) {
          if ((kind !== "CustomData" && rest.length !== 1) || (kind === "CustomData" && rest.length !== 2)) {
            io.stdout(`${kind} [${rest.join(" ")}]`);
            throw new Error("invalid arguments for --all");
          }
        } else if (kind === "CustomData" ? rest.length < 3 : rest.length < 2) {
          throw new Error(kind === "CustomData" ? "" : "invalid arguments");
        }
        if (kind === "Member") await e.deleteMember(rest.slice(1));
        else if (kind === "CustomData" || kind === "CustomDataKind") {
          throw new Error(`delete ${kind} ${rest.slice(1).join(" ")} failed, 404: not found`);
        } else await e.deleteObjects(kind, rest.slice(1));
        break;
      }
      case "health":
        await client.request("GET", "/apis/v2/healthz");
        if (!e.defaultFormat) e.printBody(`{"message": "OK"}`);
        else io.stdout("OK\n");
        break;
      case "api-resources":
        await e.apiResources();
        break;
      case "apis":
        await e.apis();
        break;
      case "member":
        // deprecated v2.0 spelling: `egctl member list` prints the statuses as YAML
        if (rest[0] === "list") {
          const body = await client.request("GET", "/apis/v2/status/members");
          io.stdout(formatBody(body, flags.output === "json" ? "json" : "yaml"));
        } else if (rest[0] === "purge" && rest[1]) {
          await client.request("DELETE", `/apis/v2/status/members/${rest[1]}`);
        } else throw new Error(`unknown command ${JSON.stringify(rest[0] ?? "")} for "egctl member"`);
        break;
      default:
        throw new Error(`command ${cmd} is not supported by this egctl`);
    }
  } catch (err) {
    if (err instanceof ExitError) return fail(err.message);
    return fail((err as Error).message);
  }
  return 0;
}

/** Process stdio. */
export function denoIO(): EgctlIO {
  const enc = new TextEncoder();
  const writeAll = (w: { writeSync(p: Uint8Array): number }, s: string) => {
    let b = enc.encode(s);
    while (b.length > 0) b = b.subarray(w.writeSync(b));
  };
  return {
    stdout: (s) => writeAll(Deno.stdout, s),
    stderr: (s) => writeAll(Deno.stderr, s),
    readStdin: async () => new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer()),
    readFile: (p) => Deno.readTextFile(p),
    env: Deno.env.toObject(),
    isTTY: Deno.stdout.isTerminal(),
  };
}
