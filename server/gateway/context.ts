/**
 * The request context a pipeline runs on (Easegress `pkg/context`): requests and responses per namespace, the data
 * map and the tags of the access log. The HTTP server seeds `requests.DEFAULT`; only `responses.DEFAULT` is sent.
 */
import { HeaderList } from "./http1.ts";

export const DEFAULT_NS = "DEFAULT";
const EMPTY = new Uint8Array(0);

/**
 * A request body read once, as it arrives (`clientMaxBodySize: -1`, Easegress's stream payload): Proxy forwards it
 * without holding it; filters that need the whole body treat it as Easegress does (see README.md).
 */
export interface BodyStream {
  /** the declared length (Content-Length), or -1 when unknown (chunked, HTTP/2 without content-length) */
  readonly length: number;
  /** bytes handed out so far */
  readonly consumed: number;
  /** The next bytes (valid until the next call), or null at the end; throws when the client breaks off. */
  read(): Promise<Uint8Array | null>;
}

/**
 * A WebSocket upgrade request that came through Deno.serve (HTTPS with one certificate): the filter that takes it over
 * sets `response` (Deno.upgradeWebSocket's), which the server then returns.
 */
export interface WebUpgrade {
  request: Request;
  response: Response | null;
}

/** An HTTP request as filters see it. */
export class GwRequest {
  method: string;
  /** escaped path, without the query */
  path: string;
  /** raw query without "?" ("" when none) */
  query: string;
  proto: string;
  host: string;
  headers: HeaderList;
  body: Uint8Array;
  /** the body as a stream instead of `body` (then empty); a filter that sets `body` sets this to null */
  stream: BodyStream | null = null;
  /** the client address (host part of RemoteAddr) */
  remoteIp: string;
  remoteAddr: string;
  scheme: string;
  #realIp: string | undefined;

  constructor(
    method: string,
    target: string,
    proto: string,
    headers: HeaderList,
    remoteIp: string,
    remoteAddr: string,
    scheme: string,
  ) {
    this.method = method;
    const q = target.indexOf("?");
    let path = q < 0 ? target : target.slice(0, q);
    if (path.charCodeAt(0) !== 47) {
      // absolute-form: http://host/path
      const m = /^https?:\/\/[^/]*(\/.*)?$/i.exec(path);
      path = m?.[1] ?? "/";
    }
    this.path = path;
    this.query = q < 0 ? "" : target.slice(q + 1);
    this.proto = proto;
    this.headers = headers;
    this.host = headers.get("host");
    this.body = EMPTY;
    this.remoteIp = remoteIp;
    this.remoteAddr = remoteAddr;
    this.scheme = scheme;
  }

  /** path + "?" + query, as sent upstream */
  get requestUri(): string {
    return this.query === "" ? this.path : this.path + "?" + this.query;
  }

  /** The host without its port. */
  get hostname(): string {
    return stripPort(this.host);
  }

