/**
 * Pipeline filter kinds (Easegress v2.11 `pkg/filters/*`): each kind's spec as a TypeScript type, its defaults and
 * checks, and the results a flow may jump on. `parseFilterSpec` turns one entry of a pipeline's `filters` into the
 * typed, defaulted spec (or throws the message Easegress gives); kinds that need systems outside this cluster
 * (Kafka, Wasm, OPA, ...) are known but refused with "kind X not supported".
 */
import {
  arrayOf,
  BOOL,
  decodeAndValidate,
  INT,
  INT64,
  mapOf,
  type Obj,
  opt,
  ptr,
  regexpError,
  req,
  SpecError,
  STRING,
  STRING_MAP,
  STRINGS,
  type StructDef,
  UINT32,
  val,
} from "./schema.ts";
import {
  META_FIELDS,
  type MetaSpec,
  parseMeta,
  SERVER_POOL,
  type ServerPoolSpec,
  STRING_MATCHER,
  type StringMatcher,
  type WebSocketServerPoolSpec,
  WS_SERVER_POOL,
} from "./common.ts";

// ---------------------------------------------------------------- Proxy

/** Proxy: forwards to a main pool, candidate pools chosen by `filter`, and an optional asynchronous mirror. */
export interface ProxySpec extends MetaSpec {
  kind: "Proxy";
  pools: ServerPoolSpec[];
  mirrorPool?: ServerPoolSpec;
  /** gzip responses of at least minLength bytes */
  compression?: { minLength: number };
  mtls?: { certBase64: string; keyBase64: string; rootCertBase64: string; insecureSkipVerify: boolean };
  /** default 10240 */
  maxIdleConns: number;
  /** default 1024 */
  maxIdleConnsPerHost: number;
  /** 0: upstream 3xx returned as they are */
  maxRedirection: number;
  /** 0 means 4 MiB, < 0 streams */
  serverMaxBodySize: number;
}

const PROXY: StructDef<ProxySpec> = {
  go: "httpproxy.Spec",
  defaults: () => ({ maxIdleConns: 10240, maxIdleConnsPerHost: 1024 }),
  fields: {
    ...META_FIELDS,
    pools: req(arrayOf(ptr(SERVER_POOL)), { required: true }),
    mirrorPool: opt(ptr(SERVER_POOL)),
    compression: opt(ptr({ go: "httpproxy.CompressionSpec", fields: { minLength: req(UINT32) } })),
    mtls: opt(ptr({
      go: "httpproxy.MTLS",
      fields: {
        certBase64: req(STRING, { required: true, format: "base64" }),
        keyBase64: req(STRING, { required: true, format: "base64" }),
        rootCertBase64: req(STRING, { required: true, format: "base64" }),
        insecureSkipVerify: opt(BOOL),
      },
    })),
    maxIdleConns: opt(INT),
    maxIdleConnsPerHost: opt(INT),
    maxRedirection: opt(INT),
    serverMaxBodySize: opt(INT64),
  },
  validate: (s) => {
    const pools = s.pools ?? [];
    for (const [i, p] of pools.entries()) {
      const e = p ? SERVER_POOL.validate!(p) : undefined;
      if (e) return `pool ${i}: ${e}`;
    }
    if (pools.filter((p) => !p?.filter).length !== 1) return "one and only one mainPool is required";
    if (s.mirrorPool) {
      if (!s.mirrorPool.filter) return "filter of mirrorPool is required";
      if (s.mirrorPool.memoryCache) return "memoryCache must be empty in mirrorPool";
    }
    return undefined;
  },
};

/** WebSocketProxy: relays WebSocket connections to a main pool or a candidate pool. */
export interface WebSocketProxySpec extends MetaSpec {
  kind: "WebSocketProxy";
  pools: WebSocketServerPoolSpec[];
}

const WEBSOCKET_PROXY: StructDef<WebSocketProxySpec> = {
  go: "httpproxy.WebSocketProxySpec",
  fields: { ...META_FIELDS, pools: req(arrayOf(ptr(WS_SERVER_POOL)), { required: true }) },
  validate: (s) => {
    const pools = s.pools ?? [];
    for (const [i, p] of pools.entries()) {
      const e = p ? WS_SERVER_POOL.validate!(p) : undefined;
      if (e) return `pool ${i}: ${e}`;
    }
    return pools.filter((p) => !p?.filter).length !== 1 ? "one and only one mainPool is required" : undefined;
  },
};

