/**
 * A gRPC server on our own HTTP/2 transport, a drop-in for the parts of @grpc/grpc-js's Server the etcd services
 * use: `addService(def, impl)` with grpc-js-shaped service definitions (proto/mod.ts) and handler shapes (unary
 * `(call, callback)`, server-streaming `(call)`, bidi `(call)` as an EventEmitter), `listen`/`bindAsync`, `close`,
 * `forceShutdown`.
 *
 * The same listener also speaks HTTP/1.1: a connection that does not start with the HTTP/2 preface is handed to a
 * node:http server whose request handler is settable (`setHttp1Handler`), as etcd serves /health, /version,
 * /metrics and the JSON gateway on its client port.
 */
import type { GrpcServerMetrics, GrpcType, MethodStats } from "../metrics/grpc.ts";
import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import zlib from "node:zlib";
import { Status } from "./grpc_status.ts";
import { ByteBudget } from "./h2connection.ts";
import {
  type CertAltNames,
  CONNECTION_LOST,
  DEFAULT_TIMEOUTS,
  type DeferredTask,
  ErrorCode,
  Http2ServerConnection,
  type Http2Stream,
  type Http2Timeouts,
  PREFACE,
  type StreamHandler,
} from "./http2.ts";

export { Status } from "./grpc_status.ts";

/** One method of a grpc-js-shaped service definition (as proto/mod.ts builds them). */
export interface MethodDefinition {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  originalName?: string;
  requestDeserialize: (bytes: Buffer) => unknown;
  responseSerialize: (value: unknown) => Buffer | Uint8Array;
}

/** A service definition: method name → definition. */
export type ServiceDefinition = Record<string, MethodDefinition>;

// deno-lint-ignore no-explicit-any
type AnyHandler = (...args: any[]) => void;

/** Method name → handler, as given to grpc-js's addService. */
export type ServiceImplementation = Record<string, AnyHandler>;

/** An error a handler may return or throw: grpc-js `ServiceError`-like. */
export interface StatusLike {
  code?: number;
  details?: string;
  message?: string;
  metadata?: { getMap?: () => Record<string, unknown> } | null;
}

/** The callback of a unary handler. */
export type SendUnaryData = (err: StatusLike | Error | null | undefined, value?: unknown) => void;

/** Handler for plain HTTP/1.1 requests on the gRPC port. */
export type Http1Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** Options of a GrpcServer. */
export interface GrpcServerOptions {
  /** Largest accepted request message (default DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH). */
  maxReceiveMessageLength?: number;
  /** Per-stream receive window of the HTTP/2 connections (default 1 MiB). */
  initialWindowSize?: number;
  /** Connection receive window (default 16 MiB). */
  connectionWindowSize?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS (default MAX_CONCURRENT_STREAMS of http2.ts). */
  maxConcurrentStreams?: number;
  /** Open connections at most (default MAX_CONNECTIONS). */
  maxConnections?: number;
  /** Timeouts (default DEFAULT_SERVER_TIMEOUTS); tests shorten them. */
  timeouts?: Partial<ServerTimeouts>;
}

/**
 * Largest request message accepted unless the owner sets its own (etcd: --max-request-bytes + 512 KiB): grpc-go's
 * default, 4 MiB. A larger one is refused with RESOURCE_EXHAUSTED when its length prefix arrives.
 */
export const DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH = 4 << 20;

/**
 * Open connections one server accepts at a time; beyond it a new connection is closed at once. Without a limit an
 * attacker's idle or half-open connections were bounded only by file descriptors. etcd and Go set none; 10,000 is
 * far beyond what an etcd member's clients open and keeps the worst case (idle HTTP/2 connections) to about 1 GB.
 */
export const MAX_CONNECTIONS = 10_000;

/**
 * Responses all of a server's connections may hold for clients that do not read them: MAX_QUEUED_BYTES per
 * connection alone would let 100 such connections hold 3 GB. Beyond it, writes that would queue reset their stream.
 */
export const MAX_QUEUED_BYTES_TOTAL = 256 << 20;

/** Request bytes in unfinished messages on all of a server's connections (see MAX_BUFFERED_REQUEST_BYTES). */
export const MAX_BUFFERED_REQUEST_BYTES_TOTAL = 256 << 20;

/** The HTTP/2 timeouts, plus those of the HTTP/1.1 requests served on the same port. */
export interface ServerTimeouts extends Http2Timeouts {
  /** A request head (HTTP/1.1) must be complete this long after the connection or the previous response. */
  http1HeadersMs: number;
  /** An HTTP/1.1 request must be answered (body read, response written) within this. */
  http1RequestMs: number;
}

/**
 * Trickled HTTP/1.1 headers (slowloris) kept a connection open for as long as the client liked: the head must be in
 * within 10 s (Node allows 60 s, Go no limit by default; a real client sends it in one segment), and a request must
 * be done within Node's default requestTimeout of 300 s.
 */
