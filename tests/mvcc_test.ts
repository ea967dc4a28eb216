/** The MVCC store and the apply layer, as specifications of etcd's data model. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { MvccStore } from "../server/mvcc/store.ts";
import { prefixEnd, toBKey } from "../server/mvcc/keys.ts";
import { SortedKeys, SortedKeysBuilder } from "../server/mvcc/sorted_keys.ts";
import { KeyArena, keyBytes } from "../server/mvcc/key_arena.ts";
import { PagedInt32Array } from "../server/mvcc/paged_array.ts";
import { Applier } from "../server/apply/applier.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { decodeState, encodeState } from "../server/apply/state_codec.ts";
import { EtcdError } from "../server/errors.ts";
import { Members } from "../server/membership/members.ts";

const b = (s: string) => Buffer.from(s, "latin1");

function setup() {
  const store = new MvccStore();
  let now = 0;
  const lessor = new Lessor(2, () => now);
  const applier = new Applier(
    store,
    lessor,
    (rev) => ({ cluster_id: "1", member_id: "2", revision: rev, raft_term: "1" }),
  );
  // deno-lint-ignore no-explicit-any
  const apply = (req: any): any => applier.apply(req);
  const put = (k: string, v: string, extra = {}) =>
    apply({ op: "put", put: { key: b(k), value: b(v), lease: "0", ...extra } });
  const del = (k: string, end = "", extra = {}) =>
    apply({ op: "delete_range", delete_range: { key: b(k), range_end: b(end), ...extra } });
  // deno-lint-ignore no-explicit-any
  const range = (k: string, end = "", extra: any = {}) => applier.range({ key: b(k), range_end: b(end), ...extra });
  return { store, lessor, applier, apply, put, del, range, advance: (ms: number) => (now += ms) };
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof EtcdError) return e.message;
    throw e;
  }
  return "no error";
}

Deno.test("revisions start at 1 and every change adds exactly one", () => {
  const { store, put, del } = setup();
  assert.equal(store.currentRev, 1);
  assert.equal(put("a", "1").header.revision, 2);
  assert.equal(put("a", "2").header.revision, 3);
  assert.equal(del("a").header.revision, 4);
  assert.equal(del("a").header.revision, 4, "deleting nothing creates no revision");
});

Deno.test("create/mod revision and version follow etcd; a delete resets the version", () => {
  const { put, del, range } = setup();
  put("k", "1");
  put("k", "2");
  let kv = range("k").kvs[0];
  assert.deepEqual([kv.create_revision, kv.mod_revision, kv.version], [2, 3, 2]);
  del("k");
  put("k", "3");
  kv = range("k").kvs[0];
  assert.deepEqual([kv.create_revision, kv.mod_revision, kv.version], [5, 5, 1]);
});

Deno.test("reads at past revisions, compaction and future revisions", () => {
  const { store, put, range, apply } = setup();
  for (const v of ["a", "b", "c"]) put("k", v); // revs 2, 3, 4
  assert.equal(range("k", "", { revision: 2 }).kvs[0].value.toString(), "a");
  assert.equal(range("k", "", { revision: 2 }).header.revision, 4, "the header carries the current revision");
  apply({ op: "compaction", compaction: { revision: "3" } });
  assert.equal(code(() => range("k", "", { revision: 2 })), "etcdserver: mvcc: required revision has been compacted");
  assert.equal(range("k", "", { revision: 3 }).kvs[0].value.toString(), "b", "the compaction revision stays readable");
  assert.equal(code(() => range("k", "", { revision: 9 })), "etcdserver: mvcc: required revision is a future revision");
  assert.equal(code(() => store.compact(3)), "etcdserver: mvcc: required revision has been compacted");
});

Deno.test("range_end rules: single key, prefix, from-key with \\0, and all keys", () => {
  const { put, range } = setup();
  for (const k of ["a", "ab", "abc", "b", "\u00ff"]) put(k, k);
  assert.deepEqual(range("ab").kvs.map((kv) => kv.key.toString("latin1")), ["ab"]);
  const pe = Buffer.from(prefixEnd(b("ab"))).toString("latin1");
  assert.deepEqual(range("ab", pe).kvs.map((kv) => kv.key.toString("latin1")), ["ab", "abc"]);
  assert.deepEqual(range("b", "\0").kvs.map((kv) => kv.key.toString("latin1")), ["b", "\u00ff"]);
  assert.equal(range("\0", "\0").count, 5);
  assert.equal(range("b", "a").count, 0, "an end before the key is an empty range");
});

Deno.test("limit, count, more, sort and filters", () => {
  const { put, range } = setup();
  put("k1", "c"); // 2
  put("k2", "a"); // 3
  put("k3", "b"); // 4
  put("k1", "d"); // 5
  let r = range("k", "l", { limit: 2 });
  assert.deepEqual([r.kvs.length, r.count, r.more], [2, 3, true]);
  r = range("k", "l", { sort_order: 2, sort_target: 0 });
  assert.deepEqual(r.kvs.map((kv) => kv.key.toString()), ["k3", "k2", "k1"]);
  r = range("k", "l", { sort_target: 4 }); // by value, ascending by default for non-key targets
  assert.deepEqual(r.kvs.map((kv) => kv.value.toString()), ["a", "b", "d"]);
  r = range("k", "l", { min_mod_revision: "4" });
  assert.deepEqual(r.kvs.map((kv) => kv.key.toString()), ["k1", "k3"]);
  assert.equal(r.count, 3, "count ignores filters");
  r = range("k", "l", { count_only: true });
  assert.deepEqual([r.kvs.length, r.count], [0, 3]);
  r = range("k", "l", { keys_only: true });
  assert.equal(r.kvs[0].value.length, 0);
});

Deno.test("put options: prev_kv, ignore_value, ignore_lease with etcd's errors", () => {
  const { put } = setup();
  assert.equal(code(() => put("x", "", { ignore_value: true })), "etcdserver: key not found");
  put("x", "1");
  assert.equal(put("x", "2", { prev_kv: true }).prev_kv.value.toString(), "1");
  put("x", "", { ignore_value: true });
  assert.equal(code(() => put("x", "v", { lease: "77" })), "etcdserver: requested lease not found");
});

Deno.test("txn: compares, branches, reads of own writes, missing keys and nested txns", () => {
  const { apply, put, range, store } = setup();
  put("a", "1"); // 2
  const txn = (compare: unknown[], success: unknown[], failure: unknown[] = []) =>
    apply({ op: "txn", txn: { compare, success, failure } });
  const r = txn(
    [{ key: b("a"), target: 3, result: 0, value: b("1"), range_end: b("") }],
    [
      { request: "request_put", request_put: { key: b("a"), value: b("2"), lease: "0" } },
      { request: "request_range", request_range: { key: b("a"), range_end: b("") } },
    ],
  );
  assert.equal(r.succeeded, true);
  assert.equal(r.header.revision, 3);
  assert.equal(r.responses[1].response_range.kvs[0].value.toString(), "2", "a txn reads its own writes");
  assert.deepEqual(r.responses[0].response_put.header, { revision: 3 });
  // a value compare against a missing key always fails; version of a missing key is 0
  assert.equal(txn([{ key: b("nope"), target: 3, result: 3, value: b("x"), range_end: b("") }], []).succeeded, false);
  assert.equal(txn([{ key: b("nope"), target: 0, result: 0, version: "0", range_end: b("") }], []).succeeded, true);
  assert.equal(store.currentRev, 3, "txns without writes create no revision");
  const nested = txn([], [{
    request: "request_txn",
    request_txn: {
      compare: [],
      success: [{ request: "request_put", request_put: { key: b("n"), value: b("1") } }],
      failure: [],
    },
  }]);
  assert.equal(nested.header.revision, 4);
  assert.equal(range("n").kvs[0].mod_revision, 4);
});

Deno.test("leases: attach keys, revoke deletes them in one revision, expiry is reported", () => {
  const { apply, put, range, lessor, store, advance } = setup();
  assert.equal(lessor.grantTTL(1), 2, "the proposing member raises the TTL to its minimum");
  apply({ op: "lease_grant", lease_grant: { ID: "100", TTL: "2" } });
  assert.equal(lessor.get("100")!.ttl, 2, "apply keeps the TTL the log holds");
  put("l1", "x", { lease: "100" });
  put("l2", "y", { lease: "100" });
  const rev = store.currentRev;
  advance(2500);
  assert.deepEqual(lessor.expired(), ["100"]);
  apply({ op: "lease_revoke", lease_revoke: { ID: "100" } });
  assert.equal(store.currentRev, rev + 1);
  assert.equal(range("l", "m").count, 0);
  assert.equal(
    code(() => apply({ op: "lease_revoke", lease_revoke: { ID: "100" } })),
    "etcdserver: requested lease not found",
  );
});

Deno.test("compaction frees superseded versions and the history", () => {
  const { store, put, del } = setup();
  for (let i = 0; i < 100; i++) put("k", "v".repeat(100));
  put("gone", "x");
  del("gone");
  const before = store.sizeBytes;
  store.compact(store.currentRev);
  assert.ok(store.sizeBytes < before / 50, `${store.sizeBytes} < ${before / 50}`);
  assert.ok(store.eventsSince(0).length <= 1, "only the compaction revision itself stays in the history");
  assert.equal(store.range(toBKey(b("k")), "").count, 1);
  assert.equal(store.range(toBKey(b("gone")), "").count, 0);
});

Deno.test("the state codec round-trips versions, history, leases, alarms and the compaction point", () => {
  const s = setup();
  s.apply({ op: "lease_grant", lease_grant: { ID: "7587862072459722555", TTL: "30" } });
  s.put("a", "1");
  s.put("a", "2", { lease: "7587862072459722555" });
  s.put("bin\u0000\u00ff", "\u0001");
  s.del("bin\u0000\u00ff");
  s.apply({ op: "compaction", compaction: { revision: "3" } });
  s.put("z", "last");
  const members = new Members();
  members.add({ ID: "11", name: "m1", peerURLs: ["http://127.0.0.1:1"], clientURLs: [], isLearner: false });
  const confState = { voters: ["11"], learners: [] };
  const blob = encodeState({ appliedIndex: 42, term: 3, confState }, s.store, s.lessor, s.applier.alarms, members);
  const t = setup();
  const restored = new Members();
  const meta = decodeState(blob, t.store, t.lessor, t.applier.alarms, restored);
  assert.deepEqual(meta, { appliedIndex: 42, term: 3, confState });
  assert.deepEqual(restored.list(), members.list());
  assert.equal(t.store.currentRev, s.store.currentRev);
  assert.equal(t.store.compactRev, 3);
  assert.deepEqual(t.range("\0", "\0"), s.range("\0", "\0"));
  assert.deepEqual(t.range("a", "", { revision: 3 }).kvs, s.range("a", "", { revision: 3 }).kvs);
  assert.deepEqual(
    t.store.eventsSince(3).map((e) => [e.type, e.kv.mod_revision]),
    s.store.eventsSince(3).map((e) => [e.type, e.kv.mod_revision]),
  );
  assert.deepEqual([...t.lessor.get("7587862072459722555")!.keys], ["a"]);
  assert.equal(t.store.hashKV(0).hash, s.store.hashKV(0).hash);
});

/**
 * The key index over string keys, for these tests: each key gets an id and its bytes in an arena, as the store gives
 * them; a key deleted from the index loses its bytes (and its id may be reused), as in the store.
 */
