/**
 * Verification of Easegress-signed requests (the Validator's `signature`): an AWS-SigV4-style HMAC-SHA256 over a
 * canonical request, with Easegress's names (`X-Algorithm: HMAC-SHA256`, `X-Credential`, `X-Date`, `X-Expires`,
 * `X-SignedHeaders`, `X-Signature`, `X-Content-Sha256`, scope suffix `request`), which `literal` may rename.
 *
 * The signature comes from `Authorization: <algorithm> Credential=<id>/<yyyymmdd>/<scopes…>/<suffix>,
 * SignedHeaders=<a;b>, Signature=<hex>` with the time in the date header, or (a presigned URL) from the query.
 * Canonical request: method, the path with every byte but unreserved and `/` percent-encoded, the query without the
 * signature (and, for a header signature, without the algorithm/credential/date/expires/signed-headers names) with
 * sorted keys and values in Go's `url.Values.Encode` form, `name:value\n` for each signed header (`host` from the Host
 * header; several values joined by `,`, spaces trimmed and runs of spaces collapsed), an empty line, the signed header
 * names, the hex SHA-256 of the body (`UNSIGNED-PAYLOAD` with `excludeBody`). String to sign: algorithm, time
 * (`yyyymmddThhmmssZ`), scope (`yyyymmdd/<scopes…>/<suffix>`), hex SHA-256 of the canonical request. Key: HMAC-SHA256
 * chained from `signingKeyPrefix + secret` over the date, each scope and the suffix.
 *
 * `ignoredHeaders` and `headerHoisting` only change what a signer signs, so verification does not use them.
 */
import { Buffer } from "node:buffer";
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { GwRequest } from "../context.ts";
import { parseGoDuration } from "../../easegress/gotime.ts";
import type { SignerSpec, Stored } from "../../easegress/specs/mod.ts";

/** The configurable names of the scheme (Easegress's `signer.Literal`). */
export interface SignerLiteral {
  scopeSuffix: string;
  algorithmName: string;
  algorithmValue: string;
  signedHeaders: string;
  signature: string;
  date: string;
  expires: string;
  credential: string;
  contentSha256: string;
  signingKeyPrefix: string;
}

/** The defaults of Easegress's signer. */
export const DEFAULT_LITERAL: SignerLiteral = {
  scopeSuffix: "request",
  algorithmName: "X-Algorithm",
  algorithmValue: "HMAC-SHA256",
  signedHeaders: "X-SignedHeaders",
  signature: "X-Signature",
  date: "X-Date",
  expires: "X-Expires",
  credential: "X-Credential",
  contentSha256: "X-Content-Sha256",
  signingKeyPrefix: "",
};

/** The spec fields the verifier reads, as stored (the rest of signer.Spec only matters when signing). */
export type SignatureSpec = Stored<
  Pick<SignerSpec, "literal" | "excludeBody" | "ttl" | "accessKeyId" | "accessKeySecret" | "accessKeys">
>;

const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
const HEX = "0123456789ABCDEF";

/** A byte of a Go string is kept as one UTF-16 unit (0..255) of a "binary string". */
function binary(s: string): string {
  // deno-lint-ignore no-control-regex
  return /^[\x00-\x7f]*$/.test(s) ? s : Buffer.from(s, "utf8").toString("latin1");
}

function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(typeof data === "string" ? Buffer.from(data, "latin1") : data).digest("hex");
}

function hmac(key: Uint8Array | string, data: string): Buffer {
  return createHmac("sha256", typeof key === "string" ? Buffer.from(key, "latin1") : key)
    .update(Buffer.from(data, "latin1")).digest();
}

const isUnreserved = (c: number) =>
  (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 ||
  c === 126;

function percent(c: number): string {
  return "%" + HEX[c >> 4] + HEX[c & 15];
}

/** The canonical URI: every byte but unreserved ones and `/` percent-encoded (a `%` of the path becomes `%25`). */
export function canonicalUri(escapedPath: string): string {
  const p = binary(escapedPath);
  if (p === "") return "/";
  let out = "";
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    out += isUnreserved(c) || c === 47 ? p[i] : percent(c);
  }
  return out;
}

/** Go's `url.QueryEscape` of a binary string. */
function queryEscape(s: string): string {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out += isUnreserved(c) ? s[i] : c === 32 ? "+" : percent(c);
  }
  return out;
}

