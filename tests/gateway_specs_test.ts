/**
 * Object and filter specs as Easegress v2.11 parses them: defaults filled in, encoding/json type errors, the
 * ValidateRecorder's JSON (jsonschema, format and Validate() errors, each named as Go names them), and the typed
 * specs the data plane reads (server/easegress/specs/).
 */
import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import {
  parseFilterSpec,
  parseHTTPServerSpec,
  parsePipelineSpec,
  parseResiliencePolicy,
  parseTrafficObject,
  type ProxySpec,
  type RateLimiterSpec,
  type RedirectorSpec,
  type RequestBuilderSpec,
  SpecError,
} from "../server/easegress/specs/mod.ts";
import { newSpec } from "../server/easegress/objects.ts";
import { base64Error } from "../server/easegress/specs/schema.ts";

const SCHEMA = "https://json-schema.org/draft/2020-12/schema";
const y = (text: string) => parseYaml(text);

/** The message of the SpecError that `fn` throws. */
function message(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SpecError, `not a SpecError: ${err}`);
    return err.message;
  }
  throw new Error("no error");
}

Deno.test("HTTPServer: defaults, and the typed spec", () => {
  const s = parseHTTPServerSpec(y(`
port: 10080
rules:
- host: "*.example.com"
  paths:
  - pathPrefix: /api
    methods: [GET, POST]
    backend: api
    headers: [{key: X-Env, values: [prod]}]
  - path: /pool
    backendPool: {servers: [{url: "http://127.0.0.1:9095"}], loadBalance: {policy: roundRobin}}
`));
  assert.equal(s.keepAlive, true);
  assert.equal(s.keepAliveTimeout, "60s");
  assert.equal(s.maxConnections, 10240);
  assert.equal(s.https, false);
  assert.equal(s.clientMaxBodySize, 0);
  assert.equal(s.routerKind, "");
  assert.equal(s.ipFilter, undefined);
  const [rule] = s.rules!;
  assert.equal(rule.host, "*.example.com");
  assert.equal(rule.paths![0].methods!.join(), "GET,POST");
  assert.equal(rule.paths![0].headers![0].key, "X-Env");
  assert.equal(rule.paths![0].matchAllHeader, false);
  assert.equal(rule.paths![1].backendPool!.servers![0].url, "http://127.0.0.1:9095");
  assert.equal(rule.paths![1].backendPool!.timeout, "");
  // keys match case-insensitively, as encoding/json matches them; false overrides a default
  assert.equal(parseHTTPServerSpec({ Port: 1, KEEPALIVE: false }).keepAlive, false);
});

