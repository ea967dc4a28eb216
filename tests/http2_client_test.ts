/**
 * The lean HTTP/2 + gRPC client (server/transport/http2_client.ts) against our GrpcServer: a client stream of 10,000
 * messages (some of 2 MiB) across small flow-control windows, unary calls with status mapping and deadlines, servers
 * going away (forced and graceful) and unreachable ones; then a real 3-member cluster whose peers talk through it.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { KVService, LeaseService } from "../proto/mod.ts";
import { GrpcServer, type MethodDefinition, type ServerCall, Status } from "../server/transport/grpc_server.ts";
import { GrpcClient, GrpcError } from "../server/transport/http2_client.ts";
import { freePorts } from "./lib/ports.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const identity = (b: unknown) => b as Buffer;

function method(path: string, requestStream: boolean): MethodDefinition {
  return {
    path,
    requestStream,
    responseStream: false,
    requestDeserialize: identity,
    responseSerialize: identity as (v: unknown) => Buffer,
  };
}

const TestService = {
  Collect: method("/test.T/Collect", true),
  Echo: method("/test.T/Echo", false),
  Fail: method("/test.T/Fail", false),
  Hang: method("/test.T/Hang", false),
  Meta: method("/test.T/Meta", false),
};

interface Started {
  server: GrpcServer;
  port: number;
  collected: { count: number; bytes: number };
  hung: ServerCall[];
}

async function startServer(windows?: { stream: number; conn: number }): Promise<Started> {
  const server = new GrpcServer({
    maxReceiveMessageLength: 8 << 20,
    initialWindowSize: windows?.stream,
    connectionWindowSize: windows?.conn,
  });
  const collected = { count: 0, bytes: 0 };
  const hung: ServerCall[] = [];
  server.addService(TestService as Any, {
    Collect: (call: ServerCall, cb: Any) => {
      const h = createHash("sha256");
      let count = 0;
      let bytes = 0;
      call.on("data", (m: Buffer) => {
        h.update(m);
        count++;
        bytes += m.length;
        collected.count = count;
        collected.bytes = bytes;
      });
      call.on("end", () => cb(null, Buffer.from(`${count} ${bytes} ${h.digest("hex")}`)));
    },
    Echo: (call: ServerCall, cb: Any) => cb(null, call.request),
    Fail: (call: ServerCall, cb: Any) => {
      const req = String(call.request);
      cb({ code: Number(req.split(" ")[0]), details: req.slice(req.indexOf(" ") + 1), metadata: null });
    },
    Hang: (call: ServerCall) => void hung.push(call),
    Meta: (call: ServerCall, cb: Any) => {
      const md = call.metadata;
      cb(
        null,
        Buffer.from(JSON.stringify({ a: md.get("x-a"), bin: (md.get("x-b-bin")[0] as Buffer).toString("hex") })),
      );
    },
  });
  const [port] = await freePorts(1);
  await server.listen("127.0.0.1", port);
  return { server, port, collected, hung };
}

async function rejects(p: Promise<unknown>, code: number, detailsRe?: RegExp): Promise<GrpcError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GrpcError, `expected a GrpcError, got ${err}`);
    assert.equal(err.code, code, `code ${err.code} (${err.details}), expected ${code}`);
    if (detailsRe) assert.match(err.details, detailsRe);
    return err;
  }
  throw new Error("expected a rejection");
}

/** Deterministic message i: mostly small, every 1000th 2 MiB, a few empty. */
function message(i: number): Buffer {
  const len = i % 1000 === 500 ? 2 << 20 : i % 997 === 0 ? 0 : 1 + (i * 7919) % 3000;
  const b = Buffer.allocUnsafe(len);
  for (let j = 0; j < len; j += 4096) b[j] = (i + j) & 0xff;
  if (len > 0) b[len - 1] = i & 0xff;
  return b;
}

