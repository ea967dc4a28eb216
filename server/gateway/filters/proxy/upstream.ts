/**
 * The upstream HTTP/1.1 client of the Proxy: keep-alive connections per origin over Deno.connect / connectTls, one
 * write per request (head and body together), a minimal response parser (http1.ts) and no fetch. A connection goes
 * back to its origin's idle stack after a complete response that did not ask to close; idle connections older than
 * IDLE_CONN_TIMEOUT_MS are dropped. A request that fails on a reused connection before any response byte arrived
 * (the upstream closed it while idle) is sent once more on a new connection, as Go's transport does. With no response
 * body limit (serverMaxBodySize -1) a body that did not come whole with the head is an `UpstreamBodyStream`: read as the
 * client takes it, the connection returning to the pool at its end.
 */
import { type BodyStream, isIp } from "../../context.ts";
import {
  BodyKind,
  ChunkedDecoder,
  concat,
  findHeadEnd,
  HeaderList,
  HttpParseError,
  MAX_HEAD_BYTES,
  parseResponseHead,
  type ResponseHead,
} from "../../http1.ts";
import { readRid, readSocket } from "../../sockread.ts";
import tls from "node:tls";
import { NodeTlsConn } from "../../httpserver/tls.ts";

/** An idle upstream connection older than this is closed instead of reused (Go transport IdleConnTimeout). */
export const IDLE_CONN_TIMEOUT_MS = 90_000;
/** Connecting to an upstream fails after this long (Go dialer timeout). */
export const DIAL_TIMEOUT_MS = 30_000;
/** A TLS handshake with an upstream fails after this long (Go transport TLSHandshakeTimeout). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
const READ_CHUNK = 16 * 1024;
/** One read of a streamed response body (Content-Length or until close) takes at most this much from the socket. */
const STREAM_CHUNK = 64 * 1024;
/** Head and body of a request up to this size go out in one write from the connection's own buffer. */
const WRITE_BUFFER = 16 * 1024;

/**
 * At most this many exchanges per origin wait for their response at once; further requests queue for a turn in
 * arrival order. Measured (256 client connections, the gateway's one core saturated): when every request's upstream
 * read is pending at once, Deno's runtime completes those reads out of order and some wait 0.2–1.5 s while others
 * overtake them (p99 190–380 ms, p99.9 420–550 ms, request counts per client connection 1.5–1.8x apart at p90/p10);
 * with 32 in flight and the rest queued in order: p99 85–140 ms, p99.9 100–170 ms, every connection the same share.
 * 96 in flight did not help. (Measured with scripts/bench/fairness.go against a member.)
 */
export const EXCHANGE_GATE_LIMIT = 32;
/**
 * A request that waited this long for a turn means the origin itself is slow (the exchanges in flight hold their turns
 * for long), not our core: the gate opens for everyone queued, so a slow upstream is not held to 32 at a time. It
 * narrows again by one per finished exchange while nobody queues and fewer than half of the turns are used. (50 ms
 * opened it under ordinary scheduling stalls of a loaded machine and lost the gain.)
 */
export const EXCHANGE_GATE_MAX_WAIT_MS = 200;

