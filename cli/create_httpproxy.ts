/**
 * `egctl create httpproxy NAME --port P --rule [HOST]/PATH[*]=URL1,URL2 ...` (Easegress v2.11
 * `cmd/client/commandv2/create/createhttpproxy.go`): one HTTPServer NAME whose rules route each --rule to its own
 * Pipeline NAME-<i> holding a round-robin Proxy over the rule's endpoints, created in that order through the admin API.
 * TLS flags fill `https`, `autoCert`, `caCertBase64` and the `certs`/`keys` maps (keyed by the cert file's path).
 * `--auto-cert-domain-name` and `--dns-provider` configure an AutoCertManager, a kind this cluster refuses (it needs an
 * ACME service), so they fail with the API's answer.
 */
import { resolve } from "node:path";
import { Buffer } from "node:buffer";
import { errorMsg, successMsg } from "./print.ts";

/** `egctl create httpproxy --help`. */
export const HTTPPROXY_HELP = `Create an HTTPServer and one Pipeline per rule with a specific name

Usage:
  egctl create httpproxy NAME --port PORT --rule [HOST]/PATH[*]=ENDPOINT1,ENDPOINT2 [--rule ...] [flags]

Examples:
  # /bar to two endpoints, every path under /foo to a third
  egctl create httpproxy demo --port 10080 \\
    --rule="/bar=http://127.0.0.1:8080,http://127.0.0.1:8081" --rule="/foo*=http://127.0.0.1:8082"

Flags:
      --auto-cert                      Enable auto cert
      --auto-cert-domain-name string   Auto cert domain name
      --auto-cert-email string         Auto cert email
      --ca-cert-file string            CA cert file
      --cert-file stringArray          Cert file
      --dns-provider stringArray       Auto cert DNS provider
  -h, --help                           help for httpproxy
      --key-file stringArray           Key file
      --port int                       Port of HTTPServer (default -1)
      --rule stringArray               Rule in format host/path=endpoint1,endpoint2; a path ending with '*' is a prefix
      --tls                            Enable TLS
`;

/** The flags of `create httpproxy`, as cobra parses them. */
export interface HTTPProxyFlags {
  port: number;
  rules: string[];
  tls: boolean;
  autoCert: boolean;
  caCertFile: string;
  certFiles: string[];
  keyFiles: string[];
  autoCertEmail: string;
  autoCertDomainName: string;
  dnsProviders: string[];
  /** the flags given, for "unknown flag" errors of other commands */
  given: string[];
}

const VALUE_FLAGS = [
  "port",
  "rule",
  "ca-cert-file",
  "cert-file",
  "key-file",
  "auto-cert-email",
  "auto-cert-domain-name",
  "dns-provider",
];
const BOOL_FLAGS = ["tls", "auto-cert"];

/** Takes the flags of `create httpproxy` out of argv; the rest goes to egctl's global flag parser. */
export function extractHTTPProxyFlags(args: string[]): { rest: string[]; flags: HTTPProxyFlags } {
  const flags: HTTPProxyFlags = {
    port: -1,
    rules: [],
    tls: false,
    autoCert: false,
    caCertFile: "",
    certFiles: [],
    keyFiles: [],
    autoCertEmail: "",
    autoCertDomainName: "",
    dnsProviders: [],
    given: [],
  };
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      rest.push(...args.slice(i));
      break;
    }
    const m = /^--([a-z-]+)(?:=([\s\S]*))?$/.exec(a);
    if (!m || (!VALUE_FLAGS.includes(m[1]) && !BOOL_FLAGS.includes(m[1]))) {
      rest.push(a);
      continue;
    }
    const name = m[1];
    flags.given.push(name);
    if (BOOL_FLAGS.includes(name)) {
      const on = m[2] === undefined ? true : parseGoBool(m[2], name);
      if (name === "tls") flags.tls = on;
      else flags.autoCert = on;
      continue;
    }
    let value = m[2];
    if (value === undefined) {
      if (i + 1 >= args.length) throw new Error(`flag needs an argument: --${name}`);
      value = args[++i];
    }
    switch (name) {
      case "port":
        if (!/^[+-]?\d+$/.test(value)) {
          throw new Error(
            `invalid argument "${value}" for "--port" flag: strconv.ParseInt: parsing "${value}": invalid syntax`,
          );
        }
        flags.port = Number(value);
        break;
      case "rule":
        flags.rules.push(value);
        break;
      case "ca-cert-file":
        flags.caCertFile = value;
        break;
      case "cert-file":
        flags.certFiles.push(value);
        break;
      case "key-file":
        flags.keyFiles.push(value);
        break;
      case "auto-cert-email":
        flags.autoCertEmail = value;
        break;
      case "auto-cert-domain-name":
        flags.autoCertDomainName = value;
        break;
      case "dns-provider":
        flags.dnsProviders.push(value);
        break;
    }
  }
  return { rest, flags };
}

