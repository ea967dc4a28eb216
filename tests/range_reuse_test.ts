/**
 * Large range responses reuse their memory (issue 14: a range of 10,000 keys spent a third of its time in page faults
 * of freshly mapped buffers): the range builder keeps grown buffers, the HTTP/2 writer pools its batch buffers and
 * queues a response body by reference. Reuse must never change bytes still to be sent: consecutive large ranges
 * answer their own records, and a response held back (by a shut flow-control window, or by a peer that does not
 * read its socket) arrives intact after other large responses were built and sent from the same buffers meanwhile.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import { pbRoot } from "../proto/mod.ts";
import {
  buildPoolSizes,
  lentBuildBuffers,
  POOL_BUFFERS,
  POOL_MAX_BYTES,
  RangeResponseBuilder,
} from "../server/watch/encode.ts";
import { ByteQueue, lendUntilSent } from "../server/transport/h2frames.ts";
import { EtcdClient } from "./lib/cluster.ts";
import { frame, grpcMessage, grpcRequestBlock, PREFACE, settingsFrame, sleep } from "./lib/h2raw.ts";
import { startServer } from "./lib/server.ts";

const RangeRequest = pbRoot.lookupType("etcdserverpb.RangeRequest");
const RangeResponse = pbRoot.lookupType("etcdserverpb.RangeResponse");
// deno-lint-ignore no-explicit-any
type Loose = any;
const decodeRange = (b: Uint8Array): Loose => RangeResponse.toObject(RangeResponse.decode(b), { longs: String });

const KEYS = 1500;
const VALUE_BYTES = 4096;
const key = (prefix: string, i: number) => `${prefix}${String(i).padStart(5, "0")}`;
/** A value that names its key all along, so that bytes of another response or another key show. */
const value = (prefix: string, i: number) => `${key(prefix, i)};`.repeat(VALUE_BYTES).slice(0, VALUE_BYTES);

/** Fails unless `kvs` are exactly the keys and values of `prefix`. */
function assertRecords(kvs: { key: Uint8Array; value: Uint8Array }[], prefix: string, what: string): void {
  assert.equal(kvs.length, KEYS, `${what}: keys`);
  for (let i = 0; i < KEYS; i++) {
    const k = Buffer.from(kvs[i].key).toString(), v = Buffer.from(kvs[i].value).toString();
    assert.equal(k, key(prefix, i), `${what}: key ${i}`);
    if (v !== value(prefix, i)) assert.fail(`${what}: the value of ${k} was changed (starts ${v.slice(0, 40)})`);
  }
}

/** Fails unless the kept build buffers are within their limits. */
function assertPoolBounded(): void {
  const kept = buildPoolSizes();
  assert.ok(kept.length <= POOL_BUFFERS, `${kept.length} buffers kept`);
  assert.ok(kept.reduce((a, b) => a + b, 0) <= POOL_MAX_BYTES, `${kept} bytes kept`);
}

Deno.test("range builder: a grown buffer is kept and reused; every response keeps its own bytes", () => {
  const build = (prefix: string, n: number) => {
    const b = new RangeResponseBuilder(false);
    for (let i = 0; i < n; i++) {
      b.add({
        key: Buffer.from(key(prefix, i), "latin1"),
        create: i + 1,
        mod: i + 2,
        version: 1,
        lease: "0",
        value: Buffer.from(value(prefix, i)),
      });
    }
    return b.done({ revision: 9 }, false, n);
  };
  const a = build("a/", KEYS);
  const kept = buildPoolSizes();
  assert.ok(kept.length > 0 && kept.at(-1)! >= a.length, `a grown buffer is kept (${kept})`);
  const b = build("b/", KEYS); // built in the buffer `a` was built in
  assertPoolBounded();
  assertRecords(decodeRange(a).kvs, "a/", "first response");
  assertRecords(decodeRange(b).kvs, "b/", "second response");
  assert.ok(a.buffer.byteLength === a.length, "the response is copied out to its size");
  // a small response after the big ones
  const small = decodeRange(build("c/", 3));
  assert.deepEqual(small.kvs.map((kv: Loose) => Buffer.from(kv.key).toString()), ["c/00000", "c/00001", "c/00002"]);
});

Deno.test("range builder: a lent buffer is not reused before its release, and goes back once", () => {
  const build = (prefix: string) => {
    const b = new RangeResponseBuilder(false);
    for (let i = 0; i < KEYS; i++) {
      b.add({
        key: Buffer.from(key(prefix, i), "latin1"),
        create: 1,
        mod: 1,
        version: 1,
        lease: "0",
        value: Buffer.from(value(prefix, i)),
      });
    }
    return b.lend({ revision: 9 }, false, KEYS);
  };
  const lentBefore = lentBuildBuffers();
  const a = build("a/");
  assert.ok(a.release, "a large response is lent");
  assert.equal(lentBuildBuffers(), lentBefore + 1);
  const b = build("b/"); // may reuse any kept buffer, not a's
  assertRecords(decodeRange(a.bytes).kvs, "a/", "the lent response");
  assertRecords(decodeRange(b.bytes).kvs, "b/", "the response built meanwhile");
  b.release!();
  a.release!();
  a.release!(); // a second release changes nothing
  assert.equal(lentBuildBuffers(), lentBefore);
  const kept = buildPoolSizes();
  assert.ok(kept.length > 0, "released buffers are kept");
  assertPoolBounded();
  // two builders at once take two distinct buffers
  const c = build("c/"), d = build("a/");
  assertRecords(decodeRange(c.bytes).kvs, "c/", "c");
  assertRecords(decodeRange(d.bytes).kvs, "a/", "d");
  c.release!();
  d.release!();
});

