/**
 * The lean HTTP/2 + gRPC transport (server/transport/): HPACK vectors, and a GrpcServer serving etcd's KV,
 * Maintenance and Lease services with small fake handlers, exercised by the @grpc/grpc-js client, the real Go client
 * (etcdctl 3.4 with http:// endpoints, whose :authority is a URL), python3-etcd3's grpc, plain HTTP/1.1 on the same
 * port, and malformed peers that must not disturb other connections.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { KVService, LeaseService, MaintenanceService } from "../proto/mod.ts";
import { grpcRoot } from "../proto/grpc_js.ts";
import { GrpcServer, type ServerCall, Status } from "../server/transport/grpc_server.ts";
import { HpackDecoder, HpackEncoder, huffmanDecode } from "../server/transport/hpack.ts";
import { DATA, FLAG_END_STREAM, FrameWriter, WINDOW_UPDATE } from "../server/transport/h2frames.ts";
import { freePorts } from "./lib/ports.ts";
import { etcdctl, etcdctlBinary } from "./lib/etcdctl.ts";
import { frame, frames, goawayCode, PREFACE, rawExchange } from "./lib/h2raw.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const hex = (h: string) => Uint8Array.from(h.replace(/\s/g, "").match(/../g)!.map((x) => parseInt(x, 16)));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, what: string, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

Deno.test("hpack: RFC 7541 appendix C vectors, Huffman, size updates, encoder round trip", () => {
  assert.equal(huffmanDecode(hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"), 0, 12), "www.example.com");
  assert.equal(huffmanDecode(hex("a8eb 1064 9cbf"), 0, 6), "no-cache");
  // C.4: requests with Huffman coding, sharing one dynamic table
  const d = new HpackDecoder();
  assert.deepEqual(d.decode(hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")), [
    ":method",
    "GET",
    ":scheme",
    "http",
    ":path",
    "/",
    ":authority",
    "www.example.com",
  ]);
  assert.deepEqual(d.decode(hex("8286 84be 5886 a8eb 1064 9cbf")).slice(-4), [
    ":authority",
    "www.example.com",
    "cache-control",
    "no-cache",
  ]);
  assert.deepEqual(d.decode(hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")).slice(-4), [
    ":authority",
    "www.example.com",
    "custom-key",
    "custom-value",
  ]);
  // C.5: responses without Huffman, 256-byte table: the third response evicts entries
  const r = new HpackDecoder(256);
  r.decode(hex(
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
  ));
  assert.deepEqual(r.decode(hex("4803 3330 37c1 c0bf")).slice(0, 2), [":status", "307"]);
  const third = r.decode(hex(
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
  ));
  assert.equal(third[third.length - 1], "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1");
  // a table size update to 0 then an index into the (now empty) dynamic table fails
  const z = new HpackDecoder();
  z.decode(hex("4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"));
  assert.throws(() => z.decode(hex("20be")), /out of range/);
  assert.throws(() => new HpackDecoder().decode(hex("3fe2 1f")), /above the limit/);
  assert.throws(() => new HpackDecoder().decode(hex("00 85 ffff ffff ff 00")), /EOS|padding/);
  assert.throws(() => new HpackDecoder().decode(hex("ff ff ff ff ff ff")), /overflow|truncated/);
  // encoder → decoder round trip, incl. dynamic-table reuse and a table shrink announced by the peer
  const enc = new HpackEncoder();
  const dec = new HpackDecoder();
  const fields = [":status", "200", "content-type", "application/grpc", "grpc-status", "0", "x-long", "v".repeat(300)];
  for (let i = 0; i < 3; i++) assert.deepEqual(dec.decode(enc.encode(fields).slice()), fields);
  assert.ok(enc.encode(fields.slice(0, 6)).length <= 3, "indexed fields take one byte each");
  enc.setPeerTableSize(0);
  assert.deepEqual(dec.decode(enc.encode(fields).slice()), fields);
});

// ---------------------------------------------------------------------------------------------------------------
// fake etcd services

const HEADER = {
  cluster_id: "14841639068965178418",
  member_id: "10276657743932975437",
  revision: "42",
  raft_term: "3",
};
const BIG = Buffer.alloc(1.9 * 1024 * 1024, 7);
for (let i = 0; i < BIG.length; i += 4096) BIG[i] = i & 0xff;
const SNAPSHOT = Buffer.alloc(3 * 1024 * 1024);
for (let i = 0; i < SNAPSHOT.length; i++) SNAPSHOT[i] = (i * 31) & 0xff;

interface Observed {
  cancelled: string[];
  putSizes: number[];
  snapshotBlocked: number;
  snapshotDrains: number;
  authority: string[];
  keepAliveEnded: number;
}

function fakeServices(srv: GrpcServer, seen: Observed): void {
  srv.addService(KVService as Any, {
    Range: (call: ServerCall & { request: Any }, cb: Any) => {
      const key = Buffer.from(call.request.key).toString();
      if (key === "slow") {
        call.on("cancelled", () => seen.cancelled.push("Range"));
        return; // never answers
      }
      if (key === "err") return cb({ code: Status.FAILED_PRECONDITION, details: "etcdserver: bad %thing ü\n" });
      if (key === "throw") throw new Error("handler blew up");
      if (key === "md") {
        return cb(null, {
          header: HEADER,
          kvs: [{ key: Buffer.from("md"), value: Buffer.from(String(call.metadata.get("x-token")[0] ?? "")) }],
          count: "1",
        });
      }
      const value = key === "big" ? BIG : Buffer.from("bar");
      setTimeout(() => {
        cb(null, {
          header: HEADER,
          kvs: [{ key: Buffer.from(key), value, create_revision: "2", mod_revision: "42", version: "1" }],
          count: "1",
        });
      }, key === "later" ? 5 : 0);
    },
    Put: (call: Any, cb: Any) => {
      seen.putSizes.push(call.request.value.length);
      cb(null, { header: { ...HEADER, revision: String(call.request.value.length) } });
    },
  });
  srv.addService(MaintenanceService as Any, {
    Status: (_call: Any, cb: Any) =>
      cb(null, {
        header: HEADER,
        version: "3.4.23",
        dbSize: "20480",
        leader: HEADER.member_id,
        raftIndex: "42",
        raftTerm: "3",
        raftAppliedIndex: "42",
        errors: [],
        dbSizeInUse: "20480",
        isLearner: false,
      }),
    Defragment: (_call: Any, cb: Any) => setTimeout(() => cb(null, { header: HEADER }), 1),
    Snapshot: (call: Any) => {
      const sha = createHash("sha256").update(SNAPSHOT).digest();
      const CHUNK = 32 * 1024;
      let off = 0;
      const pump = () => {
        while (off < SNAPSHOT.length) {
          const end = Math.min(off + CHUNK, SNAPSHOT.length);
          const ok = call.write({
            header: HEADER,
            remaining_bytes: SNAPSHOT.length - end + sha.length,
            blob: SNAPSHOT.subarray(off, end),
          });
          off = end;
          if (!ok) {
            seen.snapshotBlocked++;
            call.once("drain", () => {
              seen.snapshotDrains++;
              pump();
            });
            return;
          }
        }
        call.write({ header: HEADER, remaining_bytes: 0, blob: sha });
        call.end();
      };
      pump();
    },
  });
  srv.addService(LeaseService as Any, {
    LeaseKeepAlive: (call: Any) => {
      call.on("data", (r: Any) => {
        if (r.ID === "4040") {
          return call.destroy({ code: Status.NOT_FOUND, details: "etcdserver: requested lease not found" });
        }
        call.write({ header: HEADER, ID: r.ID, TTL: "60" });
      });
      // (Deno's node:http2 client half-closes before its RST_STREAM on cancel(): answer the half-close late)
      call.on("end", () => {
        seen.keepAliveEnded++;
        setTimeout(() => call.end(), 100);
      });
      call.on("cancelled", () => seen.cancelled.push("LeaseKeepAlive"));
    },
  });
}

async function withServer(
  fn: (port: number, seen: Observed, srv: GrpcServer) => Promise<void>,
  host = "127.0.0.1",
): Promise<void> {
  const srv = new GrpcServer({ maxReceiveMessageLength: 2 * 1024 * 1024 });
  const seen: Observed = {
    cancelled: [],
    putSizes: [],
    snapshotBlocked: 0,
    snapshotDrains: 0,
    authority: [],
    keepAliveEnded: 0,
  };
  fakeServices(srv, seen);
  srv.setHttp1Handler((req, res) => {
    if (req.url === "/health") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ health: "true" }));
      return;
    }
    let body = "";
    req.on("data", (c) => body += c);
    req.on("end", () => {
      res.statusCode = 200;
      res.end(`${req.method} ${req.url} ${body}`);
    });
  });
  const [port] = await freePorts(1);
  await srv.listen(host, port);
  try {
    await fn(port, seen, srv);
  } finally {
    srv.forceShutdown();
  }
}

function kvClient(port: number, opts: Record<string, unknown> = {}): Any {
  return new grpcRoot.etcdserverpb.KV(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), opts);
}

function unary(client: Any, method: string, req: unknown, md?: grpc.Metadata): Promise<Any> {
  return new Promise((resolve, reject) => {
    const cb = (err: Error | null, resp: unknown) => (err ? reject(err) : resolve(resp));
    if (md) client[method](req, md, cb);
    else client[method](req, cb);
  });
}

// ---------------------------------------------------------------------------------------------------------------

// grpc-js keeps channel timers and sockets that outlive client.close() by a tick.
Deno.test("FrameWriter: a stream's DATA of one turn shares frames, within the frame size, until another frame", () => {
  const written: Uint8Array[] = [];
  const socket = {
    destroyed: false,
    writableEnded: false,
    writableLength: 0,
    write(chunk: Uint8Array, cb?: (err?: Error | null) => void) {
      written.push(Uint8Array.from(chunk));
      cb?.(null);
      return true;
    },
  };
  const w = new FrameWriter(socket as never);
  const data = (sid: number, bytes: number[]) => {
    const more = w.extendData(sid, bytes.length, 10);
    const at = more >= 0 ? more : w.frame(bytes.length, DATA, 0, sid); // either may replace w.out
    w.out.set(bytes, at);
  };
  /** [type, flags, stream, payload] of every frame in a written chunk */
  const frames = (b: Uint8Array) => {
    const out: Array<[number, number, number, number[]]> = [];
    for (let p = 0; p < b.length;) {
      const len = (b[p] << 16) | (b[p + 1] << 8) | b[p + 2];
      const sid = ((b[p + 5] & 0x7f) << 24) | (b[p + 6] << 16) | (b[p + 7] << 8) | b[p + 8];
      out.push([b[p + 3], b[p + 4], sid, [...b.subarray(p + 9, p + 9 + len)]]);
      p += 9 + len;
    }
    return out;
  };
  data(1, [1, 2, 3]);
  data(1, [4, 5]); // same stream: the same frame
  data(3, [6]); // another stream: a frame of its own
  data(3, [7, 8, 9, 10, 11, 12, 13, 14, 15]); // 1 + 9 = 10: still within the limit
  data(3, [16]); // 11 would exceed it
  w.windowUpdate(0, 5);
  data(3, [17]); // after another frame: a new one
  w.frame(1, DATA, FLAG_END_STREAM, 5);
  assert.equal(w.extendData(5, 1, 10), -1); // a frame that ended its stream stays as it is
  w.out[w.len - 1] = 18;
  assert.ok(w.flush());
  data(3, [19]); // nothing carries over a flush
  w.flush();
  assert.deepEqual(frames(written[0]), [
    [DATA, 0, 1, [1, 2, 3, 4, 5]],
    [DATA, 0, 3, [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]],
    [DATA, 0, 3, [16]],
    [WINDOW_UPDATE, 0, 0, [0, 0, 0, 5]],
    [DATA, 0, 3, [17]],
    [DATA, FLAG_END_STREAM, 5, [18]],
  ]);
  assert.deepEqual(frames(written[1]), [[DATA, 0, 3, [19]]]);
});

