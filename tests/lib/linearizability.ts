/**
 * Linearizability checker for histories of etcd-style key/value operations.
 *
 * Model: every key is an independent register whose value is a string or `null` (absent), initially `null`.
 *   - `put(key, value)`                 sets the value; result ignored.
 *   - `get(key)`                        observes the value; `result` is the string read, or `null` if absent.
 *   - `delete(key)`                     sets the value to `null`; an optional boolean `result` says whether a key
 *                                       was actually deleted (etcd's `deleted > 0`).
 *   - `cas(key, expected, value)`       if the value equals `expected` (`null` = absent) set it to `value`
 *                                       (`null` = delete); `result` is whether it succeeded (etcd Txn compare-and-set).
 *
 * Every operation has an `invoke` and a `return` time (any monotonic unit: simulation steps, ms, ...) and an outcome:
 *   - "ok":      completed; its `result` was observed.
 *   - "fail":    definitely did not take effect (e.g. rejected before being proposed); it is ignored.
 *   - "unknown": timed out / connection lost: it may have taken effect at any point after `invoke`, or never. Its
 *                `return` is treated as +∞ and its result is not checked.
 *
 * Two operations are ordered in real time only if `a.return < b.invoke` strictly: equal timestamps count as
 * concurrent (the lenient reading, so coarse clocks cannot produce false failures).
 *
 * Algorithm: the history is split by key (linearizability is P-compositional: a history is linearizable iff each
 * key's sub-history is). Each sub-history is searched with a Wing–Gong / Lowe style depth-first search: the
 * operations' call and return events form a time-ordered doubly linked list; at each step any pending operation whose
 * call precedes the earliest pending return may be linearized next, if the register model accepts it; when the
 * earliest pending return is reached without its operation having been linearized, the search backtracks. Every
 * (set of linearized operations, register value) configuration that has been expanded once is remembered (exactly, in
 * a compact arena) and never expanded again. The search has a budget (configurations per key, wall-clock time): when
 * it runs out the verdict is `ok: null`, never a guess.
 *
 * Sound reductions (each preserves the verdict exactly; all are cross-checked against brute force in the tests):
 *   - "fail" operations and "unknown" reads are dropped (they have no effect and observed nothing).
 *   - A completed read of a value that no write could have produced by the read's return fails immediately.
 *   - An "unknown" write whose value nothing observes (no read returns it, no cas expects it) is dropped, unless the
 *     key has failed cas / checked delete results, which observe "value ≠ x". Values nothing observes are all one
 *     state (no operation can tell them apart).
 *   - An "unknown" write that is the only writer of a value some completed op observed must have taken effect before
 *     that op returned: it gets that return time and becomes an ordinary (required) operation.
 *   - Value-preserving ops (reads, failed cas, deletes of an absent key) that are valid now are linearized at once,
 *     without branching: they commute to the front of any completion.
 *   - Remaining unknown ops never have to take effect. They are tried only after every required candidate, only when
 *     the value they produce lets a pending op proceed that cannot now (otherwise they can be moved later or dropped),
 *     and only the earliest of several with identical effect; an unknown cas stops being tried once its expected value
 *     can no longer recur. A configuration is also pruned when one with the same value and required ops but a subset
 *     of its unknown ops was already explored (it can do everything this one can).
 *
 * On failure the result names the key, explains where the search got stuck, and gives a small sub-history of that key
 * that is itself not linearizable and fails at the same op (1-minimal within the minimisation budget: removing any
 * single operation makes it linearizable or moves the failure elsewhere).
 */

export type OpKind = "put" | "get" | "delete" | "cas";
export type Outcome = "ok" | "fail" | "unknown";

export interface Op {
  client: number | string;
  kind: OpKind;
  key: string;
  /** put: the value written; cas: the new value (`null` = delete on success). */
  value?: string | null;
  /** cas: the value compared against (`null` = the key must be absent). */
  expected?: string | null;
  /** get: value read (`null` = absent); cas: whether it succeeded; delete (optional): whether something was deleted. */
  result?: string | null | boolean;
  invoke: number;
  /** Ignored (treated as +∞) for outcome "unknown". */
  return: number;
  outcome: Outcome;
}

export interface CheckOptions {
  /**
   * Maximum number of distinct search configurations explored per key (default 10,000,000; each takes some 30-60
   * bytes, and typically 0.5-5 µs).
   */
  maxStates?: number;
  /** Wall-clock budget for the whole check, excluding failure minimisation (default 60,000 ms). */
  timeoutMs?: number;
  /** Shrink a failing sub-history to a (1-)minimal non-linearizable one (default true). */
  minimize?: boolean;
  /** Wall-clock budget for the minimisation (default 3,000 ms). */
  minimizeTimeoutMs?: number;
}

export interface CheckStats {
  keys: number;
  ops: number;
  /** Total search configurations explored (all keys). */
  states: number;
  elapsedMs: number;
}

export interface CheckResult {
  /** true: linearizable; false: not linearizable; null: budget exhausted, no verdict. */
  ok: boolean | null;
  /** The key whose sub-history is not linearizable (ok=false) or could not be decided (ok=null). */
  key?: string;
  /** One-line reason (failure or exhausted budget). */
  reason?: string;
  /** On failure: a small non-linearizable sub-history of `key` (original Op objects, ordered by invoke). */
  ops?: Op[];
  /** On failure: whether `ops` is known 1-minimal (minimisation finished within its budget). */
  minimal?: boolean;
  /** On failure: multi-line human-readable explanation (where the search got stuck + the sub-history). */
  explanation?: string;
  stats: CheckStats;
}

// ---------------------------------------------------------------------------------------------------------------------
// Formatting

function fmtVal(v: string | null | undefined): string {
  return v === null || v === undefined ? "∅" : JSON.stringify(v);
}

function fmtTime(t: number): string {
  if (t === Infinity) return "∞";
  return Number.isInteger(t) ? String(t) : t.toFixed(3);
}

