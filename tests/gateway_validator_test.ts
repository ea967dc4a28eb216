/**
 * The Validator's basicAuth (an htpasswd file: bcrypt, apr1-MD5, {SHA} and plain entries, re-read when it changes; ETCD
 * mode: credentials the test puts under /custom-data/ with etcdctl, followed as they change), signature (Easegress's
 * signer: the test signs requests itself following the algorithm), oauth2 JWT and oauth2 tokenIntrospect (against an
 * introspection endpoint the test runs, over HTTP and HTTPS), through a real member.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, createHmac } from "node:crypto";
import bcrypt from "bcryptjs";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";
import { makeCa, makeLeaf } from "./lib/certs.ts";
import { etcdctlOk } from "./lib/etcdctl.ts";

const basic = (user: string, pass: string) => ({
  headers: { authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}` },
});

function jwtHS256(claims: Record<string, unknown>, secret: string): string {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${enc({ alg: "HS256", typ: "JWT" })}.${enc(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

const sha256 = (s: string | Uint8Array) => createHash("sha256").update(s).digest("hex");
const hmac = (key: string | Buffer, s: string) => createHmac("sha256", key).update(s).digest();

interface Signed {
  url: string;
  headers: Record<string, string>;
}

/**
 * Signs a request as Easegress's signer does with its default literal, in the Authorization header (the signed
 * headers are host and x-date plus `extra`) or, with `presign` (seconds), in the query (signed headers: host plus
 * `extra`); `query` is given already in canonical form (sorted by key, escaped, no X- parameters).
 */