async function streamMessages(client: GrpcClient, n: number): Promise<{ reply: string; written: number }> {
  const call = client.clientStream("/test.T/Collect", { "x-test": "1" });
  const expect = createHash("sha256");
  let total = 0;
  let written = 0;
  const result = new Promise<string>((resolve, reject) => {
    call.on("response", (b: Buffer) => resolve(b.toString()));
    call.on("error", reject);
    call.on("close", () => setTimeout(() => reject(new Error("closed without a response")), 100));
  });
  for (let i = 0; i < n; i++) {
    const m = message(i);
    expect.update(m);
    total += m.length;
    const ok = call.write(m, (err) => {
      assert.equal(err, null);
      written++;
    });
    // the caller may reuse its buffer after write()
    m.fill(0xee);
    if (!ok) await new Promise<void>((r) => call.once("drain", () => r()));
  }
  call.end();
  const reply = await result;
  assert.equal(reply, `${n} ${total} ${expect.digest("hex")}`);
  return { reply, written };
}

Deno.test("http2 client: a client stream of 10,000 messages incl. 2 MiB ones across flow-control windows", async () => {
  // default server windows (1 MiB stream / 16 MiB connection), then the protocol minimum (64 KiB both)
  for (const windows of [undefined, { stream: 65535, conn: 65535 }]) {
    const s = await startServer(windows);
    const client = new GrpcClient(`127.0.0.1:${s.port}`);
    try {
      const { written } = await streamMessages(client, 10_000);
      await sleep(10);
      assert.equal(written, 10_000, "every write callback ran");
      // two streams at once on one connection share the connection window
      await Promise.all([streamMessages(client, 1500), streamMessages(client, 1500)]);
      assert.equal(client.closed, false);
    } finally {
      client.destroy();
      s.server.forceShutdown();
    }
  }
});

Deno.test("http2 client: unary calls, status mapping, metadata, deadlines", async () => {
  const s = await startServer();
  const client = new GrpcClient(`127.0.0.1:${s.port}`);
  try {
    assert.equal(Buffer.from(await client.unary("/test.T/Echo", Buffer.from("hello"))).toString(), "hello");
    assert.equal((await client.unary("/test.T/Echo", new Uint8Array(0))).length, 0);
    const big = Buffer.alloc(3 << 20, 7);
    assert.ok(Buffer.from(await client.unary("/test.T/Echo", big)).equals(big));
    // many concurrent calls
    const answers = await Promise.all(
      Array.from({ length: 500 }, (_, i) => client.unary("/test.T/Echo", Buffer.from(String(i)))),
    );
    answers.forEach((a, i) => assert.equal(Buffer.from(a).toString(), String(i)));
    const md = JSON.parse(
      Buffer.from(
        await client.unary("/test.T/Meta", Buffer.alloc(0), { "X-A": ["1", "2"], "x-b-bin": Buffer.from([1, 2, 255]) }),
      )
        .toString(),
    );
    assert.deepEqual(md, { a: ["1", "2"], bin: "0102ff" });

    const e1 = await rejects(
      client.unary("/test.T/Fail", Buffer.from("9 cluster ID mismatch: ünïcode % 100")),
      Status.FAILED_PRECONDITION,
    );
    assert.equal(e1.details, "cluster ID mismatch: ünïcode % 100");
    assert.equal(e1.message, "9 FAILED_PRECONDITION: cluster ID mismatch: ünïcode % 100");
    await rejects(client.unary("/test.T/Fail", Buffer.from("14 try again")), Status.UNAVAILABLE, /^try again$/);
    await rejects(client.unary("/test.T/Nope", Buffer.from("x")), Status.UNIMPLEMENTED, /unknown method Nope/);
    await rejects(client.unary("/nope.S/X", Buffer.from("x")), Status.UNIMPLEMENTED, /unknown service nope\.S/);
    // a message over the server's limit
    await rejects(client.unary("/test.T/Echo", Buffer.alloc(9 << 20)), Status.RESOURCE_EXHAUSTED);
    // deadline: the handler never answers
    const t0 = Date.now();
    await rejects(client.unary("/test.T/Hang", Buffer.from("x"), undefined, 200), Status.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - t0 >= 190);
    // a client-stream to a unary-failing path reports 'error' then 'close'
    const call = client.clientStream("/test.T/Nope");
    const events: string[] = [];
    await new Promise<void>((resolve) => {
      call.on("error", (e: GrpcError) => events.push(`error ${e.code}`));
      call.on("close", () => resolve());
    });
    assert.deepEqual(events, [`error ${Status.UNIMPLEMENTED}`]);
    // the connection still works after all that
    assert.equal(Buffer.from(await client.unary("/test.T/Echo", Buffer.from("ok"))).toString(), "ok");
    assert.equal(client.closed, false);
  } finally {
    client.destroy();
    s.server.forceShutdown();
  }
});