export const DEFAULT_SERVER_TIMEOUTS: Readonly<ServerTimeouts> = Object.freeze({
  ...DEFAULT_TIMEOUTS,
  http1HeadersMs: 10_000,
  http1RequestMs: 300_000,
});

/** Request metadata: the non-pseudo request headers, `-bin` values base64-decoded. */
export class Metadata {
  private readonly map = new Map<string, (string | Buffer)[]>();

  /** Builds metadata from flat HTTP/2 headers (pseudo-headers skipped). */
  static fromHeaders(fields: string[]): Metadata {
    const md = new Metadata();
    for (let i = 0; i < fields.length; i += 2) {
      const k = fields[i];
      if (k.charCodeAt(0) === 58 /* : */) continue;
      const v = fields[i + 1];
      if (k.endsWith("-bin")) {
        for (const part of v.split(",")) md.add(k, Buffer.from(part.trim(), "base64"));
      } else md.add(k, v);
    }
    return md;
  }

  /** All values of a key (lower-cased). */
  get(key: string): (string | Buffer)[] {
    return this.map.get(key.toLowerCase())?.slice() ?? [];
  }

  /** Replaces the values of a key. */
  set(key: string, value: string | Buffer): void {
    this.map.set(key.toLowerCase(), [value]);
  }

  /** Adds a value to a key. */
  add(key: string, value: string | Buffer): void {
    const k = key.toLowerCase();
    const list = this.map.get(k);
    if (list) list.push(value);
    else this.map.set(k, [value]);
  }

  /** Removes a key. */
  remove(key: string): void {
    this.map.delete(key.toLowerCase());
  }

  /** The first value of each key. */
  getMap(): Record<string, string | Buffer> {
    const out: Record<string, string | Buffer> = {};
    for (const [k, v] of this.map) if (v.length > 0) out[k] = v[0];
    return out;
  }

  /** Every key with all its values. */
  toJSON(): Record<string, (string | Buffer)[]> {
    const out: Record<string, (string | Buffer)[]> = {};
    for (const [k, v] of this.map) out[k] = v.slice();
    return out;
  }
}

const EMPTY_METADATA_FIELDS: string[] = [];

/** Flat header fields for custom metadata given as a grpc-js Metadata, our Metadata or a plain object. */
function metadataFields(md: unknown): string[] {
  if (!md || typeof md !== "object") return EMPTY_METADATA_FIELDS;
  let entries: [string, unknown][];
  const m = md as { toJSON?: () => unknown; getMap?: () => Record<string, unknown> };
  if (md instanceof Metadata) entries = Object.entries(md.toJSON());
  else if (typeof m.getMap === "function") {
    // grpc-js Metadata: internalRepr keeps every value; getMap only the first
    const repr = (md as { internalRepr?: Map<string, unknown[]> }).internalRepr;
    entries = repr instanceof Map ? [...repr.entries()] : Object.entries(m.getMap());
  } else entries = Object.entries(md as Record<string, unknown>);
  const out: string[] = [];
  for (const [k0, vs] of entries) {
    const k = k0.toLowerCase();
    if (k.startsWith(":") || k.startsWith("grpc-") || k === "content-type" || k === "te") continue;
    for (const v of Array.isArray(vs) ? vs : [vs]) {
      if (k.endsWith("-bin")) {
        const b = typeof v === "string" ? Buffer.from(v) : Buffer.from(v as Uint8Array);
        out.push(k, b.toString("base64").replace(/=+$/, ""));
      } else out.push(k, String(v));
    }
  }
  return out;
}

/** grpc-message encoding: UTF-8 bytes outside printable ASCII, and '%', become %XX. */
export function encodeGrpcMessage(s: string): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return s;
  let out = "";
  for (const b of Buffer.from(s, "utf8")) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function statusOf(err: unknown): { code: number; details: string; metadata: unknown } {
  const e = (err ?? {}) as StatusLike;
  const code = typeof e.code === "number" && Number.isInteger(e.code) && e.code > 0 && e.code <= 16
    ? e.code
    : Status.UNKNOWN;
  const details = typeof e.details === "string"
    ? e.details
    : typeof e.message === "string"
    ? e.message
    : typeof err === "string"
    ? err
    : "unknown error";
  return { code, details, metadata: e.metadata };
}

const KIND_UNARY = 0;
const KIND_SERVER_STREAM = 1;
const KIND_CLIENT_STREAM = 2;
const KIND_BIDI = 3;

interface MethodEntry {
  def: MethodDefinition;
  handler: AnyHandler | null;
  kind: number;
  /** this method's counters, once the server is instrumented */
  stats?: MethodStats;
}

const GRPC_TYPES: readonly GrpcType[] = ["unary", "server_stream", "client_stream", "bidi_stream"];

