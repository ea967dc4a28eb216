/**
 * Slow clients against a real member (keepAliveTimeout 2s): a head trickled in byte by byte is cut once it has taken
 * longer than the head timeout, however steadily it comes; a body that stops mid-way (read in full, or streamed with
 * clientMaxBodySize -1, over HTTP/1.1 and over HTTP/2 of the node:tls listener) is given up after keepAliveTimeout of
 * silence, while a body that is slow but keeps coming is served; other clients are served all along.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";
import { makeTwoLeafDir } from "./lib/certs.ts";

const KEEP_ALIVE_MS = 2000;
/** The server's sweep runs every 500 ms: a deadline is enforced within this much after it passed. */
const SWEEP_SLACK_MS = 1500;
const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Connects, sends `parts` with `gapMs` between them (stopping once the server closed), then waits up to `waitMs` for
 * the server to close. Returns what the server sent and after how long it closed (-1: it did not).
 */
async function dribble(port: number, parts: string[], gapMs: number, waitMs: number): Promise<[string, number]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = Date.now();
  let got = "";
  let closedAt = -1;
  const reading = (async () => {
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) {
        closedAt = Date.now() - t0;
        return;
      }
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
  })();
  for (const p of parts) {
    if (closedAt >= 0) break;
    await conn.write(enc.encode(p)).catch(() => 0);
    await sleep(gapMs);
  }
  await Promise.race([reading, sleep(waitMs)]);
  try {
    conn.close();
  } catch { /* closed */ }
  await reading;
  return [got, closedAt];
}

memberTest(
  "gateway: slow clients — trickled heads and stalled bodies are cut, slow steady bodies served",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [plain, streamed, secure] = await freePorts(3);
    const dir = await makeTwoLeafDir("gw-slow-");
    const m = await startMember("gwslow", primaryArgs("gwslow", ports));
    procs.push(m);
    const aborted: string[] = [];
    const echo = await startBackend("echo", async (req) => {
      try {
        return new Response(`got ${(await req.text()).length}`);
      } catch (err) {
        aborted.push((err as Error).message);
        return new Response("aborted", { status: 500 });
      }
    });
    const b64 = async (f: string) => Buffer.from(await Deno.readTextFile(`${dir}/${f}`)).toString("base64");
    try {
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: relay\nflow: [{filter: proxy}]\nfilters:\n` +
          `- {name: proxy, kind: Proxy, pools: [{servers: [{url: "${echo.url}"}]}]}\n`,
      );
      const common = `keepAliveTimeout: ${
        KEEP_ALIVE_MS / 1000
      }s\nrules:\n- paths:\n  - {pathPrefix: /, backend: relay}\n`;
      await putObject(m.apiAddr, `kind: HTTPServer\nname: plain\nport: ${plain}\n${common}`);
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: streamed\nport: ${streamed}\nclientMaxBodySize: -1\n${common}`,
      );
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: secure\nport: ${secure}\nclientMaxBodySize: -1\nhttps: true\n` +
          `certs: {leaf: ${await b64("leaf.pem")}, other: ${await b64("other.pem")}}\n` +
          `keys: {leaf: ${await b64("leaf.key")}, other: ${await b64("other.key")}}\n${common}`,
      );
      await waitFor("the servers", async () => {
        const a = await get(`http://127.0.0.1:${plain}/`, { method: "POST", body: "ab" }).catch(() => [0, ""]);
        const b = await get(`http://127.0.0.1:${streamed}/`, { method: "POST", body: "ab" }).catch(() => [0, ""]);
        return a[1] === "got 2" && b[1] === "got 2";
      });

      // a head trickled in (a header line every 300 ms, for 6 s): cut about keepAliveTimeout after its first byte
      {
        const lines = ["GET / HTTP/1.1\r\nHost: a\r\n", ...Array.from({ length: 20 }, (_, i) => `X-${i}: v\r\n`)];
        const served = get(`http://127.0.0.1:${plain}/`, { method: "POST", body: "x" });
        const [got, closedAt] = await dribble(plain, lines, 300, 3000);
        assert.deepEqual(await served, [200, "got 1"], "others are served meanwhile");
        assert.equal(got, "", "no answer to a head that never completed");
        assert.ok(
          closedAt >= KEEP_ALIVE_MS - 100 && closedAt < KEEP_ALIVE_MS + SWEEP_SLACK_MS,
          `cut after ${closedAt} ms`,
        );
      }

      // a body that stops after 10 of 100 bytes: the connection is cut after keepAliveTimeout of silence, with or
      // without streaming; the upstream request of the streamed one is broken off
      for (const port of [plain, streamed]) {
        const [got, closedAt] = await dribble(
          port,
          ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789"],
          0,
          KEEP_ALIVE_MS + 3000,
        );
        assert.ok(!got.includes("got 100"), got);
        assert.ok(
          closedAt >= KEEP_ALIVE_MS - 100 && closedAt < KEEP_ALIVE_MS + SWEEP_SLACK_MS,
          `port ${port}: cut after ${closedAt} ms`,
        );
      }
      await waitFor("the backend saw the streamed request broken off", () => aborted.length === 1);

      // a body that is slow but keeps coming (a byte every 400 ms: 4 s in all, twice keepAliveTimeout) is served
      for (const port of [plain, streamed]) {
        const bytes = Array.from({ length: 10 }, (_, i) => String(i));
        const [got] = await dribble(
          port,
          ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n", ...bytes],
          400,
          1500,
        );
        assert.match(got, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\ngot 10$/, `port ${port}`);
      }

      // HTTP/2 of the node:tls listener: a streamed body that stops is given up after keepAliveTimeout (the stream
      // fails, the connection and its other streams go on)
      {
        const client = http2.connect(`https://localhost:${secure}`, { ca: await Deno.readTextFile(`${dir}/ca.pem`) });
        try {
          const t0 = Date.now();
          const stalled = client.request({ ":method": "POST", ":path": "/", "content-length": "100" });
          stalled.write("0123456789");
          const outcome = new Promise<string>((resolve) => {
            stalled.on("response", (h) => resolve(`status ${h[":status"]}`));
            stalled.on("error", (e) => resolve(`error ${e.message}`));
            stalled.on("close", () => resolve(`closed ${stalled.rstCode}`));
          });
          // meanwhile another stream on the same connection is served
          const other = client.request({ ":method": "POST", ":path": "/" });
          other.end("abc");
          let body = "";
          other.setEncoding("utf8");
          other.on("data", (d: string) => (body += d));
          await new Promise((r) => other.on("end", r));
          assert.equal(body, "got 3");
          const result = await Promise.race([outcome, sleep(10_000).then(() => "still open after 10 s")]);
          console.log(`HTTP/2 stalled body: ${result} after ${Date.now() - t0} ms`);
          const took = Date.now() - t0;
          assert.ok(!result.startsWith("status 200"), result);
          assert.ok(
            took >= KEEP_ALIVE_MS - 100 && took < KEEP_ALIVE_MS + SWEEP_SLACK_MS + 1000,
            `${result} after ${took} ms`,
          );
          stalled.close();
        } finally {
          client.close();
        }
      }
    } finally {
      await echo.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
