/**
 * HTTP/1.1 message heads (RFC 9112), parsed strictly from bytes: request heads for the server side, response heads
 * for the upstream client. Both sides share the header list and the chunked-body decoder.
 *
 * Strictness is the defence against request smuggling: a head with both Content-Length and Transfer-Encoding, a
 * Transfer-Encoding other than `chunked`, differing Content-Length values, a header line folded or with whitespace
 * before the colon, a bare LF or CR, or a malformed chunk size is refused (400 and the connection is closed), so no two
 * parsers on the path can disagree about where a message ends.
 */

/** A head larger than this is refused with 431 (Go's http.DefaultMaxHeaderBytes plus its 4 KiB slack). */
export const MAX_HEAD_BYTES = 1 << 20;
/** A chunk-size line (hex digits and extensions) longer than this is malformed: stops unbounded chunk-line reads. */
export const MAX_CHUNK_LINE = 4096;
/** At most this many header lines: a flood of tiny headers costs CPU per line long before the byte limit. */
export const MAX_HEADER_COUNT = 1000;

const TOKEN = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN[c.charCodeAt(0)] = 1;
}

/** Header fields in arrival order: original names for writing, lower-case names for lookups. */
export class HeaderList {
  names: string[] = [];
  keys: string[] = [];
  values: string[] = [];

  get size(): number {
    return this.names.length;
  }

  /** The first value of a header (lower-case key), or "" when absent. */
  get(key: string): string {
    const i = this.keys.indexOf(key);
    return i < 0 ? "" : this.values[i];
  }

  has(key: string): boolean {
    return this.keys.indexOf(key) >= 0;
  }

  /** Every value of a header. */
  getAll(key: string): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.keys.length; i++) if (this.keys[i] === key) out.push(this.values[i]);
    return out;
  }

  /** Appends a field; `key` is the name in lower case (given when known, to save the lower-casing). */
  add(name: string, value: string, key = name.toLowerCase()): void {
    this.names.push(name);
    this.keys.push(key);
    this.values.push(value);
  }

  /** Replaces every value of the header with one. */
  set(name: string, value: string): void {
    this.del(name);
    this.add(name, value);
  }

  del(name: string): void {
    const key = name.toLowerCase();
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] === key) {
        this.names.splice(i, 1);
        this.keys.splice(i, 1);
        this.values.splice(i, 1);
      }
    }
  }

  clone(): HeaderList {
    const h = new HeaderList();
    h.names = this.names.slice();
    h.keys = this.keys.slice();
    h.values = this.values.slice();
    return h;
  }

  /** `Name: value\r\n` lines for every header whose key is neither in `skip` nor in `alsoSkip`. */
  serialize(skip?: Set<string>, alsoSkip?: readonly string[]): string {
    let s = "";
    for (let i = 0; i < this.names.length; i++) {
      const k = this.keys[i];
      if (skip !== undefined && skip.has(k)) continue;
      if (alsoSkip !== undefined && alsoSkip.indexOf(k) >= 0) continue;
      s += this.names[i] + ": " + this.values[i] + "\r\n";
    }
    return s;
  }

  /** The length of `serialize(skip, alsoSkip)`. */
  serializedLength(skip: Set<string>, alsoSkip?: readonly string[]): number {
    let n = 0;
    for (let i = 0; i < this.names.length; i++) {
      const k = this.keys[i];
      if (skip.has(k) || (alsoSkip !== undefined && alsoSkip.indexOf(k) >= 0)) continue;
      n += this.names[i].length + this.values[i].length + 4;
    }
    return n;
  }

  /** `serialize(skip, alsoSkip)` written into dst at `o` (see putText; dst has room); returns the end offset. */
  serializeInto(dst: Uint8Array, o: number, skip: Set<string>, alsoSkip?: readonly string[]): number {
    for (let i = 0; i < this.names.length; i++) {
      const k = this.keys[i];
      if (skip.has(k) || (alsoSkip !== undefined && alsoSkip.indexOf(k) >= 0)) continue;
      o = putText(dst, o, this.names[i]);
      dst[o++] = 58; // ':'
      dst[o++] = 32;
      o = putText(dst, o, this.values[i]);
      dst[o++] = 13;
      dst[o++] = 10;
    }
    return o;
  }

  /** Removes, in place, every header whose key is in `skip` or in `alsoSkip`. */
  removeKeys(skip: Set<string>, alsoSkip?: readonly string[]): void {
    const { names, keys, values } = this;
    let o = 0;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (skip.has(k) || (alsoSkip !== undefined && alsoSkip.indexOf(k) >= 0)) continue;
      if (o !== i) {
        names[o] = names[i];
        keys[o] = k;
        values[o] = values[i];
      }
      o++;
    }
    names.length = keys.length = values.length = o;
  }

  /** Go's http.Header JSON shape: canonical name → values. */
  toRecord(): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (let i = 0; i < this.names.length; i++) (out[canonicalName(this.names[i])] ??= []).push(this.values[i]);
    return out;
  }
}