// frozen: the HPACK encoder caches their encodings
const RESPONSE_HEADERS = Object.freeze([":status", "200", "content-type", "application/grpc"]) as string[];
const OK_TRAILERS = Object.freeze(["grpc-status", "0"]) as string[];
const MESSAGE_PREFIX = new Uint8Array(5);
/**
 * What a message split over several DATA frames reserves first; the buffer then doubles as data arrives, up to the
 * length its prefix declares. 2,000 streams that each declared 2 MB and sent 5 bytes once reserved 3.8 GB.
 */
export const RECEIVE_BUFFER_MIN = 16 << 10;

/**
 * A server call, shaped like grpc-js's ServerUnaryCall / ServerWritableStream / ServerDuplexStream: `request`,
 * `metadata`, `cancelled`, `getPeer()`, `write()`, `end()`, `destroy()`, and the events 'data', 'end', 'drain',
 * 'cancelled', 'close', 'error'.
 */
export class ServerCall extends EventEmitter implements StreamHandler, DeferredTask {
  /** The request message (unary and server-streaming calls). */
  request: unknown = undefined;
  /** Whether the client cancelled the call (or the connection was lost). */
  cancelled = false;
  private md: Metadata | null = null;
  private headersSent = false;
  private finished = false;
  private gotRequest = false;
  private readonly maxLen: number;
  // message reassembly
  private readonly hdr = new Uint8Array(5);
  private hdrPos = 0;
  /** The message being received: grows with the data up to its declared length `bodyLen`. */
  private body: Buffer | null = null;
  private bodyLen = 0;
  private bodyPos = 0;
  /** A unary handler was started and has not answered yet. */
  private answerPending = false;
  private compressed = false;
  private readonly encoding: string | undefined;

  constructor(
    private readonly stream: Http2Stream,
    private readonly method: MethodEntry,
    maxLen: number,
    encoding: string | undefined,
  ) {
    super();
    this.maxLen = maxLen;
    this.encoding = encoding;
    method.stats?.started.inc();
  }

  /** Request metadata. */
  get metadata(): Metadata {
    if (!this.md) this.md = Metadata.fromHeaders(this.stream.headers);
    return this.md;
  }

  /** The client's address as "host:port". */
  getPeer(): string {
    return this.stream.peer;
  }

  /** The common name of the client's verified TLS certificate ("" without one). */
  getPeerCommonName(): string {
    return this.stream.peerCommonName;
  }

  /** The DNS and IP subject alternative names of the client's verified TLS certificate (empty without one). */
  getPeerAltNames(): CertAltNames {
    return this.stream.peerAltNames;
  }

  /** The method path, e.g. "/etcdserverpb.KV/Range". */
  getPath(): string {
    return this.method.def.path;
  }

  /** The call deadline (grpc-timeout is not enforced). */
  getDeadline(): number {
    return Infinity;
  }

  /** Sends the plain response headers unless they went out already. */
  private sendHeadersOnce(): void {
    if (this.headersSent) return;
    this.headersSent = true;
    this.stream.respond(RESPONSE_HEADERS);
  }

  /** Sends the response headers now, with custom metadata. */
  sendMetadata(md: unknown): void {
    if (this.headersSent || this.finished) return;
    this.headersSent = true;
    this.stream.respond([...RESPONSE_HEADERS, ...metadataFields(md)]);
  }

  /** Sends one response message; false when the caller should wait for 'drain'. */
  write(msg: unknown, cb?: (err?: Error) => void): boolean {
    if (this.finished) {
      if (cb) queueMicrotask(() => cb(new Error("write after end")));
      return false;
    }
    let payload: Uint8Array;
    try {
      payload = this.method.def.responseSerialize(msg);
    } catch (err) {
      this.finish(Status.INTERNAL, `Failed to serialize response: ${(err as Error)?.message ?? err}`);
      if (cb) queueMicrotask(() => cb(err as Error));
      return false;
    }
    this.sendHeadersOnce();
    const ok = this.sendMessage(payload, false);
    if (cb) queueMicrotask(() => cb());
    return ok;
  }

  /**
   * Sends one message given in two parts: `head`, which starts with the 5-byte gRPC message prefix (for the whole
   * message), and `body`, the rest. Both go straight into the frame (no third buffer); `body` may be shared between
   * calls, it is never modified. False when the caller should wait for 'drain'.
   */
  writeFramed(head: Uint8Array, body: Uint8Array): boolean {
    if (this.finished) return false;
    this.sendHeadersOnce();
    this.method.stats?.messageOut(head.length + body.length);
    return this.stream.write(body, head, false);
  }

  /** Ends a streaming call with status OK (optionally with trailing metadata). */
  end(md?: unknown): void {
    if (this.finished) return;
    this.finish(Status.OK, "", md);
  }

