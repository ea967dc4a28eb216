/**
 * The admin API under attack and egctl with credentials, against a real member (`mod.ts server`, one primary) started
 * from a config file with `tls: true`, a certificate signed by a CA this test makes with openssl, and `basic-auth`:
 *
 *   egctl      with --ca-file (or --insecure-skip-verify) and -u user:password it works (get member, create -f, get);
 *              without credentials or with a wrong password it gets 401; without the CA it fails on the certificate;
 *              `http://` to the TLS port fails cleanly (an error, no hang) and the server keeps serving; a bare
 *              host:port is retried over https. The server, CA and user may come from the ~/.egctlrc context.
 *   401        every endpoint, also unknown ones, answers 401 with `WWW-Authenticate: Basic realm=...` without
 *              credentials.
 *   CORS       a request with a foreign Origin gets no Access-Control-Allow-Origin.
 *   types      a text/plain POST with a foreign Origin (what any web page may send without a preflight) gets 415 and
 *              stores nothing; so does a POST without Content-Type from a browser (with Origin); without Origin, as
 *              Easegress's own egctl sends it, a body without Content-Type is taken.
 *   body       a declared 300 MB body gets 413 at once; a 64 MiB chunked body gets 413 after the limit and the
 *              member's RSS grows by less than 32 MiB.
 *   mTLS       with `client-ca-file`, egctl gets in with --cert-file/--key-file of a certificate the CA signed, and
 *              not without one.
 *   framing    `Transfer-Encoding: xchunked` (chunked not last, RFC 9112 §6.3) gets 400, `gzip, chunked` 501.
 *   slowloris  a connection that sends no TLS ClientHello, and one that trickles its request head, are closed after
 *              the head timeout (10 s) while others are served.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import tls from "node:tls";
import { HEAD_TIMEOUT_MS } from "../server/api/server.ts";
import { egctl, type Member, memberPorts, memberTest, startMember, waitFor } from "./easegress_harness.ts";

const USER = "admin";
const PASSWORD = "s3cret-pass";
const ORIGIN = "http://evil.example";

/** Runs openssl with the space-separated `args` in `dir`. */
async function openssl(dir: string, args: string): Promise<void> {
  const r = await new Deno.Command("openssl", { args: args.split(" "), cwd: dir, stdout: "piped", stderr: "piped" })
    .output();
  if (r.code !== 0) throw new Error(`openssl ${args}: ${new TextDecoder().decode(r.stderr)}`);
}

/** A CA and a server certificate for 127.0.0.1 / localhost signed by it. */
async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  await openssl(dir, "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=eg-test-ca");
  const server = await issue(dir, "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
  return { ca: `${dir}/ca.pem`, ...server };
}

/** A client certificate (v3, extended key usage clientAuth) signed by the CA of {@link makeCerts}. */
function makeClientCert(dir: string): Promise<{ cert: string; key: string }> {
  return issue(dir, "client", "egctl-user", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE");
}

/** A v3 certificate `<name>.pem` (key `<name>.key`) for `cn` with the extensions `ext`, signed by the CA in `dir`. */
async function issue(dir: string, name: string, cn: string, ext: string): Promise<{ cert: string; key: string }> {
  await openssl(dir, `req -newkey rsa:2048 -nodes -keyout ${name}.key -out ${name}.csr -subj /CN=${cn}`);
  await Deno.writeTextFile(`${dir}/${name}.ext`, `${ext}\n`);
  await openssl(
    dir,
    `x509 -req -in ${name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out ${name}.pem -days 2 -extfile ${name}.ext`,
  );
  return { cert: `${dir}/${name}.pem`, key: `${dir}/${name}.key` };
}

/**
 * Sends raw bytes over TLS and returns what came back before the server closed or `waitMs` passed after the last
 * write. Sending stops once an answer arrived, as a client that reads its socket would, or when a write is stuck for
 * `waitMs` (the server no longer reads).
 */
async function rawTls(port: number, ca: string, parts: (string | Uint8Array)[], waitMs = 5000): Promise<string> {
  const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [ca] });
  const enc = new TextEncoder();
  let got = "";
  let answered: () => void = () => {};
  const answer = new Promise<void>((r) => answered = r);
  const reading = (async () => {
    const buf = new Uint8Array(65536);
    const dec = new TextDecoder();
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        got += dec.decode(buf.subarray(0, n), { stream: true });
        answered();
      }
    } catch { /* reset after the answer */ }
    answered();
  })();
  const pause = () => new Promise<"stuck">((r) => setTimeout(() => r("stuck"), waitMs));
  for (const p of parts) {
    if (got !== "") break;
    const write = conn.write(typeof p === "string" ? enc.encode(p) : p);
    // the server closed the connection while we were still sending (expected after a 413)
    write.catch(() => {});
    const outcome = await Promise.race([write.then(() => "sent", () => "closed"), answer, pause()]);
    if (outcome === "stuck" || outcome === "closed") break;
  }
  await Promise.race([reading, pause()]);
  try {
    conn.close();
  } catch { /* closed */ }
  return got;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) : 0;
}

