/**
 * The HTTPServer object spec (Easegress v2.11 `pkg/object/httpserver/spec.go` and `routers/spec.go`): TypeScript
 * types of the parsed spec with Easegress's defaults applied, and its validation with Easegress's messages.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { Buffer } from "node:buffer";
import {
  arrayOf,
  BOOL,
  decodeAndValidate,
  FLOAT,
  INT64,
  mapOf,
  opt,
  ptr,
  regexpError,
  req,
  STRING,
  STRING_MAP,
  STRINGS,
  type StructDef,
  UINT16,
  UINT32,
  val,
} from "./schema.ts";
import { IP_FILTER, type IPFilterSpec, SERVER_POOL, type ServerPoolSpec } from "./common.ts";

/** A header or query condition of a path: the first value is in `values` or matches `regexp`. */
export interface HeaderMatch {
  key: string;
  values?: string[];
  regexp: string;
}

/** One path of a rule; `backend` names a Pipeline, `backendPool` generates one. */
export interface PathSpec {
  ipFilter?: IPFilterSpec;
  /** exact path (the pattern, under RadixTree) */
  path: string;
  pathPrefix: string;
  pathRegexp: string;
  rewriteTarget: string;
  /** none means every method */
  methods?: string[];
  backend: string;
  backendPool?: ServerPoolSpec;
  /** 0 inherits the server's */
  clientMaxBodySize: number;
  headers?: HeaderMatch[];
  queries?: HeaderMatch[];
  matchAllHeader: boolean;
  matchAllQuery: boolean;
  /** an empty value deletes the header; values may hold nginx-like variables */
  setHeaders?: Record<string, string>;
}

/** A host of a rule: exact (one leading or trailing `*` allowed) or a regexp. */
export interface HostSpec {
  isRegexp: boolean;
  value: string;
}

/** A routing rule: hosts (none = every host), an IP filter, paths tried in order. */
export interface RuleSpec {
  ipFilter?: IPFilterSpec;
  host: string;
  hostRegexp: string;
  hosts?: HostSpec[];
  paths?: PathSpec[];
}

/** OpenTelemetry settings of a server (kept as given apart from the checked fields). */
export interface TracingSpec {
  serviceName: string;
  sampleRate: number;
  headerFormat: "" | "trace-context" | "b3";
  [field: string]: unknown;
}

/** The HTTPServer spec with defaults: keepAlive true, keepAliveTimeout 60s, maxConnections 10240. */
export interface HTTPServerSpec {
  http3: boolean;
  keepAlive: boolean;
  https: boolean;
  autoCert: boolean;
  xForwardedFor: boolean;
  /** "" = every interface */
  address: string;
  port: number;
  /** 0 = 4 MiB, < 0 = stream */
  clientMaxBodySize: number;
  keepAliveTimeout: string;
  maxConnections: number;
  /** route cache size; 0 = off */
  cacheSize: number;
  tracing?: TracingSpec;
  caCertBase64: string;
  certBase64: string;
  keyBase64: string;
  /** label → cert PEM (base64 or plain); paired with `keys` by label */
  certs?: Record<string, string>;
  keys?: Record<string, string>;
  /** "" = Ordered */
  routerKind: "" | "Ordered" | "RadixTree";
  ipFilter?: IPFilterSpec;
  rules?: RuleSpec[];
  globalFilter: string;
  accessLogFormat: string;
}

function headersCheck(hs: (HeaderMatch | undefined)[]): string | undefined {
  for (const h of hs) {
    if (h && (h.values ?? []).length === 0 && h.regexp === "") {
      return `both of values and regexp are empty for key: ${h.key}`;
    }
  }
  return undefined;
}

const HEADER_MATCH = (go: string): StructDef => ({
  go,
  fields: {
    key: req(STRING, { required: true }),
    values: opt(STRINGS, { uniqueItems: true }),
    regexp: opt(STRING, { format: "regexp" }),
  },
});

const PATH: StructDef<PathSpec> = {
  go: "routers.Path",
  fields: {
    ipFilter: opt(ptr(IP_FILTER)),
    path: opt(STRING, { pattern: "^/" }),
    pathPrefix: opt(STRING, { pattern: "^/" }),
    pathRegexp: opt(STRING, { format: "regexp" }),
    rewriteTarget: opt(STRING),
    methods: opt(STRINGS, { uniqueItems: true, format: "httpmethod-array" }),
    backend: opt(STRING),
    backendPool: opt(ptr(SERVER_POOL)),
    clientMaxBodySize: opt(INT64),
    headers: opt(arrayOf(ptr(HEADER_MATCH("routers.Header")), "routers.Headers"), { check: headersCheck }),
    queries: opt(arrayOf(ptr(HEADER_MATCH("routers.Query")), "routers.Queries"), { check: headersCheck }),
    matchAllHeader: opt(BOOL),
    matchAllQuery: opt(BOOL),
    setHeaders: opt(STRING_MAP),
  },
  validate: (p) => {
    if (p.path === "" && p.pathPrefix === "" && p.pathRegexp === "" && p.rewriteTarget !== "") {
      return "rewriteTarget is specified but path is empty";
    }
    if (p.backend === "" && !p.backendPool) return "either backend or backendPool must be specified";
    return undefined;
  },
};