/** One-line description of an operation, e.g. `c3 put("k", "v1") -> ok` or `c1 get("k") -> "v1"`. */
export function formatOp(op: Op): string {
  let call: string;
  switch (op.kind) {
    case "put":
      call = `put(${JSON.stringify(op.key)}, ${fmtVal(op.value)})`;
      break;
    case "get":
      call = `get(${JSON.stringify(op.key)})`;
      break;
    case "delete":
      call = `delete(${JSON.stringify(op.key)})`;
      break;
    case "cas":
      call = `cas(${JSON.stringify(op.key)}, ${fmtVal(op.expected)} -> ${fmtVal(op.value)})`;
      break;
    default:
      call = `${String(op.kind)}(${JSON.stringify(op.key)})`;
  }
  let res: string;
  if (op.outcome === "fail") res = "FAIL (no effect)";
  else if (op.outcome === "unknown") res = "UNKNOWN (may or may not have taken effect)";
  else if (op.kind === "get") res = fmtVal(op.result as string | null | undefined);
  else if (op.kind === "cas") res = op.result === true ? "succeeded" : op.result === false ? "failed (no match)" : "ok";
  else if (op.kind === "delete" && typeof op.result === "boolean") res = op.result ? "ok (deleted)" : "ok (absent)";
  else res = "ok";
  return `c${op.client} ${call} -> ${res}`;
}

/**
 * Multi-line listing of operations ordered by invoke time, with the time interval of each and (for up to
 * `timelineMaxOps` operations, default 60) an ASCII timeline on which overlapping bars are concurrent operations.
 * Timestamps are rank-compressed for the timeline (only their order matters).
 */
export function formatHistory(ops: readonly Op[], opts: { timelineMaxOps?: number; indent?: string } = {}): string {
  const indent = opts.indent ?? "  ";
  const sorted = [...ops].sort((a, b) => a.invoke - b.invoke || endOf(a) - endOf(b));
  const withTimeline = sorted.length <= (opts.timelineMaxOps ?? 60);
  const times = [...new Set(sorted.flatMap((o) => [o.invoke, endOf(o)]))].sort((a, b) => a - b);
  const rank = new Map(times.map((t, i) => [t, i]));
  const cols = Math.min(times.length, 80);
  const scale = times.length > 1 ? (cols - 1) / (times.length - 1) : 0;
  const iw = Math.max(...sorted.map((o) => fmtTime(o.invoke).length), 1);
  const rw = Math.max(...sorted.map((o) => fmtTime(endOf(o)).length), 1);
  const lines: string[] = [];
  for (const o of sorted) {
    let bar = "";
    if (withTimeline) {
      const a = Math.round(rank.get(o.invoke)! * scale);
      const b = Math.round(rank.get(endOf(o))! * scale);
      const chars = Array(cols).fill(" ");
      for (let i = a; i <= b; i++) chars[i] = "-";
      chars[a] = "|";
      chars[b] = o.outcome === "unknown" ? ">" : "|";
      bar = chars.join("") + "  ";
    }
    lines.push(
      `${indent}${bar}[${fmtTime(o.invoke).padStart(iw)} .. ${fmtTime(endOf(o)).padStart(rw)}] ${formatOp(o)}`,
    );
  }
  return lines.join("\n");
}

function endOf(o: Op): number {
  return o.outcome === "unknown" ? Infinity : o.return;
}

// ---------------------------------------------------------------------------------------------------------------------
// Recording helper

/** A pending operation handed out by `HistoryRecorder.invoke`; complete it exactly once. */
export interface PendingOp {
  readonly op: Op;
  /** Completed with a result (get: value or null; cas: succeeded; put/delete: nothing or delete's boolean). */
  ok(result?: string | null | boolean): void;
  /** Definitely did not take effect. */
  fail(): void;
  /** Timed out / connection lost: may or may not have taken effect. */
  unknown(): void;
}

/**
 * Records a history from real clients: `const p = rec.invoke(client, "put", key, {value})`, then `p.ok()`,
 * `p.fail()` or `p.unknown()` when the call settles. Operations never settled count as "unknown".
 */
export class HistoryRecorder {
  readonly ops: Op[] = [];
  constructor(private readonly now: () => number = () => performance.now()) {}

  invoke(
    client: number | string,
    kind: OpKind,
    key: string,
    args: { value?: string | null; expected?: string | null } = {},
  ): PendingOp {
    const op: Op = { client, kind, key, invoke: this.now(), return: Infinity, outcome: "unknown" };
    if (args.value !== undefined) op.value = args.value;
    if (args.expected !== undefined) op.expected = args.expected;
    this.ops.push(op);
    let done = false;
    const settle = (outcome: Outcome, result?: string | null | boolean) => {
      if (done) throw new Error(`operation settled twice: ${formatOp(op)}`);
      done = true;
      op.outcome = outcome;
      op.return = outcome === "unknown" ? Infinity : this.now();
      if (result !== undefined) op.result = result;
    };
    return {
      op,
      ok: (result) => settle("ok", result),
      fail: () => settle("fail"),
      unknown: () => settle("unknown"),
    };
  }