Deno.test({
  name: "GrpcServer with the @grpc/grpc-js client",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    await withServer(async (port, seen) => {
      const kv = kvClient(port);
      const maint = new grpcRoot.etcdserverpb.Maintenance(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      const lease = new grpcRoot.etcdserverpb.Lease(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      try {
        await t.step("unary call, many concurrent calls, metadata", async () => {
          const r = await unary(kv, "Range", { key: Buffer.from("foo") });
          assert.equal(r.kvs[0].value.toString(), "bar");
          assert.equal(r.header.cluster_id, HEADER.cluster_id);
          const many = await Promise.all(
            Array.from({ length: 500 }, (_, i) => unary(kv, "Range", { key: Buffer.from(i % 2 ? `k${i}` : "later") })),
          );
          many.forEach((x, i) => assert.equal(x.kvs[0].key.toString(), i % 2 ? `k${i}` : "later"));
          const md = new grpc.Metadata();
          md.set("x-token", "s3cret");
          assert.equal((await unary(kv, "Range", { key: Buffer.from("md") }, md)).kvs[0].value.toString(), "s3cret");
        });

        await t.step("errors: code and message round-trip; unknown method/service; a throwing handler", async () => {
          await assert.rejects(unary(kv, "Range", { key: Buffer.from("err") }), (e: Any) => {
            assert.equal(e.code, Status.FAILED_PRECONDITION);
            assert.equal(e.details, "etcdserver: bad %thing ü\n");
            return true;
          });
          await assert.rejects(unary(kv, "Compact", { revision: "1" }), (e: Any) => {
            assert.equal(e.code, Status.UNIMPLEMENTED);
            assert.match(e.details, /unknown method Compact for service etcdserverpb.KV/);
            return true;
          });
          const cluster = new grpcRoot.etcdserverpb.Cluster(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
          await assert.rejects(unary(cluster, "MemberList", {}), (e: Any) => {
            assert.equal(e.code, Status.UNIMPLEMENTED);
            assert.equal(e.details, "unknown service etcdserverpb.Cluster");
            return true;
          });
          cluster.close();
          await assert.rejects(unary(kv, "Range", { key: Buffer.from("throw") }), (e: Any) => {
            assert.equal(e.code, Status.UNKNOWN);
            assert.match(e.details, /handler blew up/);
            return true;
          });
          // the connection is still fine
          assert.equal((await unary(kv, "Range", { key: Buffer.from("foo") })).kvs[0].value.toString(), "bar");
        });

        await t.step("gzip-compressed requests; undecodable protobuf → INTERNAL", async () => {
          const gz = kvClient(port, { "grpc.default_compression_algorithm": 2 });
          try {
            const put = await unary(gz, "Put", { key: Buffer.from("z"), value: Buffer.alloc(100000, 1) });
            assert.equal(put.header.revision, "100000");
          } finally {
            gz.close();
          }
          const raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
          try {
            const err = await new Promise<Any>((resolve) => {
              raw.makeUnaryRequest(
                "/etcdserverpb.KV/Range",
                (x: Buffer) => x,
                (x: Buffer) => x,
                Buffer.from([0x0a, 0xff, 0xff, 0xff]), // field 1, length varint runs off the end
                (e) => resolve(e),
              );
            });
            assert.equal(err.code, Status.INTERNAL);
            assert.match(err.details, /unmarshalling request/);
          } finally {
            raw.close();
          }
        });

        await t.step("1.9 MiB messages both ways across flow-control windows; over the limit", async () => {
          const put = await unary(kv, "Put", { key: Buffer.from("big"), value: BIG });
          assert.equal(put.header.revision, String(BIG.length));
          assert.equal(seen.putSizes.at(-1), BIG.length);
          const [a, b] = await Promise.all([
            unary(kv, "Range", { key: Buffer.from("big") }),
            unary(kv, "Range", { key: Buffer.from("big") }),
          ]);
          assert.ok(Buffer.from(a.kvs[0].value).equals(BIG));
          assert.ok(Buffer.from(b.kvs[0].value).equals(BIG));
          await assert.rejects(
            unary(kv, "Put", { key: Buffer.from("huge"), value: Buffer.alloc(2.5 * 1024 * 1024) }),
            (e: Any) => {
              assert.equal(e.code, Status.RESOURCE_EXHAUSTED);
              assert.match(e.details, /received message larger than max \(\d+ vs\. 2097152\)/);
              return true;
            },
          );
          assert.equal((await unary(kv, "Range", { key: Buffer.from("foo") })).kvs[0].value.toString(), "bar");
        });

        await t.step("server streaming: a 3 MiB snapshot in 32 KiB messages with write() backpressure", async () => {
          const parts: Buffer[] = [];
          await new Promise<void>((resolve, reject) => {
            const call = maint.Snapshot({});
            call.on("data", (r: Any) => parts.push(Buffer.from(r.blob)));
            call.on("error", reject);
            call.on("end", resolve);
          });
          const all = Buffer.concat(parts);
          assert.equal(all.length, SNAPSHOT.length + 32);
          assert.ok(all.subarray(0, SNAPSHOT.length).equals(SNAPSHOT));
          assert.ok(all.subarray(SNAPSHOT.length).equals(createHash("sha256").update(SNAPSHOT).digest()));
          assert.ok(seen.snapshotBlocked > 0, "write() returned false at least once");
          assert.equal(seen.snapshotDrains, seen.snapshotBlocked);
        });

        await t.step("bidi: 1000 messages each way, half-close, then an error status via destroy()", async () => {
          const got: string[] = [];
          const status = await new Promise<Any>((resolve, reject) => {
            const call = lease.LeaseKeepAlive();
            call.on("data", (r: Any) => got.push(r.ID));
            call.on("error", reject);
            call.on("status", resolve);
            for (let i = 1; i <= 1000; i++) call.write({ ID: String(i) });
            call.end();
          });
          assert.equal(status.code, Status.OK);
          assert.equal(got.length, 1000);
          assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => String(i + 1)));
          assert.equal(seen.keepAliveEnded, 1);
          const err = await new Promise<Any>((resolve) => {
            const call = lease.LeaseKeepAlive();
            call.on("data", () => {});
            call.on("error", resolve);
            call.write({ ID: "1" });
            call.write({ ID: "4040" });
          });
          assert.equal(err.code, Status.NOT_FOUND);
          assert.equal(err.details, "etcdserver: requested lease not found");
        });

        await t.step("cancellation: client cancels a pending unary call and an open bidi stream", async () => {
          const before = seen.cancelled.length;
          const call = kv.Range({ key: Buffer.from("slow") }, () => {});
          await sleep(50);
          call.cancel();
          const stream = lease.LeaseKeepAlive();
          stream.on("error", () => {});
          stream.on("data", () => {});
          stream.write({ ID: "5" });
          await sleep(50);
          stream.cancel();
          await until(() => seen.cancelled.length >= before + 2, `cancelled events (${seen.cancelled.slice(before)})`);
          assert.deepEqual(seen.cancelled.slice(before).sort(), ["LeaseKeepAlive", "Range"]);
        });
      } finally {
        kv.close();
        maint.close();
        lease.close();
      }
    });
  },
});