class StringIndex {
  readonly keys = new KeyArena();
  idx = new SortedKeys(this.keys);
  readonly ids = new Map<string, number>();
  #free: number[] = [];
  #next = 0;

  insert(k: string): number {
    let id = this.ids.get(k);
    if (id !== undefined) return id;
    id = this.#free.pop() ?? this.#next++;
    this.keys.set(id, keyBytes(k));
    this.ids.set(k, id);
    this.idx.insert(id);
    return id;
  }

  delete(k: string): void {
    const id = this.ids.get(k);
    if (id === undefined) return;
    this.idx.delete(id);
    this.keys.free(id);
    this.ids.delete(k);
    this.#free.push(id);
  }

  get(k: string): number | undefined {
    return this.idx.get(keyBytes(k));
  }

  /** Keys in [from, end) in index order (end null: no upper bound). */
  range(from: string, end: string | null): string[] {
    const out: string[] = [];
    this.idx.forEach(keyBytes(from), end === null ? null : keyBytes(end), (id) => out.push(this.keys.string(id)));
    return out;
  }
}

Deno.test("the key index stays sorted through random inserts, deletes and filters (against a reference)", () => {
  const idx = new StringIndex();
  const ref = new Set<string>();
  let seed = 12345;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let step = 0; step < 20000; step++) {
    // binary keys too: the order is byte order
    const k = String.fromCharCode(97 + rand(26)) + rand(3000).toString(36) + (rand(5) === 0 ? "\u00ff\u0000" : "");
    if (rand(3) === 0) {
      idx.delete(k);
      ref.delete(k);
    } else {
      idx.insert(k);
      ref.add(k);
    }
    if (step % 5000 === 4999) {
      const gone = [...ref].filter((x) => x.endsWith("7"));
      const goneIds = new Set(gone.map((x) => idx.ids.get(x)!));
      idx.idx.filterOut((id) => goneIds.has(id));
      for (const x of gone) {
        idx.keys.free(idx.ids.get(x)!);
        idx.ids.delete(x);
        ref.delete(x);
      }
    }
  }
  const sorted = [...ref].sort();
  assert.equal(idx.idx.size, sorted.length);
  assert.deepEqual(idx.range("", null), sorted);
  assert.deepEqual(idx.range("m", "p"), sorted.filter((k) => k >= "m" && k < "p"));
  for (const k of sorted) assert.equal(idx.get(k), idx.ids.get(k));
  assert.equal(idx.get("zzzz-absent"), undefined);
});