function sign(
  base: string,
  opts: {
    method: string;
    path: string;
    query?: string;
    body?: string;
    extra?: Record<string, string>;
    id: string;
    secret: string;
    time: Date;
    scopes?: string[];
    presign?: number;
  },
): Signed {
  const host = new URL(base).host;
  const time = opts.time.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  const date = time.slice(0, 8);
  const scopes = opts.scopes ?? [];
  const scope = [date, ...scopes, "request"].join("/");
  const headers: Record<string, string> = opts.presign === undefined ? { "x-date": time } : {};
  Object.assign(headers, opts.extra);
  const all: [string, string][] = [["host", host], ...Object.entries(headers)];
  all.sort((a, b) => a[0] < b[0] ? -1 : 1);
  const signedHeaders = all.map(([k]) => k).join(";");
  let query = opts.query ?? "";
  if (opts.presign !== undefined) {
    const params = [
      `X-Algorithm=HMAC-SHA256`,
      `X-Credential=${encodeURIComponent(`${opts.id}/${scope}`)}`,
      `X-Date=${time}`,
      `X-Expires=${opts.presign}`,
      `X-SignedHeaders=${encodeURIComponent(signedHeaders)}`,
    ];
    query = [...params, ...(query === "" ? [] : [query])].join("&"); // "X-…" sorts before lower-case keys
  }
  const canonical = [
    opts.method,
    // every byte of the (escaped) path but unreserved ones and "/" is escaped again: "%20" → "%2520"
    opts.path.replace(/[^A-Za-z0-9\-._~/]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase()),
    query,
    all.map(([k, v]) => `${k}:${v.trim().replace(/ +/g, " ")}\n`).join(""),
    signedHeaders,
    sha256(opts.body ?? ""),
  ].join("\n");
  const toSign = ["HMAC-SHA256", time, scope, sha256(canonical)].join("\n");
  let key = hmac(opts.secret, date);
  for (const s of scopes) key = hmac(key, s);
  key = hmac(key, "request");
  const signature = hmac(key, toSign).toString("hex");
  if (opts.presign !== undefined) {
    return { url: `${base}${opts.path}?${query}&X-Signature=${signature}`, headers };
  }
  headers.authorization =
    `HMAC-SHA256 Credential=${opts.id}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return { url: `${base}${opts.path}${opts.query ? "?" + opts.query : ""}`, headers };
}

memberTest(
  "gateway Validator: basicAuth file and ETCD modes, signature, oauth2 jwt and tokenIntrospect",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [port] = await freePorts(1);
    const m = await startMember("gwval", primaryArgs("gwval", ports));
    procs.push(m);
    const echo = await startBackend(
      "echo",
      async (req) => new Response(`user=${req.headers.get("x-auth-user")} body=${await req.text()}`),
    );
    const dir = await Deno.makeTempDir();
    const userFile = `${dir}/htpasswd`;
    await Deno.writeTextFile(
      userFile,
      [
        "# users",
        `alice:${bcrypt.hashSync("wonderland", 4)}`,
        "bob:plain-pass",
        "carol:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/", // `openssl passwd -apr1 -salt abcdefgh secret`
        `dave:{SHA}${createHash("sha1").update("sha-pass").digest("base64")}`,
        `frank:{SSHA}${
          Buffer.concat([createHash("sha1").update("ssha-pass").update("salt").digest(), Buffer.from("salt")]).toString(
            "base64",
          )
        }`,
      ].join("\n") + "\n",
    );
    const oauthSecret = "oauth2-test-secret";
    // an introspection endpoint (RFC 7662): known tokens by client; what it was sent is recorded
    const introspected: { auth: string | null; type: string | null; form: string }[] = [];
    const introspect = async (req: Request) => {
      const form = await req.text();
      introspected.push({ auth: req.headers.get("authorization"), type: req.headers.get("content-type"), form });
      const params = new URLSearchParams(form);
      const byClient = params.get("client_id") === "gw" && params.get("client_secret") === "gw-secret";
      const byBasic = req.headers.get("authorization") === `Basic ${Buffer.from("gw:gw-secret").toString("base64")}`;
      if (!byClient && !byBasic) return Response.json({ error: "invalid_client", error_description: "who are you" });
      const token = params.get("token");
      if (token === "good-token") return Response.json({ active: true, sub: "svc-user", scope: "read write" });
      if (token === "bare-token") return Response.json({ active: true });
      return Response.json({ active: false });
    };
    const introspection = await startBackend("introspection", introspect);
    const certDir = await Deno.makeTempDir({ prefix: "gw-introspect-" });
    await makeCa(certDir, "ca");
    await makeLeaf(certDir, "ca", "leaf", "localhost", "subjectAltName=DNS:localhost");
    const [tlsPort] = await freePorts(1);
    const tlsIntrospection = Deno.serve({
      hostname: "127.0.0.1",
      port: tlsPort,
      cert: await Deno.readTextFile(`${certDir}/leaf.pem`),
      key: await Deno.readTextFile(`${certDir}/leaf.key`),
      onListen() {},
    }, introspect);
    const echoAuth = await startBackend(
      "echo-auth",
      (req) =>
        new Response(
          `user=${req.headers.get("x-authenticated-userid")} scope=${req.headers.get("x-authenticated-scope")} ` +
            `basic=${req.headers.get("x-auth-user")}`,
        ),
    );
    const proxy = `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echo.url}}]}]}`;
    const proxyAuth = `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echoAuth.url}}]}]}`;
    const pipelines: [string, string][] = [
      ["basic", `- {name: v, kind: Validator, basicAuth: {mode: FILE, userFile: ${userFile}}}`],
      [
        "signed",
        `- {name: v, kind: Validator, signature: {accessKeys: {AKID: s3cr3t, OTHER: x}, ttl: 2m}}`,
      ],
      [
        "oauth",
        `- {name: v, kind: Validator, oauth2: {jwt: {algorithm: HS256, secret: ${
          Buffer.from(oauthSecret).toString("hex")
        }}}}`,
      ],
      ["etcdmode", `- {name: v, kind: Validator, basicAuth: {mode: ETCD, etcdPrefix: /team-creds/}}`],
      ["etcddefault", `- {name: v, kind: Validator, basicAuth: {mode: ETCD}}`],
      [
        "intro-client",
        `- {name: v, kind: Validator, oauth2: {tokenIntrospect: {endPoint: "${introspection.url}/introspect", ` +
        `clientId: gw, clientSecret: gw-secret}}}`,
      ],
      [
        "intro-basic",
        `- {name: v, kind: Validator, oauth2: {tokenIntrospect: {endPoint: "${introspection.url}/basic", ` +
        `basicAuth: ${Buffer.from("gw:gw-secret").toString("base64")}}}}`,
      ],
      [
        "intro-tls",
        `- {name: v, kind: Validator, oauth2: {tokenIntrospect: {endPoint: "https://127.0.0.1:${tlsPort}/introspect", ` +
        `clientId: gw, clientSecret: gw-secret, insecureTls: true}}}`,
      ],
      [
        "intro-verify",
        `- {name: v, kind: Validator, oauth2: {tokenIntrospect: {endPoint: "https://127.0.0.1:${tlsPort}/introspect", ` +
        `clientId: gw, clientSecret: gw-secret}}}`,
      ],
    ];
    try {
      for (const [name, filter] of pipelines) {
        await putObject(
          m.apiAddr,
          `kind: Pipeline\nname: ${name}\nflow: [{filter: v}, {filter: proxy}]\nfilters:\n${filter}\n` +
            `${name.startsWith("intro-") || name.startsWith("etcd") || name === "oauth" ? proxyAuth : proxy}\n`,
        );
      }
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: validators\nport: ${port}\nrules:\n- paths:\n` +
          pipelines.map(([n]) => `  - {pathPrefix: /${n}, backend: ${n}}`).join("\n") + "\n",
      );
      const base = `http://127.0.0.1:${port}`;
      await waitFor("server", async () => (await get(`${base}/basic`).catch(() => [0]))[0] === 401);

      // basicAuth: no or wrong credentials → 401 with no body; each format's right password → 200, X-AUTH-USER upstream
      assert.deepStrictEqual(await get(`${base}/basic`), [401, ""]);
      assert.equal((await get(`${base}/basic`, basic("alice", "wrong")))[0], 401);
      assert.equal((await get(`${base}/basic`, basic("nobody", "plain-pass")))[0], 401);
      assert.equal((await get(`${base}/basic`, { headers: { authorization: "Bearer x" } }))[0], 401);
      assert.deepStrictEqual(await get(`${base}/basic`, basic("alice", "wonderland")), [200, "user=alice body="]);
      assert.deepStrictEqual(await get(`${base}/basic`, basic("alice", "wonderland")), [200, "user=alice body="]);
      assert.deepStrictEqual(await get(`${base}/basic`, basic("bob", "plain-pass")), [200, "user=bob body="]);
      assert.deepStrictEqual(await get(`${base}/basic`, basic("carol", "secret")), [200, "user=carol body="]);
      assert.equal((await get(`${base}/basic`, basic("carol", "secreT")))[0], 401);
      assert.deepStrictEqual(await get(`${base}/basic`, basic("dave", "sha-pass")), [200, "user=dave body="]);
      assert.deepStrictEqual(await get(`${base}/basic`, basic("frank", "ssha-pass")), [200, "user=frank body="]);
      assert.equal((await get(`${base}/basic`, basic("frank", "sha-pass")))[0], 401);
      // the client cannot choose the user passed upstream
      const spoof = basic("bob", "plain-pass");
      assert.deepStrictEqual(
        await get(`${base}/basic`, { headers: { ...spoof.headers, "x-auth-user": "root" } }),
        [200, "user=bob body="],
      );

      // the file is re-read when it changes: bob's entry replaced, erin added
      await Deno.writeTextFile(userFile, "bob:new-pass\nerin:erin-pass\n");
      await waitFor(
        "the changed file is used",
        async () => (await get(`${base}/basic`, basic("erin", "erin-pass")))[0] === 200,
      );
      assert.equal((await get(`${base}/basic`, basic("bob", "plain-pass")))[0], 401);
      assert.deepStrictEqual(await get(`${base}/basic`, basic("bob", "new-pass")), [200, "user=bob body="]);

      // signature: a correctly signed request passes; tampering with anything signed, a wrong key, an unknown access
      // key, or a time outside the ttl fails
      const now = new Date();
      const good = sign(base, {
        method: "GET",
        path: "/signed/a%20b",
        query: "x=1&y=a+b",
        id: "AKID",
        secret: "s3cr3t",
        time: now,
      });
      assert.deepStrictEqual(await get(good.url, { headers: good.headers }), [200, "user=null body="]);
      const scoped = sign(base, {
        method: "POST",
        path: "/signed/post",
        body: "payload",
        extra: { "content-type": "text/plain", "x-custom": "  a   b  " },
        id: "AKID",
        secret: "s3cr3t",
        time: now,
        scopes: ["eu", "svc"],
      });
      const post = (s: Signed, body: string) => get(s.url, { method: "POST", headers: s.headers, body });
      assert.deepStrictEqual(await post(scoped, "payload"), [200, "user=null body=payload"]);
      assert.equal((await post(scoped, "payloaD"))[0], 401, "tampered body");
      assert.equal((await get(good.url.replace("x=1", "x=2"), { headers: good.headers }))[0], 401, "tampered query");
      assert.equal((await get(good.url.replace("a%20b", "a%20c"), { headers: good.headers }))[0], 401, "tampered path");
      assert.equal(
        (await post({ ...scoped, headers: { ...scoped.headers, "x-custom": "a c" } }, "payload"))[0],
        401,
        "tampered signed header",
      );
      const wrongKey = sign(base, { method: "GET", path: "/signed/k", id: "AKID", secret: "other", time: now });
      assert.equal((await get(wrongKey.url, { headers: wrongKey.headers }))[0], 401);
      const unknownId = sign(base, { method: "GET", path: "/signed/k", id: "NOPE", secret: "s3cr3t", time: now });
      assert.equal((await get(unknownId.url, { headers: unknownId.headers }))[0], 401);
      const expired = sign(base, {
        method: "GET",
        path: "/signed/k",
        id: "AKID",
        secret: "s3cr3t",
        time: new Date(Date.now() - 5 * 60_000),
      });
      assert.equal((await get(expired.url, { headers: expired.headers }))[0], 401, "older than the ttl");
      const future = sign(base, {
        method: "GET",
        path: "/signed/k",
        id: "AKID",
        secret: "s3cr3t",
        time: new Date(Date.now() + 5 * 60_000),
      });
      assert.equal((await get(future.url, { headers: future.headers }))[0], 401, "too far in the future");
      assert.equal((await get(`${base}/signed/k`))[0], 401, "not signed");
      // presigned URLs: the signature and its parameters in the query, X-Expires bounding the age
      const presigned = sign(base, {
        method: "GET",
        path: "/signed/p",
        query: "a=1",
        id: "AKID",
        secret: "s3cr3t",
        time: now,
        presign: 60,
      });
      assert.deepStrictEqual(await get(presigned.url), [200, "user=null body="]);
      assert.equal((await get(presigned.url.replace("a=1", "a=2")))[0], 401, "tampered presigned query");
      assert.equal((await get(presigned.url.replace("X-Expires=60", "X-Expires=600")))[0], 401, "longer expiry");
      const lapsed = sign(base, {
        method: "GET",
        path: "/signed/p",
        id: "AKID",
        secret: "s3cr3t",
        time: new Date(Date.now() - 60_000),
        presign: 30,
      });
      assert.equal((await get(lapsed.url))[0], 401, "presigned URL past its X-Expires");

      // oauth2 jwt (HS256, hex secret)
      const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
      const exp = Math.floor(Date.now() / 1000) + 60;
      // the subject and scope go upstream
      assert.deepStrictEqual(
        await get(`${base}/oauth`, bearer(jwtHS256({ sub: "u", scope: "read", exp }, oauthSecret))),
        [200, "user=u scope=read basic=null"],
      );
      assert.deepStrictEqual(await get(`${base}/oauth`, bearer(jwtHS256({ exp }, oauthSecret))), [
        200,
        "user=null scope=null basic=null",
      ]);
      assert.equal((await get(`${base}/oauth`, bearer(jwtHS256({ sub: "u", exp }, "wrong"))))[0], 401);
      assert.equal((await get(`${base}/oauth`, bearer(jwtHS256({ sub: "u", exp: 1000 }, oauthSecret))))[0], 401);
      assert.equal((await get(`${base}/oauth`))[0], 401);

      // oauth2 tokenIntrospect: client credentials in the form, or basicAuth in the header; active tokens pass with
      // their subject and scope passed on, inactive / unknown tokens and a refused client give 401
      assert.deepStrictEqual(await get(`${base}/intro-client`, bearer("good-token")), [
        200,
        "user=svc-user scope=read write basic=null",
      ]);
      assert.deepStrictEqual(introspected.at(-1), {
        auth: null,
        type: "application/x-www-form-urlencoded",
        form: "token=good-token&client_id=gw&client_secret=gw-secret",
      });
      assert.deepStrictEqual(await get(`${base}/intro-client`, bearer("bare-token")), [
        200,
        "user=null scope=null basic=null",
      ]);
      assert.deepStrictEqual(await get(`${base}/intro-client`, bearer("revoked-token")), [401, ""]);
      assert.equal((await get(`${base}/intro-client`))[0], 401, "no token");
      const asked = introspected.length;
      assert.equal((await get(`${base}/intro-client`, { headers: { authorization: "Basic eDp5" } }))[0], 401);
      assert.equal(introspected.length, asked, "no bearer token: the endpoint is not asked");
      assert.deepStrictEqual(await get(`${base}/intro-basic`, bearer("good-token")), [
        200,
        "user=svc-user scope=read write basic=null",
      ]);
      assert.equal(introspected.at(-1)!.auth, `Basic ${Buffer.from("gw:gw-secret").toString("base64")}`);
      assert.equal(introspected.at(-1)!.form, "token=good-token");
      // https: insecureTls accepts the endpoint's certificate from an unknown CA; without it the check fails (401)
      assert.deepStrictEqual(await get(`${base}/intro-tls`, bearer("good-token")), [
        200,
        "user=svc-user scope=read write basic=null",
      ]);
      const before = introspected.length;
      assert.equal((await get(`${base}/intro-verify`, bearer("good-token")))[0], 401);
      assert.equal(introspected.length, before, "the unverified endpoint got no request");
      await introspection.stop();
      assert.equal((await get(`${base}/intro-client`, bearer("good-token")))[0], 401, "endpoint down");

      // basicAuth ETCD mode: credentials under /custom-data/<etcdPrefix> in the cluster store (YAML or JSON,
      // `username` or else `key`, passwords plain or hashed), followed as they change
      const client = `127.0.0.1:${ports.client}`;
      assert.equal((await get(`${base}/etcdmode`, basic("ann", "ann-pass")))[0], 401, "no credentials stored yet");
      await etcdctlOk(client, ["put", "/custom-data/team-creds/ann", "key: ann\npassword: ann-pass\n"]);
      await etcdctlOk(client, [
        "put",
        "/custom-data/team-creds/b",
        JSON.stringify({ key: "b", username: "ben", password: bcrypt.hashSync("ben-pass", 4) }),
      ]);
      await etcdctlOk(client, ["put", "/custom-data/credentials/cid", "username: cid\npassword: cid-pass\n"]);
      await waitFor(
        "stored credentials",
        async () => (await get(`${base}/etcdmode`, basic("ann", "ann-pass")))[0] === 200,
      );
      assert.deepStrictEqual(await get(`${base}/etcdmode`, basic("ann", "ann-pass")), [
        200,
        "user=null scope=null basic=ann",
      ]);
      assert.equal((await get(`${base}/etcdmode`, basic("ann", "wrong")))[0], 401);
      assert.equal((await get(`${base}/etcdmode`, basic("ben", "ben-pass")))[0], 200, "username wins over key");
      assert.equal((await get(`${base}/etcdmode`, basic("b", "ben-pass")))[0], 401);
      assert.equal((await get(`${base}/etcdmode`, basic("cid", "cid-pass")))[0], 401, "other prefix");
      await waitFor(
        "default prefix",
        async () => (await get(`${base}/etcddefault`, basic("cid", "cid-pass")))[0] === 200,
      );
      assert.equal((await get(`${base}/etcddefault`, basic("ann", "ann-pass")))[0], 401);
      // a changed password and a deleted user take effect without touching the pipeline
      await etcdctlOk(client, ["put", "/custom-data/team-creds/ann", "key: ann\npassword: new-pass\n"]);
      await waitFor(
        "changed password",
        async () => (await get(`${base}/etcdmode`, basic("ann", "new-pass")))[0] === 200,
      );
      assert.equal((await get(`${base}/etcdmode`, basic("ann", "ann-pass")))[0], 401);
      await etcdctlOk(client, ["del", "/custom-data/team-creds/b"]);
      await waitFor("deleted user", async () => (await get(`${base}/etcdmode`, basic("ben", "ben-pass")))[0] === 401);
    } finally {
      await echo.stop();
      await echoAuth.stop();
      await introspection.stop().catch(() => {});
      await tlsIntrospection.shutdown();
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(certDir, { recursive: true });
    }
  },
);