const RULE: StructDef = {
  go: "routers.Rule",
  fields: {
    ipFilter: opt(ptr(IP_FILTER)),
    host: opt(STRING),
    hostRegexp: opt(STRING, { format: "regexp" }),
    hosts: opt(arrayOf(val({
      go: "routers.Host",
      fields: { isRegexp: opt(BOOL), value: req(STRING, { required: true }) },
    }))),
    paths: opt(arrayOf(ptr(PATH), "routers.Paths")),
  },
};

const TRACING: StructDef = {
  go: "tracing.Spec",
  fields: {
    serviceName: req(STRING, { required: true, minLength: 1 }),
    tags: opt(STRING_MAP),
    attributes: opt(STRING_MAP),
    spanLimits: opt(mapOf({ t: "any" }, "tracing.SpanLimitsSpec")),
    sampleRate: opt(FLOAT, { minimum: 0, maximum: 1 }),
    batchLimits: opt(mapOf({ t: "any" }, "tracing.BatchLimitsSpec")),
    exporter: opt(mapOf({ t: "any" }, "tracing.ExporterSpec")),
    zipkin: opt(mapOf({ t: "any" }, "tracing.ZipkinDeprecatedSpec")),
    headerFormat: opt(STRING, { enum: ["trace-context", "b3"] }),
  },
};

function pemBlocks(pem: string): { type: string; text: string }[] {
  const out: { type: string; text: string }[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;
  for (const m of pem.matchAll(re)) out.push({ type: m[1], text: m[0] });
  return out;
}

/** tls.X509KeyPair's verdict on a certificate chain and key, as Go words it; undefined when they pair. */
export function x509KeyPairError(certPem: string, keyPem: string): string | undefined {
  const certs = pemBlocks(certPem).filter((b) => b.type === "CERTIFICATE");
  if (certs.length === 0) return "tls: failed to find any PEM data in certificate input";
  const keys = pemBlocks(keyPem).filter((b) => b.type.endsWith("PRIVATE KEY"));
  if (keys.length === 0) return "tls: failed to find any PEM data in key input";
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certs[0].text);
  } catch (err) {
    return `x509: malformed certificate: ${(err as Error).message}`;
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(keys[0].text))) return "tls: private key does not match public key";
  } catch {
    return "tls: failed to parse private key";
  }
  return undefined;
}

/** A PEM given as base64 or as plain text (base64 is tried first). */
export function decodeBase64Pem(s: string): string {
  if (/^[A-Za-z0-9+/]*={0,2}$/.test(s) && s.length % 4 === 0) return Buffer.from(s, "base64").toString("utf8");
  return s;
}

/** The catch-all's capture name in RadixTree rewrite targets. */
export const RADIX_WILDCARD = "EG_WILDCARD";

/** The capture names of a RadixTree pattern (`{name}`, `{name:regexp}`, a final `*`); throws what Easegress panics. */
export function radixParamKeys(pattern: string): string[] {
  const keys: string[] = [];
  let pat = pattern;
  for (;;) {
    const ps = pat.indexOf("{"), ws = pat.indexOf("*");
    if (ps < 0 && ws < 0) return keys;
    if (ps >= 0 && ws >= 0 && ws < ps) {
      throw new Error("wildcard '*' must be the last pattern in a route, otherwise use a '{param}'");
    }
    let key: string, pe: number;
    if (ps >= 0) {
      let depth = 0;
      pe = ps;
      for (let i = ps; i < pat.length; i++) {
        if (pat[i] === "{") depth++;
        else if (pat[i] === "}" && --depth === 0) {
          pe = i;
          break;
        }
      }
      if (pe === ps) throw new Error("route param closing delimiter '}' is missing");
      key = pat.slice(ps + 1, pe);
      pe++;
      const colon = key.indexOf(":");
      if (colon >= 0) {
        const e = regexpError(key.slice(colon + 1));
        if (e) throw new Error(`invalid regexp pattern '${key.slice(colon + 1)}' in route param`);
        key = key.slice(0, colon);
      }
    } else {
      if (ws < pat.length - 1) {
        throw new Error(
          "wildcard '*' must be the last value in a route. trim trailing text or use a '{param}' instead",
        );
      }
      key = RADIX_WILDCARD;
      pe = pat.length;
    }
    if (keys.includes(key)) {
      throw new Error(`routing pattern '${pattern}' contains duplicate param key, '${key}'`);
    }
    keys.push(key);
    pat = pat.slice(pe);
  }
}

