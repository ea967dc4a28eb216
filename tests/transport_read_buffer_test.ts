/**
 * Socket reads into a 64 KiB buffer of our own (server/transport/socket_reads.ts), reused by every read: what the
 * gRPC server and client receive on plain TCP must arrive intact although the next read overwrites the buffer (the
 * frame reader copies a frame cut by a read's end; the message reassembly copies what it keeps).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import net from "node:net";
import { GrpcServer, type ServerCall } from "../server/transport/grpc_server.ts";
import { GrpcClient } from "../server/transport/http2_client.ts";
import { onreadOption, READ_BUFFER_BYTES, readIntoOwnBuffer } from "../server/transport/socket_reads.ts";
import { frame, frames, grpcMessage, grpcRequestBlock, PREFACE, settingsFrame, sleep } from "./lib/h2raw.ts";
import { prng } from "./lib/prng.ts";

const MB = 1 << 20;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function randomBytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
  return b;
}

Deno.test({
  name: "socket reads: an accepted and a connected socket read into one buffer of READ_BUFFER_BYTES, bytes intact",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const data = randomBytes(8 * MB + 12345);
    const want = sha(data);
    const result = Promise.withResolvers<{ hooked: boolean; digest: string; maxRead: number; buffers: number }>();
    const server = net.createServer((sock) => {
      const h = createHash("sha256");
      let got = 0;
      let maxRead = 0;
      const buffers = new Set<ArrayBufferLike>();
      const hooked = readIntoOwnBuffer(sock, (c) => {
        h.update(c);
        got += c.length;
        maxRead = Math.max(maxRead, c.length);
        buffers.add(c.buffer);
        if (got === data.length) {
          result.resolve({ hooked, digest: h.digest("hex"), maxRead, buffers: buffers.size });
          sock.end(data); // and back through the client's own buffer
        }
      });
      sock.on("data", () => result.reject(new Error("'data' although the reads go to our buffer")));
      sock.on("error", () => {});
    });
    const port = await new Promise<number>((r) =>
      server.listen(0, "127.0.0.1", () => r((server.address() as net.AddressInfo).port))
    );
    try {
      const back = createHash("sha256");
      let backBytes = 0;
      const clientDone = Promise.withResolvers<void>();
      const target = { onChunk: (c: Uint8Array) => void (back.update(c), backBytes += c.length) };
      const client = net.connect({ host: "127.0.0.1", port, onread: onreadOption(target) });
      client.on("end", () => clientDone.resolve());
      client.on("error", (e) => clientDone.reject(e));
      client.on("connect", () => client.write(data));
      const r = await result.promise;
      assert.ok(r.hooked, "this runtime's node:net lets an accepted socket read into our buffer");
      assert.equal(r.digest, want, "bytes read through the shared buffer are intact");
      assert.ok(r.maxRead <= READ_BUFFER_BYTES);
      assert.equal(r.buffers, 1, "every read landed in the same buffer");
      await clientDone.promise;
      assert.equal(backBytes, data.length);
      assert.equal(back.digest("hex"), want);
      client.destroy();
    } finally {
      server.close();
    }
  },
});

Deno.test({
  name: "socket reads: gRPC messages of up to 3 MB with random content, both ways over plain TCP, arrive intact",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = new GrpcServer();
    const identity = (b: Buffer) => b;
    srv.addService({
      Echo: {
        path: "/test.Echo/Echo",
        requestStream: true,
        responseStream: true,
        requestDeserialize: identity,
        responseSerialize: (v) => v as Buffer,
      },
    }, {
      Echo: (call: ServerCall) => {
        call.on("data", (m: Buffer) => call.write(m));
        call.on("end", () => call.end());
      },
    });
    const port = await srv.listen("127.0.0.1", 0);
    const client = new GrpcClient(`127.0.0.1:${port}`);
    try {
      const rnd = prng(20261206);
      const int = (n: number) => Math.floor(rnd() * n);
      const sent: string[] = [];
      const got: string[] = [];
      const call = client.bidiStream("/test.Echo/Echo");
      const done = Promise.withResolvers<void>();
      call.on("message", (m: Buffer) => got.push(sha(m)));
      call.on("error", (e: Error) => done.reject(e));
      call.on("close", () => done.resolve());
      // sizes that cut frames and messages at every place: tiny, around the frame and read sizes, and megabytes
      const sizes = [1, 5, 16379, 16384, 16385, 65531, 65536, 65541, 3 * MB];
      for (let total = 0; total < 24 * MB;) {
        sizes.push(1 + (int(100) < 30 ? int(3 * MB) : int(70_000)));
        total += sizes.at(-1)!;
      }
      for (const n of sizes) {
        const m = randomBytes(n);
        sent.push(sha(m));
        if (!call.write(m)) await new Promise((r) => call.once("drain", r));
      }
      call.end();
      await done.promise;
      assert.equal(got.length, sent.length, "every message came back");
      for (let i = 0; i < sent.length; i++) assert.equal(got[i], sent[i], `message ${i} (${sizes[i]} bytes)`);
    } finally {
      client.close();
      srv.forceShutdown();
    }
  },
});

Deno.test({
  name: "socket reads: a frame that spans several small reads is copied out of the reused buffer (gRPC server)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // a unary call answering the SHA-256 of its request; the request comes from a raw client in pieces of 3,000
    // bytes, a few milliseconds apart: each DATA frame of 16 KiB spans six reads of the server's one buffer
    const srv = new GrpcServer();
    srv.addService({
      Digest: {
        path: "/test.Echo/Digest",
        requestStream: false,
        responseStream: false,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (v) => Buffer.from(v as string),
      },
    }, {
      Digest: (call: ServerCall, cb: (err: null, v: string) => void) => cb(null, sha(call.request as Buffer)),
    });
    const port = await srv.listen("127.0.0.1", 0);
    const sock = net.connect(port, "127.0.0.1");
    try {
      await new Promise<void>((r) => sock.once("connect", () => r()));
      sock.setNoDelay(true);
      const got: Buffer[] = [];
      sock.on("data", (c: Buffer) => got.push(c));
      sock.on("error", () => {});
      const body = randomBytes(200_000);
      const msg = grpcMessage(body);
      const out: Buffer[] = [
        Buffer.from(PREFACE),
        settingsFrame(),
        frame(1, 0x4, 1, grpcRequestBlock("/test.Echo/Digest")),
      ];
      for (let p = 0; p < msg.length; p += 16384) {
        const end = Math.min(p + 16384, msg.length);
        out.push(frame(0, end === msg.length ? 0x1 : 0, 1, msg.subarray(p, end)));
      }
      const wire = Buffer.concat(out);
      for (let p = 0; p < wire.length; p += 3000) {
        sock.write(wire.subarray(p, p + 3000));
        await sleep(2);
      }
      const answer = async () => {
        for (let i = 0; i < 500; i++) {
          const data = frames(Buffer.concat(got)).filter((f) => f[0] === 0 && f[2] === 1 && f[3].length > 0);
          if (data.length > 0) return Buffer.concat(data.map((f) => f[3])).subarray(5).toString();
          await sleep(10);
        }
        return `no answer; frames ${frames(Buffer.concat(got)).map((f) => `${f[0]}/${f[2]}`).join(" ")}`;
      };
      assert.equal(await answer(), sha(body), "the server read the request intact");
    } finally {
      sock.destroy();
      srv.forceShutdown();
    }
  },
});
