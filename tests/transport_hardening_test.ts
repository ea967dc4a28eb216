/**
 * The HTTP/2 + gRPC transport under attack (issue 11): each attack's hostile bytes are sent over a raw TCP socket,
 * to a real server process (`scripts/etcd`) where memory matters, or to a GrpcServer with short timeouts where time
 * does. Each test asserts the defined outcome (GOAWAY or RST_STREAM with the right code, the connection closed, 400,
 * 431, 501), that the server's memory stays within a stated bound, and that another client is served meanwhile.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { KVService } from "../proto/mod.ts";
import { grpcRoot } from "../proto/grpc_js.ts";
import { GrpcServer, type ServerCall, type ServerTimeouts } from "../server/transport/grpc_server.ts";
import { HpackDecoder } from "../server/transport/hpack.ts";
import {
  EARLY_RESPONSE_LINGER_MS,
  Http2ServerConnection,
  MAX_CONCURRENT_STREAMS,
  RAPID_RESET_LIMIT,
} from "../server/transport/http2.ts";
import { MAX_CONTINUATION_FRAMES } from "../server/transport/h2frames.ts";
import { makeTwoLeafDir } from "./lib/certs.ts";
import { EtcdClient } from "./lib/cluster.ts";
import { startServer } from "./lib/server.ts";
import {
  frame,
  grpcMessage,
  grpcRequestBlock,
  literal,
  PREFACE,
  rawExchange,
  RawH2Conn,
  settingsFrame,
  sleep,
} from "./lib/h2raw.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const HEADERS = 1;
const RST_STREAM = 3;
const CONTINUATION = 9;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const PROTOCOL_ERROR = 0x1;
const SETTINGS_TIMEOUT = 0x4;
const REFUSED_STREAM = 0x7;
const CANCEL = 0x8;
const COMPRESSION_ERROR = 0x9;
const ENHANCE_YOUR_CALM = 0xb;
const RESOURCE_EXHAUSTED = 8; // gRPC status
const MB = 1 << 20;

/** Protobuf bytes field `field` (length < 2^21). */
function bytesField(field: number, value: Uint8Array): Buffer {
  const len: number[] = [];
  let n = value.length;
  while (n >= 128) {
    len.push((n & 127) | 128);
    n >>>= 7;
  }
  len.push(n);
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...len]), value]);
}

const rangeRequest = (key: string) => grpcMessage(bytesField(1, Buffer.from(key)));
const putRequest = (key: string, value: string) =>
  grpcMessage(Buffer.concat([bytesField(1, Buffer.from(key)), bytesField(2, Buffer.from(value))]));

/** The server process's resident and virtual memory in MB, from /proc/<pid>/status. */
function memoryMb(pid: number): { rss: number; virt: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]);
  return { rss: kb("VmRSS") / 1024, virt: kb("VmSize") / 1024 };
}

