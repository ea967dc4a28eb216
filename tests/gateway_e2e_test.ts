/**
 * The gateway end to end through a real member process: the reference's hello-world flow (§5.2) with three backends
 * the test starts, routing status codes, body limits, and serving from running_objects.json after a restart while the
 * store does not answer.
 */
import assert from "node:assert/strict";

import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { type Backend, get, putObject, rawExchange, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

const serverYaml = (port: number, extraPaths = "") => `
kind: HTTPServer
name: server-demo
port: ${port}
keepAlive: true
https: false
clientMaxBodySize: 1024
rules:
- paths:
  - pathPrefix: /pipeline
    backend: pipeline-demo
  - path: /only-post
    methods: [POST]
    backend: pipeline-demo
  - path: /big
    clientMaxBodySize: 10
    backend: pipeline-demo
${extraPaths}`;

const pipelineYaml = (backends: Backend[]) => `
name: pipeline-demo
kind: Pipeline
flow:
- filter: proxy
filters:
- name: proxy
  kind: Proxy
  pools:
  - servers: [${backends.map((b) => `{url: ${b.url}}`).join(", ")}]
    loadBalance: {policy: roundRobin}
`;

memberTest(
  "gateway: hello world — 503 before the pipeline, round robin over three backends, 503 when they are down",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [httpPort] = await freePorts(1);
    const m = await startMember("gw1", primaryArgs("gw1", ports));
    procs.push(m);
    const backends = [await startBackend("b1"), await startBackend("b2"), await startBackend("b3")];
    try {
      await putObject(m.apiAddr, serverYaml(httpPort));
      const base = `http://127.0.0.1:${httpPort}`;
      // the server runs before its pipeline exists: 503 with an empty body
      await waitFor("server listening", async () => (await get(`${base}/pipeline`).catch(() => [0]))[0] === 503);
      assert.deepStrictEqual(await get(`${base}/pipeline`), [503, ""]);

      await putObject(m.apiAddr, pipelineYaml(backends));
      await waitFor("pipeline", async () => (await get(`${base}/pipeline`))[0] === 200);
      const seen: string[] = [];
      for (let i = 0; i < 6; i++) {
        const [status, body] = await get(`${base}/pipeline/x?q=1`, { method: "POST", body: "Hello, Easegress" });
        assert.deepStrictEqual(status, 200);
        seen.push(body);
      }
      // round robin: each backend twice, in turn, with method, path, query and body passed through
      for (const b of backends) {
        assert.deepStrictEqual(
          seen.filter((s) => s === `${b.name} POST /pipeline/x?q=1 Hello, Easegress`).length,
          2,
        );
      }
      assert(seen[0] !== seen[1] && seen[1] !== seen[2] && seen[0] !== seen[2], seen.join("|"));

      // routing failures: no route 404, wrong method 405, body over the limits 413
      assert.deepStrictEqual((await get(`${base}/nothing-here`))[0], 404);
      assert.deepStrictEqual((await get(`${base}/only-post`))[0], 405);
      assert.deepStrictEqual((await get(`${base}/only-post`, { method: "POST", body: "x" }))[0], 200);
      assert.deepStrictEqual((await get(`${base}/big`, { method: "POST", body: "01234567890" }))[0], 413);
      assert.deepStrictEqual((await get(`${base}/pipeline`, { method: "POST", body: "x".repeat(1025) }))[0], 413);

      // status under /status/objects/eg-traffic-default/server-demo/gw1 in Easegress's shape
      await waitFor("status published", async () => {
        const r = await fetch(`http://${m.apiAddr}/apis/v2/status/objects/server-demo`);
        const st = await r.json();
        const s = st["eg-traffic-default/server-demo/gw1"]?.status;
        return s?.state === "running" && s.count >= 6 && typeof s.p99 === "number";
      }, 15000);

      // the same traffic on /apis/v2/metrics, per route (router kind, backend) under Easegress's series names
      const metrics = await (await fetch(`http://${m.apiAddr}/apis/v2/metrics`)).text();
      const series = (name: string, backend: string) => {
        const line = metrics.split("\n").find((l) =>
          l.startsWith(`${name}{`) && l.includes('name="server-demo"') && l.includes(`backend="${backend}"`)
        );
        return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(" ") + 1));
      };
      assert.ok(series("httpserver_total_requests", "pipeline-demo") >= 9, metrics); // 6 proxied, 503, 413 ×2, …
      assert.ok(series("httpserver_total_error_requests", "pipeline-demo") >= 3, metrics); // 503, 413, 413
      assert.ok(series("httpserver_total_requests", "") >= 2, metrics); // the 404 and 405 matched no route
      assert.match(metrics, /httpserver_health\{[^}]*name="server-demo"[^}]*\} 1/);

      // all backends down: 503 (serverError)
      for (const b of backends) await b.stop();
      assert.deepStrictEqual((await get(`${base}/pipeline`))[0], 503);
    } finally {
      for (const b of backends) await b.stop().catch(() => {});
    }
  },
);

