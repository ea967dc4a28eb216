import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { MvccStore, RecordCursor } from "../server/mvcc/store.ts";
import { Applier } from "../server/apply/applier.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { decodeState, encodeState, StateDecoder, StateEncoder } from "../server/apply/state_codec.ts";
import { Members } from "../server/membership/members.ts";

const b = (s: string) => Buffer.from(s, "latin1");

/** A state machine on a fixed clock, with the requests the state is built of. */
function machine() {
  const store = new MvccStore();
  const lessor = new Lessor(2, () => 0);
  const applier = new Applier(
    store,
    lessor,
    (rev) => ({ cluster_id: "1", member_id: "2", revision: rev, raft_term: "1" }),
  );
  const members = new Members();
  members.add({ ID: "11", name: "m1", peerURLs: ["http://127.0.0.1:1"], clientURLs: [], isLearner: false });
  // deno-lint-ignore no-explicit-any
  const apply = (req: any) => applier.apply(req);
  const put = (k: string, v: string, lease = "0") => apply({ op: "put", put: { key: b(k), value: b(v), lease } });
  const del = (k: string) => apply({ op: "delete_range", delete_range: { key: b(k) } });
  const encode = () =>
    encodeState({ appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } }, ...parts());
  const parts = () => [store, lessor, applier.alarms, members] as const;
  return { store, lessor, applier, members, apply, put, del, encode, parts };
}

/**
 * A state with every part a blob holds: ~20,000 records (keys of 0 to 3 KB values, binary keys, keys on leases,
 * overwrites, deletes), a compaction with history after it, leases, an alarm. Deterministic: the same calls build
 * the same state.
 */
function buildState(m: ReturnType<typeof machine>, seed = 1) {
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let l = 1; l <= 300; l++) m.apply({ op: "lease_grant", lease_grant: { ID: String(1000 + l), TTL: String(l) } });
  const key = (i: number) => (i % 7 === 0 ? `bin\u0000\u00ff${i}` : `key/${i.toString(36)}`);
  const value = (i: number) => String.fromCharCode(97 + (i % 26)).repeat(rand(3000));
  for (let i = 0; i < 3000; i++) m.put(key(i), value(i), i % 10 === 0 ? String(1001 + rand(300)) : "0");
  for (let i = 0; i < 6000; i++) m.put(key(rand(3000)), value(i));
  for (let i = 0; i < 200; i++) m.del(key(rand(3000)));
  m.apply({ op: "compaction", compaction: { revision: String(m.store.currentRev - 2000) } });
  for (let i = 0; i < 10000; i++) {
    if (i % 50 === 0) m.del(key(rand(3000)));
    else m.put(key(rand(4000)), value(i));
  }
  for (let l = 1; l <= 300; l += 10) m.apply({ op: "lease_revoke", lease_revoke: { ID: String(1000 + l) } });
  m.apply({ op: "alarm", alarm: { action: 1, memberID: "11", alarm: 1 } });
}

/**
 * Runs an encode or decode to its end in slices of step(0), yielding 2 ms between them, and checks it took at least 10
 * slices while a timer (whose firings `turns` counts) fired at least 5 times. step(0): each slice stops at its first
 * look at the clock (every 512 records), so the count does not depend on the machine's speed.
 */