Deno.test({
  name: "GrpcServer with etcdctl 3.4 (Go client, :authority is the http:// URL)",
  ignore: !(() => {
    try {
      return Deno.statSync(etcdctlBinary).isFile;
    } catch {
      return false;
    }
  })(),
  fn: async (t) => {
    await withServer(async (port) => {
      const ep = `http://127.0.0.1:${port}`;
      await t.step("endpoint status", async () => {
        const r = await etcdctl(ep, ["endpoint", "status", "-w", "json"]);
        assert.equal(r.code, 0, r.stderr);
        const st = JSON.parse(r.stdout)[0];
        assert.equal(st.Endpoint, ep);
        assert.equal(st.Status.version, "3.4.23");
        assert.equal(String(st.Status.header.revision), "42");
        assert.equal(st.Status.raftTerm, 3);
      });
      await t.step("defrag", async () => {
        const r = await etcdctl(ep, ["defrag"]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /Finished defragmenting etcd member\[http:\/\/127\.0\.0\.1:\d+\]/);
      });
      await t.step("get foo, put", async () => {
        const r = await etcdctl(ep, ["get", "foo"]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "foo\nbar\n");
        const p = await etcdctl(ep, ["put", "k", "12345"]);
        assert.equal(p.code, 0, p.stderr);
        assert.equal(p.stdout, "OK\n");
        const e = await etcdctl(ep, ["get", "err"]);
        assert.notEqual(e.code, 0);
        assert.match(e.stderr, /etcdserver: bad %thing ü/);
      });
      await t.step("lease keep-alive --once (bidi), snapshot save (server streaming)", async () => {
        const k = await etcdctl(ep, ["lease", "keep-alive", "--once", "1234"]);
        assert.equal(k.code, 0, k.stderr);
        assert.match(k.stdout, /lease 0*1234 keepalived with TTL\(60\)/);
        const dir = await Deno.makeTempDir();
        try {
          const s = await etcdctl(ep, ["snapshot", "save", `${dir}/snap.db`]);
          assert.equal(s.code, 0, s.stderr);
          assert.ok((await Deno.readFile(`${dir}/snap.db`)).length >= SNAPSHOT.length);
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      });
    });
  },
});

Deno.test({
  name: "GrpcServer with python3-etcd3 (grpc C core)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (port) => {
      const script = `
import etcd3, sys
c = etcd3.client(host="127.0.0.1", port=${port})
v, meta = c.get("foo")
assert v == b"bar", v
assert c.put("k", b"x" * 100000).header.revision == 100000
v, meta = c.get("big")
assert len(v) == ${BIG.length}
try:
    c.get("err")
    raise SystemExit("no error")
except Exception as e:
    print("error:", e)
print("ok")
`;
      const out = await new Deno.Command("/usr/bin/python3", { args: ["-c", script], stdout: "piped", stderr: "piped" })
        .output();
      const stdout = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr) + stdout);
      assert.match(stdout, /ok\n$/);
    });
  },
});