memberTest("gateway: a member restarted without its store serves from running_objects.json", async (procs) => {
  const [ports] = await memberPorts(1);
  const [httpPort, deadPeer] = await freePorts(2);
  const m = await startMember("gw2", primaryArgs("gw2", ports));
  procs.push(m);
  const backend = await startBackend("only");
  try {
    await putObject(m.apiAddr, pipelineYaml([backend]));
    await putObject(m.apiAddr, serverYaml(httpPort));
    const base = `http://127.0.0.1:${httpPort}`;
    await waitFor("proxying", async () => (await get(`${base}/pipeline`).catch(() => [0]))[0] === 200);
    await waitFor("dump written", async () => {
      try {
        return Object.keys(JSON.parse(await Deno.readTextFile(`${m.home}/data/running_objects.json`))).length === 2;
      } catch {
        return false;
      }
    });
    await m.kill();
    // the same home and data dir, now as a secondary whose primary does not exist: the store never answers
    const [api] = await freePorts(1);
    const s = await startMember("gw2", [
      "--name",
      "gw2",
      "--cluster-role",
      "secondary",
      "--api-addr",
      `127.0.0.1:${api}`,
      "--primary-listen-peer-urls",
      `http://127.0.0.1:${deadPeer}`,
    ], { home: m.home, wait: false });
    procs.push(s);
    await waitFor(
      "serving from the dump",
      async () => (await get(`${base}/pipeline/again`).catch(() => [0]))[0] === 200,
    );
    assert.deepStrictEqual(await get(`${base}/pipeline/again`), [200, "only GET /pipeline/again"]);
  } finally {
    await backend.stop();
  }
});

memberTest(
  "gateway: malformed requests get 400 and a closed connection; smuggling is refused; 431 for huge heads",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [httpPort] = await freePorts(1);
    const m = await startMember("gw3", primaryArgs("gw3", ports));
    procs.push(m);
    const backend = await startBackend("b");
    try {
      await putObject(m.apiAddr, pipelineYaml([backend]));
      await putObject(m.apiAddr, serverYaml(httpPort));
      const base = `http://127.0.0.1:${httpPort}`;
      await waitFor("proxying", async () => (await get(`${base}/pipeline`).catch(() => [0]))[0] === 200);
      const bad: [string, string, number][] = [
        ["garbage request line", "HELLO\r\n\r\n", 400],
        ["no Host in HTTP/1.1", "GET /pipeline HTTP/1.1\r\n\r\n", 400],
        ["space before colon", "GET /pipeline HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400],
        ["obs-fold", "GET /pipeline HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400],
        [
          "CL and TE together",
          "POST /pipeline HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
          400,
        ],
        [
          "two different Content-Lengths",
          "POST /pipeline HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
          400,
        ],
        [
          "chunked not the last transfer coding (RFC 9112 6.3)",
          "POST /pipeline HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
          400,
        ],
        [
          "TE not chunked",
          "POST /pipeline HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
          501,
        ],
        [
          "bad chunk size",
          "POST /pipeline HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
          400,
        ],
        [
          "chunk without CRLF after data",
          "POST /pipeline HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
          400,
        ],
        ["bare LF", "GET /pipeline HTTP/1.1\nHost: a\n\n", 400],
      ];
      for (const [what, raw, status] of bad) {
        const rs = await rawExchange(httpPort, raw);
        assert.deepStrictEqual(rs.length, 1, `${what}: ${JSON.stringify(rs)}`);
        assert.deepStrictEqual(rs[0].status, status, what);
        assert(rs[0].closed, `${what}: connection left open`);
      }
      // a smuggled second request inside a body is never seen as a request
      const smuggle = "POST /pipeline HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n" +
        "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
      const rs = await rawExchange(httpPort, smuggle);
      assert.deepStrictEqual(rs.map((r) => r.status), [400]);

      // a well-formed chunked body and keep-alive: two responses on one connection
      const two = await rawExchange(
        httpPort,
        "POST /pipeline HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
          "GET /pipeline/2 HTTP/1.1\r\nHost: a\r\n\r\n",
      );
      assert.deepStrictEqual(two.map((r) => [r.status, r.body]), [[200, "b POST /pipeline hello"], [
        200,
        "b GET /pipeline/2",
      ]]);

      // an oversized head: 431
      const huge = await rawExchange(
        httpPort,
        `GET /pipeline HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(1100 * 1024)}\r\n\r\n`,
      );
      assert.deepStrictEqual(huge[0]?.status, 431);
      // an over-limit chunked body: 413
      const big = await rawExchange(
        httpPort,
        `POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n${"x".repeat(32)}\r\n0\r\n\r\n`,
      );
      assert.deepStrictEqual(big[0]?.status, 413);
      // others were not affected
      assert.deepStrictEqual((await get(`${base}/pipeline/ok`))[0], 200);
      // requests and responses of changing sizes on one client connection (and its pooled upstream one): each is
      // written whole, also when the one before had the same size (the write views of the buffers are reused)
      const paths = ["/pipeline/a", "/pipeline/a", "/pipeline/abcdefghij", "/pipeline/a", "/pipeline/abcdefghij", "/p"];
      const sized = await rawExchange(httpPort, paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`).join(""));
      assert.deepStrictEqual(
        sized.map((r) => [r.status, r.body]),
        paths.map((p) => p === "/p" ? [404, ""] : [200, `b GET ${p}`]),
      );
    } finally {
      await backend.stop();
    }
  },
);
