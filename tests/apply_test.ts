/**
 * The apply layer as a pure function of the log (issue 10): a NOSPACE refusal is decided from the replicated alarm
 * list only, a refused request changes nothing (a txn is all of its operations or none), and a state reached through
 * a snapshot counts, hashes and refuses exactly like the same state reached entry by entry.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Applier } from "../server/apply/applier.ts";
import { decodeState, encodeState } from "../server/apply/state_codec.ts";
import { stateHash } from "../server/apply/state_hash.ts";
import { EtcdError } from "../server/errors.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { Members } from "../server/membership/members.ts";
import { MvccStore } from "../server/mvcc/store.ts";
import { StateHasher } from "../server/mvcc/hash.ts";
import zlib from "node:zlib";
import { AlarmAction, AlarmType, type InternalRequestShape } from "../proto/mod.ts";

const b = (s: string) => Buffer.from(s, "latin1");
const NO_SPACE = "etcdserver: mvcc: database space exceeded";

/** A member's state machine. */
function member() {
  const store = new MvccStore();
  const lessor = new Lessor(1, () => 0);
  const applier = new Applier(
    store,
    lessor,
    (rev) => ({ cluster_id: "1", member_id: "1", revision: rev, raft_term: "1" }),
  );
  return { store, lessor, applier, hash: () => stateHash(store, lessor, applier.alarms) };
}
type Member = ReturnType<typeof member>;

/** Applies an entry; returns the error message, or "ok". */
function apply(m: Member, req: Omit<InternalRequestShape, "id">): string {
  try {
    m.applier.apply({ id: "", ...req } as InternalRequestShape);
    return "ok";
  } catch (e) {
    if (e instanceof EtcdError) return e.message;
    throw e;
  }
}

const put = (k: string, v: string, lease = "0"): Omit<InternalRequestShape, "id"> => ({
  op: "put",
  put: { key: b(k), value: b(v), lease, prev_kv: false, ignore_value: false, ignore_lease: false },
});
const del = (k: string): Omit<InternalRequestShape, "id"> => ({
  op: "delete_range",
  delete_range: { key: b(k), range_end: b(""), prev_kv: false },
});
const alarm = (action: number, memberID: string): Omit<InternalRequestShape, "id"> => ({
  op: "alarm",
  // deno-lint-ignore no-explicit-any
  alarm: { action, memberID, alarm: AlarmType.NOSPACE } as any,
});
const get = (m: Member, k: string) => m.store.range(b(k).toString("latin1"), "").kvs[0]?.value.toString() ?? null;

/** A txn without compares; each op names its oneof member (as decoded entries do). */
function txn(success: Record<string, unknown>[]): Omit<InternalRequestShape, "id"> {
  const ops = success.map((op) => ({ ...op, request: Object.keys(op)[0] }));
  // deno-lint-ignore no-explicit-any
  return { op: "txn", txn: { compare: [], success: ops, failure: [] } as any };
}

Deno.test("a NOSPACE alarm in the log refuses puts, txns that put and lease grants on every member alike", () => {
  const members = [member(), member()];
  const log = [
    put("a", "1"),
    alarm(AlarmAction.ACTIVATE, "1"),
    put("b", "2"),
    txn([{ request_put: { key: b("c"), value: b("3") } }]),
    { op: "lease_grant" as const, lease_grant: { ID: "7", TTL: "10" } },
    // what frees space passes
    del("a"),
    txn([{ request_delete_range: { key: b("zz"), range_end: b("") } }]),
    { op: "compaction" as const, compaction: { revision: "2", physical: false } },
    alarm(AlarmAction.DEACTIVATE, "1"),
    put("d", "4"),
  ];
  const outcomes = members.map((m) => log.map((e) => apply(m, e)));
  assert.deepEqual(outcomes[0], ["ok", "ok", NO_SPACE, NO_SPACE, NO_SPACE, "ok", "ok", "ok", "ok", "ok"]);
  assert.deepEqual(outcomes[1], outcomes[0]);
  assert.equal(members[0].hash(), members[1].hash());
  assert.equal(get(members[0], "d"), "4");
  assert.equal(get(members[0], "b"), null);
});