  /** Ends the call with the error's status (or CANCELLED without one). */
  destroy(err?: unknown): this {
    if (this.finished) return this;
    if (err) {
      const st = statusOf(err);
      this.finish(st.code, st.details, st.metadata);
    } else {
      this.finish(Status.CANCELLED, "Cancelled on server");
    }
    return this;
  }

  /** @internal */
  sendUnary = (err: unknown, value?: unknown): void => {
    this.answerPending = false;
    if (this.finished) {
      this.stream.releaseSlot();
      return;
    }
    if (err) {
      const st = statusOf(err);
      this.finish(st.code, st.details, st.metadata);
      return;
    }
    let payload: Uint8Array;
    try {
      payload = this.method.def.responseSerialize(value);
    } catch (e) {
      this.finish(Status.INTERNAL, `Failed to serialize response: ${(e as Error)?.message ?? e}`);
      return;
    }
    this.sendHeadersOnce();
    this.sendMessage(payload, false);
    this.finish(Status.OK, "");
  };

  private sendMessage(payload: Uint8Array, end: boolean): boolean {
    this.method.stats?.messageOut(payload.length + 5);
    const n = payload.length;
    const p = MESSAGE_PREFIX;
    p[0] = 0;
    p[1] = n >>> 24;
    p[2] = (n >>> 16) & 0xff;
    p[3] = (n >>> 8) & 0xff;
    p[4] = n & 0xff;
    return this.stream.write(payload, p, end);
  }

  /** Sends the status (as trailers, or trailers-only when nothing was sent yet) and closes the call. */
  finish(code: number, details: string, md?: unknown): void {
    if (this.finished) return;
    this.finished = true;
    this.method.stats?.handled(code);
    this.dropBody();
    const extra = md ? metadataFields(md) : EMPTY_METADATA_FIELDS;
    let trailers: string[];
    if (code === Status.OK && extra.length === 0) trailers = OK_TRAILERS;
    else {
      trailers = ["grpc-status", String(code)];
      if (details) trailers.push("grpc-message", encodeGrpcMessage(details));
      for (const f of extra) trailers.push(f);
    }
    if (!this.stream.closed) {
      if (this.headersSent) this.stream.end(trailers);
      else {
        this.headersSent = true;
        this.stream.respond([...RESPONSE_HEADERS, ...trailers], true);
      }
    }
    if (this.listenerCount("close") > 0) queueMicrotask(() => this.emit("close"));
  }

  /** @internal the stream's DATA. */
  onData(chunk: Uint8Array): void {
    let p = 0;
    const n = chunk.length;
    while (p < n && !this.finished) {
      if (this.body === null) {
        // message header
        let len: number;
        if (this.hdrPos === 0 && n - p >= 5) {
          this.compressed = chunk[p] !== 0;
          len = ((chunk[p + 1] << 24) | (chunk[p + 2] << 16) | (chunk[p + 3] << 8) | chunk[p + 4]) >>> 0;
          p += 5;
        } else {
          while (this.hdrPos < 5 && p < n) this.hdr[this.hdrPos++] = chunk[p++];
          if (this.hdrPos < 5) return;
          this.hdrPos = 0;
          const h = this.hdr;
          this.compressed = h[0] !== 0;
          len = ((h[1] << 24) | (h[2] << 16) | (h[3] << 8) | h[4]) >>> 0;
        }
        if (len > this.maxLen) {
          this.finish(Status.RESOURCE_EXHAUSTED, `grpc: received message larger than max (${len} vs. ${this.maxLen})`);
          return;
        }
        if (n - p >= len) {
          // whole message in this chunk: copy it out (the chunk belongs to the socket)
          const msg = Buffer.allocUnsafe(len);
          msg.set(new Uint8Array(chunk.buffer, chunk.byteOffset + p, len));
          p += len;
          this.message(msg);
        } else {
          // the declared length is only a claim: reserve what arrived, grow as more does
          this.bodyLen = len;
          this.bodyPos = 0;
          if (!this.growBody(Math.min(len, Math.max(RECEIVE_BUFFER_MIN, 2 * (n - p))))) return;
        }
      } else {
        const body = this.body;
        const take = Math.min(n - p, this.bodyLen - this.bodyPos);
        if (this.bodyPos + take > body.length) {
          if (!this.growBody(Math.min(this.bodyLen, Math.max(2 * body.length, this.bodyPos + take)))) return;
        }
        this.body!.set(new Uint8Array(chunk.buffer, chunk.byteOffset + p, take), this.bodyPos);
        this.bodyPos += take;
        p += take;
        if (this.bodyPos === this.bodyLen) {
          const msg = this.body!;
          this.dropBody();
          this.message(msg);
        }
      }
    }
  }

