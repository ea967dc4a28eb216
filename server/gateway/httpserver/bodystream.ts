/**
 * Request bodies as streams (`clientMaxBodySize: -1`): the HTTP/1.1 body of a client connection (Content-Length or
 * chunked) read as the pipeline asks for it, the body of a `Deno.serve` request (HTTP/2 or HTTP/1.1 over TLS) and
 * that of an HTTP/2 stream of the node:tls listener (paced by its flow-control window).
 * Nothing is held beyond one read: memory stays flat whatever the body's size.
 */
import type { BodyStream } from "../context.ts";
import { BodyKind, ChunkedDecoder, concat, HttpParseError } from "../http1.ts";
import type { Http2Stream } from "../../transport/http2.ts";

/** One read from the client socket takes at most this much (the relay buffer of a Content-Length body). */
const STREAM_CHUNK = 64 * 1024;
/**
 * After the response, an unread rest of a streamed body up to this size is read and dropped so the connection can
 * serve the next request (Go's server does the same with 256 KiB); a longer rest closes the connection.
 */
export const MAX_DRAIN_BYTES = 256 * 1024;

/** The part of a client connection a body stream reads through (server.ts's ClientConn). */
export interface StreamConn {
  conn: Deno.Conn;
  buf: Uint8Array;
  start: number;
  end: number;
  /** the sweep closes the connection after this time while `reading` */
  deadline: number;
  reading: boolean;
}

/**
 * Makes room for `need` more bytes (default: one) at the end of a connection buffer: its unread bytes move to the front,
 * or it doubles, until they fit.
 */
export function makeRoom(c: { buf: Uint8Array; start: number; end: number }, need = 1): void {
  while (c.buf.length - c.end < need) {
    if (c.start > 0) {
      c.buf.copyWithin(0, c.start, c.end);
      c.end -= c.start;
      c.start = 0;
    } else {
      const nb = new Uint8Array(c.buf.length * 2);
      nb.set(c.buf.subarray(0, c.end));
      c.buf = nb;
    }
  }
}

/** A Content-Length or chunked HTTP/1.1 request body, read from the connection on demand. */
export class Http1BodyStream implements BodyStream {
  readonly length: number;
  consumed = 0;
  /** the whole body was read */
  done = false;
  #c: StreamConn;
  #idleMs: number;
  #chunk: Uint8Array | null = null;
  #decoder: ChunkedDecoder | null;

  /** `idleMs`: the longest wait for the client's next bytes (keepAliveTimeout). */
  constructor(c: StreamConn, kind: BodyKind, length: number, idleMs: number) {
    this.#c = c;
    this.#idleMs = idleMs;
    this.length = kind === BodyKind.Length ? length : -1;
    this.#decoder = kind === BodyKind.Chunked ? new ChunkedDecoder() : null;
    if (this.length === 0) this.done = true;
  }

  read(): Promise<Uint8Array | null> {
    if (this.done) return Promise.resolve(null);
    return this.#decoder === null ? this.#readLength() : this.#readChunked(this.#decoder);
  }

  async #readLength(): Promise<Uint8Array | null> {
    const c = this.#c;
    const left = this.length - this.consumed;
    let out: Uint8Array;
    if (c.start < c.end) {
      // bytes that came with the head (or after it) first
      const take = Math.min(left, c.end - c.start);
      out = c.buf.subarray(c.start, c.start + take);
      c.start += take;
    } else {
      const chunk = this.#chunk ??= new Uint8Array(STREAM_CHUNK);
      const n = await this.#wait(c.conn.read(chunk.subarray(0, Math.min(left, chunk.length))));
      out = chunk.subarray(0, n);
    }
    this.consumed += out.length;
    if (this.consumed === this.length) this.done = true;
    return out;
  }

  async #readChunked(dec: ChunkedDecoder): Promise<Uint8Array | null> {
    const c = this.#c;
    while (true) {
      try {
        c.start = dec.decode(c.buf, c.start, c.end, -1);
      } catch (err) {
        throw err instanceof HttpParseError ? err : new HttpParseError(400, String(err));
      }
      if (dec.size > 0) {
        const out = concat(dec.parts, dec.size);
        dec.parts = [];
        dec.size = 0;
        this.consumed += out.length;
        return out;
      }
      if (dec.done) {
        this.done = true;
        return null;
      }
      // only a partial size line can be left (the decoder takes every data byte)
      if (c.start === c.end) c.start = c.end = 0;
      else makeRoom(c);
      c.end += await this.#wait(c.conn.read(c.buf.subarray(c.end)));
    }
  }

  /** A read from the client under the idle deadline; the client closing mid-body is an error. */
  async #wait(read: Promise<number | null>): Promise<number> {
    const c = this.#c;
    c.deadline = Date.now() + this.#idleMs;
    c.reading = true;
    let n: number | null;
    try {
      n = await read;
    } finally {
      c.reading = false;
    }
    if (n === null) throw new Error("unexpected EOF in the request body");
    return n;
  }

  /** Reads and drops what the pipeline left unread, up to MAX_DRAIN_BYTES; false when the body did not end there. */
  async drain(): Promise<boolean> {
    const stop = this.consumed + MAX_DRAIN_BYTES;
    try {
      while (!this.done && this.consumed <= stop) await this.read();
    } catch {
      return false;
    }
    return this.done;
  }
}