Deno.test("a refused txn changes nothing: [delete a, put b] under NOSPACE keeps a and the revision", () => {
  const m = member();
  apply(m, put("a", "1"));
  apply(m, alarm(AlarmAction.ACTIVATE, "2"));
  const rev = m.store.currentRev, hash = m.hash();
  const out = apply(
    m,
    txn([
      { request_delete_range: { key: b("a"), range_end: b("") } },
      { request_put: { key: b("b"), value: b("2") } },
    ]),
  );
  assert.equal(out, NO_SPACE);
  assert.equal(m.store.currentRev, rev);
  assert.equal(get(m, "a"), "1");
  assert.equal(m.hash(), hash);
});

Deno.test("a txn failing in its second operation is rolled back: the first one leaves no trace", () => {
  const m = member();
  apply(m, { op: "lease_grant", lease_grant: { ID: "9", TTL: "100" } });
  apply(m, put("k", "v", "9"));
  const rev = m.store.currentRev, hash = m.hash(), size = m.store.sizeBytes;
  // the put keeps the value of a key the same txn just deleted: etcd's "key not found"
  const out = apply(
    m,
    txn([
      { request_put: { key: b("new"), value: b("x") } },
      { request_delete_range: { key: b("k"), range_end: b("") } },
      { request_put: { key: b("k"), value: b(""), ignore_value: true } },
    ]),
  );
  assert.equal(out, "etcdserver: key not found");
  assert.equal(m.store.currentRev, rev);
  assert.equal(get(m, "k"), "v");
  assert.equal(get(m, "new"), null);
  assert.equal(m.store.sizeBytes, size);
  assert.deepEqual([...m.lessor.get("9")!.keys], ["k"], "the lease still holds its key");
  assert.equal(m.hash(), hash);
  // the store is fully usable after the rollback
  assert.equal(apply(m, put("new", "y")), "ok");
  assert.equal(m.store.currentRev, rev + 1);
  assert.equal(m.store.range("new", "").kvs[0].version, 1);
});

Deno.test("a state reached through a snapshot counts its size and hashes like the same state reached entry by entry", () => {
  const direct = member();
  for (
    const e of [
      put("k", "v"),
      put("t", "x"),
      del("t"), // a tombstone at revision 4 ...
      { op: "compaction" as const, compaction: { revision: "4", physical: false } }, // ... the compaction revision
    ]
  ) assert.equal(apply(direct, e), "ok");
  const restored = member();
  const blob = encodeState(
    { appliedIndex: 4, term: 1, confState: { voters: [], learners: [] } },
    direct.store,
    direct.lessor,
    direct.applier.alarms,
    new Members(),
  );
  decodeState(Uint8Array.from(blob), restored.store, restored.lessor, restored.applier.alarms, new Members());
  assert.equal(restored.store.sizeBytes, direct.store.sizeBytes);
  assert.deepEqual(restored.store.hashKV(0), direct.store.hashKV(0));
  assert.equal(restored.hash(), direct.hash());
  // and they keep agreeing after further entries and another compaction
  for (const m of [direct, restored]) {
    apply(m, put("t", "again"));
    apply(m, { op: "compaction", compaction: { revision: "5", physical: false } });
  }
  assert.equal(restored.store.sizeBytes, direct.store.sizeBytes);
  assert.equal(restored.hash(), direct.hash());
});

Deno.test("HashKV follows etcd: revisions at or below the compaction point are refused; later ones are stable", () => {
  const m = member();
  apply(m, put("a", "1"));
  apply(m, put("a", "2"));
  const at3 = m.store.hashKV(3).hash;
  apply(m, put("a", "3"));
  assert.equal(m.store.hashKV(3).hash, at3, "a hash at a past revision does not change with later writes");
  assert.notEqual(m.store.hashKV(0).hash, at3);
  apply(m, { op: "compaction", compaction: { revision: "3", physical: false } });
  assert.equal(m.store.hashKV(0).compactRev, 3);
  assert.throws(() => m.store.hashKV(3), /compacted/);
  assert.throws(() => m.store.hashKV(9), /future/);
});

Deno.test("the state digest is a crc32 of length-delimited fields, however long they are", () => {
  const key = "k".repeat(70_000), value = new Uint8Array(100_000).fill(7);
  const f64 = (n: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, n, true);
    return b;
  };
  const parts = [
    f64(key.length),
    Buffer.from(key, "latin1"),
    f64(2),
    f64(3),
    f64(1),
    f64(1),
    b("0"),
    f64(value.length),
    value,
  ];
  const expect = zlib.crc32(Buffer.concat(parts)) >>> 0;
  assert.equal(new StateHasher().record(Buffer.from(key, "latin1"), 2, 3, 1, "0", value).value, expect);
});