// ---------------------------------------------------------------- adaptors and builders

/** The template fields of the builders and adaptors (Go text/template with slim-sprig). */
export interface TemplateSpec {
  leftDelim: string;
  rightDelim: string;
  template: string;
}

const TEMPLATE_FIELDS: StructDef["fields"] = {
  leftDelim: opt(STRING),
  rightDelim: opt(STRING),
  template: opt(STRING),
};

/** `{del, set, add}`, applied in that order. */
export interface HeaderAdaptSpec {
  del?: string[];
  set?: Record<string, string>;
  add?: Record<string, string>;
}

const HEADER_ADAPT: StructDef = {
  go: "httpheader.AdaptSpec",
  fields: { del: opt(STRINGS, { uniqueItems: true }), set: opt(STRING_MAP), add: opt(STRING_MAP) },
};

/** One path rewrite: the first non-empty of replace, addPrefix, trimPrefix, regexpReplace applies. */
export interface PathAdaptSpec {
  replace: string;
  addPrefix: string;
  trimPrefix: string;
  regexpReplace?: { regexp: string; replace: string };
}

const PATH_ADAPT: StructDef = {
  go: "pathadaptor.Spec",
  fields: {
    replace: opt(STRING),
    addPrefix: opt(STRING, { pattern: "^/" }),
    trimPrefix: opt(STRING, { pattern: "^/" }),
    regexpReplace: opt(ptr({
      go: "pathadaptor.RegexpReplace",
      fields: { regexp: req(STRING, { required: true, format: "regexp" }), replace: req(STRING) },
    })),
  },
};

/** Request signing / signature validation (AWS SigV4 style). */
export interface SignerSpec {
  literal?: Record<string, string>;
  headerHoisting?: Obj;
  ignoredHeaders?: string[];
  excludeBody: boolean;
  ttl: string;
  accessKeyId: string;
  accessKeySecret: string;
  accessKeys?: Record<string, string>;
}

const SIGNER_FIELDS: StructDef["fields"] = {
  literal: opt(STRING_MAP, {}),
  headerHoisting: opt(mapOf({ t: "any" }, "signer.HeaderHoisting")),
  ignoredHeaders: opt(STRINGS, { uniqueItems: true }),
  excludeBody: opt(BOOL),
  ttl: opt(STRING, { format: "duration" }),
  accessKeyId: opt(STRING),
  accessKeySecret: opt(STRING),
  accessKeys: opt(STRING_MAP),
};

/** RequestAdaptor: rewrites the request (method, path, headers, body, host, gzip, signing). */
export interface RequestAdaptorSpec extends MetaSpec, TemplateSpec {
  kind: "RequestAdaptor";
  host: string;
  method: string;
  path?: PathAdaptSpec;
  header?: HeaderAdaptSpec;
  body: string;
  compress: "" | "gzip";
  decompress: "" | "gzip";
  sign?: SignerSpec & { apiProvider: "" | "aws4"; scopes?: string[] };
}

const REQUEST_ADAPTOR: StructDef<RequestAdaptorSpec> = {
  go: "builder.RequestAdaptorSpec",
  fields: {
    ...META_FIELDS,
    ...TEMPLATE_FIELDS,
    host: opt(STRING),
    method: opt(STRING, { format: "httpmethod" }),
    path: opt(ptr(PATH_ADAPT)),
    header: opt(ptr(HEADER_ADAPT)),
    body: opt(STRING),
    compress: opt(STRING),
    decompress: opt(STRING),
    sign: opt(ptr({
      go: "builder.SignerSpec",
      fields: { ...SIGNER_FIELDS, apiProvider: opt(STRING, { enum: ["", "aws4"] }), scopes: opt(STRINGS) },
    })),
  },
  validate: (s) => {
    if (s.decompress !== "" && s.decompress !== "gzip") return "RequestAdaptor only support decompress type of gzip";
    if (s.compress !== "" && s.compress !== "gzip") return "RequestAdaptor only support decompress type of gzip";
    if (s.compress !== "" && s.decompress !== "") {
      return "RequestAdaptor can only do compress or decompress for given request body, not both";
    }
    if (s.body !== "" && s.decompress !== "") {
      return "No need to decompress when body is specified in RequestAdaptor spec";
    }
    if (s.sign && s.sign.apiProvider !== "" && s.sign.apiProvider !== "aws4") {
      return `"${s.sign.apiProvider}" is not a supported API provider`;
    }
    return undefined;
  },
};