/**
 * Writes head text into dst at `o` (dst has room), one byte per character: the latin1 bytes it was parsed from, and of
 * any other character its low byte (as encodeHeadInto); returns the end offset. Pieces are written where they are, no
 * concatenated head string is built and encoded.
 */
export function putText(dst: Uint8Array, o: number, s: string): number {
  for (let i = 0; i < s.length; i++) dst[o++] = s.charCodeAt(i);
  return o;
}

/** Go's textproto.CanonicalMIMEHeaderKey: `content-type` → `Content-Type`. */
export function canonicalName(name: string): string {
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, d, c) => d + c.toUpperCase());
}

/**
 * The header names a Connection header lists (lower case): hop-by-hop for this message as well (RFC 9110 §7.6.1);
 * undefined when there is no Connection header. The lists are frozen and shared by every message with the same header
 * value (`keep-alive` on nearly every upstream response): no array and no strings per request. At most
 * CONNECTION_TOKENS_CACHED distinct values are kept (the value comes from peers); others get a fresh frozen list.
 */
export function connectionTokens(headers: HeaderList): readonly string[] | undefined {
  const v = headers.get("connection");
  if (v === "") return undefined;
  let out = tokenLists.get(v);
  if (out !== undefined) return out;
  out = Object.freeze(v.split(",").map((n) => n.trim().toLowerCase()));
  if (tokenLists.size < CONNECTION_TOKENS_CACHED) tokenLists.set(v, out);
  return out;
}

/** How many distinct Connection header values connectionTokens keeps the lists of. */
export const CONNECTION_TOKENS_CACHED = 64;
const tokenLists = new Map<string, readonly string[]>();

/** Hop-by-hop headers a proxy never forwards (RFC 9110 §7.6.1, as Go's httputil lists them). */
export const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** How a message body is framed. */
export const enum BodyKind {
  None = 0,
  Length = 1,
  Chunked = 2,
  /** until the connection closes (responses only) */
  Close = 3,
}

/** A parse failure: the status to answer with (400, 431, 501...) and why. */
export class HttpParseError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/**
 * Index just past the CRLFCRLF (or the LF LF, refused later as a bare LF) ending a head in buf[from, end), or -1 when
 * the head is not complete yet. A plain loop: heads are short, and a builtin call per line costs more.
 */