/** The pid of the process whose command line names `dataDir` (the server under test: its data dir is unique). */
function pidOf(dataDir: string): number {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/cmdline`).includes(dataDir)) return Number(e.name);
    } catch { /* gone */ }
  }
  throw new Error(`no process for ${dataDir}`);
}

Deno.test("HPACK: over-long integers are refused; the dynamic table stays within its announced size", () => {
  // a table size update whose integer has 150 continuation bytes (it once became NaN and disabled eviction)
  const nan = Buffer.concat([Buffer.from([0x3f]), Buffer.alloc(150, 0x80), Buffer.from([0x00])]);
  assert.throws(() => new HpackDecoder().decode(nan), /integer too long/);
  assert.throws(
    () => new HpackDecoder().decode(Buffer.from([0x3f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
    /too long/,
  );
  assert.throws(() => new HpackDecoder().decode(Buffer.from([0x3f, 0xff, 0xff, 0xff, 0xff, 0x0f])), /overflow/);
  // at most two size updates per block, each at most the size we announced
  assert.throws(() => new HpackDecoder().decode(Buffer.from([0x20, 0x20, 0x20])), /too many table size updates/);
  assert.throws(() => new HpackDecoder(4096).decode(Buffer.from([0x3f, 0xe2, 0x1f])), /above the limit/);
  // 30,000 tiny literals with incremental indexing (34 bytes each): the table holds the newest 4096 bytes' worth
  const d = new HpackDecoder(4096, 16 * MB);
  const parts: Buffer[] = [];
  for (let i = 0; i < 30_000; i++) parts.push(Buffer.from([0x40, 1, 97 + (i % 26), 1, 48 + (i % 10)]));
  const out = d.decode(Buffer.concat(parts));
  assert.equal(out.length, 60_000);
  assert.equal(d.tableLength, 120);
  assert.equal(d.tableSize, 120 * 34);
  // the newest entry is index 62, the oldest still held 181: same as the fields sent last
  const last = 29_999;
  assert.deepEqual(d.decode(Buffer.from([0x80 | 62])), [String.fromCharCode(97 + (last % 26)), String(last % 10)]);
  const oldest = 30_000 - 120;
  assert.deepEqual(d.decode(Buffer.from([0xff, 181 - 127])), [
    String.fromCharCode(97 + (oldest % 26)),
    String(oldest % 10),
  ]);
  assert.throws(() => d.decode(Buffer.from([0xff, 182 - 127])), /out of range/);
  // shrinking the table evicts down to the new size; growing back keeps what is left
  d.decode(Buffer.from([0x3f, 0x4c])); // 31 + 76 = 107 bytes: 3 entries of 34
  assert.equal(d.tableLength, 3);
  d.decode(Buffer.from([0x3f, 0xe1, 0x1f]));
  assert.equal(d.tableLength, 3);
});

Deno.test({
  name: "hostile HTTP/2 and HTTP/1.1 peers against a real server process: defined outcomes, bounded memory",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const srv = await startServer();
    const pid = pidOf(srv.dataDir);
    const port = Number(srv.endpoint.split(":")[1]);
    const client = new EtcdClient(srv.endpoint);
    let served = 0;
    /** Another client is served: a put and a linearizable get. */
    const othersServed = async () => {
      const v = `v${++served}`;
      await client.put("other", v);
      assert.equal((await client.get("other")).value, v);
    };
    /**
     * Runs `attack` while another connection keeps putting and reading back (at least one round trip sent during the
     * attack); fails if one of them fails or waits longer than `stallMs` (0.9 MB of literals once stalled the loop 4 s).
     */
    const servedDuring = async (what: string, attack: () => Promise<void>, stallMs = 5000) => {
      let attacking = true;
      let rounds = 0;
      let slowest = 0;
      const others = (async () => {
        while (attacking || rounds === 0) {
          const started = performance.now();
          await othersServed();
          slowest = Math.max(slowest, performance.now() - started);
          rounds++;
        }
      })();
      try {
        await attack();
      } finally {
        attacking = false;
        await others;
      }
      console.log(
        `${what}: ${rounds} put+get rounds of another client during the attack, slowest ${slowest.toFixed(0)} ms`,
      );
      assert.ok(slowest < stallMs, `${what}: another client waited ${slowest.toFixed(0)} ms`);
    };
    /** Fails when the server's RSS grew by more than `mb` since `base`. */
    const rssWithin = (base: number, mb: number, what: string) => {
      const now = memoryMb(pid).rss;
      console.log(`${what}: RSS ${base.toFixed(0)} → ${now.toFixed(0)} MB (bound +${mb} MB)`);
      assert.ok(now - base < mb, `${what}: RSS grew from ${base.toFixed(0)} to ${now.toFixed(0)} MB`);
    };
    try {
      await othersServed();

      await t.step("an oversized HPACK integer (150 continuation bytes) → GOAWAY COMPRESSION_ERROR", async () => {
        const c = await RawH2Conn.open(port);
        // 0x80 bytes add nothing, until 2^(7*150) is Infinity and 0 * Infinity NaN (which passed every check)
        const block = Buffer.concat([Buffer.from([0x3f]), Buffer.alloc(150, 0x80), Buffer.from([0x00])]);
        await c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block));
        assert.ok(await c.waitFor(() => c.closed), "connection closed");
        assert.equal(c.goaway, COMPRESSION_ERROR);
        await othersServed();
      });

      await t.step("0.9 MB of tiny indexed literals: answered, the table bounded, others served", async () => {
        const base = memoryMb(pid).rss;
        const c = await RawH2Conn.open(port);
        // 7 requests, each with 25,000 one-letter fields added to the dynamic table (850 KB of header list each)
        const fields: Buffer[] = [];
        for (let i = 0; i < 25_000; i++) fields.push(Buffer.from([0x40, 1, 97 + (i % 26), 1, 48 + (i % 10)]));
        const block = Buffer.concat([grpcRequestBlock("/etcdserverpb.KV/Range"), ...fields]);
        await servedDuring("tiny literals", async () => {
          for (let r = 0; r < 7; r++) {
            const sid = 2 * r + 1;
            for (let off = 0, first = true; off < block.length; off += 16384, first = false) {
              const part = block.subarray(off, off + 16384);
              const last = off + 16384 >= block.length;
              await c.send(frame(first ? HEADERS : CONTINUATION, last ? END_HEADERS : 0, sid, part));
            }
            await c.send(frame(0, END_STREAM, sid, rangeRequest("other")));
          }
          assert.ok(await c.waitFor(() => c.headerStreams.size === 7), `answered ${c.headerStreams.size}`);
        });
        assert.equal(c.goaway, undefined);
        rssWithin(base, 50, "tiny literals");
        await othersServed();
        c.close();
      });

      await t.step("a CONTINUATION flood of 200,000 empty frames → GOAWAY ENHANCE_YOUR_CALM", async () => {
        const base = memoryMb(pid).rss;
        const c = await RawH2Conn.open(port);
        await c.send(frame(HEADERS, 0, 1, grpcRequestBlock("/etcdserverpb.KV/Range")));
        const empty = frame(CONTINUATION, 0, 1);
        const batch = Buffer.concat(Array.from({ length: 10_000 }, () => empty));
        await servedDuring("CONTINUATION flood", async () => {
          for (let i = 0; i < 20 && !c.closed; i++) await c.send(batch);
          assert.ok(await c.waitFor(() => c.closed), "connection closed");
        });
        assert.equal(c.goaway, ENHANCE_YOUR_CALM);
        // and a block that grows beyond the header list limit (1 MiB) in full frames
        const d = await RawH2Conn.open(port);
        await d.send(frame(HEADERS, 0, 1, grpcRequestBlock("/etcdserverpb.KV/Range")));
        const full = frame(CONTINUATION, 0, 1, Buffer.alloc(16384, 0x40));
        for (let i = 0; i < 80 && !d.closed; i++) await d.send(full);
        assert.ok(await d.waitFor(() => d.closed), "connection closed");
        assert.equal(d.goaway, ENHANCE_YOUR_CALM);
        assert.ok(MAX_CONTINUATION_FRAMES * 16384 >= MB, "a legitimate 1 MiB block still fits in full frames");
        rssWithin(base, 50, "CONTINUATION flood");
        await othersServed();
      });

      await t.step("zero window: 600 Range calls of a 1 MB value are cut at the queued-bytes cap", async () => {
        await client.put("big", "x".repeat(MB));
        const base = memoryMb(pid).rss;
        const c = await RawH2Conn.open(port, true, settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 0]]));
        const block = grpcRequestBlock("/etcdserverpb.KV/Range");
        const req = rangeRequest("big");
        const out: Buffer[] = [];
        for (let i = 0; i < 600; i++) {
          const sid = 2 * i + 1;
          out.push(frame(HEADERS, END_HEADERS, sid, block), frame(0, END_STREAM, sid, req));
        }
        await servedDuring("zero window", async () => {
          await c.send(Buffer.concat(out));
          // every response was answered somehow: queued (waiting for a window that never comes) or reset
          assert.ok(await c.waitFor(() => c.resets.size >= 550, 30_000), `streams reset: ${c.resets.size}`);
        }, 15_000); // encoding 600 MB of responses takes the loop 1.4 s at load 4
        assert.ok([...c.resets.values()].every((code) => code === ENHANCE_YOUR_CALM));
        await sleep(500);
        // the queue holds at most MAX_QUEUED_BYTES (32 MiB); the rest is garbage the collector has not returned yet:
        // the 600 encoded responses of 1 MB were measured at +186 MB on a quiet machine and above +250 MB under load.
        // Before the cap, 300 calls held +354 MB and 600 twice that (~+700 MB), so +400 still fails without the cap.
        rssWithin(base, 400, "600 Range calls with window 0");
        assert.ok(!c.closed, "the connection itself stays usable");
        await othersServed();
        c.close();
      });

      await t.step(`more than ${MAX_CONCURRENT_STREAMS} open streams → REFUSED_STREAM`, async () => {
        const c = await RawH2Conn.open(port);
        assert.ok(await c.waitFor(() => c.serverSettings.size > 0));
        assert.equal(c.serverSettings.get(SETTINGS_MAX_CONCURRENT_STREAMS), MAX_CONCURRENT_STREAMS);
        // 1,500 calls whose request message never comes: they stay open
        const block = grpcRequestBlock("/etcdserverpb.KV/Range");
        const out: Buffer[] = [];
        for (let i = 0; i < 1500; i++) out.push(frame(HEADERS, END_HEADERS, 2 * i + 1, block));
        await c.send(Buffer.concat(out));
        assert.ok(await c.waitFor(() => c.resets.size >= 500), `refused: ${c.resets.size}`);
        await sleep(200);
        assert.equal(c.resets.size, 500);
        for (const [sid, code] of c.resets) {
          assert.equal(code, REFUSED_STREAM);
          assert.ok(sid > 2 * MAX_CONCURRENT_STREAMS, `stream ${sid} refused`);
        }
        await othersServed();
        c.close();
      });

      await t.step("rapid reset: 5,000 × (HEADERS + Put + RST_STREAM) → GOAWAY ENHANCE_YOUR_CALM", async () => {
        const base = memoryMb(pid).rss;
        const c = await RawH2Conn.open(port);
        const block = grpcRequestBlock("/etcdserverpb.KV/Put");
        const rst = Buffer.alloc(4);
        rst.writeUInt32BE(CANCEL);
        const out: Buffer[] = [];
        for (let i = 0; i < 5000; i++) {
          const sid = 2 * i + 1;
          out.push(
            frame(HEADERS, END_HEADERS, sid, block),
            frame(0, END_STREAM, sid, putRequest(`rr/${i}`, "x")),
            frame(RST_STREAM, 0, sid, rst),
          );
        }
        await servedDuring("rapid reset", async () => {
          await c.send(Buffer.concat(out));
          assert.ok(await c.waitFor(() => c.closed), "connection closed");
        });
        assert.equal(c.goaway, ENHANCE_YOUR_CALM);
        // a call reset in the same input as its request never reaches its handler: (almost) no put was applied
        const applied = (await client.range("rr/")).kvs.length;
        console.log(`rapid reset: ${applied} of 5000 puts applied`);
        assert.ok(applied <= RAPID_RESET_LIMIT / 10, `${applied} puts applied`);
        rssWithin(base, 100, "rapid reset");
        await othersServed();
      });

      await t.step("length prefixes that declare 2 MB but send 5 bytes reserve no 2 MB each", async () => {
        const base = memoryMb(pid);
        const c = await RawH2Conn.open(port);
        const block = grpcRequestBlock("/etcdserverpb.KV/Put");
        const claim = Buffer.from([0, 0, 0x1f, 0xff, 0xff, 1, 2, 3, 4, 5]); // 2 MB - 1 declared, 5 bytes sent
        const out: Buffer[] = [];
        for (let i = 0; i < 1000; i++) {
          out.push(frame(HEADERS, END_HEADERS, 2 * i + 1, block), frame(0, 0, 2 * i + 1, claim));
        }
        await servedDuring("length prefixes", async () => {
          await c.send(Buffer.concat(out));
          await sleep(1000);
        });
        const now = memoryMb(pid);
        console.log(
          `length prefixes: RSS ${base.rss.toFixed(0)} → ${now.rss.toFixed(0)} MB, virtual ${base.virt.toFixed(0)} → ${
            now.virt.toFixed(0)
          } MB`,
        );
        assert.ok(now.virt - base.virt < 500, "virtual memory grew by less than 500 MB (it was +2 GB for 1,000)");
        assert.ok(now.rss - base.rss < 100, "RSS grew by less than 100 MB");
        assert.ok(!c.closed);
        // a message over the limit (--max-request-bytes + 512 KiB) → RESOURCE_EXHAUSTED, as etcd answers
        const over = Buffer.from([0, 0, 0x40, 0, 0]); // 4 MiB declared
        const d = await RawH2Conn.open(port);
        await d.send(Buffer.concat([frame(HEADERS, END_HEADERS, 1, block), frame(0, 0, 1, over)]));
        assert.ok(await d.waitFor(() => d.grpcStatus(1) !== undefined), "an answer on stream 1");
        assert.equal(d.grpcStatus(1), RESOURCE_EXHAUSTED);
        // messages that really send their data are held up to MAX_BUFFERED_REQUEST_BYTES per connection: 100 streams
        // that each send 1 MB of a 2 MB message (each buffer then 2 MB) → the ones beyond 64 MiB get RESOURCE_EXHAUSTED
        const mb = Buffer.alloc(16384, 0x61);
        for (let i = 0; i < 100; i++) {
          const sid = 2 * i + 1;
          for (let k = 0; k < 64 && !c.closed; k++) await c.send(frame(0, 0, sid, mb));
        }
        const refused = () => [...Array(100).keys()].filter((i) => c.grpcStatus(2 * i + 1) === RESOURCE_EXHAUSTED);
        assert.ok(await c.waitFor(() => refused().length >= 60, 30_000), `refused ${refused().length}`);
        rssWithin(base.rss, 150, "100 streams × 1 MB of unfinished messages");
        await othersServed();
        c.close();
        d.close();
      });

      await t.step(
        "HTTP/1.1: xchunked → 400, Content-Length with Transfer-Encoding → 400, gzip → 501, huge head → 431",
        async () => {
          const ask = async (req: string) => (await rawExchange(port, [Buffer.from(req)], 2000)).toString("latin1");
          assert.match(await ask("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), /^HTTP\/1\.1 200/);
          const body = "5\r\nhello\r\n0\r\n\r\n";
          assert.match(
            await ask(`POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n${body}`),
            /^HTTP\/1\.1 400/,
          );
          assert.match(
            await ask(
              `POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
            ),
            /^HTTP\/1\.1 400/,
          );
          assert.match(
            await ask(`POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${body}`),
            /^HTTP\/1\.1 501/,
          );
          assert.match(
            await ask(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(100_000)}\r\n\r\n`),
            /^HTTP\/1\.1 431/,
          );
          await othersServed();
        },
      );
    } finally {
      client.close();
      await srv.stop();
    }
  },
});

// ---------------------------------------------------------------------------------------------------------------
// A GrpcServer in this process, for what depends on time or on the handlers

/** Short timeouts so that the tests wait fractions of a second. */
const FAST: ServerTimeouts = {
  prefaceMs: 300,
  settingsMs: 300,
  headerBlockMs: 300,
  sendStallMs: 600,
  idleMs: 600,
  http1HeadersMs: 300,
  http1RequestMs: 1000,
};

interface Handlers {
  /** Unary handlers started, by the request's key. */
  started: string[];
  /** Answers of calls held back (key "hold/..."): call to answer. */
  held: Array<() => void>;
  /** Held calls that learned their stream was reset. */
  cancelled: number;
}

async function withGrpcServer(
  opts: { maxConnections?: number },
  fn: (port: number, h: Handlers, srv: GrpcServer) => Promise<void>,
): Promise<void> {
  const srv = new GrpcServer({ timeouts: FAST, maxConnections: opts.maxConnections });
  const h: Handlers = { started: [], held: [], cancelled: 0 };
  srv.addService(KVService as Any, {
    Range: (call: ServerCall & { request: Any }, cb: Any) => {
      const key = Buffer.from(call.request.key).toString();
      h.started.push(key);
      const answer = () => cb(null, { header: {}, kvs: [], count: "0" });
      if (!key.startsWith("hold/")) return answer();
      call.on("cancelled", () => h.cancelled++);
      h.held.push(answer);
    },
  });
  // "/slow" answers after twice the header timeout: a request being handled is not cut off by it
  srv.setHttp1Handler((req, res) => {
    if (req.url === "/slow") setTimeout(() => res.end("slow\n"), 2 * FAST.http1HeadersMs);
    else res.end("ok\n");
  });
  const port = await srv.listen("127.0.0.1", 0);
  try {
    await fn(port, h, srv);
  } finally {
    srv.forceShutdown();
  }
}

/** A grpc-js client whose Range calls show that the server keeps serving. */
function servedCheck(port: number): { check: () => Promise<void>; close: () => void } {
  const kv = new grpcRoot.etcdserverpb.KV(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return {
    check: () =>
      new Promise((resolve, reject) =>
        kv.Range({ key: Buffer.from("k") }, (err: Error | null) => err ? reject(err) : resolve())
      ),
    close: () => kv.close(),
  };
}

Deno.test({
  name: "timeouts: partial preface, missing SETTINGS, unfinished header block, stalled output, idle, trickled HTTP/1.1",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    await withGrpcServer({}, async (port) => {
      const other = servedCheck(port);
      try {
        await t.step("a partial preface is closed after the preface timeout", async () => {
          const c = await RawH2Conn.open(port, false);
          await c.send(Buffer.from(PREFACE.slice(0, 10)));
          assert.ok(await c.waitFor(() => c.closed, FAST.prefaceMs + 2000), "closed");
          await other.check();
        });
        await t.step("a preface without SETTINGS → GOAWAY SETTINGS_TIMEOUT", async () => {
          const c = await RawH2Conn.open(port, false);
          await c.send(Buffer.from(PREFACE));
          assert.ok(await c.waitFor(() => c.closed, FAST.settingsMs + 2000), "closed");
          assert.equal(c.goaway, SETTINGS_TIMEOUT);
          await other.check();
        });
        await t.step("a header block left unfinished → GOAWAY PROTOCOL_ERROR", async () => {
          const c = await RawH2Conn.open(port);
          await c.send(frame(HEADERS, 0, 1, grpcRequestBlock("/etcdserverpb.KV/Range")));
          assert.ok(await c.waitFor(() => c.closed, FAST.headerBlockMs + 2000), "closed");
          assert.equal(c.goaway, PROTOCOL_ERROR);
          await other.check();
        });
        await t.step("a client that reads none of its responses (window 0) → GOAWAY ENHANCE_YOUR_CALM", async () => {
          const c = await RawH2Conn.open(port, true, settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 0]]));
          const call = grpcRequestBlock("/etcdserverpb.KV/Range");
          await c.send(
            Buffer.concat([frame(HEADERS, END_HEADERS, 1, call), frame(0, END_STREAM, 1, rangeRequest("k"))]),
          );
          assert.ok(await c.waitFor(() => c.closed, FAST.sendStallMs + 3000), "closed");
          assert.equal(c.goaway, ENHANCE_YOUR_CALM);
          // a client that reads slowly (a little window now and then) is left alone
          const slow = await RawH2Conn.open(port, true, settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 0]]));
          await slow.send(
            Buffer.concat([frame(HEADERS, END_HEADERS, 1, call), frame(0, END_STREAM, 1, rangeRequest("k"))]),
          );
          const one = Buffer.from([0, 0, 0, 1]);
          for (const started = Date.now(); Date.now() - started < FAST.sendStallMs * 3;) {
            await slow.send(frame(8, 0, 1, one)); // WINDOW_UPDATE: one more byte
            await sleep(100);
          }
          assert.ok(!slow.closed, "a slow reader keeps its connection");
          slow.close();
          await other.check();
        });
        await t.step("an idle connection is closed; one that pings or has an open stream is not", async () => {
          const idle = await RawH2Conn.open(port);
          const pinging = await RawH2Conn.open(port);
          const streaming = await RawH2Conn.open(port);
          await streaming.send(frame(HEADERS, END_HEADERS, 1, grpcRequestBlock("/etcdserverpb.KV/Range")));
          const started = Date.now();
          while (Date.now() - started < FAST.idleMs * 3) {
            await pinging.send(frame(6, 0, 0, Buffer.alloc(8)));
            await sleep(100);
          }
          assert.ok(idle.closed, "the idle connection was closed");
          assert.equal(idle.goaway, undefined, "closed without GOAWAY");
          assert.ok(!pinging.closed, "a pinging client keeps its connection");
          assert.ok(!streaming.closed, "a connection with an open stream is not idle");
          pinging.close();
          streaming.close();
          await other.check();
        });
        await t.step("trickled HTTP/1.1 headers are cut off; a whole request is answered", async () => {
          const sock = net.connect(port, "127.0.0.1");
          let closed = false;
          let got = "";
          sock.on("close", () => closed = true);
          sock.on("error", () => {});
          sock.on("data", (b: Buffer) => got += b.toString());
          await new Promise((r) => sock.once("connect", r));
          const head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
          for (let i = 0; i < 40 && !closed; i++) {
            sock.write(i < head.length ? head[i] : "a");
            await sleep(50);
          }
          assert.ok(closed, "the connection was closed");
          assert.equal(got, "");
          sock.destroy();
          assert.match(
            (await rawExchange(port, [Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n")], 500)).toString(),
            /^HTTP\/1\.1 200/,
          );
          const slow = await rawExchange(port, [Buffer.from("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")], 2000);
          assert.match(slow.toString(), /^HTTP\/1\.1 200[^]*slow/);
          await other.check();
        });
      } finally {
        other.close();
      }
    });
  },
});

Deno.test({
  name: "a connection limit: connections beyond it are closed at once, the others served",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withGrpcServer({ maxConnections: 5 }, async (port) => {
      const other = servedCheck(port);
      await other.check(); // connection 1
      const held = await Promise.all([1, 2, 3, 4].map(() => RawH2Conn.open(port)));
      const extra = await RawH2Conn.open(port);
      assert.ok(await extra.waitFor(() => extra.closed, 2000), "the sixth connection was closed");
      await other.check();
      for (const c of held) assert.ok(!c.closed);
      held[0].close();
      await held[0].whenClosed;
      await sleep(100);
      const again = await RawH2Conn.open(port);
      await sleep(200);
      assert.ok(!again.closed, "a slot freed up");
      for (const c of [...held, again]) c.close();
      other.close();
    });
  },
});

Deno.test({
  name: "reset streams: handlers reset before they ran never start; running ones count against the stream limit",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withGrpcServer({}, async (port, h) => {
      const rst = Buffer.alloc(4);
      rst.writeUInt32BE(CANCEL);
      const block = grpcRequestBlock("/etcdserverpb.KV/Range");
      // reset in the same write as the request: the handler never runs
      const c = await RawH2Conn.open(port);
      const out: Buffer[] = [];
      for (let i = 0; i < 50; i++) {
        const sid = 2 * i + 1;
        out.push(frame(HEADERS, END_HEADERS, sid, block), frame(0, END_STREAM, sid, rangeRequest(`early/${i}`)));
        out.push(frame(RST_STREAM, 0, sid, rst));
      }
      await c.send(Buffer.concat(out));
      await sleep(300);
      assert.equal(h.started.filter((k) => k.startsWith("early/")).length, 0);
      assert.equal(c.goaway, undefined, `${50} resets stay below the rapid-reset limit`);

      // MAX_CONCURRENT_STREAMS handlers that never answer, then reset by the client: they learn of it, and their
      // slots stay taken until they answer
      const d = await RawH2Conn.open(port);
      const calls: Buffer[] = [];
      for (let i = 0; i < MAX_CONCURRENT_STREAMS; i++) {
        const sid = 2 * i + 1;
        calls.push(frame(HEADERS, END_HEADERS, sid, block), frame(0, END_STREAM, sid, rangeRequest(`hold/${i}`)));
      }
      await d.send(Buffer.concat(calls));
      assert.ok(await d.waitFor(() => h.held.length === MAX_CONCURRENT_STREAMS), `held ${h.held.length}`);
      const resets: Buffer[] = [];
      for (let i = 0; i < MAX_CONCURRENT_STREAMS; i++) resets.push(frame(RST_STREAM, 0, 2 * i + 1, rst));
      await d.send(Buffer.concat(resets));
      assert.ok(await d.waitFor(() => h.cancelled === MAX_CONCURRENT_STREAMS), `cancelled ${h.cancelled}`);
      const next = 2 * MAX_CONCURRENT_STREAMS + 1;
      await d.send(
        Buffer.concat([frame(HEADERS, END_HEADERS, next, block), frame(0, END_STREAM, next, rangeRequest("k"))]),
      );
      assert.ok(await d.waitFor(() => d.resets.has(next)), "the next stream was refused");
      assert.equal(d.resets.get(next), REFUSED_STREAM);
      // the handlers finish (their answers go nowhere): the slots are free again
      for (const answer of h.held.splice(0)) answer();
      await d.send(
        Buffer.concat([
          frame(HEADERS, END_HEADERS, next + 2, block),
          frame(0, END_STREAM, next + 2, rangeRequest("k")),
        ]),
      );
      assert.ok(await d.waitFor(() => d.headerStreams.has(next + 2)), "the stream after was served");
      assert.equal(d.resets.get(next + 2), undefined);
      assert.equal(d.goaway, undefined);
      c.close();
      d.close();
    });
  },
});

Deno.test({
  name:
    `rapid reset: more than ${RAPID_RESET_LIMIT} resets within the window → GOAWAY ENHANCE_YOUR_CALM; calm clients are not`,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withGrpcServer({}, async (port, h) => {
      const other = servedCheck(port);
      const rst = Buffer.alloc(4);
      rst.writeUInt32BE(CANCEL);
      const block = grpcRequestBlock("/etcdserverpb.KV/Range");
      const c = await RawH2Conn.open(port);
      for (let i = 0; i <= RAPID_RESET_LIMIT + 10 && !c.closed; i++) {
        const sid = 2 * i + 1;
        // open, then reset before the request message: the handler has not run
        await c.send(Buffer.concat([frame(HEADERS, END_HEADERS, sid, block), frame(RST_STREAM, 0, sid, rst)]));
      }
      assert.ok(await c.waitFor(() => c.closed), "closed");
      assert.equal(c.goaway, ENHANCE_YOUR_CALM);
      assert.equal(h.started.length, 0);
      await other.check();
      other.close();
      // a client that cancels now and then is left alone: 100 calls, every tenth cancelled before its message
      const d = await RawH2Conn.open(port);
      for (let i = 0; i < 100; i++) {
        const sid = 2 * i + 1;
        const parts = [frame(HEADERS, END_HEADERS, sid, block)];
        parts.push(i % 10 === 0 ? frame(RST_STREAM, 0, sid, rst) : frame(0, END_STREAM, sid, rangeRequest("k")));
        await d.send(Buffer.concat(parts));
      }
      assert.ok(await d.waitFor(() => d.headerStreams.size === 90), `answered ${d.headerStreams.size}`);
      assert.equal(d.goaway, undefined);
      d.close();
    });
  },
});

Deno.test({
  name: "an answer before the request body: the rest is read and dropped; only a client still sending is stopped",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // a server that answers 413 on HEADERS, as the gateway does for a Content-Length over clientMaxBodySize
    let delivered = 0;
    let ends = 0;
    let conn: Http2ServerConnection | undefined;
    const server = net.createServer((socket) => {
      conn = new Http2ServerConnection(socket, {
        onStream: (s) => {
          s.handler = { onData: () => delivered++, onEnd: () => ends++, onReset: () => {}, onDrain: () => {} };
          s.respond([":status", "413", "content-length", "0"], true);
        },
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    const block = Buffer.concat([Buffer.from([0x83, 0x86]), literal(":path", "/big"), literal(":authority", "x")]);
    const c = await RawH2Conn.open(port);
    try {
      // stream 1: the client finishes its body after the answer — no RST_STREAM, nothing reaches the handler
      await c.send(frame(HEADERS, END_HEADERS, 1, block));
      assert.ok(await c.waitFor(() => c.headerStreams.has(1)), "answered");
      await sleep(100);
      await c.send(frame(0, 0, 1, new Uint8Array(1000)));
      await c.send(frame(0, END_STREAM, 1, new Uint8Array(10)));
      assert.ok(await c.waitFor(() => conn?.streamCount === 0, 2000), "stream 1 finished");
      // stream 3: the client keeps its request open — stopped with RST_STREAM(NO_ERROR) after the linger
      const t0 = Date.now();
      await c.send(frame(HEADERS, END_HEADERS, 3, block));
      assert.ok(await c.waitFor(() => c.resets.has(3), EARLY_RESPONSE_LINGER_MS * 5), "stream 3 reset");
      assert.ok(Date.now() - t0 >= EARLY_RESPONSE_LINGER_MS - 50, `reset after ${Date.now() - t0} ms`);
      assert.equal(c.resets.get(3), 0); // NO_ERROR
      assert.equal(c.resets.has(1), false);
      assert.equal(c.goaway, undefined);
      assert.equal(delivered, 0);
      assert.equal(ends, 0);
      assert.equal(conn?.streamCount, 0);
    } finally {
      c.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  },
});

Deno.test({
  name: "TLS: a client that never finishes its handshake counts against the connection limit and is closed in time",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await makeTwoLeafDir("h2-tls-");
    const timeouts = { ...FAST, prefaceMs: 2000 };
    const srv = new GrpcServer({ timeouts, maxConnections: 4 });
    srv.addService(KVService as Any, {
      Range: (_call: ServerCall, cb: Any) => cb(null, { header: {}, kvs: [], count: "0" }),
    });
    const port = await srv.listen("127.0.0.1", 0, {
      key: Deno.readTextFileSync(`${dir}/leaf.key`),
      cert: Deno.readTextFileSync(`${dir}/leaf.pem`),
    });
    const creds = grpc.credentials.createSsl(Buffer.from(Deno.readFileSync(`${dir}/ca.pem`)));
    // another client, on its own connection (the first of the 4 allowed) all along
    const kv = new grpcRoot.etcdserverpb.KV(`localhost:${port}`, creds);
    const served = () =>
      new Promise<void>((resolve, reject) =>
        kv.Range({ key: Buffer.from("k") }, (err: Error | null) => err ? reject(err) : resolve())
      );
    /** A TCP connection that sends nothing, not even a ClientHello; `closedAfter` is set once the server closes it. */
    const silent = async () => {
      const sock = net.connect(port, "127.0.0.1");
      const started = Date.now();
      const c = { closedAfter: -1, destroy: () => sock.destroy() };
      sock.on("close", () => c.closedAfter = Date.now() - started);
      sock.on("error", () => {});
      await new Promise((r) => sock.once("connect", r));
      return c;
    };
    const until = async (ok: () => boolean, ms: number) => {
      for (const end = Date.now() + ms; !ok() && Date.now() < end;) await sleep(20);
      return ok();
    };
    try {
      await served();
      const held = await Promise.all([1, 2, 3].map(silent));
      // the limit counts them before any handshake: a fifth connection is closed at once
      const extra = await silent();
      assert.ok(await until(() => extra.closedAfter >= 0, 1000), "the fifth connection was closed");
      assert.ok(held.every((c) => c.closedAfter < 0), "the silent ones are still within their handshake time");
      // and they are closed once the handshake time (the preface timeout) is up
      assert.ok(await until(() => held.every((c) => c.closedAfter >= 0), timeouts.prefaceMs + 3000), "closed");
      for (const c of held) assert.ok(c.closedAfter >= timeouts.prefaceMs - 100, `closed after ${c.closedAfter} ms`);
      await served();
      for (const c of [...held, extra]) c.destroy();
    } finally {
      kv.close();
      srv.forceShutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
