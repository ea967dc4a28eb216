/**
 * Auth tokens, as etcd 3.4's `--auth-token` chooses them:
 * - `simple` (default): a random string and the auth revision; every member learns it from the Authenticate entry of
 *   the log and keeps it in memory for `--auth-token-ttl` seconds (300 by default) after its last use, so it dies
 *   with a restart or when auth is switched off;
 * - `jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256,ttl=5m`: a JSON Web Token with the claims username, revision
 *   and exp, signed with the private key (RSA, RSA-PSS, ECDSA or HMAC); verified by any member holding the key.
 */
import { Buffer } from "node:buffer";
import crypto from "node:crypto";
import type { AuthInfo, TokenInvalidation } from "./store.ts";
import { goDuration } from "../etcd/flags.ts";

/** etcd's default simple-token TTL (--auth-token-ttl), seconds. */
export const DEFAULT_SIMPLE_TOKEN_TTL_S = 300;
/** etcd's default JWT lifetime (ttl option). */
export const DEFAULT_JWT_TTL_MS = 5 * 60_000;
/** When this process started: Authenticate entries proposed before it are replayed ones, whose tokens died. */
const PROCESS_START_MS = Date.now();
/** Letters of a simple token's random part, and its length (etcd's). */
const SIMPLE_TOKEN_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const SIMPLE_TOKEN_LENGTH = 16;

/** What the API layer and the apply need from a token provider. */
export interface TokenProvider extends TokenInvalidation {
  /** The random part a member proposes with an Authenticate entry ("" when the provider needs none). */
  prefix(): string;
  /**
   * Called by every member applying an Authenticate entry: the token it will accept for the user ("" when the
   * answering member makes the token with `sign`).
   */
  assign(username: string, revision: number, prefix: string, issuedMs: number): string;
  /** A self-contained token made by the member that answers Authenticate ("" when `assign` made it). */
  sign(username: string, revision: number): string;
  /** Who a token belongs to; null when it is not (or no longer) valid. */
  info(token: string, currentRevision: number): AuthInfo | null;
  close(): void;
}

/** Simple tokens: random strings each member remembers for a while after their last use. */
export class SimpleTokens implements TokenProvider {
  #tokens = new Map<string, { user: string; expiry: number }>();
  #sweep: ReturnType<typeof setInterval>;