/** Go's `url.QueryUnescape` into a binary string; null for a bad escape. */
function queryUnescape(s: string): string | null {
  if (!s.includes("%") && !s.includes("+")) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === "+") out += " ";
    else if (ch === "%") {
      const h = s.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(h)) return null;
      out += String.fromCharCode(parseInt(h, 16));
      i += 2;
    } else out += ch;
  }
  return out;
}

/** Go's `url.ParseQuery`, keeping the pairs it accepts (a pair with `;` or a bad escape is dropped). */
export function parseQuery(raw: string): Map<string, string[]> {
  const q = new Map<string, string[]>();
  for (const part of binary(raw).split("&")) {
    if (part === "" || part.includes(";")) continue;
    const eq = part.indexOf("=");
    const k = queryUnescape(eq < 0 ? part : part.slice(0, eq));
    const v = queryUnescape(eq < 0 ? "" : part.slice(eq + 1));
    if (k === null || v === null) continue;
    const vs = q.get(k);
    if (vs) vs.push(v);
    else q.set(k, [v]);
  }
  return q;
}

/** Go's `url.Values.Encode` after sorting each key's values. */
export function encodeQuery(q: Map<string, string[]>): string {
  const parts: string[] = [];
  for (const k of [...q.keys()].sort()) {
    const ek = queryEscape(k);
    for (const v of [...q.get(k)!].sort()) parts.push(`${ek}=${queryEscape(v)}`);
  }
  return parts.join("&");
}

/** Each value trimmed of spaces with runs of spaces collapsed, joined by `,`. */
export function canonicalHeaderValue(values: string[]): string {
  return values.map((v) => binary(v).replace(/^ +| +$/g, "").replace(/ {2,}/g, " ")).join(",");
}

/** Parses `yyyymmddThhmmssZ` (UTC) into milliseconds; NaN when it is not a valid time. */
export function parseSignTime(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return NaN;
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number);
  const t = Date.UTC(y, mo - 1, d, h, mi, se);
  const back = new Date(t);
  return back.getUTCMonth() === mo - 1 && back.getUTCDate() === d && h < 24 && mi < 60 && se < 60 ? t : NaN;
}

