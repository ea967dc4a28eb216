/**
 * HTTP/2 flow control of our transport (server/transport/h2connection.ts) against a raw peer on loopback:
 *
 * - a WINDOW_UPDATE that empties a stream's queue while the socket is backed up must still lead to the stream's
 *   onDrain once the socket drains (it was lost: the writer waited for good);
 * - a SETTINGS_INITIAL_WINDOW_SIZE change that takes a stream's send window beyond 2^31-1 is a connection error
 *   FLOW_CONTROL_ERROR (RFC 9113 section 6.9.2).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import { Http2ClientConnection, type Http2ClientStream } from "../server/transport/http2_client.ts";
import { Http2ServerConnection, type Http2Stream } from "../server/transport/http2.ts";
import { MAX_WINDOW, SOCKET_HIGH_WATER } from "../server/transport/h2frames.ts";
import { frame, frames, grpcRequestBlock, PREFACE, settingsFrame, sleep } from "./lib/h2raw.ts";

const SETTINGS = 4;
const WINDOW_UPDATE = 8;
const HEADERS = 1;
const GOAWAY = 7;
const RST_STREAM = 3;
const END_HEADERS = 0x4;
const ACK = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const FLOW_CONTROL_ERROR = 0x3;
const MB = 1 << 20;

function windowUpdate(sid: number, inc: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(inc, 0);
  return frame(WINDOW_UPDATE, 0, sid, p);
}

async function waitFor(pred: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

/** A raw HTTP/2 server for one connection: it grants windows when told and reads only when told. */
class RawServer {
  readonly server: net.Server;
  socket: net.Socket | null = null;
  /** The client's SETTINGS ACK arrived (our SETTINGS are in force on its side). */
  acked = false;
  private pending = Buffer.alloc(0);
  private prefaceLeft = PREFACE.length;

  constructor(private readonly settings: Buffer) {
    this.server = net.createServer((sock) => {
      this.socket = sock;
      sock.on("error", () => {});
      sock.on("data", (c: Buffer) => this.input(c));
      sock.write(settings);
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) => {
      this.server.listen(0, "127.0.0.1", () => resolve((this.server.address() as net.AddressInfo).port));
    });
  }

  private input(c: Buffer): void {
    if (this.acked) return; // from here on, bytes are only drained
    let buf = Buffer.concat([this.pending, c]);
    if (this.prefaceLeft > 0) {
      const n = Math.min(this.prefaceLeft, buf.length);
      this.prefaceLeft -= n;
      buf = buf.subarray(n);
    }
    for (const [type, flags] of frames(buf)) {
      if (type === SETTINGS && (flags & ACK) !== 0) this.acked = true;
    }
    this.pending = Buffer.from(buf);
  }

  close(): void {
    this.socket?.destroy();
    this.server.close();
  }
}

Deno.test({
  name: "h2 flow control: a WINDOW_UPDATE emptying the queue while the socket is backed up still ends in onDrain",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // The stream may send 40 MB (more than SOCKET_HIGH_WATER) at once; the connection window is large. A 48 MB
    // write: 40 MB framed into the socket (backed up: the server does not read), 8 MB queued for stream window.
    const streamWindow = 40 * MB;
    assert.ok(streamWindow > SOCKET_HIGH_WATER);
    const raw = new RawServer(
      Buffer.concat([settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, streamWindow]]), windowUpdate(0, 1 << 30)]),
    );
    const port = await raw.listen();
    const conn = Http2ClientConnection.connect("127.0.0.1", port);
    try {
      assert.ok(await waitFor(() => raw.acked, 5000), "the client acknowledged our SETTINGS");
      raw.socket!.pause(); // the client's output backs up in its socket
      let drains = 0;
      const s: Http2ClientStream = conn.request(
        [":method", "POST", ":scheme", "http", ":path", "/upload", ":authority", "localhost"],
        {
          onHeaders() {},
          onData() {},
          onEnd() {},
          onReset() {},
          onDrain() {
            drains++;
          },
        },
      )!;
      const body = new Uint8Array(48 * MB);
      assert.equal(s.write(body), false, "the write waits for window");
      const w = (conn as unknown as { w: { blocked: boolean } }).w;
      assert.ok(await waitFor(() => w.blocked, 5000), "the socket is backed up above its high-water mark");
      assert.equal(s.bufferedBytes, 8 * MB);
      // window for the rest: the queue empties into the backed-up socket
      raw.socket!.write(windowUpdate(s.id, 8 * MB));
      assert.ok(await waitFor(() => s.bufferedBytes === 0, 5000), "the queue emptied");
      assert.ok(w.blocked, "the socket is still backed up when the queue empties");
      assert.equal(drains, 0);
      // the server reads everything: the socket drains, and so must the stream
      raw.socket!.on("data", () => {});
      raw.socket!.resume();
      assert.ok(await waitFor(() => drains > 0, 10_000), "onDrain after the socket drained");
      assert.equal(drains, 1);
    } finally {
      conn.destroy();
      raw.close();
    }
  },
});