function parseGoBool(v: string, name: string): boolean {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(v)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(v)) return false;
  throw new Error(`invalid argument "${v}" for "--${name}" flag: strconv.ParseBool: parsing "${v}": invalid syntax`);
}

/** One parsed --rule. */
interface ProxyRule {
  host: string;
  path: string;
  pathPrefix: string;
  endpoints: string[];
}

function parseRule(rule: string): ProxyRule {
  const parts = rule.split("=");
  if (parts.length !== 2) {
    throw new Error(`rule ${rule} should in format 'host/path=endpoint1,endpoint2', invalid format`);
  }
  const slash = parts[0].indexOf("/");
  if (slash < 0) throw new Error(`rule ${rule} not contain a path`);
  const host = parts[0].slice(0, slash), p = parts[0].slice(slash + 1);
  const endpoints = parts[1].split(",").filter((e) => e !== "");
  if (endpoints.length === 0) throw new Error(`endpoints in rule ${rule} is empty`);
  return p.endsWith("*")
    ? { host, path: "", pathPrefix: "/" + p.slice(0, -1), endpoints }
    : { host, path: "/" + p, pathPrefix: "", endpoints };
}

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

/** The HTTPServer and Pipelines `create httpproxy` creates, in creation order (the API fills the other defaults). */
export function translateHTTPProxy(
  name: string,
  flags: HTTPProxyFlags,
  files: { caCert: string; certs: string[]; keys: string[] },
): Obj[] {
  const server: Obj = {
    name,
    kind: "HTTPServer",
    keepAlive: true,
    https: false,
    port: flags.port,
    keepAliveTimeout: "60s",
    maxConnections: 10240,
  };
  if (flags.tls) {
    server.https = true;
    if (flags.autoCert) server.autoCert = true;
    if (files.caCert !== "") server.caCertBase64 = files.caCert;
    if (files.certs.length > 0) {
      server.certs = Object.fromEntries(flags.certFiles.map((f, i) => [f, files.certs[i]]));
      server.keys = Object.fromEntries(flags.certFiles.map((f, i) => [f, files.keys[i]]));
    }
  }
  const rules: Obj[] = [];
  const pipelines: Obj[] = [];
  flags.rules.map(parseRule).forEach((r, i) => {
    const backend = `${name}-${i}`;
    const path: Obj = r.path !== "" ? { path: r.path, backend } : { pathPrefix: r.pathPrefix, backend };
    // consecutive rules with the same host share one router rule
    const last = rules[rules.length - 1];
    if (last && (last.host ?? "") === r.host) last.paths.push(path);
    else rules.push({ ...(r.host !== "" ? { host: r.host } : {}), paths: [path] });
    pipelines.push({
      name: backend,
      kind: "Pipeline",
      filters: [{
        name: "proxy",
        kind: "Proxy",
        maxIdleConns: 10240,
        maxIdleConnsPerHost: 1024,
        pools: [{ servers: r.endpoints.map((url) => ({ url })), loadBalance: { policy: "roundRobin" } }],
      }],
    });
  });
  server.rules = rules;
  return [server, ...pipelines];
}

/** What the command needs from egctl: the admin API, output and files. */
export interface HTTPProxyEnv {
  request(method: string, path: string, body?: string): Promise<string>;
  readFile(path: string): Promise<Uint8Array>;
  print(s: string): void;
}

