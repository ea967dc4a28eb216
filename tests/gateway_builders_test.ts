/**
 * Builders through a real member: the API aggregation walkthrough (three RequestBuilder copies of the request, three
 * Proxies to real backends, a ResponseBuilder merging the JSON bodies with `mergeObject … | toRawJson`, and the
 * `[a, b, c]` variant), a ResultBuilder branching with jumpIf, a DataBuilder feeding a ResponseBuilder, and a
 * template error giving buildErr (the flow ends without a response).
 */
import assert from "node:assert/strict";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

const json = (o: unknown) => () => new Response(JSON.stringify(o), { headers: { "content-type": "application/json" } });

memberTest("gateway builders: three-namespace merge, ResultBuilder with jumpIf, DataBuilder → ResponseBuilder", async (
  procs,
) => {
  const [ports] = await memberPorts(1);
  const [port] = await freePorts(1);
  const m = await startMember("gwbl", primaryArgs("gwbl", ports));
  procs.push(m);
  const demo1 = await startBackend("demo1", json({ mega: "ease" }));
  const demo2 = await startBackend("demo2", json({ hello: "world" }));
  const seen: string[] = [];
  const demo3 = await startBackend("demo3", async (req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname} ${await req.text()}`);
    return json({ hello: "new world" })();
  });
  const copies = [1, 2, 3].map((i) => `- {filter: copy${i}, namespace: demo${i}}`).join("\n");
  const proxies = [1, 2, 3].map((i) => `- {filter: proxy${i}, namespace: demo${i}}`).join("\n");
  const copyFilters = [1, 2, 3].map((i) => `- {name: copy${i}, kind: RequestBuilder, sourceNamespace: DEFAULT}`)
    .join("\n");
  const proxyFilters = [demo1, demo2, demo3].map((b, i) =>
    `- {name: proxy${i + 1}, kind: Proxy, pools: [{servers: [{url: ${b.url}}]}]}`
  ).join("\n");
  const aggregate = (body: string) =>
    `flow:\n${copies}\n${proxies}\n- {filter: build}\nfilters:\n${copyFilters}\n${proxyFilters}\n` +
    `- name: build\n  kind: ResponseBuilder\n  template: |\n    statusCode: 200\n    headers: {Content-Type: [application/json]}\n` +
    `    body: '${body}'\n`;
  const pipelines: [string, string][] = [
    [
      "merge",
      aggregate(
        "{{mergeObject .responses.demo1.JSONBody .responses.demo2.JSONBody .responses.demo3.JSONBody | toRawJson}}",
      ),
    ],
    ["array", aggregate("[{{.responses.demo1.Body}}, {{.responses.demo2.Body}}, {{.responses.demo3.Body}}]")],
    [
      "branch",
      `flow:\n- {filter: decide, jumpIf: {result0: a, result1: b}}\n- {filter: dflt}\n- {filter: a}\n- {filter: b}\n` +
      `filters:\n- name: decide\n  kind: ResultBuilder\n  template: |\n` +
      `    {{- $r := header .req.Header "X-Route" -}}\n` +
      `    {{if eq $r "a"}}result0{{else if eq $r "b"}}result1{{end}}\n` +
      `- {name: dflt, kind: Mock, rules: [{code: 200, body: default}]}\n` +
      `- {name: a, kind: Mock, rules: [{code: 200, body: route-a}]}\n` +
      `- {name: b, kind: Mock, rules: [{code: 200, body: route-b}]}`,
    ],
    [
      "data",
      `data: {greeting: hi}\nflow:\n- {filter: user}\n- {filter: reply}\nfilters:\n` +
      `- name: user\n  kind: DataBuilder\n  dataKey: user\n  template: |\n` +
      `    name: {{index .req.URL.Query.name 0 | title}}\n    roles: [{{.req.Body}}, dev]\n` +
      `- name: reply\n  kind: ResponseBuilder\n  template: |\n    statusCode: 201\n` +
      `    headers: {X-User: ['{{.data.user.name}}']}\n` +
      `    body: '{{.data.PIPELINE.greeting}} {{.data.user.name}}, roles {{join "," .data.user.roles}}'\n`,
    ],
    [
      "rebuild",
      `flow:\n- {filter: req, namespace: up}\n- {filter: proxy, namespace: up}\n- {filter: copy}\nfilters:\n` +
      `- name: req\n  kind: RequestBuilder\n  template: |\n    method: put\n    url: /rebuilt{{.req.URL.Path}}\n` +
      `    body: 'from {{.req.Method}}'\n` +
      `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${demo3.url}}]}]}\n` +
      `- {name: copy, kind: ResponseBuilder, sourceNamespace: up}`,
    ],
    [
      "broken",
      `flow:\n- {filter: bad}\n- {filter: never}\nfilters:\n- {name: bad, kind: ResponseBuilder, template: "{{.req.Nope}}"}\n` +
      `- {name: never, kind: Mock, rules: [{code: 200, body: never}]}`,
    ],
  ];
  try {
    for (const [name, body] of pipelines) await putObject(m.apiAddr, `kind: Pipeline\nname: ${name}\n${body}\n`);
    await putObject(
      m.apiAddr,
      `kind: HTTPServer\nname: builders\nport: ${port}\nrules:\n- paths:\n` +
        pipelines.map(([n]) => `  - {pathPrefix: /${n}, backend: ${n}}`).join("\n") + "\n",
    );
    const base = `http://127.0.0.1:${port}`;
    await waitFor("server", async () => (await get(`${base}/merge`).catch(() => [0]))[0] === 200);

    // the walkthrough's merged output; each backend got the client's request
    const merged = await fetch(`${base}/merge`, { method: "POST", body: "x" });
    assert.equal(merged.headers.get("content-type"), "application/json");
    assert.equal(await merged.text(), '{"hello":"new world","mega":"ease"}');
    assert.deepStrictEqual(seen.at(-1), "POST /merge x");
    assert.deepStrictEqual(await get(`${base}/array`), [
      200,
      '[{"mega":"ease"}, {"hello":"world"}, {"hello":"new world"}]',
    ]);

    // ResultBuilder: result0 / result1 jump, "" continues
    assert.deepStrictEqual(await get(`${base}/branch`, { headers: { "x-route": "a" } }), [200, "route-a"]);
    assert.deepStrictEqual(await get(`${base}/branch`, { headers: { "x-route": "b" } }), [200, "route-b"]);
    assert.deepStrictEqual(await get(`${base}/branch`), [200, "default"]);

    // DataBuilder → ResponseBuilder
    const data = await fetch(`${base}/data?name=alice`, { method: "POST", body: "admin" });
    assert.equal(data.status, 201);
    assert.equal(data.headers.get("x-user"), "Alice");
    assert.equal(await data.text(), "hi Alice, roles admin,dev");

    // a request built from a template, proxied, its response copied to DEFAULT
    assert.deepStrictEqual(await get(`${base}/rebuild/p`), [200, '{"hello":"new world"}']);
    assert.equal(seen.at(-1), "PUT /rebuilt/rebuild/p from GET");

    // buildErr ends the flow (not a jumpIf key): the next filter does not run, no response was built -> 503
    assert.equal((await get(`${base}/broken`))[0], 503);
  } finally {
    await demo1.stop();
    await demo2.stop();
    await demo3.stop();
  }
});