Deno.test("HTTPServer: Easegress's messages", () => {
  const cases: [unknown, string][] = [
    [
      {},
      `{"jsonschemaErrs":["jsonschema: '/port' does not validate with ${SCHEMA}#/properties/port/minimum: must be >= 1 but found 0"]}`,
    ],
    [{ port: "80" }, "json: cannot unmarshal string into Go struct field Spec.port of type uint16"],
    [{ port: 65536 }, "json: cannot unmarshal number 65536 into Go struct field Spec.port of type uint16"],
    [{ port: 1.5 }, "json: cannot unmarshal number 1.5 into Go struct field Spec.port of type uint16"],
    [{ port: 80, https: "yes" }, "json: cannot unmarshal string into Go struct field Spec.https of type bool"],
    [{ port: 80, rules: {} }, "json: cannot unmarshal object into Go struct field Spec.rules of type routers.Rules"],
    [
      { port: 80, rules: [{ paths: [{ path: 1 }] }] },
      "json: cannot unmarshal number into Go struct field Path.rules.paths.path of type string",
    ],
    [
      { port: 80, routerKind: "Trie" },
      `{"jsonschemaErrs":["jsonschema: '/routerKind' does not validate with ${SCHEMA}#/properties/routerKind/enum: value must be one of \\"\\", \\"Ordered\\", \\"RadixTree\\""]}`,
    ],
    [
      { port: 80, maxConnections: -1 },
      "json: cannot unmarshal number -1 into Go struct field Spec.maxConnections of type uint32",
    ],
    [
      { port: 80, keepAliveTimeout: "10" },
      `{"formatErrs":["keepAliveTimeout: invalid duration: time: missing unit in duration \\"10\\""]}`,
    ],
    [{ port: 80, ipFilter: { allowIPs: ["10.0.0.0/8", "nope"] } }, `{"formatErrs":["allowIPs: invalid ip or cidr"]}`],
    [
      { port: 80, certBase64: "a$" },
      `{"formatErrs":["certBase64: invalid base64: illegal base64 data at input byte 1"]}`,
    ],
    [{ port: 80, http3: true }, `{"generalErrs":["*httpserver.Spec: https is disabled when http3 enabled"]}`],
    [
      { port: 80, https: true, certs: { a: "x" } },
      `{"generalErrs":["*httpserver.Spec: certs a hasn't secret corresponded to it"]}`,
    ],
    [
      { port: 80, https: true, certBase64: "eA==", keyBase64: "eA==" },
      `{"generalErrs":["*httpserver.Spec: generate x509 key pair failed: tls: failed to find any PEM data in certificate input"]}`,
    ],
    [
      { port: 80, rules: [{ paths: [{ pathPrefix: "api", backend: "x" }] }] },
      `{"jsonschemaErrs":["jsonschema: '/rules/0/paths/0/pathPrefix' does not validate with ${SCHEMA}#/properties/rules/items/properties/paths/items/properties/pathPrefix/pattern: does not match pattern '^/'"]}`,
    ],
    [
      { port: 80, rules: [{ paths: [{ rewriteTarget: "/x", backend: "x" }, { path: "/y" }] }] },
      `{"generalErrs":["*routers.Path: rewriteTarget is specified but path is empty","*routers.Path: either backend or backendPool must be specified"]}`,
    ],
    [
      { port: 80, rules: [{ paths: [{ path: "/a", methods: ["GET", "GET"], backend: "x" }] }] },
      `{"jsonschemaErrs":["jsonschema: '/rules/0/paths/0/methods' does not validate with ${SCHEMA}#/properties/rules/items/properties/paths/items/properties/methods/uniqueItems: items at index 0 and 1 are equal"]}`,
    ],
    [
      { port: 80, rules: [{ paths: [{ path: "/a", methods: ["FETCH"], backend: "x", queries: [{ key: "q" }] }] }] },
      `{"formatErrs":["methods: invalid http method"],"generalErrs":["queries: both of values and regexp are empty for key: q"]}`,
    ],
    [
      { port: 80, rules: [{ paths: [{ path: "/a", backendPool: {} }] }] },
      `{"generalErrs":["backendPool: both serviceName and servers are empty"]}`,
    ],
    [
      { port: 80, tracing: { serviceName: "" } },
      `{"jsonschemaErrs":["jsonschema: '/tracing/serviceName' does not validate with ${SCHEMA}#/properties/tracing/properties/serviceName/minLength: length must be >= 1, but got 0"]}`,
    ],
  ];
  for (const [spec, msg] of cases) {
    let got: string;
    try {
      got = message(() => parseHTTPServerSpec(spec));
    } catch (err) {
      got = String(err);
    }
    assert.equal(got, msg, JSON.stringify(spec));
  }
});

Deno.test("HTTPServer: RadixTree patterns and rewrite targets are checked at create time", () => {
  const radix = (path: string, rewriteTarget = "") =>
    message(() =>
      parseHTTPServerSpec({
        port: 80,
        routerKind: "RadixTree",
        rules: [{ paths: [{ path, rewriteTarget, backend: "p" }] }],
      })
    );
  const ok = (path: string, rewriteTarget = "") =>
    parseHTTPServerSpec({
      port: 80,
      routerKind: "RadixTree",
      rules: [{ paths: [{ path, rewriteTarget, backend: "p" }] }],
    });
  ok("/users/{id:[0-9]+}/files/*", "/f/{id}/{EG_WILDCARD}");
  ok("/static/x", "/y");
  const err = (m: string) => JSON.stringify({ generalErrs: [`*httpserver.Spec: rules[0].paths[0]: ${m}`] });
  assert.equal(radix("/a/*/{id}"), err("wildcard '*' must be the last pattern in a route, otherwise use a '{param}'"));
  assert.equal(
    radix("/a/*/b"),
    err("wildcard '*' must be the last value in a route. trim trailing text or use a '{param}' instead"),
  );
  assert.equal(radix("/a/{id/b"), err("route param closing delimiter '}' is missing"));
  assert.equal(radix("/a/{id}/{id}"), err("routing pattern '/a/{id}/{id}' contains duplicate param key, 'id'"));
  assert.equal(radix("/a/{id}", "/b/{name}"), err("artRouter RewriteTarget syntax error: /b/{name}"));
  assert.equal(radix("/a/*", "/b/*"), err("artRouter RewriteTarget not support '*', please use {EG_WILDCARD}"));
  // the Ordered router does not read these patterns
  parseHTTPServerSpec({ port: 80, rules: [{ paths: [{ path: "/a/*/b", backend: "p" }] }] });
});

