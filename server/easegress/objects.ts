/**
 * Object kinds and their specs (Easegress `pkg/supervisor/spec.go` + each kind's DefaultSpec/Validate): parsing a
 * YAML or JSON body, filling meta defaults (`version`, `labels.easegress/owner`, `createdAt`) and the kind's spec
 * defaults, validating, and producing the JSON that is stored under /config/objects/<name> (keys sorted, as Go
 * marshals maps). In this version objects are only stored, validated, listed and deleted; nothing runs them yet.
 */
import { parse as parseYaml } from "yaml";
import { parseGoDuration, rfc3339 } from "./gotime.ts";

/** Go's json.Marshal text for a JSON value: like JSON.stringify, with <, >, & and U+2028/9 escaped. */
export function goJsonStringify(v: unknown): string {
  return JSON.stringify(v).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** MetaSpec.version default. */
export const DEFAULT_SPEC_VERSION = "easegress.megaease.com/v2";
/** The owner label and its value for objects created through the API. */
export const OWNER_LABEL = "easegress/owner";
export const OWNER_USER_API = "user-api";

/** Object categories. */
export const Category = {
  SystemController: "SystemController",
  BusinessController: "BusinessController",
  Pipeline: "Pipeline",
  TrafficGate: "TrafficGate",
} as const;

/** An entry of GET /object-api-resources (Go field names: no json tags). */
export interface APIResource {
  Category: string;
  Kind: string;
  Name: string;
  Aliases: string[];
}

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

interface KindDef {
  category: string;
  aliases: string[];
  defaultSpec: () => Obj;
  /** returns the object part of the spec (only the kind's fields, omitempty applied) or throws a validation error */
  build: (raw: Obj) => Obj;
}

const SCHEMA = "https://json-schema.org/draft/2020-12/schema";

/** A ValidateRecorder-shaped error (its message is the recorder's JSON). */
export class SpecError extends Error {}

function recorder(kind: "jsonschemaErrs" | "formatErrs" | "generalErrs", errs: string[]): SpecError {
  return new SpecError(JSON.stringify({ [kind]: errs }));
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "number" : "number";
  return typeof v;
}

/** encoding/json's type errors for struct fields. */
function jsonTypeError(field: string, v: unknown, goType: string): SpecError {
  return new SpecError(`json: cannot unmarshal ${typeName(v)} into Go struct field Spec.${field} of type ${goType}`);
}

function want(obj: Obj, field: string, type: "boolean" | "string" | "number" | "array" | "object", goType: string) {
  const v = obj[field];
  if (v === undefined || v === null) return;
  const actual: string = typeof v;
  const ok = type === "array"
    ? Array.isArray(v)
    : type === "object"
    ? actual === "object" && !Array.isArray(v)
    : actual === type;
  if (!ok) throw jsonTypeError(field, v, goType);
}

/** Drops keys whose value is the JSON zero value (Go's omitempty). */
function omitEmpty(o: Obj, keep: string[] = []): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue;
    const empty = v === null || v === false || v === 0 || v === "" ||
      (Array.isArray(v) && v.length === 0) ||
      (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0);
    if (empty && !keep.includes(k)) continue;
    out[k] = v;
  }
  return out;
}

const URLNAME_RE = /^[A-Za-z0-9\-_.~]{1,253}$/;

const PATH_FIELDS = [
  "ipFilter",
  "path",
  "pathPrefix",
  "pathRegexp",
  "rewriteTarget",
  "methods",
  "backend",
  "backendPool",
  "clientMaxBodySize",
  "headers",
  "queries",
  "matchAllHeader",
  "matchAllQuery",
  "setHeaders",
];
const RULE_FIELDS = ["ipFilter", "host", "hostRegexp", "hosts", "paths"];
const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"];

function pick(o: Obj, fields: string[]): Obj {
  const out: Obj = {};
  for (const f of fields) if (o[f] !== undefined) out[f] = o[f];
  return out;
}