/** ResponseAdaptor: rewrites the response of the active namespace (headers, body, gzip). */
export interface ResponseAdaptorSpec extends MetaSpec, TemplateSpec {
  kind: "ResponseAdaptor";
  header?: HeaderAdaptSpec;
  body: string;
  compress: "" | "gzip";
  decompress: "" | "gzip";
}

const RESPONSE_ADAPTOR: StructDef = {
  go: "builder.ResponseAdaptorSpec",
  fields: {
    ...META_FIELDS,
    ...TEMPLATE_FIELDS,
    header: opt(ptr(HEADER_ADAPT)),
    body: opt(STRING),
    compress: opt(STRING),
    decompress: opt(STRING),
  },
};

const PROTOCOLS = ["http", "grpc", "mqtt"];

function validateBuilder(s: RequestBuilderSpec | ResponseBuilderSpec): string | undefined {
  if (!PROTOCOLS.includes(s.protocol)) return `unknown protocol: ${s.protocol}`;
  if (s.sourceNamespace === "" && s.template === "") return "sourceNamespace or template must be specified";
  if (s.sourceNamespace !== "" && s.template !== "") {
    return "sourceNamespace and template cannot be specified at the same time";
  }
  return undefined;
}

/** RequestBuilder: a request in the active namespace, shared from `sourceNamespace` or rendered from `template`. */
export interface RequestBuilderSpec extends MetaSpec, TemplateSpec {
  kind: "RequestBuilder";
  sourceNamespace: string;
  /** default "http" */
  protocol: string;
}

/** ResponseBuilder: a response, copied from `sourceNamespace` or rendered from `template`. */
export interface ResponseBuilderSpec extends MetaSpec, TemplateSpec {
  kind: "ResponseBuilder";
  sourceNamespace: string;
  /** default "http" */
  protocol: string;
}

const builderDef = (go: string): StructDef<RequestBuilderSpec | ResponseBuilderSpec> => ({
  go,
  defaults: () => ({ protocol: "http" }),
  fields: { ...META_FIELDS, ...TEMPLATE_FIELDS, sourceNamespace: opt(STRING), protocol: opt(STRING) },
  validate: validateBuilder,
});

/** DataBuilder: renders `template` into `data[dataKey]`. */
export interface DataBuilderSpec extends MetaSpec, TemplateSpec {
  kind: "DataBuilder";
  dataKey: string;
}

const DATA_BUILDER: StructDef<DataBuilderSpec> = {
  go: "builder.DataBuilderSpec",
  fields: { ...META_FIELDS, ...TEMPLATE_FIELDS, dataKey: opt(STRING) },
  validate: (s) =>
    s.dataKey === "" ? "dataKey must be specified" : s.template === "" ? "template must be specified" : undefined,
};

/** ResultBuilder: renders `template` into the filter's result (`result0`..`result9`, else `unknown`). */
export interface ResultBuilderSpec extends MetaSpec, TemplateSpec {
  kind: "ResultBuilder";
}

// ---------------------------------------------------------------- responders

/** One Mock rule: the first whose `match` matches answers. */
export interface MockRule {
  match: { path: string; pathPrefix: string; headers?: Record<string, StringMatcher>; matchAllHeaders: boolean };
  code: number;
  headers?: Record<string, string>;
  body: string;
  delay: string;
}

/** Mock: answers matching requests itself (result `mocked`). */
export interface MockSpec extends MetaSpec {
  kind: "Mock";
  rules?: MockRule[];
}

const MOCK: StructDef = {
  go: "mock.Spec",
  fields: {
    ...META_FIELDS,
    rules: req(arrayOf(ptr({
      go: "mock.Rule",
      fields: {
        match: req(
          val({
            go: "mock.MatchRule",
            fields: {
              path: opt(STRING, { pattern: "^/" }),
              pathPrefix: opt(STRING, { pattern: "^/" }),
              headers: opt(mapOf(ptr(STRING_MATCHER))),
              matchAllHeaders: opt(BOOL),
            },
          }),
          { required: true },
        ),
        code: req(INT, { required: true, format: "httpcode" }),
        headers: opt(STRING_MAP),
        body: opt(STRING),
        delay: opt(STRING, { format: "duration" }),
      },
    }))),
  },
};