export function findHeadEnd(buf: Uint8Array, from: number, end: number): number {
  for (let i = from + 1; i < end; i++) {
    if (buf[i] !== 10) continue;
    if (buf[i - 1] === 10) return i + 1;
    if (i >= 3 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder();

/** Head bytes as text, one character per byte: UTF-8 decoding is the fast path for ASCII, latin1 the exact one. */
export function headText(buf: Uint8Array, start: number, end: number): string {
  const view = buf.subarray(start, end);
  const s = utf8.decode(view);
  return s.length === end - start ? s : latin1.decode(view);
}

/** A parsed request head. */
export interface RequestHead {
  method: string;
  /** the raw request-target */
  target: string;
  /** HTTP/1.0 or HTTP/1.1 */
  proto: string;
  headers: HeaderList;
  bodyKind: BodyKind;
  contentLength: number;
  /** the client asked to close after this request (or HTTP/1.0 without keep-alive) */
  close: boolean;
}

/** A parsed response head. */
export interface ResponseHead {
  status: number;
  proto: string;
  headers: HeaderList;
  bodyKind: BodyKind;
  contentLength: number;
  close: boolean;
}

/**
 * Where each line of the head text ends (the index of its CR), filled by `headLines` for the parse in progress: the
 * head is not split into line strings (parsing is synchronous, so one array serves every parse).
 */
const lineEnds: number[] = [];

/**
 * Finds the lines of head text into `lineEnds`, refusing bare CR / LF; returns their number without the final empty
 * line. Line i spans [i === 0 ? 0 : lineEnds[i - 1] + 2, lineEnds[i]).
 */
function headLines(text: string): number {
  if (!text.endsWith("\r\n\r\n")) throw new HttpParseError(400, "bare LF in head");
  lineEnds.length = 0;
  let p = 0;
  while (p < text.length) {
    const lf = text.indexOf("\n", p);
    // the first CR from the line's start is the one right before its LF: no bare CR or LF inside the line
    if (text.indexOf("\r", p) !== lf - 1) throw new HttpParseError(400, "bare CR or LF in head");
    lineEnds.push(lf - 1);
    p = lf + 1;
  }
  return lineEnds.length - 1;
}

/**
 * Header names most heads carry, by length: a name spelled exactly as here (or in lower case) is taken as this constant
 * with its constant key, so it is neither sliced out of the head nor lower-cased (nginx's five response fields and the
 * client's Host were six of each per proxied request).
 */
const COMMON_NAMES: [name: string, key: string][][] = [];
for (
  const n of [
    "Host",
    "Date",
    "Vary",
    "ETag",
    "Accept",
    "Server",
    "Cookie",
    "Origin",
    "Expires",
    "Referer",
    "Upgrade",
    "Location",
    "Connection",
    "Keep-Alive",
    "Set-Cookie",
    "User-Agent",
    "Content-Type",
    "Cache-Control",
    "Last-Modified",
    "Authorization",
    "Content-Length",
    "Accept-Encoding",
    "Accept-Language",
    "X-Forwarded-For",
    "Content-Encoding",
    "Transfer-Encoding",
  ]
) {
  const key = n.toLowerCase();
  (COMMON_NAMES[n.length] ??= []).push([n, key], [key, key]);
}

/** The [name, key] of the common name (see COMMON_NAMES) text[start, end) spells exactly, if it is one. */
function commonName(text: string, start: number, end: number): [string, string] | undefined {
  const list = COMMON_NAMES[end - start];
  if (list === undefined) return undefined;
  for (let i = 0; i < list.length; i++) {
    const n = list[i][0];
    let j = 0;
    while (j < n.length && text.charCodeAt(start + j) === n.charCodeAt(j)) j++;
    if (j === n.length) return list[i];
  }
  return undefined;
}

/** Parses header lines 1 .. count-1 of the head text. */
function parseHeaderLines(text: string, count: number, headers: HeaderList): void {
  if (count > MAX_HEADER_COUNT + 1) throw new HttpParseError(431, "too many header fields");
  for (let i = 1; i < count; i++) {
    const start = lineEnds[i - 1] + 2;
    const end = lineEnds[i];
    const colon = text.indexOf(":", start);
    if (colon <= start || colon >= end) throw new HttpParseError(400, "malformed header line");
    for (let j = start; j < colon; j++) {
      const c = text.charCodeAt(j);
      if (c >= 128 || TOKEN[c] === 0) throw new HttpParseError(400, "invalid header name");
    }
    let a = colon + 1, b = end;
    while (a < b && (text.charCodeAt(a) === 32 || text.charCodeAt(a) === 9)) a++;
    while (b > a && (text.charCodeAt(b - 1) === 32 || text.charCodeAt(b - 1) === 9)) b--;
    for (let j = a; j < b; j++) {
      const c = text.charCodeAt(j);
      if ((c < 32 && c !== 9) || c === 127) throw new HttpParseError(400, "invalid header value");
    }
    const common = commonName(text, start, colon);
    if (common === undefined) headers.add(text.slice(start, colon), text.slice(a, b));
    else headers.add(common[0], text.slice(a, b), common[1]);
  }
}

/** Content-Length / Transfer-Encoding → framing, refusing every ambiguous combination. */
function framing(headers: HeaderList, isRequest: boolean): [BodyKind, number] {
  let te = "", cl = -1, teCount = 0;
  for (let i = 0; i < headers.keys.length; i++) {
    const k = headers.keys[i];
    if (k === "transfer-encoding") {
      te = teCount === 0 ? headers.values[i].toLowerCase() : `${te},${headers.values[i].toLowerCase()}`;
      teCount++;
    } else if (k === "content-length") {
      const v = headers.values[i];
      if (v.length === 0 || v.length > 15 || !/^[0-9]+$/.test(v)) throw new HttpParseError(400, "bad Content-Length");
      const n = Number(v);
      if (cl >= 0 && cl !== n) throw new HttpParseError(400, "conflicting Content-Length");
      cl = n;
    }
  }
  if (teCount > 0) {
    if (cl >= 0) throw new HttpParseError(400, "both Transfer-Encoding and Content-Length");
    if (te !== "chunked") {
      // RFC 9112 6.3: chunked not the final coding ("xchunked") leaves the length unknown → 400; 6.1: a coding
      // before it (gzip, a second chunked) is one we do not implement → 501
      const last = te.slice(te.lastIndexOf(",") + 1).trim();
      if (isRequest && last !== "chunked") throw new HttpParseError(400, "bad Transfer-Encoding: chunked must be last");
      throw new HttpParseError(isRequest ? 501 : 502, "unsupported transfer encoding");
    }
    return [BodyKind.Chunked, -1];
  }
  if (cl >= 0) return [cl === 0 ? BodyKind.None : BodyKind.Length, cl];
  return [isRequest ? BodyKind.None : BodyKind.Close, -1];
}

function wantsClose(proto: string, headers: HeaderList): boolean {
  const c = headers.get("connection").toLowerCase();
  if (proto === "HTTP/1.0") return c.indexOf("keep-alive") < 0;
  return c.indexOf("close") >= 0;
}

/** Parses a request head (buf[start, end) ends with CRLFCRLF). */
export function parseRequestHead(buf: Uint8Array, start: number, end: number): RequestHead {
  const text = headText(buf, start, end);
  const count = headLines(text);
  const rl = text.slice(0, lineEnds[0]);
  const sp1 = rl.indexOf(" ");
  const sp2 = rl.indexOf(" ", sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || rl.indexOf(" ", sp2 + 1) >= 0) throw new HttpParseError(400, "malformed request line");
  const method = rl.slice(0, sp1);
  for (let j = 0; j < method.length; j++) {
    const c = method.charCodeAt(j);
    if (c >= 128 || TOKEN[c] === 0) throw new HttpParseError(400, "invalid method");
  }
  const target = rl.slice(sp1 + 1, sp2);
  const proto = rl.slice(sp2 + 1);
  if (proto !== "HTTP/1.1" && proto !== "HTTP/1.0") {
    throw new HttpParseError(proto.startsWith("HTTP/") ? 505 : 400, "bad protocol");
  }
  if (target.length === 0) throw new HttpParseError(400, "empty request target");
  for (let j = 0; j < target.length; j++) {
    const c = target.charCodeAt(j);
    if (c <= 32 || c >= 127) throw new HttpParseError(400, "invalid request target");
  }
  if (target.charCodeAt(0) !== 47 && target !== "*" && !/^https?:\/\//i.test(target)) {
    throw new HttpParseError(400, "invalid request target");
  }
  const headers = new HeaderList();
  parseHeaderLines(text, count, headers);
  if (proto === "HTTP/1.1") {
    let hosts = 0;
    for (const k of headers.keys) if (k === "host") hosts++;
    if (hosts !== 1) {
      throw new HttpParseError(400, hosts === 0 ? "missing required Host header" : "too many Host headers");
    }
  }
  const [bodyKind, contentLength] = framing(headers, true);
  return { method, target, proto, headers, bodyKind, contentLength, close: wantsClose(proto, headers) };
}

/** Parses a response head for a request with this method. */
export function parseResponseHead(buf: Uint8Array, start: number, end: number, method: string): ResponseHead {
  const text = headText(buf, start, end);
  const count = headLines(text);
  const sl = text.slice(0, lineEnds[0]);
  if (!sl.startsWith("HTTP/1.") || sl.charCodeAt(8) !== 32) throw new HttpParseError(502, "malformed status line");
  const proto = sl.slice(0, 8);
  const status = Number(sl.slice(9, 12));
  if (!(status >= 100 && status <= 999) || (sl.length > 12 && sl.charCodeAt(12) !== 32)) {
    throw new HttpParseError(502, "malformed status code");
  }
  const headers = new HeaderList();
  parseHeaderLines(text, count, headers);
  let [bodyKind, contentLength] = framing(headers, false);
  if (method === "HEAD" || status === 204 || status === 304 || status < 200) {
    bodyKind = BodyKind.None;
    contentLength = status === 204 ? 0 : contentLength;
  }
  return { status, proto, headers, bodyKind, contentLength, close: wantsClose(proto, headers) };
}

/**
 * Incremental decoder of a chunked body out of a byte buffer. `decode` consumes what it can of buf[pos, end) and
 * returns the new position; `done` is set after the last chunk and its trailers.
 */
export class ChunkedDecoder {
  /** bytes left in the current chunk's data; -1 = expecting a size line; -2 = expecting the CRLF after data */
  #left = -1;
  #trailers = false;
  done = false;
  parts: Uint8Array[] = [];
  size = 0;

  /** Throws HttpParseError on malformed framing. */
  decode(buf: Uint8Array, pos: number, end: number, limit: number): number {
    while (pos < end && !this.done) {
      if (this.#trailers) {
        const lf = buf.indexOf(10, pos);
        if (lf < 0 || lf >= end) {
          if (end - pos > MAX_CHUNK_LINE) throw new HttpParseError(400, "trailer line too long");
          return pos;
        }
        if (lf === pos || buf[lf - 1] !== 13) throw new HttpParseError(400, "malformed trailer");
        if (lf === pos + 1) this.done = true;
        pos = lf + 1;
      } else if (this.#left === -1) {
        const lf = buf.indexOf(10, pos);
        if (lf < 0 || lf >= end) {
          if (end - pos > MAX_CHUNK_LINE) throw new HttpParseError(400, "chunk size line too long");
          return pos;
        }
        if (lf === pos || buf[lf - 1] !== 13) throw new HttpParseError(400, "malformed chunk size line");
        let n = 0, digits = 0, i = pos;
        for (; i < lf - 1; i++) {
          const c = buf[i];
          const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
          if (d < 0) break;
          n = n * 16 + d;
          if (++digits > 12) throw new HttpParseError(400, "chunk size too large");
        }
        if (digits === 0 || (i < lf - 1 && buf[i] !== 59 /* ; */)) {
          throw new HttpParseError(400, "malformed chunk size");
        }
        pos = lf + 1;
        if (n === 0) this.#trailers = true;
        else {
          if (this.size + n > limit && limit >= 0) throw new HttpParseError(413, "body too large");
          this.#left = n;
        }
      } else if (this.#left === -2) {
        if (end - pos < 2) return pos;
        if (buf[pos] !== 13 || buf[pos + 1] !== 10) throw new HttpParseError(400, "missing CRLF after chunk data");
        pos += 2;
        this.#left = -1;
      } else {
        const take = Math.min(this.#left, end - pos);
        this.parts.push(buf.slice(pos, pos + take));
        this.size += take;
        this.#left -= take;
        pos += take;
        if (this.#left === 0) this.#left = -2;
      }
    }
    return pos;
  }

  /** The decoded body in one array. */
  body(): Uint8Array {
    return concat(this.parts, this.size);
  }
}

/** Joins byte arrays. */
export function concat(parts: Uint8Array[], size: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Reason phrases of the status line. */
export const STATUS_TEXT: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Request Entity Too Large",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  499: "Client Closed Request",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

let dateSecond = 0;
let dateText = "";
let dateLine = "";
/** The Date header value, formatted once per second. */
export function httpDate(): string {
  const now = Date.now();
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateText = new Date(now).toUTCString();
    dateLine = "Date: " + dateText + "\r\n";
  }
  return dateText;
}

/** The Date header line (`Date: ...\r\n`), formatted once per second. */
export function httpDateLine(): string {
  httpDate();
  return dateLine;
}

const statusLines: string[] = [];
/** `HTTP/1.1 <status> <reason>\r\n`, built once per status. */
export function statusLine(status: number): string {
  return statusLines[status] ??= "HTTP/1.1 " + status + " " + (STATUS_TEXT[status] ?? "status code " + status) + "\r\n";
}
