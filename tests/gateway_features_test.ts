/**
 * Gateway features through one real member process and backends the test starts: HTTPS (a certificate generated with
 * openssl, HTTP/2 by ALPN), sticky sessions, the health check taking a dead backend out and back in, retry, the
 * circuit breaker, slow clients, an upstream closing mid-response, a live rules change that keeps open connections,
 * and a port that cannot be bound (state failed).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type Member, memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, proxyPipeline as pipeline, putObject, rawExchange, servers, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

async function startGateway(procs: Member[], name: string): Promise<Member> {
  const [ports] = await memberPorts(1);
  const m = await startMember(name, primaryArgs(name, ports));
  procs.push(m);
  return m;
}

async function serverOn(m: Member, name: string, port: number, paths: string, extra = ""): Promise<string> {
  await putObject(m.apiAddr, `kind: HTTPServer\nname: ${name}\nport: ${port}\n${extra}rules:\n- paths:\n${paths}`);
  return `http://127.0.0.1:${port}`;
}

memberTest("gateway: sticky sessions, health check out and back in, retry, circuit breaker", async (procs) => {
  const m = await startGateway(procs, "gwf1");
  const [port] = await freePorts(1);
  const bs = [await startBackend("s1"), await startBackend("s2"), await startBackend("s3")];
  const failing = await startBackend("bad", () => new Response("boom", { status: 500 }));
  let flaky = 0;
  const flakyBackend = await startBackend(
    "flaky",
    () => new Response("flaky", { status: flaky++ % 2 === 0 ? 503 : 200 }),
  );
  try {
    await putObject(
      m.apiAddr,
      pipeline("sticky", `${servers(bs)}\nloadBalance: {policy: roundRobin, stickySession: {mode: DurationBased}}`),
    );
    await putObject(
      m.apiAddr,
      pipeline("health", `${servers(bs)}\nhealthCheck: {interval: 300ms, timeout: 500ms, fails: 1, passes: 1}`),
    );
    await putObject(
      m.apiAddr,
      pipeline(
        "retry",
        `${servers([flakyBackend])}\nretryPolicy: r`,
        "resilience:\n- {name: r, kind: Retry, maxAttempts: 3, waitDuration: 10ms}",
      ),
    );
    await putObject(
      m.apiAddr,
      pipeline(
        "breaker",
        `${servers([failing])}\ncircuitBreakerPolicy: cb`,
        "resilience:\n- {name: cb, kind: CircuitBreaker, slidingWindowSize: 4, minimumNumberOfCalls: 4, " +
          "failureRateThreshold: 50, waitDurationInOpenState: 60s}",
      ),
    );
    const base = await serverOn(
      m,
      "features",
      port,
      ["sticky", "health", "retry", "breaker"].map((p) => `  - {pathPrefix: /${p}, backend: ${p}}`).join("\n"),
    );
    await waitFor("all routes", async () => {
      // (not /breaker: its calls count)
      for (const p of ["sticky", "health", "retry"]) {
        if ((await get(`${base}/${p}`).catch(() => [0]))[0] !== 200) return false;
      }
      return true;
    });

    // DurationBased: the first answer sets EG_SESSION; with it, every request goes to the same server
    const first = await fetch(`${base}/sticky`);
    const body = await first.text();
    const cookie = first.headers.get("set-cookie") ?? "";
    assert.match(cookie, /^EG_SESSION=[0-9a-f]{80}; Expires=/);
    for (let i = 0; i < 6; i++) {
      const [, b] = await get(`${base}/sticky`, { headers: { cookie: cookie.split(";")[0] } });
      assert.equal(b.split(" ")[0], body.split(" ")[0]);
    }

    // health check: s2 dies -> after a probe it gets no traffic (no 503s); it comes back -> it gets traffic again
    await bs[1].stop();
    await new Promise((r) => setTimeout(r, 1200));
    for (let i = 0; i < 9; i++) {
      const [status, b] = await get(`${base}/health`);
      assert.equal(status, 200);
      assert.notEqual(b.split(" ")[0], "s2");
    }
    bs[1] = await startBackend("s2", undefined, bs[1].port);
    await waitFor("s2 back in", async () => {
      for (let i = 0; i < 6; i++) if ((await get(`${base}/health`))[1].startsWith("s2 ")) return true;
      return false;
    }, 10000);

    // retry: every other upstream answer is 503; with 3 attempts the client always sees 200
    for (let i = 0; i < 4; i++) assert.deepStrictEqual(await get(`${base}/retry`), [200, "flaky"]);

    // circuit breaker: 4 failures open it; then 503 without reaching the backend
    for (let i = 0; i < 4; i++) assert.equal((await get(`${base}/breaker`))[0], 500);
    const hits = failing.hits;
    assert.deepStrictEqual(await get(`${base}/breaker`), [503, ""]);
    assert.equal(failing.hits, hits);
  } finally {
    for (const b of [...bs, failing, flakyBackend]) await b.stop().catch(() => {});
  }
});

memberTest("gateway: HTTPS with a generated certificate (HTTP/2 by ALPN)", async (procs) => {
  const dir = await Deno.makeTempDir({ prefix: "gw-tls-" });
  // a CA and a server certificate it signs (rustls refuses a self-signed CA as the server's own certificate)
  await Deno.writeTextFile(`${dir}/san.ext`, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  for (
    const args of [
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=gw-test-ca",
      ],
      ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"],
      [
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
      ],
    ]
  ) {
    const r = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" }).output();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  }
  const ca = await Deno.readTextFile(`${dir}/ca.pem`);
  const cert = await Deno.readTextFile(`${dir}/cert.pem`);
  const key = await Deno.readTextFile(`${dir}/key.pem`);
  const m = await startGateway(procs, "gwf2");
  const [port] = await freePorts(1);
  const backend = await startBackend("tls-backend");
  try {
    await putObject(m.apiAddr, pipeline("p", servers([backend])));
    const b64 = (s: string) => Buffer.from(s).toString("base64");
    await serverOn(
      m,
      "secure",
      port,
      "  - {pathPrefix: /, backend: p}",
      `https: true\ncertBase64: ${b64(cert)}\nkeyBase64: ${b64(key)}\n`,
    );
    const client = Deno.createHttpClient({ caCerts: [ca] });
    try {
      await waitFor("https", async () => {
        try {
          const r = await fetch(`https://localhost:${port}/x`, { client });
          return (await r.text()) === "tls-backend GET /x";
        } catch {
          return false;
        }
      });
      const curl = await new Deno.Command("curl", {
        args: [
          "-s",
          "--http2",
          "--cacert",
          `${dir}/cert.pem`,
          "-w",
          " %{http_version}",
          `https://localhost:${port}/h2`,
        ],
        stdout: "piped",
      }).output();
      assert.equal(new TextDecoder().decode(curl.stdout), "tls-backend GET /h2 2");
    } finally {
      client.close();
    }
  } finally {
    await backend.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

memberTest("gateway: slow clients, upstream closing mid-response, live rules change, port in use", async (procs) => {
  const m = await startGateway(procs, "gwf3");
  const [port, busyPort, brokenPort] = await freePorts(3);
  const backend = await startBackend("live");
  // an upstream that sends a head promising 100 bytes, then 10, then closes
  const broken = Deno.listen({ hostname: "127.0.0.1", port: brokenPort });
  (async () => {
    for await (const c of broken) {
      await c.read(new Uint8Array(4096)).catch(() => null);
      await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")).catch(
        () => {},
      );
      c.close();
    }
  })();
  const holder = Deno.listen({ hostname: "0.0.0.0", port: busyPort });
  try {
    await putObject(m.apiAddr, pipeline("p", servers([backend])));
    await putObject(m.apiAddr, pipeline("broken", `servers: [{url: http://127.0.0.1:${brokenPort}}]`));
    const base = await serverOn(
      m,
      "live",
      port,
      "  - {path: /a, backend: p}\n  - {path: /broken, backend: broken}",
      "keepAliveTimeout: 2s\n",
    );
    await waitFor("live", async () => (await get(`${base}/a`).catch(() => [0]))[0] === 200);

    // upstream closes mid-response: 500, and the gateway keeps serving
    assert.deepStrictEqual(await get(`${base}/broken`), [500, ""]);
    assert.equal((await get(`${base}/a`))[0], 200);

    // a slow client (head never completed) is cut after keepAliveTimeout; others are served meanwhile
    const t0 = Date.now();
    const slow = rawExchange(port, "GET /a HTTP/1.1\r\nHost: x\r\n", 6000);
    assert.equal((await get(`${base}/a`))[0], 200);
    assert.deepStrictEqual(await slow, []);
    const waited = Date.now() - t0;
    assert(waited >= 1500 && waited < 5500, `slow client cut after ${waited} ms`);

    // a live change (a new path) keeps an open keep-alive connection working
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const ask = async (path: string) => {
      await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf);
      return new TextDecoder().decode(buf.subarray(0, n ?? 0)).slice(9, 12);
    };
    try {
      assert.equal(await ask("/a"), "200");
      assert.equal(await ask("/b"), "404");
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: live\nport: ${port}\nkeepAliveTimeout: 2s\nrules:\n- paths:\n` +
          "  - {path: /a, backend: p}\n  - {path: /b, backend: p}\n",
        true,
      );
      await waitFor("new path live", async () => (await ask("/b")) === "200", 5000);
    } finally {
      conn.close();
    }

    // a port that cannot be bound: state failed with the error, in the member's status
    await serverOn(m, "busy", busyPort, "  - {path: /, backend: p}");
    await waitFor("failed state published", async () => {
      const st = await (await fetch(`http://${m.apiAddr}/apis/v2/status/objects/busy`)).json();
      const s = st["eg-traffic-default/busy/gwf3"]?.status;
      return s?.state === "failed" && /in use/i.test(s.error ?? "");
    }, 15000);
  } finally {
    holder.close();
    broken.close();
    await backend.stop();
  }
});

memberTest(
  "gateway proxy: inline backendPool, candidate pools, mirror, compression, memory cache, timeout 408, upstream Host, access log",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [port] = await freePorts(1);
    const logDir = await Deno.makeTempDir({ prefix: "gw-log-" });
    // (with a log dir the member logs there, not to stdout: wait for its API instead of its log line)
    const m = await startMember("gwp", primaryArgs("gwp", ports, ["--log-dir", logDir]), { wait: false });
    procs.push(m);
    await waitFor(
      "api",
      async () => (await get(`http://${m.apiAddr}/apis/v2/healthz`).catch(() => [0]))[0] === 200,
      30000,
    );
    const main = await startBackend("main", (req) => new Response(`main host=${req.headers.get("host")}`));
    const canary = await startBackend("canary");
    const mirrored: string[] = [];
    const mirror = await startBackend("mirror", (req) => {
      mirrored.push(new URL(req.url).pathname);
      return new Response("ignored");
    });
    const big = await startBackend(
      "big",
      () => new Response("z".repeat(5000), { headers: { "cache-control": "public" } }),
    );
    const slow = await startBackend("slow", async () => {
      await new Promise((r) => setTimeout(r, 1500));
      return new Response("late");
    });
    try {
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: routing\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n  pools:\n` +
          `  - servers: [{url: ${main.url}}]\n` +
          `  - servers: [{url: ${canary.url}}]\n    filter: {headers: {X-Canary: {exact: "1"}}}\n` +
          `  mirrorPool:\n    servers: [{url: ${mirror.url}}]\n    filter: {headers: {X-Mirror: {exact: "1"}}}\n`,
      );
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: hostname\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n  pools:\n` +
          `  - servers: [{url: "http://localhost:${main.port}"}]\n`,
      );
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: gzip\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n` +
          `  compression: {minLength: 1000}\n  pools:\n  - servers: [{url: ${big.url}}]\n` +
          `    memoryCache: {expiration: 10s, maxEntryBytes: 100000, codes: [200], methods: [GET]}\n`,
      );
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: slow\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n  pools:\n` +
          `  - servers: [{url: ${slow.url}}]\n    timeout: 300ms\n`,
      );
      const base = await serverOn(
        m,
        "proxying",
        port,
        ["routing", "hostname", "gzip", "slow"].map((p) => `  - {pathPrefix: /${p}, backend: ${p}}`).join("\n") +
          `\n  - {pathPrefix: /inline, backendPool: {servers: [{url: ${canary.url}}], loadBalance: {policy: roundRobin}}}`,
      );
      await waitFor("proxying", async () => (await get(`${base}/routing`).catch(() => [0]))[0] === 200);

      // an inline backendPool runs as a generated pipeline
      assert.deepStrictEqual(await get(`${base}/inline/x`), [200, "canary GET /inline/x"]);
      // an IP server keeps the client's Host; a hostname server gets its own
      // (fetch cannot set Host: a raw request)
      const viaIp = await rawExchange(port, "GET /routing HTTP/1.1\r\nHost: client.example\r\n\r\n");
      assert.equal(viaIp[0]?.body, "main host=client.example");
      assert.deepStrictEqual(await get(`${base}/hostname`), [200, `main host=localhost:${main.port}`]);
      // the candidate pool takes requests its filter matches
      assert.deepStrictEqual(await get(`${base}/routing/c`, { headers: { "x-canary": "1" } }), [
        200,
        "canary GET /routing/c",
      ]);
      // the mirror gets a copy; the client gets the main pool's answer
      assert.deepStrictEqual(await get(`${base}/routing/m`, { headers: { "x-mirror": "1" } }), [
        200,
        "main host=127.0.0.1:" + port,
      ]);
      await waitFor("mirrored", () => mirrored.includes("/routing/m"), 5000);

      // compression: gzip with Vary; the memory cache answers the second request without the upstream
      // (the cache key has the Host: the same one fetch sends)
      const raw = await rawExchange(
        port,
        `GET /gzip HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept-Encoding: gzip\r\n\r\n`,
      );
      assert.equal(raw[0].status, 200);
      assert.match(raw[0].head, /Content-Encoding: gzip/i);
      assert.match(raw[0].head, /Vary: Content-Encoding/i);
      const hits = big.hits;
      assert.equal((await get(`${base}/gzip`))[1], "z".repeat(5000)); // fetch gunzips
      assert.equal(big.hits, hits);

      // a pool timeout: 408
      const t0 = Date.now();
      assert.deepStrictEqual(await get(`${base}/slow`), [408, ""]);
      assert(Date.now() - t0 < 1400, "timed out late");

      // the access log (batched, flushed within a second)
      await waitFor("access log", async () => {
        try {
          const log = await Deno.readTextFile(`${logDir}/filter_http_access.log`);
          return / GET \/slow HTTP\/1\.1 408\] \[/.test(log);
        } catch {
          return false;
        }
      }, 5000);
    } finally {
      for (const b of [main, canary, mirror, big, slow]) await b.stop();
      await Deno.remove(logDir, { recursive: true }).catch(() => {});
    }
  },
);
