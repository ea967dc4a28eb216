/**
 * The columnar MVCC store (server/mvcc/store.ts) against its reference model (tests/lib/mvcc_reference.ts, the
 * object-per-version store it replaced): the same random puts, deletes, multi-op txns, compactions and snapshot
 * round trips on both, comparing reads at every retained revision, the history with previous values, dump(),
 * hashKV, sizeBytes and keyCount after every step. `MVCC_SEED=N` replays one seed, `MVCC_SEEDS=N` runs seeds 1..N.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type KeyValue, MvccStore, type StoreEvent } from "../server/mvcc/store.ts";
import { type BKey, type RangeEnd, toBKey } from "../server/mvcc/keys.ts";
import { ReferenceStore } from "./lib/mvcc_reference.ts";
import { decodeState, encodeState } from "../server/apply/state_codec.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { Members } from "../server/membership/members.ts";
import { Prng } from "./sim/prng.ts";

type Store = MvccStore | ReferenceStore;

const norm = (kv: KeyValue | null) =>
  kv &&
  [kv.key.toString("latin1"), kv.create_revision, kv.mod_revision, kv.version, kv.value.toString("latin1"), kv.lease];
const normEvents = (evs: StoreEvent[]) => evs.map((e) => [e.type, norm(e.kv), norm(e.prev)]);

/** Values as slices of shared buffers (like values decoded from the Raft log's arena), some empty. */
function valueMaker(rand: (n: number) => number) {
  let arena = Buffer.alloc(4096);
  let pos = 0;
  const all = [arena];
  /** Overwrites every value made so far (the store must not read them any more) and starts a new arena. */
  const scribble = () => {
    for (const a of all) a.fill(0x21);
    arena = Buffer.alloc(4096);
    all.push(arena);
    pos = 0;
  };
  const make = (): Buffer => {
    const n = rand(5) === 0 ? 0 : 1 + rand(40);
    if (pos + n > arena.length) {
      arena = Buffer.alloc(rand(2) ? 4096 : 16384);
      all.push(arena);
      pos = 0;
    }
    const v = arena.subarray(pos, pos + n);
    for (let i = 0; i < n; i++) v[i] = 32 + rand(200);
    pos += n;
    return v;
  };
  return { make, scribble };
}

function compare(a: MvccStore, b: ReferenceStore, rand: (n: number) => number, step: number) {
  const at = `step ${step}`;
  assert.equal(a.currentRev, b.currentRev, at);
  assert.equal(a.compactRev, b.compactRev, at);
  assert.equal(a.keyCount, b.keyCount, `${at}: keyCount`);
  // a compaction under way still counts the records it drops; a hash or a dump finishes it first (not every step)
  if (!a.compacting || rand(4) === 0) {
    assert.deepEqual(a.hashKV(0), b.hashKV(0), `${at}: hashKV`);
    assert.ok(!a.compacting);
    assert.equal(a.sizeBytes, b.sizeBytes, `${at}: sizeBytes`);
    assert.deepEqual([...a.dump()].map(norm), [...b.dump()].map(norm), `${at}: dump`);
  }
  const low = Math.max(a.compactRev, 1);
  for (let i = 0; i < 4; i++) {
    const rev = low + rand(a.currentRev - low + 1);
    const ra = a.range("", null, { rev }), rb = b.range("", null, { rev });
    assert.deepEqual(ra.kvs.map(norm), rb.kvs.map(norm), `${at}: range at ${rev}`);
    assert.equal(ra.count, rb.count);
    const k = key(rand);
    assert.deepEqual(a.range(k, "", { rev }).kvs.map(norm), b.range(k, "", { rev }).kvs.map(norm), `${at}: get`);
    const lim = a.range("b", "e", { rev, limit: 2 }), limb = b.range("b", "e", { rev, limit: 2 });
    assert.deepEqual([lim.kvs.map(norm), lim.count], [limb.kvs.map(norm), limb.count]);
    if (rev > a.compactRev && !a.compacting) {
      assert.equal(a.hashKV(rev).hash, b.hashKV(rev).hash, `${at}: hashKV at ${rev}`);
    }
  }
  for (const from of [0, low, low + 1, low + rand(a.currentRev - low + 2)]) {
    assert.deepEqual(normEvents(a.eventsSince(from)), normEvents(b.eventsSince(from)), `${at}: eventsSince ${from}`);
    assert.deepEqual(normEvents(a.eventsSince(from, 3)), normEvents(b.eventsSince(from, 3)), `${at}: 3 revisions`);
  }
}

const KEYS = ["a", "b", "ba", "bb", "c", "cc", "d", "e\u0000", "f\u00ff", "z"];
const key = (rand: (n: number) => number): BKey => KEYS[rand(KEYS.length)];
const LEASES = ["0", "0", "7587862072459722555", "42"];

function randomTxn(rand: (n: number) => number, value: () => Buffer) {
  const ops: Array<{ put?: [BKey, Buffer, string]; del?: [BKey, RangeEnd] }> = [];
  const n = 1 + rand(3);
  for (let i = 0; i < n; i++) {
    if (rand(3) === 0) {
      const k = key(rand);
      const r = rand(4);
      ops.push({ del: [k, r === 0 ? null : r === 1 ? k + "\u00ff" : ""] });
    } else ops.push({ put: [key(rand), value(), LEASES[rand(LEASES.length)]] });
  }
  return ops;
}

