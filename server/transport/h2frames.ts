/**
 * HTTP/2 framing shared by the server (http2.ts) and client (http2_client.ts) connections: protocol constants, a
 * frame reader that reassembles frames from socket chunks, and a frame writer that gathers every frame produced during
 * one event-loop turn into one buffer and hands it to the socket with a single write.
 */
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";

/** HTTP/2 error codes (RFC 9113 section 7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** The client connection preface. */
export const PREFACE: Uint8Array = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export const DATA = 0x0;
export const HEADERS = 0x1;
export const PRIORITY = 0x2;
export const RST_STREAM = 0x3;
export const SETTINGS = 0x4;
export const PUSH_PROMISE = 0x5;
export const PING = 0x6;
export const GOAWAY = 0x7;
export const WINDOW_UPDATE = 0x8;
export const CONTINUATION = 0x9;

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
export const SETTINGS_ENABLE_PUSH = 0x2;
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

export const MAX_WINDOW = 0x7fffffff;
export const DEFAULT_WINDOW = 65535;
export const DEFAULT_FRAME_SIZE = 16384;
/** We read frames of up to this size (the protocol default; we do not raise it). */
export const LOCAL_MAX_FRAME_SIZE = 16384;
/**
 * Largest header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 7541 does: name + value + 32 per
 * field), and so the largest header block: Go's net/http DefaultMaxHeaderBytes. grpc-go allows 16 MiB; gRPC metadata
 * is far below either, and a block is held whole until it ends.
 */
export const MAX_HEADER_LIST_SIZE = 1 << 20;
/** Stop reading from a peer that does not read our output once this much is buffered in the socket. */
export const SOCKET_HIGH_WATER = 8 << 20;
/** How long a deferred frame (a PING ACK) may wait for other output to go out with. */
const DEFERRED_FLUSH_MS = 5;

/**
 * Writers that held only deferred frames when they were scheduled, flushed together by one timer at most
 * DEFERRED_FLUSH_MS later (those that wrote meanwhile have nothing left). One timer for all writers, armed at most once
 * per DEFERRED_FLUSH_MS, not one per writer and request: gRPC clients ping with most requests, and each ACK's timer
 * (a Timeout object, in a table of active timers) outlived two scavenges and died in the old generation, a third of
 * the bytes the major collector freed under a paced put load on one member.
 */
const deferredWriters: FrameWriter[] = [];
let deferredSweep: ReturnType<typeof setTimeout> | undefined;

function sweepDeferred(): void {
  deferredSweep = undefined;
  const writers = deferredWriters.splice(0);
  for (const w of writers) w.flushDeferred();
}

const EMPTY = Buffer.alloc(0);

/**
 * Size of a large output batch, and the most bytes one batch gathers before it is written (unless one frame alone is
 * larger). Batches that outgrow BATCH_POOL_FROM take a buffer of this size from a pool shared by all connections
 * instead of fresh memory: glibc maps allocations from 128 KiB on by themselves (server/util/malloc.ts), and each
 * 4 KiB page of a fresh mapping costs a page fault (15-30 us on a shared VM) when first written. A range response of
 * 2.9 MB went out in batches of up to 4 MiB, each freshly allocated.
 */
export const BATCH_BYTES = 512 << 10;
/** Batches up to this size use their own, growing buffer (malloc's arena, whose pages stay mapped). */
const BATCH_POOL_FROM = 128 << 10;
/**
 * Batch buffers kept for reuse once the socket wrote them (16 MiB): a response is framed as fast as the peer's window
 * allows, so four range responses of 2.9 MB in flight at once (the scan row's 4 clients) hold 24 batches in pending
 * writes. With 8 kept, 90 faults a range of 10,000 keys against 4.
 */
const BATCH_POOL_KEEP = 32;
/** Pooled batch buffers (BATCH_BYTES each) that no batch and no pending socket write references. */
const batchPool: Buffer[] = [];

