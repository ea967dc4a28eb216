/**
 * A lean cleartext HTTP/2 server connection (h2c with prior knowledge, RFC 9113) over a node:net socket.
 *
 * It implements what a gRPC server needs: the connection preface, SETTINGS, PING, GOAWAY, RST_STREAM, WINDOW_UPDATE,
 * HEADERS/CONTINUATION (HPACK), DATA with padding, PRIORITY (ignored) and flow control in both directions. Any
 * :authority is accepted. Peer mistakes become stream or connection errors (RST_STREAM / GOAWAY), never exceptions
 * that escape to the process.
 *
 * Performance: every frame produced for a connection during one turn of the event loop is copied into one output
 * buffer and handed to the socket with a single write (flushed from setImmediate), so the responses of many
 * concurrent calls coalesce into few TCP segments.
 *
 * The frame handling and stream bookkeeping it shares with the client connection are in h2connection.ts; this file
 * adds the server's side: the preface, accepting request streams, stream-id rules and graceful shutdown.
 */
import type { Socket } from "node:net";
import { putTrace } from "../trace/put_trace.ts";
import {
  type ByteBudget,
  CONNECTION_LOST,
  H2Connection,
  H2Stream,
  type H2StreamHandler,
  MAX_QUEUED_BYTES,
} from "./h2connection.ts";
import {
  ErrorCode,
  MAX_HEADER_LIST_SIZE,
  MAX_WINDOW,
  PREFACE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_HEADER_LIST_SIZE,
} from "./h2frames.ts";

export { CONNECTION_LOST, ErrorCode, PREFACE };

/**
 * SETTINGS_MAX_CONCURRENT_STREAMS we announce: a client once held 1,000,000 streams open on one connection. Go's
 * net/http announces 250 and grpc-go no limit; 1000 keeps room for clients that multiplex many calls (a benchmark's
 * 256 clients, an Easegress member's watches) while bounding what one connection can make the server hold. Handlers
 * still running for streams the client reset count against it.
 */
export const MAX_CONCURRENT_STREAMS = 1000;

/**
 * Rapid reset (CVE-2023-44487): a client that resets more than this many of its streams before they were answered,
 * within RAPID_RESET_WINDOW_MS, gets GOAWAY(ENHANCE_YOUR_CALM). 5,000 HEADERS + RST_STREAM pairs once ran 5,000
 * handlers with no GOAWAY. (Netty allows 200 per 30 s; a legitimate client cancels far fewer calls than it sends.)
 */
export const RAPID_RESET_LIMIT = 1000;
/** The window in which RAPID_RESET_LIMIT resets are allowed. */
export const RAPID_RESET_WINDOW_MS = 10_000;
/**
 * A response completed before the request body (a 413 on its Content-Length, a 403 by ipFilter) leaves the client
 * sending. RFC 9113 8.1 lets the server stop it with RST_STREAM(NO_ERROR), but clients that read the RST_STREAM before
 * the response (Debian's curl 7.88 with nghttp2 1.52 fails the transfer with "stream error", exit 92 — seen about
 * one time in four on a loaded machine) lose the answer. So the rest of the body is read and dropped for up to this
 * long, and only a client still sending after it gets the RST_STREAM; the lingering stream keeps its concurrency
 * slot, so MAX_CONCURRENT_STREAMS still bounds what a client can hold open this way.
 */
export const EARLY_RESPONSE_LINGER_MS = 1000;

/**
 * Request bytes one connection may hold in unfinished messages (each grows with its data up to its declared length,
 * at most the server's message limit): 1000 streams × a 2 MB message each, sent slowly, would otherwise hold 2 GB.
 * A message that would go beyond it fails with RESOURCE_EXHAUSTED.
 */
export const MAX_BUFFERED_REQUEST_BYTES = 64 << 20;