  /** RealIP (tomasen/realip, computed once): first public X-Forwarded-For entry, else X-Real-Ip, else the peer. */
  get realIp(): string {
    if (this.#realIp !== undefined) return this.#realIp;
    const xri = this.headers.get("x-real-ip");
    const xff = this.headers.get("x-forwarded-for");
    let ip = this.remoteIp;
    if (xri !== "" || xff !== "") {
      ip = xri;
      for (const part of xff.split(",")) {
        const p = part.trim();
        if (isIp(p) && !isPrivateIp(p)) {
          ip = p;
          break;
        }
      }
    }
    return (this.#realIp = ip);
  }

  /** The value of a query parameter ("" when absent). */
  queryParam(name: string): string {
    if (this.query === "") return "";
    for (const kv of this.query.split("&")) {
      const eq = kv.indexOf("=");
      const k = eq < 0 ? kv : kv.slice(0, eq);
      if (safeDecode(k) === name) return eq < 0 ? "" : safeDecode(kv.slice(eq + 1));
    }
    return "";
  }

  /** The value of a cookie ("" when absent). */
  cookie(name: string): string {
    for (const c of this.headers.getAll("cookie")) {
      for (const part of c.split(";")) {
        const eq = part.indexOf("=");
        if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
      }
    }
    return "";
  }
}

/** An HTTP response as filters build it. */
export class GwResponse {
  status: number;
  headers: HeaderList;
  #body: Uint8Array;
  /**
   * The body as a stream instead of `body` (then empty): an upstream's body read as the client takes it (Proxy
   * `serverMaxBodySize: -1`). Setting `body` drops it; what was not read is given up when the request finishes.
   */
  stream: BodyStream | null = null;

  constructor(status = 200, headers = new HeaderList(), body: Uint8Array = EMPTY) {
    this.status = status;
    this.headers = headers;
    this.#body = body;
  }

  get body(): Uint8Array {
    return this.#body;
  }

  set body(b: Uint8Array) {
    this.#body = b;
    this.stream = null;
  }
}

/** One request's context. The DEFAULT namespace's request and response are plain fields (the common case). */
export class Context {
  namespace = DEFAULT_NS;
  #data: Record<string, unknown> | null = null;
  /** tags for the access log (null until the first) */
  tags: string[] | null = null;
  /** set when the client went away (the HTTP server notices it, see server.ts's client-gone probe) */
  clientGone = false;
  /** set by the Proxy while it waits for an upstream: that exchange's connection (see upstream.ts) */
  upstream: { abort(): void } | null = null;
  /** marks the client gone and cancels the upstream exchange in flight, if any */
  markClientGone(): void {
    if (this.clientGone) return;
    this.clientGone = true;
    this.upstream?.abort();
  }
  /**
   * The client connection, for a request asking for a protocol upgrade (plain HTTP/1.1 only): `pending` holds the
   * bytes the client sent after the head.
   */
  upgrade: { conn: Deno.Conn; pending: Uint8Array } | null = null;
  /** the same for a request that came through Deno.serve */
  webUpgrade: WebUpgrade | null = null;
  /** set by a filter that took the connection over (WebSocketProxy): the server waits for it, then closes */
  hijacked: Promise<void> | null = null;
  /** the first function `onFinish` got, then the others */
  #finish: (() => void) | null = null;
  #finishMore: (() => void)[] | null = null;
  #request: GwRequest;
  #response: GwResponse | undefined = undefined;
  #otherRequests: Map<string, GwRequest> | null = null;
  #otherResponses: Map<string, GwResponse> | null = null;

  constructor(req: GwRequest) {
    this.#request = req;
  }

  /** The data map (`data.PIPELINE` holds the pipeline's `data`). */
  get data(): Record<string, unknown> {
    return (this.#data ??= {});
  }

  /** The request of the active namespace (DEFAULT's when that namespace has none). */
  get request(): GwRequest {
    if (this.namespace === DEFAULT_NS) return this.#request;
    return this.#otherRequests?.get(this.namespace) ?? this.#request;
  }

  /** Sets the request of a namespace (builders). */
  setRequest(ns: string, req: GwRequest): void {
    if (ns === DEFAULT_NS) this.#request = req;
    else (this.#otherRequests ??= new Map()).set(ns, req);
  }

  /** The request of a namespace, undefined when it has none (no fallback to DEFAULT). */
  requestIn(ns: string): GwRequest | undefined {
    return ns === DEFAULT_NS ? this.#request : this.#otherRequests?.get(ns);
  }

  /** The response of a namespace, undefined when it has none. */
  responseIn(ns: string): GwResponse | undefined {
    return ns === DEFAULT_NS ? this.#response : this.#otherResponses?.get(ns);
  }

  /** Every namespace's request, DEFAULT first (template data). */
  requests(): [string, GwRequest][] {
    return [[DEFAULT_NS, this.#request], ...(this.#otherRequests ?? [])];
  }

  /** Every namespace's response (template data). */
  responses(): [string, GwResponse][] {
    const out: [string, GwResponse][] = this.#response ? [[DEFAULT_NS, this.#response]] : [];
    return [...out, ...(this.#otherResponses ?? [])];
  }

  /** The response of the active namespace (undefined if none yet). */
  get response(): GwResponse | undefined {
    if (this.namespace === DEFAULT_NS) return this.#response;
    return this.#otherResponses?.get(this.namespace);
  }

  set response(r: GwResponse | undefined) {
    if (this.namespace === DEFAULT_NS) this.#response = r;
    else if (r === undefined) this.#otherResponses?.delete(this.namespace);
    else (this.#otherResponses ??= new Map()).set(this.namespace, r);
  }

  /** The response the client gets. */
  get defaultResponse(): GwResponse | undefined {
    return this.#response;
  }

  /** The output response of the active namespace, created empty (200) when missing. */
  outputResponse(): GwResponse {
    let r = this.response;
    if (r === undefined) this.response = r = new GwResponse();
    return r;
  }

  addTag(tag: string): void {
    (this.tags ??= []).push(tag);
  }

  /** Runs `fn` once the response was sent (or the request ended otherwise): releases what the response borrows. */
  onFinish(fn: () => void): void {
    if (this.#finish === null) this.#finish = fn;
    else (this.#finishMore ??= []).push(fn);
  }

  /** Called by the server after the response was written. */
  finish(): void {
    const first = this.#finish;
    if (first === null) return;
    const more = this.#finishMore;
    this.#finish = this.#finishMore = null;
    first();
    if (more !== null) { for (const fn of more) fn(); }
  }
}

/** `host:port` → `host` (IPv6 brackets removed). */
export function stripPort(host: string): string {
  if (host.charCodeAt(0) === 91) {
    const e = host.indexOf("]");
    return e < 0 ? host : host.slice(1, e);
  }
  const c = host.indexOf(":");
  return c < 0 ? host : host.slice(0, c);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s;
  }
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Whether s is an IPv4 or IPv6 address. */
export function isIp(s: string): boolean {
  return IPV4.test(s) || (s.indexOf(":") >= 0 && /^[0-9a-fA-F:.]+$/.test(s));
}

function isPrivateIp(ip: string): boolean {
  if (IPV4.test(ip)) {
    const [a, b] = ip.split(".").map(Number);
    return a === 127 || a === 10 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168) ||
      (a === 169 && b === 254);
  }
  const l = ip.toLowerCase();
  return l === "::1" || l.startsWith("fc") || l.startsWith("fd") || l.startsWith("fe8") || l.startsWith("fe9") ||
    l.startsWith("fea") || l.startsWith("feb");
}
