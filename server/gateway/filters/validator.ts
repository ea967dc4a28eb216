/**
 * Validator (kind `Validator`, result `invalid`): `headers` (400 when a header has no accepted value) and `jwt`
 * (HS256/384/512 with a hex secret, RS256/384/512 and ES256/384 with the hex of a PEM public key; the token from the
 * configured cookie or `Authorization: Bearer`; exp and nbf checked; 401). The other methods (signature, oauth2,
 * basicAuth) are refused as not supported.
 */
import { Buffer } from "node:buffer";
import { createHmac, createPublicKey, timingSafeEqual, verify } from "node:crypto";
import type { Context } from "../context.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

interface HeaderRule {
  key: string;
  values: string[];
  re: RegExp | null;
}

const HASH: Record<string, string> = { "256": "sha256", "384": "sha384", "512": "sha512" };

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

class Validator implements Filter {
  #headers: HeaderRule[];
  #jwt: JwtValidator | null;

  constructor(spec: FilterSpec) {
    for (const k of ["signature", "oauth2", "basicAuth"]) {
      if (spec[k]) throw new Error(`Validator ${k} is not supported`);
    }
    this.#headers = Object.entries((spec.headers ?? {}) as Obj).map(([k, v]) => {
      if (!(v?.values?.length > 0) && !v?.regexp) throw new Error(`headers: ${k}: values or regexp is required`);
      return { key: k.toLowerCase(), values: v.values ?? [], re: v.regexp ? new RegExp(v.regexp) : null };
    });
    this.#jwt = spec.jwt ? new JwtValidator(spec.jwt) : null;
    if (this.#headers.length === 0 && this.#jwt === null) throw new Error("none of the validations are defined");
  }

  #fail(ctx: Context, status: number, tag: string): string {
    const r = ctx.outputResponse();
    r.status = status;
    r.body = new Uint8Array(0);
    ctx.addTag(tag);
    return "invalid";
  }

  handle(ctx: Context): string {
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
    return "";
  }
}

export const validatorKind: FilterKind = {
  kind: "Validator",
  results: ["invalid"],
  create: (spec) => new Validator(spec),
};