/** How long a server connection may take for each step, and how long it may sit idle (see DEFAULT_TIMEOUTS). */
export interface Http2Timeouts {
  /** From accept until the client's 24-byte connection preface is complete (Go's prefaceTimeout: 10 s). */
  prefaceMs: number;
  /** After the preface, until the client's SETTINGS frame arrived (Go's firstSettingsTimeout: 2 s). */
  settingsMs: number;
  /** A header block begun (HEADERS without END_HEADERS) must be complete within this. */
  headerBlockMs: number;
  /** Output waiting for a client that reads none of it (zero window, undrained socket) for this long → GOAWAY. */
  sendStallMs: number;
  /**
   * A connection with no open stream and no input for this long is closed (a plain close: Deno's HTTP/2 client can
   * crash on a GOAWAY that arrives on an idle connection). Open streams (watches) or client PINGs keep it alive.
   */
  idleMs: number;
}

/**
 * Timeouts that stop connections that never finish their handshake, a header block, read nothing, or ever do
 * anything: a partial preface, an HTTP/2 connection without SETTINGS and an idle connection were all still open after
 * 130 s, and a client with a window of 0 held its queued responses for as long as it liked.
 * grpc-go closes idle connections never (MaxConnectionIdle) and Go's net/http not by default; 5 minutes leaves
 * clients that pause between calls their connection, and the connection limit bounds what idle ones can hold.
 */
export const DEFAULT_TIMEOUTS: Readonly<Http2Timeouts> = Object.freeze({
  prefaceMs: 10_000,
  settingsMs: 2_000,
  headerBlockMs: 10_000,
  sendStallMs: 60_000,
  idleMs: 300_000,
});

/** Options of a server connection. */
export interface Http2ConnectionOptions {
  /** Called for each new request stream once its headers are complete. Set the stream's callbacks here. */
  onStream: (stream: Http2Stream) => void;
  /** Per-stream receive window we advertise (default 1 MiB). */
  initialWindowSize?: number;
  /** Connection receive window (default 16 MiB). */
  connectionWindowSize?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS (default MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams?: number;
  /** Largest accepted header list (default MAX_HEADER_LIST_SIZE). */
  maxHeaderListSize?: number;
  /** Called once when the connection is gone (socket closed). */
  onClose?: () => void;
  /** Queued output of all the server's connections (see MAX_QUEUED_BYTES_TOTAL of grpc_server.ts). */
  sharedQueue?: ByteBudget;
  /** Request bytes buffered in unfinished messages on all the server's connections. */
  sharedReceive?: ByteBudget;
  /**
   * Read the (plain TCP) socket into one buffer of our own (socket_reads.ts); the stream handlers must copy what they
   * keep of a DATA payload (default false).
   */
  ownReadBuffer?: boolean;
}

/** The DNS and IP subject alternative names of a certificate, as the certificate spells them. */
export interface CertAltNames {
  dns: string[];
  ip: string[];
}

/**
 * Parses a certificate's `subjectaltname` as node:tls reports it: "DNS:a.example, IP Address:10.0.0.1, URI:..." (a
 * value holding a comma or quote is JSON-quoted). Other kinds of name are skipped.
 */
export function parseAltNames(text: string): CertAltNames {
  const out: CertAltNames = { dns: [], ip: [] };
  for (const m of text.matchAll(/(?:^|, )(DNS|IP Address):("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    let value = m[2];
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value);
      } catch {
        continue;
      }
    }
    (m[1] === "DNS" ? out.dns : out.ip).push(value);
  }
  return out;
}

/** Work deferred until the current socket input was processed (see Http2Stream.afterInput). */
export interface DeferredTask {
  runDeferred(): void;
}

/** What the application gets told about a request stream (`onEnd`: the client half-closed it). */
export type StreamHandler = H2StreamHandler;