/** Fallback: rewrites the existing response (status, headers, body); result `fallback`. */
export interface FallbackSpec extends MetaSpec {
  kind: "Fallback";
  mockCode: number;
  mockHeaders?: Record<string, string>;
  mockBody: string;
}

const FALLBACK: StructDef = {
  go: "fallback.Spec",
  fields: {
    ...META_FIELDS,
    mockCode: req(INT, { required: true, format: "httpcode" }),
    mockHeaders: opt(STRING_MAP),
    mockBody: opt(STRING),
  },
};

const REDIRECT_CODES = [301, 302, 303, 304, 307, 308];
const BAD_REDIRECT_CODE = "invalid status code of Redirector, support 300, 301, 302, 303, 304, 307, 308";

/** Redirector: a regexp replace over the URI, path or full URL, answered with a redirect. */
export interface RedirectorSpec extends MetaSpec {
  kind: "Redirector";
  match: string;
  /** default "uri" */
  matchPart: "uri" | "path" | "full";
  replacement: string;
  /** default 301 */
  statusCode: number;
}

const REDIRECTOR: StructDef<RedirectorSpec> = {
  go: "redirector.Spec",
  defaults: () => ({ matchPart: "uri", statusCode: 301 }),
  fields: {
    ...META_FIELDS,
    match: req(STRING, { required: true }),
    matchPart: opt(STRING, { enum: ["uri", "path", "full"] }),
    replacement: req(STRING, { required: true }),
    statusCode: opt(INT),
  },
  validate: (s) => {
    if (!REDIRECT_CODES.includes(s.statusCode)) return BAD_REDIRECT_CODE;
    if (!["uri", "full", "path"].includes(String(s.matchPart).toLowerCase())) {
      return "invalid match part of Redirector, only uri, full and path are supported";
    }
    if (s.match === "" || s.replacement === "") return "match and replacement of Redirector can't be empty";
    return regexpError(s.match);
  },
};

/** RedirectorV2: Gateway-API style redirect (scheme, hostname, path modifier, status; `port` ignored). */
export interface RedirectorV2Spec extends MetaSpec {
  kind: "RedirectorV2";
  scheme: string;
  hostname: string;
  path?: { type: string; replaceFullPath: string; replacePrefixMatch: string };
  port: number;
  /** 0 means 302 */
  statusCode: number;
}

const REDIRECTOR_V2: StructDef<RedirectorV2Spec> = {
  go: "redirectorv2.Spec",
  fields: {
    ...META_FIELDS,
    scheme: opt(STRING),
    hostname: opt(STRING),
    path: opt(ptr({
      go: "v1.HTTPPathModifier",
      fields: { type: req(STRING), replaceFullPath: opt(STRING), replacePrefixMatch: opt(STRING) },
    })),
    port: opt({ t: "int", go: "int32" }),
    statusCode: opt(INT),
  },
  validate: (s) => {
    if (s.scheme !== "" && s.scheme !== "http" && s.scheme !== "https") {
      return "invalid scheme of Redirector, only support http and https";
    }
    if (s.port !== 0 && (s.port < 1 || s.port > 65535)) return "invalid port of Redirector, only support 1-65535";
    if (s.statusCode !== 0 && !REDIRECT_CODES.includes(s.statusCode)) return BAD_REDIRECT_CODE;
    if (s.path) {
      if (s.path.type === "ReplaceFullPath") {
        if (s.path.replaceFullPath === "") return "invalid path of Redirector, replaceFullPath can't be empty";
      } else if (s.path.type === "ReplacePrefixMatch") {
        if (s.path.replacePrefixMatch === "") return "invalid path of Redirector, replacePrefixMatch can't be empty";
      } else return "invalid path type of Redirector, only support ReplaceFullPath and ReplacePrefixMatch";
    }
    return undefined;
  },
};

// ---------------------------------------------------------------- guards