  /** A copy of the history recorded so far. */
  history(): Op[] {
    return this.ops.map((o) => ({ ...o }));
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Preparation of a key's sub-history

const T_READ = 0; // ok get: state must equal a
const T_WRITE = 1; // ok put / delete: state := a
const T_DEL_TRUE = 2; // ok delete that deleted something: state must be non-null; state := null
const T_DEL_FALSE = 3; // ok delete of an absent key: state must be null
const T_CAS_TRUE = 4; // ok cas that succeeded: state must equal e; state := a
const T_CAS_FALSE = 5; // ok cas that failed: state must differ from e
const T_UNK_WRITE = 6; // unknown put / delete: state := a (if it takes effect)
const T_UNK_CAS = 7; // unknown cas: if state = e then state := a (if it takes effect)

/** Register state id standing for any value that no operation observes. */
const UNREAD = 1;

interface Prepared {
  src: Op;
  type: number;
  a: number;
  e: number;
  invoke: number;
  ret: number; // +Infinity when not required
  required: boolean;
}

interface Failure {
  reason: string;
  /** Explanation lines (without the sub-history listing). */
  detail: string[];
  /** Ops directly implicated (for pre-check failures; skips minimisation). */
  implicated?: Op[];
  /** The completed op at whose return the search got stuck (deepest point). */
  blocked?: Op;
}

interface KeyResult {
  ok: boolean | null;
  states: number;
  reason?: string;
  failure?: Failure;
}

function validate(op: Op, i: number): void {
  const where = () => `history[${i}] (${JSON.stringify(op)})`;
  if (typeof op !== "object" || op === null) throw new TypeError(`history[${i}] is not an object`);
  if (typeof op.key !== "string") throw new TypeError(`${where()}: key must be a string`);
  if (!["put", "get", "delete", "cas"].includes(op.kind)) throw new TypeError(`${where()}: bad kind`);
  if (!["ok", "fail", "unknown"].includes(op.outcome)) throw new TypeError(`${where()}: bad outcome`);
  if (typeof op.invoke !== "number" || !Number.isFinite(op.invoke)) {
    throw new TypeError(`${where()}: invoke must be a finite number`);
  }
  if (op.outcome === "fail") return;
  if (op.outcome === "ok") {
    if (typeof op.return !== "number" || Number.isNaN(op.return) || op.return < op.invoke) {
      throw new TypeError(`${where()}: return must be a number >= invoke`);
    }
  }
  if (op.kind === "put" && typeof op.value !== "string") throw new TypeError(`${where()}: put needs a string value`);
  if (op.kind === "cas") {
    if (op.value === undefined || (op.value !== null && typeof op.value !== "string")) {
      throw new TypeError(`${where()}: cas needs value (string or null)`);
    }
    if (op.expected === undefined || (op.expected !== null && typeof op.expected !== "string")) {
      throw new TypeError(`${where()}: cas needs expected (string or null)`);
    }
    if (op.outcome === "ok" && typeof op.result !== "boolean") {
      throw new TypeError(`${where()}: completed cas needs a boolean result`);
    }
  }
  if (op.outcome === "ok" && op.kind === "get" && op.result !== null && typeof op.result !== "string") {
    throw new TypeError(`${where()}: completed get needs result (string or null)`);
  }
  if (op.outcome === "ok" && op.kind === "delete" && op.result !== undefined && typeof op.result !== "boolean") {
    throw new TypeError(`${where()}: delete result, if given, must be a boolean`);
  }
}

/** Turns a key's ops into search input, or reports an immediate failure. */
function prepare(ops: readonly Op[]): { prepared: Prepared[]; failure?: Failure } {
  const ids = new Map<string, number>();
  const id = (v: string | null | undefined): number => {
    if (v === null || v === undefined) return 0;
    let x = ids.get(v);
    if (x === undefined) ids.set(v, x = ids.size + 2); // 1 is UNREAD
    return x;
  };
  const out: Prepared[] = [];
  for (const op of ops) {
    if (op.outcome === "fail") continue;
    const unknown = op.outcome === "unknown";
    const p: Prepared = {
      src: op,
      type: 0,
      a: 0,
      e: 0,
      invoke: op.invoke,
      ret: unknown ? Infinity : op.return,
      required: !unknown,
    };
    switch (op.kind) {
      case "get":
        if (unknown) continue;
        p.type = T_READ;
        p.a = id(op.result as string | null);
        break;
      case "put":
        p.type = unknown ? T_UNK_WRITE : T_WRITE;
        p.a = id(op.value);
        break;
      case "delete":
        p.type = unknown ? T_UNK_WRITE : op.result === true ? T_DEL_TRUE : op.result === false ? T_DEL_FALSE : T_WRITE;
        p.a = 0;
        break;
      case "cas":
        p.type = unknown ? T_UNK_CAS : op.result ? T_CAS_TRUE : T_CAS_FALSE;
        p.a = id(op.value);
        p.e = id(op.expected);
        break;
    }
    out.push(p);
  }

  // Observations: values some operation depends on.
  const observed = new Set<number>();
  let negativeObservers = false;
  for (const p of out) {
    if (p.type === T_READ) observed.add(p.a);
    else if (p.type === T_CAS_TRUE || p.type === T_CAS_FALSE || p.type === T_UNK_CAS) observed.add(p.e);
    if (p.type === T_CAS_FALSE || p.type === T_DEL_TRUE || p.type === T_DEL_FALSE) negativeObservers = true;
  }
  // Drop unknown writes nobody could have observed.
  const kept = negativeObservers ? out : out.filter((p) => p.required || observed.has(p.a));
  // Values nobody observes are indistinguishable to every op (no read returns them, no cas expects them): one state.
  for (const p of kept) {
    if (p.type !== T_READ && p.type !== T_DEL_TRUE && p.type !== T_DEL_FALSE && p.a !== 0 && !observed.has(p.a)) {
      p.a = UNREAD;
    }
  }

  // Writers of each value (initial null counts as a writer of null).
  const writers = new Map<number, Prepared[]>();
  for (const p of kept) {
    if (p.type === T_WRITE || p.type === T_CAS_TRUE || p.type === T_UNK_WRITE || p.type === T_UNK_CAS) {
      let w = writers.get(p.a);
      if (!w) writers.set(p.a, w = []);
      w.push(p);
    }
  }
  // Observers that must see a written value: reads and successful cas (of a non-null value).
  for (const p of kept) {
    if (p.type !== T_READ && p.type !== T_CAS_TRUE) continue;
    const v = p.type === T_READ ? p.a : p.e;
    if (v === 0) continue;
    const ws = writers.get(v) ?? [];
    if (ws.some((w) => w.invoke <= p.ret)) continue;
    const val = p.type === T_READ ? p.src.result as string : p.src.expected as string;
    const failed = ops.filter((o) =>
      o.outcome === "fail" && (o.kind === "put" || o.kind === "cas") && o.value === val && o !== p.src
    );
    const all = ops.filter((o) => (o.kind === "put" || o.kind === "cas") && o.value === val && o !== p.src);
    const what = p.type === T_READ ? "read" : "cas compared against";
    const detail: string[] = [
      `${formatOp(p.src)}  [${fmtTime(p.invoke)} .. ${fmtTime(p.ret)}]`,
      all.length === 0
        ? `  ${what} ${fmtVal(val)}, a value no operation ever wrote.`
        : ws.length === 0
        ? `  ${what} ${fmtVal(val)}, which was only written by operation(s) that definitely did not take effect` +
          (failed.length ? " (outcome fail)." : ".")
        : `  ${what} ${fmtVal(val)}, but every write of it was invoked after this operation returned.`,
    ];
    return {
      prepared: kept,
      failure: {
        reason: `${p.src.kind} ${what === "read" ? "read" : "expected"} ${fmtVal(val)} which could not have been ` +
          `written before it returned (at ${fmtTime(p.ret)})`,
        detail,
        implicated: [p.src, ...all],
      },
    };
  }
  // An unknown write that is the only possible source of an observed value must precede its observers.
  for (const [v, ws] of writers) {
    if (v === 0 || ws.length !== 1 || ws[0].required) continue;
    const w = ws[0];
    let bound = Infinity;
    for (const p of kept) {
      if ((p.type === T_READ && p.a === v) || (p.type === T_CAS_TRUE && p.e === v)) bound = Math.min(bound, p.ret);
    }
    if (bound < Infinity) {
      w.ret = bound;
      w.required = true;
    }
  }
  return { prepared: kept };
}

// ---------------------------------------------------------------------------------------------------------------------
// The search

function makeZobrist(n: number, seed: number): Int32Array {
  const z = new Int32Array(n);
  let s = seed | 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    z[i] = s;
  }
  return z;
}

function now(): number {
  return performance.now();
}

/** Search one key. `ops` are that key's operations (any outcome). */
function checkKey(ops: readonly Op[], maxStates: number, deadline: number): KeyResult {
  const { prepared, failure } = prepare(ops);
  if (failure) return { ok: false, states: 0, failure };

  // Index: required ops (sorted by invoke) first, then unbounded unknown ops.
  const req = prepared.filter((p) => p.required).sort((a, b) => a.invoke - b.invoke || a.ret - b.ret);
  const unk = prepared.filter((p) => !p.required).sort((a, b) => a.invoke - b.invoke);
  const P = [...req, ...unk];
  const m = req.length;
  const n = P.length;
  if (m === 0) return { ok: true, states: 0 };

  const type = new Int8Array(n);
  const va = new Int32Array(n);
  const ve = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    type[i] = P[i].type;
    va[i] = P[i].a;
    ve[i] = P[i].e;
  }

