/**
 * HTTPServer TLS beyond one certificate, through one real member process and curl: two certificates on one port
 * chosen by the client's server name (exact, wildcard, the first as default), and caCertBase64 (a client without a
 * certificate the CA signed fails at the handshake; one with such a certificate gets its answer), and a port that cannot
 * be bound (state failed), and WebSocketProxy over HTTPS with one certificate (wss:// echo, text, binary, subprotocol,
 * close code, from a separate Deno client). Certificates are made with openssl by the test.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { putObject, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";
import { makeCa, makeLeaf } from "./lib/certs.ts";
import { certNames, pickCertificate, TLS_HANDSHAKE_TIMEOUT_MS } from "../server/gateway/httpserver/tls.ts";

interface CurlResult {
  code: number;
  body: string;
  /** the server certificate's subject as curl printed it ("" when the handshake failed before) */
  subject: string;
}

async function curl(dir: string, host: string, port: number, path: string, extra: string[] = []): Promise<CurlResult> {
  const r = await new Deno.Command("curl", {
    args: [
      ...["-sv", "--http2", "--max-time", "10", "--cacert", `${dir}/ca.pem`],
      ...["--resolve", `${host}:${port}:127.0.0.1`, "-w", " %{http_version}", ...extra],
      `https://${host}:${port}${path}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  return {
    code: r.code,
    body: new TextDecoder().decode(r.stdout),
    subject: /subject: (.*)/.exec(err)?.[1].trim() ?? "",
  };
}

const b64 = (s: string) => Buffer.from(s).toString("base64");
const read = (dir: string, f: string) => Deno.readTextFileSync(`${dir}/${f}`);

Deno.test("tls: a server name picks the certificate naming it exactly, then a wildcard, else the first", () => {
  const names = [["a.example"], ["*.b.example", "b.example"], ["x.b.example"]];
  assert.equal(pickCertificate(names, "a.example"), 0);
  assert.equal(pickCertificate(names, "B.Example"), 1);
  assert.equal(pickCertificate(names, "x.b.example"), 2); // exact beats the wildcard of an earlier certificate
  assert.equal(pickCertificate(names, "y.b.example"), 1);
  assert.equal(pickCertificate(names, "z.y.b.example"), 0); // a wildcard covers one label
  assert.equal(pickCertificate(names, "other.example"), 0);
  assert.equal(pickCertificate(names, ""), 0); // no SNI (an IP address)
});

memberTest(
  "gateway: two certificates on one port chosen by SNI; caCertBase64 requires a CA-signed client certificate",
  async (procs) => {
    const dir = await Deno.makeTempDir({ prefix: "gw-sni-" });
    const backend = await startBackend("sni-backend");
    try {
      await makeCa(dir, "ca");
      await makeCa(dir, "other-ca");
      await makeLeaf(dir, "ca", "a", "a.example", "subjectAltName=DNS:a.example");
      await makeLeaf(dir, "ca", "b", "b.example", "subjectAltName=DNS:b.example,DNS:*.b.example");
      await makeLeaf(dir, "ca", "client", "client", "extendedKeyUsage=clientAuth");
      await makeLeaf(dir, "other-ca", "stranger", "stranger", "extendedKeyUsage=clientAuth");
      assert.deepEqual(certNames(read(dir, "b.pem")), ["b.example", "*.b.example"]);

      const [apiPorts] = await memberPorts(1);
      const m = await startMember("gwsni", primaryArgs("gwsni", apiPorts));
      procs.push(m);
      const [sniPort, mtlsPort, busyPort] = await freePorts(3);
      await putObject(
        m.apiAddr,
        `name: p\nkind: Pipeline\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n  pools:\n  - servers: [{url: ${backend.url}}]\n`,
      );
      const rules = "rules:\n- paths:\n  - {pathPrefix: /, backend: p}\n";
      // certBase64 (a.example) is the first certificate, the certs map adds b.example
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: sni\nport: ${sniPort}\nhttps: true\nclientMaxBodySize: 16\n` +
          `certBase64: ${b64(read(dir, "a.pem"))}\nkeyBase64: ${b64(read(dir, "a.key"))}\n` +
          `certs: {b: ${b64(read(dir, "b.pem"))}}\nkeys: {b: ${b64(read(dir, "b.key"))}}\n${rules}`,
      );
      await waitFor("the SNI server", async () => (await curl(dir, "a.example", sniPort, "/")).code === 0);
      // a client that never sends its ClientHello is closed once the handshake timeout passed (checked at the end)
      const silent = await Deno.connect({ hostname: "127.0.0.1", port: sniPort });
      const silentOpened = Date.now();
      const silentClosed = silent.read(new Uint8Array(1)).then(() => Date.now(), () => Date.now());

      const a = await curl(dir, "a.example", sniPort, "/a");
      assert.equal(a.code, 0);
      assert.equal(a.subject, "CN=a.example");
      assert.equal(a.body, "sni-backend GET /a 2"); // HTTP/2 by ALPN
      const b = await curl(dir, "b.example", sniPort, "/b");
      assert.equal(b.code, 0);
      assert.equal(b.subject, "CN=b.example");
      assert.equal(b.body, "sni-backend GET /b 2");
      // a body over HTTP/2, and HTTP/1.1 (through the gateway's own HTTP/1.1 loop) on the same port
      assert.equal(
        (await curl(dir, "b.example", sniPort, "/post", ["--data-binary", "hello"])).body,
        "sni-backend POST /post hello 2",
      );
      const big = ["--data-binary", "x".repeat(17), "-o", "/dev/null", "-w", "%{http_code} %{http_version}"];
      assert.equal((await curl(dir, "b.example", sniPort, "/big", big)).body, "413 2");
      const h1 = await curl(dir, "b.example", sniPort, "/h1", ["--http1.1", "--data-binary", "one"]);
      assert.equal(h1.subject, "CN=b.example");
      assert.equal(h1.body, "sni-backend POST /h1 one 1.1");
      const wild = await curl(dir, "x.b.example", sniPort, "/x");
      assert.equal(wild.subject, "CN=b.example");
      assert.equal(wild.body, "sni-backend GET /x 2");
      // a name no certificate has gets the first one (curl then refuses it: the name does not match)
      const other = await curl(dir, "c.example", sniPort, "/c");
      assert.equal(other.subject, "CN=a.example");
      assert.notEqual(other.code, 0);

      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: mtls\nport: ${mtlsPort}\nhttps: true\n` +
          `certBase64: ${b64(read(dir, "a.pem"))}\nkeyBase64: ${b64(read(dir, "a.key"))}\n` +
          `caCertBase64: ${b64(read(dir, "ca.pem"))}\n${rules}`,
      );
      const withCert = ["--cert", `${dir}/client.pem`, "--key", `${dir}/client.key`];
      await waitFor("the mTLS server", async () => (await curl(dir, "a.example", mtlsPort, "/", withCert)).code === 0);
      const ok = await curl(dir, "a.example", mtlsPort, "/m", [...withCert, "-o", "/dev/null", "-w", "%{http_code}"]);
      assert.equal(ok.code, 0);
      assert.match(ok.body, /200/);
      const good = await curl(dir, "a.example", mtlsPort, "/m", withCert);
      assert.equal(good.body, "sni-backend GET /m 2");
      // without a client certificate, or with one another CA signed: the handshake fails, no HTTP response at all
      const none = await curl(dir, "a.example", mtlsPort, "/m", ["-w", "%{http_code}"]);
      assert.notEqual(none.code, 0);
      assert.doesNotMatch(none.body, /sni-backend/);
      assert.match(none.body, /^0+/);
      const stranger = await curl(dir, "a.example", mtlsPort, "/m", [
        ...["--cert", `${dir}/stranger.pem`, "--key", `${dir}/stranger.key`, "-w", "%{http_code}"],
      ]);
      assert.notEqual(stranger.code, 0);
      assert.doesNotMatch(stranger.body, /sni-backend/);
      // the server keeps serving after the refused handshakes
      assert.equal((await curl(dir, "a.example", mtlsPort, "/again", withCert)).body, "sni-backend GET /again 2");

      const closedAt = await Promise.race([silentClosed, new Promise<number>((r) => setTimeout(() => r(-1), 20_000))]);
      silent.close();
      assert.ok(closedAt > 0, "a client silent for 20 s still holds its TLS connection");
      assert.ok(
        closedAt - silentOpened >= TLS_HANDSHAKE_TIMEOUT_MS - 500,
        `the silent client was closed after ${closedAt - silentOpened} ms, before the handshake timeout`,
      );

      // a port that cannot be bound: state failed with the error, as for the other listeners
      const holder = Deno.listen({ hostname: "0.0.0.0", port: busyPort });
      try {
        await putObject(
          m.apiAddr,
          `kind: HTTPServer\nname: busy\nport: ${busyPort}\nhttps: true\n` +
            `certBase64: ${b64(read(dir, "a.pem"))}\nkeyBase64: ${b64(read(dir, "a.key"))}\n` +
            `caCertBase64: ${b64(read(dir, "ca.pem"))}\n${rules}`,
        );
        await waitFor("failed state published", async () => {
          const st = await (await fetch(`http://${m.apiAddr}/apis/v2/status/objects/busy`)).json();
          const s = st["eg-traffic-default/busy/gwsni"]?.status;
          return s?.state === "failed" && /in use/i.test(s.error ?? "");
        }, 15000);
      } finally {
        holder.close();
      }
    } finally {
      await backend.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** A WebSocket client run as its own Deno process trusting `ca` (`--cert`): what it saw, as JSON lines. */
const WSS_CLIENT = `
const ws = new WebSocket(Deno.args[0], ["chat.v2", "chat.v1"]);
ws.binaryType = "arraybuffer";
const seen = [];
const next = () => new Promise((resolve, reject) => {
  ws.onmessage = (e) => resolve(e.data);
  ws.onclose = (e) => reject(new Error("closed " + e.code));
});
await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("error")); });
seen.push(ws.protocol);
ws.send("hello");
seen.push(await next());
ws.send(new Uint8Array([0, 1, 2, 255]));
seen.push(Array.from(new Uint8Array(await next())));
ws.send("headers");
seen.push(JSON.parse(await next()));
ws.send("x".repeat(200000));
seen.push((await next()).length);
ws.close(4001, "bye");
await new Promise((resolve) => (ws.onclose = resolve));
console.log(JSON.stringify(seen));
`;

memberTest("gateway: WebSocketProxy over HTTPS with one certificate (wss:// through Deno.serve)", async (procs) => {
  const dir = await Deno.makeTempDir({ prefix: "gw-wss-" });
  try {
    await makeCa(dir, "ca");
    await makeLeaf(dir, "ca", "leaf", "localhost", "subjectAltName=DNS:localhost");
    await Deno.writeTextFile(`${dir}/client.ts`, WSS_CLIENT);
    // the backend: a WebSocket echo that tells the headers it got and records the close code
    const closes: number[] = [];
    const [backendPort, port] = await freePorts(2);
    const backend = Deno.serve({ hostname: "127.0.0.1", port: backendPort, onListen() {} }, (req) => {
      const got = {
        proto: req.headers.get("x-forwarded-proto"),
        forwardedHost: req.headers.get("x-forwarded-host"),
        path: new URL(req.url).pathname,
      };
      const protocol = req.headers.get("sec-websocket-protocol")?.split(",")[1]?.trim();
      const { socket, response } = Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
      socket.onmessage = (e) => socket.send(e.data === "headers" ? JSON.stringify(got) : e.data);
      socket.onclose = (e) => closes.push(e.code);
      return response;
    });
    const [apiPorts] = await memberPorts(1);
    const m = await startMember("gwwss", primaryArgs("gwwss", apiPorts));
    procs.push(m);
    try {
      await putObject(
        m.apiAddr,
        `name: ws\nkind: Pipeline\nflow: [{filter: w}]\nfilters:\n` +
          `- {name: w, kind: WebSocketProxy, pools: [{servers: [{url: "http://127.0.0.1:${backendPort}"}]}]}\n`,
      );
      const b64 = (f: string) => Buffer.from(Deno.readTextFileSync(`${dir}/${f}`)).toString("base64");
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: wss\nport: ${port}\nhttps: true\ncertBase64: ${b64("leaf.pem")}\n` +
          `keyBase64: ${b64("leaf.key")}\nrules:\n- paths:\n  - {pathPrefix: /ws, backend: ws}\n`,
      );
      // a plain HTTPS request to the WebSocket route is refused (400)
      const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${dir}/ca.pem`)] });
      await waitFor("https server", async () => {
        try {
          const r = await fetch(`https://localhost:${port}/ws/echo`, { client });
          await r.body?.cancel();
          return r.status === 400;
        } catch {
          return false;
        }
      });
      client.close();
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--cert", `${dir}/ca.pem`, `${dir}/client.ts`, `wss://localhost:${port}/ws/echo`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, stderr);
      const seen = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.deepEqual(seen, [
        "chat.v1", // the protocol the backend chose reaches the client
        "hello",
        [0, 1, 2, 255],
        { proto: "https", forwardedHost: `localhost:${port}`, path: "/ws/echo" },
        200000,
      ]);
      await waitFor("the close reaches the backend", () => closes.length === 1);
      assert.deepEqual(closes, [4001]);
    } finally {
      await backend.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