Deno.test("key arena: keys set, freed and set again (slots reused, a repack past the dead-byte limit) read back", () => {
  const arena = new KeyArena();
  const ref = new Map<number, string>();
  let seed = 99;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  const key = (id: number, round: number) =>
    `k${id}/${round}/` + "x".repeat(rand(300)) + String.fromCharCode(rand(256));
  // enough churn that the freed bytes pass REPACK_MIN_DEAD more than once; a key longer than a page too
  for (let round = 0; round < 12; round++) {
    for (let id = 0; id < 8000; id++) {
      if (ref.has(id) && rand(2) === 0) {
        arena.free(id);
        ref.delete(id);
      } else {
        const k = id === 7 && round === 3 ? "L".repeat((1 << 20) + 5) : key(id, round);
        arena.set(id, keyBytes(k));
        ref.set(id, k);
      }
    }
  }
  let live = 0;
  for (let id = 0; id < 8000; id++) {
    const k = ref.get(id);
    if (k === undefined) {
      assert.equal(arena.length(id), -1);
      continue;
    }
    live += k.length;
    assert.equal(arena.string(id), k);
    assert.equal(arena.compare(id, keyBytes(k)), 0);
    assert.ok(arena.compare(id, keyBytes(k + "\u0000")) < 0);
  }
  assert.equal(arena.liveBytes, live);
});