/** FIFO admission of exchanges to one origin (see EXCHANGE_GATE_LIMIT). */
export class ExchangeGate {
  inflight = 0;
  limit = EXCHANGE_GATE_LIMIT;
  #queue: { wake: () => void; since: number }[] = [];
  #head = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Resolves when the caller may start its exchange; undefined when it may start at once. */
  enter(): Promise<void> | undefined {
    if (this.inflight < this.limit && this.#head === this.#queue.length) {
      this.inflight++;
      return undefined;
    }
    const p = new Promise<void>((wake) => this.#queue.push({ wake, since: performance.now() }));
    this.#timer ??= setTimeout(() => this.#expire(), EXCHANGE_GATE_MAX_WAIT_MS);
    return p;
  }

  /** Ends an exchange: the next in line starts. */
  leave(): void {
    this.inflight--;
    if (this.#head === this.#queue.length) {
      if (this.limit > EXCHANGE_GATE_LIMIT && this.inflight < this.limit / 2) this.limit--;
      return;
    }
    this.#admit();
  }

  #admit(): void {
    while (this.#head < this.#queue.length && this.inflight < this.limit) {
      this.inflight++;
      this.#queue[this.#head++].wake();
    }
    if (this.#head === this.#queue.length) {
      this.#queue.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  #expire(): void {
    this.#timer = undefined;
    if (this.#head === this.#queue.length) return;
    const waited = performance.now() - this.#queue[this.#head].since;
    if (waited >= EXCHANGE_GATE_MAX_WAIT_MS) {
      this.limit = this.inflight + this.#queue.length - this.#head;
      this.#admit();
    } else this.#timer = setTimeout(() => this.#expire(), EXCHANGE_GATE_MAX_WAIT_MS - waited);
  }

  /** Stops the timer (the origin closed); queued callers start. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.limit = Infinity;
    this.#admit();
  }
}

/**
 * A request head written piece by piece into the connection's buffer (no head string is built and encoded). It reads
 * the request when written. A `shared` head's request may change while its exchange waits (a mirror's request is the
 * main flow's, which goes on): it is held before the exchange gives up control with the head unsent (a wait at the
 * gate, a dial), its bytes kept as they are then, and a retry sends the bytes sent the first time. Any other request
 * waits for its exchange unchanged.
 */
export abstract class OutgoingHead {
  abstract readonly length: number;
  #bytes: Uint8Array | null = null;

  constructor(readonly shared: boolean) {}

  /** Writes the head's `length` bytes at the start of dst. */
  protected abstract write(dst: Uint8Array): void;

  writeInto(dst: Uint8Array): void {
    if (this.#bytes !== null) dst.set(this.#bytes);
    else this.write(dst);
  }

  /** A shared head keeps its bytes from now on: written now, or those at the start of `sent` (where it went). */
  hold(sent?: Uint8Array): void {
    if (!this.shared || this.#bytes !== null) return;
    if (sent !== undefined) this.#bytes = sent.slice(0, this.length);
    else this.write(this.#bytes = new Uint8Array(this.length));
  }

  /** The head as bytes of its own. */
  bytes(): Uint8Array {
    if (this.#bytes !== null) return this.#bytes;
    const b = new Uint8Array(this.length);
    this.write(b);
    return b;
  }
}

/** A request head's bytes into dst (which has room). */
function headInto(head: string | OutgoingHead, dst: Uint8Array): void {
  if (typeof head === "string") encodeHeadInto(head, dst);
  else head.writeInto(dst);
}

/** A request head as bytes of its own. */
function headBytes(head: string | OutgoingHead): Uint8Array {
  if (typeof head === "string") return encodeHead(head);
  head.hold(); // a retry sends these bytes again
  return head.bytes();
}

/** Why a round trip failed. */
export const enum UpstreamFailure {
  Connect = "connect",
  Io = "io",
  Timeout = "timeout",
  TooLarge = "tooLarge",
  /** the head arrived, the body did not (the upstream closed or broke mid-response) */
  Body = "body",
  Protocol = "protocol",
}

export class UpstreamError extends Error {
  constructor(readonly failure: UpstreamFailure, message: string) {
    super(message);
  }
}

/** A response read from an upstream. */
export interface UpstreamResponse {
  status: number;
  headers: HeaderList;
  /** may be a view of the connection's buffer: valid until `release` is called */
  body: Uint8Array;
  /** the body as a stream instead of `body` (serverMaxBodySize -1): read it to its end, or `release` gives it up */
  stream: BodyStream | null;
  /**
   * returns the connection to the pool (or, for a stream, closes it unless the stream was read to its end); null when
   * it was already returned or closed
   */
  release: (() => void) | null;
}

class UpstreamConn {
  buf = new Uint8Array(READ_CHUNK);
  readonly wbuf = new Uint8Array(WRITE_BUFFER);
  /** the last request's view of wbuf, written through again by the next request of the same size (null: none) */
  wview: Uint8Array | null = null;
  lastUsed = 0;
  closed = false;
  /** closed because the client went away (the exchange fails with "client gone", nothing is retried) */
  aborted = false;
  /** see sockread.ts */
  readonly rid: number;
  /** returns the connection to its origin's pool after a response that borrowed its buffer (one closure per conn) */
  readonly release: () => void;
  constructor(readonly conn: Deno.Conn, release: (c: UpstreamConn) => void) {
    this.rid = readRid(conn);
    this.release = () => release(this);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.conn);
  }
  /** the client went away: the exchange is cancelled (the upstream sees its connection closed) */
  abort(): void {
    this.aborted = true;
    this.close();
  }
}

/** Closes a connection that may already be closed. */
export function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

/** TLS settings of an origin (Proxy `mtls`, or none: then the upstream certificate is not verified). */
export interface UpstreamTls {
  caCerts?: string[];
  cert?: string;
  key?: string;
  /**
   * skip verification of the upstream's certificate, chain and name (Easegress's default without mtls, or mtls
   * `insecureSkipVerify`): the connection goes through node:tls with rejectUnauthorized false, as Deno.connectTls
   * can only skip the name check
   */
  insecure: boolean;
}

/**
 * The idle connections of all the origins of one Proxy, capped together (Go transport MaxIdleConns; 0 = no cap): when
 * a connection put back makes one too many, the least recently used idle connection of any origin is closed. The
 * count is kept as connections go idle and leave; origins are scanned only when the cap is passed.
 */
export class IdleBudget {
  total = 0;
  readonly origins = new Set<Origin>();
  constructor(readonly max: number) {}

  /** Closes the idle connection used least recently across the origins. */
  evictOldest(): void {
    let oldest: Origin | undefined;
    let at = Infinity;
    for (const o of this.origins) {
      const t = o.oldestIdle();
      if (t < at) {
        at = t;
        oldest = o;
      }
    }
    oldest?.evictOldest();
  }
}

/** Dials TLS through node:tls without verifying the upstream's certificate (see UpstreamTls.insecure). */
function connectUnverified(hostname: string, port: number, t: UpstreamTls): Promise<Deno.Conn> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: hostname,
      port,
      servername: isIp(hostname) ? undefined : hostname,
      rejectUnauthorized: false,
      ca: t.caCerts,
      cert: t.cert,
      key: t.key,
      ALPNProtocols: ["http/1.1"],
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("TLS handshake timeout"));
    }, TLS_HANDSHAKE_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once("error", fail);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.off("error", fail);
      resolve(new NodeTlsConn(socket) as unknown as Deno.Conn);
    });
  });
}

