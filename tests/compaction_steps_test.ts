/**
 * A compaction in steps (MvccStore.beginCompaction / compactionStep), as members apply one: reads see the compacted
 * store from the call on, writes, rolled-back txns and reads in slices go on between the steps, and the store it
 * leaves is the one a compaction at once leaves.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type KeyValue, MvccStore, type StoreEvent } from "../server/mvcc/store.ts";
import { encodeState, StateEncoder } from "../server/apply/state_codec.ts";
import { stateHash } from "../server/apply/state_hash.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { Members } from "../server/membership/members.ts";

const norm = (kv: KeyValue | null) =>
  kv && [kv.key.toString("latin1"), kv.create_revision, kv.mod_revision, kv.version, kv.value.toString("latin1")];
const normEvents = (evs: StoreEvent[]) => evs.map((e) => [e.type, norm(e.kv), norm(e.prev)]);
const key = (i: number) => `k${i.toString().padStart(5, "0")}`;

/** 3,000 keys with three versions each (values in shared 64 KiB buffers), a third deleted, some leased. */
function build(): MvccStore {
  const s = new MvccStore();
  let arena = Buffer.alloc(65536), off = 0;
  const value = (text: string) => {
    if (off + text.length > arena.length) [arena, off] = [Buffer.alloc(65536), 0];
    const v = arena.subarray(off, off + text.length);
    v.write(text, "latin1");
    off += text.length;
    return v;
  };
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 3000; i += 50) {
      const t = s.write();
      for (let j = i; j < i + 50; j++) t.put(key(j), value(`v${round}-${j}`.repeat(4)), j % 7 === 0 ? "42" : "0");
      t.end();
    }
  }
  for (let i = 0; i < 3000; i += 3) {
    const t = s.write();
    t.deleteRange(key(i), "");
    t.end();
  }
  return s;
}

/** The same writes on both stores. */
function write(stores: MvccStore[], i: number) {
  for (const s of stores) {
    const t = s.write();
    t.put(key((i * 37) % 3500), Buffer.from(`late-${i}`), i % 5 === 0 ? "42" : "0");
    if (i % 4 === 0) t.deleteRange(key((i * 11) % 3000), "");
    t.end();
    // a txn rolled back leaves no trace, in the middle of a compaction too
    const r = s.write();
    r.put(`zz-rolled-back-${i}`, Buffer.from("x"), "0");
    r.abort();
  }
}

function assertSame(a: MvccStore, b: MvccStore, at: string) {
  assert.equal(a.currentRev, b.currentRev, at);
  assert.equal(a.compactRev, b.compactRev, at);
  assert.equal(a.keyCount, b.keyCount, at);
  for (const rev of new Set([a.compactRev, Math.min(a.compactRev + 1, a.currentRev), a.currentRev])) {
    const ra = a.range("", null, { rev }), rb = b.range("", null, { rev });
    assert.equal(ra.count, rb.count, `${at}: count at ${rev}`);
    assert.deepEqual(ra.kvs.map(norm), rb.kvs.map(norm), `${at}: range at ${rev}`);
  }
  for (const from of [0, a.compactRev, a.compactRev + 2]) {
    assert.deepEqual(normEvents(a.eventsSince(from)), normEvents(b.eventsSince(from)), `${at}: events from ${from}`);
  }
}

Deno.test("a compaction in steps: reads see it at once, writes go on between the steps, the result is a compaction at once", () => {
  const stepped = build(), atOnce = build();
  const rev = stepped.currentRev - 500;
  stepped.beginCompaction(rev);
  atOnce.compact(rev);
  assert.ok(stepped.compacting);
  assert.throws(
    () => stepped.range("", null, { rev: rev - 1 }),
    /compacted/,
    "reads below the point are refused at once",
  );
  assert.throws(() => stepped.beginCompaction(rev), /compacted/);
  let steps = 0;
  while (!stepped.compactionStep(0)) {
    steps++;
    if (steps % 10 === 0) write([stepped, atOnce], steps);
    if (steps % 25 === 0) assertSame(stepped, atOnce, `step ${steps}`);
  }
  assert.ok(steps > 100, `${steps} steps: the work was spread out`);
  assert.ok(!stepped.compacting);
  assertSame(stepped, atOnce, "done");
  assert.equal(stepped.sizeBytes, atOnce.sizeBytes);
  assert.equal(stepped.recordCount, atOnce.recordCount);
  assert.deepEqual(stepped.hashKV(0), atOnce.hashKV(0));
  assert.deepEqual([...stepped.dump()].map(norm), [...atOnce.dump()].map(norm));
  assert.deepEqual([...stepped.leasedKeys()], [...atOnce.leasedKeys()]);
  // a later compaction (at once) agrees too
  stepped.compact(stepped.currentRev);
  atOnce.compact(atOnce.currentRev);
  assertSame(stepped, atOnce, "compacted again");
  assert.equal(stepped.sizeBytes, atOnce.sizeBytes);
});