const HELLO = `name: hello-pipeline
kind: Pipeline
flow: []
filters: []
`;

/** Starts a one-primary cluster `name` in `home` whose admin API serves HTTPS with `certs`; `extra` adds config lines. */
async function startTlsMember(
  home: string,
  name: string,
  certs: { cert: string; key: string },
  extra: string,
): Promise<{ member: Member; api: number }> {
  const [p] = await memberPorts(1);
  await Deno.writeTextFile(
    `${home}/config.yaml`,
    `name: ${name}
cluster-name: ${name}-cluster
cluster-role: primary
api-addr: 127.0.0.1:${p.api}
data-dir: ./data
tls: true
cert-file: ${certs.cert}
key-file: ${certs.key}
${extra}cluster:
  listen-peer-urls: [http://127.0.0.1:${p.peer}]
  listen-client-urls: [http://127.0.0.1:${p.client}]
  advertise-client-urls: [http://127.0.0.1:${p.client}]
  initial-advertise-peer-urls: [http://127.0.0.1:${p.peer}]
  initial-cluster:
   - ${name}: http://127.0.0.1:${p.peer}
`,
  );
  const member = await startMember(name, ["-f", `${home}/config.yaml`], { home, apiAddr: `127.0.0.1:${p.api}` });
  return { member, api: p.api };
}