  constructor(readonly ttlMs: number = DEFAULT_SIMPLE_TOKEN_TTL_S * 1000) {
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const [t, e] of this.#tokens) if (e.expiry <= now) this.#tokens.delete(t);
    }, Math.min(1000, ttlMs));
    Deno.unrefTimer(this.#sweep as unknown as number);
  }

  prefix(): string {
    const bytes = crypto.randomBytes(SIMPLE_TOKEN_LENGTH);
    let s = "";
    for (const b of bytes) s += SIMPLE_TOKEN_LETTERS[b % SIMPLE_TOKEN_LETTERS.length];
    return s;
  }

  assign(username: string, revision: number, prefix: string, issuedMs: number): string {
    const token = `${prefix}.${revision}`;
    // simple tokens die with the process, as etcd's: an entry replayed at start-up brings none back
    if (issuedMs >= PROCESS_START_MS) this.#tokens.set(token, { user: username, expiry: Date.now() + this.ttlMs });
    return token;
  }

  sign(): string {
    return "";
  }

  info(token: string, currentRevision: number): AuthInfo | null {
    const e = this.#tokens.get(token);
    if (!e) return null;
    const now = Date.now();
    if (e.expiry <= now) {
      this.#tokens.delete(token);
      return null;
    }
    e.expiry = now + this.ttlMs; // each use extends it, as etcd's simpleTokenKeeper does
    return { username: e.user, revision: currentRevision };
  }

  reset(): void {
    this.#tokens.clear();
  }

  invalidateUser(name: string): void {
    for (const [t, e] of this.#tokens) if (e.user === name) this.#tokens.delete(t);
  }

  close(): void {
    clearInterval(this.#sweep);
  }
}

/** How one JWT sign-method signs and verifies. */
interface JwtAlgorithm {
  hash: string;
  kind: "rsa" | "pss" | "ec" | "hmac";
}

const JWT_ALGORITHMS: Record<string, JwtAlgorithm> = {
  RS256: { hash: "sha256", kind: "rsa" },
  RS384: { hash: "sha384", kind: "rsa" },
  RS512: { hash: "sha512", kind: "rsa" },
  PS256: { hash: "sha256", kind: "pss" },
  PS384: { hash: "sha384", kind: "pss" },
  PS512: { hash: "sha512", kind: "pss" },
  ES256: { hash: "sha256", kind: "ec" },
  ES384: { hash: "sha384", kind: "ec" },
  ES512: { hash: "sha512", kind: "ec" },
  HS256: { hash: "sha256", kind: "hmac" },
  HS384: { hash: "sha384", kind: "hmac" },
  HS512: { hash: "sha512", kind: "hmac" },
};

/** JWT options as `--auth-token jwt,...` gives them. */
export interface JwtOptions {
  signMethod: string;
  /** PEM of the private key (signing and verifying), or of the HMAC secret */
  privateKey?: string;
  /** PEM of the public key or a certificate holding it (verifying) */
  publicKey?: string;
  ttlMs: number;
}

const b64url = (b: Uint8Array | string) => Buffer.from(b).toString("base64url");

/** JSON Web Tokens with etcd's claims (username, revision, exp). */
export class JwtTokens implements TokenProvider {
  readonly #alg: JwtAlgorithm;
  readonly #priv: crypto.KeyObject | Buffer | null;
  readonly #pub: crypto.KeyObject | Buffer;
  readonly #header: string;

  constructor(readonly opts: JwtOptions) {
    const alg = JWT_ALGORITHMS[opts.signMethod];
    if (!alg) throw new Error("auth: invalid auth signature method");
    this.#alg = alg;
    if (alg.kind === "hmac") {
      if (!opts.privateKey) throw new Error("auth: missing key data");
      this.#priv = this.#pub = Buffer.from(opts.privateKey);
    } else {
      this.#priv = opts.privateKey ? crypto.createPrivateKey(opts.privateKey) : null;
      const pub = opts.publicKey ? crypto.createPublicKey(opts.publicKey) : null;
      if (!this.#priv && !pub) throw new Error("auth: missing key data");
      this.#pub = pub ?? crypto.createPublicKey(this.#priv as crypto.KeyObject);
    }
    this.#header = b64url(JSON.stringify({ alg: opts.signMethod, typ: "JWT" }));
  }

  prefix(): string {
    return "";
  }

  assign(): string {
    return "";
  }

  sign(username: string, revision: number): string {
    if (!this.#priv) throw new Error("auth: token signing attempted with verify-only key");
    const exp = Math.floor((Date.now() + this.opts.ttlMs) / 1000);
    const body = `${this.#header}.${b64url(JSON.stringify({ exp, revision, username }))}`;
    return `${body}.${b64url(this.#sign(Buffer.from(body)))}`;
  }

  #sign(data: Buffer): Buffer {
    const { hash, kind } = this.#alg;
    if (kind === "hmac") return crypto.createHmac(hash, this.#priv as Buffer).update(data).digest();
    const key = this.#priv as crypto.KeyObject;
    if (kind === "pss") {
      return crypto.sign(hash, data, {
        key,
        padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
        saltLength: crypto.constants.RSA_PSS_SALTLEN_DIGEST,
      });
    }
    if (kind === "ec") return crypto.sign(hash, data, { key, dsaEncoding: "ieee-p1363" });
    return crypto.sign(hash, data, key);
  }

  #verify(data: Buffer, sig: Buffer): boolean {
    const { hash, kind } = this.#alg;
    if (kind === "hmac") {
      const want = crypto.createHmac(hash, this.#pub as Buffer).update(data).digest();
      return want.length === sig.length && crypto.timingSafeEqual(want, sig);
    }
    const key = this.#pub as crypto.KeyObject;
    if (kind === "pss") {
      return crypto.verify(hash, data, {
        key,
        padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
        saltLength: crypto.constants.RSA_PSS_SALTLEN_AUTO,
      }, sig);
    }
    if (kind === "ec") return crypto.verify(hash, data, { key, dsaEncoding: "ieee-p1363" }, sig);
    return crypto.verify(hash, data, key, sig);
  }

  info(token: string): AuthInfo | null {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      const header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
      if (header.alg !== this.opts.signMethod) return null;
      if (!this.#verify(Buffer.from(`${parts[0]}.${parts[1]}`), Buffer.from(parts[2], "base64url"))) return null;
      const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
      // as Go's jwt: valid through the whole second of exp (exp is in whole seconds)
      if (typeof claims.exp === "number" && Math.floor(Date.now() / 1000) > claims.exp) return null;
      if (typeof claims.username !== "string" || typeof claims.revision !== "number") return null;
      return { username: claims.username, revision: claims.revision };
    } catch {
      return null;
    }
  }

  reset(): void {}
  invalidateUser(): void {}
  close(): void {}
}

/**
 * The provider `--auth-token` names: "simple" (or empty) or "jwt,key=value,...". Key files are read here, so a bad
 * path fails the start as in etcd.
 */
export function tokenProviderFromFlag(flag: string, simpleTtlS: number): TokenProvider {
  const [kind, ...opts] = flag.split(",");
  if (kind === "" || kind === "simple") return new SimpleTokens(simpleTtlS * 1000);
  if (kind !== "jwt") throw new Error(`unknown token type: ${kind}`);
  const m = new Map<string, string>();
  for (const o of opts) {
    const eq = o.indexOf("=");
    if (eq < 0) throw new Error(`auth: invalid auth options (${o})`);
    m.set(o.slice(0, eq), o.slice(eq + 1));
  }
  for (const k of m.keys()) {
    if (!["sign-method", "pub-key", "priv-key", "ttl"].includes(k)) {
      throw new Error(`auth: invalid auth options (${k})`);
    }
  }
  const read = (k: string) => (m.get(k) ? Deno.readTextFileSync(m.get(k)!) : undefined);
  return new JwtTokens({
    signMethod: m.get("sign-method") ?? "",
    privateKey: read("priv-key"),
    publicKey: read("pub-key"),
    ttlMs: m.get("ttl") ? goDuration(m.get("ttl")!, "auth-token") : DEFAULT_JWT_TTL_MS,
  });
}