/**
 * What an exchange learns of its client: `clientGone` (it went away before the answer), and the connection the exchange
 * waits on (set while it waits, no closure per request), aborted when the server notices the client gone.
 */
export interface ClientGoneHook {
  clientGone: boolean;
  upstream: { abort(): void } | null;
}

/**
 * Hands the connection an exchange is about to wait on to its client's hook, so that the client going away closes it
 * (the upstream sees the request cancelled; it is never pooled). A client already gone: the connection is dropped and
 * the exchange fails with "client gone".
 */
function waitOn(gone: ClientGoneHook, c: UpstreamConn): void {
  if (gone.clientGone) {
    c.close();
    throw new UpstreamError(UpstreamFailure.Io, "client gone");
  }
  gone.upstream = c;
}

/** Keep-alive connections to one origin. */
export class Origin {
  #idle: UpstreamConn[] = [];
  #closed = false;

  constructor(
    readonly hostname: string,
    readonly port: number,
    readonly tls: UpstreamTls | null,
    readonly maxIdle: number,
    readonly budget: IdleBudget | null = null,
  ) {
    budget?.origins.add(this);
  }

  async #dial(): Promise<UpstreamConn> {
    let conn: Deno.Conn;
    try {
      if (this.tls === null) {
        const c = await Deno.connect({ hostname: this.hostname, port: this.port });
        c.setNoDelay(true);
        conn = c;
      } else if (this.tls.insecure) {
        conn = await connectUnverified(this.hostname, this.port, this.tls);
      } else {
        conn = await Deno.connectTls({
          hostname: this.hostname,
          port: this.port,
          caCerts: this.tls.caCerts,
          cert: this.tls.cert,
          key: this.tls.key,
        });
      }
    } catch (err) {
      throw new UpstreamError(
        UpstreamFailure.Connect,
        `dial tcp ${this.hostname}:${this.port}: ${(err as Error).message}`,
      );
    }
    return new UpstreamConn(conn, this.#releaseConn);
  }

