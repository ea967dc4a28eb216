/**
 * The hand-written put codecs (proto/put_codec.ts) against protobufjs, which they stand in for: on random requests,
 * entries and responses they give the same bytes and the same objects (prototypes included), and they decline
 * (null) whatever they do not take, so that proto/mod.ts falls back to protobufjs.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import protobuf from "protobufjs";
import { CONVERSION, decodeInternal, encodeInternal, InternalRequest, KVService, pbRoot } from "../proto/mod.ts";
import { decodePutEntry, decodePutRequest, encodePutEntry, encodePutResponse } from "../proto/put_codec.ts";

const PutRequest = pbRoot.lookupType("etcdserverpb.PutRequest");
const PutResponse = pbRoot.lookupType("etcdserverpb.PutResponse");
// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;
const EMPTY = Buffer.alloc(0);

/** xorshift32: reproducible random input (the seed is in each failure message) */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const int = (n: number) => Math.floor(next() * n);
  const bytes = (max: number) => Buffer.from(Array.from({ length: int(max + 1) }, () => int(256)));
  /** a 64-bit decimal string of any size class, in [min, max] */
  const big = (min: bigint, max: bigint): string => {
    const width = [1n, 2n ** 31n, 2n ** 32n + 5n, 2n ** 53n, 2n ** 63n, 2n ** 64n][int(6)];
    let v = BigInt(int(2 ** 30)) * BigInt(int(2 ** 30)) * BigInt(int(2 ** 4) + 1) % width;
    if (min < 0n && int(3) === 0) v = -v;
    if (v < min) v = min;
    if (v > max) v = max;
    return v.toString();
  };
  return { next, int, bytes, big };
}

function randomPut(r: ReturnType<typeof rng>): Obj {
  return {
    key: r.bytes(12),
    value: r.bytes(r.int(4) === 0 ? 700 : 40),
    lease: r.int(3) === 0 ? "0" : r.big(-(2n ** 63n), 2n ** 63n - 1n),
    prev_kv: r.int(2) === 0,
    ignore_value: r.int(4) === 0,
    ignore_lease: r.int(4) === 0,
  };
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

Deno.test("put entries: the same bytes as protobufjs, and decoded to the same object", () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const req = { op: "put", put: randomPut(r), id: r.big(0n, 2n ** 64n - 1n) };
    const ours = encodePutEntry(req);
    assert.ok(ours, `seed ${seed}: declined ${JSON.stringify(req)}`);
    const theirs = InternalRequest.encode(InternalRequest.fromObject(req)).finish();
    assert.equal(hex(ours), hex(theirs), `seed ${seed}: encoding`);
    const want = InternalRequest.toObject(InternalRequest.decode(Buffer.from(theirs)), CONVERSION);
    assert.deepStrictEqual(decodePutEntry(ours, EMPTY), want, `seed ${seed}: decoding`);
    assert.deepStrictEqual(decodeInternal(encodeInternal(req)), want, `seed ${seed}: through proto/mod.ts`);
  }
});

Deno.test("put requests from clients decode as protobufjs decodes them, in any field order and with repeats", () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const r = rng(seed);
    const w = protobuf.Writer.create();
    // fields in random order, some absent, some twice (the last one counts), booleans as multi-byte varints
    const fields = [1, 2, 3, 4, 5, 6, 1, 3, 4].filter(() => r.int(4) !== 0).sort(() => r.next() - 0.5);
    for (const f of fields) {
      if (f <= 2) w.uint32(f << 3 | 2).bytes(r.bytes(r.int(3) === 0 ? 0 : 20));
      else if (f === 3) w.uint32(24).int64(r.big(-(2n ** 63n), 2n ** 63n - 1n));
      // protobufjs reads a bool as uint32: of a 5-byte varint it keeps the low 32 bits (2^32 is false)
      else w.uint32(f << 3).uint64([0, 1, 2, 300, 2 ** 31, 2 ** 32, 2 ** 34 + 1][r.int(7)]);
    }
    const bytes = w.finish();
    for (const input of [Buffer.from(bytes), new Uint8Array(bytes)]) {
      const want = PutRequest.toObject(PutRequest.decode(input), CONVERSION);
      assert.deepStrictEqual(decodePutRequest(input, EMPTY), want, `seed ${seed}, ${input.constructor.name}`);
      assert.deepStrictEqual(KVService.Put.requestDeserialize(input), want, `seed ${seed}: through KVService`);
    }
  }
});