Deno.test("Pipeline: flow defaults to the filters in order; filters, policies typed with defaults", () => {
  const p = parsePipelineSpec(y(`
filters:
- name: limit
  kind: RateLimiter
  policies: [{name: p1}]
  defaultPolicyRef: p1
  urls: [{url: {prefix: /}}]
- name: proxy
  kind: Proxy
  pools:
  - servers: [{url: "http://127.0.0.1:9095"}]
    retryPolicy: retry
    circuitBreakerPolicy: cb
resilience:
- {name: retry, kind: Retry}
- {name: cb, kind: CircuitBreaker, slidingWindowType: TIME_BASED}
data: {greeting: hi}
`));
  assert.deepEqual(p.flow, [
    { filter: "limit", alias: "", namespace: "" },
    { filter: "proxy", alias: "", namespace: "" },
  ]);
  const limiter = p.filters[0] as RateLimiterSpec;
  assert.equal(limiter.policies![0].limitForPeriod, 0); // 0: the limiter applies 50
  assert.equal(limiter.urls![0].url.prefix, "/");
  const proxy = p.filters[1] as ProxySpec;
  assert.deepEqual([proxy.maxIdleConns, proxy.maxIdleConnsPerHost, proxy.serverMaxBodySize], [10240, 1024, 0]);
  assert.equal(proxy.pools[0].retryPolicy, "retry");
  assert.deepEqual(p.resilience[0], {
    name: "retry",
    kind: "Retry",
    version: "",
    createdAt: "",
    labels: undefined,
    maxAttempts: 3,
    waitDuration: "500ms",
    backOffPolicy: "random",
    randomizationFactor: 0,
  });
  const cb = p.resilience[1];
  assert.ok(cb.kind === "CircuitBreaker");
  assert.deepEqual(
    [cb.slidingWindowType, cb.failureRateThreshold, cb.minimumNumberOfCalls, cb.waitDurationInOpenState],
    ["TIME_BASED", 50, 100, "1m"],
  );
  assert.deepEqual(p.data, { greeting: "hi" });
  const redirector = parseFilterSpec({
    name: "r",
    kind: "Redirector",
    match: "^/a",
    replacement: "/b",
  }) as RedirectorSpec;
  assert.deepEqual([redirector.matchPart, redirector.statusCode], ["uri", 301]);
  const builder = parseFilterSpec({ name: "b", kind: "RequestBuilder", template: "method: GET" }) as RequestBuilderSpec;
  assert.equal(builder.protocol, "http");
});

