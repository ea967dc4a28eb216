/**
 * What the HTTP/2 server (http2.ts) and client (http2_client.ts) connections share above the framing (h2frames.ts):
 * stream bookkeeping, the handling of DATA (receive windows, WINDOW_UPDATE), HEADERS/CONTINUATION (HPACK),
 * PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY and WINDOW_UPDATE frames, the send side (DATA fast path, per-stream
 * queues pumped as flow-control window arrives, drain notices), stream and connection errors, and closing.
 *
 * The subclasses supply what differs: how streams come to be (a server accepts them from HEADERS, a client opens
 * them), the stream-id rules, what a complete header block and a GOAWAY mean, and when a stream is finished.
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
  doneWith,
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
  WINDOW_UPDATE,
} from "./h2frames.ts";
import { readIntoOwnBuffer, type ReadTarget } from "./socket_reads.ts";
import { IntMap } from "../util/int_map.ts";

/** Passed to `onReset` when the connection itself went away (socket closed or connection error). */
export const CONNECTION_LOST = -1;

/**
 * Response bytes a connection may hold for a peer that does not read them (zero flow-control window, or a socket it
 * does not drain): 300 Range calls of 1 MB against a window of 0 once held 350 MB. A write while this much is held
 * resets its stream with ENHANCE_YOUR_CALM (a write below it is queued whatever its size: one large response fits).
 */
export const MAX_QUEUED_BYTES = 32 << 20;

/** A count of bytes held with its limit, shared by the connections of one server (see GrpcServer). */
export class ByteBudget {
  bytes = 0;
  constructor(readonly max: number) {}

  /** Whether the limit is reached. */
  get exhausted(): boolean {
    return this.bytes >= this.max;
  }
}

/** What a stream's owner gets told. A throwing method resets that stream (INTERNAL_ERROR). */
export interface H2StreamHandler {
  /** A DATA payload; the view is only valid during the call. */
  onData(chunk: Uint8Array): void;
  /** The peer closed its side (END_STREAM). */
  onEnd(): void;
  /** The stream was reset by the peer (its error code) or the connection was lost (CONNECTION_LOST). */
  onReset(code: number): void;
  /** Queued output went out after write() returned false. */
  onDrain(): void;
}

/** The state a connection keeps for one of its streams. */
export abstract class H2Stream {
  /** Receives the stream's events (null: nobody listens yet). */
  abstract readonly handler: H2StreamHandler | null;

  /** @internal */ sendWindow: number;
  /** @internal */ recvWindow: number;
  /** @internal */ recvUnacked = 0;
  /** @internal */ remoteClosed = false;
  /** @internal */ localClosed = false;
  /** @internal */ gone = false;
  /** @internal the response is complete; the request's remaining DATA is read and dropped (server) */
  discarding = false;
  /** @internal the peer's header block arrived (DATA before it is a stream error) */
  gotHeaders: boolean;
  /** @internal */ readonly queue = new ByteQueue();
  /** @internal */ queueEnd = false;
  /** @internal trailers to send once the queue is empty (server) */
  queueTrailers: string[] | null = null;
  /** @internal */ needDrain = false;
  /** @internal received DATA is given back to the peer's window as the owner reads it (`paceReceive`) */
  paced = false;

