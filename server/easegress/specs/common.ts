/**
 * Spec pieces shared by objects and filters (Easegress `supervisor.MetaSpec`, `stringtool.StringMatcher`,
 * `ipfilter.Spec`, the Proxy server pool of `pkg/filters/proxies` and `httpproxy`), as TypeScript types plus the
 * struct declarations the schema engine checks them with.
 */
import {
  arrayOf,
  BOOL,
  decodeAndValidate,
  INT,
  INT64,
  mapOf,
  opt,
  ptr,
  req,
  STRING,
  STRING_MAP,
  STRINGS,
  type StructDef,
  UINT32,
  val,
} from "./schema.ts";

/** `name`, `kind` and the other meta fields every object, filter and resilience policy carries. */
export interface MetaSpec {
  name: string;
  kind: string;
  version: string;
  labels?: Record<string, string>;
  createdAt: string;
}

/** The meta fields, inlined into every filter and policy struct. */
export const META_FIELDS: StructDef["fields"] = {
  name: req(STRING, { required: true, format: "urlname" }),
  kind: req(STRING, { required: true }),
  version: opt(STRING),
  labels: opt(STRING_MAP),
  createdAt: opt(STRING),
};

export const META: StructDef<MetaSpec> = { go: "supervisor.MetaSpec", fields: META_FIELDS };

/** The meta part of a filter or policy, checked first as Easegress checks it (name format, field types). */
export function parseMeta(raw: unknown): MetaSpec {
  return decodeAndValidate(META, raw);
}

/** `{exact, prefix, regex, empty}`: the patterns are OR-ed; `empty` matches "" and excludes the others. */
export interface StringMatcher {
  exact: string;
  prefix: string;
  regex: string;
  empty: boolean;
}

export const STRING_MATCHER: StructDef<StringMatcher> = {
  go: "stringtool.StringMatcher",
  fields: {
    exact: opt(STRING),
    prefix: opt(STRING),
    regex: opt(STRING, { format: "regexp" }),
    empty: opt(BOOL),
  },
  validate: (m) => {
    if (m.empty) return m.exact || m.prefix || m.regex ? "empty is conflict with other patterns" : undefined;
    return m.exact || m.prefix || m.regex ? undefined : "all patterns are empty";
  },
};

/** IP allow/block lists (IPs or CIDRs); an IP in both gets `!blockByDefault`. */
export interface IPFilterSpec {
  blockByDefault: boolean;
  allowIPs?: string[];
  blockIPs?: string[];
}

export const IP_FILTER: StructDef = {
  go: "ipfilter.Spec",
  fields: {
    blockByDefault: opt(BOOL),
    allowIPs: opt(STRINGS, { uniqueItems: true, format: "ipcidr-array" }),
    blockIPs: opt(STRINGS, { uniqueItems: true, format: "ipcidr-array" }),
  },
};

// ---------------------------------------------------------------- server pools

/** A static upstream server. */
export interface ServerSpec {
  url: string;
  tags?: string[];
  /** 0..100; given on all servers of a pool or on none */
  weight: number;
  keepHost: boolean;
}

const SERVER: StructDef = {
  go: "proxies.Server",
  fields: {
    url: req(STRING, { required: true, format: "url" }),
    tags: opt(STRINGS, { uniqueItems: true }),
    weight: opt(INT, { minimum: 0, maximum: 100 }),
    keepHost: opt(BOOL),
  },
};

/** Sticky sessions, consulted before the load-balance policy. */
export interface StickySessionSpec {
  mode: "CookieConsistentHash" | "DurationBased" | "ApplicationBased";
  appCookieName: string;
  /** "" means EG_SESSION */
  lbCookieName: string;
  /** "" means 2h */
  lbCookieExpire: string;
}

const STICKY_SESSION: StructDef = {
  go: "proxies.StickySessionSpec",
  fields: {
    mode: req(STRING, { required: true, enum: ["CookieConsistentHash", "DurationBased", "ApplicationBased"] }),
    appCookieName: opt(STRING),
    lbCookieName: opt(STRING),
    lbCookieExpire: opt(STRING, { format: "duration" }),
  },
};

/** The basic health-check fields (the legacy `loadBalance.healthCheck` has only these). */
export interface BaseHealthCheckSpec {
  /** "" means 60s */
  interval: string;
  /** "" means 3s */
  timeout: string;
  /** 0 means 1 */
  fails: number;
  /** 0 means 1 */
  passes: number;
  /** legacy probe path (use `uri`) */
  path: string;
}

