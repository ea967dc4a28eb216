/** Tests for the protobuf wire contract in proto/. */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { DESCRIPTOR_FILE, renderDescriptor } from "../scripts/gen_descriptor.ts";
import { decodeInternal, encodeInternal, KVService, pbRoot, type RangeRequest } from "../proto/mod.ts";
import { grpcRoot } from "../proto/grpc_js.ts";
import { freePorts } from "./lib/ports.ts";

Deno.test("proto/descriptor.ts is up to date with proto/**/*.proto", () => {
  const fresh = renderDescriptor();
  const committed = readFileSync(DESCRIPTOR_FILE, "utf8");
  assert.ok(fresh === committed, "proto/descriptor.ts is stale: run `deno run -A scripts/gen_descriptor.ts`");
});

const ETCD_SRC = "/usr/share/gocode/src/go.etcd.io/etcd";
const UPSTREAM = ["etcdserver/etcdserverpb/rpc.proto", "mvcc/mvccpb/kv.proto", "auth/authpb/auth.proto"]
  .map((p) => `${ETCD_SRC}/${p}`);

/** Parses etcd's own .proto files after removing gogoproto / google.api imports and options. */
function loadUpstream(): protobuf.Root {
  const root = new protobuf.Root();
  for (const file of UPSTREAM) {
    const text = readFileSync(file, "utf8")
      .replace(/^import .*;$/gm, "")
      .replace(/option \(google\.api\.http\) = \{[\s\S]*?\n\s*\};/g, "")
      .replace(/^option \(.*;$/gm, "")
      .replace(/\s*\[\(gogoproto\.[^\]]*\]/g, "");
    protobuf.parse(text, root, { keepCase: true });
  }
  root.resolveAll();
  return root;
}

/** Every type, enum and service nested anywhere in `ns`. */
function allNested(ns: protobuf.NamespaceBase): protobuf.ReflectionObject[] {
  const out: protobuf.ReflectionObject[] = [];
  for (const obj of ns.nestedArray) {
    out.push(obj);
    if (obj instanceof protobuf.Namespace) out.push(...allNested(obj));
  }
  return out;
}

const typeName = (f: protobuf.Field) => f.resolvedType ? f.resolvedType.fullName : f.type;

Deno.test("every upstream etcd 3.4 message, field, enum and RPC exists with the same number and type", () => {
  if (!UPSTREAM.every(existsSync)) {
    console.log("note: Debian etcd .proto sources not found; skipping upstream comparison");
    return;
  }
  const upstream = loadUpstream();
  let fields = 0, values = 0, methods = 0;
  for (const theirs of allNested(upstream)) {
    const name = theirs.fullName;
    const ours = pbRoot.lookup(name);
    assert.ok(ours, `missing ${name}`);
    if (theirs instanceof protobuf.Type) {
      assert.ok(ours instanceof protobuf.Type, `${name} should be a message`);
      for (const f of theirs.fieldsArray) {
        const g: protobuf.Field | undefined = ours.fields[f.name];
        assert.ok(g, `missing field ${name}.${f.name}`);
        assert.equal(g.id, f.id, `${name}.${f.name} number`);
        assert.equal(typeName(g), typeName(f), `${name}.${f.name} type`);
        assert.equal(g.repeated, f.repeated, `${name}.${f.name} label`);
        assert.equal(g.partOf?.name, f.partOf?.name, `${name}.${f.name} oneof`);
        fields++;
      }
    } else if (theirs instanceof protobuf.Enum) {
      assert.ok(ours instanceof protobuf.Enum, `${name} should be an enum`);
      for (const [k, v] of Object.entries(theirs.values)) {
        assert.equal(ours.values[k], v, `${name}.${k} value`);
        values++;
      }
    } else if (theirs instanceof protobuf.Service) {
      assert.ok(ours instanceof protobuf.Service, `${name} should be a service`);
      for (const m of theirs.methodsArray) {
        const n: protobuf.Method | undefined = ours.methods[m.name];
        assert.ok(n, `missing rpc ${name}.${m.name}`);
        n.resolve();
        m.resolve();
        assert.equal(n.resolvedRequestType?.fullName, m.resolvedRequestType?.fullName, `${name}.${m.name} request`);
        assert.equal(n.resolvedResponseType?.fullName, m.resolvedResponseType?.fullName, `${name}.${m.name} response`);
        assert.equal(!!n.requestStream, !!m.requestStream, `${name}.${m.name} request streaming`);
        assert.equal(!!n.responseStream, !!m.responseStream, `${name}.${m.name} response streaming`);
        methods++;
      }
    }
  }
  console.log(`checked ${fields} fields, ${values} enum values, ${methods} rpcs against etcd 3.4 sources`);
  assert.ok(fields > 200 && methods > 30);
});

Deno.test("internal Request round trip keeps binary bytes and 64-bit ids exact", () => {
  const all = new Uint8Array(256).map((_, i) => i);
  const bytes = encodeInternal({
    id: "18446744073709551615",
    put: { key: all, value: all.slice().reverse(), lease: "7587862072459722555", prev_kv: true },
  });
  const got = decodeInternal(bytes);
  assert.equal(got.id, "18446744073709551615");
  assert.equal(got.op, "put");
  const put = got.put!;
  assert.deepEqual([...put.key], [...all]);
  assert.deepEqual([...put.value], [...all].reverse());
  assert.ok(put.key instanceof Uint8Array, "bytes decode as Buffer/Uint8Array");
  assert.equal(put.lease, "7587862072459722555");
  assert.equal(put.prev_kv, true);
  assert.equal(put.ignore_value, false, "defaults are filled");
  assert.equal(got.txn, undefined, "unset oneof members stay absent");

  const txn = decodeInternal(encodeInternal({ id: "1", txn: { success: [{ request_delete_range: { key: all } }] } }));
  assert.equal(txn.op, "txn");
  assert.equal(txn.txn!.success[0].request, "request_delete_range");
  assert.equal(txn.txn!.compare.length, 0);
});

Deno.test("grpc-js KV.Range end to end with int64 as decimal strings", async () => {
  const [port] = await freePorts(1);
  const server = new grpc.Server();
  let seen: RangeRequest | undefined;
  server.addService(KVService, {
    Range(call: grpc.ServerUnaryCall<RangeRequest, unknown>, cb: grpc.sendUnaryData<unknown>) {
      seen = call.request;
      cb(null, {
        header: { cluster_id: "14841639068965178418", member_id: "1", revision: "9223372036854775807", raft_term: "2" },
        kvs: [{ key: call.request.key, value: new Uint8Array([0, 255]), create_revision: "7587862072459722555" }],
        count: "1",
      });
    },
  });
  // deno-lint-ignore no-explicit-any
  let client: any;
  try {
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => e ? reject(e) : resolve())
    );
    client = new grpcRoot.etcdserverpb.KV(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    // deno-lint-ignore no-explicit-any
    const res: any = await new Promise((resolve, reject) =>
      client.Range(
        { key: new Uint8Array([0xff, 0, 1]), limit: "5", revision: "9007199254740993" },
        // deno-lint-ignore no-explicit-any
        (e: Error | null, r: any) => e ? reject(e) : resolve(r),
      )
    );
    assert.deepEqual([...seen!.key], [0xff, 0, 1]);
    assert.equal(seen!.limit, "5");
    assert.equal(seen!.revision, "9007199254740993");
    assert.equal(seen!.sort_order, 0);
    assert.equal(seen!.min_mod_revision, "0");
    assert.equal(res.header.cluster_id, "14841639068965178418");
    assert.equal(res.header.revision, "9223372036854775807");
    assert.equal(res.count, "1");
    assert.equal(res.more, false);
    assert.equal(res.kvs[0].create_revision, "7587862072459722555");
    assert.equal(res.kvs[0].lease, "0");
    assert.deepEqual([...res.kvs[0].key], [0xff, 0, 1]);
    assert.deepEqual([...res.kvs[0].value], [0, 255]);
  } finally {
    client?.close();
    server.forceShutdown();
  }
});

