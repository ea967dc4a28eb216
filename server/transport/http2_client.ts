/**
 * A lean cleartext HTTP/2 client connection (h2c with prior knowledge, RFC 9113) over a node:net socket, and a small
 * gRPC client on top of it (`GrpcClient`): client-streaming calls and unary calls whose messages are already-serialized
 * protobuf bytes.
 *
 * Shares the frame reader/writer with the server connection (h2frames.ts) and HPACK with it (hpack.ts). Flow control
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
import { HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";
import { Status, STATUS_NAME } from "./grpc_status.ts";
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
  SETTINGS_ENABLE_PUSH,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  WINDOW_UPDATE,
} from "./h2frames.ts";

export { ErrorCode };

/** Passed to `onReset` when the connection itself went away (socket closed, connection error). */
export const CONNECTION_LOST = -1;

/** What a client stream's owner gets told. A throwing callback resets that stream (INTERNAL_ERROR). */
export interface ClientStreamHandler {
  /** A response header block: the headers, or trailers (`endStream`). */
  onHeaders(fields: string[], endStream: boolean): void;
  /** A DATA payload; the view is only valid during the call. */
  onData(chunk: Uint8Array): void;
  /** The server closed its side with an END_STREAM DATA frame (not with trailers). */
  onEnd(): void;
  /**
   * The stream died before the server finished it: RST_STREAM (its code), refused by GOAWAY (REFUSED_STREAM) or
   * the connection was lost (CONNECTION_LOST).
   */
  onReset(code: number): void;
  /** Queued output went out after write() returned false. */
  onDrain(): void;
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
export class Http2ClientStream {
  /** @internal */ sendWindow: number;
  /** @internal */ recvWindow: number;
  /** @internal */ recvUnacked = 0;
  /** @internal */ remoteClosed = false;
  /** @internal */ localClosed = false;
  /** @internal */ gone = false;
  /** @internal */ gotHeaders = false;
  /** @internal */ readonly queue = new ByteQueue();
  /** @internal */ queueEnd = false;
  /** @internal */ needDrain = false;
  /** @internal bytes framed so far (write callbacks fire once their message's end was framed and written) */
  framed = 0;
  /** @internal bytes accepted by write() so far */
  accepted = 0;
  /** @internal */ writeCbs: { at: number; cb: (err: Error | null) => void }[] = [];

  constructor(
    readonly id: number,
    private readonly conn: Http2ClientConnection,
    readonly handler: ClientStreamHandler,
    sendWindow: number,
    recvWindow: number,
  ) {
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }

  /** Whether the stream is finished (both sides closed or reset). */
  get closed(): boolean {
    return this.gone;
  }

  /** Bytes waiting for flow-control window. */
  get bufferedBytes(): number {
    return this.queue.bytes;
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

  /** Aborts the stream with RST_STREAM (no handler callback). */
  reset(code: number = ErrorCode.CANCEL): void {
    if (this.gone) return;
    this.conn.resetStream(this, code);
  }
}

/** One HTTP/2 client connection. */
export class Http2ClientConnection {
  private readonly streams = new Map<number, Http2ClientStream>();
  private readonly decoder: HpackDecoder;
  private readonly encoder = new HpackEncoder();
  private readonly reader = new FrameReader();
  private readonly w: FrameWriter;
  private readonly initialWindow: number;
  private readonly connWindow: number;
  private nextStreamId = 1;

  private readonly blocks: HeaderBlockAssembler;

  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_FRAME_SIZE;
  private peerMaxStreams = Infinity;
  private connSendWindow = DEFAULT_WINDOW;
  private readonly recvWindow: ReceiveWindow;
  private readonly blocked = new Set<Http2ClientStream>();
  private readonly drainWaiters = new Set<Http2ClientStream>();

  private goawayReceived = false;
  private dead = false;
  private closedNotified = false;
  private connected = false;
  private lastError = "";

  constructor(private readonly socket: net.Socket, private readonly opts: Http2ClientOptions = {}) {
    this.initialWindow = Math.min(opts.initialWindowSize ?? 1 << 20, MAX_WINDOW);
    this.connWindow = Math.min(opts.connectionWindowSize ?? 16 << 20, MAX_WINDOW);
    this.recvWindow = new ReceiveWindow(this.connWindow);
    this.blocks = new HeaderBlockAssembler(opts.maxHeaderListSize ?? 1 << 20);
    this.decoder = new HpackDecoder(4096, opts.maxHeaderListSize ?? 1 << 20);
    this.w = new FrameWriter(socket);
    socket.setNoDelay?.(true);
    socket.on("connect", () => {
      this.connected = true;
      try {
        this.opts.onConnect?.();
      } catch { /* ignore */ }
    });
    socket.on("data", (chunk: Buffer) => this.onSocketData(chunk));
    socket.on("error", (err: Error) => {
      this.lastError = err?.message ?? String(err);
      this.onSocketGone();
    });
    socket.on("close", () => this.onSocketGone());
    socket.on("drain", () => this.onSocketDrain());

    // preface, SETTINGS and the connection window: buffered by the socket until it connects
    this.w.raw(PREFACE);
    const s = this.w.frame(12, SETTINGS, 0, 0);
    this.w.u16(s, SETTINGS_ENABLE_PUSH);
    this.w.u32(s + 2, 0);
    this.w.u16(s + 6, SETTINGS_INITIAL_WINDOW_SIZE);
    this.w.u32(s + 8, this.initialWindow);
    if (this.connWindow > DEFAULT_WINDOW) this.w.windowUpdate(0, this.connWindow - DEFAULT_WINDOW);
    this.w.schedule();
  }