/** One rate-limit policy: `limitForPeriod` permits per `limitRefreshPeriod`, waiting up to `timeoutDuration`. */
export interface RateLimitPolicy {
  name: string;
  /** "" means 100ms */
  timeoutDuration: string;
  /** "" means 10ms */
  limitRefreshPeriod: string;
  /** 0 means 50 */
  limitForPeriod: number;
}

/** A URL rule of RateLimiter; each gets its own limiter. */
export interface URLRule {
  methods?: string[];
  url: StringMatcher;
  /** "" means `defaultPolicyRef` */
  policyRef: string;
}

/** RateLimiter: 429 with `X-EG-Rate-Limiter: too-many-requests` past a URL rule's policy (result `rateLimited`). */
export interface RateLimiterSpec extends MetaSpec {
  kind: "RateLimiter";
  policies?: RateLimitPolicy[];
  defaultPolicyRef: string;
  urls?: URLRule[];
}

const RATE_LIMITER: StructDef<RateLimiterSpec> = {
  go: "ratelimiter.Spec",
  receiver: "value",
  fields: {
    ...META_FIELDS,
    policies: req(
      arrayOf(ptr({
        go: "ratelimiter.Policy",
        fields: {
          name: req(STRING, { required: true }),
          timeoutDuration: opt(STRING, { format: "duration" }),
          limitRefreshPeriod: opt(STRING, { format: "duration" }),
          limitForPeriod: opt(INT, { minimum: 1 }),
        },
      })),
      { required: true },
    ),
    defaultPolicyRef: opt(STRING),
    urls: req(
      arrayOf(ptr({
        go: "ratelimiter.URLRule",
        fields: {
          methods: opt(STRINGS, { uniqueItems: true, format: "httpmethod-array" }),
          url: req(val(STRING_MATCHER), { required: true }),
          policyRef: opt(STRING),
        },
      })),
      { required: true },
    ),
  },
  validate: (s) => {
    for (const u of (s.urls ?? []) as URLRule[]) {
      const name = u?.policyRef || s.defaultPolicyRef;
      if (!((s.policies ?? []) as RateLimitPolicy[]).some((p) => p?.name === name)) {
        return `policy '${name}' is not defined`;
      }
    }
    return undefined;
  },
};

/** CORSAdaptor: rs/cors with its defaults (every origin, GET/POST/HEAD; preflights answered 204). */
export interface CORSAdaptorSpec extends MetaSpec {
  kind: "CORSAdaptor";
  allowedOrigins?: string[];
  allowedMethods?: string[];
  allowedHeaders?: string[];
  allowCredentials: boolean;
  exposedHeaders?: string[];
  maxAge: number;
}

const CORS_ADAPTOR: StructDef = {
  go: "corsadaptor.Spec",
  fields: {
    ...META_FIELDS,
    allowedOrigins: opt(STRINGS),
    allowedMethods: opt(STRINGS, { uniqueItems: true, format: "httpmethod-array" }),
    allowedHeaders: opt(STRINGS),
    allowCredentials: opt(BOOL),
    exposedHeaders: opt(STRINGS),
    maxAge: opt(INT),
  },
};

/** A header value check: in `values` or matching `regexp`. */
export interface ValueValidator {
  values?: string[];
  regexp: string;
}

/** Validator: the first failing method answers 400 (headers) or 401 (the others); result `invalid`. */
export interface ValidatorSpec extends MetaSpec {
  kind: "Validator";
  headers?: Record<string, ValueValidator>;
  /** secret is hex; publicKey is hex of a PEM */
  jwt?: { algorithm: string; publicKey: string; secret: string; cookieName: string };
  signature?: SignerSpec;
  oauth2?: {
    tokenIntrospect?: {
      endPoint: string;
      basicAuth: string;
      clientId: string;
      clientSecret: string;
      insecureTls: boolean;
    };
    jwt?: { algorithm: string; secret: string };
  };
  basicAuth?: { mode: "" | "FILE" | "ETCD" | "LDAP"; userFile: string; etcdPrefix: string; ldap?: Obj };
}

const HEX = "^$|^[A-Fa-f0-9]+$";