  // Event list of the required ops: entry 2k = call of op k, 2k+1 = its return. HEAD = 2m. END = -1.
  // Unbounded unknown ops (indices m..n-1, by invoke) are not in the list: one is a candidate whenever its invoke is
  // not after the earliest pending return. They are tried only after every required candidate, so that
  // configurations with fewer unknown ops taken are explored first and dominate the others.
  const HEAD = 2 * m;
  const next = new Int32Array(2 * m + 1).fill(-1);
  const prev = new Int32Array(2 * m + 1).fill(-1);
  const invokeAt = new Float64Array(n);
  for (let k = 0; k < n; k++) invokeAt[k] = P[k].invoke;
  {
    const ev: number[] = [];
    for (let k = 0; k < m; k++) ev.push(2 * k, 2 * k + 1);
    const time = (e: number) => (e & 1 ? P[e >> 1].ret : P[e >> 1].invoke);
    // Calls before returns at equal times (equal timestamps are concurrent).
    ev.sort((x, y) => time(x) - time(y) || (x & 1) - (y & 1) || x - y);
    let last = HEAD;
    for (const e of ev) {
      next[last] = e;
      prev[e] = last;
      last = e;
    }
    next[last] = -1;
  }
  const unlink = (x: number) => {
    const p = prev[x], q = next[x];
    next[p] = q;
    if (q !== -1) prev[q] = p;
  };
  const relink = (x: number) => {
    next[prev[x]] = x;
    const q = next[x];
    if (q !== -1) prev[q] = x;
  };

  // Linearized set: bitsets for required and unknown ops; incremental hash of the required part.
  const reqWords = new Uint32Array((m + 31) >>> 5);
  const unkWords = new Uint32Array((n - m + 31) >>> 5);
  const z1 = makeZobrist(m, 0x2545f491);
  let h1 = 0;
  let p = 0; // lowest unlinearized required index
  let hi = -1; // highest linearized required index
  let states = 0;

  const setBit = (k: number) => {
    if (k < m) {
      reqWords[k >>> 5] |= 1 << (k & 31);
      h1 ^= z1[k];
    } else unkWords[(k - m) >>> 5] |= 1 << ((k - m) & 31);
  };
  const clearBit = (k: number) => {
    if (k < m) {
      reqWords[k >>> 5] &= ~(1 << (k & 31));
      h1 ^= z1[k];
    } else unkWords[(k - m) >>> 5] &= ~(1 << ((k - m) & 31));
  };
  const isSet = (k: number) => (reqWords[k >>> 5] & (1 << (k & 31))) !== 0;

  // Explored configurations. Each is encoded exactly as [state, p, nr, nr words of the required bitset starting at word
  // p>>5 (all lower bits are set), unknown-op bitset words] and stored, after a [hash, length, next] header, in one
  // growing arena; a chained hash table of arena offsets indexes them by a hash of (state, required set), so variants
  // differing only in unknown ops share a chain (needed for the dominance test). No per-state objects are allocated.
  // The arena is a list of equal chunks (no copying as it grows); an offset o lives in chunk o >> cb at o & cm.
  const cb = Math.min(20, Math.max(10, Math.ceil(Math.log2(64 * n))));
  const cm = (1 << cb) - 1;
  const chunks: Int32Array[] = [new Int32Array(1 << cb)];
  let arenaLen = 0; // global offset of the next free slot
  let table = new Int32Array(1 << Math.max(8, Math.ceil(Math.log2(2 * n)))).fill(-1);
  let used = 0;
  const scratch = new Int32Array(3 + reqWords.length + unkWords.length);
  const unkLen = unkWords.length;

