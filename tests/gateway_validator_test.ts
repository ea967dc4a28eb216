/**
 * The Validator's basicAuth (an htpasswd file: bcrypt, apr1-MD5, {SHA} and plain entries, re-read when it changes),
 * signature (Easegress's signer: the test signs requests itself following the algorithm) and oauth2 JWT, through a
 * real member; ETCD mode and tokenIntrospect are refused (the pipeline is not run).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, createHmac } from "node:crypto";
import bcrypt from "bcryptjs";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

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

memberTest("gateway Validator: basicAuth htpasswd file, signature, oauth2 jwt", async (procs) => {
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
  const proxy = `- {name: proxy, kind: Proxy, pools: [{servers: [{url: ${echo.url}}]}]}`;
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
    ["etcdmode", `- {name: v, kind: Validator, basicAuth: {mode: ETCD, etcdPrefix: credentials/}}`],
    ["introspect", `- {name: v, kind: Validator, oauth2: {tokenIntrospect: {endPoint: "http://127.0.0.1:1/"}}}`],
  ];
  try {
    for (const [name, filter] of pipelines) {
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: ${name}\nflow: [{filter: v}, {filter: proxy}]\nfilters:\n${filter}\n${proxy}\n`,
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
    assert.deepStrictEqual(await get(`${base}/oauth`, bearer(jwtHS256({ sub: "u", exp }, oauthSecret))), [
      200,
      "user=null body=",
    ]);
    assert.equal((await get(`${base}/oauth`, bearer(jwtHS256({ sub: "u", exp }, "wrong"))))[0], 401);
    assert.equal((await get(`${base}/oauth`, bearer(jwtHS256({ sub: "u", exp: 1000 }, oauthSecret))))[0], 401);
    assert.equal((await get(`${base}/oauth`))[0], 401);

    // refused modes: the pipeline is not run
    assert.equal((await get(`${base}/etcdmode`))[0], 503);
    assert.equal((await get(`${base}/introspect`))[0], 503);
  } finally {
    await echo.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