const VALIDATOR: StructDef<ValidatorSpec> = {
  go: "validator.Spec",
  receiver: "value",
  fields: {
    ...META_FIELDS,
    headers: opt(mapOf(
      ptr(
        {
          go: "httpheader.ValueValidator",
          receiver: "value",
          fields: { values: opt(STRINGS, { uniqueItems: true }), regexp: opt(STRING, { format: "regexp" }) },
          validate: (v) =>
            (v.values ?? []).length === 0 && v.regexp === "" ? "neither values nor regexp is specified" : undefined,
        } satisfies StructDef<ValueValidator>,
      ),
      "httpheader.ValidatorSpec",
    )),
    jwt: opt(ptr({
      go: "validator.JWTValidatorSpec",
      fields: {
        algorithm: req(STRING, {
          enum: ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"],
        }),
        publicKey: req(STRING, { pattern: HEX }),
        secret: req(STRING, { pattern: HEX }),
        cookieName: opt(STRING),
      },
    })),
    signature: opt(ptr({ go: "signer.Spec", fields: SIGNER_FIELDS })),
    oauth2: opt(ptr({
      go: "validator.OAuth2ValidatorSpec",
      fields: {
        tokenIntrospect: opt(ptr({
          go: "validator.OAuth2TokenIntrospect",
          fields: {
            endPoint: req(STRING, { required: true }),
            basicAuth: opt(STRING),
            clientId: opt(STRING),
            clientSecret: opt(STRING),
            insecureTls: opt(BOOL),
          },
        })),
        jwt: opt(ptr({
          go: "validator.OAuth2JWT",
          fields: {
            algorithm: req(STRING, { enum: ["HS256", "HS384", "HS512"] }),
            secret: req(STRING, { required: true, pattern: "^[A-Fa-f0-9]+$" }),
          },
        })),
      },
    })),
    basicAuth: opt(ptr({
      go: "validator.BasicAuthValidatorSpec",
      fields: {
        mode: opt(STRING, { enum: ["FILE", "ETCD", "LDAP"] }),
        userFile: opt(STRING),
        etcdPrefix: opt(STRING),
        ldap: opt(ptr({
          go: "validator.ldapSpec",
          fields: {
            host: req(STRING, { required: true }),
            port: req(INT, { required: true }),
            baseDN: req(STRING, { required: true }),
            uid: req(STRING, { required: true }),
            useSSL: opt(BOOL),
            skipTLS: opt(BOOL),
            insecure: opt(BOOL),
            serverName: opt(STRING),
            certBase64: opt(STRING, { format: "base64" }),
            keyBase64: opt(STRING, { format: "base64" }),
          },
        })),
      },
    })),
  },
  validate: (s) =>
    !s.headers && !s.jwt && !s.signature && !s.oauth2 && !s.basicAuth
      ? "none of the validations are defined"
      : undefined,
};

/** HeaderToJSON: copies request headers into the JSON body. */
export interface HeaderToJSONSpec extends MetaSpec {
  kind: "HeaderToJSON";
  headerMap: { header: string; json: string }[];
}

const HEADER_TO_JSON: StructDef = {
  go: "headertojson.Spec",
  fields: {
    ...META_FIELDS,
    headerMap: req(
      arrayOf(ptr({
        go: "headertojson.HeaderMap",
        fields: { header: req(STRING, { required: true }), json: req(STRING, { required: true }) },
      })),
      { required: true },
    ),
  },
};

// ---------------------------------------------------------------- the registry

/** Every filter spec this cluster runs. */
export type FilterSpec =
  | ProxySpec
  | WebSocketProxySpec
  | RequestAdaptorSpec
  | ResponseAdaptorSpec
  | RequestBuilderSpec
  | ResponseBuilderSpec
  | DataBuilderSpec
  | ResultBuilderSpec
  | MockSpec
  | FallbackSpec
  | RedirectorSpec
  | RedirectorV2Spec
  | RateLimiterSpec
  | CORSAdaptorSpec
  | ValidatorSpec
  | HeaderToJSONSpec;

interface FilterKind {
  /** the results a flow may jump on */
  results: string[];
  /** undefined: known to Easegress but refused here (it needs a system outside this cluster) */
  def?: StructDef;
}

const RESULT_BUILDER_RESULTS = [...Array.from({ length: 10 }, (_, i) => `result${i}`), "buildErr", "unknown"];