/** A request stream as seen by the server. */
export class Http2Stream extends H2Stream {
  /** Request headers, flat [name, value, ...] (pseudo-headers included). */
  readonly headers: string[];
  /** Receives the stream's events; set it in `onStream`. */
  handler: StreamHandler | null = null;
  /** @internal its slot is held by a handler still running after a reset (see `holdSlot`) */
  holdingSlot = false;
  /** @internal ends a response-complete stream whose client still sends (EARLY_RESPONSE_LINGER_MS) */
  lingerTimer: ReturnType<typeof setTimeout> | undefined;
  declare protected readonly conn: Http2ServerConnection;

  constructor(id: number, conn: Http2ServerConnection, headers: string[], sendWindow: number, recvWindow: number) {
    super(id, conn, sendWindow, recvWindow, true);
    this.headers = headers;
  }

  /** The first value of a request header. */
  header(name: string): string | undefined {
    const h = this.headers;
    for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
    return undefined;
  }

  /** The socket peer as "address:port". */
  get peer(): string {
    return this.conn.peer;
  }

  /** The common name of the client's verified TLS certificate ("" without one). */
  get peerCommonName(): string {
    return this.conn.peerCommonName;
  }

  /** The subject alternative names of the client's verified TLS certificate (empty without one). */
  get peerAltNames(): CertAltNames {
    return this.conn.peerAltNames;
  }

  /** Sends response headers (flat list, ":status" first); `end` closes our side right away. */
  respond(fields: string[], end = false): void {
    if (this.localClosed || this.gone) return;
    this.conn.sendHeaders(this, fields, end);
  }

  /**
   * Sends `head` (optional, small) followed by `body` as DATA. Returns false when the data had to wait for the
   * peer's flow-control window or the socket is backed up; `handler.onDrain` fires once it went out.
   */
  write(body: Uint8Array, head: Uint8Array | null = null, end = false): boolean {
    if (this.localClosed || this.gone) return false;
    return this.conn.sendData(this, body, head, end);
  }

  /**
   * After a reset: the handler is still running (a proposed Put finishing), so the stream keeps counting against
   * MAX_CONCURRENT_STREAMS until `releaseSlot()`.
   */
  holdSlot(): void {
    if (this.holdingSlot) return;
    this.holdingSlot = true;
    this.conn.lingering++;
  }

  /** The handler that held the slot finished. */
  releaseSlot(): void {
    if (!this.holdingSlot) return;
    this.holdingSlot = false;
    this.conn.lingering--;
  }

  /**
   * Accounts for `delta` more (or, negative, fewer) bytes of an unfinished request message; false (nothing
   * accounted) when that would exceed MAX_BUFFERED_REQUEST_BYTES or the server-wide receive budget.
   */
  reserveReceive(delta: number): boolean {
    return this.conn.reserveReceive(delta);
  }

  /**
   * Runs `task.runDeferred()` once the socket input being processed is through, so that a RST_STREAM arriving with
   * the request (rapid reset) cancels the call before its handler starts any work.
   */
  afterInput(task: DeferredTask): void {
    this.conn.deferred.push(task);
  }

  /** Closes our side: with trailers (a HEADERS frame) or an empty DATA frame. */
  end(trailers: string[] | null = null): void {
    if (this.localClosed || this.gone) return;
    if (trailers) this.conn.sendTrailers(this, trailers);
    else this.conn.sendData(this, new Uint8Array(0), null, true);
  }
}

type ServerOptions =
  & Required<Omit<Http2ConnectionOptions, "onClose" | "sharedQueue" | "sharedReceive">>
  & Pick<Http2ConnectionOptions, "onClose" | "sharedQueue" | "sharedReceive">;

