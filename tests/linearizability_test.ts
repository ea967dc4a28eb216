/** Tests for the linearizability checker in tests/lib/linearizability.ts. */
import assert from "node:assert/strict";
import { checkLinearizable, formatHistory, formatOp, HistoryRecorder, type Op } from "./lib/linearizability.ts";
import { prng } from "./lib/prng.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Helpers

type Extra = Partial<Pick<Op, "value" | "expected" | "result" | "outcome">>;

function put(client: number, key: string, value: string, invoke: number, ret: number, x: Extra = {}): Op {
  return { client, kind: "put", key, value, invoke, return: ret, outcome: "ok", ...x };
}
function get(client: number, key: string, result: string | null, invoke: number, ret: number, x: Extra = {}): Op {
  return { client, kind: "get", key, result, invoke, return: ret, outcome: "ok", ...x };
}
function del(client: number, key: string, invoke: number, ret: number, x: Extra = {}): Op {
  return { client, kind: "delete", key, invoke, return: ret, outcome: "ok", ...x };
}
function cas(
  client: number,
  key: string,
  expected: string | null,
  value: string | null,
  result: boolean,
  invoke: number,
  ret: number,
  x: Extra = {},
): Op {
  return { client, kind: "cas", key, expected, value, result, invoke, return: ret, outcome: "ok", ...x };
}
const unknown: Extra = { outcome: "unknown" };
const failed: Extra = { outcome: "fail" };

function assertLin(h: Op[], msg?: string) {
  const r = checkLinearizable(h);
  assert.equal(
    r.ok,
    true,
    `${msg ?? "expected linearizable"}\n${r.explanation ?? r.reason ?? ""}\n${formatHistory(h)}`,
  );
}
function assertNotLin(h: Op[], msg?: string) {
  const r = checkLinearizable(h);
  assert.equal(r.ok, false, `${msg ?? "expected NOT linearizable"} (got ${r.ok})\n${formatHistory(h)}`);
  assert.ok(r.explanation && r.explanation.length > 0);
  assert.ok(r.ops && r.ops.length > 0);
  return r;
}

/**
 * The ops of `history` that may take effect (not failed ones, not reads of unknown outcome), grouped by key in
 * order of first appearance: the input of both oracles below.
 */
function opsByKey(history: Op[]): Op[][] {
  const byKey = new Map<string, Op[]>();
  for (const o of history) {
    if (o.outcome === "fail" || (o.kind === "get" && o.outcome === "unknown")) continue;
    if (!byKey.has(o.key)) byKey.set(o.key, []);
    byKey.get(o.key)!.push(o);
  }
  return [...byKey.values()];
}

/**
 * The register model, straight from the definition: the value after `o` takes effect on `state`, or undefined when it
 * cannot take effect there (a read of another value, a known delete or cas result that contradicts `state`).
 */
function applyOp(o: Op, state: string | null): string | null | undefined {
  const known = o.outcome === "ok";
  if (o.kind === "get") return state === o.result ? state : undefined;
  if (o.kind === "put") return o.value as string;
  if (o.kind === "delete") {
    if (known && typeof o.result === "boolean" && o.result !== (state !== null)) return undefined;
    return null;
  }
  const match = state === o.expected;
  if (known && o.result !== match) return undefined;
  return match ? o.value ?? null : state;
}

/**
 * Independent brute-force oracle written straight from the definition: try every subset of unknown ops and every
 * real-time-respecting order, running the register model. Only for small histories.
 */
function bruteForce(history: Op[]): boolean {
  return opsByKey(history).every((ops) => bruteKey(ops));
}
function bruteKey(ops: Op[]): boolean {
  const end = (o: Op) => (o.outcome === "unknown" ? Infinity : o.return);
  const n = ops.length;
  const unk = ops.map((o, i) => (o.outcome === "unknown" ? i : -1)).filter((i) => i >= 0);
  for (let mask = 0; mask < 1 << unk.length; mask++) {
    const incl = ops.map((o, i) => o.outcome !== "unknown" || (mask & (1 << unk.indexOf(i))) !== 0);
    const used = new Array(n).fill(false);
    const total = incl.filter(Boolean).length;
    const dfs = (state: string | null, count: number): boolean => {
      if (count === total) return true;
      for (let i = 0; i < n; i++) {
        if (!incl[i] || used[i]) continue;
        // every included op that returned strictly before i was invoked must already be placed
        let ready = true;
        for (let j = 0; j < n; j++) {
          if (j !== i && incl[j] && !used[j] && end(ops[j]) < ops[i].invoke) ready = false;
        }
        if (!ready) continue;
        const next = applyOp(ops[i], state);
        if (next === undefined) continue;
        used[i] = true;
        const ok = dfs(next, count + 1);
        used[i] = false;
        if (ok) return true;
      }
      return false;
    };
    if (dfs(null, 0)) return true;
  }
  return false;
}