/** Filter kinds of Easegress v2.11, with their results; the ones with a struct run on this cluster. */
export const FILTER_KINDS: Record<string, FilterKind> = {
  Proxy: {
    results: ["internalError", "clientError", "serverError", "failureCode", "timeout", "shortCircuited"],
    def: PROXY,
  },
  WebSocketProxy: { results: ["internalError", "clientError"], def: WEBSOCKET_PROXY },
  RequestAdaptor: { results: ["decompressFailed", "compressFailed"], def: REQUEST_ADAPTOR },
  ResponseAdaptor: {
    results: ["responseNotFound", "compressFailed", "decompressFailed"],
    def: RESPONSE_ADAPTOR,
  },
  RequestBuilder: { results: ["buildErr"], def: builderDef("builder.RequestBuilderSpec") },
  ResponseBuilder: { results: ["buildErr"], def: builderDef("builder.ResponseBuilderSpec") },
  DataBuilder: { results: ["buildErr"], def: DATA_BUILDER },
  ResultBuilder: {
    results: RESULT_BUILDER_RESULTS,
    def: { go: "builder.ResultBuilderSpec", fields: { ...META_FIELDS, ...TEMPLATE_FIELDS } },
  },
  Mock: { results: ["mocked"], def: MOCK },
  Fallback: { results: ["fallback", "responseNotFound"], def: FALLBACK },
  Redirector: { results: ["redirected"], def: REDIRECTOR },
  RedirectorV2: { results: ["redirected"], def: REDIRECTOR_V2 },
  RateLimiter: { results: ["rateLimited"], def: RATE_LIMITER },
  CORSAdaptor: { results: ["preflighted", "rejected"], def: CORS_ADAPTOR },
  Validator: { results: ["invalid"], def: VALIDATOR },
  HeaderToJSON: { results: ["jsonEncodeDecodeErr", "bodyReadErr"], def: HEADER_TO_JSON },
  // known to Easegress, not run here: they need Kafka, Wasm, OPA, an OIDC provider, a service mesh, MQTT,
  // gRPC servers, a WAF or AI-gateway controller, or a remote HTTP service
  SimpleHTTPProxy: { results: ["internalError", "clientError", "serverError"] },
  GRPCProxy: { results: ["internalError", "clientError", "serverError", "timeout", "shortCircuited"] },
  HeaderLookup: { results: [] },
  CertExtractor: { results: [] },
  OIDCAdaptor: { results: [] },
  OPAFilter: { results: ["opaDenied"] },
  RemoteFilter: { results: ["failed", "responseAlready"] },
  FileServer: { results: ["serverError"] },
  WasmHost: { results: ["outOfVM", "wasmError"] },
  WAF: { results: ["blocked"] },
  Kafka: { results: ["parseErr"] },
  KafkaBackend: { results: ["parseErr"] },
  TopicMapper: { results: ["mapTopicErr"] },
  ConnectControl: { results: ["bannedClientOrTopic"] },
  MQTTClientAuth: { results: ["authFail"] },
  MeshAdaptor: { results: [] },
  AIGatewayProxy: { results: ["internalError", "clientError", "serverError", "providerError"] },
};

/** The results a filter kind may return (for `jumpIf`); undefined for an unknown kind. */
export function filterResults(kind: string): string[] | undefined {
  return FILTER_KINDS[kind]?.results;
}

/** The filter kinds this cluster runs, sorted. */
export function runnableFilterKinds(): string[] {
  return Object.keys(FILTER_KINDS).filter((k) => FILTER_KINDS[k].def).sort();
}

/** The message for a kind Easegress knows that this cluster does not run. */
export const notSupported = (kind: string) => `kind ${kind} not supported`;

/**
 * filters.NewSpec: one entry of a pipeline's `filters` → its typed spec with defaults, or a SpecError with the message
 * Easegress gives (meta checked first, then the kind, then the kind's own spec).
 */
export function parseFilterSpec(raw: unknown): FilterSpec {
  const meta = parseMeta(raw);
  const kind = FILTER_KINDS[meta.kind];
  if (!kind) throw new SpecError(`kind ${meta.kind} not found`);
  if (!kind.def) throw new SpecError(notSupported(meta.kind));
  return decodeAndValidate<FilterSpec>(kind.def, raw);
}
