/**
 * The Proxy filter's upstream transport through one real member process and backends the test starts: `mtls` (the
 * client certificate presented to an HTTPS upstream that requires and verifies one; without `mtls` the handshake fails
 * and the client gets 503), HTTPS without `mtls` (the upstream's certificate is not verified: a self-signed one
 * serves), and connection pooling (sequential requests share one upstream connection; `maxIdleConnsPerHost` caps the
 * idle connections kept after a burst, `maxIdleConns` those of all upstreams together, the least recently used closed
 * first). Certificates are made with openssl by the test.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as https from "node:https";
import * as http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { type Member, memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";
import { makeCa, makeLeaf } from "./lib/certs.ts";

const b64 = (s: string) => Buffer.from(s).toString("base64");
const read = (dir: string, f: string) => Deno.readTextFileSync(`${dir}/${f}`);

async function startGateway(procs: Member[], name: string): Promise<Member> {
  const [ports] = await memberPorts(1);
  const m = await startMember(name, primaryArgs(name, ports));
  procs.push(m);
  return m;
}

const proxyPipeline = (name: string, url: string, extra = "") =>
  `name: ${name}\nkind: Pipeline\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n` +
  `  pools:\n  - servers: [{url: ${url}}]\n${extra}`;

function listen(server: http.Server | https.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

function close(server: http.Server | https.Server): Promise<void> {
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

memberTest(
  "proxy mtls: the client certificate reaches an upstream that requires one; without mtls 503",
  async (procs) => {
    const dir = await Deno.makeTempDir({ prefix: "gw-mtls-" });
    await makeCa(dir, "ca");
    await makeCa(dir, "client-ca");
    await makeLeaf(dir, "ca", "upstream", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
    await makeLeaf(dir, "client-ca", "gwclient", "gateway-client", "extendedKeyUsage=clientAuth");
    await makeCa(dir, "other-ca");
    await makeLeaf(dir, "other-ca", "stranger", "stranger", "extendedKeyUsage=clientAuth");
    // the upstream requires a certificate signed by client-ca and echoes its subject
    const subjects: string[] = [];
    const backend = https.createServer({
      cert: read(dir, "upstream.pem"),
      key: read(dir, "upstream.key"),
      ca: read(dir, "client-ca.pem"),
      requestCert: true,
      rejectUnauthorized: true,
    }, (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      const cn = String(peer?.subject?.CN ?? "");
      subjects.push(cn);
      res.end(`cn=${cn}`);
    });
    const bport = await listen(backend);
    try {
      const m = await startGateway(procs, "gwmtls");
      const [port] = await freePorts(1);
      const url = `https://127.0.0.1:${bport}`;
      const mtls = (leaf: string) =>
        `  mtls:\n    certBase64: ${b64(read(dir, `${leaf}.pem`))}\n    keyBase64: ${
          b64(read(dir, `${leaf}.key`))
        }\n    rootCertBase64: ${b64(read(dir, "ca.pem"))}\n`;
      await putObject(m.apiAddr, proxyPipeline("withmtls", url, mtls("gwclient")));
      await putObject(m.apiAddr, proxyPipeline("strangermtls", url, mtls("stranger")));
      await putObject(m.apiAddr, proxyPipeline("nomtls", url));
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: mtlsfront\nport: ${port}\nrules:\n- paths:\n` +
          `  - {pathPrefix: /mtls, backend: withmtls}\n  - {pathPrefix: /plain, backend: nomtls}\n` +
          `  - {pathPrefix: /stranger, backend: strangermtls}\n`,
      );
      const base = `http://127.0.0.1:${port}`;
      // without mtls the upstream's certificate is not verified (as Easegress: its CA is outside the system store here),
      // but no client certificate is sent and the upstream rejects the handshake: a transport error, 503 with no body
      await waitFor("front", async () => (await get(`${base}/plain`).catch(() => [0]))[0] === 503);
      assert.deepStrictEqual(await get(`${base}/plain`), [503, ""]);
      assert.equal(subjects.length, 0);
      // a client certificate the upstream's CA did not sign (the upstream verified against rootCertBase64): 503
      assert.deepStrictEqual(await get(`${base}/stranger`), [503, ""]);
      assert.equal(subjects.length, 0);
      assert.deepStrictEqual(await get(`${base}/mtls`), [200, "cn=gateway-client"]);
      assert.ok(subjects.length >= 1 && subjects.every((s) => s === "gateway-client"), subjects.join());
      // the route without mtls still fails after the other one's handshake (nothing of it is shared), and vice versa
      const seen = subjects.length;
      assert.deepStrictEqual(await get(`${base}/plain`), [503, ""]);
      assert.equal(subjects.length, seen);
      assert.deepStrictEqual(await get(`${base}/mtls`), [200, "cn=gateway-client"]);
    } finally {
      await close(backend);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

memberTest(
  "proxy pooling: sequential requests reuse one upstream connection; maxIdleConnsPerHost caps idle ones",
  async (procs) => {
    // the backend records every TCP connection (by the gateway's source port) and which ones closed
    const opened: number[] = [];
    const closed: number[] = [];
    let delayMs = 0;
    const backend = http.createServer((req, res) => {
      const p = (req.socket as Socket).remotePort!;
      setTimeout(() => res.end(`port=${p}`), delayMs);
    });
    backend.keepAliveTimeout = 60_000;
    backend.on("connection", (s: Socket) => {
      const p = s.remotePort!;
      opened.push(p);
      s.on("close", () => closed.push(p));
    });
    const bport = await listen(backend);
    try {
      const m = await startGateway(procs, "gwpool");
      const [port] = await freePorts(1);
      const url = `http://127.0.0.1:${bport}`;
      await putObject(m.apiAddr, proxyPipeline("pooled", url, "  maxIdleConnsPerHost: 2\n"));
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: poolfront\nport: ${port}\nrules:\n- paths:\n  - {pathPrefix: /, backend: pooled}\n`,
      );
      const base = `http://127.0.0.1:${port}`;
      await waitFor("front", async () => (await get(`${base}/`).catch(() => [0]))[0] === 200);

      // sequential: every request goes over the same upstream connection
      const before = opened.length;
      const ports = new Set<string>();
      for (let i = 0; i < 8; i++) {
        const [status, body] = await get(`${base}/`);
        assert.equal(status, 200);
        ports.add(body);
      }
      assert.equal(ports.size, 1, [...ports].join());
      assert.equal(opened.length, before, "no new connection for sequential requests");
      assert.equal(closed.length, 0);

      // a burst of 6 concurrent slow requests needs 6 connections; afterwards only 2 stay idle, 4 are closed
      delayMs = 300;
      const burst = await Promise.all(Array.from({ length: 6 }, () => get(`${base}/`)));
      assert.ok(burst.every(([s]) => s === 200));
      assert.equal(new Set(burst.map(([, b]) => b)).size, 6);
      assert.equal(opened.length, 6);
      await waitFor("4 connections closed by the gateway", () => closed.length === 4, 5000);
      // the next (overlapping) requests use the 2 kept connections: nothing new is opened, nothing else closes
      const after = await Promise.all(Array.from({ length: 2 }, () => get(`${base}/`)));
      assert.ok(after.every(([s]) => s === 200));
      const kept = opened.filter((p) => !closed.includes(p)).map((p) => `port=${p}`).sort();
      assert.deepStrictEqual(after.map(([, b]) => b).sort(), kept);
      assert.equal(opened.length, 6);
      assert.equal(closed.length, 4);
    } finally {
      await close(backend);
    }
  },
);

memberTest(
  "proxy https without mtls: the upstream's self-signed certificate is not verified; the connection is reused",
  async (procs) => {
    const dir = await Deno.makeTempDir({ prefix: "gw-insecure-" });
    // a self-signed certificate for another name than the address the Proxy dials
    await makeCa(dir, "selfsigned");
    let connections = 0;
    const backend = https.createServer(
      { cert: read(dir, "selfsigned.pem"), key: read(dir, "selfsigned.key") },
      (req, res) => res.end(`secure ${req.method} ${req.url}`),
    );
    backend.keepAliveTimeout = 60_000;
    backend.on("secureConnection", () => connections++);
    const bport = await listen(backend);
    try {
      const m = await startGateway(procs, "gwinsecure");
      const [port] = await freePorts(1);
      await putObject(m.apiAddr, proxyPipeline("insecure", `https://127.0.0.1:${bport}`));
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: insecurefront\nport: ${port}\nrules:\n- paths:\n  - {pathPrefix: /, backend: insecure}\n`,
      );
      const base = `http://127.0.0.1:${port}`;
      await waitFor("front", async () => (await get(`${base}/x`).catch(() => [0]))[0] === 200);
      const before = connections;
      for (let i = 0; i < 3; i++) assert.deepStrictEqual(await get(`${base}/a?i=${i}`), [200, `secure GET /a?i=${i}`]);
      const post = await fetch(`${base}/p`, { method: "POST", body: "x".repeat(100_000) });
      assert.deepStrictEqual([post.status, await post.text()], [200, "secure POST /p"]);
      assert.equal(connections, before, "sequential requests reuse the upstream TLS connection");
    } finally {
      await close(backend);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

memberTest(
  "proxy pooling: maxIdleConns caps the idle connections of all upstreams together, least recently used closed first",
  async (procs) => {
    // three backends record their connections (by the gateway's source port) and which ones closed
    const opened = new Map<string, number[]>();
    const closedPorts = new Set<number>();
    let delayMs = 0;
    const backends: http.Server[] = [];
    const bports: number[] = [];
    for (const name of ["a", "b", "c"]) {
      opened.set(name, []);
      const b = http.createServer((req, res) => {
        const p = (req.socket as Socket).remotePort!;
        setTimeout(() => res.end(`${name}:${p}`), delayMs);
      });
      b.keepAliveTimeout = 60_000;
      b.on("connection", (s: Socket) => {
        const p = s.remotePort!;
        opened.get(name)!.push(p);
        s.on("close", () => closedPorts.add(p));
      });
      backends.push(b);
      bports.push(await listen(b));
    }
    const live = (name?: string) =>
      [...opened].filter(([n]) => name === undefined || n === name).flatMap(([, ps]) => ps)
        .filter((p) => !closedPorts.has(p));
    const liveTotal = () => live().length;
    try {
      const m = await startGateway(procs, "gwidle");
      const [port] = await freePorts(1);
      const pipeline =
        `name: idlecap\nkind: Pipeline\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n` +
        `  maxIdleConns: 2\n  maxIdleConnsPerHost: 2\n  pools:\n` +
        `  - servers: [{url: "http://127.0.0.1:${bports[1]}"}]\n    filter: {headers: {X-B: {exact: "b"}}}\n` +
        `  - servers: [{url: "http://127.0.0.1:${bports[2]}"}]\n    filter: {headers: {X-B: {exact: "c"}}}\n` +
        `  - servers: [{url: "http://127.0.0.1:${bports[0]}"}]\n`;
      await putObject(m.apiAddr, pipeline);
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: idlefront\nport: ${port}\nrules:\n- paths:\n  - {pathPrefix: /, backend: idlecap}\n`,
      );
      const base = `http://127.0.0.1:${port}`;
      const to = (name: string) => get(`${base}/`, name === "a" ? undefined : { headers: { "X-B": name } });
      await waitFor("front", async () => (await to("a").catch(() => [0]))[0] === 200);

      // a burst of 3 slow requests to each backend in turn: 3 connections each, then at most 2 idle in all
      delayMs = 300;
      for (const name of ["a", "b", "c"]) {
        const burst = await Promise.all([to(name), to(name), to(name)]);
        assert.ok(burst.every(([s, b]) => s === 200 && b.startsWith(`${name}:`)), JSON.stringify(burst));
        assert.equal(new Set(burst.map(([, b]) => b)).size, 3);
        await waitFor(`2 idle connections in all after the burst to ${name}`, () => liveTotal() === 2, 5000);
      }
      // the ones kept are the most recently used: both of c's; a's and b's were closed
      assert.equal(live("c").length, 2);
      assert.equal(opened.get("c")!.length, 3);
      // overlapping requests to c reuse the 2 kept connections: nothing opens, nothing closes
      const reuse = await Promise.all([to("c"), to("c")]);
      assert.deepStrictEqual(reuse.map(([, b]) => b).sort(), live("c").map((p) => `c:${p}`).sort());
      assert.equal(opened.get("c")!.length, 3);
      assert.equal(liveTotal(), 2);
      // a needs a new connection; kept idle, it closes the least recently used of c's: still 2 in all, one each
      delayMs = 0;
      const aBefore = opened.get("a")!.length;
      const [sa, ba] = await to("a");
      assert.equal(sa, 200);
      assert.equal(opened.get("a")!.length, aBefore + 1);
      assert.equal(ba, `a:${opened.get("a")!.at(-1)}`);
      await waitFor("one of c's connections closed", () => live("c").length === 1, 5000);
      assert.deepStrictEqual(live("a"), [opened.get("a")!.at(-1)]);
      assert.equal(liveTotal(), 2);
      // both kept connections are reused
      const keptC = live("c")[0];
      assert.deepStrictEqual(await to("c"), [200, `c:${keptC}`]);
      assert.deepStrictEqual(await to("a"), [200, ba]);
      assert.equal(opened.get("c")!.length, 3);
      assert.equal(opened.get("a")!.length, aBefore + 1);
      assert.equal(liveTotal(), 2);
    } finally {
      for (const b of backends) await close(b);
    }
  },
);