/** Serves HTTP/2 connections whose streams stay open (no response); returns the port and a close function. */
async function holdingServer(): Promise<{ port: number; close: () => void; streams: Http2Stream[] }> {
  const streams: Http2Stream[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("error", () => {});
    new Http2ServerConnection(sock, { onStream: (st) => void streams.push(st) });
  });
  const port = await new Promise<number>((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
  });
  return {
    port,
    streams,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** Sends `bytes` on a raw connection and collects the answer until the server closes or `ms` pass. */
function exchange(port: number, bytes: Buffer, ms: number): Promise<{ got: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    const got: Buffer[] = [];
    let closed = false;
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ got: Buffer.concat(got), closed });
    };
    const timer = setTimeout(done, ms);
    sock.on("data", (c: Buffer) => got.push(c));
    sock.on("error", () => {});
    sock.on("close", () => {
      closed = true;
      done();
    });
    sock.on("connect", () => sock.write(bytes));
  });
}

Deno.test({
  name:
    "h2 flow control: SETTINGS_INITIAL_WINDOW_SIZE taking a stream window beyond 2^31-1 → GOAWAY FLOW_CONTROL_ERROR",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = await holdingServer();
    try {
      // stream 1 opened, its send window raised to exactly 2^31-1, then the initial window raised by `delta`
      const attempt = (delta: number) =>
        exchange(
          srv.port,
          Buffer.concat([
            Buffer.from(PREFACE),
            settingsFrame(),
            frame(HEADERS, END_HEADERS, 1, grpcRequestBlock("/x.Y/Z")),
            windowUpdate(1, MAX_WINDOW - 65535),
            settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 65535 + delta]]),
          ]),
          delta > 0 ? 5000 : 800,
        );

      const over = await attempt(1);
      const f = frames(over.got);
      const goaway = f.find((x) => x[0] === GOAWAY);
      assert.ok(goaway, `GOAWAY expected; frames: ${f.map((x) => `${x[0]}/${x[2]}`).join(" ")}`);
      assert.equal(goaway[3].readUInt32BE(4), FLOW_CONTROL_ERROR);
      assert.ok(over.closed, "the server closes the connection");
      assert.equal(f.filter((x) => x[0] === SETTINGS && (x[1] & ACK) !== 0).length, 1, "only the first SETTINGS acked");

      // a window that stays within 2^31-1 (or shrinks) is fine
      for (const delta of [0, -65535]) {
        const ok = await attempt(delta);
        const g = frames(ok.got);
        assert.ok(!g.some((x) => x[0] === GOAWAY || x[0] === RST_STREAM), `delta ${delta}: no error`);
        assert.equal(g.filter((x) => x[0] === SETTINGS && (x[1] & ACK) !== 0).length, 2, `delta ${delta}: acked`);
        assert.ok(!ok.closed);
      }
    } finally {
      srv.close();
    }
  },
});