Deno.test("Pipeline: Easegress's messages for flows, filters and policies", () => {
  const pipe = (text: string) => message(() => parsePipelineSpec(y(text)));
  const mock = "{name: m, kind: Mock, rules: []}";
  assert.equal(
    pipe("flow: []"),
    `{"jsonschemaErrs":["jsonschema: '/filters' does not validate with ${SCHEMA}#/properties/filters/type: expected array, but got null"]}`,
  );
  // the format error and Validate's error are both reported
  assert.equal(
    pipe(`flow: [{filter: "a b"}]\nfilters: []`),
    `{"formatErrs":["filter: invalid name format: a b"],"generalErrs":["*pipeline.Spec: flow: filter a b not found"]}`,
  );
  assert.equal(
    pipe(`filters: [${mock}, ${mock}]`),
    `{"generalErrs":["*pipeline.Spec: filters: duplicated filter name m"]}`,
  );
  assert.equal(
    pipe(`filters: [{name: END, kind: Mock, rules: []}]`),
    `{"generalErrs":["*pipeline.Spec: filters: can't use END(built-in) for filter name"]}`,
  );
  assert.equal(
    pipe(`filters: [{name: x, kind: Nope}]`),
    `{"generalErrs":["*pipeline.Spec: filters: kind Nope not found"]}`,
  );
  assert.equal(
    pipe(`filters: [{name: "", kind: Mock}]`),
    `{"generalErrs":["*pipeline.Spec: filters: {\\"formatErrs\\":[\\"name: invalid name format: \\"]}"]}`,
  );
  for (const kind of ["Kafka", "WasmHost", "OPAFilter", "GRPCProxy", "HeaderLookup", "AIGatewayProxy"]) {
    assert.equal(
      pipe(`filters: [{name: x, kind: ${kind}}]`),
      `{"generalErrs":["*pipeline.Spec: filters: kind ${kind} not supported"]}`,
    );
  }
  assert.equal(
    pipe(`flow: [{filter: m, alias: early}, {filter: m, jumpIf: {mocked: early}}]\nfilters: [${mock}]`),
    `{"generalErrs":["*pipeline.Spec: flow: filter m: target filter early not found"]}`,
  );
  assert.equal(
    pipe(`flow: [{filter: m, jumpIf: {mocked: x}}, {filter: m, alias: x}, {filter: m, alias: x}]\nfilters: [${mock}]`),
    `{"generalErrs":["*pipeline.Spec: flow: duplicated filter name/alias: x"]}`,
  );
  assert.equal(
    pipe(`flow: [{filter: m, jumpIf: {mocked: END, "": END}}, {filter: nope}]\nfilters: [${mock}]`),
    `{"generalErrs":["*pipeline.Spec: flow: filter nope not found"]}`,
  );
  // policy errors come under the "flow" prefix, as in Easegress
  assert.equal(
    pipe(`filters: [${mock}]\nresilience: [{name: r, kind: Retry, backOffPolicy: EXPONENTIAL}]`),
    `{"generalErrs":["*pipeline.Spec: flow: {\\"jsonschemaErrs\\":[\\"jsonschema: '/backOffPolicy' does not validate with ${SCHEMA}#/properties/backOffPolicy/enum: value must be one of \\\\\\"random\\\\\\", \\\\\\"exponential\\\\\\"\\"]}"]}`,
  );
  assert.equal(
    message(() => parseResiliencePolicy({ name: "c", kind: "CircuitBreaker", failureRateThreshold: 300 })),
    "json: cannot unmarshal number 300 into Go struct field CircuitBreakerPolicy.failureRateThreshold of type uint8",
  );
});

