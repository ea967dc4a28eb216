/**
 * Raw HTTP/2 for tests that play a hostile (or simply exact) peer: frames built by hand, sent over a plain TCP
 * socket, and the server's frames parsed back.
 *
 * - `rawExchange` sends a few byte strings and collects the whole answer until the server closes.
 * - `RawH2Conn` is a long-lived connection for floods: it writes with backpressure, parses the server's frames as
 *   they come (keeping counts, RST codes and the GOAWAY, not the DATA), and tells when the server closed.
 */
import { Buffer } from "node:buffer";
import net from "node:net";
import { HpackDecoder } from "../../server/transport/hpack.ts";

export const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One frame: 9-byte header and payload. */
export function frame(type: number, flags: number, sid: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.alloc(9 + payload.length);
  b.writeUIntBE(payload.length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(sid, 5);
  b.set(payload, 9);
  return b;
}

/** A SETTINGS frame with (id, value) pairs. */
export function settingsFrame(pairs: Array<[number, number]> = []): Buffer {
  const p = Buffer.alloc(6 * pairs.length);
  pairs.forEach(([id, v], i) => {
    p.writeUInt16BE(id, 6 * i);
    p.writeUInt32BE(v, 6 * i + 2);
  });
  return frame(4, 0, 0, p);
}

/** HPACK literal header field without indexing, new name (no Huffman; lengths < 127). */
export function literal(name: string, value: string): Buffer {
  return Buffer.concat([
    Buffer.from([0, name.length]),
    Buffer.from(name),
    Buffer.from([value.length]),
    Buffer.from(value),
  ]);
}

/** The header block of a gRPC request for `path` (literals only, so it depends on no HPACK state). */
export function grpcRequestBlock(path: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http
    literal(":path", path),
    literal(":authority", "localhost"),
    literal("content-type", "application/grpc"),
    literal("te", "trailers"),
  ]);
}

/** A gRPC message: the 5-byte prefix and the payload. */
export function grpcMessage(payload: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + payload.length);
  b.writeUInt32BE(payload.length, 1);
  b.set(payload, 5);
  return b;
}

/** Opens a raw socket, sends `bytes`, collects what comes back until the server closes (or `ms` pass). */
export function rawExchange(port: number, bytes: Uint8Array[], ms = 1500): Promise<Buffer> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    const got: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(Buffer.concat(got));
    };
    const timer = setTimeout(done, ms);
    sock.on("data", (c: Buffer) => got.push(c));
    sock.on("error", done);
    sock.on("close", done);
    sock.on("connect", async () => {
      for (const b of bytes) {
        sock.write(b);
        await sleep(10);
      }
    });
  });
}

/** Parses frames out of a byte stream: [type, flags, sid, payload][]. */
export function frames(buf: Buffer): [number, number, number, Buffer][] {
  const out: [number, number, number, Buffer][] = [];
  let p = 0;
  while (buf.length - p >= 9) {
    const len = buf.readUIntBE(p, 3);
    if (buf.length - p - 9 < len) break;
    out.push([buf[p + 3], buf[p + 4], buf.readUInt32BE(p + 5) & 0x7fffffff, buf.subarray(p + 9, p + 9 + len)]);
    p += 9 + len;
  }
  return out;
}

/** The error code of the first GOAWAY in a byte stream. */
export function goawayCode(buf: Buffer): number | undefined {
  const g = frames(buf).find((f) => f[0] === 7);
  return g ? g[3].readUInt32BE(4) : undefined;
}

/** A raw HTTP/2 client connection that keeps a summary of what the server sent. */
export class RawH2Conn {
  readonly socket: net.Socket;
  /** The GOAWAY error code, once one arrived. */
  goaway: number | undefined;
  /** stream id → RST_STREAM error code. */
  readonly resets = new Map<number, number>();
  /** Frames received, by type. */
  readonly counts = new Map<number, number>();
  /** The server's first SETTINGS, as id → value. */
  readonly serverSettings = new Map<number, number>();
  /** Streams on which HEADERS arrived (responses and trailers). */
  readonly headerStreams = new Set<number>();
  /** stream id → every header field the server sent on it, decoded ([name, value, ...]). */
  readonly fields = new Map<number, string[]>();
  private readonly decoder = new HpackDecoder();
  /** Bytes received in total. */
  received = 0;
  /** Whether the server closed the connection. */
  closed = false;
  readonly whenClosed: Promise<void>;
  private pending = Buffer.alloc(0);
  private sawSettings = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.whenClosed = new Promise((resolve) => {
      socket.on("close", () => {
        this.closed = true;
        resolve();
      });
    });
    socket.on("error", () => {});
    socket.on("data", (c: Buffer) => this.input(c));
  }

  /** Connects; with `handshake`, sends the preface and `settings` (an empty SETTINGS by default). */
  static async open(port: number, handshake = true, settings: Buffer = settingsFrame()): Promise<RawH2Conn> {
    const socket = net.connect(port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("error", reject);
    });
    const c = new RawH2Conn(socket);
    if (handshake) await c.send(Buffer.concat([Buffer.from(PREFACE), settings]));
    return c;
  }

  /** Writes `bytes`, waiting for the socket to drain when it is backed up; false once the socket is gone. */
  async send(bytes: Uint8Array): Promise<boolean> {
    if (this.closed || this.socket.destroyed) return false;
    if (this.socket.write(bytes)) return true;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        resolve();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
    return !this.closed;
  }

  /** Waits until `pred` holds or `ms` pass; returns whether it held. */
  async waitFor(pred: () => boolean, ms = 10_000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) return false;
      await sleep(10);
    }
    return true;
  }

  /** The grpc-status the server sent on stream `sid`, if any. */
  grpcStatus(sid: number): number | undefined {
    const f = this.fields.get(sid) ?? [];
    for (let i = 0; i < f.length; i += 2) if (f[i] === "grpc-status") return Number(f[i + 1]);
    return undefined;
  }

  close(): void {
    this.socket.destroy();
  }

  private input(c: Buffer): void {
    this.received += c.length;
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, c]) : c;
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const type = buf[3];
      const flags = buf[4];
      const sid = buf.readUInt32BE(5) & 0x7fffffff;
      const payload = buf.subarray(9, 9 + len);
      this.counts.set(type, (this.counts.get(type) ?? 0) + 1);
      if (type === 7) this.goaway ??= payload.readUInt32BE(4);
      else if (type === 3) this.resets.set(sid, payload.readUInt32BE(0));
      else if (type === 1) {
        // (the server sends no CONTINUATION for the small blocks these tests make it answer)
        this.headerStreams.add(sid);
        this.fields.set(sid, [...(this.fields.get(sid) ?? []), ...this.decoder.decode(payload)]);
      } else if (type === 4 && (flags & 1) === 0 && !this.sawSettings) {
        this.sawSettings = true;
        for (let p = 0; p + 6 <= len; p += 6) {
          this.serverSettings.set(payload.readUInt16BE(p), payload.readUInt32BE(p + 2));
        }
      }
      buf = buf.subarray(9 + len);
    }
    this.pending = Buffer.from(buf);
  }
}