async function loadCertFile(env: HTTPProxyEnv, file: string): Promise<string> {
  const abs = resolve(file);
  try {
    return Buffer.from(await env.readFile(abs)).toString("base64");
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new Error(`open ${abs}: no such file or directory`);
    throw err;
  }
}

/** Runs `egctl create httpproxy` with its positional arguments (after `httpproxy`). */
export async function createHTTPProxy(args: string[], flags: HTTPProxyFlags, env: HTTPProxyEnv): Promise<void> {
  if (args.length !== 1) throw new Error("create httpproxy requires a name");
  if (flags.port < 0 || flags.port > 65535) throw new Error(`port ${flags.port} is invalid`);
  if (flags.rules.length === 0) throw new Error("rule is required");
  if (flags.certFiles.length !== flags.keyFiles.length) throw new Error("cert files and key files are not matched");
  flags.rules.forEach(parseRule);
  const caCert = flags.caCertFile !== "" ? await loadCertFile(env, flags.caCertFile) : "";
  const certs: string[] = [], keys: string[] = [];
  for (const f of flags.certFiles) certs.push(await loadCertFile(env, f));
  for (const f of flags.keyFiles) keys.push(await loadCertFile(env, f));
  if (flags.autoCertDomainName !== "" || flags.dnsProviders.length > 0) {
    if (!flags.autoCert) throw new Error("auto cert domain name or dns provider is set, but auto cert is not enabled");
    if (flags.autoCertDomainName === "") throw new Error("auto cert domain name is required when provide dns provider");
    if (flags.dnsProviders.length === 0) {
      throw new Error("auto cert dns provider is required when provide auto cert domain name");
    }
  }
  const dnsProvider: Record<string, string> = {};
  for (const d of flags.dnsProviders) {
    const eq = d.indexOf("=");
    if (eq < 0) throw new Error(`dns provider ${d} should in format 'name=secret', invalid format`);
    dnsProvider[d.slice(0, eq)] = d.slice(eq + 1);
  }
  const objects = translateHTTPProxy(args[0], flags, { caCert, certs, keys });
  if (flags.autoCertDomainName !== "") await applyAutoCertManager(env, flags, dnsProvider);
  for (const o of objects) {
    try {
      await env.request("POST", "/apis/v2/objects", JSON.stringify(o));
    } catch (err) {
      throw errorMsg("create", err, o.kind, o.name);
    }
    env.print(successMsg("create", o.kind, o.name) + "\n");
  }
}

/** Adds the domain to the one AutoCertManager (created with --auto-cert-email when there is none) and applies it. */
async function applyAutoCertManager(
  env: HTTPProxyEnv,
  flags: HTTPProxyFlags,
  dnsProvider: Record<string, string>,
): Promise<void> {
  const managers = (JSON.parse(await env.request("GET", "/apis/v2/objects")) as Obj[])
    .filter((o) => o.kind === "AutoCertManager");
  if (managers.length > 1) throw new Error("there are more than one AutoCertManager");
  let spec = managers[0];
  if (!spec) {
    if (flags.autoCertEmail === "") {
      throw new Error(
        "there is no AutoCertManager and auto-cert-email is not set, please create one or set auto-cert-email",
      );
    }
    spec = { name: "autocertmanager", kind: "AutoCertManager" };
  }
  if (flags.autoCertEmail !== "") spec.email = flags.autoCertEmail;
  const domain = { name: flags.autoCertDomainName, dnsProvider };
  const domains = (spec.domains ?? []) as Obj[];
  const at = domains.findIndex((d) => d.name === domain.name);
  spec.domains = at < 0 ? [...domains, domain] : domains.map((d, i) => (i === at ? domain : d));
  const exists = managers.length === 1;
  const action = exists ? "update" : "create";
  try {
    if (exists) await env.request("PUT", `/apis/v2/objects/${spec.name}`, JSON.stringify(spec));
    else await env.request("POST", "/apis/v2/objects", JSON.stringify(spec));
  } catch (err) {
    throw errorMsg(action, err, "AutoCertManager", spec.name);
  }
  env.print(successMsg(action, "AutoCertManager", spec.name) + "\n");
}