function buildHTTPServer(raw: Obj): Obj {
  const spec: Obj = { keepAlive: true, keepAliveTimeout: "60s", maxConnections: 10240, ...raw };
  for (const f of ["http3", "keepAlive", "https", "autoCert", "xForwardedFor"]) want(spec, f, "boolean", "bool");
  for (const f of ["address", "keepAliveTimeout", "caCertBase64", "certBase64", "keyBase64", "routerKind"]) {
    want(spec, f, "string", "string");
  }
  for (const [f, t] of [["port", "uint16"], ["clientMaxBodySize", "int64"], ["maxConnections", "uint32"]]) {
    want(spec, f, "number", t);
  }
  want(spec, "rules", "array", "routers.Rules");
  const jsErrs: string[] = [];
  const port = spec.port ?? 0;
  if (port < 1) {
    jsErrs.push(
      `jsonschema: '/port' does not validate with ${SCHEMA}#/properties/port/minimum: must be >= 1 but found ${port}`,
    );
  }
  if (spec.routerKind && !["", "Ordered", "RadixTree"].includes(spec.routerKind)) {
    jsErrs.push(
      `jsonschema: '/routerKind' does not validate with ${SCHEMA}#/properties/routerKind/enum: value must be one of "", "Ordered", "RadixTree"`,
    );
  }
  const rules = (spec.rules ?? []).map((r: Obj, i: number) => {
    const rule = pick(r ?? {}, RULE_FIELDS);
    rule.paths = (rule.paths ?? []).map((p: Obj, j: number) => {
      const pth = pick(p ?? {}, PATH_FIELDS);
      for (const f of ["path", "pathPrefix"]) {
        if (pth[f] !== undefined && pth[f] !== "" && !String(pth[f]).startsWith("/")) {
          jsErrs.push(
            `jsonschema: '/rules/${i}/paths/${j}/${f}' does not validate with ${SCHEMA}#/properties/rules/items/properties/paths/items/properties/${f}/pattern: does not match pattern '^/'`,
          );
        }
      }
      return omitEmpty(pth);
    });
    return omitEmpty(rule);
  });
  if (jsErrs.length > 0) throw recorder("jsonschemaErrs", jsErrs);
  const fmtErrs: string[] = [];
  if (spec.keepAliveTimeout) {
    try {
      parseGoDuration(spec.keepAliveTimeout);
    } catch (err) {
      fmtErrs.push(`keepAliveTimeout: invalid duration: ${(err as Error).message}`);
    }
  }
  rules.forEach((r: Obj) =>
    (r.paths ?? []).forEach((p: Obj) => {
      for (const m of p.methods ?? []) {
        if (!HTTP_METHODS.includes(m)) fmtErrs.push(`methods: invalid http method: ${m}`);
      }
    })
  );
  if (fmtErrs.length > 0) throw recorder("formatErrs", fmtErrs);
  const general: string[] = [];
  if (spec.http3 && !spec.https) general.push("*httpserver.Spec: http3 requires https");
  if (spec.https && !spec.autoCert && !spec.certBase64 && Object.keys(spec.certs ?? {}).length === 0) {
    general.push("*httpserver.Spec: certBase64 or keyBase64 is empty");
  }
  for (const r of rules) {
    for (const p of r.paths ?? []) {
      if (!p.backend && !p.backendPool) general.push("*httpserver.Spec: backend or backendPool is required");
    }
  }
  if (general.length > 0) throw recorder("generalErrs", general);
  const out = {
    http3: spec.http3,
    keepAlive: spec.keepAlive ?? false,
    https: spec.https ?? false,
    autoCert: spec.autoCert,
    xForwardedFor: spec.xForwardedFor,
    address: spec.address,
    port,
    clientMaxBodySize: spec.clientMaxBodySize,
    keepAliveTimeout: spec.keepAliveTimeout,
    maxConnections: spec.maxConnections,
    cacheSize: spec.cacheSize,
    tracing: spec.tracing,
    caCertBase64: spec.caCertBase64,
    certBase64: spec.certBase64,
    keyBase64: spec.keyBase64,
    certs: spec.certs,
    keys: spec.keys,
    routerKind: spec.routerKind,
    ipFilter: spec.ipFilter,
    rules,
    globalFilter: spec.globalFilter,
    accessLogFormat: spec.accessLogFormat,
  };
  return omitEmpty(out, ["keepAlive", "https", "port"]);
}