/** Big-endian u32 at `p`. */
export function readU32(buf: Uint8Array, p: number): number {
  return ((buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0;
}

/** Big-endian u31 at `p` (the reserved top bit cleared), as in stream ids and window increments. */
export function readU31(buf: Uint8Array, p: number): number {
  return ((buf[p] & 0x7f) << 24 | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]) >>> 0;
}

/** Called for each complete frame; the payload is buf[start, end), valid only during the call. */
export type FrameHandler = (
  type: number,
  flags: number,
  sid: number,
  buf: Uint8Array,
  start: number,
  end: number,
) => void;

/**
 * Reassembles frames from socket chunks. A chunk is only read during `feed`: the socket may read the next one into the
 * same buffer (socket_reads.ts), so a frame cut by the chunk's end is copied into a buffer of the reader's own, and only
 * its bytes (not the whole next chunk, as a concatenation would).
 */
export class FrameReader {
  /** A frame begun in an earlier chunk: its first `len` bytes (copied); null until a frame was first cut. */
  private partial: Buffer | null = null;
  private len = 0;
  /** Bytes the partial frame has in all: 9 until its header is complete, then 9 + its payload length. */
  private need = 9;

  constructor(private readonly maxFrameSize: number = LOCAL_MAX_FRAME_SIZE) {}

  /**
   * Feeds socket bytes and calls `onFrame` for every complete frame. `stop()` is asked after each frame (e.g. the
   * connection died). Returns an error message for an oversized frame (a connection error), else null.
   */
  feed(chunk: Uint8Array, onFrame: FrameHandler, stop: () => boolean): string | null {
    let pos = 0;
    const end = chunk.length;
    if (this.len > 0) {
      // complete the partial frame from the chunk's front
      const part = this.partial!;
      if (this.len < 9) {
        const k = Math.min(9 - this.len, end);
        part.set(chunk.subarray(0, k), this.len);
        this.len += k;
        pos = k;
        if (this.len < 9) return null;
        const len = (part[0] << 16) | (part[1] << 8) | part[2];
        if (len > this.maxFrameSize) return `frame of ${len} bytes exceeds ${this.maxFrameSize}`;
        this.need = 9 + len;
      }
      const k = Math.min(this.need - this.len, end - pos);
      part.set(chunk.subarray(pos, pos + k), this.len);
      this.len += k;
      pos += k;
      if (this.len < this.need) return null;
      this.len = 0;
      onFrame(part[3], part[4], readU31(part, 5), part, 9, this.need);
      if (stop()) return null;
    }
    while (end - pos >= 9) {
      const len = (chunk[pos] << 16) | (chunk[pos + 1] << 8) | chunk[pos + 2];
      if (len > this.maxFrameSize) return `frame of ${len} bytes exceeds ${this.maxFrameSize}`;
      if (end - pos - 9 < len) break;
      onFrame(chunk[pos + 3], chunk[pos + 4], readU31(chunk, pos + 5), chunk, pos + 9, pos + 9 + len);
      if (stop()) return null;
      pos += 9 + len;
    }
    if (pos < end) {
      // a private copy of the cut frame: the socket may reuse its buffer for the next read
      this.partial ??= Buffer.allocUnsafe(9 + this.maxFrameSize);
      this.len = end - pos;
      this.partial.set(chunk.subarray(pos, end));
      this.need = this.len >= 9 ? 9 + ((chunk[pos] << 16) | (chunk[pos + 1] << 8) | chunk[pos + 2]) : 9;
    }
    return null;
  }
}

/**
 * Gathers outgoing frames in one buffer and writes them with one socket write, flushed from setImmediate (so all
 * frames of one event-loop turn coalesce). `out` is the current buffer: write a frame's payload at the offset
 * `frame()` returned.
 */
export class FrameWriter {
  out: Buffer = EMPTY;
  len = 0;
  /** The socket holds more than SOCKET_HIGH_WATER unwritten bytes (reset by the owner on 'drain'). */
  blocked = false;
  /** A previous output buffer the socket is done with, reused for the next batch. */
  private spare: Buffer | null = null;
  private scheduled = false;
  /** `out[0, deferredLen)` holds only frames that may wait for the next write (see deferredFrame) */
  private deferredLen = 0;
  /** where the header of the last frame in `out` starts (-1: none, or raw bytes came after it) */
  private lastFrame = -1;
  /** this writer is in `deferredWriters` */
  private deferredQueued = false;

  /** Callbacks waiting for the batch being gathered to be written. */
  private waiting: ((err: Error | null) => void)[] = [];
  /** Callback lists of batches handed to the socket and not yet reported written. */
  private readonly inFlight = new Set<((err: Error | null) => void)[]>();

  /** @param onBlocked called when a flush leaves the socket backed up (e.g. to pause reading) */
  constructor(
    private readonly socket: Socket,
    private readonly onBlocked: () => void = () => {},
  ) {}

  /** Makes room for `n` more bytes in `out` and returns where they go. */
  private reserve(n: number): number {
    const need = this.len + n;
    if (need > this.out.length) {
      let nb: Buffer;
      const size = Math.max(need, this.out.length * 2, 16384);
      if (this.len === 0 && this.spare && this.spare.length >= need) {
        nb = this.spare;
        this.spare = null;
      } else if (size > BATCH_POOL_FROM && need <= BATCH_BYTES) {
        nb = batchPool.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
      } else nb = Buffer.allocUnsafe(size);
      if (this.len > 0) nb.set(this.out.subarray(0, this.len));
      this.out = nb;
    }
    const p = this.len;
    this.len = need;
    return p;
  }

  /** Appends raw bytes (the client connection preface). */
  raw(bytes: Uint8Array): void {
    const p = this.reserve(bytes.length); // may replace `out`
    this.out.set(bytes, p);
    this.lastFrame = -1;
  }

  /** Appends a frame header for a payload of `len` bytes and returns where the payload goes in `out`. */
  frame(len: number, type: number, flags: number, sid: number): number {
    // a full batch goes out before this frame (a large response: batches of pooled buffers, not one that grows)
    if (this.len > 0 && this.len + 9 + len > BATCH_BYTES) this.flush();
    let p = this.reserve(9 + len);
    this.lastFrame = p;
    const o = this.out;
    o[p++] = len >>> 16;
    o[p++] = (len >>> 8) & 0xff;
    o[p++] = len & 0xff;
    o[p++] = type;
    o[p++] = flags;
    o[p++] = (sid >>> 24) & 0x7f;
    o[p++] = (sid >>> 16) & 0xff;
    o[p++] = (sid >>> 8) & 0xff;
    o[p++] = sid & 0xff;
    return p;
  }

  /**
   * Like `frame()`, for a frame that may wait for the next write instead of costing a write of its own (a PING ACK
   * rides with the response the client is waiting for). It goes out at the latest after DEFERRED_FLUSH_MS.
   */
  deferredFrame(len: number, type: number, flags: number, sid: number): number {
    const allDeferred = this.deferredLen === this.len;
    const p = this.frame(len, type, flags, sid);
    if (allDeferred) this.deferredLen = this.len;
    return p;
  }

  /**
   * Makes room for `n` more payload bytes at the end of the last frame when it is a DATA frame of stream `sid`
   * without flags whose payload stays within `maxFrame`, and returns where they go; -1 otherwise. Messages of one
   * stream gathered in one turn (a watch stream's events, say) then share DATA frames instead of one each: fewer
   * frames for the peer to parse, as a Go gRPC server writes them.
   */
  extendData(sid: number, n: number, maxFrame: number): number {
    const h = this.lastFrame;
    if (h < 0) return -1;
    const o = this.out;
    const cur = (o[h] << 16) | (o[h + 1] << 8) | o[h + 2];
    if (o[h + 3] !== DATA || o[h + 4] !== 0 || h + 9 + cur !== this.len || cur + n > maxFrame) return -1;
    if (this.len + n > BATCH_BYTES) return -1; // a new frame, in the next batch
    if ((((o[h + 5] & 0x7f) << 24) | (o[h + 6] << 16) | (o[h + 7] << 8) | o[h + 8]) !== sid) return -1;
    const p = this.reserve(n); // may replace `out`; offsets stay
    const len = cur + n;
    const b = this.out;
    b[h] = len >>> 16;
    b[h + 1] = (len >>> 8) & 0xff;
    b[h + 2] = len & 0xff;
    return p;
  }

  u16(p: number, v: number): void {
    this.out[p] = v >>> 8;
    this.out[p + 1] = v & 0xff;
  }

  u32(p: number, v: number): void {
    const o = this.out;
    o[p] = v >>> 24;
    o[p + 1] = (v >>> 16) & 0xff;
    o[p + 2] = (v >>> 8) & 0xff;
    o[p + 3] = v & 0xff;
  }

  /** RST_STREAM. */
  rst(sid: number, code: number): void {
    this.u32(this.frame(4, RST_STREAM, 0, sid), code);
  }

  /** WINDOW_UPDATE. */
  windowUpdate(sid: number, inc: number): void {
    this.u32(this.frame(4, WINDOW_UPDATE, 0, sid), inc);
  }

  /** GOAWAY with a debug message. */
  goaway(lastStreamId: number, code: number, message: string): void {
    const debug = Buffer.from(message.slice(0, 256), "utf8");
    const p = this.frame(8 + debug.length, GOAWAY, 0, 0);
    this.u32(p, lastStreamId);
    this.u32(p + 4, code);
    this.out.set(debug, p + 8);
  }

  /** Calls `cb` once the frames gathered so far were written to the socket (or failed to be). */
  whenWritten(cb: (err: Error | null) => void): void {
    this.waiting.push(cb);
  }

  /** Fails every write callback not yet called (the socket closed). */
  failPending(err: Error): void {
    const lists = [this.waiting, ...this.inFlight];
    this.waiting = [];
    this.inFlight.clear();
    for (const l of lists) for (const cb of l) cb(err);
  }

  /** Flushes from setImmediate (once per turn), or within DEFERRED_FLUSH_MS when only deferred frames wait. */
  schedule(): void {
    if (this.scheduled || this.len === 0) return;
    if (this.len === this.deferredLen) {
      if (this.deferredQueued) return;
      this.deferredQueued = true;
      deferredWriters.push(this);
      deferredSweep ??= setTimeout(sweepDeferred, DEFERRED_FLUSH_MS);
      return;
    }
    this.scheduled = true;
    setImmediate(this.flushNow);
  }

  private readonly flushNow = (): void => {
    this.scheduled = false;
    this.flush();
  };

  /** The deferred frames' wait is over: writes whatever is gathered (nothing, when a write took them meanwhile). */
  flushDeferred(): void {
    this.deferredQueued = false;
    if (this.len > 0 && !this.scheduled) this.flush();
  }

  /** Writes everything gathered so far with one socket write. Returns false when nothing was written. */
  flush(): boolean {
    this.deferredLen = 0;
    if (this.len === 0) return false;
    const full = this.out;
    const chunk = full.subarray(0, this.len);
    this.len = 0;
    this.lastFrame = -1;
    // the socket keeps `chunk` until it is written: the next batch goes to the spare buffer or a new one
    this.out = EMPTY;
    const cbs = this.waiting.length > 0 ? this.waiting : null;
    if (cbs) this.waiting = [];
    if (this.socket.destroyed || this.socket.writableEnded) {
      if (full.length === BATCH_BYTES && batchPool.length < BATCH_POOL_KEEP) batchPool.push(full);
      if (cbs) { for (const cb of cbs) cb(new Error("socket closed")); }
      return false;
    }
    if (cbs) this.inFlight.add(cbs);
    this.socket.write(chunk, (err?: Error | null) => {
      // the socket is done with `full` only now: before, a reused buffer would change bytes not yet sent
      if (full.length === BATCH_BYTES) {
        if (batchPool.length < BATCH_POOL_KEEP) batchPool.push(full);
      } else if (this.spare === null && full.length <= BATCH_POOL_FROM) this.spare = full;
      if (cbs && this.inFlight.delete(cbs)) { for (const cb of cbs) cb(err ?? null); }
    });
    if (!this.blocked && this.socket.writableLength > SOCKET_HIGH_WATER) {
      this.blocked = true;
      this.onBlocked();
    }
    return true;
  }
}

/** Bytes lent to the transport by their owner (see lendUntilSent), and the owner's release. */
const lentBytes = new WeakMap<Uint8Array, () => void>();

/**
 * Lends `bytes` (a message body about to be written) to the transport: `release` is called once the transport no
 * longer reads them (they were copied into frames, or the stream they waited on was dropped), after which the owner
 * may reuse their memory. Bytes the transport refuses or drops otherwise are never released (the garbage collector
 * takes them).
 */
export function lendUntilSent(bytes: Uint8Array, release: () => void): void {
  lentBytes.set(bytes, release);
}

/** The transport is done with `bytes`: their owner's release, if they were lent. */
export function doneWith(bytes: Uint8Array): void {
  const release = lentBytes.get(bytes);
  if (release === undefined) return;
  lentBytes.delete(bytes);
  release();
}

/** A FIFO of byte chunks waiting for flow-control window; frames are cut from it across chunk boundaries. */
export class ByteQueue {
  private items: Uint8Array[] = [];
  private head = 0;
  private offset = 0;
  /** Bytes queued. */
  bytes = 0;

  /** Appends a chunk (kept by reference: pass a private copy). */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.items.push(chunk);
    this.bytes += chunk.length;
  }

  /** Moves the first `n` (<= bytes) queued bytes to dst[pos...]. */
  copyTo(dst: Uint8Array, pos: number, n: number): void {
    this.bytes -= n;
    while (n > 0) {
      const c = this.items[this.head];
      const avail = c.length - this.offset;
      const k = avail < n ? avail : n;
      dst.set(k === c.length ? c : c.subarray(this.offset, this.offset + k), pos);
      pos += k;
      n -= k;
      if (k === avail) {
        this.head++;
        this.offset = 0;
        doneWith(c);
      } else this.offset += k;
    }
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      // drop consumed entries without an O(n) shift per chunk
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /** Drops everything. */
  clear(): void {
    for (let i = this.head; i < this.items.length; i++) doneWith(this.items[i]);
    this.items = [];
    this.head = 0;
    this.offset = 0;
    this.bytes = 0;
  }
}

/** A connection error found while reading a frame: the code to send in GOAWAY and why. */
export class H2Error {
  constructor(readonly code: number, readonly message: string) {}
}

/** Payload of a DATA or HEADERS frame with padding (and, for HEADERS, the priority block) removed. */
export function framePayload(
  what: "DATA" | "HEADERS",
  flags: number,
  buf: Uint8Array,
  start: number,
  end: number,
): [number, number] | H2Error {
  let p = start;
  let e = end;
  if (flags & FLAG_PADDED) {
    if (e - p < 1) return new H2Error(ErrorCode.PROTOCOL_ERROR, `${what} padding`);
    const pad = buf[p++];
    if (pad > e - p) return new H2Error(ErrorCode.PROTOCOL_ERROR, `${what} padding exceeds payload`);
    e -= pad;
  }
  if (what === "HEADERS" && flags & FLAG_PRIORITY) {
    if (e - p < 5) return new H2Error(ErrorCode.FRAME_SIZE_ERROR, "HEADERS priority");
    p += 5;
  }
  return [p, e];
}

/** A complete header block and the stream it belongs to. */
export interface HeaderBlock {
  sid: number;
  endStream: boolean;
  block: Uint8Array;
}

/**
 * CONTINUATION frames accepted per header block: a flood of empty ones (2 M frames) once raised RSS by 800 MB. A
 * block of the largest header list we accept needs 64 full frames of the default size; 128 leaves room for peers that
 * cut blocks smaller.
 */
export const MAX_CONTINUATION_FRAMES = 128;

/** Joins a HEADERS frame and its CONTINUATION frames into one header block. */
export class HeaderBlockAssembler {
  /** Stream whose header block is still open (0 when none): only its CONTINUATION may come next. */
  pending = 0;
  /** Header blocks begun with a HEADERS frame lacking END_HEADERS (tells a block's deadline from the next one's). */
  started = 0;
  #endStream = false;
  #chunks: Uint8Array[] = [];
  #len = 0;

  /** `maxBytes`: the largest header block accepted (its decoded list cannot be smaller than the block). */
  constructor(private readonly maxBytes: number) {}

  /** A HEADERS frame: the block if it is complete, null if CONTINUATION frames follow. */
  headers(flags: number, sid: number, buf: Uint8Array, start: number, end: number): HeaderBlock | null | H2Error {
    if (sid === 0) return new H2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    const range = framePayload("HEADERS", flags, buf, start, end);
    if (range instanceof H2Error) return range;
    const [p, e] = range;
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (flags & FLAG_END_HEADERS) return { sid, endStream, block: buf.subarray(p, e) };
    this.pending = sid;
    this.started++;
    this.#endStream = endStream;
    this.#chunks = [Buffer.from(buf.subarray(p, e))];
    this.#len = e - p;
    return null;
  }

  /** A CONTINUATION frame: the block once END_HEADERS arrives, else null. */
  continuation(flags: number, sid: number, buf: Uint8Array, start: number, end: number): HeaderBlock | null | H2Error {
    if (this.pending === 0 || sid !== this.pending) {
      return new H2Error(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION");
    }
    if (this.#chunks.length > MAX_CONTINUATION_FRAMES) {
      return new H2Error(ErrorCode.ENHANCE_YOUR_CALM, `more than ${MAX_CONTINUATION_FRAMES} CONTINUATION frames`);
    }
    this.#len += end - start;
    if (this.#len > this.maxBytes) return new H2Error(ErrorCode.ENHANCE_YOUR_CALM, "header block too large");
    this.#chunks.push(Buffer.from(buf.subarray(start, end)));
    if (!(flags & FLAG_END_HEADERS)) return null;
    const block = Buffer.concat(this.#chunks, this.#len);
    this.pending = 0;
    this.#chunks = [];
    this.#len = 0;
    return { sid, endStream: this.#endStream, block };
  }
}

/** The (id, value) pairs of a SETTINGS frame, in order, with the values RFC 9113 forbids rejected. */
export function parseSettings(buf: Uint8Array, start: number, end: number): Array<[number, number]> | H2Error {
  if ((end - start) % 6 !== 0) return new H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length");
  const out: Array<[number, number]> = [];
  for (let p = start; p < end; p += 6) {
    const id = (buf[p] << 8) | buf[p + 1];
    const v = readU32(buf, p + 2);
    if (id === SETTINGS_ENABLE_PUSH && v > 1) {
      return new H2Error(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1");
    }
    if (id === SETTINGS_INITIAL_WINDOW_SIZE && v > MAX_WINDOW) {
      return new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large");
    }
    if (id === SETTINGS_MAX_FRAME_SIZE && (v < DEFAULT_FRAME_SIZE || v > 0xffffff)) {
      return new H2Error(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
    }
    out.push([id, v]);
  }
  return out;
}

/** The connection-level receive window: consumes DATA lengths and says when to send a WINDOW_UPDATE. */
export class ReceiveWindow {
  #window: number;
  #unacked = 0;

  /** `size`: the window we advertise; an update is sent once a quarter of it was consumed. */
  constructor(private readonly size: number) {
    this.#window = size;
  }

  /** Accounts for `len` received bytes; returns the increment to advertise now (0: none), or an error. */
  consume(len: number): number | H2Error {
    this.#window -= len;
    if (this.#window < 0) return new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "connection receive window exceeded");
    this.#unacked += len;
    if (this.#unacked < this.size >> 2) return 0;
    const inc = this.#unacked;
    this.#window += inc;
    this.#unacked = 0;
    return inc;
  }
}