memberTest(
  "admin API: TLS, basic auth, body limit, content types, no wildcard CORS; egctl with credentials",
  async (procs, t) => {
    const home = await Deno.makeTempDir({ prefix: "eg-admin-sec-" });
    const certs = await makeCerts(home);
    const caPem = await Deno.readTextFile(certs.ca);
    const { member: m, api } = await startTlsMember(home, "sec-1", certs, `basic-auth:\n  ${USER}: ${PASSWORD}\n`);
    procs.push(m);
    assert.match(m.output(), /api server \(https\) running in/);
    const base = `https://127.0.0.1:${api}/apis/v2`;
    const client = Deno.createHttpClient({ caCerts: [caPem] });
    const auth = "Basic " + btoa(`${USER}:${PASSWORD}`);
    const server = ["--server", `https://127.0.0.1:${api}`];
    try {
      await t.step("egctl with the CA and credentials works; without them it gets 401", async () => {
        // the member lists itself once its first heartbeat is stored
        await waitFor("egctl get member to list sec-1", async () => {
          const ok = await egctl([...server, "--ca-file", certs.ca, "-u", `${USER}:${PASSWORD}`, "get", "member"]);
          assert.equal(ok.code, 0, ok.stderr);
          return /sec-1/.test(ok.stdout);
        });
        const insecure = await egctl([...server, "--insecure-skip-verify", "--user", `${USER}:${PASSWORD}`, "health"]);
        assert.equal(insecure.code, 0, insecure.stderr);
        const created = await egctl(
          [...server, "--ca-file", certs.ca, "-u", `${USER}:${PASSWORD}`, "create", "-f", "-"],
          HELLO,
        );
        assert.equal(created.code, 0, created.stderr);
        assert.match(created.stdout, /create Pipeline hello-pipeline successfully/);
        const got = await egctl([...server, "--ca-file", certs.ca, "-u", `${USER}:${PASSWORD}`, "get", "pipeline"]);
        assert.match(got.stdout, /hello-pipeline/);

        const anonymous = await egctl([...server, "--ca-file", certs.ca, "get", "member"]);
        assert.equal(anonymous.code, 1);
        assert.match(anonymous.stderr, /401: basic auth failed/);
        const wrong = await egctl([...server, "--ca-file", certs.ca, "-u", `${USER}:nope`, "get", "member"]);
        assert.equal(wrong.code, 1);
        assert.match(wrong.stderr, /401: basic auth failed/);
        const unverified = await egctl([...server, "-u", `${USER}:${PASSWORD}`, "get", "member"]);
        assert.equal(unverified.code, 1);
        assert.match(unverified.stderr, /certificate|issuer|verify/i);
      });

      await t.step("egctl takes the server, CA and user of the current context in ~/.egctlrc", async () => {
        const rcHome = `${home}/rc`;
        await Deno.mkdir(rcHome);
        await Deno.writeTextFile(
          `${rcHome}/.egctlrc`,
          `kind: Config
clusters:
- name: sec
  cluster:
    server: https://127.0.0.1:${api}
    certificate-authority: ${certs.ca}
users:
- name: admin
  user:
    username: ${USER}
    password: ${PASSWORD}
contexts:
- name: sec-admin
  context:
    cluster: sec
    user: admin
current-context: sec-admin
`,
        );
        const r = await egctl(["get", "member"], undefined, undefined, { HOME: rcHome });
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /sec-1/);
        // the flag wins over the context's user
        const wrong = await egctl(["-u", `${USER}:nope`, "health"], undefined, undefined, { HOME: rcHome });
        assert.match(wrong.stderr, /401: basic auth failed/);
      });

      await t.step("plaintext to the TLS port fails cleanly and the server keeps serving", async () => {
        const plain = await egctl(["--server", `http://127.0.0.1:${api}`, "-u", `${USER}:${PASSWORD}`, "health"]);
        assert.equal(plain.code, 1);
        assert.match(
          plain.stderr,
          /^Error: Get "http:\/\/127\.0\.0\.1:\d+\/apis\/v2\/healthz": .*(EOF|malformed HTTP response)\n$/,
        );
        // a bare host:port is tried over https after the plaintext attempt was closed (egctl's upgrade on demand)
        const bare = await egctl([
          "--server",
          `127.0.0.1:${api}`,
          "--ca-file",
          certs.ca,
          "-u",
          `${USER}:${PASSWORD}`,
          "health",
        ]);
        assert.equal(bare.code, 0, bare.stderr);
        await assert.rejects(fetch(`http://127.0.0.1:${api}/apis/v2/healthz`, { signal: AbortSignal.timeout(5000) }));
        const r = await fetch(`${base}/healthz`, { client, headers: { authorization: auth } });
        await r.body?.cancel();
        assert.equal(r.status, 200);
      });

      await t.step("every endpoint asks for credentials; no wildcard CORS", async () => {
        for (const path of ["/healthz", "/status/members", "/objects", "/no-such-endpoint", ""]) {
          const r = await fetch(`${base}${path}`, { client, headers: { origin: ORIGIN } });
          await r.body?.cancel();
          assert.equal(r.status, 401, path);
          assert.equal(r.headers.get("www-authenticate"), `Basic realm="easegress-basic-auth"`);
          assert.equal(r.headers.get("access-control-allow-origin"), null);
        }
        const r = await fetch(`${base}/objects`, { client, headers: { authorization: auth, origin: ORIGIN } });
        await r.body?.cancel();
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("access-control-allow-origin"), null);
      });

      await t.step("bodies only as JSON or YAML: a cross-origin text/plain POST stores nothing", async () => {
        const post = async (name: string, headers: Record<string, string>, typed = true) => {
          const text = HELLO.replace("hello-pipeline", name);
          const r = await fetch(`${base}/objects`, {
            client,
            method: "POST",
            headers: { authorization: auth, ...headers },
            // a string body gets text/plain from fetch, a Blob without a type no Content-Type at all
            body: typed ? text : new Blob([text]),
          });
          return { status: r.status, body: await r.text() };
        };
        const stored = async (name: string) => {
          const r = await fetch(`${base}/objects/${name}`, { client, headers: { authorization: auth } });
          await r.body?.cancel();
          return r.status;
        };
        const plain = await post("csrf-plain", { "content-type": "text/plain;charset=UTF-8", origin: ORIGIN });
        assert.equal(plain.status, 415);
        assert.match(JSON.parse(plain.body).message, /unsupported Content-Type "text\/plain"/);
        assert.equal(await stored("csrf-plain"), 404);
        // a Blob body without a type: a browser sends Origin but no Content-Type
        const blob = await post("csrf-blob", { origin: ORIGIN }, false);
        assert.equal(blob.status, 415, blob.body);
        assert.equal(await stored("csrf-blob"), 404);
        // no Content-Type and no Origin: not a browser (Easegress's egctl sends no type)
        assert.equal((await post("untyped-cli", {}, false)).status, 201);
        // YAML and JSON by type are taken
        assert.equal((await post("typed-yaml", { "content-type": "application/yaml" })).status, 201);
        assert.equal(await stored("typed-yaml"), 200);
      });

      await t.step("body limit: 413, RSS bounded", async () => {
        const head = (extra: string) =>
          `POST /apis/v2/objects HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${auth}\r\n` +
          `Content-Type: application/json\r\n${extra}\r\n`;
        const declared = await rawTls(api, caPem, [head("Content-Length: 300000000\r\n"), "{".repeat(1000)]);
        assert.match(declared, /^HTTP\/1\.1 413 /);
        assert.match(declared, /request body too large/);

        // 32 KiB chunks, 64 MiB in all (Deno's node:http refuses some chunked streams on its own with 400: see below)
        const chunk = new TextEncoder().encode(`8000\r\n${"x".repeat(0x8000)}\r\n`);
        const parts: (string | Uint8Array)[] = [head("Transfer-Encoding: chunked\r\n")];
        for (let i = 0; i < 64 * 32; i++) parts.push(chunk);
        // three times: the 413 once raced the handler's own answer to the same overflow, and the member died of an
        // uncaught "Cannot set headers after they are sent" in about half the runs
        for (let i = 0; i < 3; i++) {
          const before = rssKiB(m.pid);
          const streamed = await rawTls(api, caPem, parts);
          assert.match(streamed, /^HTTP\/1\.1 413 /);
          const grown = rssKiB(m.pid) - before;
          console.log(`member RSS growth after a 64 MiB chunked body: ${grown} KiB`);
          assert.ok(grown < 32 * 1024, `RSS grew by ${grown} KiB`);
          const r = await fetch(`${base}/healthz`, { client, headers: { authorization: auth } });
          await r.body?.cancel();
          assert.equal(r.status, 200);
        }
      });

      await t.step("strict Transfer-Encoding: xchunked is 400, an unknown coding 501", async () => {
        const req = (te: string) =>
          `POST /apis/v2/objects HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${auth}\r\n` +
          `Content-Type: application/json\r\nTransfer-Encoding: ${te}\r\n\r\n2\r\n{}\r\n0\r\n\r\n`;
        assert.match(await rawTls(api, caPem, [req("xchunked")], 3000), /^HTTP\/1\.1 400 /);
        assert.match(await rawTls(api, caPem, [req("gzip, chunked")], 3000), /^HTTP\/1\.1 501 /);
      });

      await t.step("a silent TLS client and trickled headers are closed after the head timeout", async () => {
        // one connection sends no ClientHello; one sends a request head a byte every 500 ms, never finishing it
        const silent = net.connect(api, "127.0.0.1");
        const trickled = tls.connect({ port: api, host: "127.0.0.1", ca: caPem, servername: "localhost" });
        const trickledUp = new Promise((r) => trickled.once("secureConnect", r));
        const started = Date.now();
        const closedAfter = [-1, -1];
        for (const [i, sock] of [silent, trickled].entries()) {
          sock.on("close", () => closedAfter[i] = Date.now() - started);
          sock.on("error", () => {});
        }
        // and a keep-alive connection that sends a whole request every 500 ms is kept past the head timeout
        const busy = tls.connect({ port: api, host: "127.0.0.1", ca: caPem, servername: "localhost" });
        const busyUp = new Promise((r) => busy.once("secureConnect", r));
        let busyClosed = false;
        let answers = 0;
        busy.on("close", () => busyClosed = true);
        busy.on("error", () => {});
        busy.on("data", (b: Buffer) => answers += (b.toString().match(/HTTP\/1\.1 200/g) ?? []).length);
        await Promise.all([trickledUp, busyUp]);
        const head = `GET /apis/v2/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${auth}\r\nX-Slow: `;
        let served = 0;
        for (let i = 0; closedAfter.includes(-1) && Date.now() - started < HEAD_TIMEOUT_MS + 5000; i++) {
          if (closedAfter[1] < 0) trickled.write(i < head.length ? head[i] : "a");
          busy.write(`GET /apis/v2/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${auth}\r\n\r\n`);
          // meanwhile the API answers others
          const r = await fetch(`${base}/healthz`, { client, headers: { authorization: auth } });
          await r.body?.cancel();
          assert.equal(r.status, 200);
          served++;
          await new Promise((r) => setTimeout(r, 500));
        }
        console.log(
          `closed after ${closedAfter.join(" / ")} ms (silent / trickled), ${served} requests served meanwhile`,
        );
        for (const ms of closedAfter) {
          assert.ok(ms >= HEAD_TIMEOUT_MS - 1000 && ms <= HEAD_TIMEOUT_MS + 5000, `closed after ${ms} ms`);
        }
        assert.ok(!busyClosed, `the busy keep-alive connection was closed after ${answers} answers`);
        assert.ok(answers >= served - 1, `${answers} answers on the keep-alive connection`);
        silent.destroy();
        trickled.destroy();
        busy.destroy();
      });
    } finally {
      client.close();
    }
  },
);

memberTest(
  "admin API with client-ca-file: egctl with --cert-file/--key-file gets in, without a certificate not",
  async (procs) => {
    const home = await Deno.makeTempDir({ prefix: "eg-admin-mtls-" });
    const certs = await makeCerts(home);
    const mine = await makeClientCert(home);
    const { member, api } = await startTlsMember(home, "mtls-1", certs, `client-ca-file: ${certs.ca}\n`);
    procs.push(member);
    const server = ["--server", `https://127.0.0.1:${api}`, "--ca-file", certs.ca];
    const ok = await egctl([...server, "--cert-file", mine.cert, "--key-file", mine.key, "health"]);
    assert.equal(ok.code, 0, ok.stderr);
    const without = await egctl([...server, "health"]);
    assert.equal(without.code, 1);
    assert.match(without.stderr, /^Error: Get "https:\/\/127\.0\.0\.1:\d+\/apis\/v2\/healthz": /);
    const half = await egctl([...server, "--cert-file", mine.cert, "health"]);
    assert.equal(half.code, 1);
    assert.match(half.stderr, /give both --cert-file and --key-file/);
  },
);