  #take(): UpstreamConn | undefined {
    const now = Date.now();
    while (this.#idle.length > 0) {
      const c = this.#idle.pop()!;
      if (this.budget !== null) this.budget.total--;
      if (now - c.lastUsed < IDLE_CONN_TIMEOUT_MS) return c;
      c.close();
    }
    return undefined;
  }

  readonly #releaseConn = (c: UpstreamConn) => this.#release(c);

  #release(c: UpstreamConn): void {
    if (this.#closed || this.#idle.length >= this.maxIdle) return c.close();
    c.lastUsed = Date.now();
    this.#idle.push(c);
    const b = this.budget;
    if (b !== null && ++b.total > b.max && b.max !== 0) b.evictOldest();
  }

  /** When the least recently used idle connection went idle (Infinity: none idle). */
  oldestIdle(): number {
    return this.#idle.length > 0 ? this.#idle[0].lastUsed : Infinity;
  }

  /** Closes the least recently used idle connection (the budget's cap was passed). */
  evictOldest(): void {
    const c = this.#idle.shift();
    if (c === undefined) return;
    if (this.budget !== null) this.budget.total--;
    c.close();
  }

  /**
   * Sends one request (its serialized head and body) and reads the response, whose body may not exceed maxBody
   * bytes (-1 = no limit). `timeoutMs` > 0 bounds the whole exchange, the wait for a turn at the gate included. A
   * `stream` is sent instead of `body`, as it is read (chunked when its length is unknown: the head says which), on a
   * new connection (it cannot be sent twice).
   */
  roundTrip(
    head: string | OutgoingHead,
    body: Uint8Array,
    method: string,
    maxBody: number,
    timeoutMs: number,
    stream: BodyStream | null = null,
    gone: ClientGoneHook | null = null,
  ): Promise<UpstreamResponse> {
    const turn = this.#gate.enter();
    if (turn === undefined) return this.#roundTrip(head, body, method, maxBody, timeoutMs, stream, gone);
    if (typeof head !== "string") head.hold();
    const queuedAt = performance.now();
    return turn.then(() => {
      let left = timeoutMs;
      if (timeoutMs > 0) {
        left = timeoutMs - (performance.now() - queuedAt);
        if (left <= 0) {
          this.#gate.leave();
          throw new UpstreamError(UpstreamFailure.Timeout, "context deadline exceeded");
        }
      }
      return this.#roundTrip(head, body, method, maxBody, left, stream, gone);
    });
  }

  readonly #gate = new ExchangeGate();

  /** One exchange that has its turn at the gate (left when it settles). */
  async #roundTrip(
    head: string | OutgoingHead,
    body: Uint8Array,
    method: string,
    maxBody: number,
    timeoutMs: number,
    stream: BodyStream | null,
    gone: ClientGoneHook | null,
  ): Promise<UpstreamResponse> {
    let c: UpstreamConn | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    let reused = false;
    try {
      c = stream === null ? this.#take() : undefined;
      reused = c !== undefined;
      if (c === undefined) {
        if (typeof head !== "string") head.hold();
        c = await this.#dial();
      }
      if (gone !== null) waitOn(gone, c);
      if (timeoutMs > 0) {
        const cc = c;
        timer = setTimeout(() => {
          timedOut = true;
          cc.close();
        }, timeoutMs);
      }
      if (stream !== null) await sendStream(c.conn, head, stream);
      return await this.#exchange(c, head, body, method, maxBody, stream !== null);
    } catch (err) {
      if (c === undefined) throw err; // the dial failed
      c.close();
      if (c.aborted) throw new UpstreamError(UpstreamFailure.Io, "client gone");
      if (timedOut) throw new UpstreamError(UpstreamFailure.Timeout, "context deadline exceeded");
      if (reused && err instanceof StaleConnection) {
        clearTimeout(timer);
        timer = undefined;
        if (typeof head !== "string") head.hold(c.wbuf); // written there, unless held before
        const fresh = await this.#dial();
        if (gone !== null) waitOn(gone, fresh);
        try {
          return await this.#exchange(fresh, head, body, method, maxBody);
        } catch (e) {
          fresh.close();
          throw e instanceof StaleConnection ? new UpstreamError(UpstreamFailure.Io, "EOF") : e;
        }
      }
      if (err instanceof StaleConnection) throw new UpstreamError(UpstreamFailure.Io, "EOF");
      if (err instanceof UpstreamError) throw err;
      if (err instanceof HttpParseError) throw new UpstreamError(UpstreamFailure.Protocol, err.message);
      throw new UpstreamError(UpstreamFailure.Io, (err as Error).message);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      if (gone !== null) gone.upstream = null;
      this.#gate.leave();
    }
  }

  async #exchange(
    c: UpstreamConn,
    head: string | OutgoingHead,
    body: Uint8Array,
    method: string,
    maxBody: number,
    sent = false,
  ): Promise<UpstreamResponse> {
    const conn = c.conn;
    const n = head.length + body.length;
    if (sent) { /* the request went out already (a stream) */ }
    else if (n <= WRITE_BUFFER) {
      headInto(head, c.wbuf);
      if (body.length > 0) c.wbuf.set(body, head.length);
      let out = c.wview;
      if (out === null || out.length !== n) c.wview = out = c.wbuf.subarray(0, n);
      const w = await conn.write(out);
      if (w < n) await writeRest(conn, out, w);
    } else {
      await writeAll(conn, headBytes(head));
      await writeAll(conn, body);
    }
    let buf = c.buf;
    let end = 0;
    let headEnd = -1;
    while (true) {
      if (end === buf.length) {
        if (buf.length >= MAX_HEAD_BYTES) throw new UpstreamError(UpstreamFailure.Protocol, "response head too large");
        const nb = new Uint8Array(buf.length * 2);
        nb.set(buf);
        c.buf = buf = nb;
      }
      const n = await readSocket(conn, c.rid, end === 0 ? buf : buf.subarray(end));
      if (n === 0) {
        if (end === 0) throw new StaleConnection();
        throw new UpstreamError(UpstreamFailure.Io, "unexpected EOF");
      }
      const from = end > 3 ? end - 3 : 0;
      end += n;
      headEnd = findHeadEnd(buf, from, end);
      if (headEnd >= 0) {
        // 1xx interim responses (100 Continue) are skipped
        if (buf[9] === 49 /* 1xx */ && !(buf[10] === 48 && buf[11] === 49) /* but not 101 */) {
          buf.copyWithin(0, headEnd, end);
          end -= headEnd;
          headEnd = findHeadEnd(buf, 0, end);
          if (headEnd < 0) continue;
        }
        break;
      }
    }
    const rh = parseResponseHead(buf, 0, headEnd, method);
    if (
      rh.bodyKind === BodyKind.Length && end - headEnd === rh.contentLength && !rh.close &&
      (maxBody < 0 || rh.contentLength <= maxBody)
    ) {
      // the whole body came with the head: it stays a view of the buffer until the response was sent
      return {
        status: rh.status,
        headers: rh.headers,
        body: buf.subarray(headEnd, end),
        stream: null,
        release: c.release,
      };
    }
    if (maxBody < 0 && rh.bodyKind !== BodyKind.None) return this.#streamBody(c, rh, headEnd, end);
    try {
      return await this.#readBody(c, rh, headEnd, end, maxBody);
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      throw new UpstreamError(UpstreamFailure.Body, `reading the response body: ${(err as Error).message}`);
    }
  }

  async #readBody(
    c: UpstreamConn,
    rh: ResponseHead,
    headEnd: number,
    end: number,
    maxBody: number,
  ): Promise<UpstreamResponse> {
    const conn = c.conn;
    let buf = c.buf;
    let respBody: Uint8Array;
    let reusable = !rh.close;
    switch (rh.bodyKind) {
      case BodyKind.None:
        respBody = new Uint8Array(0);
        if (end > headEnd) reusable = false;
        break;
      case BodyKind.Length: {
        const len = rh.contentLength;
        if (maxBody >= 0 && len > maxBody) throw new UpstreamError(UpstreamFailure.TooLarge, "response body too large");
        const have = end - headEnd;
        if (have >= len) {
          respBody = buf.subarray(headEnd, headEnd + len);
          if (have > len) reusable = false;
          else {
            // the body stays a view of the buffer: the connection returns to the pool once it was sent
            return {
              status: rh.status,
              headers: rh.headers,
              body: respBody,
              stream: null,
              release: c.release,
            };
          }
          respBody = respBody.slice();
        } else {
          respBody = new Uint8Array(len);
          respBody.set(buf.subarray(headEnd, end));
          let got = have;
          while (got < len) {
            const n = await conn.read(respBody.subarray(got));
            if (n === null) throw new UpstreamError(UpstreamFailure.Body, "unexpected EOF in the response body");
            got += n;
          }
        }
        break;
      }
      case BodyKind.Chunked: {
        const dec = new ChunkedDecoder();
        const limit = maxBody >= 0 ? maxBody : -1;
        let pos = headEnd;
        try {
          while (true) {
            pos = dec.decode(buf, pos, end, limit);
            if (dec.done) break;
            buf.copyWithin(0, pos, end);
            end -= pos;
            pos = 0;
            if (end === buf.length) {
              const nb = new Uint8Array(buf.length * 2);
              nb.set(buf);
              c.buf = buf = nb;
            }
            const n = await conn.read(buf.subarray(end));
            if (n === null) throw new UpstreamError(UpstreamFailure.Body, "unexpected EOF in the response body");
            end += n;
          }
        } catch (err) {
          if (err instanceof HttpParseError && err.status === 413) {
            throw new UpstreamError(UpstreamFailure.TooLarge, "response body too large");
          }
          throw err;
        }
        if (pos < end) reusable = false;
        respBody = dec.body();
        break;
      }
      default: {
        const parts: Uint8Array[] = [buf.slice(headEnd, end)];
        let size = end - headEnd;
        while (true) {
          const chunk = new Uint8Array(READ_CHUNK);
          const n = await conn.read(chunk);
          if (n === null) break;
          size += n;
          if (maxBody >= 0 && size > maxBody) {
            throw new UpstreamError(UpstreamFailure.TooLarge, "response body too large");
          }
          parts.push(chunk.subarray(0, n));
        }
        respBody = concat(parts, size);
        reusable = false;
      }
    }
    if (reusable) this.#release(c);
    else c.close();
    return { status: rh.status, headers: rh.headers, body: respBody, stream: null, release: null };
  }

  /** A response whose body is read as the client takes it; the connection goes back to the pool at its end. */
  #streamBody(c: UpstreamConn, rh: ResponseHead, headEnd: number, end: number): UpstreamResponse {
    const stream = new UpstreamBodyStream(c, rh, headEnd, end, (reusable) => {
      if (reusable) this.#release(c);
      else c.close();
    });
    return { status: rh.status, headers: rh.headers, body: EMPTY, stream, release: () => stream.close() };
  }

  /** Closes idle connections; busy ones close when their exchange ends. */
  close(): void {
    this.#closed = true;
    this.#gate.close();
    for (const c of this.#idle) c.close();
    if (this.budget !== null) {
      this.budget.total -= this.#idle.length;
      this.budget.origins.delete(this);
    }
    this.#idle.length = 0;
  }
}