const BASE_HEALTH_CHECK_FIELDS: StructDef["fields"] = {
  interval: opt(STRING, { format: "duration" }),
  timeout: opt(STRING, { format: "duration" }),
  fails: opt(INT, { minimum: 1 }),
  passes: opt(INT, { minimum: 1 }),
  path: opt(STRING),
};

/** `loadBalance` of a pool. `policy` "" means roundRobin (an unknown name too, with an error log). */
export interface LoadBalanceSpec {
  policy: string;
  headerHashKey: string;
  forwardKey: string;
  stickySession?: StickySessionSpec;
  healthCheck?: BaseHealthCheckSpec;
}

const LOAD_BALANCE: StructDef<LoadBalanceSpec> = {
  go: "proxies.LoadBalanceSpec",
  fields: {
    policy: opt(STRING),
    headerHashKey: opt(STRING),
    forwardKey: opt(STRING),
    stickySession: opt(ptr(STICKY_SESSION)),
    healthCheck: opt(ptr({ go: "proxies.HealthCheckSpec", fields: BASE_HEALTH_CHECK_FIELDS })),
  },
};

/** Health-check response matching; the default accepts statuses 200..399. */
export interface HealthCheckMatch {
  /** inclusive ranges `[from, to]` */
  statusCodes?: number[][];
  headers?: { name: string; value: string; type: "" | "exact" | "regexp" }[];
  body?: { value: string; type: "" | "contains" | "regexp" };
}

function validateMatch(m: HealthCheckMatch): string | undefined {
  for (const s of m.statusCodes ?? []) {
    if (s.length !== 2 || s[0] > s[1]) return `invalid status code range: [${s.join(" ")}]`;
  }
  for (const h of m.headers ?? []) {
    if (h.name === "") return "empty match header name";
    if (h.type !== "" && h.type !== "exact" && h.type !== "regexp") return `invalid match header type: ${h.type}`;
    if (h.type === "regexp" && !isRegexp(h.value)) return `invalid match header regex: ${h.value}`;
  }
  if (m.body) {
    const b = m.body;
    if (b.type !== "" && b.type !== "contains" && b.type !== "regexp") return `invalid match body type: ${b.type}`;
    if (b.type === "regexp" && !isRegexp(b.value)) return `invalid match body regex: ${b.value}`;
  }
  return undefined;
}

function isRegexp(s: string): boolean {
  try {
    new RegExp(s, "u");
    return true;
  } catch {
    return false;
  }
}

const MATCH: StructDef<HealthCheckMatch> = {
  go: "httpproxy.HealthCheckMatch",
  fields: {
    statusCodes: opt(arrayOf(arrayOf(INT))),
    headers: opt(arrayOf(val({
      go: "httpproxy.HealthCheckHeaderMatch",
      fields: { name: opt(STRING), value: opt(STRING), type: opt(STRING) },
    }))),
    body: opt(ptr({ go: "httpproxy.HealthCheckBodyMatch", fields: { value: opt(STRING), type: opt(STRING) } })),
  },
  validate: validateMatch,
};

/** The HTTP probe of an active health check. */
export interface HTTPHealthCheckSpec {
  /** 0 means the server's port */
  port: number;
  /** "" means the server URL itself */
  uri: string;
  /** "" means GET */
  method: string;
  headers?: Record<string, string>;
  body: string;
  username: string;
  password: string;
  match?: HealthCheckMatch;
}

const HTTP_METHOD_SET = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"]);

function validateHTTPHealthCheck(s: HTTPHealthCheckSpec): string | undefined {
  if (s.port < 0) return `invalid port: ${s.port}`;
  if (s.method !== "" && !HTTP_METHOD_SET.has(s.method)) return `invalid method: ${s.method}`;
  if (s.username !== "" && s.password === "") return "empty password";
  if (s.username === "" && s.password !== "") return "empty username";
  return s.match ? validateMatch(s.match) : undefined;
}

const HTTP_HEALTH_CHECK_FIELDS: StructDef["fields"] = {
  port: opt(INT),
  uri: opt(STRING),
  method: opt(STRING),
  headers: opt(STRING_MAP),
  body: opt(STRING),
  username: opt(STRING),
  password: opt(STRING),
  match: opt(ptr(MATCH)),
};