/** Formats milliseconds as `yyyymmddThhmmssZ`. */
export function formatSignTime(t: number): string {
  return new Date(t).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/** What a signed request claims, read from its Authorization header or its query. */
interface SignedClaims {
  presign: boolean;
  accessKeyId: string;
  scopes: string[];
  time: number;
  expiresMs: number;
  signedHeaders: string;
  signature: string;
}

/** Verifies requests signed by Easegress's signer (or any client following its algorithm). */
export class SignatureVerifier {
  readonly #lit: SignerLiteral;
  readonly #ttl: number;
  readonly #excludeBody: boolean;
  readonly #keys: Map<string, string>;

  constructor(spec: SignatureSpec) {
    this.#lit = { ...DEFAULT_LITERAL };
    for (const [k, v] of Object.entries(spec.literal ?? {})) {
      if (!(k in DEFAULT_LITERAL)) throw new Error(`signature: literal: unknown field ${k}`);
      if (v !== "" && v !== undefined) (this.#lit as unknown as Record<string, string>)[k] = String(v);
    }
    this.#ttl = spec.ttl ? parseGoDuration(spec.ttl) : 0;
    this.#excludeBody = spec.excludeBody === true;
    this.#keys = new Map(Object.entries(spec.accessKeys ?? {}).map(([k, v]) => [k, String(v)]));
    if (spec.accessKeyId) this.#keys.set(spec.accessKeyId, spec.accessKeySecret ?? "");
    if (this.#keys.size === 0) throw new Error("signature: accessKeys or accessKeyId/accessKeySecret is required");
  }

  #scopes(credential: string): string[] | null {
    const s = credential.split("/");
    return s.length < 3 ? null : s;
  }

  #fromHeader(req: GwRequest, auth: string): SignedClaims | string {
    const bad = "invalid header format: Authorization";
    const sp = auth.indexOf(" ");
    if (sp < 0 || auth.slice(0, sp) !== this.#lit.algorithmValue) return bad;
    const parts = auth.slice(sp + 1).split(",").map((p) => p.trim());
    if (parts.length !== 3) return bad;
    if (!parts[0].startsWith("Credential=")) return bad;
    const scopes = this.#scopes(parts[0].slice(11));
    if (scopes === null) return bad;
    if (!parts[1].startsWith("SignedHeaders=") || !parts[2].startsWith("Signature=")) return bad;
    const date = req.headers.get(this.#lit.date.toLowerCase());
    if (!date.startsWith(scopes[1])) return "signature timestamp mismatch";
    const time = parseSignTime(date);
    if (Number.isNaN(time)) return `invalid header format: ${this.#lit.date}`;
    return {
      presign: false,
      accessKeyId: scopes[0],
      scopes: scopes.slice(2, -1),
      time,
      expiresMs: 0,
      signedHeaders: parts[1].slice(14),
      signature: parts[2].slice(10),
    };
  }

  #fromQuery(q: Map<string, string[]>): SignedClaims | string {
    const l = this.#lit;
    const first = (k: string) => q.get(k)?.[0] ?? "";
    if (first(l.algorithmName) !== l.algorithmValue) return `invalid query value: ${l.algorithmName}`;
    const scopes = this.#scopes(first(l.credential));
    if (scopes === null) return `invalid query value: ${l.credential}`;
    const date = first(l.date);
    if (!date.startsWith(scopes[1])) return "signature timestamp mismatch";
    const time = parseSignTime(date);
    if (Number.isNaN(time)) return `invalid query value: ${l.date}`;
    const expires = first(l.expires);
    if (!/^[0-9]+$/.test(expires)) return `invalid query value: ${l.expires}`;
    return {
      presign: true,
      accessKeyId: scopes[0],
      scopes: scopes.slice(2, -1),
      time,
      expiresMs: Number(expires) * 1000,
      signedHeaders: first(l.signedHeaders),
      signature: first(l.signature),
    };
  }

  /** "" when the request carries a valid, unexpired signature by a known access key; else the reason. */
  verify(req: GwRequest, now = Date.now()): string {
    const l = this.#lit;
    const query = parseQuery(req.query);
    const auth = req.headers.get("authorization");
    const c = auth !== "" ? this.#fromHeader(req, auth) : this.#fromQuery(query);
    if (typeof c === "string") return c;

    const age = now - c.time;
    if (this.#ttl > 0 && (age < -this.#ttl || age > this.#ttl)) return "signature expired";
    if (c.presign && age > c.expiresMs) return "signature expired";
    const secret = this.#keys.get(c.accessKeyId);
    if (secret === undefined) return "access-key-id not found";

    const date = formatSignTime(c.time).slice(0, 8);
    const scope = [date, ...c.scopes, l.scopeSuffix].join("/");
    // The query as the signer saw it: its own parameters are those it set (presigned) or none (header).
    query.delete(l.signature);
    if (c.presign) {
      query.set(l.algorithmName, [l.algorithmValue]);
      query.set(l.date, [formatSignTime(c.time)]);
      query.set(l.credential, [`${c.accessKeyId}/${scope}`]);
      query.set(l.expires, [String(c.expiresMs / 1000)]);
      query.set(l.signedHeaders, [c.signedHeaders]);
    } else {
      for (const k of [l.algorithmName, l.credential, l.date, l.expires, l.signedHeaders]) query.delete(k);
    }
    let headers = "";
    for (const name of c.signedHeaders.split(";")) {
      const value = name === "host"
        ? this.#host(req)
        : name.toLowerCase() === "host"
        ? ""
        : canonicalHeaderValue(req.headers.getAll(name.toLowerCase()));
      headers += `${binary(name)}:${value}\n`;
    }
    const bodyHash = this.#excludeBody || req.stream !== null ? UNSIGNED_PAYLOAD : sha256Hex(req.body);
    const canonical = `${req.method}\n${canonicalUri(req.path)}\n${encodeQuery(query)}\n${headers}\n` +
      `${binary(c.signedHeaders)}\n${bodyHash}`;
    const toSign = `${l.algorithmValue}\n${formatSignTime(c.time)}\n${scope}\n${sha256Hex(canonical)}`;

    let key = hmac(binary(l.signingKeyPrefix + secret), date);
    for (const s of c.scopes) key = hmac(key, s);
    key = hmac(key, l.scopeSuffix);
    const want = Buffer.from(hmac(key, toSign).toString("hex"));
    const got = Buffer.from(c.signature);
    return want.length === got.length && timingSafeEqual(want, got) ? "" : "signature verification failed";
  }

  /** The Host header, with an empty port (`host:`) removed as Go's signer does. */
  #host(req: GwRequest): string {
    const h = binary(req.host);
    return h.endsWith(":") && h.lastIndexOf(":") > h.lastIndexOf("]") ? h.slice(0, -1) : h;
  }
}