  /** Replaces the partial message's buffer by one of `size` bytes (keeping its content); false: over budget. */
  private growBody(size: number): boolean {
    const old = this.body;
    if (!this.stream.reserveReceive(size - (old ? old.length : 0))) {
      this.finish(Status.RESOURCE_EXHAUSTED, "grpc: the server's receive buffers for this connection are full");
      return false;
    }
    const grown = Buffer.allocUnsafe(size);
    if (old) grown.set(old.subarray(0, this.bodyPos));
    this.body = grown;
    return true;
  }

  /** Forgets the partial message's buffer (complete, or the call is over). */
  private dropBody(): void {
    if (this.body === null) return;
    this.stream.reserveReceive(-this.body.length);
    this.body = null;
  }

  private message(raw: Buffer): void {
    let bytes = raw;
    if (this.compressed) {
      const enc = this.encoding;
      try {
        if (enc === "gzip") bytes = zlib.gunzipSync(raw, { maxOutputLength: this.maxLen + 1 });
        else if (enc === "deflate") bytes = zlib.inflateSync(raw, { maxOutputLength: this.maxLen + 1 });
        else {
          this.finish(Status.INTERNAL, "grpc: compressed flag set with identity or empty encoding");
          return;
        }
      } catch (err) {
        const msg = (err as Error)?.message ?? String(err);
        if (/maxOutputLength|buffer/i.test(msg)) {
          this.finish(Status.RESOURCE_EXHAUSTED, `grpc: received message after decompression larger than max`);
        } else this.finish(Status.INTERNAL, `grpc: failed to decompress the received message: ${msg}`);
        return;
      }
      if (bytes.length > this.maxLen) {
        this.finish(
          Status.RESOURCE_EXHAUSTED,
          `grpc: received message after decompression larger than max (${bytes.length} vs. ${this.maxLen})`,
        );
        return;
      }
    }
    let req: unknown;
    try {
      req = this.method.def.requestDeserialize(bytes);
    } catch (err) {
      this.finish(Status.INTERNAL, `grpc: error unmarshalling request: ${(err as Error)?.message ?? err}`);
      return;
    }
    this.method.stats?.messageIn(bytes.length);
    const kind = this.method.kind;
    if (kind === KIND_UNARY || kind === KIND_SERVER_STREAM) {
      if (this.gotRequest) {
        this.finish(Status.UNIMPLEMENTED, `Received a second request message for method ${this.method.def.path}`);
        return;
      }
      this.gotRequest = true;
      this.request = req;
      // started once the input in hand is processed: a reset that came with it cancels the call first
      this.stream.afterInput(this);
    } else {
      this.emit("data", req);
    }
  }

  /** @internal starts a unary / server-streaming handler unless the call was cancelled meanwhile. */
  runDeferred(): void {
    if (!this.cancelled) this.invoke();
  }

  /** @internal runs the handler of a unary / server-streaming call, or of a streaming-request call at once. */
  invoke(): void {
    const h = this.method.handler!;
    try {
      if (this.method.kind === KIND_UNARY || this.method.kind === KIND_CLIENT_STREAM) {
        this.answerPending = true;
        h(this, this.sendUnary);
      } else h(this);
    } catch (err) {
      this.answerPending = false;
      this.finish(Status.UNKNOWN, `handler failed: ${(err as Error)?.message ?? err}`);
    }
  }

  /** @internal the client half-closed. */
  onEnd(): void {
    if (this.finished) return;
    if (this.body !== null || this.hdrPos !== 0) {
      this.finish(Status.INTERNAL, "grpc: client half-closed inside a message");
      return;
    }
    const kind = this.method.kind;
    if (kind === KIND_UNARY || kind === KIND_SERVER_STREAM) {
      if (!this.gotRequest) this.finish(Status.INTERNAL, "grpc: received no request message");
      return;
    }
    // Like grpc-js (which decodes messages asynchronously), 'end' comes after the work the last messages started
    // in promise continuations: handlers that answer after an `await` still get to write before end().
    setImmediate(() => {
      if (!this.cancelled) this.emit("end");
    });
  }

  /** @internal the stream was reset by the client or the connection was lost. */
  onReset(_code: number): void {
    if (this.finished) return;
    this.finished = true;
    this.method.stats?.handled(Status.CANCELLED);
    this.cancelled = true;
    this.dropBody();
    // a unary handler still at work (a proposed Put) keeps its stream's slot until it answers
    if (this.answerPending) this.stream.holdSlot();
    this.emit("cancelled", "cancelled");
    if (this.listenerCount("close") > 0) this.emit("close");
  }

  /** @internal */
  onDrain(): void {
    this.emit("drain");
  }
}

/** Splits "host:port", "[v6]:port" or a URL-less address for bindAsync. */
function splitHostPort(addr: string): [string, number] {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:]*):(\d+)$/.exec(addr);
  if (!m) throw new Error(`bad address ${addr}`);
  return [m[1], Number(m[2])];
}

