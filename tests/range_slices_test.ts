/**
 * Reads in slices (issue 14: no request stalls the event loop over 100 ms): a range read at a fixed revision that
 * visits its keys a slice at a time gives exactly the result of the same read in one go, whatever happens between
 * the slices (puts, deletes, new keys, a rolled-back txn, a compaction, a restore), and the Range RPC's sliced path
 * answers byte for byte what the one-go path answers for every shape of request.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Applier, SCAN_SLICE_MS, SCAN_TURN_MS } from "../server/apply/applier.ts";
import { registerEventLoopMetrics, schedTimes } from "../server/metrics/event_loop.ts";
import { Registry } from "../server/metrics/registry.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { type KeyValue, MvccStore } from "../server/mvcc/store.ts";
import { encodeRangeResponse } from "../server/watch/encode.ts";
import { type RangeRequest, SortOrder, SortTarget } from "../proto/mod.ts";

const b = (s: string) => Buffer.from(s, "latin1");
const key = (i: number) => `k${String(i).padStart(5, "0")}`;

/** A store with `n` keys, some updated, some deleted, some on leases: several revisions of history. */
function filled(n: number): MvccStore {
  const s = new MvccStore();
  for (let i = 0; i < n; i += 10) {
    const t = s.write();
    for (let j = i; j < Math.min(n, i + 10); j++) t.put(key(j), b(`v${j}`.repeat(j % 4)), j % 7 === 0 ? "99" : "0");
    t.end();
  }
  for (let i = 0; i < n; i += 3) {
    const t = s.write();
    t.put(key(i), b(`w${i}`), "0");
    t.end();
  }
  for (let i = 1; i < n; i += 5) {
    const t = s.write();
    t.deleteRange(key(i), "");
    t.end();
  }
  return s;
}

/** The records a scan visits, as KeyValues, stepping `keys` at a time and running `between` after each step. */
function scanned(
  s: MvccStore,
  from: string,
  end: string | null,
  rev: number,
  keys: number,
  between: (step: number) => void,
): { kvs: KeyValue[]; count: number } {
  const kvs: KeyValue[] = [];
  const scan = s.scan(from, end, rev, (idx) => kvs.push(s._kv(idx)));
  for (let step = 0; !scan.step(keys); step++) between(step);
  return { kvs, count: scan.count };
}

Deno.test("range scan: slices of any size give the one-go read, for every range shape and revision", () => {
  const s = filled(600);
  const revs = [0, s.currentRev, Math.floor(s.currentRev / 2), 3];
  const ranges: [string, string | null][] = [
    ["", null],
    [key(100), key(250)],
    [key(7), ""],
    [key(1), ""], // deleted
    [key(300), key(200)], // empty: end before key
    [key(599), null],
    ["zzz", null],
  ];
  for (const rev of revs) {
    for (const [from, end] of ranges) {
      const whole = s.range(from, end, { rev });
      for (const keys of [1, 7, 256]) {
        const got = scanned(s, from, end, rev, keys, () => {});
        assert.equal(got.count, whole.count, `count ${from}..${end}@${rev} by ${keys}`);
        assert.deepEqual(got.kvs, whole.kvs, `kvs ${from}..${end}@${rev} by ${keys}`);
      }
    }
  }
});

Deno.test("range scan: writes between slices (puts, deletes, new keys, a rolled-back txn) change nothing it reads", () => {
  const s = filled(500);
  const rev = s.currentRev;
  const whole = s.range("", null, { rev });
  const got = scanned(s, "", null, 0, 13, (step) => {
    const t = s.write();
    t.put(key((step * 37) % 500), b(`new${step}`), "0"); // an update of a key read or still to read
    t.put(`k${String((step * 53) % 500).padStart(5, "0")}x`, b("fresh"), "0"); // a key inserted mid-walk
    t.deleteRange(key((step * 11 + 2) % 500), "");
    t.end();
    const aborted = s.write();
    aborted.put(`k${String(step).padStart(5, "0")}~gone`, b("never"), "0"); // a new key, rolled back
    aborted.abort();
  });
  assert.ok(s.currentRev > rev + 30, "the writes happened between the slices");
  assert.equal(got.count, whole.count);
  assert.deepEqual(got.kvs, whole.kvs);
});