/**
 * The RadixTree router's checks of a path and its rewrite target. Easegress panics on these while loading the server
 * (which then keeps its old routes); here they refuse the spec.
 */
function radixPathError(path: string, rewriteTarget: string): string | undefined {
  try {
    const keys = radixParamKeys(path);
    if (rewriteTarget === "") return undefined;
    if (rewriteTarget.includes("*")) return "artRouter RewriteTarget not support '*', please use {EG_WILDCARD}";
    for (const k of radixParamKeys(rewriteTarget)) {
      if (!keys.includes(k)) return `artRouter RewriteTarget syntax error: ${rewriteTarget}`;
    }
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function validateRadixTree(s: HTTPServerSpec): string | undefined {
  if (s.routerKind !== "RadixTree") return undefined;
  for (const [i, rule] of (s.rules ?? []).entries()) {
    for (const [j, p] of (rule?.paths ?? []).entries()) {
      const e = p ? radixPathError(p.path, p.rewriteTarget) : undefined;
      if (e) return `rules[${i}].paths[${j}]: ${e}`;
    }
  }
  return undefined;
}

function validateTLS(s: HTTPServerSpec): string | undefined {
  if (!s.https) return s.http3 ? "https is disabled when http3 enabled" : undefined;
  const certs = s.certs ?? {}, keys = s.keys ?? {};
  if (
    s.certBase64 === "" && s.keyBase64 === "" && Object.keys(certs).length === 0 && Object.keys(keys).length === 0 &&
    !s.autoCert
  ) {
    return "certBase64/keyBase64, certs/keys are both empty and autocert is disabled when https enabled";
  }
  let count = 0;
  if (s.certBase64 !== "" && s.keyBase64 !== "") {
    const e = x509KeyPairError(
      Buffer.from(s.certBase64, "base64").toString("utf8"),
      Buffer.from(s.keyBase64, "base64").toString("utf8"),
    );
    if (e) return `generate x509 key pair failed: ${e}`;
    count++;
  }
  for (const label of Object.keys(certs).sort()) {
    if (!(label in keys)) return `certs ${label} hasn't secret corresponded to it`;
    const e = x509KeyPairError(decodeBase64Pem(certs[label]), decodeBase64Pem(keys[label]));
    if (e) return `generate x509 key pair for ${label} failed: ${e} `;
    count++;
  }
  if (count === 0 && !s.autoCert) return "none valid certs and secret";
  return undefined;
}

export const HTTP_SERVER: StructDef<HTTPServerSpec> = {
  go: "httpserver.Spec",
  defaults: () => ({ keepAlive: true, keepAliveTimeout: "60s", maxConnections: 10240 }),
  fields: {
    http3: opt(BOOL),
    keepAlive: req(BOOL, { required: true }),
    https: req(BOOL, { required: true }),
    autoCert: opt(BOOL),
    xForwardedFor: opt(BOOL),
    address: opt(STRING),
    port: req(UINT16, { required: true, minimum: 1 }),
    clientMaxBodySize: opt(INT64),
    keepAliveTimeout: opt(STRING, { format: "duration" }),
    maxConnections: opt(UINT32, { minimum: 1 }),
    cacheSize: opt(UINT32),
    tracing: opt(ptr(TRACING)),
    caCertBase64: opt(STRING, { format: "base64" }),
    certBase64: opt(STRING, { format: "base64" }),
    keyBase64: opt(STRING, { format: "base64" }),
    certs: opt(STRING_MAP),
    keys: opt(STRING_MAP),
    routerKind: opt(STRING, { enum: ["", "Ordered", "RadixTree"] }),
    ipFilter: opt(ptr(IP_FILTER)),
    rules: opt(arrayOf(ptr(RULE), "routers.Rules")),
    globalFilter: opt(STRING),
    accessLogFormat: opt(STRING),
  },
  validate: (s) => validateRadixTree(s) ?? validateTLS(s),
};

/** Parses an HTTPServer spec (the object's JSON, meta fields ignored); throws SpecError with Easegress's message. */
export function parseHTTPServerSpec(raw: unknown): HTTPServerSpec {
  return decodeAndValidate<HTTPServerSpec>(HTTP_SERVER, raw);
}
