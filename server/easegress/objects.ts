/**
 * Object kinds and their specs (Easegress `pkg/supervisor/spec.go` + each kind's DefaultSpec/Validate): parsing a
 * YAML or JSON body, filling meta defaults (`version`, `labels.easegress/owner`, `createdAt`) and the kind's spec
 * defaults, validating, and producing the JSON that is stored under /config/objects/<name> (keys sorted, as Go
 * marshals maps). The kinds' specs, their defaults and checks live in specs/ (typed, for the data plane); kinds that
 * Easegress has but this cluster does not run are refused with "kind X not supported".
 */
import { parse as parseYaml } from "yaml";
import { rfc3339 } from "./gotime.ts";
import { decodeAndValidate, jsonKind, marshal, req, SpecError, STRING, type StructDef } from "./specs/schema.ts";
import { HTTP_SERVER } from "./specs/httpserver.ts";
import { PIPELINE } from "./specs/pipeline.ts";
import { notSupported } from "./specs/filters.ts";

export { SpecError };

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

/** A JSON object (a spec, or a part of one) as decoded. */
type Obj = Record<string, unknown>;

interface KindDef {
  category: string;
  aliases: string[];
  defaultSpec: () => Obj;
  /** returns the object part of the spec (only the kind's fields, omitempty applied) or throws a validation error */
  build: (raw: Obj) => Obj;
}

const SERVICE_REGISTRY: StructDef = {
  go: "serviceregistry.Spec",
  defaults: () => ({ syncInterval: "10s" }),
  fields: { syncInterval: req(STRING, { required: true, format: "duration" }) },
};

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

const URLNAME_RE = /^[\p{L}0-9\-_.~]{1,253}$/u;

/** Validates a kind's spec with the engine of specs/ and returns what Easegress stores (Go's json.Marshal of it). */
function buildWith(def: StructDef): (raw: Obj) => Obj {
  return (raw) => marshal(def, decodeAndValidate<Obj>(def, raw));
}

/**
 * Object kinds of Easegress that this cluster does not run (they need systems outside it, or controllers it does not
 * have): refused at create time rather than stored and ignored.
 */
const UNSUPPORTED_KINDS = new Set([
  "GRPCServer",
  "MQTTProxy",
  "AutoCertManager",
  "GlobalFilter",
  "IngressController",
  "GatewayController",
  "FaaSController",
  "MeshController",
  "EaseMonitorMetrics",
  "ConsulServiceRegistry",
  "EtcdServiceRegistry",
  "EurekaServiceRegistry",
  "ZookeeperServiceRegistry",
  "NacosServiceRegistry",
  "WAFController",
  "AIGatewayController",
]);

const KINDS: Record<string, KindDef> = {
  HTTPServer: {
    category: Category.TrafficGate,
    aliases: ["httpservers", "hs"],
    defaultSpec: () => ({ keepAlive: true, keepAliveTimeout: "60s", maxConnections: 10240 }),
    build: buildWith(HTTP_SERVER),
  },
  Pipeline: {
    category: Category.Pipeline,
    aliases: ["pipelines", "pl"],
    defaultSpec: () => ({}),
    build: buildWith(PIPELINE),
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
    build: buildWith(SERVICE_REGISTRY),
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

/** The meta fields of a spec as newSpec reads them (supervisor.MetaSpec). */
type MetaFields = {
  name: string;
  kind: string;
  version: string;
  createdAt?: string;
  labels: Record<string, string> | null;
};

/**
 * supervisor.NewSpec / CreateSpec: `created` sets createdAt to now unless the body carries one. Throws SpecError
 * with Easegress's message.
 */
export function newSpec(text: string | Obj, created: boolean, now: Date = new Date()): Spec {
  const raw = typeof text === "string" ? parseBody(text) : text;
  if (raw === null || raw === undefined || typeof raw !== "object" || Array.isArray(raw)) {
    throw new SpecError(
      `json: cannot unmarshal ${jsonKind(raw ?? null)} into Go value of type supervisor.MetaSpec`,
    );
  }
  const body = raw as Obj;
  const meta: MetaFields = {
    name: "",
    kind: "",
    version: DEFAULT_SPEC_VERSION,
    labels: { [OWNER_LABEL]: OWNER_USER_API },
  };
  if (created) meta.createdAt = rfc3339(now);
  for (const f of ["name", "kind", "version", "createdAt"] as const) {
    const v = body[f];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") {
      throw new SpecError(
        `json: cannot unmarshal ${jsonKind(v)} into Go struct field MetaSpec.${f} of type string`,
      );
    }
    meta[f] = v;
  }
  if (body.labels === null) meta.labels = null;
  else if (body.labels !== undefined) {
    if (typeof body.labels !== "object" || Array.isArray(body.labels)) {
      throw new SpecError(
        `json: cannot unmarshal ${
          jsonKind(body.labels)
        } into Go struct field MetaSpec.labels of type map[string]string`,
      );
    }
    for (const [k, v] of Object.entries(body.labels)) {
      if (typeof v !== "string") {
        throw new SpecError(
          `json: cannot unmarshal ${jsonKind(v)} into Go struct field MetaSpec.labels of type string`,
        );
      }
      meta.labels![k] = v;
    }
  }
  if (!URLNAME_RE.test(meta.name)) {
    throw new SpecError(JSON.stringify({ formatErrs: [`name: invalid name format: ${meta.name}`] }));
  }
  const def = KINDS[meta.kind];
  if (!def) {
    throw new SpecError(UNSUPPORTED_KINDS.has(meta.kind) ? notSupported(meta.kind) : `kind ${meta.kind} not found`);
  }
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