Deno.test("range scan: a compaction between slices first runs the read to its end (compaction cannot remove what it reads)", () => {
  const s = filled(500);
  const rev = Math.floor(s.currentRev * 0.6); // an old revision: most of what it reads is superseded since
  const whole = s.range("", null, { rev });
  let compactedAt = -1;
  const got = scanned(s, "", null, rev, 10, (step) => {
    const t = s.write();
    t.put(key(step % 500), b(`after${step}`), "0");
    t.end();
    if (step === 3) {
      s.compact(s.currentRev); // would drop every version the read still needs
      compactedAt = step;
    }
  });
  assert.equal(compactedAt, 3, "the read was still going when the compaction came");
  assert.equal(got.count, whole.count);
  assert.deepEqual(got.kvs, whole.kvs);
  assert.throws(() => s.range("", null, { rev }), /compacted/, "the revision read is gone now");
});

Deno.test("range scan: a restore between slices first runs the read to its end", () => {
  const s = filled(300);
  const other = filled(50);
  const whole = s.range("", null, {});
  const got = scanned(s, "", null, 0, 10, (step) => {
    if (step === 2) s.restore(other.currentRev, other.compactRev, [...other.dump()]);
  });
  assert.deepEqual(got.kvs, whole.kvs);
  assert.deepEqual(s.range("", null, {}).kvs, other.range("", null, {}).kvs, "restored");
});

/** An applier over a filled store. */
function applier(n: number): Applier {
  return new Applier(
    filled(n),
    new Lessor(1, () => 0),
    (rev) => ({ cluster_id: "14841639068965178418", member_id: "10276657743932975437", revision: rev, raft_term: "2" }),
  );
}

/** A RangeRequest as the transport decodes it (every field present, defaults filled). */
function rangeRequest(over: Partial<RangeRequest>): RangeRequest {
  return {
    key: b("k"),
    range_end: b("l"),
    limit: "0",
    revision: "0",
    sort_order: SortOrder.NONE,
    sort_target: SortTarget.KEY,
    serializable: false,
    keys_only: false,
    count_only: false,
    min_mod_revision: "0",
    max_mod_revision: "0",
    min_create_revision: "0",
    max_create_revision: "0",
    ...over,
  };
}

/** The bytes the Range RPC sends for an answer of either path. */
function bytesOf(v: Awaited<ReturnType<Applier["rangeInSlices"]>>): Uint8Array {
  return "encoded" in v ? v.encoded : encodeRangeResponse(v as never);
}

Deno.test("Range in slices: the same bytes as the one-go range for limits, counts, keys only, sorts, filters, revisions", async () => {
  const a = applier(3000);
  const rev = a.store.currentRev;
  const requests: Partial<RangeRequest>[] = [
    {},
    { limit: "10" },
    { limit: "2999" },
    { limit: "100000" },
    { count_only: true },
    { count_only: true, limit: "5" },
    { keys_only: true },
    { keys_only: true, limit: "3" },
    { revision: String(Math.floor(rev / 3)) },
    { revision: String(Math.floor(rev / 3)), limit: "50" },
    { sort_order: SortOrder.DESCEND, limit: "20" },
    { sort_target: SortTarget.MOD, limit: "20" },
    { sort_order: SortOrder.ASCEND, sort_target: SortTarget.VALUE, keys_only: true },
    { min_mod_revision: String(Math.floor(rev / 2)), limit: "7" },
    { max_create_revision: "40" },
    { key: b(key(17)), range_end: new Uint8Array(0) }, // one key
    { key: b(key(16)), range_end: new Uint8Array(0) }, // deleted
    { key: b("\0"), range_end: new Uint8Array([0]) }, // everything
    { key: b(key(400)), range_end: b(key(100)) }, // empty
  ];
  for (const extra of requests) {
    const r = rangeRequest(extra);
    const whole = encodeRangeResponse(a.range(r));
    const sliced = bytesOf(await a.rangeInSlices(r));
    assert.deepEqual(Buffer.from(sliced), Buffer.from(whole), JSON.stringify(extra));
  }
});