  /**
   * Records the configuration (state, current set) as explored; false if it was explored already, or is dominated by
   * an explored one: same state and required set, a subset of its unknown ops taken (whatever this one can still do,
   * that one could too, since unbounded unknown ops never need to take effect).
   */
  const remember = (state: number): boolean => {
    const lo = p >>> 5;
    const nr = hi >= p ? (hi >>> 5) - lo + 1 : 0;
    scratch[0] = state;
    scratch[1] = p;
    scratch[2] = nr;
    for (let i = 0; i < nr; i++) scratch[3 + i] = reqWords[lo + i];
    const u = 3 + nr;
    for (let i = 0; i < unkLen; i++) scratch[u + i] = unkWords[i];
    const len = u + unkLen;
    const hash = h1 ^ Math.imul(state + 1, 0x9e3779b1);
    const slot = hash & (table.length - 1);
    for (let o = table[slot]; o !== -1;) {
      const a = chunks[o >> cb];
      const x = o & cm;
      o = a[x + 2];
      if (a[x] !== hash || a[x + 1] !== len) continue;
      const b = x + 3;
      let i = 0;
      while (i < u && a[b + i] === scratch[i]) i++;
      if (i < u) continue;
      while (i < len && (a[b + i] & ~scratch[i]) === 0) i++;
      if (i === len) return false;
    }
    if (arenaLen >> cb >= chunks.length || (arenaLen & cm) + 3 + len > cm + 1) {
      arenaLen = chunks.length << cb;
      chunks.push(new Int32Array(1 << cb));
    }
    const o = arenaLen;
    const a = chunks[o >> cb];
    const x = o & cm;
    a[x] = hash;
    a[x + 1] = len;
    a[x + 2] = table[slot];
    for (let i = 0; i < len; i++) a[x + 3 + i] = scratch[i];
    arenaLen += 3 + len;
    table[slot] = o;
    if (++used > table.length) {
      table = new Int32Array(table.length * 4).fill(-1);
      const mask = table.length - 1;
      for (let ch = 0; ch < chunks.length; ch++) {
        const a2 = chunks[ch]; // entries are packed from the start of each chunk; a zero length ends them
        for (let e = 0; e + 3 <= cm + 1 && a2[e + 1] !== 0; e += 3 + a2[e + 1]) {
          const sl = a2[e] & mask;
          a2[e + 2] = table[sl];
          table[sl] = (ch << cb) | e;
        }
      }
    }
    states++;
    return true;
  };

  const step = (k: number, s: number): number => {
    switch (type[k]) {
      case T_READ:
        return s === va[k] ? s : -1;
      case T_WRITE:
        return va[k];
      case T_DEL_TRUE:
        return s !== 0 ? 0 : -1;
      case T_DEL_FALSE:
        return s === 0 ? 0 : -1;
      case T_CAS_TRUE:
        return s === ve[k] ? va[k] : -1;
      case T_CAS_FALSE:
        return s !== ve[k] ? s : -1;
      case T_UNK_WRITE:
        // Unbounded: taking effect without changing anything is dominated by not taking effect (yet).
        return k >= m && s === va[k] ? -1 : va[k];
      case T_UNK_CAS:
        // Taking effect as a no-op is dominated by not taking effect. Bounded unknown cas ops are the only source of
        // a value somebody read, so a no-op there leads nowhere either.
        return s === ve[k] && !(k >= m && s === va[k]) ? va[k] : -1;
    }
    return -1;
  };

  // Ops that never change the value (reads, failed cas, deletes of an absent key). When one of them is pending and
  // valid in the current configuration, linearizing it right now is never worse than any alternative: it commutes to
  // the front of any completion (everything that must precede it has already been linearized, since its call precedes
  // the earliest pending return). So it is taken without branching ("forced").
  const preserving = new Uint8Array(n);
  for (let k = 0; k < n; k++) {
    preserving[k] = type[k] === T_READ || type[k] === T_CAS_FALSE || type[k] === T_DEL_FALSE ? 1 : 0;
  }

  // DFS stack.
  const stackOp = new Int32Array(n);
  const stackState = new Int32Array(n);
  const stackHi = new Int32Array(n);
  const stackForced = new Uint8Array(n);
  let sp = 0;
  let state = 0;
  let remaining = m;
  let iter = 0;
  // Scan position: phase 0 walks the event list from `entry`; phase 1 tries the unknown-op classes active at the
  // earliest pending return `blockedEntry` (time `limitT`) from position `ci`.
  let phase = 0;
  let entry = -1;
  let limitT = Infinity;
  let blockedEntry = -1;
  let lastUnk = -1; // phase 1: unknown op undone last (candidates after it remain to be tried)