Deno.test("paged int32 array: push, get and set across page boundaries read back like a plain array", () => {
  const paged = new PagedInt32Array(), plain: number[] = [];
  for (let i = 0; i < 10_000; i++) assert.equal(paged.push(i * 3), plain.push(i * 3) - 1);
  for (let i = 0; i < 10_000; i += 7) {
    paged.set(i, -i - 1);
    plain[i] = -i - 1;
  }
  assert.equal(paged.length, plain.length);
  for (let i = 0; i < plain.length; i++) assert.equal(paged.get(i), plain[i]);
});

Deno.test("a store of 10,000 keys (key ids over several pages) reads, deletes and compacts them all", () => {
  const s = new MvccStore();
  const k = (i: number) => `p${String(i).padStart(5, "0")}`;
  for (let i = 0; i < 10_000; i += 100) {
    const t = s.write();
    for (let j = i; j < i + 100; j++) t.put(k(j), Buffer.from(`v${j}`), "0");
    t.end();
  }
  const t = s.write();
  t.deleteRange(k(0), k(5000));
  t.end();
  s.compact(s.currentRev);
  const rest = s.range("", null, {});
  assert.equal(rest.count, 5000);
  assert.deepEqual(rest.kvs.map((kv) => kv.value.toString()), Array.from({ length: 5000 }, (_, i) => `v${5000 + i}`));
  const u = s.write();
  for (let i = 0; i < 5000; i++) u.put(k(i), Buffer.from("again"), "0"); // reuses the freed key ids
  u.end();
  assert.equal(s.keyCount, 10_000);
  assert.equal(s.range(k(4999), "", {}).kvs[0].value.toString(), "again");
});