async function slicesYieldingToTimers(work: { step(ms: number): boolean }, turns: () => number, what: string) {
  let slices = 0;
  while (!work.step(0)) {
    slices++;
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.ok(slices >= 10, `${slices} slices`);
  assert.ok(turns() >= 5, `the timer fired ${turns()} times during the ${what}`);
}

async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return [...d].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** What the encoder wrote for `buildState()` when the layout got its key table ("EGS3", 2026-12-07). */
const GOLDEN = { bytes: 22_528_045, sha256: "59e3e9581f825a5915b4e8b0fdd518c957c42ad0e9a55fd21f85d033a4e81b2b" };

/** What the synchronous encoder of 2026-12-05 wrote for `buildState()`, in the layout before the key table. */
const GOLDEN_V2 = { bytes: 22_612_945, sha256: "d8f52e59b33866b1d554bc10fb023c206c557fec306fc3a31e1c4c3a0bad0970" };

/**
 * The blob of a machine in the layout before the key table ("EGS2"), as the encoder wrote it until 2026-12-07: each
 * record names its key. Checked against GOLDEN_V2; the decoder still reads this layout (snapshots on disk).
 */
function encodeV2(m: ReturnType<typeof machine>, meta: { appliedIndex: number; term: number; confState: unknown }) {
  const parts: number[] = [];
  const u8 = (x: number) => parts.push(x);
  const u32 = (x: number) => parts.push(x & 0xff, (x >>> 8) & 0xff, (x >>> 16) & 0xff, x >>> 24);
  const f64 = (x: number) => parts.push(...new Uint8Array(new Float64Array([x]).buffer));
  const bytes = (b: Uint8Array) => {
    u32(b.length);
    for (const x of b) parts.push(x);
  };
  const str = (s: string) => bytes(new TextEncoder().encode(s));
  const latin1 = (s: string) => bytes(b(s));
  u32(0x45475332);
  f64(meta.appliedIndex);
  f64(meta.term);
  str(JSON.stringify(meta.confState));
  str(JSON.stringify(m.members.toJSON()));
  f64(m.store.currentRev);
  f64(m.store.compactRev);
  u32(m.lessor.leases.size);
  for (const l of m.lessor.leases.values()) {
    latin1(l.id);
    f64(l.ttl);
  }
  u32(m.applier.alarms.length);
  for (const a of m.applier.alarms) {
    str(a.memberID);
    u32(a.alarm);
  }
  const out: Uint8Array[] = [new Uint8Array(parts)];
  parts.length = 0;
  for (const idx of m.store.dumpRecords()) {
    const r = m.store.record(idx);
    u8(1);
    bytes(r.key);
    f64(r.create);
    f64(r.mod);
    f64(r.version);
    latin1(r.lease);
    bytes(r.value);
    out.push(new Uint8Array(parts));
    parts.length = 0;
  }
  u8(0);
  str("null");
  out.push(new Uint8Array(parts));
  return new Uint8Array(Buffer.concat(out));
}

Deno.test("state codec: the blob of a fixed state is byte for byte what the synchronous encoder wrote", async () => {
  const m = machine();
  buildState(m);
  const blob = m.encode();
  assert.equal(blob.length, GOLDEN.bytes);
  assert.equal(await sha256(blob), GOLDEN.sha256);
  const sliced = machine();
  buildState(sliced);
  const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
  const inSlices = await new StateEncoder(meta, ...sliced.parts()).inSlices(0);
  assert.equal(await sha256(inSlices), GOLDEN.sha256);
});

Deno.test("state codec: a blob of the layout before the key table (EGS2) decodes, in slices too, to the same state", async () => {
  const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
  const ref = machine();
  buildState(ref);
  const v2 = encodeV2(ref, meta);
  assert.equal(v2.length, GOLDEN_V2.bytes);
  assert.equal(await sha256(v2), GOLDEN_V2.sha256, "the test's EGS2 writer writes what the old encoder wrote");
  for (const sliced of [false, true]) {
    const m = machine();
    m.put("only/here", "old state");
    const dec = new StateDecoder(v2);
    if (sliced) await slicesYieldingToTimers(dec, () => Infinity, "EGS2 decode");
    assert.deepEqual(dec.install(...m.parts()), meta);
    assert.deepEqual(view(m), view(ref));
    assert.equal(await sha256(m.encode()), GOLDEN.sha256, "and encodes to the new layout's blob of the same state");
    const same = machine();
    buildState(same);
    for (const x of [m, same]) {
      x.apply({ op: "alarm", alarm: { action: 2, memberID: "11", alarm: 1 } });
      x.put("key/1", "after");
      x.put("zzz/new", "after");
    }
    assert.deepEqual(view(m), view(same), "its key index is whole");
  }
});

Deno.test("state codec: a decode that follows the blob's arrival, in pieces of any size, installs the state of the whole blob", async () => {
  const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
  const ref = machine();
  buildState(ref);
  const blobs = { EGS3: ref.encode(), EGS2: encodeV2(ref, meta) };
  let seed = 5;
  const rand = (n: number) => (seed = (seed * 48271) % 2147483647) % n;
  for (const [layout, blob] of Object.entries(blobs)) {
    // the buffer the blob arrives into: zeros where nothing arrived yet
    const buf = new Uint8Array(blob.length);
    const dec = new StateDecoder(buf, 0);
    assert.throws(() => dec.meta, /header not decoded yet/);
    let end = 0, waits = 0;
    while (end < blob.length) {
      // 1 byte to 200 KB at a time: pieces end inside the header, keys, records, values and the auth state
      const from = end;
      end = Math.min(blob.length, end + (rand(4) === 0 ? 1 + rand(40) : rand(200_000)));
      buf.set(blob.subarray(from, end), from);
      dec.arrived(end);
      while (!dec.step(rand(2) === 0 ? 0 : Infinity)) {
        if (dec.waiting) {
          waits++;
          break;
        }
      }
    }
    assert.ok(waits > 100, `${layout}: waited ${waits} times`);
    const m = machine();
    assert.deepEqual(dec.install(...m.parts()), meta);
    assert.deepEqual(view(m), view(ref), layout);
    assert.equal(await sha256(m.encode()), GOLDEN.sha256, layout);
  }
  // installing before the rest arrived is refused
  const early = new StateDecoder(blobs.EGS3, 0);
  early.arrived(blobs.EGS3.length - 1);
  const m = machine();
  m.put("only/here", "old state");
  const before = view(m);
  assert.throws(() => early.install(...m.parts()), /the rest of the blob has not arrived/);
  assert.deepEqual(view(m), before);
});

Deno.test("state codec: a key table out of order, a record of a key past the table, a key without records fail the decode and change nothing", () => {
  const m = machine();
  for (const k of ["a", "b", "c"]) m.put(k, "v");
  const blob = m.encode();
  // the key table: u32 3, then each key as u32 1 + its byte
  const table = blob.findIndex((_, i) => [3, 0, 0, 0, 1, 0, 0, 0, 0x61].every((x, j) => blob[i + j] === x));
  assert.ok(table > 0);
  // then u32 #records, and records of 38 bytes: u32 key number, 3 f64, lease "0" and value "v" (u32 length + 1 byte)
  const keyNo = (i: number) => table + 4 + 3 * 5 + 4 + 38 * i;
  const live = machine();
  live.put("only/here", "old state");
  const before = view(live);
  const broken = (what: RegExp, change: (b: Uint8Array) => void) => {
    const copy = blob.slice();
    change(copy);
    assert.throws(() => decodeState(copy, ...live.parts()), what);
    assert.deepEqual(view(live), before);
  };
  broken(/out of order/, (x) => [x[table + 8], x[table + 13]] = [x[table + 13], x[table + 8]]); // b, a, c
  broken(/out of order/, (x) => x[table + 13] = 0x61); // a, a, c
  broken(/record of key 3 of 3/, (x) => x[keyNo(0)] = 3);
  broken(/key 2 has no records/, (x) => x[keyNo(2)] = 1); // c's record names b
  const ok = machine();
  decodeState(blob, ...ok.parts());
  assert.deepEqual(view(ok), view(m));
});

Deno.test("state codec: an encode in slices yields to timers and is the state at its start despite writes meanwhile", async () => {
  const ref = machine(), live = machine();
  buildState(ref);
  buildState(live);
  const expected = ref.encode();
  const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
  const enc = new StateEncoder(meta, ...live.parts());
  // writes between slices: new keys (before and after the walk's position), overwrites, deletes, a lease revoked
  // and one granted, a txn that fails and is rolled back
  let seed = 99, turns = 0;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  const writer = setInterval(() => {
    turns++;
    if (turns === 1) live.apply({ op: "alarm", alarm: { action: 2, memberID: "11", alarm: 1 } }); // writes again
    for (let i = 0; i < 20; i++) live.put(`key/${rand(5000).toString(36)}`, "new".repeat(rand(100)));
    live.put(`aaa/${turns}`, "before the walk");
    live.del(`key/${rand(3000).toString(36)}`);
    live.apply({ op: "lease_grant", lease_grant: { ID: String(5000 + turns), TTL: "5" } });
    live.put(`leased/${turns}`, "x", String(5000 + turns));
    if (turns === 3) live.apply({ op: "lease_revoke", lease_revoke: { ID: "1002" } });
    assert.throws(() => live.put("k", "v", "999999")); // lease not found: nothing applied
  }, 0);
  await slicesYieldingToTimers(enc, () => turns, "encode");
  clearInterval(writer);
  assert.equal(await sha256(enc.result), await sha256(expected));
  // the live store still reads what was written (its values now in the blob or where they were)
  for (let t = 1; t <= turns; t++) {
    assert.equal(live.store.range(`aaa/${t}`, "").kvs[0].value.toString(), "before the walk");
  }
  const again = machine();
  decodeState(enc.result, again.store, again.lessor, again.applier.alarms, new Members());
  assert.equal(again.store.hashKV(0).hash, ref.store.hashKV(0).hash);
});

Deno.test("state codec: an encode in slices is the state at its start through a compaction (which waits for it) or a restore (which finishes it first)", async () => {
  for (const restructure of ["compaction", "restore"] as const) {
    const ref = machine(), live = machine();
    buildState(ref);
    buildState(live);
    const expected = await sha256(ref.encode());
    const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
    let done = false;
    const pending = new StateEncoder(meta, ...live.parts()).inSlices(0).finally(() => (done = true));
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(done, false, "the encode is still under way");
    live.apply({ op: "alarm", alarm: { action: 2, memberID: "11", alarm: 1 } });
    live.put("after", "the encode began");
    if (restructure === "compaction") {
      live.encode(); // another encode, at once, meanwhile
      live.apply({ op: "compaction", compaction: { revision: String(live.store.currentRev) } });
      ref.apply({ op: "alarm", alarm: { action: 2, memberID: "11", alarm: 1 } });
      ref.put("after", "the encode began");
      ref.apply({ op: "compaction", compaction: { revision: String(ref.store.currentRev) } });
      // the compaction's steps wait for the encode under way, which goes on in its slices
      for (let i = 0; i < 3; i++) assert.equal(live.store.compactionStep(Infinity), false);
      assert.equal(await sha256(await pending), expected, restructure);
      assert.ok(live.store.compacting);
      assert.equal(live.store.compactionStep(Infinity), true);
      assert.equal(live.store.hashKV(0).hash, ref.store.hashKV(0).hash, restructure);
      // and something that needs the compaction done at once finishes an encode under way first
      live.put("one", "more");
      const again = new StateEncoder(meta, ...live.parts()).inSlices(0);
      live.apply({ op: "compaction", compaction: { revision: String(live.store.currentRev) } });
      live.store.settleCompaction();
      const blob = await again;
      assert.ok(blob.length > 0 && !live.store.compacting);
      continue;
    } else {
      decodeState(ref.encode(), live.store, live.lessor, live.applier.alarms, new Members());
    }
    assert.equal(await sha256(await pending), expected, restructure);
  }
});

Deno.test("state codec: 20,000 leases are written in slices too, and the blob is the one written at once", async () => {
  const m = machine();
  for (let l = 1; l <= 20_000; l++) m.apply({ op: "lease_grant", lease_grant: { ID: String(7000 + l), TTL: "60" } });
  m.put("k", "v", "7001");
  m.apply({ op: "alarm", alarm: { action: 1, memberID: "11", alarm: 1 } });
  const expected = m.encode();
  const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
  const enc = new StateEncoder(meta, ...m.parts());
  let slices = 0;
  // step(0): the sizing walk is one slice (two records), then each slice writes 512 leases
  while (!enc.step(0)) {
    slices++;
    m.apply({ op: "lease_revoke", lease_revoke: { ID: String(27_001 - slices) } }); // still in the blob
    await new Promise((r) => setTimeout(r, 0));
  }
  assert.ok(slices >= 20_000 / 512, `${slices} slices`);
  assert.equal(await sha256(enc.result), await sha256(expected));
  const again = machine();
  decodeState(enc.result, again.store, again.lessor, again.applier.alarms, new Members());
  assert.equal(again.lessor.leases.size, 20_000);
  assert.equal(again.applier.alarms.length, 1);
});

/** What a reader sees of a machine: every key's newest value, the lease TTLs and the alarms. */
function view(m: ReturnType<typeof machine>) {
  return {
    hash: m.store.hashKV(0).hash,
    rev: m.store.currentRev,
    keys: m.store.keyCount,
    leases: [...m.lessor.leases.values()].map((l) => `${l.id}:${l.ttl}:${[...l.keys].sort().join(",")}`).sort(),
    alarms: JSON.stringify(m.applier.alarms),
    members: JSON.stringify(m.members.toJSON()),
  };
}

Deno.test("state codec: a decode in slices yields to timers, leaves the live state serving as it was, then installs the blob's state at once", async () => {
  const ref = machine();
  buildState(ref);
  const blob = ref.encode();
  // the member being restored holds other state, and keeps being read while the decode runs
  const live = machine();
  live.put("only/here", "old state");
  buildState(live, 7);
  const before = view(live);
  const dec = new StateDecoder(blob);
  let turns = 0;
  const reader = setInterval(() => {
    turns++;
    assert.deepEqual(view(live), before, "the live state is untouched while the decode runs");
    assert.equal(live.store.range("only/here", "").kvs[0].value.toString(), "old state");
  }, 0);
  await slicesYieldingToTimers(dec, () => turns, "decode");
  clearInterval(reader);
  const meta = dec.install(...live.parts());
  assert.deepEqual(meta, { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } });
  assert.deepEqual(view(live), view(ref));
  assert.equal(live.store.range("only/here", "").count, 0);
  // the installed state encodes to the same blob, and takes writes (its key index is whole)
  assert.equal(await sha256(live.encode()), await sha256(blob));
  for (const m of [live, ref]) m.apply({ op: "alarm", alarm: { action: 2, memberID: "11", alarm: 1 } });
  live.put("key/1", "after");
  ref.put("key/1", "after");
  live.put("zzz/new", "after");
  ref.put("zzz/new", "after");
  assert.deepEqual(view(live), view(ref));
  assert.deepEqual(
    live.store.range("key/", "key0").kvs.map((kv) => kv.key.toString("latin1")),
    ref.store.range("key/", "key0").kvs.map((kv) => kv.key.toString("latin1")),
  );
});