  // Unbounded unknown ops are grouped into classes of identical effect (type, value, expected). Members of a class are
  // interchangeable once invoked, so only the earliest-invoked member not yet taken is ever tried: `taken[c]` members
  // (a prefix, by invoke) have taken effect. A class expecting a value e (cas) also expires: once a write that was
  // invoked after every write of e returned, the value can never be e again, so the class is useless from then on.
  // activeAt[j] lists the classes worth trying when the earliest pending return is required op j's.
  const classOf = new Int32Array(n).fill(-1);
  const members: number[][] = [];
  const expiry: number[] = [];
  {
    const bySig = new Map<string, number>();
    for (let k = m; k < n; k++) {
      const sig = `${type[k]},${va[k]},${ve[k]}`;
      let c = bySig.get(sig);
      if (c === undefined) {
        bySig.set(sig, c = members.length);
        members.push([]);
      }
      members[c].push(k);
      classOf[k] = c;
    }
    // Writes that certainly change the value to va (required ones), sorted by invoke, with suffix minima of returns.
    const certain: number[] = [];
    const writersOf = new Map<number, number[]>();
    for (let k = 0; k < n; k++) {
      const t = type[k];
      if (t === T_WRITE || t === T_CAS_TRUE || t === T_DEL_TRUE || t === T_UNK_WRITE || t === T_UNK_CAS) {
        if (k < m) certain.push(k);
        let w = writersOf.get(va[k]);
        if (!w) writersOf.set(va[k], w = []);
        w.push(k);
      }
    }
    certain.sort((x, y) => invokeAt[x] - invokeAt[y]);
    const sufMin = new Float64Array(certain.length + 1).fill(Infinity);
    for (let i = certain.length - 1; i >= 0; i--) sufMin[i] = Math.min(sufMin[i + 1], P[certain[i]].ret);
    for (let c = 0; c < members.length; c++) {
      const k0 = members[c][0];
      let exp = Infinity;
      if (type[k0] === T_UNK_CAS) {
        const ws = writersOf.get(ve[k0]) ?? [];
        if (ws.every((w) => w < m)) {
          const te = ws.reduce((acc, w) => Math.max(acc, P[w].ret), -Infinity);
          let lo = 0, hi2 = certain.length;
          while (lo < hi2) {
            const mid = (lo + hi2) >> 1;
            if (invokeAt[certain[mid]] > te) hi2 = mid;
            else lo = mid + 1;
          }
          exp = sufMin[lo];
        }
      }
      expiry.push(exp);
    }
  }
  const taken = new Int32Array(members.length);
  const cand = new Int32Array(members.length);
  /** Fills `cand` with the next member of each class in `act` that is invoked by limitT, sorted; returns the count. */
  const candidates = (act: Int32Array): number => {
    let nc = 0;
    for (let i = 0; i < act.length; i++) {
      const c = act[i];
      const mem = members[c];
      if (taken[c] < mem.length && invokeAt[mem[taken[c]]] <= limitT) cand[nc++] = mem[taken[c]];
    }
    for (let i = 1; i < nc; i++) { // insertion sort: nc is small and cand nearly sorted
      const x = cand[i];
      let j = i - 1;
      while (j >= 0 && cand[j] > x) {
        cand[j + 1] = cand[j];
        j--;
      }
      cand[j + 1] = x;
    }
    return nc;
  };
  const activeAt: Int32Array[] = new Array(m);
  {
    const byRet = Array.from({ length: m }, (_, j) => j).sort((x, y) => P[x].ret - P[y].ret);
    const byFirst = members.map((_, c) => c).sort((x, y) => invokeAt[members[x][0]] - invokeAt[members[y][0]]);
    let live: number[] = [];
    let fi = 0;
    const empty = new Int32Array(0);
    for (const j of byRet) {
      const t = P[j].ret;
      while (fi < byFirst.length && invokeAt[members[byFirst[fi]][0]] <= t) live.push(byFirst[fi++]);
      live = live.filter((c) => expiry[c] >= t);
      activeAt[j] = live.length ? Int32Array.from(live) : empty;
    }
  }

  /** Linearizes op k (new value ns) unless the resulting configuration was already explored. */
  const tryPush = (k: number, ns: number, forced: number): boolean => {
    setBit(k);
    const oldP = p, oldHi = hi;
    if (k < m) {
      if (k === p) { while (p < m && isSet(p)) p++; }
      if (k > hi) hi = k;
    }
    if (!remember(ns)) {
      clearBit(k);
      p = oldP;
      hi = oldHi;
      return false;
    }
    if (k >= m) taken[classOf[k]]++;
    stackOp[sp] = k;
    stackState[sp] = state;
    stackHi[sp] = oldHi;
    stackForced[sp] = forced;
    sp++;
    state = ns;
    if (k < m) {
      unlink(2 * k);
      unlink(2 * k + 1);
      remaining--;
    }
    return true;
  };
  const firstReturn = () => {
    let e = next[HEAD];
    while (e !== -1 && (e & 1) === 0) e = next[e];
    return e;
  };
  /** Undoes linearizations up to and including the most recent branching one; false when nothing is left to try. */
  const backtrack = (): boolean => {
    while (sp > 0) {
      sp--;
      const k = stackOp[sp];
      state = stackState[sp];
      hi = stackHi[sp];
      clearBit(k);
      if (k < p) p = k;
      if (k < m) {
        relink(2 * k + 1);
        relink(2 * k);
        remaining++;
      } else taken[classOf[k]]--;
      if (!stackForced[sp]) {
        if (k < m) {
          phase = 0;
          entry = next[2 * k];
        } else {
          phase = 1;
          lastUnk = k;
          blockedEntry = firstReturn();
          limitT = P[blockedEntry >> 1].ret;
        }
        return true;
      }
    }
    return false;
  };

  /**
   * Whether changing the value from `state` to `ns` lets some pending op take effect that cannot now: a required op
   * whose call precedes the earliest pending return, or an unknown cas among the `nc` candidates. An unknown op is only
   * worth taking right before such an op: in any linearization, an unknown op can be dropped if its value is
   * overwritten before anything depends on it, and otherwise moved to just before the first op that does depend on it
   * (the ops in between are value-preserving and valid either way).
   */
  const enables = (ns: number, nc: number): boolean => {
    for (let e = next[HEAD]; e !== blockedEntry; e = next[e]) {
      const k = e >> 1;
      if (step(k, ns) >= 0 && step(k, state) < 0) return true;
    }
    for (let i = 0; i < nc; i++) {
      const k = cand[i];
      if (type[k] === T_UNK_CAS && step(k, ns) >= 0 && step(k, state) < 0) return true;
    }
    return false;
  };

  // Deepest point reached, for the explanation.
  let bestDepth = -1;
  let bestPrefix: number[] = [];
  let bestState = 0;
  let bestBlocked = -1;
  let bestPending: number[] = [];

