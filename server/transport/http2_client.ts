/**
 * A lean cleartext HTTP/2 client connection (h2c with prior knowledge, RFC 9113) over a node:net socket, and a small
 * gRPC client on top of it (`GrpcClient`): unary, client-streaming and bidirectional calls whose messages are already-serialized
 * protobuf bytes.
 *
 * Shares the frame handling, stream bookkeeping and send machinery with the server connection (h2connection.ts,
 * over h2frames.ts and hpack.ts); this file adds opening streams, the client's stream-id rules and GOAWAY. Flow control
 * both ways: the server's SETTINGS (initial window, max frame size, header table size) and WINDOW_UPDATEs are
 * respected, our receive windows are replenished as data is consumed. Every frame produced during one turn of the
 * event loop goes out in one socket write.
 *
 * There is no reconnection: a client whose connection closed (or that received GOAWAY) reports it on its calls
 * (streams see 'error' UNAVAILABLE and 'close', unary calls reject) and refuses new calls; the caller makes a new
 * client (`GrpcClient.closed` tells when).
 */
import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { Status, STATUS_NAME } from "./grpc_status.ts";
import { CONNECTION_LOST, H2Connection, H2Stream, type H2StreamHandler } from "./h2connection.ts";
import {
  ErrorCode,
  MAX_HEADER_LIST_SIZE,
  MAX_WINDOW,
  PREFACE,
  readU31,
  readU32,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_INITIAL_WINDOW_SIZE,
} from "./h2frames.ts";
import { onreadOption, type ReadTarget } from "./socket_reads.ts";

export { CONNECTION_LOST, ErrorCode };

/** What a client stream's owner gets told. A throwing callback resets that stream (INTERNAL_ERROR). */
export interface ClientStreamHandler extends H2StreamHandler {
  /** A response header block: the headers, or trailers (`endStream`). */
  onHeaders(fields: string[], endStream: boolean): void;
  /** The server closed its side with an END_STREAM DATA frame (not with trailers). */
  onEnd(): void;
  /**
   * The stream died before the server finished it: RST_STREAM (its code), refused by GOAWAY (REFUSED_STREAM) or
   * the connection was lost (CONNECTION_LOST).
   */
  onReset(code: number): void;
}

/** Options of a client connection. */
export interface Http2ClientOptions {
  /** Per-stream receive window we advertise (default 1 MiB). */
  initialWindowSize?: number;
  /** Connection receive window (default 16 MiB). */
  connectionWindowSize?: number;
  /** Largest accepted response header list (default 1 MiB). */
  maxHeaderListSize?: number;
  /** Connect with TLS (ALPN "h2") using these options (CA, client certificate); plaintext h2c when absent. */
  tls?: tls.ConnectionOptions;
  /** Called once the socket connected. */
  onConnect?: () => void;
  /** Called once when the connection is gone (socket closed). */
  onClose?: (reason: string) => void;
  /** Called when the server sent GOAWAY (no new streams are possible on this connection). */
  onGoaway?: (code: number, debug: string) => void;
}

/** One request stream. */
export class Http2ClientStream extends H2Stream {
  /** @internal bytes accepted by write() so far (those not in `queue` were framed) */
  accepted = 0;
  /** @internal write callbacks, each due once the bytes up to `at` were framed and written */
  writeCbs: { at: number; cb: (err: Error | null) => void }[] = [];
  declare protected readonly conn: Http2ClientConnection;

  constructor(
    id: number,
    conn: Http2ClientConnection,
    readonly handler: ClientStreamHandler,
    sendWindow: number,
    recvWindow: number,
  ) {
    super(id, conn, sendWindow, recvWindow, false);
  }

  /**
   * Sends `head` (optional, small) followed by `body` as DATA. Returns false when the data had to wait for the
   * server's flow-control window or the socket is backed up; `handler.onDrain` fires once it went out. `cb` is called
   * once these bytes were written to the socket, or with an error when the stream or connection died first.
   */
  write(body: Uint8Array, head: Uint8Array | null = null, end = false, cb?: (err: Error | null) => void): boolean {
    if (this.localClosed || this.gone) {
      if (cb) queueMicrotask(() => cb(new Error("write after end")));
      return false;
    }
    return this.conn.sendData(this, body, head, end, cb);
  }