Deno.test("filters: each kind's checks", () => {
  const f = (spec: Record<string, unknown>) => message(() => parseFilterSpec({ name: "f", ...spec }));
  const cases: [Record<string, unknown>, Record<string, string[]> | string][] = [
    [{ kind: "Proxy" }, {
      jsonschemaErrs: [
        `jsonschema: '/pools' does not validate with ${SCHEMA}#/properties/pools/type: expected array, but got null`,
      ],
      generalErrs: ["*httpproxy.Spec: one and only one mainPool is required"],
    }],
    [{ kind: "Proxy", pools: [{ servers: [{ url: "http://a", weight: 1 }, { url: "http://b" }] }] }, {
      generalErrs: [
        "*httpproxy.Spec: pool 0: not all servers have weight(1/2)",
        "*httpproxy.ServerPoolSpec: not all servers have weight(1/2)",
      ],
    }],
    [{ kind: "Proxy", pools: [{ servers: [{ url: "http://a" }], loadBalance: { stickySession: {} } }] }, {
      jsonschemaErrs: [
        `jsonschema: '/pools/0/loadBalance/stickySession/mode' does not validate with ${SCHEMA}#/properties/pools/items/properties/loadBalance/properties/stickySession/properties/mode/enum: value must be one of "CookieConsistentHash", "DurationBased", "ApplicationBased"`,
      ],
    }],
    [{ kind: "Proxy", pools: [{ servers: [{ url: "http://a" }], healthCheck: { interval: "1s", username: "u" } }] }, {
      generalErrs: [
        "*httpproxy.Spec: pool 0: empty password",
        "*httpproxy.ServerPoolSpec: empty password",
        "healthCheck: empty password",
      ],
    }],
    [{ kind: "Proxy", pools: [{ servers: [{ url: "http://a" }] }], mirrorPool: { servers: [{ url: "http://m" }] } }, {
      generalErrs: ["*httpproxy.Spec: filter of mirrorPool is required"],
    }],
    [{
      kind: "Proxy",
      pools: [{ servers: [{ url: "http://a" }], filter: { policy: "random" } }, { servers: [{ url: "http://b" }] }],
    }, {
      // Proxy's own Validate does not look at a pool's filter; the walk does
      generalErrs: ["filter: permil is not specified"],
    }],
    [{
      kind: "Proxy",
      pools: [{
        servers: [{ url: "http://a" }],
        memoryCache: { expiration: "1s", maxEntryBytes: 1, codes: [200], methods: ["GET"] },
        timeout: "x",
      }],
    }, {
      formatErrs: ['timeout: invalid duration: time: invalid duration "x"'],
    }],
    [{ kind: "WebSocketProxy", pools: [] }, {
      generalErrs: ["*httpproxy.WebSocketProxySpec: one and only one mainPool is required"],
    }],
    [{ kind: "RequestAdaptor", compress: "br" }, {
      generalErrs: ["*builder.RequestAdaptorSpec: RequestAdaptor only support decompress type of gzip"],
    }],
    [{ kind: "RequestAdaptor", method: "FETCH", path: { addPrefix: "x" } }, {
      jsonschemaErrs: [
        `jsonschema: '/path/addPrefix' does not validate with ${SCHEMA}#/properties/path/properties/addPrefix/pattern: does not match pattern '^/'`,
      ],
      formatErrs: ["method: invalid http method"],
    }],
    [{ kind: "RequestBuilder" }, {
      generalErrs: ["*builder.RequestBuilderSpec: sourceNamespace or template must be specified"],
    }],
    [{ kind: "ResponseBuilder", protocol: "smtp", template: "x" }, {
      generalErrs: ["*builder.ResponseBuilderSpec: unknown protocol: smtp"],
    }],
    [{ kind: "DataBuilder", template: "x" }, { generalErrs: ["*builder.DataBuilderSpec: dataKey must be specified"] }],
    [{ kind: "Mock", rules: [{ code: 99, delay: "soon", match: { headers: { X: {} } } }] }, {
      formatErrs: ["code: invalid http code", 'delay: invalid duration: time: invalid duration "soon"'],
      generalErrs: ["*stringtool.StringMatcher: all patterns are empty"],
    }],
    [{ kind: "Fallback" }, { formatErrs: ["mockCode: invalid http code"] }],
    [{ kind: "Redirector", match: "(", replacement: "/x" }, {
      generalErrs: ["*redirector.Spec: error parsing regexp: Invalid regular expression: /(/u: Unterminated group"],
    }],
    [{ kind: "Redirector", match: "^/a", replacement: "/x", statusCode: 200 }, {
      generalErrs: ["*redirector.Spec: invalid status code of Redirector, support 300, 301, 302, 303, 304, 307, 308"],
    }],
    [{ kind: "RedirectorV2", scheme: "ftp" }, {
      generalErrs: ["*redirectorv2.Spec: invalid scheme of Redirector, only support http and https"],
    }],
    [{
      kind: "RateLimiter",
      policies: [{ name: "a", limitForPeriod: 0 }],
      urls: [{ url: { exact: "/" }, policyRef: "b" }],
    }, {
      generalErrs: ["ratelimiter.Spec: policy 'b' is not defined"],
    }],
    [{ kind: "RateLimiter", policies: [{ name: "a", limitForPeriod: -1 }], defaultPolicyRef: "a", urls: [] }, {
      jsonschemaErrs: [
        `jsonschema: '/policies/0/limitForPeriod' does not validate with ${SCHEMA}#/properties/policies/items/properties/limitForPeriod/minimum: must be >= 1 but found -1`,
      ],
    }],
    [{ kind: "CORSAdaptor", allowedMethods: ["GET", "BREW"] }, { formatErrs: ["allowedMethods: invalid http method"] }],
    [{ kind: "Validator" }, { generalErrs: ["validator.Spec: none of the validations are defined"] }],
    [{ kind: "Validator", jwt: { algorithm: "HS256", secret: "not-hex" } }, {
      jsonschemaErrs: [
        `jsonschema: '/jwt/secret' does not validate with ${SCHEMA}#/properties/jwt/properties/secret/pattern: does not match pattern '^$|^[A-Fa-f0-9]+$'`,
      ],
    }],
    [{ kind: "Validator", headers: { "X-Key": {} } }, {
      generalErrs: ["httpheader.ValueValidator: neither values nor regexp is specified"],
    }],
    [{ kind: "HeaderToJSON" }, {
      jsonschemaErrs: [
        `jsonschema: '/headerMap' does not validate with ${SCHEMA}#/properties/headerMap/type: expected array, but got null`,
      ],
    }],
    [
      { kind: "Proxy", pools: "x" },
      "json: cannot unmarshal string into Go struct field Spec.pools of type []*httpproxy.ServerPoolSpec",
    ],
  ];
  for (const [spec, want] of cases) {
    assert.equal(f(spec), typeof want === "string" ? want : JSON.stringify(want), JSON.stringify(spec));
  }
});