Deno.test("Range in slices: a read of 200,000 keys yields to the event loop and still answers the one-go bytes", async () => {
  const s = new MvccStore();
  for (let i = 0; i < 200_000; i += 1000) {
    const t = s.write();
    for (let j = i; j < i + 1000; j++) {
      t.put(`key${String((j * 7919) % 200_000).padStart(8, "0")}`, b("v".repeat(20)), "0");
    }
    t.end();
  }
  const a = new Applier(
    s,
    new Lessor(1, () => 0),
    (rev) => ({ cluster_id: "1", member_id: "1", revision: rev, raft_term: "1" }),
  );
  const r = rangeRequest({ key: b("key"), range_end: b("kez") });
  const whole = encodeRangeResponse(a.range(r));
  let ticks = 0;
  const t = setInterval(() => ticks++, 0);
  const sliced = bytesOf(await a.rangeInSlices(r));
  const count = await a.rangeInSlices({ ...r, count_only: true }) as { count: number };
  clearInterval(t);
  assert.ok(ticks > 0, "timers ran while the reads went on");
  assert.deepEqual(Buffer.from(sliced), Buffer.from(whole));
  assert.equal(count.count, 200_000);
});

Deno.test("range reads in slices: reads under way together share one turn's budget, each gives the one-go answer", async () => {
  const sched = schedTimes();
  if (!sched) return; // the thread's CPU time is what this measures (Linux schedstat)
  const s = new MvccStore();
  for (let i = 0; i < 200_000; i += 1000) {
    const t = s.write();
    for (let j = i; j < i + 1000; j++) t.put(`key${String(j).padStart(8, "0")}`, b("v".repeat(20)), "0");
    t.end();
  }
  const a = new Applier(
    s,
    new Lessor(1, () => 0),
    (rev) => ({ cluster_id: "1", member_id: "1", revision: rev, raft_term: "1" }),
  );
  const r = rangeRequest({ key: b("key"), range_end: b("kez") });
  const whole = encodeRangeResponse(a.range(r));
  // the most CPU time the thread used between two ticks of a 10 ms timer while 8 reads go on together: with a whole
  // slice each (SCAN_SLICE_MS) their timers' turn ran 8 slices in a row
  const reg = new Registry();
  const stop = registerEventLoopMetrics(reg, true);
  try {
    await new Promise((ok) => setTimeout(ok, 30));
    const answers = await Promise.all(Array.from({ length: 8 }, () => a.rangeInSlices(r)));
    await new Promise((ok) => setTimeout(ok, 20)); // the monitor's tick after the last slice
    const busy = Number(reg.render().match(/^eg_event_loop_busy_max_seconds (\S+)$/m)![1]) * 1000;
    for (const x of answers) assert.deepEqual(Buffer.from(bytesOf(x)), Buffer.from(whole));
    assert.ok(SCAN_TURN_MS < 8 * SCAN_SLICE_MS);
    // a turn's SCAN_TURN_MS, plus the timer's own interval and room for a collection on the thread (measured 35-47
    // ms; with a whole slice each, 8 x SCAN_SLICE_MS = 80 ms at least, measured 176 ms)
    assert.ok(busy < 2 * SCAN_TURN_MS + 30, `busiest tick ${busy.toFixed(1)} ms of CPU`);
  } finally {
    stop();
  }
});