Deno.test("the server's static import graph loads no grpc-js (it costs each member about 5 MB), only protobufjs/light", async () => {
  // grpc-js is for tests and the Easegress etcd client (proto/grpc_js.ts, imported dynamically via `mod.ts server`)
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("../mod.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  type Dep = { code?: { specifier?: string }; isDynamic?: boolean };
  const deps = new Map<string, Dep[]>(
    info.modules.map((m: { specifier: string; dependencies?: Dep[] }) => [m.specifier, m.dependencies ?? []]),
  );
  const seen = new Set<string>();
  const todo: string[] = [...info.roots];
  while (todo.length > 0) {
    const s = todo.pop()!;
    if (seen.has(s)) continue;
    seen.add(s);
    for (const d of deps.get(s) ?? []) if (!d.isDynamic && d.code?.specifier) todo.push(d.code.specifier);
  }
  const npm = [...seen].filter((s) => s.startsWith("npm:")).sort();
  assert.ok(seen.size > 30, `only ${seen.size} modules found: ${[...seen].slice(0, 5)}`);
  // protobufjs's light build: reflection and codecs without the .proto parser the server never uses
  assert.deepEqual(npm.map((s) => s.replace(/^npm:\/?([^@]+)@[\d.]+/, "npm:$1")), ["npm:protobufjs/light.js"]);
});