const EMPTY = new Uint8Array(0);

/**
 * A response body (Content-Length, chunked, or until the upstream closes) read from its connection on demand: each
 * read returns what one socket read brought (valid until the next read), so memory stays flat whatever the size. The
 * upstream closing before the end, or bad chunking, is an error of the read. `settle` is called once: with true when
 * the body ended cleanly on a connection that can serve another request.
 */
export class UpstreamBodyStream implements BodyStream {
  readonly length: number;
  consumed = 0;
  #c: UpstreamConn;
  #kind: BodyKind;
  #pos: number;
  #end: number;
  #decoder: ChunkedDecoder | null;
  #chunk: Uint8Array | null = null;
  #reusable: boolean;
  #settle: ((reusable: boolean) => void) | null;

  constructor(c: UpstreamConn, rh: ResponseHead, headEnd: number, end: number, settle: (reusable: boolean) => void) {
    this.#c = c;
    this.#kind = rh.bodyKind;
    this.length = rh.bodyKind === BodyKind.Length ? rh.contentLength : -1;
    this.#pos = headEnd;
    this.#end = end;
    this.#decoder = rh.bodyKind === BodyKind.Chunked ? new ChunkedDecoder() : null;
    this.#reusable = !rh.close && rh.bodyKind !== BodyKind.Close;
    this.#settle = settle;
  }