Deno.test("state codec: a truncated blob fails its decode and changes nothing", () => {
  const ref = machine();
  buildState(ref);
  const blob = ref.encode();
  const live = machine();
  live.put("only/here", "old state");
  const before = view(live);
  for (const cut of [10, Math.floor(blob.length / 2), blob.length - 3]) {
    assert.throws(() => decodeState(blob.subarray(0, cut), ...live.parts()), /state snapshot: truncated/);
    assert.deepEqual(view(live), before, `cut at ${cut}`);
  }
});

Deno.test("state codec: an encode in slices abandoned by its signal stops, and leaves the store whole and on its own", async () => {
  const ref = machine(), live = machine();
  buildState(ref);
  buildState(live);
  const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
  const abort = new AbortController();
  const enc = new StateEncoder(meta, ...live.parts());
  // the second walk (which moves values into the blob) is well under way when the signal comes
  let slices = 0;
  const pending = enc.inSlices(0, abort.signal);
  const stopper = setInterval(() => {
    if (++slices === 55) abort.abort("a snapshot from the leader is on its way");
  }, 0);
  await assert.rejects(pending, (e) => e === "a snapshot from the leader is on its way");
  clearInterval(stopper);
  assert.throws(() => enc.step(0), /encode abandoned/);
  // a compaction does not finish the abandoned encode first; the store reads and hashes as the reference does
  for (const m of [live, ref]) {
    m.apply({ op: "alarm", alarm: { action: 2, memberID: "11", alarm: 1 } });
    m.put("after", "the encode was abandoned");
    m.apply({ op: "compaction", compaction: { revision: String(m.store.currentRev - 100) } });
  }
  assert.throws(() => enc.result, /encode not finished/);
  assert.equal(live.store.hashKV(0).hash, ref.store.hashKV(0).hash);
  assert.equal(await sha256(live.encode()), await sha256(ref.encode()));
});