function run(seed: number, steps: number) {
  const prng = new Prng(seed);
  const rand = (n: number) => prng.int(n);
  const { make: value, scribble } = valueMaker(rand);
  let a = new MvccStore();
  let b = new ReferenceStore();
  /** the same operations, never restored: the state it reaches must be the one restores reach */
  const direct = new MvccStore();
  const applyTo = (s: MvccStore, ops: ReturnType<typeof randomTxn>, abort: boolean) => {
    const t = s.write();
    for (const o of ops) {
      // its own copy of the value: the arenas are scribbled over once `a` stops referencing them
      if (o.put) t.put(o.put[0], s === direct ? Buffer.from(o.put[1]) : o.put[1], o.put[2]);
      else t.deleteRange(...o.del!);
    }
    if (abort) t.abort();
    else t.end();
  };
  for (let step = 0; step < steps; step++) {
    const op = rand(100);
    if (op < 6) {
      // a txn that is rolled back leaves no trace
      const ops = randomTxn(rand, value);
      applyTo(a, ops, true);
      applyTo(direct, ops, true);
    } else if (op < 75) {
      const ops = randomTxn(rand, value);
      applyTo(direct, ops, false);
      const ta = a.write(), tb = b.write();
      for (const o of ops) {
        if (o.put) {
          const [k, v, l] = o.put;
          const ra = ta.put(k, v, l), rb = tb.put(k, Buffer.from(v), l); // the reference keeps its own copy
          assert.deepEqual([norm(ra.kv), norm(ra.prev)], [norm(rb.kv), norm(rb.prev)]);
        } else {
          assert.deepEqual(ta.deleteRange(...o.del!).map(norm), tb.deleteRange(...o.del!).map(norm));
        }
        const k = key(rand);
        assert.deepEqual(norm(ta.get(k)), norm(tb.get(k)));
        assert.deepEqual(ta.range("", null).kvs.map(norm), tb.range("", null).kvs.map(norm));
      }
      assert.deepEqual(normEvents(ta.events), normEvents(tb.events));
      assert.equal(ta.end(), tb.end());
    } else if (op < 88) {
      if (a.currentRev > Math.max(a.compactRev, 1)) {
        const low = Math.max(a.compactRev, 0) + 1;
        const rev = low + rand(a.currentRev - low + 1);
        // in steps (between the operations that follow), or at once
        if (rand(2) === 0) a.beginCompaction(rev);
        else a.compact(rev);
        b.compact(rev);
        direct.compact(rev);
      }
    } else if (op < 94) {
      const c = new MvccStore();
      c.restore(a.currentRev, a.compactRev, a.dump());
      a = c;
      const d = new ReferenceStore();
      d.restore(b.currentRev, b.compactRev, b.dump());
      b = d;
    } else {
      // through the state codec (values then live inside the blob)
      const lessor = new Lessor(1);
      for (const l of LEASES) if (l !== "0" && !lessor.get(l)) lessor.grant(l, 10);
      const blob = encodeState(
        { appliedIndex: 1, term: 1, confState: { voters: [], learners: [] } },
        a,
        lessor,
        [],
        new Members(),
      );
      if (rand(2) === 0) {
        // keep using the encoded store: its values now live in the blob, not where they were put from
        scribble();
      } else {
        const c = new MvccStore();
        decodeState(Uint8Array.from(blob), c, new Lessor(1), [], new Members());
        a = c;
        const d = new ReferenceStore();
        d.restore(b.currentRev, b.compactRev, b.dump());
        b = d;
      }
    }
    // a compaction under way advances by a few records or keys at a time (the clock is looked at every 64)
    if (a.compacting && rand(3) !== 0) a.compactionStep(0);
    compare(a, b, rand, step);
    if (a.compacting) continue;
    const at = `step ${step}: restored against never restored`;
    assert.equal(a.sizeBytes, direct.sizeBytes, `${at}: sizeBytes`);
    if (step % 10 === 0) assert.deepEqual([...a.dump()].map(norm), [...direct.dump()].map(norm), `${at}: dump`);
    assert.deepEqual(a.hashKV(0), direct.hashKV(0), `${at}: hashKV`);
  }
}

Deno.test("the columnar store behaves exactly like the reference store (random operations)", () => {
  const only = Deno.env.get("MVCC_SEED");
  const n = Number(Deno.env.get("MVCC_SEEDS") ?? 40);
  const seeds = only ? [Number(only)] : Array.from({ length: n }, (_, i) => i + 1);
  for (const seed of seeds) {
    try {
      run(seed, 300);
    } catch (e) {
      throw new Error(`seed ${seed}: ${e instanceof Error ? e.stack : e}`);
    }
  }
});

Deno.test("compaction releases mostly-dead value buffers", () => {
  const s = new MvccStore();
  const big = Buffer.alloc(1 << 16, 1);
  for (let i = 0; i < 256; i++) {
    const t = s.write();
    t.put(`k${i}`, big.subarray(i * 256, i * 256 + 256), "0");
    t.end();
  }
  // overwrite all but one key with small standalone values, then compact: the shared buffer is 1/256 live
  for (let i = 1; i < 256; i++) {
    const t = s.write();
    t.put(`k${i}`, Buffer.from("x"), "0");
    t.end();
  }
  s.compact(s.currentRev);
  const kv = s.range(toBKey(Buffer.from("k0")), "").kvs[0];
  assert.equal(kv.value.length, 256);
  assert.ok(kv.value.buffer !== big.buffer, "the live value was copied out of the mostly-dead buffer");
  assert.ok(kv.value.every((x) => x === 1));
});