  constructor(
    readonly id: number,
    protected readonly conn: H2Connection<H2Stream>,
    sendWindow: number,
    recvWindow: number,
    gotHeaders: boolean,
  ) {
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
    this.gotHeaders = gotHeaders;
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
   * Receive flow control by the reader: while on, the stream's receive window is given back only through
   * `consumed(n)`, so the peer sends at most one window ahead of what the owner took. Turning it off gives back
   * nothing by itself: call `consumed` for what was received and not read first.
   */
  paceReceive(on: boolean): void {
    this.paced = on;
  }

  /** The owner took `n` received bytes of a paced stream: their window goes back to the peer. */
  consumed(n: number): void {
    this.conn.windowConsumed(this, n);
  }

  /** Aborts the stream with RST_STREAM (no handler callback). */
  reset(code: number = ErrorCode.CANCEL): void {
    if (this.gone) return;
    this.conn.resetStream(this, code);
  }
}

/** How the two ends differ below the stream level. */
export interface H2ConnectionConfig {
  /** Per-stream receive window we advertise. */
  initialWindow: number;
  /** Connection receive window we advertise. */
  connectionWindow: number;
  /** Largest accepted header list. */
  maxHeaderListSize: number;
  /** The peer's first frame must be SETTINGS (a server reading the client's preface). */
  settingsFirst: boolean;
  /** Stop reading from the socket while its output is backed up; resume on 'drain'. */
  pauseWhenBlocked: boolean;
  /** PING ACKs wait for the next write (a gRPC client pings with nearly every request). */
  deferPingAck: boolean;
  /** Queued DATA is copied first (the caller may reuse its buffer once write() returned). */
  copyQueuedData: boolean;
  /** The GOAWAY message for a PUSH_PROMISE (never allowed: a client does not push and we disable push). */
  pushPromiseError: string;
  /** Output held for a peer that does not read it, beyond which a write resets its stream (see MAX_QUEUED_BYTES). */
  maxQueuedBytes: number;
  /** The same across connections (null: no shared limit). */
  sharedQueue: ByteBudget | null;
  /**
   * Socket reads into one buffer of our own (socket_reads.ts): true installs it on the (accepted, plain TCP) socket;
   * a ReadTarget is the one the socket was connected with (`onreadOption`); false keeps the socket's 'data' events.
   */
  readBuffer: boolean | ReadTarget;
}

/** One HTTP/2 connection over a socket: everything both ends do alike. */
export abstract class H2Connection<S extends H2Stream> {
  protected readonly streams = new IntMap<S>();
  protected readonly decoder: HpackDecoder;
  protected readonly encoder = new HpackEncoder();
  private readonly reader = new FrameReader();
  private readonly blocks: HeaderBlockAssembler;
  protected readonly w: FrameWriter;
  /** Per-stream receive window we advertise. */
  protected readonly initialWindow: number;
  private readonly connectionWindow: number;
  private readonly recvWindow: ReceiveWindow;
  private readonly cfg: H2ConnectionConfig;
  protected awaitingSettings: boolean;
  /** The last stream the peer opened (GOAWAY's last-stream-id; a client's stays 0). */
  protected lastStreamId = 0;

  // flow control and output
  protected peerInitialWindow = DEFAULT_WINDOW;
  protected peerMaxFrame = DEFAULT_FRAME_SIZE;
  protected peerMaxStreams = Infinity;
  private connSendWindow = DEFAULT_WINDOW;
  private readonly blocked = new Set<S>();
  private readonly drainWaiters = new Set<S>();
  /** Bytes in the streams' queues (waiting for flow-control window). */
  private queuedBytes = 0;
  /**
   * Bumped whenever output moves (DATA cut from a queue, the socket drained or shrank, the peer granted window):
   * stall detection.
   */
  private outputMoved = 0;
  private stallWatched = -1;
  private stallSince = 0;
  private stallSocketBytes = 0;
  /** Input arrived since the owner last looked (idle detection without a clock read per chunk). */
  inputSeen = false;
  /** `blocks.started` and when it was first seen unfinished (header block deadline). */
  private blockWatched = 0;
  private blockSince = 0;

  /** No new streams; the socket closes once the open ones finished (a server sent GOAWAY, a client got one). */
  protected goingAway = false;
  protected dead = false;
  private closedNotified = false;
  /** Why the connection failed (the first connection error, socket error or close). */
  protected lastError = "";

  constructor(protected readonly socket: Socket, cfg: H2ConnectionConfig) {
    this.cfg = cfg;
    this.initialWindow = cfg.initialWindow;
    this.connectionWindow = cfg.connectionWindow;
    this.awaitingSettings = cfg.settingsFirst;
    this.decoder = new HpackDecoder(4096, cfg.maxHeaderListSize);
    this.recvWindow = new ReceiveWindow(cfg.connectionWindow);
    this.blocks = new HeaderBlockAssembler(cfg.maxHeaderListSize);
    this.w = cfg.pauseWhenBlocked ? new FrameWriter(socket, () => socket.pause()) : new FrameWriter(socket);
    socket.setNoDelay?.(true);
    socket.on("data", (chunk: Buffer) => this.onSocketData(chunk));
    // (with a read buffer of our own, reads come through here instead of 'data'; without one, 'data' goes on)
    const ownReads = (chunk: Uint8Array) => this.onSocketData(chunk);
    if (cfg.readBuffer === true) readIntoOwnBuffer(socket, ownReads);
    else if (cfg.readBuffer) cfg.readBuffer.onChunk = ownReads;
    socket.on("error", (err: Error) => this.onSocketError(err));
    socket.on("close", () => this.onSocketGone());
    socket.on("drain", () => this.onSocketDrain());
  }