/**
 * A sink that takes the blob as a file writer does: a piece is "written" (copied) only when `written()` settles,
 * a few timer turns after it was handed over. Keeps which buffers the pieces were views of.
 */
function slowSink() {
  const pending: Uint8Array[] = [], done: Uint8Array[] = [], buffers = new Set<ArrayBufferLike>();
  let opened = -1;
  const sink = {
    write(bytes: Uint8Array) {
      pending.push(bytes);
      buffers.add(bytes.buffer);
    },
    async written() {
      await new Promise((r) => setTimeout(r, 1));
      for (const p of pending.splice(0)) done.push(p.slice());
    },
  };
  return {
    open: (size: number) => {
      opened = size;
      return sink;
    },
    blob: () => new Uint8Array(Buffer.concat([...done, ...pending.map((p) => p.slice())])),
    buffers,
    opened: () => opened,
  };
}

Deno.test("state codec: an encode to a sink hands it the blob of the encode at once, in a few reused pieces, despite writes meanwhile", async () => {
  const ref = machine(), live = machine();
  buildState(ref);
  buildState(live);
  const meta = { appliedIndex: 4242, term: 7, confState: { voters: ["11"], learners: [] } };
  const sink = slowSink();
  let turns = 0;
  const writer = setInterval(() => {
    turns++;
    if (turns === 1) live.apply({ op: "alarm", alarm: { action: 2, memberID: "11", alarm: 1 } }); // writes again
    for (let i = 0; i < 20; i++) live.put(`key/${(turns * 31 + i).toString(36)}`, "new".repeat(turns % 50));
    live.del(`key/${(turns * 7).toString(36)}`);
  }, 0);
  const size = await new StateEncoder(meta, ...live.parts()).toSink(sink.open, 1);
  clearInterval(writer);
  const blob = sink.blob();
  assert.equal(size, GOLDEN.bytes);
  assert.equal(sink.opened(), GOLDEN.bytes);
  assert.equal(blob.length, GOLDEN.bytes);
  assert.equal(await sha256(blob), GOLDEN.sha256);
  assert.ok(turns >= 5, `the writes ran ${turns} times during the encode`);
  // 22 MB in pieces of 1 MiB, each reused once written: never more than PIECES_IN_FLIGHT (2) waiting, and one filling
  assert.ok(sink.buffers.size <= 3, `${sink.buffers.size} buffers for the pieces`);
  assert.ok(sink.buffers.size >= 2);
});