/**
 * Starts a real slapd (Debian's `slapd`) with one user, alice (password alice-pass), under ou=people: LDAP on `port`
 * (StartTLS offered), LDAPS on `tlsPort`, with the certificate `leaf` of `dir` (signed by a CA clients do not know).
 * With `clientCa` (a PEM file of `dir`), every TLS client (LDAPS and StartTLS) must present a certificate it signed.
 */
async function startSlapd(dir: string, port: number, tlsPort: number, clientCa = ""): Promise<Deno.ChildProcess> {
  await Deno.mkdir(`${dir}/db`);
  await Deno.writeTextFile(
    `${dir}/slapd.conf`,
    [
      `TLSCertificateFile ${dir}/leaf.pem`,
      `TLSCertificateKeyFile ${dir}/leaf.key`,
      ...(clientCa ? [`TLSCACertificateFile ${dir}/${clientCa}`, "TLSVerifyClient demand"] : []),
      "include /etc/ldap/schema/core.schema",
      "include /etc/ldap/schema/cosine.schema",
      "include /etc/ldap/schema/inetorgperson.schema",
      `pidfile ${dir}/slapd.pid`,
      "modulepath /usr/lib/ldap",
      "moduleload back_mdb",
      "database mdb",
      'suffix "dc=example,dc=org"',
      `directory ${dir}/db`,
    ].join("\n") + "\n",
  );
  await Deno.writeTextFile(
    `${dir}/data.ldif`,
    [
      "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
      "dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n",
      "dn: uid=alice,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice\nsn: A\n" +
      "userPassword: alice-pass\n",
    ].join("\n"),
  );
  const add = await new Deno.Command("/usr/sbin/slapadd", {
    args: ["-f", `${dir}/slapd.conf`, "-l", `${dir}/data.ldif`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(add.code, 0, new TextDecoder().decode(add.stderr));
  return new Deno.Command("/usr/sbin/slapd", {
    args: ["-f", `${dir}/slapd.conf`, "-h", `ldap://127.0.0.1:${port}/ ldaps://127.0.0.1:${tlsPort}/`, "-d", "0"],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

memberTest("gateway Validator: basicAuth LDAP mode binds against a real slapd", async (procs) => {
  const [ports] = await memberPorts(1);
  const [port, ldapPort, ldapsPort] = await freePorts(3);
  const dir = await Deno.makeTempDir({ prefix: "gw-ldap-" });
  await makeCa(dir, "ca");
  await makeLeaf(dir, "ca", "leaf", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
  const slapd = await startSlapd(dir, ldapPort, ldapsPort);
  const m = await startMember("gwldap", primaryArgs("gwldap", ports));
  procs.push(m);
  const echo = await startBackend("echo", (req) => new Response(`user=${req.headers.get("x-auth-user")}`));
  try {
    // plain (skipTLS), StartTLS (the default: the certificate is not verified, as go-ldap-client), LDAPS with
    // `insecure`, and LDAPS verifying the certificate (unknown CA: every bind fails)
    const modes: [string, string][] = [
      ["plain", `port: ${ldapPort}, skipTLS: true`],
      ["starttls", `port: ${ldapPort}`],
      ["ldaps", `port: ${ldapsPort}, useSSL: true, insecure: true`],
      ["verified", `port: ${ldapsPort}, useSSL: true`],
    ];
    for (const [name, conn] of modes) {
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: ${name}\nflow: [{filter: v}, {filter: proxy}]\nfilters:\n` +
          `- {name: v, kind: Validator, basicAuth: {mode: LDAP, ldap: {host: 127.0.0.1, ${conn}, ` +
          `baseDN: "ou=people,dc=example,dc=org", uid: uid}}}\n` +
          `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echo.url}}]}]}\n`,
      );
    }
    await putObject(
      m.apiAddr,
      `kind: HTTPServer\nname: ldapsrv\nport: ${port}\nrules:\n- paths:\n` +
        modes.map(([n]) => `  - {pathPrefix: /${n}, backend: ${n}}`).join("\n") + "\n",
    );
    const base = `http://127.0.0.1:${port}`;
    await waitFor("slapd and the server", async () => {
      const r = await get(`${base}/plain`, basic("alice", "alice-pass")).catch(() => [0, ""]);
      return r[0] === 200;
    });
    assert.equal((await get(`${base}/plain`, basic("alice", "wrong")))[0], 401);
    assert.equal((await get(`${base}/plain`, basic("bob", "alice-pass")))[0], 401, "no such user");
    assert.equal((await get(`${base}/plain`, basic("alice", "")))[0], 401, "an empty password is no anonymous bind");
    assert.equal((await get(`${base}/plain`, basic("alice,ou=people", "alice-pass")))[0], 401, "DN injection");
    assert.equal((await get(`${base}/plain`))[0], 401);
    for (const path of ["plain", "starttls", "ldaps"]) {
      assert.deepStrictEqual(await get(`${base}/${path}`, basic("alice", "alice-pass")), [200, "user=alice"], path);
      assert.equal((await get(`${base}/${path}`, basic("alice", "wrong")))[0], 401, path);
    }
    assert.equal((await get(`${base}/verified`, basic("alice", "alice-pass")))[0], 401, "unverifiable certificate");
  } finally {
    slapd.kill("SIGTERM");
    await slapd.status;
    await echo.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

memberTest(
  "gateway Validator: basicAuth LDAP with a client certificate (certBase64/keyBase64) to a slapd that demands one",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [port, ldapPort, ldapsPort] = await freePorts(3);
    const dir = await Deno.makeTempDir({ prefix: "gw-ldap-mtls-" });
    await makeCa(dir, "ca");
    await makeLeaf(dir, "ca", "leaf", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
    // the client certificate the LDAP server trusts (signed by clientca), and one of a CA it does not know
    await makeCa(dir, "clientca");
    await makeLeaf(dir, "clientca", "client", "gateway", "extendedKeyUsage=clientAuth");
    await makeCa(dir, "otherca");
    await makeLeaf(dir, "otherca", "stranger", "gateway", "extendedKeyUsage=clientAuth");
    const slapd = await startSlapd(dir, ldapPort, ldapsPort, "clientca.pem");
    const m = await startMember("gwldapm", primaryArgs("gwldapm", ports));
    procs.push(m);
    const echo = await startBackend("echo", (req) => new Response(`user=${req.headers.get("x-auth-user")}`));
    const b64 = async (f: string) => Buffer.from(await Deno.readTextFile(`${dir}/${f}`)).toString("base64");
    const pair = async (name: string) =>
      `certBase64: ${await b64(`${name}.pem`)}, keyBase64: ${await b64(`${name}.key`)}`;
    try {
      const modes: [string, string][] = [
        ["ldapscert", `port: ${ldapsPort}, useSSL: true, insecure: true, ${await pair("client")}`],
        ["ldapsnone", `port: ${ldapsPort}, useSSL: true, insecure: true`],
        ["ldapsstranger", `port: ${ldapsPort}, useSSL: true, insecure: true, ${await pair("stranger")}`],
        // StartTLS presents the certificate too (go-ldap-client only does so for LDAPS: there a server that demands one
        // refuses every StartTLS bind)
        ["starttlscert", `port: ${ldapPort}, ${await pair("client")}`],
        ["starttlsnone", `port: ${ldapPort}`],
        [
          "badpair",
          `port: ${ldapsPort}, useSSL: true, certBase64: ${await b64("client.pem")}, keyBase64: ${await b64(
            "stranger.key",
          )}`,
        ],
      ];
      const pipeline = (name: string, conn: string) =>
        `kind: Pipeline\nname: ${name}\nflow: [{filter: v}, {filter: proxy}]\nfilters:\n` +
        `- {name: v, kind: Validator, basicAuth: {mode: LDAP, ldap: {host: 127.0.0.1, ${conn}, ` +
        `baseDN: "ou=people,dc=example,dc=org", uid: uid}}}\n` +
        `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echo.url}}]}]}\n`;
      for (const [name, conn] of modes) await putObject(m.apiAddr, pipeline(name, conn));
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: ldapmsrv\nport: ${port}\nrules:\n- paths:\n` +
          modes.map(([n]) => `  - {pathPrefix: /${n}, backend: ${n}}`).join("\n") + "\n",
      );
      const base = `http://127.0.0.1:${port}`;
      await waitFor("slapd and the server", async () => {
        const r = await get(`${base}/ldapscert`, basic("alice", "alice-pass")).catch(() => [0, ""]);
        return r[0] === 200;
      });
      for (const path of ["ldapscert", "starttlscert"]) {
        assert.deepStrictEqual(await get(`${base}/${path}`, basic("alice", "alice-pass")), [200, "user=alice"], path);
        assert.equal((await get(`${base}/${path}`, basic("alice", "wrong")))[0], 401, path);
      }
      for (const path of ["ldapsnone", "ldapsstranger", "starttlsnone"]) {
        assert.equal(
          (await get(`${base}/${path}`, basic("alice", "alice-pass")))[0],
          401,
          `${path}: handshake refused`,
        );
      }
      // a certificate and a key that do not make a pair: the filter is not created (its reason is the pipeline's
      // status error), so the route answers 503 instead of trying binds without the certificate
      assert.equal((await get(`${base}/badpair`, basic("alice", "alice-pass")))[0], 503);
    } finally {
      slapd.kill("SIGTERM");
      await slapd.status;
      await echo.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