  /** Number of open streams. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Queues our SETTINGS (flat id, value pairs) and the connection window beyond the default. */
  protected sendSettings(settings: number[]): void {
    const s = this.w.frame(settings.length * 3, SETTINGS, 0, 0);
    for (let i = 0; i < settings.length; i += 2) {
      this.w.u16(s + i * 3, settings[i]);
      this.w.u32(s + i * 3 + 2, settings[i + 1]);
    }
    if (this.connectionWindow > DEFAULT_WINDOW) this.w.windowUpdate(0, this.connectionWindow - DEFAULT_WINDOW);
    this.w.schedule();
  }

  // ------------------------------------------------------------------------------------------------------------
  // what the subclasses decide

  /** Whether `sid` names a stream that was never opened (frames other than HEADERS on it are connection errors). */
  protected abstract isIdle(sid: number): boolean;

  /** A complete, decoded header block on `sid`. */
  protected abstract headersIn(sid: number, endStream: boolean, fields: string[]): void;

  /** A valid GOAWAY frame's payload. */
  protected abstract goawayIn(buf: Uint8Array, start: number, end: number): void;

  /** Our side of `s` is finished (its END_STREAM was queued). */
  protected abstract localDone(s: S): void;

  /** The peer's side of `s` is finished (END_STREAM received and reported). */
  protected abstract remoteDone(s: S): void;

  /** Called once the connection is gone (socket closed), after the streams were failed. */
  protected abstract notifyClosed(): void;

  /** `s` was forgotten (`why`: null when it completed). */
  protected streamGone(_s: S, _why: string | null): void {}

  /** The peer reset one of its open streams (after the stream's owner was told). */
  protected peerReset(): void {}

  /** DATA of `s` was framed (by the fast path or by a pump), before its end may finish it. */
  protected dataFramed(_s: S): void {}

  // ------------------------------------------------------------------------------------------------------------
  // input

  protected onSocketData(chunk: Uint8Array): void {
    if (this.dead) return;
    this.inputSeen = true;
    try {
      this.consume(chunk);
    } catch (err) {
      this.connectionError(ErrorCode.INTERNAL_ERROR, `internal error: ${err instanceof Error ? err.message : err}`);
    }
    if (this.w.len > 0) this.w.schedule();
  }

  /** Socket bytes in; a subclass may take something off the front (the server's preface) first. */
  protected consume(chunk: Uint8Array): void {
    const err = this.reader.feed(chunk, this.onFrame, this.isDeadNow);
    if (err) this.connectionError(ErrorCode.FRAME_SIZE_ERROR, err);
  }

  private readonly onFrame = (type: number, flags: number, sid: number, buf: Uint8Array, s: number, e: number) =>
    this.frameIn(type, flags, sid, buf, s, e);
  private readonly isDeadNow = (): boolean => this.dead;