/** A Proxy pool's active health check: the base fields and the HTTP probe. */
export type ProxyHealthCheckSpec = BaseHealthCheckSpec & HTTPHealthCheckSpec;

const PROXY_HEALTH_CHECK: StructDef<ProxyHealthCheckSpec> = {
  go: "httpproxy.ProxyHealthCheckSpec",
  fields: { ...BASE_HEALTH_CHECK_FIELDS, ...HTTP_HEALTH_CHECK_FIELDS },
  validate: validateHTTPHealthCheck,
};

/** Candidate / mirror pool selection. */
export interface RequestMatcherSpec {
  policy: "" | "general" | "ipHash" | "headerHash" | "random";
  matchAllHeaders: boolean;
  headers?: Record<string, StringMatcher>;
  /** 0..1000 */
  permil: number;
  headerHashKey: string;
  urls?: { methods?: string[]; url: StringMatcher }[];
}

const REQUEST_MATCHER: StructDef<RequestMatcherSpec> = {
  go: "httpproxy.RequestMatcherSpec",
  fields: {
    policy: opt(STRING, { enum: ["", "general", "ipHash", "headerHash", "random"] }),
    matchAllHeaders: opt(BOOL),
    headers: opt(mapOf(ptr(STRING_MATCHER))),
    permil: opt(UINT32, { minimum: 0, maximum: 1000 }),
    headerHashKey: opt(STRING),
    urls: opt(arrayOf(ptr(
      {
        go: "httpproxy.MethodAndURLMatcher",
        fields: {
          methods: opt(STRINGS, { uniqueItems: true, format: "httpmethod-array" }),
          url: req(ptr(STRING_MATCHER), { required: true }),
        },
        validate: (u) => u.url ? STRING_MATCHER.validate!(u.url) : undefined,
      } satisfies StructDef<{ url?: StringMatcher }>,
    ))),
  },
  validate: (s) => {
    if (s.policy === "general" || s.policy === "") {
      if (Object.keys(s.headers ?? {}).length === 0) return "headers is not specified";
    } else if (s.permil === 0) return "permil is not specified";
    for (const m of Object.values(s.headers ?? {})) {
      const e = m ? STRING_MATCHER.validate!(m) : undefined;
      if (e) return e;
    }
    if (s.policy === "headerHash" && s.headerHashKey === "") return "headerHash needs to specify headerHashKey";
    for (const u of s.urls ?? []) {
      const e = u?.url ? STRING_MATCHER.validate!(u.url) : undefined;
      if (e) return e;
    }
    return undefined;
  },
};

/** A response cache in front of a pool. */
export interface MemoryCacheSpec {
  expiration: string;
  maxEntryBytes: number;
  codes: number[];
  methods: string[];
}

const MEMORY_CACHE: StructDef = {
  go: "httpproxy.MemoryCacheSpec",
  fields: {
    expiration: req(STRING, { required: true, format: "duration" }),
    maxEntryBytes: req(UINT32, { required: true, minimum: 1 }),
    codes: req(arrayOf(INT), { required: true, minItems: 1, uniqueItems: true, format: "httpcode-array" }),
    methods: req(STRINGS, { required: true, minItems: 1, uniqueItems: true, format: "httpmethod-array" }),
  },
};

/** The fields every pool kind has (`proxies.ServerPoolBaseSpec`). */
export interface ServerPoolBaseSpec {
  serverTags?: string[];
  servers?: ServerSpec[];
  setUpstreamHost: boolean;
  serviceRegistry: string;
  serviceName: string;
  loadBalance?: LoadBalanceSpec;
}

const POOL_BASE_FIELDS: StructDef["fields"] = {
  serverTags: opt(STRINGS, { uniqueItems: true }),
  servers: opt(arrayOf(ptr(SERVER))),
  setUpstreamHost: opt(BOOL),
  serviceRegistry: opt(STRING),
  serviceName: opt(STRING),
  loadBalance: opt(ptr(LOAD_BALANCE)),
};

function validatePoolBase(s: ServerPoolBaseSpec): string | undefined {
  const servers = s.servers ?? [];
  if (s.serviceName === "" && servers.length === 0) return "both serviceName and servers are empty";
  const weighted = servers.filter((x) => (x?.weight ?? 0) > 0).length;
  if (weighted > 0 && weighted < servers.length) return `not all servers have weight(${weighted}/${servers.length})`;
  if (s.serviceName !== "" && s.loadBalance?.healthCheck) return "can not open health check for service discovery";
  return undefined;
}