/**
 * The body of a `Deno.serve` request as a BodyStream; a declared length the client does not keep to (fewer or more
 * bytes) is an error at the end.
 */
export function webBodyStream(body: ReadableStream<Uint8Array>, length: number): BodyStream {
  const reader = body.getReader();
  const s = {
    length,
    consumed: 0,
    async read(): Promise<Uint8Array | null> {
      const r = await reader.read();
      if (r.done) {
        if (length >= 0 && s.consumed !== length) throw new Error("request body shorter than its Content-Length");
        return null;
      }
      s.consumed += r.value.length;
      if (length >= 0 && s.consumed > length) throw new Error("request body longer than its Content-Length");
      return r.value;
    },
  };
  return s;
}

/**
 * The request body of an HTTP/2 stream (the node:tls listener's h2) read as the pipeline asks for it: DATA is kept
 * until read, and the stream's receive window goes back to the client only as it is read, so a client sends at most
 * one window (http2.ts's initial window, 1 MiB) ahead of the upstream. The bytes held count against the connection's
 * receive budget (MAX_BUFFERED_REQUEST_BYTES): beyond it, or after `idleMs` without DATA while the pipeline waits, the
 * read fails. A declared length the client does not keep to is an error at the end.
 */
export class H2BodyStream implements BodyStream {
  readonly length: number;
  consumed = 0;
  #s: Http2Stream;
  #idleMs: number;
  #parts: Uint8Array[] = [];
  #held = 0;
  #ended = false;
  #error: string | null = null;
  #wake: (() => void) | null = null;

  constructor(s: Http2Stream, length: number, idleMs: number) {
    this.#s = s;
    this.length = length;
    this.#idleMs = idleMs;
    s.paceReceive(true);
  }

  /** DATA from the client (a view valid during the call). */
  push(chunk: Uint8Array): void {
    if (this.#error !== null || this.#ended) return;
    if (!this.#s.reserveReceive(chunk.length)) {
      this.#s.consumed(chunk.length);
      return this.fail("the connection's request buffer is full");
    }
    this.#held += chunk.length;
    this.#parts.push(chunk.slice());
    this.#notify();
  }

  /** The client ended its side. */
  end(): void {
    this.#ended = true;
    this.#notify();
  }

  /** The stream was reset or broke. */
  fail(why: string): void {
    this.#error ??= why;
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  async read(): Promise<Uint8Array | null> {
    while (this.#parts.length === 0) {
      if (this.#error !== null) throw new Error(`request body: ${this.#error}`);
      if (this.#ended) {
        if (this.length >= 0 && this.consumed !== this.length) {
          throw new Error("request body shorter than its Content-Length");
        }
        return null;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
        timer = setTimeout(() => this.fail("no data from the client in time"), this.#idleMs);
      });
      clearTimeout(timer);
    }
    const b = this.#parts.shift()!;
    this.#held -= b.length;
    this.#s.reserveReceive(-b.length);
    this.#s.consumed(b.length);
    this.consumed += b.length;
    if (this.length >= 0 && this.consumed > this.length) throw new Error("request body longer than its Content-Length");
    return b;
  }

  /** The response is complete: what was not read is dropped and the window goes back (the rest is discarded). */
  stop(): void {
    if (this.#held > 0) {
      this.#s.reserveReceive(-this.#held);
      this.#s.consumed(this.#held);
    }
    this.#held = 0;
    this.#parts = [];
    this.#s.paceReceive(false);
    this.fail("the response was sent");
  }
}