  read(): Promise<Uint8Array | null> {
    if (this.#settle === null) return Promise.resolve(null);
    return this.#next().then((b) => {
      if (b === null) this.#finish(this.#reusable);
      else this.consumed += b.length;
      return b;
    }, (err) => {
      this.#finish(false);
      throw new UpstreamError(UpstreamFailure.Body, `reading the response body: ${(err as Error).message}`);
    });
  }

  /** Gives the body up: the connection is closed unless the body was read to its end. */
  close(): void {
    this.#finish(false);
  }

  #finish(reusable: boolean): void {
    const settle = this.#settle;
    this.#settle = null;
    settle?.(reusable);
  }

  #next(): Promise<Uint8Array | null> {
    if (this.#decoder !== null) return this.#nextChunked(this.#decoder);
    const left = this.#kind === BodyKind.Length ? this.length - this.consumed : STREAM_CHUNK;
    if (left === 0) return Promise.resolve(null);
    if (this.#pos < this.#end) {
      // what came with the head first
      const take = Math.min(left, this.#end - this.#pos);
      const out = this.#c.buf.subarray(this.#pos, this.#pos + take);
      this.#pos += take;
      if (take === left && this.#pos < this.#end) this.#reusable = false; // bytes after the body
      return Promise.resolve(out);
    }
    const chunk = this.#chunk ??= new Uint8Array(Math.min(STREAM_CHUNK, left));
    return this.#c.conn.read(chunk.subarray(0, Math.min(left, chunk.length))).then((n) => {
      if (n !== null) return chunk.subarray(0, n);
      if (this.#kind === BodyKind.Close) return null;
      throw new Error("unexpected EOF");
    });
  }

  async #nextChunked(dec: ChunkedDecoder): Promise<Uint8Array | null> {
    const c = this.#c;
    while (true) {
      if (dec.parts.length > 0) {
        // the decoder's parts are copies: handed out one by one
        const out = dec.parts.shift()!;
        dec.size -= out.length;
        return out;
      }
      this.#pos = dec.decode(c.buf, this.#pos, this.#end, -1);
      if (dec.parts.length > 0) continue;
      if (dec.done) {
        if (this.#pos < this.#end) this.#reusable = false;
        return null;
      }
      // only a partial size or trailer line is left: to the front of the buffer (which doubles when it is full)
      if (this.#pos > 0) {
        c.buf.copyWithin(0, this.#pos, this.#end);
        this.#end -= this.#pos;
        this.#pos = 0;
      } else if (this.#end === c.buf.length) {
        const nb = new Uint8Array(c.buf.length * 2);
        nb.set(c.buf);
        c.buf = nb;
      }
      const n = await c.conn.read(c.buf.subarray(this.#end));
      if (n === null) throw new Error("unexpected EOF");
      this.#end += n;
    }
  }
}

const CRLF = new Uint8Array([13, 10]);
const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");

/** Writes the head, then the stream's bytes as they are read: as they are, or chunked when the length is unknown. */
async function sendStream(conn: Deno.Conn, head: string | OutgoingHead, stream: BodyStream): Promise<void> {
  await writeAll(conn, headBytes(head));
  const chunked = stream.length < 0;
  while (true) {
    const b = await stream.read();
    if (b === null) break;
    if (b.length === 0) continue;
    if (chunked) await writeAll(conn, encodeHead(b.length.toString(16) + "\r\n"));
    await writeAll(conn, b);
    if (chunked) await writeAll(conn, CRLF);
  }
  if (chunked) await writeAll(conn, LAST_CHUNK);
}

/** The connection closed before the first response byte. */
class StaleConnection extends Error {}

/** Writes every byte (one write op in the common case, no extra async frame). */
export function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  return conn.write(data).then((n) => (n < data.length ? writeRest(conn, data, n) : undefined));
}

/** Writes data[off, end): the rest after a short write. */
export async function writeRest(conn: Deno.Conn, data: Uint8Array, off: number): Promise<void> {
  while (off < data.length) off += await conn.write(data.subarray(off));
}

const encoder = new TextEncoder();

/**
 * Writes an HTTP head into dst (which must hold head.length bytes): ASCII through encodeInto, other characters as the
 * latin1 bytes they were parsed from.
 */
export function encodeHeadInto(s: string, dst: Uint8Array): void {
  const r = encoder.encodeInto(s, dst);
  if (r.read === s.length && r.written === s.length) return;
  for (let i = 0; i < s.length; i++) dst[i] = s.charCodeAt(i) & 0xff;
}

/** An HTTP head as new bytes. */
export function encodeHead(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  encodeHeadInto(s, out);
  return out;
}