/** TLS of a listener: node:tls server options, and a last look at each client once its handshake is done. */
export interface ListenerTls extends tls.TlsOptions {
  /** false closes the connection before any byte is read (e.g. a client certificate etcd's allowed-CN rule refuses) */
  acceptClient?: (socket: tls.TLSSocket) => boolean;
}

/** The gRPC server. */
export class GrpcServer {
  private readonly methods = new Map<string, MethodEntry>();
  private readonly services = new Set<string>();
  private metrics: GrpcServerMetrics | undefined;
  private readonly listeners: Array<net.Server | tls.Server> = [];
  private readonly sockets = new Set<net.Socket>();
  /** TCP connections of all listeners, TLS ones from before their handshake: what MAX_CONNECTIONS counts. */
  private readonly tcpSockets = new Set<net.Socket>();
  private readonly conns = new Set<Http2ServerConnection>();
  private readonly maxLen: number;
  private readonly h2opts: GrpcServerOptions;
  private readonly maxConnections: number;
  private readonly timeouts: ServerTimeouts;
  /** Sockets not yet HTTP/2 (protocol sniffing, HTTP/1.1) → when they are closed unless they progress. */
  private readonly deadlines = new Map<net.Socket, number>();
  private sweeper: ReturnType<typeof setInterval> | undefined;
  private readonly sharedQueue = new ByteBudget(MAX_QUEUED_BYTES_TOTAL);
  private readonly sharedReceive = new ByteBudget(MAX_BUFFERED_REQUEST_BYTES_TOTAL);
  private http1Handler: Http1Handler = (_req, res) => {
    res.statusCode = 404;
    res.setHeader("content-type", "text/plain");
    res.end("404 page not found\n");
  };
  private readonly http1: http.Server;

  constructor(options: GrpcServerOptions = {}) {
    this.maxLen = options.maxReceiveMessageLength ?? DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH;
    this.h2opts = options;
    this.maxConnections = options.maxConnections ?? MAX_CONNECTIONS;
    this.timeouts = { ...DEFAULT_SERVER_TIMEOUTS, ...options.timeouts };
    this.http1 = http.createServer((req, res) => this.http1Request(req, res));
    this.http1.on("clientError", (err: { code?: string }, socket: net.Socket) => {
      // as Go: an oversized head → 431; any other request the parser refuses (both Content-Length and
      // Transfer-Encoding, a malformed chunk, ...) → 400
      const status = err?.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
      else socket.destroy();
    });
  }

  private http1Request(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket as net.Socket;
    if (this.deadlines.has(socket)) this.deadlines.set(socket, Date.now() + this.timeouts.http1RequestMs);
    res.on("finish", () => {
      if (this.deadlines.has(socket)) this.deadlines.set(socket, Date.now() + this.timeouts.http1HeadersMs);
    });
    const te = req.headers["transfer-encoding"];
    if (te !== undefined && te.toLowerCase() !== "chunked") {
      // RFC 9112 6.3: chunked not the final coding ("xchunked") → 400; 6.1: another coding we do not know → 501
      const codings = te.toLowerCase().split(",");
      const chunkedLast = codings[codings.length - 1].trim() === "chunked";
      res.writeHead(chunkedLast ? 501 : 400, { "content-type": "text/plain", connection: "close" });
      res.end(chunkedLast ? "unsupported transfer encoding\n" : "bad Transfer-Encoding\n");
      return;
    }
    try {
      this.http1Handler(req, res);
    } catch {
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    }
  }

  /** Sets the handler for plain HTTP/1.1 requests on the same port. */
  setHttp1Handler(handler: Http1Handler): void {
    this.http1Handler = handler;
  }

  /** Counts every call of every registered method (now and later) in `metrics` (go-grpc-prometheus's series). */
  instrument(metrics: GrpcServerMetrics): void {
    this.metrics = metrics;
    for (const e of this.methods.values()) e.stats = metrics.method(e.def.path, GRPC_TYPES[e.kind]);
  }

  /** Registers a service (grpc-js style: handlers keyed by method name or originalName). */
  addService(def: ServiceDefinition, impl: ServiceImplementation): void {
    for (const [name, m] of Object.entries(def)) {
      if (this.methods.has(m.path)) throw new Error(`Method handler for ${m.path} already provided.`);
      const handler = impl[name] ?? (m.originalName ? impl[m.originalName] : undefined) ?? null;
      const kind = m.requestStream
        ? (m.responseStream ? KIND_BIDI : KIND_CLIENT_STREAM)
        : (m.responseStream ? KIND_SERVER_STREAM : KIND_UNARY);
      const stats = this.metrics?.method(m.path, GRPC_TYPES[kind]);
      this.methods.set(m.path, { def: m, handler: typeof handler === "function" ? handler : null, kind, stats });
      const slash = m.path.lastIndexOf("/");
      this.services.add(m.path.slice(1, slash));
    }
  }