Deno.test("HTTP/2 queue: lent bytes are released once copied into frames in full, or when the queue is dropped", () => {
  const released: string[] = [];
  const lentChunk = (name: string, n: number) => {
    const bytes = new Uint8Array(n).fill(name.charCodeAt(0));
    lendUntilSent(bytes, () => released.push(name));
    return bytes;
  };
  const q = new ByteQueue();
  q.push(lentChunk("a", 100));
  q.push(new Uint8Array(10)); // not lent
  q.push(lentChunk("b", 100));
  const out = new Uint8Array(300);
  q.copyTo(out, 0, 99);
  assert.deepEqual(released, [], "a is still being read");
  q.copyTo(out, 99, 1);
  assert.deepEqual(released, ["a"]);
  q.copyTo(out, 100, 60);
  assert.deepEqual(released, ["a"], "b is still being read");
  q.push(lentChunk("c", 5));
  q.clear();
  assert.deepEqual(released, ["a", "b", "c"], "dropped: b and c are released");
  assert.equal(out[99], 97);
  assert.equal(out[150], 98);
});

/**
 * A Range of `prefix` on a raw HTTP/2 connection whose reading is held back: `window` 0 shuts the stream's
 * flow-control window (the response waits in the server's stream queue) until `release()`; `paused` stops reading
 * the socket (the response waits in the server's pending socket writes) until `release()`.
 */
async function heldRange(port: number, prefix: string, mode: "window" | "paused") {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", () => resolve());
    sock.once("error", reject);
  });
  const window = mode === "window" ? 0 : 0x7fffffff;
  const end = Buffer.from(prefix);
  end[end.length - 1]++;
  const req = RangeRequest.encode(RangeRequest.fromObject({ key: Buffer.from(prefix), range_end: end })).finish();
  const wu = (sid: number, inc: number) => {
    const p = Buffer.alloc(4);
    p.writeUInt32BE(inc);
    return frame(8, 0, sid, p);
  };
  sock.write(Buffer.concat([
    Buffer.from(PREFACE),
    settingsFrame([[4, window]]), // SETTINGS_INITIAL_WINDOW_SIZE
    wu(0, 0x7fffffff - 65535), // the connection's window: wide open
    frame(1, 4, 1, grpcRequestBlock("/etcdserverpb.KV/Range")), // HEADERS, END_HEADERS
    frame(0, 1, 1, grpcMessage(req)), // DATA, END_STREAM
  ]));
  const data: Buffer[] = [];
  let pending = Buffer.alloc(0);
  let received = 0;
  const answered = new Promise<Buffer>((resolve, reject) => {
    sock.on("error", reject);
    sock.on("close", () => reject(new Error("connection closed before the response ended")));
    sock.on("data", (c: Buffer) => {
      received += c.length;
      let buf = pending.length > 0 ? Buffer.concat([pending, c]) : c;
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const [type, flags, sid] = [buf[3], buf[4], buf.readUInt32BE(5) & 0x7fffffff];
        const payload = buf.subarray(9, 9 + len);
        if (type === 4 && (flags & 1) === 0) sock.write(frame(4, 1, 0)); // SETTINGS ACK
        if (type === 0 && sid === 1) data.push(Buffer.from(payload));
        if (type === 3 && sid === 1) reject(new Error(`stream reset (${payload.readUInt32BE(0)})`));
        if (type === 1 && sid === 1 && (flags & 1) !== 0) {
          const msg = Buffer.concat(data);
          sock.destroy();
          return resolve(msg);
        }
        buf = buf.subarray(9 + len);
      }
      pending = Buffer.from(buf);
    });
  });
  if (mode === "paused") sock.pause();
  return {
    answered,
    received: () => received,
    release: () => mode === "paused" ? sock.resume() : sock.write(wu(1, 0x7fffffff)),
  };
}

Deno.test({
  name: "large ranges on a server: consecutive ones answer their own records; a held-back one arrives intact",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = await startServer();
    const client = new EtcdClient(srv.endpoint);
    const port = Number(srv.endpoint.split(":")[1]);
    try {
      for (const prefix of ["a/", "b/", "c/"]) {
        for (let i = 0; i < KEYS; i += 100) {
          const success = [];
          for (let j = i; j < Math.min(KEYS, i + 100); j++) {
            success.push({ request_put: { key: Buffer.from(key(prefix, j)), value: Buffer.from(value(prefix, j)) } });
          }
          await client.call(client.kv, "Txn", { compare: [], success, failure: [] }, 20_000);
        }
      }
      const range = async (prefix: string) =>
        (await client.call<Loose>(client.kv, "Range", {
          key: Buffer.from(prefix),
          range_end: Buffer.from(prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)),
        }, 20_000)).kvs;

      // consecutive ranges: each built in the buffer the one before was built in
      for (const prefix of ["a/", "b/", "c/", "a/"]) assertRecords(await range(prefix), prefix, `range ${prefix}`);

      for (const mode of ["window", "paused"] as const) {
        const held = await heldRange(port, "a/", mode);
        await sleep(300); // answered by the server, held in its queue or its socket
        if (mode === "window") assert.ok(held.received() < 100_000, `${mode}: the response waits (${held.received()})`);
        // meanwhile other large responses are built and sent (and their batches written) from the same buffers
        for (const prefix of ["b/", "c/", "b/", "c/"]) assertRecords(await range(prefix), prefix, `${mode}: ${prefix}`);
        held.release();
        const msg = await held.answered;
        assert.equal(msg[0], 0, "uncompressed");
        assert.equal(msg.readUInt32BE(1), msg.length - 5, "one gRPC message");
        assertRecords(decodeRange(msg.subarray(5)).kvs, "a/", `${mode}: the held-back response`);
      }
    } finally {
      client.close();
      await srv.stop();
    }
  },
});