/** Reference: plain memoized search over (set of ops taken, value), straight from the definition. */
function referenceCheck(history: Op[]): boolean {
  for (const ops of opsByKey(history)) {
    const n = ops.length;
    const end = (o: Op) => (o.outcome === "unknown" ? Infinity : o.return);
    const required = ops.reduce((m, o, i) => (o.outcome === "ok" ? m | (1n << BigInt(i)) : m), 0n);
    const seen = new Set<string>();
    const dfs = (mask: bigint, state: string | null): boolean => {
      if ((mask & required) === required) return true;
      const key = `${mask}:${state}`;
      if (seen.has(key)) return false;
      seen.add(key);
      for (let i = 0; i < n; i++) {
        if (mask & (1n << BigInt(i))) continue;
        let ready = true;
        for (let j = 0; j < n && ready; j++) {
          if (!(mask & (1n << BigInt(j))) && ops[j].outcome === "ok" && end(ops[j]) < ops[i].invoke) ready = false;
        }
        if (!ready) continue;
        const next = applyOp(ops[i], state);
        if (next === undefined) continue;
        if (dfs(mask | (1n << BigInt(i)), next)) return true;
      }
      return false;
    };
    if (!dfs(0n, null)) return false;
  }
  return true;
}

interface SimOpts {
  keys: number;
  clientsPerKey: number;
  opsPerClient: number;
  pUnknown?: number;
  pFail?: number;
  /** Relative weights of get/put/delete/cas. */
  mix?: [number, number, number, number];
  /** Draw written values from a small domain instead of making them unique. */
  valueDomain?: number;
  maxDelay?: number;
  /** Record coarse integer timestamps (invoke rounded down, return up): many ties, as in a step-based simulation. */
  integerTimes?: boolean;
}

/**
 * Generates a history of a truly linearizable register: each op takes effect at a random instant inside its interval
 * (unknown ops: at a random instant after invoke, or never; failed ops: never).
 */