Deno.test("state codec: an encode moves the values that live in request buffers into one buffer of the store's, and only those", () => {
  const m = machine();
  // the values of these puts live in one "arena chunk", as values applied from the Raft log do
  const arena = new Uint8Array(1 << 16);
  let used = 0;
  const putFromArena = (k: string, v: string) => {
    const value = arena.subarray(used, used + v.length);
    value.set(b(v));
    used += v.length;
    m.apply({ op: "put", put: { key: b(k), value: Buffer.from(value.buffer, value.byteOffset, value.length) } });
  };
  for (let i = 0; i < 100; i++) putFromArena(`k${i}`, `value ${i}`);
  const buffersOf = () => {
    const c = new RecordCursor(), seen = new Map<string, ArrayBufferLike | null>();
    for (const idx of m.store.dumpRecords()) {
      m.store._readRecord(idx, c);
      seen.set(`${m.store._keyLength(c.keyId)}:${c.mod}`, c.buf);
    }
    return seen;
  };
  assert.ok([...buffersOf().values()].every((buf) => buf === arena.buffer));
  m.encode();
  const first = buffersOf();
  const home = first.values().next().value;
  assert.ok(home && home !== arena.buffer);
  assert.ok([...first.values()].every((buf) => buf === home), "all moved into one buffer");
  // a second encode moves nothing: the values are in the store's own buffer already
  m.encode();
  assert.deepEqual(buffersOf(), first);
  // values written since move at the next encode, into a buffer of their own; the others stay
  for (let i = 0; i < 10; i++) putFromArena(`n${i}`, `newer ${i}`);
  m.encode();
  const third = buffersOf();
  const moved = [...third].filter(([k]) => !first.has(k));
  assert.equal(moved.length, 10);
  assert.ok(moved.every(([, buf]) => buf !== arena.buffer && buf !== home));
  assert.ok([...first.keys()].every((k) => third.get(k) === home));
  for (let i = 0; i < 100; i++) assert.equal(m.store.range(`k${i}`, "").kvs[0].value.toString(), `value ${i}`);
  for (let i = 0; i < 10; i++) assert.equal(m.store.range(`n${i}`, "").kvs[0].value.toString(), `newer ${i}`);
  // what the store no longer uses is let go: writing over the arena changes no value
  arena.fill(0);
  for (let i = 0; i < 100; i++) assert.equal(m.store.range(`k${i}`, "").kvs[0].value.toString(), `value ${i}`);
});