Deno.test("put responses: the same bytes as protobufjs", () => {
  for (let seed = 1; seed <= 2000; seed++) {
    const r = rng(seed);
    const resp = {
      header: {
        cluster_id: r.big(0n, 2n ** 64n - 1n),
        member_id: r.big(0n, 2n ** 64n - 1n),
        revision: r.int(3) === 0 ? r.int(100) : r.int(2 ** 31) * 2 ** 20 + r.int(2 ** 20),
        raft_term: r.big(0n, 2n ** 64n - 1n),
      },
    };
    const ours = encodePutResponse(resp);
    assert.ok(ours && Buffer.isBuffer(ours), `seed ${seed}: declined`);
    assert.equal(hex(ours), hex(PutResponse.encode(PutResponse.fromObject(resp)).finish()), `seed ${seed}`);
    assert.equal(hex(KVService.Put.responseSerialize(resp)), hex(ours));
  }
});

Deno.test("the put codecs decline what is not a plain put, and proto/mod.ts still handles it", () => {
  const put = { key: Buffer.from("k"), value: Buffer.from("v"), lease: "0", prev_kv: false };
  // not a put, an unexpected field, a value outside its type, bytes given as text
  assert.equal(encodePutEntry({ op: "delete_range", delete_range: { key: Buffer.from("k") }, id: "1" }), null);
  assert.equal(encodePutEntry({ op: "put", put, id: "1", txn: {} }), null);
  assert.equal(encodePutEntry({ op: "put", put: { ...put, lease: "9223372036854775808" }, id: "1" }), null);
  assert.equal(encodePutEntry({ op: "put", put: { ...put, key: "aw==" }, id: "1" }), null);
  assert.equal(encodePutEntry({ op: "put", put, id: "-1" }), null);
  const viaMod = decodeInternal(encodeInternal({ op: "put", put: { ...put, key: "aw==" }, id: "1" }));
  assert.equal(Buffer.from(viaMod.put!.key).toString(), "k"); // protobufjs took the base64 text
  // a response with prev_kv, or without its header
  const header = { cluster_id: "1", member_id: "2", revision: 3, raft_term: "4" };
  assert.equal(encodePutResponse({ header, prev_kv: { key: Buffer.from("k") } }), null);
  assert.equal(encodePutResponse({}), null);
  const full = PutResponse.toObject(
    PutResponse.decode(KVService.Put.responseSerialize({ header, prev_kv: { key: Buffer.from("k") } })),
    CONVERSION,
  );
  assert.equal(Buffer.from(full.prev_kv.key).toString(), "k");
  // unknown fields, a multi-byte tag, a truncated field, an 11-byte varint: protobufjs decides
  const unknown = Buffer.from([0x0a, 0x01, 0x6b, 0x38, 0x01]);
  assert.equal(decodePutRequest(unknown, EMPTY), null);
  assert.equal(Buffer.from((KVService.Put.requestDeserialize(unknown) as Obj).key).toString(), "k");
  assert.equal(decodePutRequest(Buffer.from([0x80, 0x01, 0x00]), EMPTY), null);
  assert.equal(decodePutRequest(Buffer.from([0x0a, 0x05, 0x6b]), EMPTY), null);
  assert.throws(() => KVService.Put.requestDeserialize(Buffer.from([0x0a, 0x05, 0x6b])));
  assert.equal(decodePutRequest(Buffer.from([0x18, ...Array(10).fill(0xff), 0x01]), EMPTY), null);
  // an entry that is not a put, or holds two puts
  assert.equal(decodePutEntry(Buffer.from(encodeInternal({ op: "compaction", compaction: {}, id: "7" })), EMPTY), null);
  const one = encodePutEntry({ op: "put", put, id: "5" })!;
  const twice = Buffer.concat([one, one.subarray(one.indexOf(0x1a))]);
  assert.equal(decodePutEntry(twice, EMPTY), null);
});
