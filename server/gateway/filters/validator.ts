/**
 * Validator (kind `Validator`, result `invalid`), methods in Easegress's order, the first failure answering with no
 * body: `headers` (400 when a header has no accepted value), then with 401 `jwt` (HS256/384/512 with a hex secret,
 * RS256/384/512 and ES256/384 with the hex of a PEM public key; the token from the configured cookie or
 * `Authorization: Bearer`; exp and nbf checked), `signature` (Easegress's signer, see signer.ts),
 * `oauth2` (the `Authorization: Bearer` token either a JWT, HS256/384/512 with a hex secret, or checked by
 * `tokenIntrospect`: a form POST of `token` (+ client_id and client_secret, or an Authorization: Basic header) to the
 * endpoint, which must answer `"active": true`; its subject and scope are passed on in `X-Authenticated-Userid` /
 * `X-Authenticated-Scope`) and `basicAuth` (the user is passed on in `X-AUTH-USER`): FILE, an htpasswd file
 * (htpasswd.ts); ETCD, the entries `{key|username, password}` (YAML or JSON, passwords in any htpasswd format) under
 * `/custom-data/<etcdPrefix>` in the cluster store, followed as they change; LDAP, a simple bind as
 * `<uid>=<user>,<baseDN>` (ldap.ts).
 */
import { Buffer } from "node:buffer";
import { createHmac, createPrivateKey, createPublicKey, timingSafeEqual, verify, X509Certificate } from "node:crypto";
import type { Context } from "../context.ts";
import type { Filter, FilterEnv, FilterKind, FilterSpec, StoreView } from "./filter.ts";
import type { Stored, ValidatorSpec } from "../../easegress/specs/mod.ts";
import { checkPassword, HtpasswdFile } from "./htpasswd.ts";
import http from "node:http";
import https from "node:https";
import { parse as parseYaml } from "yaml";
import { ldapBind, type LdapSpec } from "./ldap.ts";
import { SignatureVerifier } from "./signer.ts";

/** A JSON object as decoded from a token, an answer or a stored entry: its fields are checked where they are read. */
type JsonObject = Record<string, unknown>;
type JwtSpec = Stored<NonNullable<ValidatorSpec["jwt"]>>;
type IntrospectSpec = Stored<NonNullable<NonNullable<ValidatorSpec["oauth2"]>["tokenIntrospect"]>>;
type BasicAuthSpec = Stored<NonNullable<ValidatorSpec["basicAuth"]>>;

interface HeaderRule {
  key: string;
  values: string[];
  re: RegExp | null;
}

const HASH: Record<string, string> = { "256": "sha256", "384": "sha384", "512": "sha512" };

/** Where basicAuth's FILE mode reads users when `userFile` is empty (Easegress's default). */
const DEFAULT_USER_FILE = "/etc/apache2/.htpasswd";

class JwtValidator {
  #alg: string;
  #secret: Buffer | null = null;
  #key: ReturnType<typeof createPublicKey> | null = null;
  #cookie: string;

