/**
 * Filters through a real member: flow with jumpIf and END, Mock, RequestAdaptor, ResponseAdaptor, RateLimiter,
 * Validator (headers, JWT), CORSAdaptor, Redirector, Fallback after a Proxy failureCode, HeaderToJSON,
 * WebSocketProxy (an echo); a pipeline with
 * an unknown kind is not run (503) and reports its error.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

const SECRET_HEX = Buffer.from("gateway-test-secret").toString("hex");

function jwt(claims: Record<string, unknown>, secret = "gateway-test-secret"): string {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${enc({ alg: "HS256", typ: "JWT" })}.${enc(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

memberTest(
  "gateway filters: jumpIf/END, Mock, adaptors, RateLimiter, Validator, CORS, Redirector, Fallback, HeaderToJSON, WebSocket",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [port] = await freePorts(1);
    const m = await startMember("gwfl", primaryArgs("gwfl", ports));
    procs.push(m);
    const echo = await startBackend("echo", async (req) => {
      const u = new URL(req.url);
      return new Response(
        `${req.method} ${u.pathname} x-added=${req.headers.get("x-added")} body=${await req.text()}`,
        {
          headers: { "x-upstream": "yes" },
        },
      );
    });
    const failing = await startBackend("bad", () => new Response("oops", { status: 500 }));
    const wsBackend = await startBackend("ws", (req) => {
      const xff = req.headers.get("x-forwarded-for");
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(`echo ${e.data} (xff ${xff})`);
      return response;
    });
    const pipelines: [string, string][] = [
      [
        "mocked",
        `flow:\n- {filter: mock, jumpIf: {mocked: END}}\n- {filter: never}\nfilters:\n` +
        `- {name: mock, kind: Mock, rules: [{match: {pathPrefix: /mocked/yes}, code: 202, body: mocked!, headers: {X-Mock: "1"}}]}\n` +
        `- {name: never, kind: Mock, rules: [{code: 418, body: fell-through}]}`,
      ],
      [
        "adapt",
        `flow: [{filter: req}, {filter: proxy}, {filter: resp}]\nfilters:\n` +
        `- {name: req, kind: RequestAdaptor, path: {addPrefix: /prefixed}, header: {set: {X-Added: "42"}}}\n` +
        `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echo.url}}]}]}\n` +
        `- {name: resp, kind: ResponseAdaptor, header: {del: [X-Upstream], set: {X-Adapted: "yes"}}}`,
      ],
      [
        "limited",
        `filters:\n- {name: rl, kind: RateLimiter, policies: [{name: p, limitForPeriod: 2, limitRefreshPeriod: 10s, ` +
        `timeoutDuration: 0s}], defaultPolicyRef: p, urls: [{url: {prefix: /limited}}]}\n` +
        `- {name: ok, kind: Mock, rules: [{code: 200, body: passed}]}`,
      ],
      [
        "jwt",
        `filters:\n- {name: v, kind: Validator, jwt: {algorithm: HS256, secret: ${SECRET_HEX}}}\n` +
        `- {name: ok, kind: Mock, rules: [{code: 200, body: welcome}]}`,
      ],
      [
        "headers",
        `filters:\n- {name: v, kind: Validator, headers: {X-Key: {values: [k1, k2]}}}\n` +
        `- {name: ok, kind: Mock, rules: [{code: 200, body: keyed}]}`,
      ],
      [
        "cors",
        `filters:\n- {name: c, kind: CORSAdaptor, allowedOrigins: ["https://a.example"]}\n` +
        `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echo.url}}]}]}`,
      ],
      [
        "redirect",
        `filters:\n- {name: r, kind: Redirector, match: "^/redirect/(.*)$", replacement: "/new/$1", statusCode: 302}`,
      ],
      [
        "fallback",
        `flow:\n- {filter: proxy, jumpIf: {failureCode: fb}}\n- {filter: fb}\nfilters:\n` +
        `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${failing.url}}]}]}\n` +
        `- {name: fb, kind: Fallback, mockCode: 200, mockBody: fallback-body}`,
      ],
      [
        "h2j",
        `flow: [{filter: h}, {filter: proxy}]\nfilters:\n- {name: h, kind: HeaderToJSON, headerMap: [{header: X-User, json: user}]}\n` +
        `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echo.url}}]}]}`,
      ],
      ["ws", `filters:\n- {name: w, kind: WebSocketProxy, pools: [{servers: [{url: ${wsBackend.url}}]}]}`],
    ];
    try {
      for (const [name, body] of pipelines) await putObject(m.apiAddr, `kind: Pipeline\nname: ${name}\n${body}\n`);
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: filters\nport: ${port}\nrules:\n- paths:\n` +
          [...pipelines.map(([n]) => n), "unknown"].map((n) => `  - {pathPrefix: /${n}, backend: ${n}}`).join("\n") +
          "\n",
      );
      const base = `http://127.0.0.1:${port}`;
      await waitFor("server", async () => (await get(`${base}/mocked/yes`).catch(() => [0]))[0] === 202);

      // Mock + jumpIf END; no rule matched -> "" -> the next node runs
      const mocked = await fetch(`${base}/mocked/yes`);
      assert.equal(mocked.headers.get("x-mock"), "1");
      assert.equal(await mocked.text(), "mocked!");
      assert.deepStrictEqual(await get(`${base}/mocked/no`), [418, "fell-through"]);

      // RequestAdaptor before the Proxy, ResponseAdaptor after it
      const adapted = await fetch(`${base}/adapt/x`, { method: "POST", body: "b" });
      assert.equal(await adapted.text(), "POST /prefixed/adapt/x x-added=42 body=b");
      assert.equal(adapted.headers.get("x-adapted"), "yes");
      assert.equal(adapted.headers.get("x-upstream"), null);

      // RateLimiter: 2 per 10 s, no waiting: the third gets 429
      assert.equal((await get(`${base}/limited`))[0], 200);
      assert.equal((await get(`${base}/limited`))[0], 200);
      const limited = await fetch(`${base}/limited`);
      await limited.body?.cancel();
      assert.equal(limited.status, 429);
      assert.equal(limited.headers.get("x-eg-rate-limiter"), "too-many-requests");

      // Validator JWT: none / bad signature / expired -> 401; valid -> 200
      assert.equal((await get(`${base}/jwt`))[0], 401);
      const auth = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
      assert.equal((await get(`${base}/jwt`, auth(jwt({ sub: "a" }, "wrong"))))[0], 401);
      assert.equal((await get(`${base}/jwt`, auth(jwt({ sub: "a", exp: 1000 }))))[0], 401);
      assert.deepStrictEqual(await get(`${base}/jwt`, auth(jwt({ sub: "a", exp: Date.now() / 1000 + 60 }))), [
        200,
        "welcome",
      ]);
      // Validator headers: 400 without an accepted value
      assert.equal((await get(`${base}/headers`))[0], 400);
      assert.equal((await get(`${base}/headers`, { headers: { "x-key": "k3" } }))[0], 400);
      assert.deepStrictEqual(await get(`${base}/headers`, { headers: { "x-key": "k2" } }), [200, "keyed"]);

      // CORS: a preflight is answered 204 by the filter; an allowed origin gets its header; another is rejected
      const pre = await fetch(`${base}/cors`, {
        method: "OPTIONS",
        headers: { origin: "https://a.example", "access-control-request-method": "GET" },
      });
      await pre.body?.cancel();
      assert.equal(pre.status, 204);
      assert.equal(pre.headers.get("access-control-allow-origin"), "https://a.example");
      const actual = await fetch(`${base}/cors`, { headers: { origin: "https://a.example" } });
      // (the Proxy merges the upstream response into the one the filter started)
      assert.equal(await actual.text(), "GET /cors x-added=null body=");
      assert.equal(actual.headers.get("access-control-allow-origin"), "https://a.example");
      assert.deepStrictEqual(await get(`${base}/cors`, { headers: { origin: "https://evil.example" } }), [200, ""]);

      // Redirector
      const red = await fetch(`${base}/redirect/abc?q=1`, { redirect: "manual" });
      await red.body?.cancel();
      assert.equal(red.status, 302);
      assert.equal(red.headers.get("location"), "/new/abc?q=1");

      // Fallback after a failureCode
      assert.deepStrictEqual(await get(`${base}/fallback`), [200, "fallback-body"]);

      // HeaderToJSON
      const h2j = await get(`${base}/h2j`, { method: "POST", body: '{"a":1}', headers: { "x-user": "bob" } });
      assert.deepStrictEqual(h2j, [200, 'POST /h2j x-added=null body={"a":1,"user":"bob"}']);

      // WebSocketProxy: an echo through the gateway; a plain request is refused (400)
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/echo`);
      const echoed = await new Promise<string>((resolve, reject) => {
        ws.onopen = () => ws.send("hello");
        ws.onmessage = (e) => resolve(String(e.data));
        ws.onerror = () => reject(new Error("websocket error"));
      });
      ws.close();
      assert.equal(echoed, "echo hello (xff 127.0.0.1)");
      assert.equal((await get(`${base}/ws/plain`))[0], 400);

      // a pipeline whose filter kind does not run here: the API refuses it; one that reaches the store anyway (written
      // directly) is not run (503) and its status says why
      await assert.rejects(
        putObject(m.apiAddr, "kind: Pipeline\nname: unknown\nfilters:\n- {name: k, kind: Kafka}\n"),
        /400/,
      );
      const put = await new Deno.Command("etcdctl", {
        args: [
          "--endpoints",
          `127.0.0.1:${ports.client}`,
          "put",
          "/config/objects/unknown",
          JSON.stringify({ name: "unknown", kind: "Pipeline", filters: [{ name: "k", kind: "Kafka" }] }),
        ],
        env: { ETCDCTL_API: "3" },
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(put.code, 0, new TextDecoder().decode(put.stderr));
      await waitFor("the direct put seen", async () => (await get(`${base}/unknown`))[0] === 503);
      await waitFor("unknown's error in its status", async () => {
        const st = await (await fetch(`http://${m.apiAddr}/apis/v2/status/objects`)).json();
        return /Kafka not supported/.test(st["eg-traffic-default/unknown/gwfl"]?.status?.error ?? "");
      }, 15000);
    } finally {
      await echo.stop();
      await failing.stop();
    }
  },
);
