/** The peer stream's frames: egpb.RaftFrame bytes (Raft messages framed by hand), exactly as protobuf encodes them. */
import assert from "node:assert/strict";
import { RaftService } from "../proto/mod.ts";
import { decodeFrame, encodeFrame } from "../server/peer/codec.ts";
import type { Message } from "../server/raft/types.ts";

function app(from: string, entries: number, dataBytes: number): Message {
  return {
    type: "App",
    from,
    to: "2",
    term: 7,
    logTerm: 6,
    index: 2 ** 40,
    commit: 99,
    reject: false,
    commitOnly: entries === 0,
    rejectHint: 0,
    context: entries % 2 ? new Uint8Array([1, 2, 3]) : null,
    entries: Array.from({ length: entries }, (_, i) => ({
      index: 100 + i,
      term: 7,
      type: 0,
      data: new Uint8Array(dataBytes).fill(i & 0xff),
    })),
    snapshot: null,
  };
}

/** Messages with their byte strings as plain arrays (decoding yields Buffers, the inputs here are Uint8Arrays). */
const plain = (v: unknown): unknown =>
  v instanceof Uint8Array
    ? Array.from(v)
    : Array.isArray(v)
    ? v.map(plain)
    : v && typeof v === "object"
    ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
    : v;

// deno-lint-ignore no-explicit-any
const protobufFrame = (bytes: Uint8Array) => RaftService.Send.requestDeserialize(bytes) as any;

Deno.test("peer frames: the same bytes as protobuf's RaftFrame, for lengths of 1 to 3 varint bytes", () => {
  // frames of ~60 B, ~1.2 KB and ~130 KB: their lengths take 1, 2 and 3 varint bytes
  for (const [entries, dataBytes] of [[0, 0], [3, 400], [2, 65000]]) {
    const msgs = [app("18446744073709551615", entries, dataBytes), app("3", 1, 10)];
    const frame = encodeFrame(msgs).slice(); // a copy: the view is reused by the next call
    const viaProtobuf = RaftService.Send.requestSerialize({ data: protobufFrame(frame).data });
    assert.deepEqual(new Uint8Array(frame), new Uint8Array(viaProtobuf), `${entries} entries of ${dataBytes} B`);
    assert.deepEqual(plain(decodeFrame(frame)), plain({ msgs, queries: [], answers: [] }));
  }
});

Deno.test("peer frames: each call reuses the buffer, so a frame is valid until the next call", () => {
  const a = encodeFrame([app("1", 1, 10)]);
  const copy = a.slice();
  encodeFrame([app("2", 2, 10)]);
  assert.notDeepEqual(a, copy);
  assert.deepEqual(plain(decodeFrame(copy).msgs), plain([app("1", 1, 10)]));
});

Deno.test("peer frames: lease questions and answers ride along, alone or with Raft messages", () => {
  const queries = [{ id: "9223372036854775807", renew: true, seq: 1 }, { id: "7", renew: false, seq: 2 ** 40 }];
  const answers = [
    { seq: 3, ttl: 9, granted_ttl: 10, error: "" },
    { seq: 4, ttl: 0, granted_ttl: 0, error: "etcdserver: not leader" },
  ];
  for (const msgs of [[], [app("1", 2, 100)]]) {
    const frame = encodeFrame(msgs, queries, answers).slice();
    const pb = protobufFrame(frame);
    assert.equal(pb.lease_queries.length, 2);
    assert.equal(String(pb.lease_queries[0].id), "9223372036854775807");
    assert.equal(pb.lease_answers[1].error, "etcdserver: not leader");
    assert.deepEqual(plain(decodeFrame(frame)), plain({ msgs, queries, answers }));
  }
});

Deno.test("peer frames: malformed frames are refused with a clear error", () => {
  const good = encodeFrame([app("1", 1, 10)]).slice();
  assert.deepEqual(decodeFrame(new Uint8Array(0)), { msgs: [], queries: [], answers: [] });
  assert.throws(() => decodeFrame(new Uint8Array([0x12, 1, 0])), /invalid wire type|index out of range/);
  assert.throws(() => decodeFrame(good.subarray(0, good.length - 1)), /runs past the end/);
  assert.throws(() => decodeFrame(new Uint8Array([0x0a, 0x80])), /bad length/);
  const cut = good.slice();
  cut[1] -= 4; // shorter declared length, then the rest trails as garbage
  assert.throws(() => decodeFrame(cut));
});