  /** Writes the frames gathered on the connection now rather than at the end of the event-loop turn. */
  flush(): void {
    this.conn.flushNow();
  }

  /** Closes our side (an empty END_STREAM DATA frame once the queued data went out). */
  end(): void {
    if (this.localClosed || this.gone || this.queueEnd) return;
    this.conn.sendData(this, new Uint8Array(0), null, true);
  }
}

/** One HTTP/2 client connection. */
export class Http2ClientConnection extends H2Connection<Http2ClientStream> {
  private nextStreamId = 1;
  private connected = false;

  /** `readTarget`: where the socket's reads go when it was connected with a read buffer of our own (socket_reads.ts). */
  constructor(
    socket: net.Socket,
    private readonly opts: Http2ClientOptions = {},
    readTarget: ReadTarget | null = null,
  ) {
    super(socket, {
      initialWindow: Math.min(opts.initialWindowSize ?? 1 << 20, MAX_WINDOW),
      connectionWindow: Math.min(opts.connectionWindowSize ?? 16 << 20, MAX_WINDOW),
      maxHeaderListSize: opts.maxHeaderListSize ?? MAX_HEADER_LIST_SIZE,
      settingsFirst: false,
      pauseWhenBlocked: false,
      deferPingAck: false,
      copyQueuedData: true,
      pushPromiseError: "PUSH_PROMISE although push is disabled",
      // our own requests: their callers decide how much to send
      maxQueuedBytes: Infinity,
      sharedQueue: null,
      readBuffer: readTarget ?? false,
    });
    socket.on("connect", () => {
      this.connected = true;
      try {
        this.opts.onConnect?.();
      } catch { /* ignore */ }
    });
    // preface, SETTINGS and the connection window: buffered by the socket until it connects
    this.w.raw(PREFACE);
    this.sendSettings([SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, this.initialWindow]);
  }

  /** Connects to host:port. */
  static connect(host: string, port: number, opts: Http2ClientOptions = {}): Http2ClientConnection {
    if (opts.tls) {
      const servername = net.isIP(host) ? undefined : host;
      return new Http2ClientConnection(
        tls.connect({ ...opts.tls, host, port, ALPNProtocols: ["h2"], servername }),
        opts,
      );
    }
    // plain TCP: the socket reads into one 64 KiB buffer of ours (socket_reads.ts)
    const target: ReadTarget = { onChunk: null };
    return new Http2ClientConnection(net.connect({ host, port, onread: onreadOption(target) }), opts, target);
  }

  /** Whether the connection is closed, failed or draining after GOAWAY: no new streams. */
  get isClosed(): boolean {
    return this.dead || this.goingAway;
  }

  /**
   * Opens a stream with the request headers (flat list, pseudo-headers first; names lower case). Returns null when
   * the connection cannot take new streams (closed, GOAWAY, stream ids or the server's stream limit exhausted).
   */
  request(fields: string[], handler: ClientStreamHandler, end = false): Http2ClientStream | null {
    if (this.isClosed || this.nextStreamId > MAX_WINDOW || this.streams.size >= this.peerMaxStreams) return null;
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const s = new Http2ClientStream(id, this, handler, this.peerInitialWindow, this.initialWindow);
    this.streams.set(id, s);
    this.headersOut(id, fields, end);
    if (end) s.localClosed = true;
    this.w.schedule();
    return s;
  }

  /** Graceful close: no new streams; the socket closes once the open ones finish. */
  close(): void {
    if (this.dead) return;
    this.goingAway = true; // refuse new streams from now on
    if (this.streams.size === 0) this.closeSocket();
  }