  remember(state);
  let fresh = true; // at a configuration just entered
  while (remaining > 0) {
    if ((++iter & 1023) === 0 && now() > deadline) {
      return { ok: null, states, reason: "timeout" };
    }
    if (states > maxStates) return { ok: null, states, reason: "maxStates" };
    if (fresh) {
      fresh = false;
      let forced = -1;
      for (let e = next[HEAD]; e !== -1 && (e & 1) === 0; e = next[e]) {
        const k = e >> 1;
        if (preserving[k] && step(k, state) >= 0) {
          forced = k;
          break;
        }
      }
      if (forced >= 0) {
        if (tryPush(forced, state, 1)) {
          fresh = true;
          continue;
        }
        // The forced successor was already explored without success, so this configuration is a dead end too.
        if (!backtrack()) break;
        continue;
      }
      phase = 0;
      entry = next[HEAD];
    }
    if (phase === 0) {
      if (entry !== -1 && (entry & 1) === 0) {
        // Branch over value-changing ops (valid value-preserving ones would have been forced).
        const k = entry >> 1;
        if (!preserving[k]) {
          const ns = step(k, state);
          if (ns >= 0 && tryPush(k, ns, 0)) {
            fresh = true;
            continue;
          }
        }
        entry = next[entry];
        continue;
      }
      // (remaining > 0, so some required op's return entry is still in the list: entry !== -1 here)
      phase = 1;
      lastUnk = -1;
      blockedEntry = entry;
      limitT = P[entry >> 1].ret;
    }
    // phase 1: unknown ops that may take effect now: the next member of each active class, in invoke order, after
    // `lastUnk` (the one just undone, if resuming).
    let pushed = false;
    const nc = candidates(activeAt[blockedEntry >> 1]);
    let ci = 0;
    while (ci < nc && cand[ci] <= lastUnk) ci++;
    for (; ci < nc; ci++) {
      const k = cand[ci];
      const ns = step(k, state);
      if (ns >= 0 && enables(ns, nc) && tryPush(k, ns, 0)) {
        pushed = true;
        break;
      }
    }
    if (pushed) {
      fresh = true;
      continue;
    }
    // The earliest pending return has been reached: its operation cannot be linearized in this branch.
    if (sp > bestDepth) {
      bestDepth = sp;
      bestPrefix = Array.from(stackOp.subarray(Math.max(0, sp - 5), sp));
      bestState = state;
      bestBlocked = blockedEntry >> 1;
      bestPending = [];
      for (let e = next[HEAD]; e !== -1 && e !== blockedEntry; e = next[e]) if ((e & 1) === 0) bestPending.push(e >> 1);
      for (const c of activeAt[bestBlocked]) {
        const k = members[c][taken[c]];
        if (k !== undefined && invokeAt[k] <= limitT) bestPending.push(k);
      }
    }
    if (!backtrack()) break;
  }
  if (remaining === 0) return { ok: true, states };

  // Not linearizable: describe the deepest point.
  const valueOf = (id: number): string | null => {
    if (id === 0) return null;
    if (id === UNREAD) return "<a value nobody read>";
    for (const q of P) {
      if ((q.type === T_READ) && q.a === id) return q.src.result as string;
      if (q.type !== T_READ && q.type !== T_DEL_TRUE && q.type !== T_DEL_FALSE && q.a === id) {
        return q.src.value as string;
      }
      if (q.e === id && (q.type === T_CAS_TRUE || q.type === T_CAS_FALSE || q.type === T_UNK_CAS)) {
        return q.src.expected as string;
      }
    }
    return `#${id}`;
  };
  const detail: string[] = [];
  const span = (q: Prepared) => `[${fmtTime(q.invoke)} .. ${fmtTime(q.ret)}]`;
  detail.push(
    `Deepest consistent prefix: ${bestDepth} of ${m} completed ops linearized; the value was then ${
      fmtVal(valueOf(bestState))
    }.`,
  );
  if (bestPrefix.length) {
    detail.push(`Last ops of that prefix, in linearization order:`);
    for (const k of bestPrefix.slice(-5)) detail.push(`    ${span(P[k])} ${formatOp(P[k].src)}`);
  }
  if (bestBlocked >= 0) {
    const b = P[bestBlocked];
    detail.push(`This op had returned by then, but cannot take effect next (nor can any order of the pending ops):`);
    detail.push(`    ${span(b)} ${formatOp(b.src)}`);
    const others = bestPending.filter((k) => k !== bestBlocked);
    if (others.length) {
      detail.push(`Other pending ops that could have gone first:`);
      for (const k of others.slice(0, 12)) detail.push(`    ${span(P[k])} ${formatOp(P[k].src)}`);
      if (others.length > 12) detail.push(`    ... and ${others.length - 12} more`);
    }
  }
  const blockedOp = bestBlocked >= 0 ? P[bestBlocked] : undefined;
  return {
    ok: false,
    states,
    failure: {
      reason: blockedOp
        ? `no linearization: ${formatOp(blockedOp.src)} cannot take effect before it returned at ` +
          `${fmtTime(blockedOp.ret)} (deepest consistent prefix: ${bestDepth} ops)`
        : "no linearization",
      detail,
      blocked: blockedOp?.src,
    },
  };
}

/**
 * Shrinks a non-linearizable key history to a sub-history that still fails in the same way: the search gets stuck at
 * the same op (`blocked`), and not merely because a read lost the write it observed. Bulk reductions first (later ops,
 * unknown ops, other reads, a prefix), then delta debugging over single-op removal, which ends 1-minimal.
 */