/** One HTTP/2 server connection over a socket. */
export class Http2ServerConnection extends H2Connection<Http2Stream> {
  readonly peer: string;
  #peerCommonName: string | undefined;
  #peerAltNames: CertAltNames | undefined;
  private readonly opts: ServerOptions;
  private prefaceLeft = PREFACE.length;
  /** @internal handlers still running for streams that were reset (they count against the stream limit) */
  lingering = 0;
  /** @internal tasks to run once the current input chunk is processed */
  deferred: DeferredTask[] = [];
  /** Bytes of unfinished request messages (see MAX_BUFFERED_REQUEST_BYTES). */
  private receiveBuffered = 0;
  /** Resets by the client within the current rapid-reset window, and when that window began. */
  private resets = 0;
  private resetWindowStart = 0;
  /** When the connection was created (the preface is in: the SETTINGS deadline runs from here). */
  private readonly createdAt = Date.now();
  /** Last time a sweep saw input or open streams. */
  private lastActive = this.createdAt;

  constructor(socket: Socket, options: Http2ConnectionOptions) {
    const opts: ServerOptions = {
      initialWindowSize: Math.min(options.initialWindowSize ?? 1 << 20, MAX_WINDOW),
      connectionWindowSize: Math.min(options.connectionWindowSize ?? 16 << 20, MAX_WINDOW),
      maxConcurrentStreams: options.maxConcurrentStreams ?? MAX_CONCURRENT_STREAMS,
      maxHeaderListSize: options.maxHeaderListSize ?? MAX_HEADER_LIST_SIZE,
      onStream: options.onStream,
      onClose: options.onClose,
      sharedQueue: options.sharedQueue,
      sharedReceive: options.sharedReceive,
      ownReadBuffer: options.ownReadBuffer ?? false,
    };
    super(socket, {
      initialWindow: opts.initialWindowSize,
      connectionWindow: opts.connectionWindowSize,
      maxHeaderListSize: opts.maxHeaderListSize,
      settingsFirst: true,
      pauseWhenBlocked: true,
      // gRPC clients ping with nearly every request (bandwidth probing): the ACK goes out with the response
      deferPingAck: true,
      copyQueuedData: false,
      pushPromiseError: "PUSH_PROMISE from a client",
      maxQueuedBytes: MAX_QUEUED_BYTES,
      sharedQueue: options.sharedQueue ?? null,
      readBuffer: opts.ownReadBuffer,
    });
    this.opts = opts;
    this.peer = `${socket.remoteAddress ?? "unknown"}:${socket.remotePort ?? 0}`;
    // our SETTINGS and the connection window, sent right away
    this.sendSettings([
      SETTINGS_MAX_CONCURRENT_STREAMS,
      opts.maxConcurrentStreams,
      SETTINGS_INITIAL_WINDOW_SIZE,
      opts.initialWindowSize,
      SETTINGS_MAX_HEADER_LIST_SIZE,
      opts.maxHeaderListSize,
    ]);
  }

  protected override onSocketData(chunk: Uint8Array): void {
    if (putTrace.on) putTrace.inputAt = performance.now();
    super.onSocketData(chunk);
    if (this.deferred.length === 0) return;
    const tasks = this.deferred;
    this.deferred = [];
    for (const t of tasks) t.runDeferred();
  }

  /** @internal see Http2Stream.reserveReceive */
  reserveReceive(delta: number): boolean {
    const shared = this.opts.sharedReceive;
    if (delta > 0) {
      if (this.receiveBuffered + delta > MAX_BUFFERED_REQUEST_BYTES) return false;
      if (shared && shared.bytes + delta > shared.max) return false;
    }
    this.receiveBuffered += delta;
    if (shared) shared.bytes += delta;
    return true;
  }

  /** The subject alternative names (DNS and IP) of the client's verified TLS certificate, read once. */
  get peerAltNames(): CertAltNames {
    if (this.#peerAltNames === undefined) {
      const s = this.socket as Socket & {
        authorized?: boolean;
        getPeerCertificate?: () => { subjectaltname?: string };
      };
      let text = "";
      try {
        if (s.authorized) text = s.getPeerCertificate?.()?.subjectaltname ?? "";
      } catch { /* not a TLS socket */ }
      this.#peerAltNames = parseAltNames(text);
    }
    return this.#peerAltNames;
  }