  constructor(spec: JwtSpec) {
    this.#alg = String(spec.algorithm ?? "");
    if (!/^(HS|RS|ES)(256|384|512)$/.test(this.#alg)) throw new Error(`jwt: algorithm ${this.#alg} is not supported`);
    if (this.#alg.startsWith("HS")) {
      if (!spec.secret) throw new Error("jwt: secret is required");
      this.#secret = Buffer.from(String(spec.secret), "hex");
    } else {
      if (!spec.publicKey) throw new Error("jwt: publicKey is required");
      this.#key = createPublicKey(Buffer.from(String(spec.publicKey), "hex").toString("utf8"));
    }
    this.#cookie = String(spec.cookieName ?? "");
  }

  /** The claims when the token is valid, else the reason it is not (a string). */
  check(ctx: Context): JsonObject | string {
    const req = ctx.request;
    let token = this.#cookie !== "" ? req.cookie(this.#cookie) : "";
    if (token === "") {
      const auth = req.headers.get("authorization");
      if (!auth.startsWith("Bearer ")) return "no token found";
      token = auth.slice(7);
    }
    const parts = token.split(".");
    if (parts.length !== 3) return "malformed token";
    let header: JsonObject, claims: JsonObject;
    try {
      header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
      claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
    } catch {
      return "malformed token";
    }
    if (header.alg !== this.#alg) return `unexpected signing method: ${header.alg}`;
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    const sig = Buffer.from(parts[2], "base64url");
    const hash = HASH[this.#alg.slice(2)];
    let ok: boolean;
    if (this.#secret !== null) {
      const want = createHmac(hash, this.#secret).update(signed).digest();
      ok = want.length === sig.length && timingSafeEqual(want, sig);
    } else if (this.#alg.startsWith("ES")) {
      ok = verify(hash, signed, { key: this.#key!, dsaEncoding: "ieee-p1363" }, sig);
    } else ok = verify(hash, signed, this.#key!, sig);
    if (!ok) return "signature is invalid";
    const now = Date.now() / 1000;
    if (typeof claims.exp === "number" && now > claims.exp) return "token is expired";
    if (typeof claims.nbf === "number" && now < claims.nbf) return "token is not valid yet";
    return claims ?? {};
  }
}

/** Where basicAuth's ETCD mode reads users: under this, `etcdPrefix` (default `credentials/`). */
const CUSTOM_DATA_PREFIX = "/custom-data/";
/** The introspection endpoint must answer within this long, or the token is refused. */
export const INTROSPECT_TIMEOUT_MS = 10_000;
/** An introspection answer larger than this is refused (it is a small JSON object). */
const MAX_INTROSPECT_RESPONSE = 64 * 1024;

/** A source of basicAuth users. */
interface UserSource {
  check(user: string, password: string): Promise<boolean>;
  close?(): void;
}

/** basicAuth ETCD mode: the credentials under a store prefix, replaced whenever they change. */
class StoreUsers implements UserSource {
  #users = new Map<string, string>();
  #watch: { close(): void };

  constructor(prefix: string, store: StoreView, log: (msg: string) => void) {
    this.#watch = store.watchPrefix(prefix, (kvs) => {
      const users = new Map<string, string>();
      for (const [k, v] of kvs) {
        let c: JsonObject | null;
        try {
          c = parseYaml(v);
        } catch (err) {
          log(`basicAuth: ${k}: ${(err as Error).message}`);
          continue;
        }
        const user = String(c?.username || c?.key || "");
        const pass = String(c?.password ?? "");
        if (user === "" || pass === "") {
          log(`basicAuth: ${k}: an entry needs "username" or "key", and "password"`);
          continue;
        }
        users.set(user, pass);
      }
      this.#users = users;
    });
  }

  async check(user: string, password: string): Promise<boolean> {
    const hash = this.#users.get(user);
    return hash !== undefined && await checkPassword(hash, password);
  }

  close(): void {
    this.#watch.close();
  }
}

function ldapSpecOf(spec: JsonObject | null | undefined): LdapSpec {
  if (!spec) throw new Error("basicAuth: ldap is required in LDAP mode");
  for (const f of ["host", "port", "baseDN", "uid"]) if (!spec[f]) throw new Error(`basicAuth: ldap: ${f} is required`);
  const pem = (b64: unknown) => b64 ? Buffer.from(String(b64), "base64").toString("utf8") : "";
  return {
    host: String(spec.host),
    port: Number(spec.port),
    baseDN: String(spec.baseDN),
    uid: String(spec.uid),
    useSSL: spec.useSSL === true,
    skipTLS: spec.skipTLS === true,
    insecure: spec.insecure === true,
    serverName: String(spec.serverName ?? ""),
    ...ldapClientCertOf(pem(spec.certBase64), pem(spec.keyBase64)),
  };
}

/** The client certificate for the LDAP server (both given, or none), checked to be a pair. */
function ldapClientCertOf(cert: string, key: string): { cert: string; key: string } {
  if (cert === "" && key === "") return { cert, key };
  try {
    if (cert === "" || key === "") throw new Error("both are required");
    if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) throw new Error("the key does not match");
  } catch (err) {
    throw new Error(`basicAuth: ldap: certBase64/keyBase64: ${(err as Error).message}`);
  }
  return { cert, key };
}

/** `basicAuth` by its mode. */
function basicAuthSource(spec: BasicAuthSpec, env: FilterEnv): UserSource {
  const mode = String(spec.mode ?? "") || "FILE";
  if (mode === "FILE") return new HtpasswdFile(String(spec.userFile ?? "") || DEFAULT_USER_FILE, env.log);
  if (mode === "ETCD") {
    if (env.store === null) throw new Error("basicAuth: ETCD mode needs the cluster store");
    const prefix = CUSTOM_DATA_PREFIX + (String(spec.etcdPrefix ?? "").replace(/^\/+/, "") || "credentials/");
    return new StoreUsers(prefix, env.store, env.log);
  }
  if (mode === "LDAP") {
    const ldap = ldapSpecOf(spec.ldap);
    return {
      check: (user, password) =>
        ldapBind(ldap, user, password).catch((err) => {
          env.log(`basicAuth: ldap ${ldap.host}:${ldap.port}: ${(err as Error).message}`);
          return false;
        }),
    };
  }
  throw new Error(`basicAuth: mode ${mode} is not supported`);
}

/** oauth2.tokenIntrospect: asks the endpoint about each token. */
class TokenIntrospector {
  #url: URL;
  #clientId: string;
  #clientSecret: string;
  #basicAuth: string;
  #insecure: boolean;

  constructor(spec: IntrospectSpec) {
    if (!spec.endPoint) throw new Error("oauth2: tokenIntrospect: endPoint is required");
    try {
      this.#url = new URL(String(spec.endPoint));
    } catch {
      throw new Error(`oauth2: tokenIntrospect: endPoint ${spec.endPoint} is not a URL`);
    }
    this.#clientId = String(spec.clientId ?? "");
    this.#clientSecret = String(spec.clientSecret ?? "");
    this.#basicAuth = String(spec.basicAuth ?? "");
    this.#insecure = spec.insecureTls === true;
  }

  /** The token's subject and scope when it is active; else the reason it is refused (a string). */
  async introspect(token: string): Promise<{ sub: string; scope: string } | string> {
    // the form as Easegress writes it (the values as they are); Content-Type only with client credentials
    let body = "token=" + token;
    const headers: Record<string, string> = {};
    if (this.#clientId !== "") {
      body += `&client_id=${this.#clientId}&client_secret=${this.#clientSecret}`;
      headers["Content-Type"] = "application/x-www-form-urlencoded";
    } else if (this.#basicAuth !== "") headers["Authorization"] = "Basic " + this.#basicAuth;
    let text: string;
    try {
      text = await this.#post(body, headers);
    } catch (err) {
      return `introspection: ${(err as Error).message}`;
    }
    let info: JsonObject | null;
    try {
      info = JSON.parse(text);
    } catch {
      return "introspection: the answer is not JSON";
    }
    if (info?.error) return `${info.error}: ${info.error_description ?? ""}`;
    if (info?.active !== true) return "oauth2 authorization failed, token is inactive";
    return {
      sub: typeof info.sub === "string" ? info.sub : "",
      scope: typeof info.scope === "string" ? info.scope : "",
    };
  }

  #post(body: string, headers: Record<string, string>): Promise<string> {
    const u = this.#url;
    const mod = u.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(u, {
        method: "POST",
        headers: { ...headers, "Content-Length": String(Buffer.byteLength(body)) },
        timeout: INTROSPECT_TIMEOUT_MS,
        ...(u.protocol === "https:" ? { rejectUnauthorized: !this.#insecure } : {}),
      }, (res) => {
        const parts: Buffer[] = [];
        let size = 0;
        res.on("data", (d: Buffer) => {
          size += d.length;
          if (size > MAX_INTROSPECT_RESPONSE) req.destroy(new Error("answer too large"));
          else parts.push(d);
        });
        res.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", reject);
      req.end(body);
    });
  }
}

/** user and password of `Authorization: Basic …`, or null. */
function basicCredentials(auth: string): [string, string] | null {
  if (auth.slice(0, 6).toLowerCase() !== "basic ") return null;
  const text = Buffer.from(auth.slice(6).trim(), "base64").toString("utf8");
  const colon = text.indexOf(":");
  return colon < 0 ? null : [text.slice(0, colon), text.slice(colon + 1)];
}

class Validator implements Filter {
  #headers: HeaderRule[];
  #jwt: JwtValidator | null;
  #signature: SignatureVerifier | null;
  #oauth2Jwt: JwtValidator | null;
  #introspect: TokenIntrospector | null;
  #basicAuth: UserSource | null;

  constructor(spec: FilterSpec<ValidatorSpec>, env: FilterEnv) {
    this.#headers = Object.entries(spec.headers ?? {}).map(([k, v]) => {
      if (!((v?.values?.length ?? 0) > 0) && !v?.regexp) throw new Error(`headers: ${k}: values or regexp is required`);
      return { key: k.toLowerCase(), values: v?.values ?? [], re: v?.regexp ? new RegExp(v.regexp) : null };
    });
    this.#jwt = spec.jwt ? new JwtValidator(spec.jwt) : null;
    this.#signature = spec.signature ? new SignatureVerifier(spec.signature) : null;
    const oauth2 = spec.oauth2;
    if (oauth2 && !oauth2.jwt && !oauth2.tokenIntrospect) throw new Error("oauth2: tokenIntrospect or jwt is required");
    if (oauth2?.jwt && !oauth2.tokenIntrospect && !/^HS(256|384|512)$/.test(String(oauth2.jwt.algorithm))) {
      throw new Error(`oauth2: jwt: algorithm ${oauth2.jwt.algorithm} is not supported`);
    }
    // tokenIntrospect wins over jwt when both are given (as Easegress)
    this.#introspect = oauth2?.tokenIntrospect ? new TokenIntrospector(oauth2.tokenIntrospect) : null;
    this.#oauth2Jwt = oauth2?.jwt && !this.#introspect ? new JwtValidator({ ...oauth2.jwt, cookieName: "" }) : null;
    this.#basicAuth = spec.basicAuth ? basicAuthSource(spec.basicAuth, env) : null;
    if (
      this.#headers.length === 0 && this.#jwt === null && this.#signature === null && this.#oauth2Jwt === null &&
      this.#introspect === null && this.#basicAuth === null
    ) throw new Error("none of the validations are defined");
  }

  #fail(ctx: Context, status: number, tag: string): string {
    const r = ctx.outputResponse();
    r.status = status;
    r.body = new Uint8Array(0);
    ctx.addTag(tag);
    return "invalid";
  }

  handle(ctx: Context): string | Promise<string> {
    const req = ctx.request;
    for (const h of this.#headers) {
      const vs = req.headers.getAll(h.key);
      if (!vs.some((v) => h.values.includes(v) || (h.re !== null && h.re.test(v)))) {
        return this.#fail(ctx, 400, `header validator: header ${h.key} is invalid`);
      }
    }
    if (this.#jwt !== null) {
      const claims = this.#jwt.check(ctx);
      if (typeof claims === "string") return this.#fail(ctx, 401, `JWT validator: ${claims}`);
    }
    if (this.#signature !== null) {
      const err = this.#signature.verify(req);
      if (err !== "") return this.#fail(ctx, 401, `signature validator: ${err}`);
    }
    if (this.#oauth2Jwt !== null) {
      const claims = this.#oauth2Jwt.check(ctx);
      if (typeof claims === "string") return this.#fail(ctx, 401, `oauth2 validator: ${claims}`);
      passOn(ctx, claims.sub, claims.scope);
    }
    if (this.#introspect !== null) return this.#checkIntrospect(ctx, this.#introspect);
    return this.#basicAuth === null ? "" : this.#checkBasicAuth(ctx, this.#basicAuth);
  }

  async #checkIntrospect(ctx: Context, introspector: TokenIntrospector): Promise<string> {
    const auth = ctx.request.headers.get("authorization");
    if (!auth.startsWith("Bearer ")) return this.#fail(ctx, 401, "oauth2 validator: unexpected authorization header");
    const r = await introspector.introspect(auth.slice(7));
    if (typeof r === "string") return this.#fail(ctx, 401, `oauth2 validator: ${r}`);
    passOn(ctx, r.sub, r.scope);
    return this.#basicAuth === null ? "" : this.#checkBasicAuth(ctx, this.#basicAuth);
  }

  close(): void {
    this.#basicAuth?.close?.();
  }

  async #checkBasicAuth(ctx: Context, file: UserSource): Promise<string> {
    const creds = basicCredentials(ctx.request.headers.get("authorization"));
    if (creds === null) return this.#fail(ctx, 401, "http basic validator: no credentials");
    if (!await file.check(creds[0], creds[1])) return this.#fail(ctx, 401, "http basic validator: unauthorized");
    ctx.request.headers.set("X-AUTH-USER", creds[0]);
    return "";
  }
}

/** The OAuth2 subject and scope (strings, when not empty) go upstream as X-Authenticated-Userid / -Scope. */
function passOn(ctx: Context, sub: unknown, scope: unknown): void {
  if (typeof sub === "string" && sub !== "") ctx.request.headers.set("X-Authenticated-Userid", sub);
  if (typeof scope === "string" && scope !== "") ctx.request.headers.set("X-Authenticated-Scope", scope);
}

export const validatorKind: FilterKind<ValidatorSpec> = {
  kind: "Validator",
  results: ["invalid"],
  create: (spec, env) => new Validator(spec, env),
};