function minimizeFailure(ops: Op[], blocked: Op | undefined, deadline: number): { ops: Op[]; minimal: boolean } {
  const reproduces = (cand: Op[]) => {
    if (now() > deadline) return false;
    const r = checkKey(cand, 50_000, deadline);
    return r.ok === false && !r.failure!.implicated && (blocked === undefined || r.failure!.blocked === blocked);
  };
  const byInvoke = (a: Op, b: Op) => a.invoke - b.invoke || endOf(a) - endOf(b);
  // Failed ops and unknown reads have no effect at all (the search ignores them, so this still reproduces).
  let cur = ops.filter((o) => o.outcome !== "fail" && !(o.kind === "get" && o.outcome === "unknown")).sort(byInvoke);
  const attempt = (keep: (o: Op) => boolean) => {
    const cand = cur.filter(keep);
    if (cand.length < cur.length && reproduces(cand)) cur = cand;
  };
  if (blocked) {
    const t = blocked.return;
    // Small windows first: the blocked op, the writes of the values it observed, and the last k ops invoked before it
    // returned — (a) only their writes, (b) all of them plus the writes of every value they observed.
    const observedOf = (o: Op): (string | null)[] =>
      o.kind === "get" && o.outcome === "ok"
        ? [o.result as string | null]
        : o.kind === "cas" && o.result === true && o.outcome === "ok"
        ? [o.expected ?? null]
        : [];
    const writes = (o: Op) =>
      (o.kind === "put" || o.kind === "delete" || (o.kind === "cas" && o.result !== false)) &&
      !(o.kind === "delete" && typeof o.result === "boolean" && o.outcome === "ok");
    const writersOf = (vals: (string | null)[]) =>
      cur.filter((o) => writes(o) && vals.some((v) => v !== null && (o.kind === "delete" ? null : o.value) === v));
    const before = cur.filter((o) => o.invoke <= t && o !== blocked);
    const base = new Set([blocked, ...writersOf(observedOf(blocked))]);
    for (let k = 4; k < before.length * 2; k *= 4) {
      const recent = before.slice(-k);
      const a = new Set(base);
      for (const o of recent) if (writes(o) && observedOf(o).length === 0) a.add(o);
      const b = new Set([...base, ...recent, ...writersOf(recent.flatMap(observedOf))]);
      const found = [a, b].find((c) => c.size < cur.length && reproduces(cur.filter((o) => c.has(o))));
      if (found) {
        cur = cur.filter((o) => found.has(o));
        break;
      }
      if (now() > deadline) break;
    }
    attempt((o) => o.invoke <= t);
    attempt((o) => o === blocked || o.outcome !== "unknown");
    attempt((o) => o === blocked || !(o.kind === "get" || (o.kind === "cas" && o.result === false)));
    // Drop the longest prefix that can go (binary search; every accepted candidate is verified).
    const bi = cur.indexOf(blocked);
    let lo = 0, hi = bi; // cur.slice(lo) known to reproduce; try to raise lo
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (reproduces(cur.slice(mid))) lo = mid;
      else hi = mid - 1;
    }
    if (lo > 0) cur = cur.slice(lo);
  }
  let parts = 2;
  while (cur.length >= 2) {
    if (now() > deadline) return { ops: cur, minimal: false };
    const size = Math.ceil(cur.length / parts);
    let reduced = false;
    for (let i = 0; i < cur.length; i += size) {
      const cand = cur.slice(0, i).concat(cur.slice(i + size));
      if (reproduces(cand)) {
        cur = cand;
        parts = Math.max(parts - 1, 2);
        reduced = true;
        break;
      }
      if (now() > deadline) return { ops: cur, minimal: false };
    }
    if (!reduced) {
      if (parts >= cur.length) break;
      parts = Math.min(cur.length, parts * 2);
    }
  }
  return { ops: cur, minimal: true };
}

/**
 * Checks that `history` is linearizable with respect to a map of independent registers (see the module comment).
 * Throws TypeError on malformed operations.
 */
export function checkLinearizable(history: readonly Op[], opts: CheckOptions = {}): CheckResult {
  const start = now();
  const maxStates = opts.maxStates ?? 10_000_000;
  const deadline = start + (opts.timeoutMs ?? 60_000);
  history.forEach(validate);
  const byKey = new Map<string, Op[]>();
  for (const op of history) {
    let l = byKey.get(op.key);
    if (!l) byKey.set(op.key, l = []);
    l.push(op);
  }
  let totalStates = 0;
  const stats = (): CheckStats => ({
    keys: byKey.size,
    ops: history.length,
    states: totalStates,
    elapsedMs: now() - start,
  });
  const undecided: { key: string; reason: string }[] = [];
  for (const [key, ops] of byKey) {
    if (now() > deadline) {
      undecided.push({ key, reason: "not checked (time budget exhausted)" });
      continue;
    }
    const r = checkKey(ops, maxStates, deadline);
    totalStates += r.states;
    if (r.ok === null) {
      undecided.push({
        key,
        reason: r.reason === "maxStates"
          ? `search budget exhausted (${r.states} states > maxStates ${maxStates})`
          : `time budget exhausted (timeoutMs ${opts.timeoutMs ?? 60_000}) after ${r.states} states`,
      });
      continue;
    }
    if (r.ok) continue;
    const f = r.failure!;
    let sub: Op[];
    let minimal: boolean;
    if (f.implicated) {
      sub = f.implicated;
      minimal = true;
    } else if (opts.minimize === false) {
      sub = ops.slice();
      minimal = false;
    } else {
      const mm = minimizeFailure(ops, f.blocked, now() + (opts.minimizeTimeoutMs ?? 3_000));
      sub = mm.ops;
      minimal = mm.minimal;
    }
    sub = [...sub].sort((a, b) => a.invoke - b.invoke || endOf(a) - endOf(b));
    // List at most 40 ops: those nearest (by invoke order) to the op the search got stuck at.
    let shown = sub;
    if (sub.length > 40) {
      const at = f.blocked ? Math.max(0, sub.indexOf(f.blocked)) : sub.length - 1;
      const from = Math.max(0, Math.min(at - 30, sub.length - 40));
      shown = sub.slice(from, from + 40);
    }
    const explanation = [
      `Not linearizable: key ${JSON.stringify(key)} (${ops.length} ops).`,
      `Reason: ${f.reason}.`,
      ...f.detail,
      `${
        f.implicated
          ? "Ops involved"
          : minimal
          ? "Minimal sub-history with the same failure (removing any one op makes it linearizable, or moves the " +
            "failure elsewhere)"
          : opts.minimize === false
          ? "Sub-history of the key"
          : "Reduced non-linearizable sub-history (minimisation budget ran out)"
      } (${sub.length} ops${shown.length < sub.length ? `; showing the ${shown.length} around the failure` : ""}):`,
      formatHistory(shown, { indent: "    " }),
    ].join("\n");
    return { ok: false, key, reason: f.reason, ops: sub, minimal, explanation, stats: stats() };
  }
  if (undecided.length) {
    return {
      ok: null,
      key: undecided[0].key,
      reason: undecided.map((u) => `key ${JSON.stringify(u.key)}: ${u.reason}`).join("; "),
      stats: stats(),
    };
  }
  return { ok: true, stats: stats() };
}