/** Filter kinds Easegress registers, with the results a flow may jump on. */
const FILTER_RESULTS: Record<string, string[]> = {
  Proxy: ["internalError", "clientError", "serverError", "failureCode", "timeout", "shortCircuited"],
  SimpleHTTPProxy: ["internalError", "clientError", "serverError"],
  WebSocketProxy: ["internalError", "clientError"],
  GRPCProxy: ["internalError", "clientError", "serverError", "timeout", "shortCircuited"],
  RequestAdaptor: ["decompressFailed", "compressFailed"],
  ResponseAdaptor: ["responseBodyReadErr", "compressFailed", "decompressFailed"],
  RequestBuilder: ["buildErr"],
  ResponseBuilder: ["buildErr"],
  DataBuilder: ["buildErr"],
  ResultBuilder: ["unknown"],
  Validator: ["invalid"],
  RateLimiter: ["rateLimited"],
  CORSAdaptor: ["preflighted", "rejected"],
  Fallback: [],
  Mock: ["mocked"],
  Redirector: ["redirected"],
  RedirectorV2: ["redirected"],
  HeaderLookup: [],
  HeaderToJSON: ["jsonEncodeDecodeErr", "bodyReadErr"],
  CertExtractor: [],
  OIDCAdaptor: [],
  OPAFilter: ["opaDenied"],
  RemoteFilter: ["failed", "responseAlready"],
  FileServer: ["serverError"],
  WasmHost: ["outOfVM", "wasmError"],
  WAF: ["blocked"],
  Kafka: ["parseErr"],
  KafkaBackend: ["parseErr"],
  TopicMapper: ["mapTopicErr"],
  ConnectControl: ["bannedClientOrTopic"],
  MQTTClientAuth: ["authFail"],
  MeshAdaptor: [],
  AIGatewayProxy: ["internalError", "clientError", "serverError", "providerError"],
};

function buildPipeline(raw: Obj): Obj {
  want(raw, "flow", "array", "[]pipeline.FlowNode");
  want(raw, "filters", "array", "[]map[string]interface {}");
  want(raw, "resilience", "array", "[]map[string]interface {}");
  want(raw, "data", "object", "map[string]interface {}");
  if (raw.filters === undefined || raw.filters === null) {
    throw recorder("jsonschemaErrs", [
      `jsonschema: '/filters' does not validate with ${SCHEMA}#/properties/filters/type: expected array, but got null`,
    ]);
  }
  const flow = (raw.flow ?? []).map((n: Obj) =>
    omitEmpty({ filter: n?.filter ?? "", alias: n?.alias, namespace: n?.namespace, jumpIf: n?.jumpIf }, ["filter"])
  );
  const fmtErrs = flow.filter((n: Obj) => !URLNAME_RE.test(n.filter)).map((n: Obj) =>
    `filter: invalid name format: ${n.filter}`
  );
  if (fmtErrs.length > 0) throw recorder("formatErrs", fmtErrs);
  const gen = (prefix: string, msg: string) => recorder("generalErrs", [`*pipeline.Spec: ${prefix}: ${msg}`]);
  const kinds = new Map<string, string>();
  for (const f of raw.filters as Obj[]) {
    if (!f || typeof f !== "object") throw gen("filters", "invalid filter spec");
    const name = typeof f.name === "string" ? f.name : "";
    const kind = typeof f.kind === "string" ? f.kind : "";
    if (!URLNAME_RE.test(name)) {
      throw gen("filters", JSON.stringify({ formatErrs: [`name: invalid name format: ${name}`] }));
    }
    if (!(kind in FILTER_RESULTS)) throw gen("filters", `kind ${kind} not found`);
    if (name === "END") throw gen("filters", `can't use END(built-in) for filter name`);
    if (kinds.has(name)) throw gen("filters", `duplicated filter name ${name}`);
    if (kind === "Proxy") {
      const pools = f.pools;
      if (!Array.isArray(pools) || pools.length === 0) {
        throw gen(
          "filters",
          JSON.stringify({
            jsonschemaErrs: [
              `jsonschema: '' does not validate with ${SCHEMA}#/required: missing properties: 'pools'`,
            ],
          }),
        );
      }
      const main = pools.filter((p: Obj) => !p?.filter).length;
      if (main !== 1) {
        throw gen("filters", JSON.stringify({ generalErrs: ["*proxies.Spec: only one pool can be main pool"] }));
      }
    }
    kinds.set(name, kind);
  }
  // flow targets must be defined later in the flow (or END); results must belong to the filter's kind
  const targets = new Map<string, number>([["END", 1]]);
  for (let i = flow.length - 1; i >= 0; i--) {
    const n = flow[i];
    if (n.filter === "END") continue;
    const kind = kinds.get(n.filter);
    if (!kind) throw gen("flow", `filter ${n.filter} not found`);
    for (const [result, target] of Object.entries((n.jumpIf ?? {}) as Record<string, string>)) {
      const results = FILTER_RESULTS[kind];
      if (result !== "" && !results.includes(result)) {
        throw gen("flow", `filter ${n.filter}: result ${result} is not in [${results.join(" ")}]`);
      }
      const c = targets.get(target) ?? 0;
      if (c === 0) throw gen("flow", `filter ${n.filter}: target filter ${target} not found`);
      if (c > 1) throw gen("flow", `duplicated filter name/alias: ${target}`);
    }
    const alias = n.alias || n.filter;
    targets.set(alias, (targets.get(alias) ?? 0) + 1);
  }
  return omitEmpty({ flow, filters: raw.filters, resilience: raw.resilience, data: raw.data }, ["filters"]);
}