  /** Closes the connection now: every open stream sees onReset(CONNECTION_LOST). */
  destroy(reason = "connection closed by the client"): void {
    if (!this.dead) {
      this.w.goaway(0, ErrorCode.NO_ERROR, "");
      this.w.flush();
    }
    this.dead = true;
    if (!this.lastError) this.lastError = reason;
    this.failStreams();
    this.socket.destroy();
  }

  /** Why the connection failed, if it did (socket error message). */
  get error(): string {
    return this.lastError;
  }

  // ------------------------------------------------------------------------------------------------------------
  // input

  protected isIdle(sid: number): boolean {
    return sid >= this.nextStreamId;
  }

  protected headersIn(sid: number, endStream: boolean, fields: string[]): void {
    if ((sid & 1) === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on a server stream");
    const s = this.streams.get(sid);
    if (!s) {
      if (this.isIdle(sid)) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on an idle stream");
      return;
    }
    if (s.gotHeaders && !endStream) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
    s.gotHeaders = true;
    if (endStream) s.remoteClosed = true;
    try {
      s.handler.onHeaders(fields, endStream);
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
    if (endStream && !s.gone) this.remoteDone(s);
  }

  protected goawayIn(buf: Uint8Array, start: number, end: number): void {
    const last = readU31(buf, start);
    const code = readU32(buf, start + 4);
    const debug = Buffer.from(buf.subarray(start + 8, end)).toString("utf8");
    const first = !this.goingAway;
    this.goingAway = true;
    if (debug && !this.lastError) this.lastError = `server sent GOAWAY: ${debug}`;
    // streams the server never processed are refused; the others run to completion
    for (const s of [...this.streams.values()]) {
      if (s.id > last) {
        this.forget(s, "stream refused by GOAWAY");
        this.emitReset(s, ErrorCode.REFUSED_STREAM);
      }
    }
    if (first) {
      try {
        this.opts.onGoaway?.(code, debug);
      } catch { /* ignore */ }
    }
    if (this.streams.size === 0 && !this.dead) this.closeSocket();
  }

  // ------------------------------------------------------------------------------------------------------------
  // output

  /** @internal `cb` runs once these bytes were written to the socket (with an error if the stream died first). */
  override sendData(
    s: Http2ClientStream,
    body: Uint8Array,
    head: Uint8Array | null,
    end: boolean,
    cb?: (err: Error | null) => void,
  ): boolean {
    s.accepted += (head ? head.length : 0) + body.length;
    if (cb) s.writeCbs.push({ at: s.accepted, cb });
    return super.sendData(s, body, head, end);
  }

  /** @internal Writes the gathered frames now (a caller that knows its batch is complete). */
  flushNow(): void {
    if (!this.dead) this.w.flush();
  }

  /** Hands the callbacks of fully framed writes to the writer (they fire once the batch was written). */
  protected override dataFramed(s: Http2ClientStream): void {
    const cbs = s.writeCbs;
    if (cbs.length === 0) return;
    const framed = s.accepted - s.queue.bytes;
    let i = 0;
    while (i < cbs.length && cbs[i].at <= framed) this.w.whenWritten(cbs[i++].cb);
    if (i > 0) cbs.splice(0, i);
  }

  protected localDone(s: Http2ClientStream): void {
    s.localClosed = true;
    if (s.remoteClosed) this.forget(s, null);
  }

  protected remoteDone(s: Http2ClientStream): void {
    if (s.localClosed) return this.forget(s, null);
    // the response is complete while we were still sending: abort our side (RFC 9113 8.1)
    this.w.rst(s.id, ErrorCode.CANCEL);
    this.forget(s, "the server finished the call");
    this.w.schedule();
  }

  /** Fails the write callbacks still waiting. */
  protected override streamGone(s: Http2ClientStream, why: string | null): void {
    const cbs = s.writeCbs;
    if (cbs.length === 0) return;
    s.writeCbs = [];
    const e = new Error(why ?? "stream closed");
    for (const c of cbs) queueMicrotask(() => c.cb(e));
  }

  protected override onSocketError(err: Error): void {
    this.lastError = err?.message ?? String(err);
    this.onSocketGone();
  }

  protected override onSocketGone(): void {
    if (!this.lastError) this.lastError = this.connected ? "connection closed" : "connection failed";
    super.onSocketGone();
  }

  protected notifyClosed(): void {
    this.w.failPending(new Error(this.lastError));
    try {
      this.opts.onClose?.(this.lastError);
    } catch { /* ignore */ }
  }
}

// ----------------------------------------------------------------------------------------------------------------
// gRPC

export { Status } from "./grpc_status.ts";

/** A failed call: `code` is the gRPC status, `details` the server's grpc-message; message as grpc-js words it. */
export class GrpcError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
    /** trailing (or trailers-only) metadata, non-pseudo, non-grpc-* fields */
    readonly metadata: Record<string, string> = {},
  ) {
    super(`${code} ${STATUS_NAME[code] ?? "UNKNOWN"}: ${details}`);
    this.name = "GrpcError";
  }
}