Deno.test("key index walk: resumed after inserts and deletes (the last key visited included), keys present throughout seen once, in order", () => {
  const idx = new StringIndex();
  const key = (i: number) => `k${String(i).padStart(5, "0")}`;
  for (let i = 0; i < 3000; i += 2) idx.insert(key(i));
  const seen: number[] = [];
  const walk = idx.idx.walk(keyBytes(key(100)), keyBytes(key(2900)));
  let steps = 0;
  while (!walk(37, (id) => seen.push(Number(idx.keys.string(id).slice(1))))) {
    steps++;
    const last = seen.at(-1)!;
    idx.delete(key(last)); // the key the walk stopped after (its id may go to one of the keys inserted next)
    idx.insert(key(last + 1)); // odd keys: inserted around the walk's position
    idx.insert(key(2999 - steps));
    if (steps % 5 === 0) idx.delete(key(last + 40)); // a key ahead: deleted before the walk gets there
  }
  assert.ok(steps > 20);
  const even = seen.filter((v) => v % 2 === 0);
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b), "in key order");
  assert.equal(new Set(seen).size, seen.length, "once each");
  // every even key of the range not seen was deleted ahead of the walk (it is gone now)
  for (let i = 100; i < 2900; i += 2) {
    if (!even.includes(i)) assert.equal(idx.get(key(i)), undefined, `even key ${i} present throughout was skipped`);
  }
});

Deno.test("key index values(): a walk held across inserts and deletes sees the keys present throughout once, in order", () => {
  const idx = new StringIndex();
  const key = (i: number) => `v${String(i).padStart(5, "0")}`;
  for (let i = 0; i < 4000; i += 2) idx.insert(key(i));
  const seen: number[] = [];
  let n = 0;
  for (const id of idx.idx.values()) {
    const v = Number(idx.keys.string(id).slice(1));
    seen.push(v);
    if (++n % 50 === 0) {
      idx.delete(key(v)); // the key the walk holds: its bytes are gone, its id reused by the next insert
      if (n % 100 === 0) idx.insert(key(v + 1)); // half the time its successor is a key present throughout
      idx.insert(key(3999 - n));
      idx.delete(key(v + 60));
    }
  }
  const even = seen.filter((v) => v % 2 === 0);
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b), "in key order");
  assert.equal(new Set(seen).size, seen.length, "once each");
  for (let i = 0; i < 4000; i += 2) {
    if (!even.includes(i)) assert.equal(idx.get(key(i)), undefined, `even key ${i} present throughout was skipped`);
  }
});

Deno.test("the key index built at once from keys in any order, sealed at any points, equals one built by inserts", () => {
  let seed = 777;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (const n of [0, 1, 700, 30000]) {
    const ids = new Map<string, number>();
    const builder = new SortedKeysBuilder(ids);
    const ref = new StringIndex();
    for (let i = 0; i < n; i++) {
      // binary keys too: the order is the byte order of `<`
      const k = String.fromCharCode(rand(256)) + rand(1e6).toString(36) + (rand(4) === 0 ? "\u00ff\u0000" : "");
      if (ids.has(k)) continue;
      ids.set(k, ref.insert(k));
      builder.add(k);
      if (rand(500) === 0) builder.seal();
    }
    const built = builder.build(ref.keys);
    assert.equal(built.size, ref.idx.size);
    const all: number[] = [], expected: number[] = [];
    built.forEach(keyBytes(""), null, (id) => all.push(id));
    ref.idx.forEach(keyBytes(""), null, (id) => expected.push(id));
    assert.deepEqual(all, expected, `${n} keys`);
    // it takes inserts, deletes and lookups like any index
    ref.idx = built;
    for (const id of expected.slice(0, 50)) {
      const k = ref.keys.string(id);
      assert.equal(ref.get(k), id);
      ref.delete(k);
      assert.equal(ref.get(k), undefined);
    }
    for (let i = 0; i < 2000; i++) ref.insert(`new/${i}`);
    assert.equal(ref.get("new/1999"), ref.ids.get("new/1999"));
    const keys = ref.range("", null);
    assert.deepEqual(keys, [...keys].sort());
  }
});