const KINDS: Record<string, KindDef> = {
  HTTPServer: {
    category: Category.TrafficGate,
    aliases: ["httpservers", "hs"],
    defaultSpec: () => ({ keepAlive: true, keepAliveTimeout: "60s", maxConnections: 10240 }),
    build: buildHTTPServer,
  },
  Pipeline: {
    category: Category.Pipeline,
    aliases: ["pipelines", "pl"],
    defaultSpec: () => ({}),
    build: buildPipeline,
  },
  TrafficController: {
    category: Category.SystemController,
    aliases: ["trafficcontroller", "tc"],
    defaultSpec: () => ({}),
    build: () => ({}),
  },
  RawConfigTrafficController: {
    category: Category.SystemController,
    aliases: ["rawconfigtrafficcontroller", "rctc"],
    defaultSpec: () => ({}),
    build: () => ({}),
  },
  ServiceRegistry: {
    category: Category.SystemController,
    aliases: ["sr", "serviceregistry"],
    defaultSpec: () => ({ syncInterval: "10s" }),
    build: (raw) => {
      const s = { syncInterval: "10s", ...raw };
      want(s, "syncInterval", "string", "string");
      try {
        parseGoDuration(s.syncInterval);
      } catch (err) {
        throw recorder("formatErrs", [`syncInterval: invalid duration: ${(err as Error).message}`]);
      }
      return { syncInterval: s.syncInterval };
    },
  },
  StatusSyncController: {
    category: Category.SystemController,
    aliases: ["statussynccontroller", "ssc"],
    defaultSpec: () => ({}),
    build: () => ({}),
  },
};

/** System controllers in dependency order (created at start-up, written to the store if absent). */
export const SYSTEM_CONTROLLERS = [
  "TrafficController",
  "RawConfigTrafficController",
  "ServiceRegistry",
  "StatusSyncController",
];

/** Traffic kinds, whose status lives under the `eg-traffic-<ns>` namespace. */
export const TRAFFIC_KINDS = new Set(["HTTPServer", "Pipeline", "GRPCServer"]);

/** Sorted kinds (GET /object-kinds). */
export function objectKinds(): string[] {
  return Object.keys(KINDS).sort();
}

/** GET /object-api-resources (sorted by kind for a stable order). */
export function objectAPIResources(): APIResource[] {
  return Object.keys(KINDS).sort().map((kind) => ({
    Category: KINDS[kind].category,
    Kind: kind,
    Name: kind.toLowerCase(),
    Aliases: KINDS[kind].aliases,
  }));
}