function simulate(seed: number, o: SimOpts): Op[] {
  const r = prng(seed);
  const mix = o.mix ?? [5, 3, 1, 2];
  const msum = mix.reduce((a, b) => a + b, 0);
  const maxDelay = o.maxDelay ?? 10;
  const all: { op: Op; lin: number; effect: boolean }[] = [];
  let uniq = 0;
  const newValue = (client: number) => o.valueDomain ? `v${Math.floor(r() * o.valueDomain)}` : `c${client}-${uniq++}`;
  const written: Map<string, string[]> = new Map();
  for (let k = 0; k < o.keys; k++) {
    const key = `key${k}`;
    written.set(key, [] as string[]);
    for (let c = 0; c < o.clientsPerKey; c++) {
      const client = k * o.clientsPerKey + c;
      let t = r() * maxDelay;
      for (let i = 0; i < o.opsPerClient; i++) {
        const invoke = t;
        const lin = invoke + r() * maxDelay;
        const ret = lin + r() * maxDelay;
        const x = r() * msum;
        const kind = x < mix[0] ? "get" : x < mix[0] + mix[1] ? "put" : x < mix[0] + mix[1] + mix[2] ? "delete" : "cas";
        const u = r();
        const outcome = u < (o.pUnknown ?? 0) ? "unknown" : u < (o.pUnknown ?? 0) + (o.pFail ?? 0) ? "fail" : "ok";
        const op: Op = { client, kind, key, invoke, return: outcome === "unknown" ? Infinity : ret, outcome };
        if (kind === "put") op.value = newValue(client);
        if (kind === "cas") {
          const prior = written.get(key)!;
          // expect either a recently written value, absent, or something random
          const y = r();
          op.expected = y < 0.2
            ? null
            : prior.length && y < 0.9
            ? prior[prior.length - 1 - Math.floor(r() * 3) % prior.length]
            : newValue(client);
          op.value = newValue(client);
        }
        if (op.value) written.get(key)!.push(op.value);
        const effect = outcome === "ok" || (outcome === "unknown" && r() < 0.5);
        all.push({ op, lin: outcome === "unknown" ? invoke + r() * 4 * maxDelay : lin, effect });
        t = (outcome === "unknown" ? ret + maxDelay : ret) + r() * maxDelay;
      }
    }
  }
  // Apply in linearization order.
  const state = new Map<string, string | null>();
  for (const { op, effect } of [...all].sort((a, b) => a.lin - b.lin)) {
    if (!effect) continue;
    const s = state.get(op.key) ?? null;
    switch (op.kind) {
      case "get":
        op.result = s;
        break;
      case "put":
        state.set(op.key, op.value as string);
        break;
      case "delete":
        if (r() < 0.5) op.result = s !== null;
        state.set(op.key, null);
        break;
      case "cas":
        op.result = s === op.expected;
        if (s === op.expected) state.set(op.key, op.value ?? null);
        break;
    }
  }
  for (const { op } of all) {
    if (op.outcome !== "ok") delete op.result;
    if (o.integerTimes) {
      op.invoke = Math.floor(op.invoke);
      op.return = Math.ceil(op.return);
    }
  }
  return all.map((a) => a.op).sort((a, b) => a.invoke - b.invoke);
}

/** Makes one completed read clearly stale: it returns the value of an acknowledged put that was overwritten (in real
 * time) by another acknowledged put which returned before the read was invoked. Needs unique values. */
function injectStaleRead(h: Op[], r: () => number): Op[] | null {
  const reads = h.filter((o) => o.kind === "get" && o.outcome === "ok");
  for (let attempt = 0; attempt < 50 && reads.length; attempt++) {
    const g = reads[Math.floor(r() * reads.length)];
    const puts = h.filter((o) => o.key === g.key && o.kind === "put" && o.outcome === "ok" && o.return < g.invoke);
    const pairs: [Op, Op][] = [];
    for (const w2 of puts) {
      for (const w1 of puts) if (w1.return < w2.invoke && w1.value !== g.result) pairs.push([w1, w2]);
    }
    if (!pairs.length) continue;
    const [w1] = pairs[Math.floor(r() * pairs.length)];
    return h.map((o) => (o === g ? { ...o, result: w1.value } : o));
  }
  return null;
}

/** Makes two sequential reads (same key, r1 returns before r2 is invoked) observe two really-ordered acknowledged
 * writes (w1 returned before w2 was invoked) in the opposite order. Needs unique values. */