  /** Connects to host:port. */
  static connect(host: string, port: number, opts: Http2ClientOptions = {}): Http2ClientConnection {
    const socket = opts.tls
      ? tls.connect({ ...opts.tls, host, port, ALPNProtocols: ["h2"], servername: net.isIP(host) ? undefined : host })
      : net.connect({ host, port });
    return new Http2ClientConnection(socket, opts);
  }

  /** Whether the connection is closed, failed or draining after GOAWAY: no new streams. */
  get isClosed(): boolean {
    return this.dead || this.goawayReceived;
  }

  /** Number of open streams. */
  get streamCount(): number {
    return this.streams.size;
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
    this.goawayReceived = true; // refuse new streams from now on
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

  private onSocketData(chunk: Uint8Array): void {
    if (this.dead) return;
    try {
      const err = this.reader.feed(chunk, this.onFrame, this.isDeadNow);
      if (err) this.connectionError(ErrorCode.FRAME_SIZE_ERROR, err);
    } catch (err) {
      this.connectionError(ErrorCode.INTERNAL_ERROR, `internal error: ${err instanceof Error ? err.message : err}`);
    }
    if (this.w.len > 0) this.w.schedule();
  }

  private readonly onFrame = (type: number, flags: number, sid: number, buf: Uint8Array, s: number, e: number) =>
    this.frameIn(type, flags, sid, buf, s, e);
  private readonly isDeadNow = (): boolean => this.dead;

  private frameIn(type: number, flags: number, sid: number, buf: Uint8Array, start: number, end: number): void {
    if (this.blocks.pending !== 0 && type !== CONTINUATION) {
      return this.connectionError(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION");
    }
    switch (type) {
      case DATA:
        return this.dataIn(flags, sid, buf, start, end);
      case HEADERS:
        return this.headersIn(flags, sid, buf, start, end);
      case PRIORITY:
        if (sid === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
        return;
      case RST_STREAM:
        return this.rstIn(sid, buf, start, end);
      case SETTINGS:
        return this.settingsIn(flags, sid, buf, start, end);
      case PUSH_PROMISE:
        return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE although push is disabled");
      case PING:
        if (sid !== 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (end - start !== 8) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "PING length");
        if ((flags & FLAG_ACK) === 0) {
          const p = this.w.frame(8, PING, FLAG_ACK, 0); // may replace w.out
          this.w.out.set(buf.subarray(start, end), p);
        }
        return;
      case GOAWAY:
        return this.goawayIn(sid, buf, start, end);
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
      if (sid >= this.nextStreamId) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      return; // a stream we already closed or reset: ignore
    }
    if (!s.gotHeaders) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
    s.recvWindow -= len;
    if (s.recvWindow < 0) return this.streamError(s, ErrorCode.FLOW_CONTROL_ERROR);
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (endStream) s.remoteClosed = true;
    if (e > p) this.emit(s, 0, new Uint8Array(buf.buffer, buf.byteOffset + p, e - p));
    if (s.gone) return;
    if (endStream) {
      this.emit(s, 1, null);
      this.remoteDone(s);
    } else {
      s.recvUnacked += len;
      if (s.recvUnacked >= this.initialWindow >> 1) {
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
      // decoded even for streams we forgot: the HPACK table must stay in sync
      fields = this.decoder.decode(block);
    } catch (err) {
      if (err instanceof HpackError) {
        return this.connectionError(ErrorCode.COMPRESSION_ERROR, `header decoding failed: ${err.message}`);
      }
      throw err;
    }
    if ((sid & 1) === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on a server stream");
    const s = this.streams.get(sid);
    if (!s) {
      if (sid >= this.nextStreamId) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on an idle stream");
      return;
    }
    if (s.gotHeaders && !endStream) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
    s.gotHeaders = true;
    if (endStream) s.remoteClosed = true;
    this.emitHeaders(s, fields, endStream);
    if (endStream && !s.gone) this.remoteDone(s);
  }

  private rstIn(sid: number, buf: Uint8Array, start: number, end: number): void {
    if (sid === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (end - start !== 4) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length");
    const s = this.streams.get(sid);
    if (!s) {
      if (sid >= this.nextStreamId) {
        return this.connectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
      }
      return;
    }
    this.forget(s, new Error("stream reset by the server"));
    this.emit(s, 2, null, readU32(buf, start));
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
        case SETTINGS_MAX_CONCURRENT_STREAMS:
          this.peerMaxStreams = v;
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
      for (const s of [...this.streams.values()]) {
        s.sendWindow += windowDelta;
        if (s.sendWindow > MAX_WINDOW) this.streamError(s, ErrorCode.FLOW_CONTROL_ERROR);
      }
      if (windowDelta > 0) this.resumeBlocked();
    }
  }

  private goawayIn(sid: number, buf: Uint8Array, start: number, end: number): void {
    if (sid !== 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
    if (end - start < 8) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY length");
    const last = readU31(buf, start);
    const code = readU32(buf, start + 4);
    const debug = Buffer.from(buf.subarray(start + 8, end)).toString("utf8");
    const first = !this.goawayReceived;
    this.goawayReceived = true;
    if (debug && !this.lastError) this.lastError = `server sent GOAWAY: ${debug}`;
    // streams the server never processed are refused; the others run to completion
    for (const s of [...this.streams.values()]) {
      if (s.id > last) {
        this.forget(s, new Error("stream refused by GOAWAY"));
        this.emit(s, 2, null, ErrorCode.REFUSED_STREAM);
      }
    }
    if (first) {
      try {
        this.opts.onGoaway?.(code, debug);
      } catch { /* ignore */ }
    }
    if (this.streams.size === 0 && !this.dead) this.closeSocket();
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
    if (!s) return; // a closed stream (or one the server updates late): ignore
    if (inc === 0) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) return this.streamError(s, ErrorCode.FLOW_CONTROL_ERROR);
    if (s.queue.bytes > 0 || s.queueEnd) {
      this.pump(s);
      this.afterPump(s);
    }
  }

  // Application callbacks: a throwing handler resets its stream instead of breaking the connection.

  private emitHeaders(s: Http2ClientStream, fields: string[], end: boolean): void {
    try {
      s.handler.onHeaders(fields, end);
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
  }

  /** what: 0 data, 1 end, 2 reset, 3 drain */
  private emit(s: Http2ClientStream, what: number, chunk: Uint8Array | null, code = 0): void {
    try {
      if (what === 0) s.handler.onData(chunk!);
      else if (what === 1) s.handler.onEnd();
      else if (what === 2) s.handler.onReset(code);
      else s.handler.onDrain();
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
  }

  // ------------------------------------------------------------------------------------------------------------
  // output

  /** @internal */
  sendData(
    s: Http2ClientStream,
    body: Uint8Array,
    head: Uint8Array | null,
    end: boolean,
    cb?: (err: Error | null) => void,
  ): boolean {
    const hl = head ? head.length : 0;
    const total = hl + body.length;
    s.accepted += total;
    if (cb) s.writeCbs.push({ at: s.accepted, cb });
    if (s.queue.bytes === 0 && !s.queueEnd) {
      const allowed = Math.min(s.sendWindow, this.connSendWindow);
      if (total <= allowed && total <= this.peerMaxFrame) {
        // fast path: one frame straight into the output buffer
        const p = this.w.frame(total, DATA, end ? FLAG_END_STREAM : 0, s.id);
        if (head) this.w.out.set(head, p);
        this.w.out.set(body, p + hl);
        s.sendWindow -= total;
        this.connSendWindow -= total;
        s.framed += total;
        if (cb) this.settleWrites(s);
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
    } else if (total > 0) {
      // the caller may reuse its buffer once write() returned
      data = Buffer.from(body);
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

  /** @internal Writes the gathered frames now (a caller that knows its batch is complete). */
  flushNow(): void {
    if (!this.dead) this.w.flush();
  }

  private wantDrain(s: Http2ClientStream): false {
    s.needDrain = true;
    if (this.w.blocked) this.drainWaiters.add(s);
    return false;
  }

  /** Hands the callbacks of fully framed writes to the writer (they fire once the batch was written). */
  private settleWrites(s: Http2ClientStream): void {
    const cbs = s.writeCbs;
    let i = 0;
    while (i < cbs.length && cbs[i].at <= s.framed) this.w.whenWritten(cbs[i++].cb);
    if (i > 0) cbs.splice(0, i);
  }

  /** Sends as much of a stream's queue as the windows allow; sends END_STREAM once the queue is empty. */
  private pump(s: Http2ClientStream): void {
    while (s.queue.bytes > 0) {
      const allowed = Math.min(s.sendWindow, this.connSendWindow, this.peerMaxFrame);
      if (allowed <= 0) break;
      const n = Math.min(s.queue.bytes, allowed);
      const last = n === s.queue.bytes && s.queueEnd;
      const p = this.w.frame(n, DATA, last ? FLAG_END_STREAM : 0, s.id);
      s.queue.copyTo(this.w.out, p, n);
      s.sendWindow -= n;
      this.connSendWindow -= n;
      s.framed += n;
      if (last) {
        s.queueEnd = false;
        this.settleWrites(s);
        this.localDone(s);
        return;
      }
    }
    if (s.writeCbs.length > 0) this.settleWrites(s);
    if (s.queue.bytes === 0 && s.queueEnd) {
      s.queueEnd = false;
      this.w.frame(0, DATA, FLAG_END_STREAM, s.id);
      this.localDone(s);
    }
  }

  private afterPump(s: Http2ClientStream): void {
    if (s.queue.bytes === 0 && !s.queueEnd) {
      this.blocked.delete(s);
      if (s.needDrain && !this.w.blocked && !s.gone) {
        s.needDrain = false;
        this.emit(s, 3, null);
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
  resetStream(s: Http2ClientStream, code: number): void {
    if (s.gone) return;
    this.w.rst(s.id, code);
    this.forget(s, new Error("stream reset"));
    this.w.schedule();
  }

  private localDone(s: Http2ClientStream): void {
    s.localClosed = true;
    if (s.remoteClosed) this.forget(s, null);
  }

  private remoteDone(s: Http2ClientStream): void {
    if (s.localClosed) return this.forget(s, null);
    // the response is complete while we were still sending: abort our side (RFC 9113 8.1)
    this.w.rst(s.id, ErrorCode.CANCEL);
    this.forget(s, new Error("the server finished the call"));
    this.w.schedule();
  }

  private forget(s: Http2ClientStream, err: Error | null): void {
    if (s.gone) return;
    s.gone = true;
    this.streams.delete(s.id);
    this.blocked.delete(s);
    this.drainWaiters.delete(s);
    s.queue.clear();
    const cbs = s.writeCbs;
    s.writeCbs = [];
    for (const c of cbs) {
      const e = err ?? new Error("stream closed");
      queueMicrotask(() => c.cb(e));
    }
    if (this.goawayReceived && this.streams.size === 0 && !this.dead) {
      this.w.flush();
      this.closeSocket();
    }
  }

  private streamError(s: Http2ClientStream, code: number): void {
    this.w.rst(s.id, code);
    this.forget(s, new Error("stream error"));
    this.emit(s, 2, null, code);
  }

  private connectionError(code: number, message: string): void {
    if (this.dead) return;
    if (!this.lastError) this.lastError = message;
    this.w.goaway(0, code, message);
    this.w.flush();
    this.dead = true;
    this.failStreams();
    this.closeSocket();
  }

  private failStreams(): void {
    const list = [...this.streams.values()];
    const err = new Error(this.lastError || "connection lost");
    for (const s of list) {
      this.forget(s, err);
      this.emit(s, 2, null, CONNECTION_LOST);
    }
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
    if (!this.lastError) this.lastError = this.connected ? "connection closed" : "connection failed";
    this.failStreams();
    this.w.failPending(new Error(this.lastError));
    try {
      this.opts.onClose?.(this.lastError);
    } catch { /* ignore */ }
  }

  private onSocketDrain(): void {
    if (!this.w.blocked) return;
    this.w.blocked = false;
    const list = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const s of list) {
      if (s.gone || s.queue.bytes > 0 || s.queueEnd || !s.needDrain) continue;
      s.needDrain = false;
      this.emit(s, 3, null);
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
      const p = this.w.frame(n, type, flags, sid); // may replace w.out
      this.w.out.set(block.subarray(off, off + n), p);
      off += n;
      first = false;
    }
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
  ) {}

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
          this.messages.push(this.body);
          this.body = null;
        }
      } else {
        const take = Math.min(n - p, this.body.length - this.bodyPos);
        this.body.set(chunk.subarray(p, p + take), this.bodyPos);
        this.bodyPos += take;
        p += take;
        if (this.bodyPos === this.body.length) {
          this.messages.push(this.body);
          this.body = null;
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
 * A client-streaming call: `write(bytes)` sends one serialized message (false: wait for 'drain'), `end()` half-closes.
 * Events: 'drain'; 'response' (the response message bytes, on success); 'error' (GrpcError, only emitted when an
 * 'error' listener is registered); 'close' (always, last, once the call is over: status received or stream/connection
 * lost).
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
    let call: GrpcClientStream | null = null;
    const state = new CallState(this, this.maxLen, (err, msgs) => call!.done(err, msgs), () => call!.emit("drain"));
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
