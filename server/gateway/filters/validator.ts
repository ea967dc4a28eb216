/**
 * Validator (kind `Validator`, result `invalid`), methods in Easegress's order, the first failure answering with no
 * body: `headers` (400 when a header has no accepted value), then with 401 `jwt` (HS256/384/512 with a hex secret,
 * RS256/384/512 and ES256/384 with the hex of a PEM public key; the token from the configured cookie or
 * `Authorization: Bearer`; exp and nbf checked), `signature` (Easegress's signer, see signer.ts), `oauth2.jwt`
 * (HS256/384/512, hex secret, `Authorization: Bearer`) and `basicAuth` in FILE mode (an htpasswd file, see
 * htpasswd.ts; the user is passed on in `X-AUTH-USER`).
 *
 * Refused as not supported at creation: `oauth2.tokenIntrospect` (a call to an outside endpoint per request), and
 * `basicAuth` modes ETCD and LDAP (a filter has no access to the store, nor an LDAP client).
 */
import { Buffer } from "node:buffer";
import { createHmac, createPublicKey, timingSafeEqual, verify } from "node:crypto";
import type { Context } from "../context.ts";
import type { Filter, FilterEnv, FilterKind, FilterSpec } from "./filter.ts";
import { HtpasswdFile } from "./htpasswd.ts";
import { SignatureVerifier } from "./signer.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

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

  constructor(spec: Obj) {
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

  /** "" when valid, else the reason. */
  check(ctx: Context): string {
    const req = ctx.request;
    let token = this.#cookie !== "" ? req.cookie(this.#cookie) : "";
    if (token === "") {
      const auth = req.headers.get("authorization");
      if (!auth.startsWith("Bearer ")) return "no token found";
      token = auth.slice(7);
    }
    const parts = token.split(".");
    if (parts.length !== 3) return "malformed token";
    let header: Obj, claims: Obj;
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
    return "";
  }
}

/** `basicAuth` in FILE mode; other modes are refused. */
function basicAuthFile(spec: Obj, env: FilterEnv): HtpasswdFile {
  const mode = String(spec.mode ?? "") || "FILE";
  if (mode !== "FILE") {
    throw new Error(`basicAuth: mode ${mode} is not supported (only FILE: filters have no access to the store)`);
  }
  return new HtpasswdFile(String(spec.userFile ?? "") || DEFAULT_USER_FILE, env.log);
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
  #basicAuth: HtpasswdFile | null;

  constructor(spec: FilterSpec, env: FilterEnv) {
    this.#headers = Object.entries((spec.headers ?? {}) as Obj).map(([k, v]) => {
      if (!(v?.values?.length > 0) && !v?.regexp) throw new Error(`headers: ${k}: values or regexp is required`);
      return { key: k.toLowerCase(), values: v.values ?? [], re: v.regexp ? new RegExp(v.regexp) : null };
    });
    this.#jwt = spec.jwt ? new JwtValidator(spec.jwt) : null;
    this.#signature = spec.signature ? new SignatureVerifier(spec.signature) : null;
    if (spec.oauth2?.tokenIntrospect) throw new Error("oauth2: tokenIntrospect is not supported (use oauth2.jwt)");
    if (spec.oauth2 && !spec.oauth2.jwt) throw new Error("oauth2: jwt is required");
    if (spec.oauth2 && !/^HS(256|384|512)$/.test(String(spec.oauth2.jwt.algorithm))) {
      throw new Error(`oauth2: jwt: algorithm ${spec.oauth2.jwt.algorithm} is not supported`);
    }
    this.#oauth2Jwt = spec.oauth2 ? new JwtValidator({ ...spec.oauth2.jwt, cookieName: "" }) : null;
    this.#basicAuth = spec.basicAuth ? basicAuthFile(spec.basicAuth, env) : null;
    if (
      this.#headers.length === 0 && this.#jwt === null && this.#signature === null && this.#oauth2Jwt === null &&
      this.#basicAuth === null
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
      const err = this.#jwt.check(ctx);
      if (err !== "") return this.#fail(ctx, 401, `JWT validator: ${err}`);
    }
    if (this.#signature !== null) {
      const err = this.#signature.verify(req);
      if (err !== "") return this.#fail(ctx, 401, `signature validator: ${err}`);
    }
    if (this.#oauth2Jwt !== null) {
      const err = this.#oauth2Jwt.check(ctx);
      if (err !== "") return this.#fail(ctx, 401, `oauth2 validator: ${err}`);
    }
    return this.#basicAuth === null ? "" : this.#checkBasicAuth(ctx, this.#basicAuth);
  }

  async #checkBasicAuth(ctx: Context, file: HtpasswdFile): Promise<string> {
    const creds = basicCredentials(ctx.request.headers.get("authorization"));
    if (creds === null) return this.#fail(ctx, 401, "http basic validator: no credentials");
    if (!await file.check(creds[0], creds[1])) return this.#fail(ctx, 401, "http basic validator: unauthorized");
    ctx.request.headers.set("X-AUTH-USER", creds[0]);
    return "";
  }
}

export const validatorKind: FilterKind = {
  kind: "Validator",
  results: ["invalid"],
  create: (spec, env) => new Validator(spec, env),
};