Deno.test({
  name: "GrpcServer.close() lets open calls finish, then refuses connections",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = new GrpcServer();
    let release: (() => void) | undefined;
    srv.addService(KVService as Any, {
      Range: (_call: Any, cb: Any) => {
        release = () => cb(null, { header: HEADER, kvs: [], count: "0" });
      },
    });
    const [port] = await freePorts(1);
    await srv.listen("127.0.0.1", port);
    const kv = kvClient(port);
    try {
      const pending = unary(kv, "Range", { key: Buffer.from("a") });
      await until(() => release !== undefined, "the call to arrive");
      let closed = false;
      const closing = srv.close().then(() => closed = true);
      await sleep(100);
      assert.equal(closed, false, "close() waits for the open call");
      release!();
      assert.equal((await pending).count, "0");
      await closing;
      assert.equal(srv.connectionCount, 0);
      await assert.rejects(
        new Promise((resolve, reject) => {
          const s = net.connect(port, "127.0.0.1");
          s.on("connect", () => {
            s.destroy();
            resolve(undefined);
          });
          s.on("error", reject);
        }),
      );
    } finally {
      kv.close();
      srv.forceShutdown();
    }
  },
});

Deno.test("GrpcServer serves HTTP/1.1 on the same port (localhost binds IPv4 and IPv6)", async () => {
  await withServer(async (port) => {
    const r = await fetch(`http://127.0.0.1:${port}/health`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { health: "true" });
    const p = await fetch(`http://localhost:${port}/v3/kv/range`, { method: "POST", body: '{"key":"Zm9v"}' });
    assert.equal(await p.text(), 'POST /v3/kv/range {"key":"Zm9v"}');
    let v6 = true;
    try {
      const r6 = await fetch(`http://[::1]:${port}/health`);
      assert.equal(r6.status, 200);
      await r6.body?.cancel();
    } catch {
      v6 = false; // no IPv6 loopback in this environment
    }
    console.log(`  IPv6 loopback ${v6 ? "served" : "unavailable"}`);
  }, "localhost");
  // default handler: 404
  const srv = new GrpcServer();
  const [port] = await freePorts(1);
  await srv.listen("127.0.0.1", port);
  try {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(r.status, 404);
    await r.body?.cancel();
  } finally {
    srv.forceShutdown();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// malformed peers

Deno.test({
  name: "malformed peers get GOAWAY/RST and do not disturb other connections",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    await withServer(async (port) => {
      const kv = kvClient(port);
      const lease = new grpcRoot.etcdserverpb.Lease(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      // a long-lived bidi stream on a healthy connection, used between the attacks
      const acks: string[] = [];
      const stream = lease.LeaseKeepAlive();
      stream.on("data", (r: Any) => acks.push(r.ID));
      stream.on("error", () => {});
      const ping = async (id: string) => {
        stream.write({ ID: id });
        await until(() => acks.includes(id), `keepalive ${id}`);
        assert.equal((await unary(kv, "Range", { key: Buffer.from("foo") })).kvs[0].value.toString(), "bar");
      };
      const settings = frame(4, 0, 0);
      try {
        await ping("1");
        await t.step(
          "PING and SETTINGS are acknowledged; a HEADERS block with bad HPACK → COMPRESSION_ERROR",
          async () => {
            const res = await rawExchange(port, [
              Buffer.from(PREFACE),
              settings,
              frame(6, 0, 0, Buffer.from("12345678")),
              frame(1, 0x5, 1, hex("ffffffffff")),
            ]);
            const fs = frames(res);
            assert.ok(fs.some((f) => f[0] === 4 && f[1] === 1), "SETTINGS ACK");
            assert.ok(fs.some((f) => f[0] === 6 && f[1] === 1 && f[3].toString() === "12345678"), "PING ACK");
            assert.equal(goawayCode(res), 0x9);
          },
        );
        await ping("2");
        await t.step("garbage bytes get an HTTP/1.1 400", async () => {
          const res = await rawExchange(port, [Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a])]);
          assert.match(res.toString("latin1"), /^HTTP\/1\.1 400/);
        });
        await ping("3");
        await t.step("a truncated preface, then silence and close", async () => {
          const res = await rawExchange(port, [Buffer.from(PREFACE.slice(0, 10))], 300);
          assert.equal(res.length, 0);
        });
        await ping("4");
        await t.step(
          "bogus frames: DATA on stream 0, oversized frame, CONTINUATION out of place, bad preface",
          async () => {
            assert.equal(goawayCode(await rawExchange(port, [Buffer.from(PREFACE), settings, frame(0, 0, 0)])), 0x1);
            const big = frame(0, 0, 1, new Uint8Array(20000));
            assert.equal(goawayCode(await rawExchange(port, [Buffer.from(PREFACE), settings, big])), 0x6);
            assert.equal(goawayCode(await rawExchange(port, [Buffer.from(PREFACE), settings, frame(9, 4, 1)])), 0x1);
            assert.equal(
              goawayCode(await rawExchange(port, [Buffer.from(PREFACE), frame(6, 0, 0, new Uint8Array(8))])),
              0x1,
            );
            assert.equal(
              goawayCode(await rawExchange(port, [Buffer.from(PREFACE), settings, frame(8, 0, 0, hex("00000000"))])),
              0x1,
            );
          },
        );
        await ping("5");
        await t.step("stream-level errors reset only that stream", async () => {
          // HEADERS without :path → RST_STREAM PROTOCOL_ERROR; then a valid call on the same connection
          const enc = new HpackEncoder();
          const bad = enc.encode([":method", "POST", ":scheme", "http"]).slice();
          const good = enc.encode([
            ":method",
            "POST",
            ":scheme",
            "http",
            ":path",
            "/etcdserverpb.KV/Range",
            ":authority",
            "http://127.0.0.1:1",
            "content-type",
            "application/grpc",
            "te",
            "trailers",
          ]).slice();
          const msg = Buffer.from([0, 0, 0, 0, 5, 0x0a, 3, 0x66, 0x6f, 0x6f]); // RangeRequest{key:"foo"}
          const res = await rawExchange(port, [
            Buffer.from(PREFACE),
            settings,
            frame(1, 0x5, 1, bad),
            frame(1, 0x4, 3, good),
            frame(0, 0x1, 3, msg),
          ], 500);
          const fs = frames(res);
          const rst = fs.find((f) => f[0] === 3 && f[2] === 1);
          assert.ok(rst, "RST_STREAM on stream 1");
          assert.equal(rst[3].readUInt32BE(0), 0x1);
          const dec = new HpackDecoder();
          const hdrs = fs.filter((f) => f[0] === 1 && f[2] === 3).map((f) => dec.decode(f[3]));
          assert.equal(hdrs.length, 2, "headers and trailers on stream 3");
          assert.deepEqual(hdrs[0].slice(0, 2), [":status", "200"]);
          assert.deepEqual(hdrs[1], ["grpc-status", "0"]);
          assert.ok(fs.some((f) => f[0] === 0 && f[2] === 3 && f[3].includes(Buffer.from("bar"))), "response DATA");
          assert.equal(goawayCode(res), undefined);
        });
        await ping("6");
      } finally {
        stream.end();
        kv.close();
        lease.close();
      }
    });
  },
});