Deno.test("http2 client: a server going away closes streams and rejects calls", async () => {
  // forced: the socket is destroyed under an open client stream and a pending unary call
  {
    const s = await startServer();
    const client = new GrpcClient(`127.0.0.1:${s.port}`);
    let closeReason = "";
    client.on("close", (r: string) => closeReason = r);
    const call = client.clientStream("/test.T/Collect");
    const ended = new Promise<string[]>((resolve) => {
      const ev: string[] = [];
      call.on("error", (e: GrpcError) => ev.push(`error ${e.code}`));
      call.on("close", () => resolve(ev));
    });
    for (let i = 0; i < 100; i++) call.write(message(i));
    const pending = client.unary("/test.T/Hang", Buffer.from("x"));
    while (s.collected.count < 100 || s.hung.length === 0) await sleep(5);
    s.server.forceShutdown();
    assert.deepEqual(await ended, [`error ${Status.UNAVAILABLE}`]);
    await rejects(pending, Status.UNAVAILABLE, /connection lost/);
    assert.equal(client.closed, true);
    await rejects(client.unary("/test.T/Echo", Buffer.from("x")), Status.UNAVAILABLE);
    let cbErr: Error | null = null;
    assert.equal(call.write(Buffer.from("late"), (e) => cbErr = e), false);
    await sleep(1);
    assert.ok(cbErr);
    while (!closeReason) await sleep(5);
    client.destroy();
  }
  // graceful: GOAWAY; the open call finishes, new calls are refused, then the connection closes
  {
    const s = await startServer();
    const client = new GrpcClient(`127.0.0.1:${s.port}`);
    let goaway = false;
    const closed = new Promise<void>((r) => client.on("close", () => r()));
    client.on("goaway", () => goaway = true);
    const call = client.clientStream("/test.T/Collect");
    const reply = new Promise<string>((resolve, reject) => {
      call.on("response", (b: Buffer) => resolve(b.toString()));
      call.on("error", reject);
    });
    call.write(Buffer.from("a"));
    while (s.collected.count < 1) await sleep(5);
    const closing = s.server.close();
    while (!goaway) await sleep(5);
    assert.equal(client.closed, true);
    await rejects(client.unary("/test.T/Echo", Buffer.from("x")), Status.UNAVAILABLE);
    call.write(Buffer.from("bc"));
    call.end();
    assert.match(await reply, /^2 3 /);
    await closing;
    await closed;
    client.destroy();
  }
  // nothing listening: calls fail with UNAVAILABLE and the reason
  {
    const [port] = await freePorts(1);
    const client = new GrpcClient(`127.0.0.1:${port}`);
    const e = await rejects(client.unary("/test.T/Echo", Buffer.from("x"), undefined, 2000), Status.UNAVAILABLE);
    assert.match(e.details, /ECONNREFUSED|refused|connection/i);
    const call = client.clientStream("/test.T/Collect");
    const ev = await new Promise<string[]>((resolve) => {
      const got: string[] = [];
      call.on("error", (er: GrpcError) => got.push(`error ${er.code}`));
      call.on("close", () => resolve(got));
    });
    assert.deepEqual(ev, [`error ${Status.UNAVAILABLE}`]);
    client.destroy();
  }
});

// ---------------------------------------------------------------------------------------------------------------------
// a real 3-member cluster: Raft traffic and lease questions go through the client

const repo = new URL("../", import.meta.url).pathname;

interface Member {
  name: string;
  client: string;
  proc: Deno.ChildProcess;
  out: () => string;
  status: Promise<Deno.CommandStatus>;
}

