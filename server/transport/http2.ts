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
 */
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import { HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";
import {
  ByteQueue,
  CONTINUATION,
  DATA,
  DEFAULT_FRAME_SIZE,
  DEFAULT_WINDOW,
  ErrorCode,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  framePayload,
  FrameReader,
  FrameWriter,
  GOAWAY,
  H2Error,
  type HeaderBlock,
  HeaderBlockAssembler,
  HEADERS,
  MAX_WINDOW,
  parseSettings,
  PING,
  PREFACE,
  PRIORITY,
  PUSH_PROMISE,
  readU31,
  readU32,
  ReceiveWindow,
  RST_STREAM,
  SETTINGS,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  SETTINGS_MAX_HEADER_LIST_SIZE,
  WINDOW_UPDATE,
} from "./h2frames.ts";

export { ErrorCode, PREFACE };

/** Passed to `onReset` when the connection itself went away (socket closed or connection error). */
export const CONNECTION_LOST = -1;

/** Options of a server connection. */
export interface Http2ConnectionOptions {
  /** Called for each new request stream once its headers are complete. Set the stream's callbacks here. */
  onStream: (stream: Http2Stream) => void;
  /** Per-stream receive window we advertise (default 1 MiB). */
  initialWindowSize?: number;
  /** Connection receive window (default 16 MiB). */
  connectionWindowSize?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS (default 1,000,000). */
  maxConcurrentStreams?: number;
  /** Largest accepted header list (default 1 MiB). */
  maxHeaderListSize?: number;
  /** Called once when the connection is gone (socket closed). */
  onClose?: () => void;
}

/** What the application gets told about a stream. A throwing method resets that stream (INTERNAL_ERROR). */
export interface StreamHandler {
  /** A DATA payload; the view is only valid during the call. */
  onData(chunk: Uint8Array): void;
  /** The client half-closed the stream (END_STREAM). */
  onEnd(): void;
  /** The stream was reset by the peer (its error code) or the connection was lost (CONNECTION_LOST). */
  onReset(code: number): void;
  /** Queued output went out after write() returned false. */
  onDrain(): void;
}

/** A request stream as seen by the server. */
export class Http2Stream {
  /** Request headers, flat [name, value, ...] (pseudo-headers included). */
  readonly headers: string[];
  /** Receives the stream's events; set it in `onStream`. */
  handler: StreamHandler | null = null;

  /** @internal */ sendWindow: number;
  /** @internal */ recvWindow: number;
  /** @internal */ recvUnacked = 0;
  /** @internal */ remoteClosed = false;
  /** @internal */ localClosed = false;
  /** @internal */ gone = false;
  /** @internal */ readonly queue = new ByteQueue();
  /** @internal */ queueEnd = false;
  /** @internal */ queueTrailers: string[] | null = null;
  /** @internal */ needDrain = false;

  constructor(
    readonly id: number,
    private readonly conn: Http2ServerConnection,
    headers: string[],
    sendWindow: number,
    recvWindow: number,
  ) {
    this.headers = headers;
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }

  /** The first value of a request header. */
  header(name: string): string | undefined {
    const h = this.headers;
    for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
    return undefined;
  }

  /** Whether the stream is finished (both sides closed or reset). */
  get closed(): boolean {
    return this.gone;
  }

  /** Bytes waiting for flow-control window. */
  get bufferedBytes(): number {
    return this.queue.bytes;
  }

  /** The socket peer as "address:port". */
  get peer(): string {
    return this.conn.peer;
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

  /** Closes our side: with trailers (a HEADERS frame) or an empty DATA frame. */
  end(trailers: string[] | null = null): void {
    if (this.localClosed || this.gone) return;
    if (trailers) this.conn.sendTrailers(this, trailers);
    else this.conn.sendData(this, new Uint8Array(0), null, true);
  }

  /** Aborts the stream with RST_STREAM. */
  reset(code: number = ErrorCode.CANCEL): void {
    if (this.gone) return;
    this.conn.resetStream(this, code);
  }
}

/** One HTTP/2 server connection over a socket. */
export class Http2ServerConnection {
  readonly peer: string;
  private readonly streams = new Map<number, Http2Stream>();
  private readonly decoder: HpackDecoder;
  private readonly encoder = new HpackEncoder();
  private readonly opts: Required<Omit<Http2ConnectionOptions, "onClose">> & { onClose?: () => void };

  // input state
  private prefaceLeft = PREFACE.length;
  private gotSettings = false;
  private readonly reader = new FrameReader();
  private readonly blocks: HeaderBlockAssembler;
  private lastStreamId = 0;

  // flow control
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_FRAME_SIZE;
  private connSendWindow = DEFAULT_WINDOW;
  private readonly recvWindow: ReceiveWindow;
  private readonly blocked = new Set<Http2Stream>();

  // output state
  private readonly w: FrameWriter;
  private readonly drainWaiters = new Set<Http2Stream>();

  private goawaySent = false;
  private dead = false;
  private closedNotified = false;

  constructor(private readonly socket: Socket, options: Http2ConnectionOptions) {
    this.opts = {
      initialWindowSize: Math.min(options.initialWindowSize ?? 1 << 20, MAX_WINDOW),
      connectionWindowSize: Math.min(options.connectionWindowSize ?? 16 << 20, MAX_WINDOW),
      maxConcurrentStreams: options.maxConcurrentStreams ?? 1_000_000,
      maxHeaderListSize: options.maxHeaderListSize ?? 1 << 20,
      onStream: options.onStream,
      onClose: options.onClose,
    };
    this.peer = `${socket.remoteAddress ?? "unknown"}:${socket.remotePort ?? 0}`;
    this.decoder = new HpackDecoder(4096, this.opts.maxHeaderListSize);
    this.recvWindow = new ReceiveWindow(this.opts.connectionWindowSize);
    this.blocks = new HeaderBlockAssembler(this.opts.maxHeaderListSize);
    this.w = new FrameWriter(socket, () => socket.pause());
    socket.setNoDelay?.(true);
    socket.on("data", (chunk: Buffer) => this.onSocketData(chunk));
    socket.on("error", () => this.onSocketGone());
    socket.on("close", () => this.onSocketGone());
    socket.on("drain", () => this.onSocketDrain());

    // our SETTINGS and the connection window, sent right away
    const s = this.w.frame(18, SETTINGS, 0, 0);
    this.w.u16(s, SETTINGS_MAX_CONCURRENT_STREAMS);
    this.w.u32(s + 2, this.opts.maxConcurrentStreams);
    this.w.u16(s + 6, SETTINGS_INITIAL_WINDOW_SIZE);
    this.w.u32(s + 8, this.opts.initialWindowSize);
    this.w.u16(s + 12, SETTINGS_MAX_HEADER_LIST_SIZE);
    this.w.u32(s + 14, this.opts.maxHeaderListSize);
    if (this.opts.connectionWindowSize > DEFAULT_WINDOW) {
      this.w.windowUpdate(0, this.opts.connectionWindowSize - DEFAULT_WINDOW);
    }
    this.w.schedule();
  }

  /** Feeds bytes already read from the socket (e.g. by protocol sniffing) before the socket's own data. */
  feed(bytes: Uint8Array): void {
    if (bytes.length > 0) this.onSocketData(bytes);
  }

  /** Number of open streams. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Whether the connection is closed or closing after an error. */
  get isDead(): boolean {
    return this.dead;
  }

  /** Graceful shutdown: GOAWAY(NO_ERROR), refuse new streams, close once the open ones finish. */
  shutdown(): void {
    if (this.dead) return;
    if (!this.goawaySent) this.sendGoaway(ErrorCode.NO_ERROR, "");
    this.w.flush();
    if (this.streams.size === 0) this.closeSocket();
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

  private onSocketData(chunk: Uint8Array): void {
    if (this.dead) return;
    try {
      this.consume(chunk);
    } catch (err) {
      this.connectionError(ErrorCode.INTERNAL_ERROR, `internal error: ${err instanceof Error ? err.message : err}`);
    }
    if (this.w.len > 0) this.w.schedule();
  }

  private consume(chunk: Uint8Array): void {
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
    const err = this.reader.feed(buf, this.onFrame, this.isDeadNow);
    if (err) this.connectionError(ErrorCode.FRAME_SIZE_ERROR, err);
  }

  private readonly onFrame = (type: number, flags: number, sid: number, buf: Uint8Array, s: number, e: number) =>
    this.frameIn(type, flags, sid, buf, s, e);
  private readonly isDeadNow = (): boolean => this.dead;

  private frameIn(type: number, flags: number, sid: number, buf: Uint8Array, start: number, end: number): void {
    if (!this.gotSettings) {
      if (type !== SETTINGS || (flags & FLAG_ACK) !== 0) {
        this.connectionError(ErrorCode.PROTOCOL_ERROR, "first frame must be SETTINGS");
        return;
      }
      this.gotSettings = true;
    }
    if (this.blocks.pending !== 0 && type !== CONTINUATION) {
      this.connectionError(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION");
      return;
    }
    switch (type) {
      case DATA:
        return this.dataIn(flags, sid, buf, start, end);
      case HEADERS:
        return this.headersIn(flags, sid, buf, start, end);
      case PRIORITY:
        if (sid === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
        if (end - start !== 5) return this.streamError(sid, ErrorCode.FRAME_SIZE_ERROR);
        return;
      case RST_STREAM:
        return this.rstIn(sid, buf, start, end);
      case SETTINGS:
        return this.settingsIn(flags, sid, buf, start, end);
      case PUSH_PROMISE:
        return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case PING:
        if (sid !== 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (end - start !== 8) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "PING length");
        if ((flags & FLAG_ACK) === 0) {
          // gRPC clients ping with nearly every request (bandwidth probing): the ACK goes out with the response
          const p = this.w.deferredFrame(8, PING, FLAG_ACK, 0);
          this.w.out.set(buf.subarray(start, end), p);
        }
        return;
      case GOAWAY:
        if (sid !== 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (end - start < 8) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY length");
        // the client will not open more streams; the open ones run to completion
        return;
      case WINDOW_UPDATE:
        return this.windowUpdateIn(sid, buf, start, end);
      case CONTINUATION:
        return this.continuationIn(flags, sid, buf, start, end);
      default:
        return; // unknown frame types are ignored
    }
  }

  private dataIn(flags: number, sid: number, buf: Uint8Array, start: number, end: number): void {
    if (sid === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    const len = end - start;
    const inc = this.recvWindow.consume(len);
    if (inc instanceof H2Error) return this.connectionError(inc.code, inc.message);
    if (inc > 0) this.w.windowUpdate(0, inc);
    const range = framePayload("DATA", flags, buf, start, end);
    if (range instanceof H2Error) return this.connectionError(range.code, range.message);
    const [p, e] = range;
    const s = this.streams.get(sid);
    if (!s) {
      if (sid > this.lastStreamId) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      return; // a stream we already closed or reset: ignore
    }
    if (s.remoteClosed) return this.streamError(sid, ErrorCode.STREAM_CLOSED);
    s.recvWindow -= len;
    if (s.recvWindow < 0) return this.streamError(sid, ErrorCode.FLOW_CONTROL_ERROR);
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (endStream) s.remoteClosed = true;
    if (e > p) this.emitData(s, new Uint8Array(buf.buffer, buf.byteOffset + p, e - p));
    if (s.gone) return;
    if (endStream) {
      this.emitEnd(s);
      this.maybeFinish(s);
    } else {
      s.recvUnacked += len;
      if (s.recvUnacked >= this.opts.initialWindowSize >> 1) {
        this.w.windowUpdate(sid, s.recvUnacked);
        s.recvWindow += s.recvUnacked;
        s.recvUnacked = 0;
      }
    }
  }

  private headersIn(flags: number, sid: number, buf: Uint8Array, start: number, end: number): void {
    this.blockIn(this.blocks.headers(flags, sid, buf, start, end));
  }

  private continuationIn(flags: number, sid: number, buf: Uint8Array, start: number, end: number): void {
    this.blockIn(this.blocks.continuation(flags, sid, buf, start, end));
  }

  private blockIn(r: HeaderBlock | null | H2Error): void {
    if (r instanceof H2Error) return this.connectionError(r.code, r.message);
    if (r) this.headerBlock(r.sid, r.endStream, r.block);
  }

  private headerBlock(sid: number, endStream: boolean, block: Uint8Array): void {
    let fields: string[];
    try {
      fields = this.decoder.decode(block);
    } catch (err) {
      if (err instanceof HpackError) {
        return this.connectionError(ErrorCode.COMPRESSION_ERROR, `header decoding failed: ${err.message}`);
      }
      throw err;
    }
    const existing = this.streams.get(sid);
    if (existing) {
      // trailers
      if (existing.remoteClosed) return this.streamError(sid, ErrorCode.STREAM_CLOSED);
      if (!endStream) return this.streamError(sid, ErrorCode.PROTOCOL_ERROR);
      existing.remoteClosed = true;
      this.emitEnd(existing);
      this.maybeFinish(existing);
      return;
    }
    if ((sid & 1) === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "even stream id from a client");
    if (sid <= this.lastStreamId) return; // headers for a stream already closed: ignore
    this.lastStreamId = sid;
    if (this.goawaySent || this.streams.size >= this.opts.maxConcurrentStreams) {
      return this.streamError(sid, ErrorCode.REFUSED_STREAM);
    }
    if (!validRequestHeaders(fields)) return this.streamError(sid, ErrorCode.PROTOCOL_ERROR);
    const s = new Http2Stream(sid, this, fields, this.peerInitialWindow, this.opts.initialWindowSize);
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
      this.maybeFinish(s);
    }
  }

  private rstIn(sid: number, buf: Uint8Array, start: number, end: number): void {
    if (sid === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (end - start !== 4) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length");
    const s = this.streams.get(sid);
    if (!s) {
      if (sid > this.lastStreamId) {
        return this.connectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
      }
      return;
    }
    const code = readU32(buf, start);
    this.forget(s);
    this.emitReset(s, code);
  }

  private settingsIn(flags: number, sid: number, buf: Uint8Array, start: number, end: number): void {
    if (sid !== 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    if (flags & FLAG_ACK) {
      if (end !== start) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with payload");
      return;
    }
    const settings = parseSettings(buf, start, end);
    if (settings instanceof H2Error) return this.connectionError(settings.code, settings.message);
    let windowDelta = 0;
    for (const [id, v] of settings) {
      switch (id) {
        case SETTINGS_HEADER_TABLE_SIZE:
          this.encoder.setPeerTableSize(v);
          break;
        case SETTINGS_INITIAL_WINDOW_SIZE:
          windowDelta += v - this.peerInitialWindow;
          this.peerInitialWindow = v;
          break;
        case SETTINGS_MAX_FRAME_SIZE:
          this.peerMaxFrame = v;
          break;
      }
    }
    this.w.frame(0, SETTINGS, FLAG_ACK, 0);
    if (windowDelta !== 0) {
      for (const s of this.streams.values()) {
        s.sendWindow += windowDelta;
        if (s.sendWindow > MAX_WINDOW) {
          this.streamError(s.id, ErrorCode.FLOW_CONTROL_ERROR);
        }
      }
      if (windowDelta > 0) this.resumeBlocked();
    }
  }

  private windowUpdateIn(sid: number, buf: Uint8Array, start: number, end: number): void {
    if (end - start !== 4) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length");
    const inc = readU31(buf, start);
    if (sid === 0) {
      if (inc === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
      this.connSendWindow += inc;
      if (this.connSendWindow > MAX_WINDOW) {
        return this.connectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow");
      }
      this.resumeBlocked();
      return;
    }
    const s = this.streams.get(sid);
    if (!s) {
      if (sid > this.lastStreamId) {
        return this.connectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
      }
      return;
    }
    if (inc === 0) return this.streamError(sid, ErrorCode.PROTOCOL_ERROR);
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) return this.streamError(sid, ErrorCode.FLOW_CONTROL_ERROR);
    if (s.queue.bytes > 0 || s.queueEnd) {
      this.pump(s);
      this.afterPump(s);
    }
  }

  // Application callbacks: a throwing handler resets its stream instead of breaking the connection.

  private emitData(s: Http2Stream, chunk: Uint8Array): void {
    if (!s.handler) return;
    try {
      s.handler.onData(chunk);
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
  }

  private emitEnd(s: Http2Stream): void {
    if (!s.handler) return;
    try {
      s.handler.onEnd();
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
  }

  private emitReset(s: Http2Stream, code: number): void {
    if (!s.handler) return;
    try {
      s.handler.onReset(code);
    } catch { /* the stream is gone already */ }
  }

  private emitDrain(s: Http2Stream): void {
    if (!s.handler) return;
    try {
      s.handler.onDrain();
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
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

  /** @internal */
  sendData(s: Http2Stream, body: Uint8Array, head: Uint8Array | null, end: boolean): boolean {
    const hl = head ? head.length : 0;
    const total = hl + body.length;
    if (s.queue.bytes === 0 && !s.queueEnd) {
      const allowed = Math.min(s.sendWindow, this.connSendWindow);
      if (total <= allowed && total <= this.peerMaxFrame) {
        // fast path: one frame straight into the output buffer
        const p = this.w.frame(total, DATA, end ? FLAG_END_STREAM : 0, s.id);
        if (head) this.w.out.set(head, p);
        this.w.out.set(body, p + hl);
        s.sendWindow -= total;
        this.connSendWindow -= total;
        if (end) this.localDone(s);
        this.w.schedule();
        return !this.w.blocked || this.wantDrain(s);
      }
    }
    let data = body;
    if (head && hl > 0) {
      data = Buffer.allocUnsafe(total);
      data.set(head, 0);
      data.set(body, hl);
    }
    s.queue.push(data);
    if (end) s.queueEnd = true;
    this.pump(s);
    this.w.schedule();
    if (s.queue.bytes > 0 || s.queueEnd) {
      this.blocked.add(s);
      return this.wantDrain(s);
    }
    if (s.localClosed) return true;
    return !this.w.blocked || this.wantDrain(s);
  }

  private wantDrain(s: Http2Stream): false {
    s.needDrain = true;
    if (this.w.blocked) this.drainWaiters.add(s);
    return false;
  }

  /** Sends as much of a stream's queue as the windows allow; finishes the stream when its end went out. */
  private pump(s: Http2Stream): void {
    while (s.queue.bytes > 0) {
      const allowed = Math.min(s.sendWindow, this.connSendWindow, this.peerMaxFrame);
      if (allowed <= 0) return;
      const n = Math.min(s.queue.bytes, allowed);
      const last = n === s.queue.bytes && s.queueEnd && !s.queueTrailers;
      const p = this.w.frame(n, DATA, last ? FLAG_END_STREAM : 0, s.id);
      s.queue.copyTo(this.w.out, p, n);
      s.sendWindow -= n;
      this.connSendWindow -= n;
      if (last) {
        s.queueEnd = false;
        this.localDone(s);
        return;
      }
    }
    if (s.queueEnd) {
      s.queueEnd = false;
      if (s.queueTrailers) {
        this.headersOut(s.id, s.queueTrailers, true);
        s.queueTrailers = null;
      } else {
        this.w.frame(0, DATA, FLAG_END_STREAM, s.id);
      }
      this.localDone(s);
    }
  }

  private afterPump(s: Http2Stream): void {
    if (s.queue.bytes === 0 && !s.queueEnd) {
      this.blocked.delete(s);
      if (s.needDrain && !this.w.blocked && !s.gone) {
        s.needDrain = false;
        this.emitDrain(s);
      }
    }
    this.w.schedule();
  }

  private resumeBlocked(): void {
    if (this.blocked.size === 0) return;
    const list = [...this.blocked];
    for (const s of list) {
      if (this.connSendWindow <= 0) break;
      if (s.gone) {
        this.blocked.delete(s);
        continue;
      }
      this.pump(s);
    }
    for (const s of list) this.afterPump(s);
  }

  /** @internal */
  resetStream(s: Http2Stream, code: number): void {
    if (s.gone) return;
    this.w.rst(s.id, code);
    this.forget(s);
    this.w.schedule();
  }

  private localDone(s: Http2Stream): void {
    s.localClosed = true;
    if (!s.remoteClosed) {
      // the response is complete: tell the client to stop sending (RFC 9113 8.1)
      this.w.rst(s.id, ErrorCode.NO_ERROR);
    }
    this.forget(s);
  }

  private maybeFinish(s: Http2Stream): void {
    if (s.localClosed && s.remoteClosed) this.forget(s);
  }

  private forget(s: Http2Stream): void {
    if (s.gone) return;
    s.gone = true;
    this.streams.delete(s.id);
    this.blocked.delete(s);
    this.drainWaiters.delete(s);
    s.queue.clear();
    if (this.goawaySent && this.streams.size === 0 && !this.dead) {
      this.w.flush();
      this.closeSocket();
    }
  }

  private streamError(sid: number, code: number): void {
    const s = this.streams.get(sid);
    this.w.rst(sid, code);
    if (s) {
      this.forget(s);
      this.emitReset(s, code);
    }
  }

  private connectionError(code: number, message: string): void {
    if (this.dead) return;
    this.sendGoaway(code, message);
    this.w.flush();
    this.dead = true;
    this.failStreams();
    this.closeSocket();
  }

  private failStreams(): void {
    const list = [...this.streams.values()];
    for (const s of list) {
      this.forget(s);
      this.emitReset(s, CONNECTION_LOST);
    }
  }

  private sendGoaway(code: number, message: string): void {
    this.goawaySent = true;
    this.w.goaway(this.lastStreamId, code, message);
  }

  private closeSocket(): void {
    this.dead = true;
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 2000);
    (t as unknown as { unref?: () => void }).unref?.();
  }

  private onSocketGone(): void {
    if (this.closedNotified) return;
    this.closedNotified = true;
    this.dead = true;
    this.failStreams();
    try {
      this.opts.onClose?.();
    } catch { /* ignore */ }
  }

  private onSocketDrain(): void {
    if (!this.w.blocked) return;
    this.w.blocked = false;
    this.socket.resume();
    const list = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const s of list) {
      if (s.gone || s.queue.bytes > 0 || s.queueEnd || !s.needDrain) continue;
      s.needDrain = false;
      this.emitDrain(s);
    }
  }

  private headersOut(sid: number, fields: string[], end: boolean): void {
    const block = this.encoder.encode(fields);
    const max = this.peerMaxFrame;
    if (block.length <= max) {
      const p = this.w.frame(block.length, HEADERS, FLAG_END_HEADERS | (end ? FLAG_END_STREAM : 0), sid);
      this.w.out.set(block, p);
      return;
    }
    let off = 0;
    let first = true;
    while (off < block.length) {
      const n = Math.min(max, block.length - off);
      const lastPart = off + n === block.length;
      const type = first ? HEADERS : CONTINUATION;
      const flags = (lastPart ? FLAG_END_HEADERS : 0) | (first && end ? FLAG_END_STREAM : 0);
      const p = this.w.frame(n, type, flags, sid);
      this.w.out.set(block.subarray(off, off + n), p);
      off += n;
      first = false;
    }
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
