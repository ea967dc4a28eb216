/**
 * A client that goes away before the upstream answers (issue 12, the reference's Proxy error mapping: inbound context
 * cancelled → 499 `clientError`): against a real member and a real slow backend, a raw client that sends a GET and
 * closes after 200 ms is recorded as 499 in the access log and the upstream request is cancelled (its connection
 * closed) well before the backend would have answered; the member keeps serving. A request pipelined behind a slow
 * one on the same connection is still answered (the client-gone probe keeps the bytes it read).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject, rawExchange, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";
import { makeTwoLeafDir } from "./lib/certs.ts";

const SLOW_MS = 1500;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

memberTest("gateway: a client gone before the upstream answered is 499 and cancels the upstream", async (procs) => {
  const [ports] = await memberPorts(1);
  const [port, tlsPort, h2Port] = await freePorts(3);
  const dir = await makeTwoLeafDir("gw-gone-tls-");
  const logDir = await Deno.makeTempDir({ prefix: "gw-gone-" });
  // (with a log dir the member logs there, not to stdout: wait for its API instead of its log line)
  const m = await startMember("gwgone", primaryArgs("gwgone", ports, ["--log-dir", logDir]), { wait: false });
  procs.push(m);
  await waitFor(
    "api",
    async () => (await get(`http://${m.apiAddr}/apis/v2/healthz`).catch(() => [0]))[0] === 200,
    30000,
  );
  /** per path: how long after it arrived the backend saw the request aborted (-1: answered) */
  const outcome = new Map<string, number>();
  const backend = await startBackend("slow", async (req) => {
    const path = new URL(req.url).pathname;
    if (!path.startsWith("/slow")) return new Response(`fast ${path}`);
    const t0 = Date.now();
    const aborted = new Promise<boolean>((r) => req.signal.addEventListener("abort", () => r(true), { once: true }));
    const done = await Promise.race([aborted, sleep(SLOW_MS).then(() => false)]);
    outcome.set(path, done ? Date.now() - t0 : -1);
    return new Response(`slow ${path}`);
  });
  try {
    await putObject(
      m.apiAddr,
      `kind: Pipeline\nname: relay\nflow: [{filter: proxy}]\nfilters:\n` +
        `- {name: proxy, kind: Proxy, pools: [{servers: [{url: "${backend.url}"}]}]}\n`,
    );
    await putObject(
      m.apiAddr,
      `kind: HTTPServer\nname: gone\nport: ${port}\nrules:\n- paths:\n  - {pathPrefix: /, backend: relay}\n`,
    );
    const b64 = (f: string) => Buffer.from(Deno.readTextFileSync(`${dir}/${f}`)).toString("base64");
    await putObject(
      m.apiAddr,
      `kind: HTTPServer\nname: gonetls\nport: ${tlsPort}\nhttps: true\ncertBase64: ${b64("leaf.pem")}\n` +
        `keyBase64: ${b64("leaf.key")}\nrules:\n- paths:\n  - {pathPrefix: /, backend: relay}\n`,
    );
    await waitFor("the server", async () => (await get(`http://127.0.0.1:${port}/x`).catch(() => [0]))[0] === 200);

    // a raw client sends a GET for a slow answer and closes after 200 ms
    const t0 = Date.now();
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode("GET /slow/gone HTTP/1.1\r\nHost: a\r\n\r\n"));
    await sleep(200);
    conn.close();
    // the backend sees its request cancelled well before it would have answered
    await waitFor("the upstream cancelled", () => outcome.has("/slow/gone"), 5000);
    const abortedAfter = outcome.get("/slow/gone")!;
    assert.ok(abortedAfter >= 0, "the backend answered: the upstream request was not cancelled");
    assert.ok(abortedAfter < SLOW_MS - 500, `upstream cancelled only after ${abortedAfter} ms`);
    assert.ok(Date.now() - t0 < SLOW_MS, "cancelled late");

    // the access log records 499 (batched, flushed within a second)
    let line = "";
    await waitFor("access log 499", async () => {
      const log = await Deno.readTextFile(`${logDir}/filter_http_access.log`).catch(() => "");
      line = log.split("\n").find((l) => l.includes(" GET /slow/gone HTTP/1.1 ")) ?? "";
      return line !== "";
    }, 5000);
    assert.match(line, / GET \/slow\/gone HTTP\/1\.1 499\] \[/, line);
    const ms = Number(/\] \[(\d+)ms /.exec(line)?.[1] ?? /(\d+)ms/.exec(line)?.[1]);
    assert.ok(ms < SLOW_MS - 500, `logged after ${ms} ms: ${line}`);

    // the member keeps serving
    assert.deepEqual(await get(`http://127.0.0.1:${port}/after`), [200, "fast /after"]);

    // the same over HTTPS (Deno.serve: the request's abort signal)
    const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${dir}/ca.pem`)] });
    await waitFor("https server", async () => {
      try {
        const r = await fetch(`https://localhost:${tlsPort}/tls-up`, { client });
        return r.status === 200 && (await r.text()) === "fast /tls-up";
      } catch {
        return false;
      }
    });
    const tls = await Deno.connectTls({
      hostname: "localhost",
      port: tlsPort,
      caCerts: [Deno.readTextFileSync(`${dir}/ca.pem`)],
    });
    await tls.write(new TextEncoder().encode("GET /slow/tls HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    await sleep(200);
    tls.close();
    await waitFor("the upstream cancelled (https)", () => outcome.has("/slow/tls"), 5000);
    const tlsAbortedAfter = outcome.get("/slow/tls")!;
    assert.ok(tlsAbortedAfter >= 0 && tlsAbortedAfter < SLOW_MS - 500, `https: cancelled after ${tlsAbortedAfter} ms`);
    await waitFor("access log 499 (https)", async () => {
      const log = await Deno.readTextFile(`${logDir}/filter_http_access.log`).catch(() => "");
      return / GET \/slow\/tls HTTP\/1\.1 499\] \[/.test(log);
    }, 5000);
    const after = await fetch(`https://localhost:${tlsPort}/tls-after`, { client });
    assert.deepEqual([after.status, await after.text()], [200, "fast /tls-after"]);
    client.close();

    // HTTP/2 through the node:tls listener (two certificates: SNI), our own HTTP/2 server: a stream the client resets
    await putObject(
      m.apiAddr,
      `kind: HTTPServer\nname: goneh2\nport: ${h2Port}\nhttps: true\ncertBase64: ${b64("leaf.pem")}\n` +
        `keyBase64: ${b64("leaf.key")}\ncerts: {b: ${b64("leaf.pem")}}\nkeys: {b: ${b64("leaf.key")}}\n` +
        `rules:\n- paths:\n  - {pathPrefix: /, backend: relay}\n`,
    );
    const h2get = (session: http2.ClientHttp2Session, path: string) =>
      new Promise<number>((resolve, reject) => {
        const r = session.request({ ":path": path, ":method": "GET" });
        r.on("response", (h) => resolve(Number(h[":status"])));
        r.on("error", reject);
        r.resume();
      });
    let session: http2.ClientHttp2Session | null = null;
    await waitFor("https server (node:tls, HTTP/2)", async () => {
      session?.destroy();
      session = http2.connect(`https://localhost:${h2Port}`, { ca: Deno.readTextFileSync(`${dir}/ca.pem`) });
      session.on("error", () => {});
      return (await h2get(session, "/h2-up").catch(() => 0)) === 200;
    });
    const h2 = session!;
    const slow = h2.request({ ":path": "/slow/h2", ":method": "GET" });
    slow.on("error", () => {});
    await sleep(200);
    slow.close(http2.constants.NGHTTP2_CANCEL);
    await waitFor("the upstream cancelled (HTTP/2)", () => outcome.has("/slow/h2"), 5000);
    const h2AbortedAfter = outcome.get("/slow/h2")!;
    assert.ok(h2AbortedAfter >= 0 && h2AbortedAfter < SLOW_MS - 500, `HTTP/2: cancelled after ${h2AbortedAfter} ms`);
    await waitFor("access log 499 (HTTP/2)", async () => {
      const log = await Deno.readTextFile(`${logDir}/filter_http_access.log`).catch(() => "");
      return / GET \/slow\/h2 HTTP\/2\.0 499\] \[/.test(log);
    }, 5000);
    assert.equal(await h2get(h2, "/h2-after"), 200, "the connection serves the next stream");
    h2.close();

    // two requests pipelined on one connection while the first is slow: both answered, in order
    const both = await rawExchange(
      port,
      "GET /slow/first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n",
      SLOW_MS + 1500,
    );
    assert.deepEqual(both.map((r) => [r.status, r.body]), [[200, "slow /slow/first"], [200, "fast /second"]]);
    assert.equal(outcome.get("/slow/first"), -1, "the pipelining client's slow request was answered, not cancelled");

    // a slow request sent alone on a connection kept open is answered too (a probe that reads nothing is harmless),
    // and the connection serves the next request
    const kept = await rawExchange(port, "GET /slow/kept HTTP/1.1\r\nHost: a\r\n\r\n", SLOW_MS + 1500);
    assert.deepEqual(kept.map((r) => [r.status, r.body]), [[200, "slow /slow/kept"]]);
  } finally {
    await backend.stop();
    await Deno.remove(logDir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