  /**
   * Listens on host:port; resolves with the bound port. "localhost" binds 127.0.0.1 and ::1 (when available),
   * IPv6 hosts may be given in brackets.
   */
  async listen(host: string, port: number, secure?: ListenerTls): Promise<number> {
    let h = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
    if (h === "") h = "0.0.0.0";
    if (h === "localhost") {
      const p = await this.listenOne("127.0.0.1", port, secure);
      try {
        await this.listenOne("::1", p, secure);
      } catch { /* no IPv6 loopback */ }
      return p;
    }
    return await this.listenOne(h, port, secure);
  }

  /** grpc-js-compatible bind: "host:port" (credentials ignored; plaintext only). */
  bindAsync(address: string, _creds: unknown, cb: (err: Error | null, port: number) => void): void {
    let host: string;
    let port: number;
    try {
      [host, port] = splitHostPort(address);
    } catch (err) {
      queueMicrotask(() => cb(err as Error, 0));
      return;
    }
    this.listen(host, port).then((p) => cb(null, p), (err) => cb(err, 0));
  }

  /** No-op (grpc-js compatibility). */
  start(): void {}

  /** One listener; with `secure`, TLS (ALPN h2 or http/1.1) in front of the same protocol sniffing. */
  private listenOne(host: string, port: number, secure?: ListenerTls): Promise<number> {
    return new Promise((resolve, reject) => {
      const { acceptClient, ...options } = secure ?? {};
      // A TLS client counts against the connection limit from its TCP connection on, and must finish its handshake
      // within the preface timeout: a silent one was held open for good (Deno's node:tls reports a handshake timeout
      // as tlsClientError but leaves the socket open), and uncounted.
      const srv = secure
        ? tls.createServer(
          { ...options, ALPNProtocols: ["h2", "http/1.1"], handshakeTimeout: this.timeouts.prefaceMs },
          (sock) => {
            if (acceptClient && !acceptClient(sock)) sock.destroy();
            else this.accept(sock, true);
          },
        )
        : net.createServer((sock) => this.accept(sock));
      if (secure) {
        srv.on("connection", (raw: net.Socket) => this.admit(raw));
        srv.on("tlsClientError", (_err: Error, sock?: tls.TLSSocket) => sock?.destroy());
      }
      const onError = (err: Error) => reject(err);
      srv.once("error", onError);
      srv.listen({ host, port, ipv6Only: host.includes(":") && host !== "::" ? true : undefined }, () => {
        srv.removeListener("error", onError);
        srv.on("error", () => {});
        this.listeners.push(srv);
        const a = srv.address();
        resolve(typeof a === "object" && a ? a.port : port);
      });
    });
  }

  /** Counts a TCP connection until it closes, or closes it at once beyond the connection limit. */
  private admit(raw: net.Socket): boolean {
    if (this.tcpSockets.size >= this.maxConnections) {
      raw.destroy();
      return false;
    }
    this.tcpSockets.add(raw);
    raw.once("close", () => this.tcpSockets.delete(raw));
    return true;
  }