/** A Proxy pool (also an HTTPServer path's `backendPool`). A pool with `filter` is a candidate. */
export interface ServerPoolSpec extends ServerPoolBaseSpec {
  filter?: RequestMatcherSpec;
  spanName: string;
  /** 0 inherits the Proxy's; < 0 streams */
  serverMaxBodySize: number;
  /** per-attempt deadline; "" means none */
  timeout: string;
  retryPolicy: string;
  circuitBreakerPolicy: string;
  memoryCache?: MemoryCacheSpec;
  healthCheck?: ProxyHealthCheckSpec;
  /** statuses that count as failures; none means every 5xx */
  failureCodes?: number[];
}

export const SERVER_POOL: StructDef<ServerPoolSpec> = {
  go: "httpproxy.ServerPoolSpec",
  fields: {
    ...POOL_BASE_FIELDS,
    filter: opt(ptr(REQUEST_MATCHER)),
    spanName: opt(STRING),
    serverMaxBodySize: opt(INT64),
    timeout: opt(STRING, { format: "duration" }),
    retryPolicy: opt(STRING),
    circuitBreakerPolicy: opt(STRING),
    memoryCache: opt(ptr(MEMORY_CACHE)),
    healthCheck: opt(ptr(PROXY_HEALTH_CHECK)),
    failureCodes: opt(arrayOf(INT), { uniqueItems: true }),
  },
  validate: (s) => {
    const e = validatePoolBase(s);
    if (e) return e;
    if (s.serviceName !== "" && s.healthCheck) return "serviceName and healthCheck can't be set at the same time";
    return s.healthCheck ? validateHTTPHealthCheck(s.healthCheck) : undefined;
  },
};

/** WebSocketProxy's health check: an HTTP probe, a WebSocket probe, or both. */
export interface WSProxyHealthCheckSpec extends BaseHealthCheckSpec {
  http?: HTTPHealthCheckSpec;
  ws?: { port: number; uri: string; headers?: Record<string, string>; match?: HealthCheckMatch };
}

/** A WebSocketProxy pool. */
export interface WebSocketServerPoolSpec extends ServerPoolBaseSpec {
  /** 0 = 32 KiB, -1 = unlimited */
  clientMaxMsgSize: number;
  serverMaxMsgSize: number;
  filter?: RequestMatcherSpec;
  insecureSkipVerify: boolean;
  originPatterns?: string[];
  healthCheck?: WSProxyHealthCheckSpec;
}

export const WS_SERVER_POOL: StructDef<WebSocketServerPoolSpec> = {
  go: "httpproxy.WebSocketServerPoolSpec",
  fields: {
    ...POOL_BASE_FIELDS,
    clientMaxMsgSize: opt(INT64),
    serverMaxMsgSize: opt(INT64),
    filter: opt(ptr(REQUEST_MATCHER)),
    insecureSkipVerify: opt(BOOL),
    originPatterns: opt(STRINGS),
    healthCheck: opt(ptr(
      {
        go: "httpproxy.WSProxyHealthCheckSpec",
        fields: {
          ...BASE_HEALTH_CHECK_FIELDS,
          http: opt(ptr(
            {
              go: "httpproxy.HTTPHealthCheckSpec",
              fields: HTTP_HEALTH_CHECK_FIELDS,
              validate: validateHTTPHealthCheck,
            } satisfies StructDef<HTTPHealthCheckSpec>,
          )),
          ws: opt(ptr({
            go: "httpproxy.WSHealthCheckSpec",
            fields: { port: opt(INT), uri: opt(STRING), headers: opt(STRING_MAP), match: opt(ptr(MATCH)) },
          })),
        },
        validate: (s) => {
          if (!s.http && !s.ws) return "empty health check spec";
          if (s.http) {
            const e = validateHTTPHealthCheck(s.http);
            if (e) return e;
          }
          if (s.ws) {
            if (s.ws.port < 0) return `invalid port: ${s.ws.port}`;
            if (s.ws.match) return validateMatch(s.ws.match);
          }
          return undefined;
        },
      } satisfies StructDef<WSProxyHealthCheckSpec>,
    )),
  },
  validate: validatePoolBase,
};