/** Call metadata: header name → value(s). `-bin` keys take raw bytes (sent base64). */
export type CallMetadata = Record<string, string | Uint8Array | (string | Uint8Array)[]>;

/** Options of a GrpcClient. */
export interface GrpcClientOptions extends Omit<Http2ClientOptions, "onClose" | "onGoaway" | "onConnect"> {
  /** Largest accepted response message (default 64 MiB). */
  maxReceiveMessageLength?: number;
}

/** grpc-message decoding: %XX escapes of UTF-8 bytes. */
export function decodeGrpcMessage(s: string): string {
  if (!s.includes("%")) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Splits "host:port" or "[v6]:port". */
function splitTarget(target: string): [string, number] {
  const t = target.replace(/^(dns:|ipv4:|ipv6:|https?:\/\/)/, "").replace(/\/+$/, "");
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(t) ?? /^([^:]*):(\d+)$/.exec(t);
  if (!m) throw new Error(`bad gRPC target ${target} (want host:port)`);
  return [m[1] || "localhost", Number(m[2])];
}

/** HTTP status without grpc-status → gRPC status (gRPC's http-grpc-status-mapping). */
function httpToGrpc(status: number): number {
  switch (status) {
    case 400:
      return Status.INTERNAL;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}

/** RST_STREAM code → gRPC status. */
function rstToGrpc(code: number): [number, string] {
  switch (code) {
    case CONNECTION_LOST:
      return [Status.UNAVAILABLE, "connection lost"];
    case ErrorCode.REFUSED_STREAM:
      return [Status.UNAVAILABLE, "stream refused by the server (GOAWAY or RST_STREAM REFUSED_STREAM)"];
    case ErrorCode.CANCEL:
      return [Status.CANCELLED, "call cancelled by the server (RST_STREAM CANCEL)"];
    case ErrorCode.ENHANCE_YOUR_CALM:
      return [Status.RESOURCE_EXHAUSTED, "bandwidth exhausted (RST_STREAM ENHANCE_YOUR_CALM)"];
    case ErrorCode.INADEQUATE_SECURITY:
      return [Status.PERMISSION_DENIED, "protocol not secure enough (RST_STREAM INADEQUATE_SECURITY)"];
    default:
      return [Status.INTERNAL, `stream reset by the server with code ${code}`];
  }
}

/**
 * The state of one call on a stream: reassembles response messages, reads the status from the trailers and reports
 * the outcome once (`done`).
 */
class CallState implements ClientStreamHandler {
  stream: Http2ClientStream | null = null;
  finished = false;
  readonly messages: Buffer[] = [];
  private httpStatus = 0;
  private readonly hdr = new Uint8Array(5);
  private hdrPos = 0;
  private body: Buffer | null = null;
  private bodyPos = 0;

  constructor(
    private readonly client: GrpcClient,
    private readonly maxLen: number,
    private readonly done: (err: GrpcError | null, messages: Buffer[]) => void,
    readonly onDrainCb: () => void,
    /** streaming responses: each message as soon as it is complete (else they are kept for `done`) */
    private readonly onMessage: ((message: Buffer) => void) | null = null,
  ) {}

  private received(message: Buffer): void {
    if (this.onMessage) this.onMessage(message);
    else this.messages.push(message);
  }

  onHeaders(fields: string[], endStream: boolean): void {
    if (this.finished) return;
    if (this.httpStatus === 0) {
      for (let i = 0; i < fields.length; i += 2) {
        if (fields[i] === ":status") this.httpStatus = Number(fields[i + 1]);
      }
      if (!endStream) {
        if (this.httpStatus !== 200) {
          this.finish(httpToGrpc(this.httpStatus), `unexpected HTTP status ${this.httpStatus}`);
          this.stream?.reset(ErrorCode.CANCEL);
          return;
        }
        let ctype = "";
        for (let i = 0; i < fields.length; i += 2) if (fields[i] === "content-type") ctype = fields[i + 1];
        if (!ctype.startsWith("application/grpc")) {
          this.finish(Status.UNKNOWN, `unexpected content-type "${ctype}"`);
          this.stream?.reset(ErrorCode.CANCEL);
        }
        return;
      }
    }
    // trailers, or trailers-only
    let code = -1;
    let details = "";
    const md: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) {
      const k = fields[i];
      if (k === "grpc-status") code = Number(fields[i + 1]);
      else if (k === "grpc-message") details = decodeGrpcMessage(fields[i + 1]);
      else if (k.charCodeAt(0) !== 58 && !k.startsWith("grpc-") && k !== "content-type") md[k] = fields[i + 1];
    }
    if (code < 0 || !Number.isInteger(code)) {
      if (this.httpStatus !== 200) this.finish(httpToGrpc(this.httpStatus), `HTTP status ${this.httpStatus}`, md);
      else this.finish(Status.INTERNAL, "missing grpc-status in the trailers", md);
      return;
    }
    if (code === Status.OK && (this.body !== null || this.hdrPos !== 0)) {
      this.finish(Status.INTERNAL, "the response ended inside a message", md);
      return;
    }
    this.finish(code, details, md);
  }

  onData(chunk: Uint8Array): void {
    let p = 0;
    const n = chunk.length;
    while (p < n && !this.finished) {
      if (this.body === null) {
        while (this.hdrPos < 5 && p < n) this.hdr[this.hdrPos++] = chunk[p++];
        if (this.hdrPos < 5) return;
        this.hdrPos = 0;
        const h = this.hdr;
        if (h[0] !== 0) {
          this.finish(Status.INTERNAL, "compressed response message without a negotiated encoding");
          this.stream?.reset(ErrorCode.CANCEL);
          return;
        }
        const len = readU32(h, 1);
        if (len > this.maxLen) {
          this.finish(Status.RESOURCE_EXHAUSTED, `received message larger than max (${len} vs. ${this.maxLen})`);
          this.stream?.reset(ErrorCode.CANCEL);
          return;
        }
        this.body = Buffer.allocUnsafe(len);
        this.bodyPos = 0;
        if (len === 0) {
          this.body = null;
          this.received(Buffer.alloc(0));
        }
      } else {
        const take = Math.min(n - p, this.body.length - this.bodyPos);
        this.body.set(chunk.subarray(p, p + take), this.bodyPos);
        this.bodyPos += take;
        p += take;
        if (this.bodyPos === this.body.length) {
          const message = this.body;
          this.body = null;
          this.received(message);
        }
      }
    }
  }

  onEnd(): void {
    if (this.httpStatus !== 200 && this.httpStatus !== 0) {
      this.finish(httpToGrpc(this.httpStatus), `HTTP status ${this.httpStatus}`);
    } else this.finish(Status.INTERNAL, "the server closed the stream without sending trailers");
  }

  onReset(code: number): void {
    const [c, d] = rstToGrpc(code);
    const why = code === CONNECTION_LOST ? this.client.connectionError() : "";
    this.finish(c, why ? `${d}: ${why}` : d);
  }

  onDrain(): void {
    if (!this.finished) this.onDrainCb();
  }

  finish(code: number, details: string, md: Record<string, string> = {}): void {
    if (this.finished) return;
    this.finished = true;
    this.done(code === Status.OK ? null : new GrpcError(code, details, md), this.messages);
  }
}

/** Request headers of a call. */
function requestHeaders(path: string, authority: string, md: CallMetadata | undefined, timeoutMs?: number): string[] {
  const f = [
    ":method",
    "POST",
    ":scheme",
    "http",
    ":path",
    path,
    ":authority",
    authority,
    "content-type",
    "application/grpc",
    "te",
    "trailers",
  ];
  if (timeoutMs !== undefined && timeoutMs > 0) f.push("grpc-timeout", `${Math.ceil(timeoutMs)}m`);
  if (md) {
    for (const [k0, v0] of Object.entries(md)) {
      const k = k0.toLowerCase();
      if (k.startsWith(":") || k.startsWith("grpc-") || k === "content-type" || k === "te") continue;
      for (const v of Array.isArray(v0) ? v0 : [v0]) {
        if (k.endsWith("-bin")) {
          const b = typeof v === "string" ? Buffer.from(v) : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
          f.push(k, b.toString("base64").replace(/=+$/, ""));
        } else f.push(k, String(v));
      }
    }
  }
  return f;
}

/**
 * A client-streaming or bidirectional call: `write(bytes)` sends one serialized message (false: wait for 'drain'),
 * `end()` half-closes. Events: 'drain'; 'message' (bidirectional calls: each response message's bytes, as it
 * completes); 'response' (client-streaming calls: the response message bytes, on success); 'error' (GrpcError, only
 * emitted when an 'error' listener is registered); 'close' (always, last, once the call is over: status received or
 * stream/connection lost).
 */
export class GrpcClientStream extends EventEmitter {
  /** The final status error, once the call failed. */
  error: GrpcError | null = null;
  /** Whether the call is over. */
  closed = false;
  private readonly prefix = new Uint8Array(5);

  /** @internal */
  constructor(private readonly stream: Http2ClientStream | null, private readonly state: CallState | null) {
    super();
  }

  /**
   * Sends one message (the 5-byte gRPC prefix is added here). `cb` runs once the message was written to the socket,
   * with an error if the call died first. Returns false when the caller should wait for 'drain'.
   */
  write(bytes: Uint8Array, cb?: (err: Error | null) => void): boolean {
    const s = this.stream;
    if (!s || this.closed) {
      if (cb) queueMicrotask(() => cb(this.error ?? new Error("call closed")));
      return false;
    }
    const n = bytes.length;
    const p = this.prefix;
    p[0] = 0;
    p[1] = n >>> 24;
    p[2] = (n >>> 16) & 0xff;
    p[3] = (n >>> 8) & 0xff;
    p[4] = n & 0xff;
    return s.write(bytes, p, false, cb);
  }

  /** Hands what was written so far to the socket now instead of at the end of the event-loop turn. */
  flush(): void {
    if (!this.closed) this.stream?.flush();
  }

  /** Half-closes the call: the server answers with its response and status. */
  end(): void {
    if (!this.closed) this.stream?.end();
  }

  /** Cancels the call (RST_STREAM CANCEL); the stream reports CANCELLED. */
  cancel(): void {
    if (this.closed) return;
    this.stream?.reset(ErrorCode.CANCEL);
    this.state?.finish(Status.CANCELLED, "cancelled by the client");
  }

  /** Bytes waiting for the server's flow-control window. */
  get bufferedBytes(): number {
    return this.stream?.bufferedBytes ?? 0;
  }

  /** @internal */
  done(err: GrpcError | null, messages: Buffer[]): void {
    if (this.closed) return;
    this.closed = true;
    this.error = err;
    // events after the current frame's processing, like a stream's
    queueMicrotask(() => {
      if (err) {
        if (this.listenerCount("error") > 0) this.emit("error", err);
      } else if (messages.length > 0) this.emit("response", messages[0]);
      this.emit("close");
    });
  }
}

/**
 * A gRPC client on one HTTP/2 connection to `host:port` (connected at construction). Calls are made with
 * already-serialized messages. No reconnection: once `closed`, make a new client. Events: 'connect', 'goaway'
 * (code, debug), 'close' (reason).
 */
export class GrpcClient extends EventEmitter {
  readonly authority: string;
  private readonly conn: Http2ClientConnection;
  private readonly maxLen: number;

  constructor(target: string, options: GrpcClientOptions = {}) {
    super();
    const [host, port] = splitTarget(target);
    this.authority = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    this.maxLen = options.maxReceiveMessageLength ?? 64 << 20;
    this.conn = Http2ClientConnection.connect(host, port, {
      ...options,
      onConnect: () => this.emit("connect"),
      onClose: (reason) => this.emit("close", reason),
      onGoaway: (code, debug) => this.emit("goaway", code, debug),
    });
  }

  /** Whether the connection is gone or going away (GOAWAY received, close() called): make a new client. */
  get closed(): boolean {
    return this.conn.isClosed;
  }

  /** @internal why the connection failed, for error details */
  connectionError(): string {
    return this.conn.error;
  }

  /** Opens a client-streaming call (`path` like "/egpb.Raft/Send"). */
  clientStream(path: string, metadata?: CallMetadata): GrpcClientStream {
    return this.#stream(path, metadata, false);
  }

  /** Opens a bidirectional-streaming call (`path` like "/etcdserverpb.Watch/Watch"): responses arrive as 'message'. */
  bidiStream(path: string, metadata?: CallMetadata): GrpcClientStream {
    return this.#stream(path, metadata, true);
  }

  #stream(path: string, metadata: CallMetadata | undefined, messages: boolean): GrpcClientStream {
    let call: GrpcClientStream | null = null;
    const state = new CallState(
      this,
      this.maxLen,
      (err, msgs) => call!.done(err, msgs),
      () => call!.emit("drain"),
      messages ? (message) => call!.emit("message", message) : null,
    );
    const stream = this.conn.request(requestHeaders(path, this.authority, metadata), state);
    call = new GrpcClientStream(stream, state);
    state.stream = stream;
    if (!stream) state.finish(Status.UNAVAILABLE, this.unavailable());
    return call;
  }

  /** A unary call: resolves with the response bytes, rejects with a GrpcError. */
  unary(path: string, bytes: Uint8Array, metadata?: CallMetadata, timeoutMs?: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const state = new CallState(this, this.maxLen, (err, msgs) => {
        if (timer !== undefined) clearTimeout(timer);
        if (err) reject(err);
        else if (msgs.length !== 1) {
          reject(new GrpcError(Status.INTERNAL, `expected one response message, got ${msgs.length}`));
        } else resolve(msgs[0]);
      }, () => {});
      const stream = this.conn.request(requestHeaders(path, this.authority, metadata, timeoutMs), state);
      state.stream = stream;
      if (!stream) return state.finish(Status.UNAVAILABLE, this.unavailable());
      if (timeoutMs !== undefined && timeoutMs > 0) {
        timer = setTimeout(() => {
          stream.reset(ErrorCode.CANCEL);
          state.finish(Status.DEADLINE_EXCEEDED, "Deadline exceeded");
        }, timeoutMs);
      }
      const n = bytes.length;
      const p = new Uint8Array(5);
      p[1] = n >>> 24;
      p[2] = (n >>> 16) & 0xff;
      p[3] = (n >>> 8) & 0xff;
      p[4] = n & 0xff;
      stream.write(bytes, p, true);
    });
  }

  /** Graceful close: no new calls; the connection closes once the open ones finish. */
  close(): void {
    this.conn.close();
  }

  /** Closes the connection now: open calls fail with UNAVAILABLE. */
  destroy(): void {
    this.conn.destroy();
  }

  private unavailable(): string {
    const why = this.conn.error;
    return why ? `connection unavailable: ${why}` : "connection unavailable (closing)";
  }
}