  /** The common name of the client's verified TLS certificate ("" without one), read once. */
  get peerCommonName(): string {
    if (this.#peerCommonName === undefined) {
      const s = this.socket as Socket & {
        authorized?: boolean;
        getPeerCertificate?: () => { subject?: { CN?: string } };
      };
      let cn = "";
      try {
        if (s.authorized) cn = s.getPeerCertificate?.()?.subject?.CN ?? "";
      } catch { /* not a TLS socket */ }
      this.#peerCommonName = cn;
    }
    return this.#peerCommonName;
  }

  /** Feeds bytes already read from the socket (e.g. by protocol sniffing) before the socket's own data. */
  feed(bytes: Uint8Array): void {
    if (bytes.length > 0) this.onSocketData(bytes);
  }

  /** Whether the connection is closed or closing after an error. */
  get isDead(): boolean {
    return this.dead;
  }

  /** Graceful shutdown: GOAWAY(NO_ERROR), refuse new streams, close once the open ones finish. */
  shutdown(): void {
    if (this.dead) return;
    if (!this.goingAway) this.sendGoaway(ErrorCode.NO_ERROR, "");
    this.w.flush();
    if (this.streams.size === 0) this.closeSocket();
  }

  /**
   * Enforces the timeouts; called by the owner's periodic sweep. Closes the connection when the client's SETTINGS
   * is late, a header block stays unfinished, its output has not moved for too long, or it has been idle (no open
   * stream, no input) for too long.
   */
  checkTimeouts(now: number, t: Http2Timeouts): void {
    if (this.dead) return;
    if (this.awaitingSettings) {
      if (now - this.createdAt >= t.settingsMs) this.connectionError(ErrorCode.SETTINGS_TIMEOUT, "no SETTINGS");
      return;
    }
    if (this.headerBlockExpired(now, t.headerBlockMs)) {
      return this.connectionError(ErrorCode.PROTOCOL_ERROR, "header block not finished in time");
    }
    if (this.outputStalled(now, t.sendStallMs)) {
      return this.connectionError(ErrorCode.ENHANCE_YOUR_CALM, "the client reads none of its responses");
    }
    if (this.inputSeen || this.streams.size > 0 || this.lingering > 0) {
      this.inputSeen = false;
      this.lastActive = now;
    } else if (now - this.lastActive >= t.idleMs) {
      this.lastError = "idle";
      this.closeSocket();
    }
  }

  /**
   * Closes the connection now: every open stream sees onReset(CONNECTION_LOST). No GOAWAY is sent first (the RFC
   * only recommends it): Deno 2.9.6's HTTP/2 client, used by grpc-js on Deno, can crash the client process when a
   * GOAWAY arrives on an idle connection (tests/fixtures/cluster_goaway_repro.ts), while a closed socket is safe.
   */
  destroy(): void {
    this.dead = true;
    this.failStreams();
    this.socket.destroy();
  }

  // ------------------------------------------------------------------------------------------------------------
  // input

  protected override consume(chunk: Uint8Array): void {
    let buf = chunk;
    if (this.prefaceLeft > 0) {
      const off = PREFACE.length - this.prefaceLeft;
      const n = Math.min(this.prefaceLeft, buf.length);
      for (let i = 0; i < n; i++) {
        if (buf[i] !== PREFACE[off + i]) {
          this.connectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface");
          return;
        }
      }
      this.prefaceLeft -= n;
      if (n === buf.length) return;
      buf = buf.subarray(n);
    }
    super.consume(buf);
  }

  protected isIdle(sid: number): boolean {
    return sid > this.lastStreamId;
  }