  private frameIn(type: number, flags: number, sid: number, buf: Uint8Array, start: number, end: number): void {
    if (this.awaitingSettings) {
      if (type !== SETTINGS || (flags & FLAG_ACK) !== 0) {
        return this.connectionError(ErrorCode.PROTOCOL_ERROR, "first frame must be SETTINGS");
      }
      this.awaitingSettings = false;
    }
    if (this.blocks.pending !== 0 && type !== CONTINUATION) {
      return this.connectionError(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION");
    }
    switch (type) {
      case DATA:
        return this.dataIn(flags, sid, buf, start, end);
      case HEADERS:
        return this.blockIn(this.blocks.headers(flags, sid, buf, start, end));
      case PRIORITY:
        if (sid === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
        if (end - start !== 5) return this.streamErrorById(sid, ErrorCode.FRAME_SIZE_ERROR);
        return;
      case RST_STREAM:
        return this.rstIn(sid, buf, start, end);
      case SETTINGS:
        return this.settingsIn(flags, sid, buf, start, end);
      case PUSH_PROMISE:
        return this.connectionError(ErrorCode.PROTOCOL_ERROR, this.cfg.pushPromiseError);
      case PING:
        if (sid !== 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (end - start !== 8) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "PING length");
        if ((flags & FLAG_ACK) === 0) {
          const p = this.cfg.deferPingAck
            ? this.w.deferredFrame(8, PING, FLAG_ACK, 0)
            : this.w.frame(8, PING, FLAG_ACK, 0); // may replace w.out
          this.w.out.set(buf.subarray(start, end), p);
        }
        return;
      case GOAWAY:
        if (sid !== 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (end - start < 8) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY length");
        return this.goawayIn(buf, start, end);
      case WINDOW_UPDATE:
        return this.windowUpdateIn(sid, buf, start, end);
      case CONTINUATION:
        return this.blockIn(this.blocks.continuation(flags, sid, buf, start, end));
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
      if (this.isIdle(sid)) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      return; // a stream we already closed or reset: ignore
    }
    if (s.remoteClosed) return this.streamError(s, ErrorCode.STREAM_CLOSED);
    if (!s.gotHeaders) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
    s.recvWindow -= len;
    if (s.recvWindow < 0) return this.streamError(s, ErrorCode.FLOW_CONTROL_ERROR);
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (endStream) s.remoteClosed = true;
    if (e > p) this.emitData(s, new Uint8Array(buf.buffer, buf.byteOffset + p, e - p));
    if (s.gone) return;
    if (endStream) {
      this.emitEnd(s);
      this.remoteDone(s);
    } else {
      s.recvUnacked += s.paced ? len - (e - p) : len; // a paced stream's data goes back as it is read; padding now
      if (s.recvUnacked >= this.initialWindow >> 1) {
        this.w.windowUpdate(sid, s.recvUnacked);
        s.recvWindow += s.recvUnacked;
        s.recvUnacked = 0;
      }
    }
  }

  private blockIn(r: HeaderBlock | null | H2Error): void {
    if (r instanceof H2Error) return this.connectionError(r.code, r.message);
    if (!r) return;
    let fields: string[];
    try {
      // decoded even for streams we forgot: the HPACK table must stay in sync
      fields = this.decoder.decode(r.block);
    } catch (err) {
      if (err instanceof HpackError) {
        return this.connectionError(ErrorCode.COMPRESSION_ERROR, `header decoding failed: ${err.message}`);
      }
      throw err;
    }
    this.headersIn(r.sid, r.endStream, fields);
  }

  private rstIn(sid: number, buf: Uint8Array, start: number, end: number): void {
    if (sid === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (end - start !== 4) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length");
    const s = this.streams.get(sid);
    if (!s) {
      if (this.isIdle(sid)) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
      return;
    }
    const answered = s.discarding;
    this.forget(s, "stream reset by the peer");
    this.emitReset(s, readU32(buf, start));
    if (!answered) this.peerReset();
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
    if (windowDelta > 0) {
      // RFC 9113 6.9.2: a change that takes any stream's send window beyond 2^31-1 is a connection error
      for (const s of this.streams.values()) {
        if (s.sendWindow + windowDelta > MAX_WINDOW) {
          return this.connectionError(
            ErrorCode.FLOW_CONTROL_ERROR,
            `SETTINGS_INITIAL_WINDOW_SIZE change takes stream ${s.id}'s window beyond ${MAX_WINDOW}`,
          );
        }
      }
    }
    this.w.frame(0, SETTINGS, FLAG_ACK, 0);
    if (windowDelta !== 0) {
      for (const s of this.streams.values()) s.sendWindow += windowDelta;
      if (windowDelta > 0) this.resumeBlocked();
    }
  }

  private windowUpdateIn(sid: number, buf: Uint8Array, start: number, end: number): void {
    if (end - start !== 4) return this.connectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length");
    const inc = readU31(buf, start);
    if (sid === 0) {
      if (inc === 0) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
      this.connSendWindow += inc;
      this.outputMoved++;
      if (this.connSendWindow > MAX_WINDOW) {
        return this.connectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow");
      }
      this.resumeBlocked();
      return;
    }
    const s = this.streams.get(sid);
    if (!s) {
      if (this.isIdle(sid)) return this.connectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
      return; // a closed stream (or one the peer updates late): ignore
    }
    if (inc === 0) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
    s.sendWindow += inc;
    this.outputMoved++;
    if (s.sendWindow > MAX_WINDOW) return this.streamError(s, ErrorCode.FLOW_CONTROL_ERROR);
    if (s.queue.bytes > 0 || s.queueEnd) {
      this.pump(s);
      this.afterPump(s);
    }
  }

  /** @internal see H2Stream.consumed */
  windowConsumed(s: H2Stream, n: number): void {
    if (s.gone || s.remoteClosed) return;
    s.recvUnacked += n;
    if (s.recvUnacked < this.initialWindow >> 1) return;
    this.w.windowUpdate(s.id, s.recvUnacked);
    s.recvWindow += s.recvUnacked;
    s.recvUnacked = 0;
    this.w.schedule();
  }

  // Stream owner callbacks: a throwing handler resets its stream instead of breaking the connection.

  protected emitData(s: S, chunk: Uint8Array): void {
    const h = s.handler;
    if (!h || s.discarding) return;
    try {
      h.onData(chunk);
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
  }

  protected emitEnd(s: S): void {
    const h = s.handler;
    if (!h || s.discarding) return;
    try {
      h.onEnd();
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
  }

  /** Called once `s` was forgotten. */
  protected emitReset(s: S, code: number): void {
    const h = s.handler;
    if (!h || s.discarding) return;
    try {
      h.onReset(code);
    } catch { /* the stream is gone already */ }
  }

  private emitDrain(s: S): void {
    const h = s.handler;
    if (!h) return;
    try {
      h.onDrain();
    } catch {
      if (!s.gone) this.resetStream(s, ErrorCode.INTERNAL_ERROR);
    }
  }

  /**
   * Whether a header block has stayed unfinished (HEADERS without END_HEADERS, its CONTINUATION frames still
   * missing) for `timeoutMs`, as seen by calls at `now`: the owner calls this from a periodic sweep.
   */
  protected headerBlockExpired(now: number, timeoutMs: number): boolean {
    if (this.blocks.pending === 0) return false;
    if (this.blockWatched !== this.blocks.started) {
      this.blockWatched = this.blocks.started;
      this.blockSince = now;
      return false;
    }
    return now - this.blockSince >= timeoutMs;
  }

  // ------------------------------------------------------------------------------------------------------------
  // output

  /** @internal Sends `head` (optional) and `body` as DATA; false: wait for the stream's onDrain. */
  sendData(s: S, body: Uint8Array, head: Uint8Array | null, end: boolean): boolean {
    const hl = head ? head.length : 0;
    const total = hl + body.length;
    if (s.queue.bytes === 0 && !s.queueEnd) {
      const allowed = Math.min(s.sendWindow, this.connSendWindow);
      if (total <= allowed && total <= this.peerMaxFrame && !this.w.blocked) {
        // fast path: straight into the output buffer, in the stream's last DATA frame if that is still open
        const more = end ? -1 : this.w.extendData(s.id, total, this.peerMaxFrame);
        const p = more >= 0 ? more : this.w.frame(total, DATA, end ? FLAG_END_STREAM : 0, s.id);
        if (head) this.w.out.set(head, p);
        this.w.out.set(body, p + hl);
        doneWith(body);
        s.sendWindow -= total;
        this.connSendWindow -= total;
        this.dataFramed(s);
        if (end) this.localDone(s);
        this.w.schedule();
        return !this.w.blocked || this.wantDrain(s);
      }
    }
    if (
      this.queuedBytes + (this.w.blocked ? this.socket.writableLength : 0) >= this.cfg.maxQueuedBytes ||
      this.cfg.sharedQueue?.exhausted
    ) {
      this.resetStream(s, ErrorCode.ENHANCE_YOUR_CALM);
      queueMicrotask(() => this.emitReset(s, ErrorCode.ENHANCE_YOUR_CALM));
      return false;
    }
    // the head is small and its buffer may be the caller's to reuse: copied; the body is queued by reference unless
    // the caller may reuse it (a copy of a 2.9 MB range response into fresh memory cost 700 page faults)
    if (head && hl > 0) s.queue.push(new Uint8Array(head));
    if (this.cfg.copyQueuedData) {
      s.queue.push(new Uint8Array(body));
      doneWith(body);
    } else s.queue.push(body);
    this.queued(total);
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

  private wantDrain(s: S): false {
    s.needDrain = true;
    if (this.w.blocked) this.drainWaiters.add(s);
    return false;
  }

  private queued(delta: number): void {
    this.queuedBytes += delta;
    if (this.cfg.sharedQueue) this.cfg.sharedQueue.bytes += delta;
  }

  /**
   * Whether output has been waiting (queued for flow-control window, or in a socket the peer does not drain) without
   * any of it moving for `timeoutMs`, as seen by calls at `now` from the owner's periodic sweep.
   */
  protected outputStalled(now: number, timeoutMs: number): boolean {
    if (this.queuedBytes === 0 && !this.w.blocked) {
      this.stallWatched = -1;
      return false;
    }
    const inSocket = this.socket.writableLength;
    if (inSocket < this.stallSocketBytes) this.outputMoved++; // the peer is reading, if slowly
    this.stallSocketBytes = inSocket;
    if (this.stallWatched !== this.outputMoved) {
      this.stallWatched = this.outputMoved;
      this.stallSince = now;
      return false;
    }
    return now - this.stallSince >= timeoutMs;
  }

  /** Sends as much of a stream's queue as the windows allow; then its end (trailers or END_STREAM) once empty. */
  private pump(s: S): void {
    while (s.queue.bytes > 0) {
      const allowed = Math.min(s.sendWindow, this.connSendWindow, this.peerMaxFrame);
      if (allowed <= 0) break;
      const n = Math.min(s.queue.bytes, allowed);
      const last = n === s.queue.bytes && s.queueEnd && !s.queueTrailers;
      const p = this.w.frame(n, DATA, last ? FLAG_END_STREAM : 0, s.id);
      s.queue.copyTo(this.w.out, p, n);
      this.queued(-n);
      this.outputMoved++;
      s.sendWindow -= n;
      this.connSendWindow -= n;
      if (last) {
        s.queueEnd = false;
        this.dataFramed(s);
        this.localDone(s);
        return;
      }
    }
    this.dataFramed(s);
    if (s.queue.bytes === 0 && s.queueEnd) {
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

  private afterPump(s: S): void {
    if (s.queue.bytes === 0 && !s.queueEnd) {
      this.blocked.delete(s);
      if (s.needDrain && !s.gone) {
        if (!this.w.blocked) {
          s.needDrain = false;
          this.emitDrain(s);
        } else {
          // the window emptied the queue while the socket is backed up: the writer waits for the socket's 'drain'
          // (a stream that queued before the socket backed up was in no waiter list, and waited for good)
          this.drainWaiters.add(s);
        }
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

  /** @internal Aborts `s` with RST_STREAM (no handler callback). */
  resetStream(s: S, code: number): void {
    if (s.gone) return;
    this.w.rst(s.id, code);
    this.forget(s, "stream reset");
    this.w.schedule();
  }

  /** Drops a finished stream; closes the socket once a connection going away has none left. */
  protected forget(s: S, why: string | null): void {
    if (s.gone) return;
    s.gone = true;
    this.streams.delete(s.id);
    this.blocked.delete(s);
    this.drainWaiters.delete(s);
    this.queued(-s.queue.bytes);
    s.queue.clear();
    this.streamGone(s, why);
    if (this.goingAway && this.streams.size === 0 && !this.dead) {
      this.w.flush();
      this.closeSocket();
    }
  }

  protected streamError(s: S, code: number): void {
    this.w.rst(s.id, code);
    this.forget(s, "stream error");
    this.emitReset(s, code);
  }

  private streamErrorById(sid: number, code: number): void {
    const s = this.streams.get(sid);
    if (s) this.streamError(s, code);
    else this.w.rst(sid, code);
  }

  protected connectionError(code: number, message: string): void {
    if (this.dead) return;
    if (!this.lastError) this.lastError = message;
    this.sendGoaway(code, message);
    this.w.flush();
    this.dead = true;
    this.failStreams();
    this.closeSocket();
  }

  protected failStreams(): void {
    const list = [...this.streams.values()];
    const why = this.lastError || "connection lost";
    for (const s of list) {
      this.forget(s, why);
      this.emitReset(s, CONNECTION_LOST);
    }
  }

  protected sendGoaway(code: number, message: string): void {
    this.goingAway = true;
    this.w.goaway(this.lastStreamId, code, message);
  }

  protected closeSocket(): void {
    this.dead = true;
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 2000);
    (t as unknown as { unref?: () => void }).unref?.();
  }

  protected onSocketError(_err: Error): void {
    this.onSocketGone();
  }

  protected onSocketGone(): void {
    if (this.closedNotified) return;
    this.closedNotified = true;
    this.dead = true;
    this.failStreams();
    this.notifyClosed();
  }

  private onSocketDrain(): void {
    this.outputMoved++;
    if (!this.w.blocked) return;
    this.w.blocked = false;
    if (this.cfg.pauseWhenBlocked) this.socket.resume();
    const list = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const s of list) {
      if (s.gone || s.queue.bytes > 0 || s.queueEnd || !s.needDrain) continue;
      s.needDrain = false;
      this.emitDrain(s);
    }
  }

  /** A header block as HEADERS (+ CONTINUATION frames when it exceeds the peer's frame size). */
  protected headersOut(sid: number, fields: string[], end: boolean): void {
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