/** The category of a kind, undefined when unknown. */
export function categoryOf(kind: string): string | undefined {
  return KINDS[kind]?.category;
}

/** A parsed and validated object spec. */
export interface Spec {
  name: string;
  kind: string;
  category: string;
  labels: Record<string, string> | null;
  /** the stored form: meta + spec, keys sorted */
  json: Obj;
}

function sortDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortDeep);
  if (v && typeof v === "object") {
    const o = v as Obj;
    return Object.fromEntries(Object.keys(o).sort().map((k) => [k, sortDeep(o[k])]));
  }
  return v;
}

/** Parses YAML or JSON text into a value, with the error text Easegress's converter gives. */
export function parseBody(text: string): unknown {
  try {
    return parseYaml(text, { merge: true, uniqueKeys: false });
  } catch (err) {
    const first = (err as Error).message.split("\n")[0];
    throw new SpecError(`error converting YAML to JSON: yaml: ${first}`);
  }
}

/**
 * supervisor.NewSpec / CreateSpec: `created` sets createdAt to now unless the body carries one. Throws SpecError
 * with Easegress's message.
 */
export function newSpec(text: string | Obj, created: boolean, now: Date = new Date()): Spec {
  const raw = typeof text === "string" ? parseBody(text) : text;
  if (raw === null || raw === undefined || typeof raw !== "object" || Array.isArray(raw)) {
    throw new SpecError(
      `json: cannot unmarshal ${typeName(raw ?? null)} into Go value of type supervisor.MetaSpec`,
    );
  }
  const body = raw as Obj;
  const meta: Obj = { name: "", kind: "", version: DEFAULT_SPEC_VERSION, labels: { [OWNER_LABEL]: OWNER_USER_API } };
  if (created) meta.createdAt = rfc3339(now);
  for (const f of ["name", "kind", "version", "createdAt"]) {
    if (body[f] === undefined || body[f] === null) continue;
    if (typeof body[f] !== "string") {
      throw new SpecError(
        `json: cannot unmarshal ${typeName(body[f])} into Go struct field MetaSpec.${f} of type string`,
      );
    }
    meta[f] = body[f];
  }
  if (body.labels === null) meta.labels = null;
  else if (body.labels !== undefined) {
    if (typeof body.labels !== "object" || Array.isArray(body.labels)) {
      throw new SpecError(
        `json: cannot unmarshal ${
          typeName(body.labels)
        } into Go struct field MetaSpec.labels of type map[string]string`,
      );
    }
    for (const [k, v] of Object.entries(body.labels)) {
      if (typeof v !== "string") {
        throw new SpecError(
          `json: cannot unmarshal ${typeName(v)} into Go struct field MetaSpec.labels of type string`,
        );
      }
      meta.labels[k] = v;
    }
  }
  if (!URLNAME_RE.test(meta.name)) throw recorder("formatErrs", [`name: invalid name format: ${meta.name}`]);
  const def = KINDS[meta.kind];
  if (!def) throw new SpecError(`kind ${meta.kind} not found`);
  const objectPart = def.build(stripMeta(body));
  const metaPart = omitEmpty(meta, ["name", "kind"]);
  const json = sortDeep({ ...objectPart, ...metaPart }) as Obj;
  return {
    name: meta.name,
    kind: meta.kind,
    category: def.category,
    labels: meta.labels && Object.keys(meta.labels).length > 0 ? meta.labels : null,
    json,
  };
}

function stripMeta(body: Obj): Obj {
  const { name: _n, kind: _k, version: _v, labels: _l, createdAt: _c, ...rest } = body;
  return rest;
}

/** A system controller's stored spec (name = kind, no createdAt). */
export function systemControllerSpec(kind: string): Spec {
  return newSpec({ name: kind, kind, ...KINDS[kind].defaultSpec() }, false);
}

/** Template for GET /objects-yaml/{kind}/{name}: meta then default spec, as YAML. */
export function templateKind(kind: string): string | undefined {
  return Object.keys(KINDS).find((k) => k.toLowerCase() === kind.toLowerCase());
}

/** The default spec of a kind. */
export function defaultSpecOf(kind: string): Obj {
  return KINDS[kind].defaultSpec();
}