  protected headersIn(sid: number, endStream: boolean, fields: string[]): void {
    const existing = this.streams.get(sid);
    if (existing) {
      // trailers
      if (existing.remoteClosed) return this.streamError(existing, ErrorCode.STREAM_CLOSED);
      if (!endStream) return this.streamError(existing, ErrorCode.PROTOCOL_ERROR);
      existing.remoteClosed = true;
      this.emitEnd(existing);
      this.remoteDone(existing);
      return;
    }
    if ((sid & 1) === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "even stream id from a client");
    if (sid <= this.lastStreamId) return; // headers for a stream already closed: ignore
    this.lastStreamId = sid;
    if (this.goingAway || this.streams.size + this.lingering >= this.opts.maxConcurrentStreams) {
      return this.w.rst(sid, ErrorCode.REFUSED_STREAM);
    }
    if (!validRequestHeaders(fields)) return this.w.rst(sid, ErrorCode.PROTOCOL_ERROR);
    const s = new Http2Stream(sid, this, fields, this.peerInitialWindow, this.initialWindow);
    this.streams.set(sid, s);
    if (endStream) s.remoteClosed = true;
    try {
      this.opts.onStream(s);
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
      return;
    }
    if (endStream && !s.gone) {
      this.emitEnd(s);
      this.remoteDone(s);
    }
  }

  protected override streamGone(s: Http2Stream): void {
    if (s.lingerTimer !== undefined) clearTimeout(s.lingerTimer);
  }

  protected override peerReset(): void {
    const now = Date.now();
    if (now - this.resetWindowStart > RAPID_RESET_WINDOW_MS) {
      this.resetWindowStart = now;
      this.resets = 0;
    }
    if (++this.resets > RAPID_RESET_LIMIT) {
      this.connectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset (rapid reset)");
    }
  }

  protected goawayIn(): void {
    // the client will not open more streams; the open ones run to completion
  }

  // ------------------------------------------------------------------------------------------------------------
  // output

  /** @internal */
  sendHeaders(s: Http2Stream, fields: string[], end: boolean): void {
    this.headersOut(s.id, fields, end);
    if (end) this.localDone(s);
    this.w.schedule();
  }

  /** @internal */
  sendTrailers(s: Http2Stream, fields: string[]): void {
    if (s.queue.bytes > 0) {
      s.queueEnd = true;
      s.queueTrailers = fields;
      return;
    }
    this.headersOut(s.id, fields, true);
    this.localDone(s);
    this.w.schedule();
  }

  protected localDone(s: Http2Stream): void {
    s.localClosed = true;
    if (s.remoteClosed) return this.forget(s, null);
    // the response is complete while the client still sends: drop its DATA, then stop it (EARLY_RESPONSE_LINGER_MS)
    s.discarding = true;
    const timer = setTimeout(() => {
      if (s.gone) return;
      this.w.rst(s.id, ErrorCode.NO_ERROR);
      this.forget(s, null);
      this.w.schedule();
    }, EARLY_RESPONSE_LINGER_MS);
    Deno.unrefTimer(timer);
    s.lingerTimer = timer;
  }

  protected remoteDone(s: Http2Stream): void {
    if (s.localClosed && s.remoteClosed) this.forget(s, null);
  }

  protected notifyClosed(): void {
    try {
      this.opts.onClose?.();
    } catch { /* ignore */ }
  }
}

/** Minimal request header checks: the pseudo-headers a server needs, lower-case names, pseudo-headers first. */
function validRequestHeaders(f: string[]): boolean {
  let method = false;
  let path = false;
  let regular = false;
  for (let i = 0; i < f.length; i += 2) {
    const n = f[i];
    if (n.charCodeAt(0) === 58 /* : */) {
      if (regular) return false;
      if (n === ":method") method = true;
      else if (n === ":path") path = f[i + 1] !== "";
      else if (n !== ":scheme" && n !== ":authority") return false;
    } else {
      regular = true;
      if (n !== n.toLowerCase()) return false;
      if (n === "connection") return false;
    }
  }
  return method && path;
}