  /** Serves a connection (`admitted`: a TLS one, counted by admit() when its TCP connection arrived). */
  private accept(socket: net.Socket, admitted = false): void {
    if (!admitted && !this.admit(socket)) return;
    this.sockets.add(socket);
    this.deadlines.set(socket, Date.now() + this.timeouts.prefaceMs);
    this.startSweeper();
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.deadlines.delete(socket);
    });
    socket.on("error", () => {});
    let got: Buffer | null = null;
    const onData = (chunk: Buffer) => {
      got = got ? Buffer.concat([got, chunk]) : chunk;
      const n = Math.min(got.length, PREFACE.length);
      for (let i = 0; i < n; i++) {
        if (got[i] !== PREFACE[i]) {
          socket.removeListener("data", onData);
          this.toHttp1(socket, got);
          return;
        }
      }
      if (got.length >= PREFACE.length) {
        socket.removeListener("data", onData);
        this.toHttp2(socket, got);
      }
    };
    socket.on("data", onData);
  }

  private toHttp1(socket: net.Socket, first: Buffer): void {
    this.deadlines.set(socket, Date.now() + this.timeouts.http1HeadersMs);
    socket.pause();
    socket.unshift(first);
    this.http1.emit("connection", socket);
    socket.resume();
  }

  private toHttp2(socket: net.Socket, first: Buffer): void {
    this.deadlines.delete(socket);
    const conn: Http2ServerConnection = new Http2ServerConnection(socket, {
      initialWindowSize: this.h2opts.initialWindowSize,
      connectionWindowSize: this.h2opts.connectionWindowSize,
      maxConcurrentStreams: this.h2opts.maxConcurrentStreams,
      onStream: (s) => this.onStream(s),
      onClose: () => this.conns.delete(conn),
      sharedQueue: this.sharedQueue,
      sharedReceive: this.sharedReceive,
      // plain TCP: reads into one 64 KiB buffer of the connection's own (GrpcCall copies what it keeps)
      ownReadBuffer: !(socket instanceof tls.TLSSocket),
    });
    this.conns.add(conn);
    conn.feed(first);
  }

  private onStream(s: Http2Stream): void {
    const h = s.headers;
    let path = "";
    let method = "";
    let ctype = "";
    let encoding: string | undefined;
    for (let i = 0; i < h.length; i += 2) {
      const k = h[i];
      if (k === ":path") path = h[i + 1];
      else if (k === ":method") method = h[i + 1];
      else if (k === "content-type") ctype = h[i + 1];
      else if (k === "grpc-encoding") encoding = h[i + 1];
    }
    if (method !== "POST") {
      s.respond([":status", "405", "allow", "POST"], true);
      return;
    }
    if (!ctype.startsWith("application/grpc")) {
      s.respond([
        ":status",
        "415",
        "content-type",
        "application/grpc",
        "grpc-status",
        String(Status.INTERNAL),
        "grpc-message",
        encodeGrpcMessage(`invalid gRPC request content-type "${ctype}"`),
      ], true);
      return;
    }
    const entry = this.methods.get(path);
    if (!entry || !entry.handler) {
      let msg: string;
      const slash = path.lastIndexOf("/");
      if (!path.startsWith("/") || slash <= 0) msg = `malformed method name: "${path}"`;
      else {
        const svc = path.slice(1, slash);
        msg = this.services.has(svc)
          ? `unknown method ${path.slice(slash + 1)} for service ${svc}`
          : `unknown service ${svc}`;
      }
      trailersOnly(s, Status.UNIMPLEMENTED, msg);
      return;
    }
    if (encoding === "identity") encoding = undefined;
    if (encoding !== undefined && encoding !== "gzip" && encoding !== "deflate") {
      s.respond([
        ...RESPONSE_HEADERS,
        "grpc-accept-encoding",
        "identity,deflate,gzip",
        "grpc-status",
        String(Status.UNIMPLEMENTED),
        "grpc-message",
        encodeGrpcMessage(`grpc: Decompressor is not installed for grpc-encoding "${encoding}"`),
      ], true);
      return;
    }
    const call = new ServerCall(s, entry, this.maxLen, encoding);
    s.handler = call;
    if (entry.kind === KIND_BIDI || entry.kind === KIND_CLIENT_STREAM) call.invoke();
  }

  /** Checks every connection's deadlines about four times per shortest timeout (at most once a second). */
  private startSweeper(): void {
    if (this.sweeper !== undefined) return;
    const t = this.timeouts;
    const shortest = Math.min(t.prefaceMs, t.settingsMs, t.headerBlockMs, t.sendStallMs, t.idleMs, t.http1HeadersMs);
    const every = Math.max(10, Math.min(1000, shortest / 4));
    const sweeper = setInterval(() => this.sweep(), every);
    Deno.unrefTimer(sweeper);
    this.sweeper = sweeper;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [socket, deadline] of this.deadlines) {
      if (now >= deadline) {
        this.deadlines.delete(socket);
        socket.destroy();
      }
    }
    for (const c of this.conns) c.checkTimeouts(now, this.timeouts);
    if (this.sockets.size === 0 && this.listeners.length === 0) this.stopSweeper();
  }

  private stopSweeper(): void {
    if (this.sweeper === undefined) return;
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** Stops accepting connections; open HTTP/2 connections get GOAWAY and close once their calls finish. */
  close(): Promise<void> {
    const closing = this.listeners.map((l) => new Promise<void>((r) => l.close(() => r())));
    this.listeners.length = 0;
    for (const c of this.conns) c.shutdown();
    this.http1.closeIdleConnections?.();
    return Promise.all(closing).then(() => {
      if (this.sockets.size === 0) this.stopSweeper();
    });
  }

  /** grpc-js-compatible graceful shutdown. */
  tryShutdown(cb: (err?: Error) => void): void {
    this.close().then(() => cb(), (err) => cb(err));
  }

  /** Stops everything now: listeners closed, every connection destroyed, open calls cancelled. */
  forceShutdown(): void {
    for (const l of this.listeners) l.close();
    this.listeners.length = 0;
    for (const c of [...this.conns]) c.destroy();
    this.conns.clear();
    for (const s of [...this.sockets]) s.destroy();
    this.sockets.clear();
    this.deadlines.clear();
    this.stopSweeper();
    this.http1.closeAllConnections?.();
  }

  /** Number of open HTTP/2 connections (for tests and metrics). */
  get connectionCount(): number {
    return this.conns.size;
  }
}

function trailersOnly(s: Http2Stream, code: number, msg: string): void {
  s.respond([...RESPONSE_HEADERS, "grpc-status", String(code), "grpc-message", encodeGrpcMessage(msg)], true);
}

export { CONNECTION_LOST, ErrorCode };