async function startCluster(): Promise<{ members: Member[]; dirs: string[] }> {
  const ports = await freePorts(6);
  const names = ["m1", "m2", "m3"];
  const peer = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
  const initial = names.map((n, i) => `${n}=${peer(i)}`).join(",");
  const dirs: string[] = [];
  const members: Member[] = [];
  for (let i = 0; i < 3; i++) {
    const dir = await Deno.makeTempDir({ prefix: "egh2c-" });
    dirs.push(dir);
    const client = `http://127.0.0.1:${ports[2 * i]}`;
    const args = [
      "--name",
      names[i],
      "--data-dir",
      dir,
      "--listen-client-urls",
      client,
      "--advertise-client-urls",
      client,
      "--listen-peer-urls",
      peer(i),
      "--initial-advertise-peer-urls",
      peer(i),
      "--initial-cluster",
      initial,
      "--initial-cluster-token",
      "h2c-test",
    ];
    const proc = new Deno.Command(`${repo}scripts/etcd`, { args, stdout: "piped", stderr: "piped", stdin: "null" })
      .spawn();
    let out = "";
    const pump = async (s: ReadableStream<Uint8Array>) => {
      const dec = new TextDecoder();
      for await (const c of s) out += dec.decode(c, { stream: true });
    };
    const pumps = Promise.all([pump(proc.stdout), pump(proc.stderr)]);
    const status = proc.status.then(async (st) => {
      await pumps;
      return st;
    });
    members.push({ name: names[i], client: `127.0.0.1:${ports[2 * i]}`, proc, out: () => out, status });
  }
  return { members, dirs };
}

const kvPut = KVService.Put as Any;
const kvRange = KVService.Range as Any;

Deno.test({
  name: "http2 client: a 3-member cluster replicates through it (put via one member, get via another)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { members, dirs } = await startCluster();
    const clients: GrpcClient[] = [];
    try {
      const deadline = Date.now() + 60_000;
      while (!members.every((m) => /published/.test(m.out()))) {
        if (Date.now() > deadline) throw new Error(`cluster not ready:\n${members.map((m) => m.out()).join("\n")}`);
        await sleep(50);
      }
      const c1 = new GrpcClient(members[0].client);
      const c2 = new GrpcClient(members[1].client);
      const c3 = new GrpcClient(members[2].client);
      clients.push(c1, c2, c3);
      for (let i = 0; i < 20; i++) {
        const putReq = kvPut.requestSerialize({ key: Buffer.from(`k${i}`), value: Buffer.from(`v${i}`) });
        const putRes = kvPut.responseDeserialize(Buffer.from(await c1.unary(kvPut.path, putReq, undefined, 10_000)));
        assert.ok(Number(putRes.header.revision) >= i + 2);
        // linearizable get through another member (a follower asks the leader for a read index over the peers)
        const via = i % 2 === 0 ? c2 : c3;
        const rangeReq = kvRange.requestSerialize({ key: Buffer.from(`k${i}`) });
        const r = kvRange.responseDeserialize(Buffer.from(await via.unary(kvRange.path, rangeReq, undefined, 10_000)));
        assert.equal(r.kvs.length, 1);
        assert.equal(Buffer.from(r.kvs[0].value).toString(), `v${i}`);
      }
      // lease questions asked on followers go to the leader through the peer transport's unary Lease call
      const grant = LeaseService.LeaseGrant as Any;
      const ttl = LeaseService.LeaseTimeToLive as Any;
      const g = grant.responseDeserialize(
        Buffer.from(await c1.unary(grant.path, grant.requestSerialize({ TTL: 60 }), undefined, 10_000)),
      );
      for (const c of [c1, c2, c3]) {
        const t = ttl.responseDeserialize(
          Buffer.from(await c.unary(ttl.path, ttl.requestSerialize({ ID: g.ID }), undefined, 10_000)),
        );
        assert.equal(String(t.ID), String(g.ID));
        assert.ok(Number(t.TTL) > 50 && Number(t.TTL) <= 60, `TTL ${t.TTL}`);
      }
    } finally {
      for (const c of clients) c.destroy();
      for (const m of members) {
        try {
          m.proc.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await Promise.all(members.map((m) => m.status));
      for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
});