function injectReversedReads(h: Op[], r: () => number): Op[] | null {
  const writes = h.filter((o) => o.kind === "put" && o.outcome === "ok");
  for (let attempt = 0; attempt < 200 && writes.length; attempt++) {
    const w1 = writes[Math.floor(r() * writes.length)];
    const w2s = writes.filter((w) => w.key === w1.key && w1.return < w.invoke);
    if (!w2s.length) continue;
    const w2 = w2s[Math.floor(r() * w2s.length)];
    const reads = h.filter((o) => o.key === w1.key && o.kind === "get" && o.outcome === "ok");
    for (const r1 of reads) {
      const r2 = reads.find((x) => r1.return < x.invoke);
      if (!r2) continue;
      return h.map((o) => (o === r1 ? { ...o, result: w2.value } : o === r2 ? { ...o, result: w1.value } : o));
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------------------
// Hand-written histories

Deno.test("linearizability: trivial histories", () => {
  assertLin([]);
  assertLin([get(1, "k", null, 0, 1)]);
  assertLin([put(1, "k", "a", 0, 1), get(1, "k", "a", 2, 3)]);
  assertLin([put(1, "k", "a", 0, 1), del(1, "k", 2, 3), get(1, "k", null, 4, 5)]);
  assertNotLin([get(1, "k", "a", 0, 1)], "read of a value never written");
  assertNotLin([put(1, "k", "a", 0, 1), get(2, "k", null, 2, 3)], "read of absent after completed put");
});

Deno.test("linearizability: stale read after a completed write", () => {
  const base = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 3)];
  assertLin([...base, get(2, "k", "b", 4, 5)]);
  const r = assertNotLin([...base, get(2, "k", "a", 4, 5)]);
  assert.equal(r.key, "k");
  assert.equal(r.minimal, true);
  assert.equal(r.ops!.length, 3);
  // concurrent with the second write, either value is fine
  assertLin([...base, get(2, "k", "a", 2.5, 5)]);
  assertLin([...base, get(2, "k", "b", 2.5, 5)]);
});

Deno.test("linearizability: equal timestamps are concurrent", () => {
  assertLin([put(1, "k", "a", 0, 5), get(2, "k", null, 5, 6)]);
  assertNotLin([put(1, "k", "a", 0, 5), get(2, "k", null, 5.001, 6)]);
});

Deno.test("linearizability: read of a value never written / written later", () => {
  const r = assertNotLin([put(1, "k", "a", 0, 1), get(2, "k", "zzz", 2, 3)]);
  assert.match(r.explanation!, /no operation ever wrote/);
  assertNotLin([get(2, "k", "a", 0, 1), put(1, "k", "a", 2, 3)], "read from the future");
  assertLin([get(2, "k", "a", 0, 2), put(1, "k", "a", 1, 3)], "overlapping: fine");
});

Deno.test("linearizability: concurrent writes observed in inconsistent orders", () => {
  const writes = [put(1, "k", "a", 0, 10), put(2, "k", "b", 0, 10)];
  assertLin([
    ...writes,
    get(3, "k", "a", 1, 2),
    get(3, "k", "b", 3, 4),
    get(4, "k", "a", 1, 2),
    get(4, "k", "b", 5, 6),
  ]);
  assertLin([...writes, get(3, "k", "b", 1, 2), get(3, "k", "a", 3, 4), get(4, "k", "a", 5, 6)]);
  const r = assertNotLin([
    ...writes,
    get(3, "k", "a", 1, 2),
    get(3, "k", "b", 3, 4),
    get(4, "k", "b", 5, 6),
    get(4, "k", "a", 7, 8),
  ]);
  assert.ok(r.ops!.length <= 5, r.explanation ?? "");
  // after both writes completed everybody must agree on the final value
  assertNotLin([...writes, get(3, "k", "a", 11, 12), get(4, "k", "b", 11, 12)]);
});

Deno.test("linearizability: lost acknowledged write", () => {
  assertNotLin([
    put(1, "k", "a", 0, 1),
    put(2, "k", "b", 2, 3), // acknowledged
    get(3, "k", "a", 10, 11), // ... but lost
  ]);
  assertNotLin([put(2, "k", "b", 2, 3), get(3, "k", null, 10, 11)]);
});

Deno.test("linearizability: unknown-outcome writes", () => {
  // value later read: it took effect
  assertLin([put(1, "k", "a", 0, 1), put(2, "k", "b", 2, 3, unknown), get(3, "k", "b", 100, 101)]);
  // never read: it did not take effect (or was overwritten)
  assertLin([put(1, "k", "a", 0, 1), put(2, "k", "b", 2, 3, unknown), get(3, "k", "a", 100, 101)]);
  // may take effect long after its nominal return: a→b→a is fine with b unknown
  assertLin([
    put(1, "k", "a", 0, 1),
    put(2, "k", "b", 2, 3, unknown),
    get(3, "k", "a", 10, 11),
    get(3, "k", "b", 20, 21),
  ]);
  // ... but once it is seen and then overwritten by a later completed write, it cannot reappear
  assertNotLin([
    put(1, "k", "a", 0, 1),
    put(2, "k", "b", 2, 3, unknown),
    get(3, "k", "b", 10, 11),
    put(1, "k", "c", 12, 13),
    get(3, "k", "b", 20, 21),
  ]);
  // but it can't be seen before it was invoked
  assertNotLin([put(1, "k", "a", 0, 1), get(3, "k", "b", 2, 3), put(2, "k", "b", 5, 6, unknown)]);
  // unknown delete
  assertLin([put(1, "k", "a", 0, 1), del(2, "k", 2, 3, unknown), get(3, "k", "a", 10, 11), get(3, "k", null, 20, 21)]);
  // unknown gets are ignored, whatever result they carry
  assertLin([put(1, "k", "a", 0, 1), get(3, "k", "zzz", 10, 11, unknown)]);
});

Deno.test("linearizability: failed writes", () => {
  const r = assertNotLin([put(1, "k", "a", 0, 1), put(2, "k", "b", 2, 3, failed), get(3, "k", "b", 10, 11)]);
  assert.match(r.explanation!, /did not take effect/);
  assertLin([put(1, "k", "a", 0, 1), put(2, "k", "b", 2, 3, failed), get(3, "k", "a", 10, 11)]);
  assertNotLin([put(1, "k", "a", 0, 1), del(2, "k", 2, 3, failed), get(3, "k", null, 10, 11)]);
});

Deno.test("linearizability: cas chains", () => {
  // sequential chain
  assertLin([
    cas(1, "k", null, "1", true, 0, 1),
    cas(2, "k", "1", "2", true, 2, 3),
    cas(3, "k", "1", "x", false, 4, 5),
    cas(1, "k", "2", "3", true, 6, 7),
    get(2, "k", "3", 8, 9),
  ]);
  // two concurrent cas on the same expected value: only one may succeed
  assertLin([put(1, "k", "0", 0, 1), cas(2, "k", "0", "a", true, 2, 5), cas(3, "k", "0", "b", false, 2, 5)]);
  assertNotLin([put(1, "k", "0", 0, 1), cas(2, "k", "0", "a", true, 2, 5), cas(3, "k", "0", "b", true, 2, 5)]);
  // unless a concurrent write restores the expected value in between
  assertLin([
    put(1, "k", "0", 0, 1),
    cas(2, "k", "0", "a", true, 2, 5),
    cas(3, "k", "0", "b", true, 2, 5),
    put(4, "k", "0", 2, 5),
  ]);
  // a cas that failed although the value matched
  assertNotLin([put(1, "k", "0", 0, 1), cas(2, "k", "0", "a", false, 2, 3)]);
  // cas expecting absence; cas deleting
  assertLin([cas(1, "k", null, "a", true, 0, 1), cas(1, "k", "a", null, true, 2, 3), get(2, "k", null, 4, 5)]);
  // unknown cas in a chain, whose successor depends on it
  assertLin([
    put(1, "k", "0", 0, 1),
    cas(2, "k", "0", "1", true, 2, 3, unknown),
    cas(3, "k", "1", "2", true, 10, 11),
  ]);
  assertNotLin([
    put(1, "k", "0", 0, 1),
    cas(2, "k", "5", "1", true, 2, 3, unknown), // can never succeed: "5" was never there
    cas(3, "k", "1", "2", true, 10, 11),
  ]);
  // delete with checked results
  assertLin([put(1, "k", "a", 0, 1), del(2, "k", 2, 3, { result: true }), del(2, "k", 4, 5, { result: false })]);
  assertNotLin([put(1, "k", "a", 0, 1), del(2, "k", 2, 3, { result: false })]);
});

Deno.test("linearizability: keys are independent (P-compositionality)", () => {
  const h = [
    put(1, "x", "a", 0, 1),
    put(1, "y", "b", 2, 3),
    get(2, "x", "a", 4, 5),
    get(2, "y", "b", 4, 5),
    get(2, "y", null, 6, 7), // wrong
  ];
  const r = assertNotLin(h);
  assert.equal(r.key, "y");
});

Deno.test("linearizability: failure explanation and minimisation", () => {
  // long correct prefix, then a stale read
  const h: Op[] = [];
  let t = 0;
  for (let i = 0; i < 50; i++) {
    h.push(put(i % 3, "k", `v${i}`, t, t + 2));
    h.push(get((i + 1) % 3, "k", `v${i}`, t + 3, t + 4));
    t += 5;
  }
  h.push(get(7, "k", "v10", t, t + 1));
  const r = assertNotLin(h);
  assert.equal(r.minimal, true);
  // the minimal failing sub-history: put v10 < put v11 (or later) < stale get v10
  assert.equal(r.ops!.length, 3, r.explanation ?? "");
  assert.ok(r.ops!.some((o) => o.kind === "get" && o.result === "v10" && o.client === 7));
  assert.equal(checkLinearizable(r.ops!).ok, false);
  // without the overwriting put, or without the stale get, it is fine (without the first put the get reads a value
  // nobody wrote: a different failure)
  assert.equal(checkLinearizable(r.ops!.filter((_, j) => j !== 1)).ok, true);
  assert.equal(checkLinearizable(r.ops!.filter((_, j) => j !== 2)).ok, true);
  assert.match(r.explanation!, /Minimal sub-history with the same failure/);
  assert.match(r.explanation!, /get\("k"\) -> "v10"/);
  console.log(r.explanation);
  const r2 = checkLinearizable(h, { minimize: false });
  assert.equal(r2.ok, false);
  assert.equal(r2.ops!.length, h.length);
});

Deno.test("linearizability: budget exhaustion gives null, never a verdict", () => {
  const h = simulate(7, { keys: 2, clientsPerKey: 5, opsPerClient: 40 });
  const r = checkLinearizable(h, { maxStates: 20 });
  assert.equal(r.ok, null);
  assert.match(r.reason!, /maxStates/);
  const big = simulate(8, { keys: 1, clientsPerKey: 10, opsPerClient: 500 });
  const r2 = checkLinearizable(big, { timeoutMs: 0 });
  assert.equal(r2.ok, null);
  assert.match(r2.reason!, /time budget/);
  // a failure on another key still wins over an undecided key
  const bad = [...h, put(99, "zz", "a", 0, 1), get(99, "zz", null, 2, 3)];
  assert.equal(checkLinearizable(bad, { maxStates: 20 }).ok, false);
});

Deno.test("linearizability: malformed ops are rejected", () => {
  assert.throws(() => checkLinearizable([{ ...put(1, "k", "a", 5, 1) }]), TypeError);
  assert.throws(() => checkLinearizable([{ ...cas(1, "k", "a", "b", true, 0, 1), result: undefined }]), TypeError);
  assert.throws(() => checkLinearizable([{ client: 1, kind: "get", key: "k", invoke: 0, return: 1, outcome: "ok" }]));
  assert.throws(() => checkLinearizable([{ ...put(1, "k", "a", NaN, 1) }]), TypeError);
  // unknown ops may carry any return
  assert.equal(checkLinearizable([put(1, "k", "a", 5, NaN, unknown)]).ok, true);
});

Deno.test("linearizability: formatting and HistoryRecorder", () => {
  let clock = 0;
  const rec = new HistoryRecorder(() => clock++);
  const p1 = rec.invoke(1, "put", "k", { value: "a" });
  const g1 = rec.invoke(2, "get", "k");
  p1.ok();
  g1.ok("a");
  const c1 = rec.invoke(3, "cas", "k", { expected: "a", value: "b" });
  c1.unknown();
  rec.invoke(4, "delete", "k").fail();
  rec.invoke(5, "get", "k"); // never settled: unknown
  assert.throws(() => p1.ok());
  const h = rec.history();
  assert.equal(h.length, 5);
  assert.deepEqual(h[0], { client: 1, kind: "put", key: "k", value: "a", invoke: 0, return: 2, outcome: "ok" });
  assert.equal(h[2].outcome, "unknown");
  assert.equal(h[2].return, Infinity);
  assert.equal(checkLinearizable(h).ok, true);
  const text = formatHistory(h);
  assert.equal(text.split("\n").length, 5);
  assert.match(text, /c3 cas\("k", "a" -> "b"\) -> UNKNOWN/);
  assert.match(formatOp(h[1]), /c2 get\("k"\) -> "a"/);
  assert.match(formatOp(h[3]), /FAIL/);
  console.log(text);
});

// ---------------------------------------------------------------------------------------------------------------------
// Randomised

Deno.test("linearizability: agrees with a brute-force oracle on small random histories", () => {
  const r = prng(12345);
  let lin = 0, nonLin = 0;
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  for (let iter = 0; iter < 3000; iter++) {
    const n = 1 + Math.floor(r() * 7);
    const vals = ["a", "b", "c"];
    let h: Op[];
    if (iter % 2 === 0) {
      // arbitrary (mostly non-linearizable) histories
      h = [];
      for (let i = 0; i < n; i++) {
        const invoke = Math.floor(r() * 10);
        const ret = invoke + Math.floor(r() * 6);
        const u = r();
        const outcome = u < 0.2 ? "unknown" : u < 0.3 ? "fail" : "ok";
        const kind = pick(["get", "get", "put", "put", "delete", "cas"] as const);
        const o: Op = { client: i, kind, key: "k", invoke, return: ret, outcome };
        if (kind === "get") o.result = pick([null, ...vals]);
        if (kind === "put") o.value = pick(vals);
        if (kind === "delete" && r() < 0.5) o.result = r() < 0.5;
        if (kind === "cas") {
          o.expected = pick([null, ...vals]);
          o.value = pick([null, ...vals]);
          o.result = r() < 0.5;
        }
        h.push(o);
      }
    } else {
      // simulated linearizable histories with a small value domain, sometimes with one result mutated
      h = simulate(iter, {
        keys: 1,
        clientsPerKey: 3,
        opsPerClient: 1 + Math.floor(r() * 2),
        valueDomain: 3,
        pUnknown: 0.2,
        pFail: 0.1,
      });
      if (r() < 0.5) {
        const reads = h.filter((o) => o.outcome === "ok" && (o.kind === "get" || o.kind === "cas"));
        if (reads.length) {
          const g = pick(reads);
          const v = g.kind === "get" ? pick([null, ...vals.map((x) => `v${vals.indexOf(x)}`)]) : !g.result;
          h = h.map((o) => (o === g ? { ...o, result: v } : o));
        }
      }
    }
    const expect = bruteForce(h);
    const got = checkLinearizable(h);
    if (got.ok !== expect) {
      assert.fail(`mismatch: checker ${got.ok}, brute force ${expect}\n${formatHistory(h)}\n${got.explanation ?? ""}`);
    }
    if (expect) lin++;
    else {
      nonLin++;
      // the reported sub-history is part of the history and itself non-linearizable
      assert.equal(bruteForce(got.ops!), false, got.explanation ?? "");
      assert.ok(got.ops!.every((o) => h.includes(o)));
      assert.equal(got.minimal, true);
    }
  }
  console.log(`brute-force cross-check: ${lin} linearizable, ${nonLin} not`);
  assert.ok(lin > 300 && nonLin > 300);
});

Deno.test("linearizability: agrees with a plain memoized search on medium random histories", () => {
  const r = prng(777);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  let lin = 0, nonLin = 0;
  for (let iter = 0; iter < 800; iter++) {
    let h = simulate(90_000 + iter, {
      keys: 1,
      clientsPerKey: 3 + Math.floor(r() * 5),
      opsPerClient: 2 + Math.floor(r() * 3),
      valueDomain: iter % 2 ? 2 + Math.floor(r() * 3) : undefined,
      pUnknown: r() * 0.4,
      pFail: 0.05,
      mix: [3, 2, 1, 3],
      integerTimes: iter % 3 === 0,
      maxDelay: iter % 3 === 0 ? 3 : 10,
    }).slice(0, 20);
    // mutate up to two observed results
    for (let q = Math.floor(r() * 3); q > 0; q--) {
      const obs = h.filter((o) =>
        o.outcome === "ok" &&
        (o.kind === "get" || o.kind === "cas" || (o.kind === "delete" && typeof o.result === "boolean"))
      );
      if (!obs.length) break;
      const g = pick(obs);
      const written = h.filter((o) => o.value).map((o) => o.value as string);
      const v = g.kind === "get" ? pick([null, ...written]) : !g.result;
      h = h.map((o) => (o === g ? { ...o, result: v } : o));
    }
    const expect = referenceCheck(h);
    const got = checkLinearizable(h);
    if (got.ok !== expect) {
      assert.fail(`mismatch: checker ${got.ok}, reference ${expect}\n${formatHistory(h)}\n${got.explanation ?? ""}`);
    }
    if (expect) lin++;
    else {
      nonLin++;
      assert.equal(referenceCheck(got.ops!), false, got.explanation ?? "");
    }
  }
  console.log(`reference cross-check: ${lin} linearizable, ${nonLin} not`);
  assert.ok(lin > 200 && nonLin > 200);
});

Deno.test("linearizability: simulated linearizable histories are all accepted", () => {
  const configs: SimOpts[] = [
    { keys: 3, clientsPerKey: 4, opsPerClient: 30 },
    { keys: 2, clientsPerKey: 8, opsPerClient: 30, pUnknown: 0.05, pFail: 0.05 },
    { keys: 1, clientsPerKey: 5, opsPerClient: 40, pUnknown: 0.1, pFail: 0.05, mix: [4, 2, 2, 4] },
    { keys: 2, clientsPerKey: 4, opsPerClient: 25, valueDomain: 3, pUnknown: 0.05 },
    { keys: 1, clientsPerKey: 6, opsPerClient: 30, valueDomain: 2, pUnknown: 0.03, pFail: 0.05 },
    { keys: 1, clientsPerKey: 10, opsPerClient: 20, mix: [1, 0, 0, 3], pUnknown: 0.1 }, // cas-heavy
    { keys: 2, clientsPerKey: 6, opsPerClient: 30, pUnknown: 0.05, pFail: 0.05, integerTimes: true, maxDelay: 3 },
    { keys: 1, clientsPerKey: 5, opsPerClient: 30, valueDomain: 3, pUnknown: 0.05, integerTimes: true, maxDelay: 2 },
  ];
  let n = 0, states = 0;
  const t0 = performance.now();
  for (const [ci, cfg] of configs.entries()) {
    for (let seed = 0; seed < 40; seed++) {
      const h = simulate(1000 * ci + seed, cfg);
      const r = checkLinearizable(h, { timeoutMs: 20_000 });
      if (r.ok !== true) {
        assert.fail(
          `config ${ci} seed ${seed}: expected linearizable, got ${r.ok} (${r.reason})\n${r.explanation ?? ""}`,
        );
      }
      n++;
      states += r.stats.states;
    }
  }
  console.log(`${n} simulated histories accepted, ${states} states, ${(performance.now() - t0).toFixed(0)} ms`);
});

Deno.test("linearizability: injected stale / reversed reads are rejected", () => {
  const r = prng(99);
  let stale = 0, reversed = 0;
  for (let seed = 0; seed < 150; seed++) {
    const h = simulate(5000 + seed, {
      keys: 2,
      clientsPerKey: 2 + (seed % 6),
      opsPerClient: 30,
      pUnknown: seed % 3 === 0 ? 0.05 : 0,
      pFail: 0.03,
    });
    const m1 = injectStaleRead(h, r);
    if (m1) {
      const res = checkLinearizable(m1);
      assert.equal(res.ok, false, `seed ${seed}: stale read accepted`);
      assert.equal(checkLinearizable(res.ops!).ok, false);
      stale++;
    }
    const m2 = injectReversedReads(h, r);
    if (m2) {
      const res = checkLinearizable(m2);
      assert.equal(res.ok, false, `seed ${seed}: reversed reads accepted`);
      reversed++;
    }
  }
  console.log(`rejected ${stale} stale-read and ${reversed} reversed-read mutants`);
  assert.ok(stale > 100 && reversed > 100);
});

Deno.test("linearizability: performance, 10 keys x 2000 ops, 10 concurrent clients per key", () => {
  const h = simulate(424242, { keys: 10, clientsPerKey: 10, opsPerClient: 200, pUnknown: 0.01, pFail: 0.01 });
  assert.equal(h.length, 20_000);
  const t0 = performance.now();
  const r = checkLinearizable(h);
  const ms = performance.now() - t0;
  assert.equal(r.ok, true, r.reason ?? "");
  console.log(`checked ${h.length} ops / ${r.stats.keys} keys in ${ms.toFixed(0)} ms, ${r.stats.states} states`);

  const bad = injectStaleRead(h, prng(1))!;
  const t1 = performance.now();
  const rb = checkLinearizable(bad);
  const ms2 = performance.now() - t1;
  assert.equal(rb.ok, false);
  console.log(
    `rejected the stale-read mutant in ${ms2.toFixed(0)} ms (${rb.stats.states} states; ${
      rb.ops!.length
    }-op explanation)`,
  );
  assert.ok(ms < 30_000);
});