Deno.test("a compaction under way is finished first by a snapshot encode, a hash, a dump and the next compaction", () => {
  const lessor = new Lessor(1);
  lessor.grant("42", 10);
  const meta = { appliedIndex: 1, term: 1, confState: { voters: [], learners: [] } };
  const finishers: Array<[string, (s: MvccStore) => unknown]> = [
    ["encode", (s) => encodeState(meta, s, lessor, [], new Members())],
    ["state hash", (s) => stateHash(s, lessor, [])],
    ["hashKV", (s) => s.hashKV(0)],
    ["dump", (s) => [...s.dump()]],
    ["compaction", (s) => s.beginCompaction(s.currentRev)],
  ];
  const reference = build();
  reference.compact(reference.currentRev - 500);
  for (const [what, finish] of finishers) {
    const s = build();
    s.beginCompaction(s.currentRev - 500);
    for (let i = 0; i < 20; i++) s.compactionStep(0);
    assert.ok(s.compacting, what);
    const sizeBefore = s.sizeBytes;
    finish(s);
    if (what === "compaction") {
      assert.ok(s.compacting, "the next compaction is under way");
      assert.ok(s.sizeBytes < sizeBefore, "... after the first one finished");
      continue;
    }
    assert.ok(!s.compacting, what);
    assert.equal(s.sizeBytes, reference.sizeBytes, what);
    assert.equal(s.recordCount, reference.recordCount, what);
  }
  // a state hash does not depend on whether the compaction was finished when it was asked for
  const a = build(), b = build();
  a.compact(a.currentRev - 500);
  b.beginCompaction(b.currentRev - 500);
  assert.equal(stateHash(b, lessor, []), stateHash(a, lessor, []));
});

Deno.test("a read in slices under way when a compaction swaps its table in reads what it would have read at once", () => {
  const s = build(), ref = build();
  const rev = s.currentRev;
  s.beginCompaction(rev - 200);
  const seen: KeyValue[] = [];
  const scan = s.scan("", null, rev, (idx) => seen.push(s._kv(idx)));
  scan.step(100);
  assert.ok(!scan.done);
  s.settleCompaction();
  assert.ok(scan.done, "the swap ran the read to its end first");
  const want = ref.range("", null, { rev }).kvs;
  assert.deepEqual(seen.map(norm), want.map(norm));
  // and one begun after the compaction began, before the swap
  const s2 = build();
  s2.beginCompaction(rev - 200);
  for (let i = 0; i < 5; i++) s2.compactionStep(0);
  const seen2: KeyValue[] = [];
  const scan2 = s2.scan("", null, rev, (idx) => seen2.push(s2._kv(idx)));
  scan2.step(100);
  while (!s2.compactionStep(0)) write([s2], 1);
  assert.ok(scan2.done);
  assert.deepEqual(seen2.map(norm), want.map(norm));
});

Deno.test("a compaction inside a write txn cannot be finished: a clear error, and the store is unchanged", () => {
  const s = build();
  s.beginCompaction(s.currentRev - 500);
  const t = s.write();
  t.put("new", Buffer.from("v"), "0");
  assert.throws(() => s.settleCompaction(), /inside a write txn/);
  t.end();
  s.settleCompaction();
  assert.equal(s.range("new", "").kvs[0].value.toString(), "v");
});

Deno.test("a compaction's steps wait for a snapshot encode under way, and go on once it ended or was abandoned", async () => {
  const lessor = new Lessor(1);
  const meta = { appliedIndex: 1, term: 1, confState: { voters: [], learners: [] } };
  for (const end of ["finished", "abandoned"] as const) {
    const s = build();
    const abort = new AbortController();
    const encode = new StateEncoder(meta, s, lessor, [], new Members()).inSlices(0, abort.signal);
    s.beginCompaction(s.currentRev - 500);
    for (let i = 0; i < 5; i++) assert.equal(s.compactionStep(Infinity), false, `${end}: the steps wait`);
    if (end === "abandoned") {
      abort.abort(new Error("leader's snapshot coming"));
      await assert.rejects(encode, /leader's snapshot coming/);
    } else await encode;
    assert.equal(s.compactionStep(Infinity), true, `${end}: then the compaction goes on`);
    assert.ok(!s.compacting);
  }
});