Deno.test("objects: the stored form keeps the user's filter maps; other kinds refused as not supported", () => {
  const spec = newSpec(
    "kind: Pipeline\nname: p\nfilters:\n- {name: proxy, kind: Proxy, pools: [{servers: [{url: 'http://a'}]}]}\n",
    false,
  );
  // Easegress stores a pipeline's filters as written (the defaults apply when the pipeline is built)
  assert.deepEqual(spec.json.filters, [{ kind: "Proxy", name: "proxy", pools: [{ servers: [{ url: "http://a" }] }] }]);
  const data = newSpec("kind: Pipeline\nname: p\nfilters: []\ndata: {a: null, b: [1, null]}\n", false);
  assert.deepEqual(data.json.data, { a: null, b: [1, null] });
  const hs = newSpec(
    "kind: HTTPServer\nname: s\nport: 80\nrules:\n- paths: [{path: /a, backend: p, methods: [GET]}]\n",
    false,
  );
  assert.deepEqual(hs.json.rules, [{ paths: [{ backend: "p", methods: ["GET"], path: "/a" }] }]);
  for (const kind of ["GRPCServer", "MQTTProxy", "AutoCertManager", "GlobalFilter", "NacosServiceRegistry"]) {
    assert.equal(message(() => newSpec(`kind: ${kind}\nname: x\n`, false)), `kind ${kind} not supported`);
  }
  assert.equal(message(() => newSpec("kind: Gadget\nname: x\n", false)), "kind Gadget not found");
  assert.equal(
    message(() => newSpec("kind: ServiceRegistry\nname: x\nsyncInterval: 5\n", false)),
    "json: cannot unmarshal number into Go struct field Spec.syncInterval of type string",
  );
});

Deno.test("stored objects read back as typed traffic objects", () => {
  const hs = newSpec("kind: HTTPServer\nname: s\nport: 80\nrules: [{paths: [{pathPrefix: /, backend: p}]}]\n", true);
  const obj = parseTrafficObject(JSON.stringify(hs.json));
  assert.ok(obj?.kind === "HTTPServer");
  assert.deepEqual([obj.name, obj.spec.port, obj.spec.keepAliveTimeout, obj.spec.rules![0].paths![0].backend], [
    "s",
    80,
    "60s",
    "p",
  ]);
  const pl = newSpec(
    "kind: Pipeline\nname: p\nfilters: [{name: m, kind: Mock, rules: [{match: {}, code: 200}]}]\n",
    true,
  );
  const p = parseTrafficObject(pl.json);
  assert.ok(p?.kind === "Pipeline");
  assert.deepEqual(p.spec.flow, [{ filter: "m", alias: "", namespace: "" }]);
  assert.equal(p.spec.filters[0].kind, "Mock");
  assert.equal(
    parseTrafficObject(newSpec("kind: TrafficController\nname: TrafficController\n", false).json),
    undefined,
  );
  assert.equal(message(() => parseTrafficObject("{")).startsWith("bad object JSON"), true);
});

Deno.test("base64 as Go's StdEncoding checks it", () => {
  assert.equal(base64Error("aGVsbG8="), undefined);
  assert.equal(base64Error(""), undefined);
  assert.equal(base64Error("a$"), "illegal base64 data at input byte 1");
  assert.notEqual(base64Error("abc"), undefined);
});
