/**
 * A client workload that records a linearizability history against real members, for `checkLinearizable`
 * (tests/lib/linearizability.ts).
 *
 * Several concurrent clients each loop over random operations on a few keys:
 *   - get(key)               a linearizable Range (never serializable: those may be stale by design)
 *   - put(key, value)        with a value unique in the whole history
 *   - cas(key, exp, value)   a Txn: compare value(key) = exp (exp = null: create_revision(key) = 0) → put(key, value);
 *                            `exp` is the last value this client saw for the key
 * Each operation gets invoke/return timestamps (performance.now() of this process) and an outcome:
 *   - ok:      the response arrived (a cas whose compare failed is ok with result false);
 *   - unknown: every gRPC error — a timeout or a connection error may hide an applied write, and even errors such as
 *              "etcdserver: no leader" do not prove that nothing was proposed. Nothing is ever recorded as "fail".
 * After an unknown operation the client continues under a new client id (`<n>.<generation>`), as Jepsen does with a
 * crashed process, waits `pauseAfterErrorMs`, and (with `failover`) moves on to the next endpoint.
 */
import { errorText, EtcdClient, sleep } from "./cluster.ts";
import { checkLinearizable, type CheckResult, HistoryRecorder, type Op, type OpKind } from "./linearizability.ts";
import { prng } from "./prng.ts";

export { prng };

export interface WorkloadOptions {
  /** host:port of the members; client i starts on endpoints[i % n] */
  endpoints: string[];
  /** concurrent clients (default 6) */
  clients?: number;
  /** number of keys (default 3) */
  keys?: number;
  /** key prefix (default "lin/"): keys are <prefix>0 .. <prefix>(keys-1) */
  keyPrefix?: string;
  /** deadline of each operation, ms (default 2000) */
  opTimeoutMs?: number;
  /** after an error, continue on the next endpoint (default true); false pins each client to its endpoint */
  failover?: boolean;
  /** pause after an error, ms (default 100) */
  pauseAfterErrorMs?: number;
  /** pause between operations, ms (default 0) */
  thinkMs?: number;
  /** relative weights of the operations (default get 2, put 1, cas 1) */
  mix?: { get: number; put: number; cas: number };
  /** PRNG seed (default random); recorded in the summary */
  seed?: number;
  /** unique prefix of the values written (default "v") */
  valuePrefix?: string;
}

/** An operation as the workload records it: also which member it was sent to. */
export interface RecordedOp extends Op {
  endpoint?: string;
}

export interface HistorySummary {
  seed: number;
  total: number;
  ok: number;
  fail: number;
  unknown: number;
  byKind: Record<string, { ok: number; fail: number; unknown: number }>;
  /** error text → count */
  errors: Record<string, number>;
}

/** Runs the clients until stop(); the history is in `recorder`. */
export class HistoryWorkload {
  readonly recorder = new HistoryRecorder();
  readonly seed: number;
  readonly errors = new Map<string, number>();
  #opts: Required<Omit<WorkloadOptions, "seed">>;
  #stopped = false;
  #loops: Promise<void>[] = [];
  #clients = new Map<string, EtcdClient>();

  constructor(opts: WorkloadOptions) {
    this.seed = opts.seed ?? Math.floor(Math.random() * 2 ** 32);
    this.#opts = {
      clients: 6,
      keys: 3,
      keyPrefix: "lin/",
      opTimeoutMs: 2000,
      failover: true,
      pauseAfterErrorMs: 100,
      thinkMs: 0,
      mix: { get: 2, put: 1, cas: 1 },
      valuePrefix: "v",
      ...opts,
    };
    if (opts.endpoints.length === 0) throw new Error("HistoryWorkload: no endpoints");
  }

  #client(endpoint: string): EtcdClient {
    let c = this.#clients.get(endpoint);
    if (!c) this.#clients.set(endpoint, c = new EtcdClient(endpoint));
    return c;
  }

  /** Starts every client loop. */
  start(): this {
    const rand = prng(this.seed);
    for (let i = 0; i < this.#opts.clients; i++) {
      this.#loops.push(this.#loop(i, prng(Math.floor(rand() * 2 ** 32))));
    }
    return this;
  }

  async #loop(n: number, rand: () => number): Promise<void> {
    const o = this.#opts;
    const { endpoints } = o;
    let ep = n % endpoints.length;
    let gen = 0;
    let seq = 0;
    const seen = new Map<string, string | null>();
    const total = o.mix.get + o.mix.put + o.mix.cas;
    while (!this.#stopped) {
      const client = `${n}.${gen}`;
      const key = `${o.keyPrefix}${Math.floor(rand() * o.keys)}`;
      const r = rand() * total;
      const kind: OpKind = r < o.mix.get ? "get" : r < o.mix.get + o.mix.put ? "put" : "cas";
      const c = this.#client(endpoints[ep]);
      const value = `${o.valuePrefix}${n}.${seq++}`;
      const expected = seen.get(key) ?? null;
      const p = this.recorder.invoke(
        client,
        kind,
        key,
        kind === "put" ? { value } : kind === "cas" ? { expected, value } : {},
      );
      (p.op as RecordedOp).endpoint = endpoints[ep];
      try {
        if (kind === "get") {
          const res = await c.get(key, { timeoutMs: o.opTimeoutMs });
          p.ok(res.value);
          seen.set(key, res.value);
        } else if (kind === "put") {
          await c.put(key, value, o.opTimeoutMs);
          p.ok();
          seen.set(key, value);
        } else {
          const ok = await c.cas(key, expected, value, o.opTimeoutMs);
          p.ok(ok);
          if (ok) seen.set(key, value);
        }
      } catch (e) {
        p.unknown();
        const text = errorText(e).replace(/\d+(\.\d+)?/g, "N").slice(0, 120);
        this.errors.set(text, (this.errors.get(text) ?? 0) + 1);
        gen++;
        if (o.failover) ep = (ep + 1) % endpoints.length;
        await sleep(o.pauseAfterErrorMs);
        continue;
      }
      if (o.thinkMs > 0) await sleep(o.thinkMs);
    }
  }

  /** Stops the clients (operations in flight finish or time out), closes the connections; returns the history. */
  async stop(): Promise<RecordedOp[]> {
    this.#stopped = true;
    await Promise.all(this.#loops);
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
    return this.history();
  }

  history(): RecordedOp[] {
    return this.recorder.history();
  }

  summary(): HistorySummary {
    return summarize(this.recorder.ops, this.seed, this.errors);
  }
}

/** Counts of a history by outcome and kind. */
export function summarize(ops: readonly Op[], seed = 0, errors = new Map<string, number>()): HistorySummary {
  const s: HistorySummary = {
    seed,
    total: ops.length,
    ok: 0,
    fail: 0,
    unknown: 0,
    byKind: {},
    errors: Object.fromEntries(errors),
  };
  for (const op of ops) {
    s[op.outcome]++;
    const k = s.byKind[op.kind] ??= { ok: 0, fail: 0, unknown: 0 };
    k[op.outcome]++;
  }
  return s;
}

/** One line: op counts by kind and outcome. */
export function formatSummary(s: HistorySummary): string {
  const kinds = Object.entries(s.byKind)
    .map(([k, v]) =>
      `${k} ${v.ok + v.fail + v.unknown} (ok ${v.ok}, unknown ${v.unknown}${v.fail ? `, fail ${v.fail}` : ""})`
    )
    .join(", ");
  return `${s.total} ops: ${s.ok} ok, ${s.unknown} unknown, ${s.fail} fail; ${kinds}; seed ${s.seed}`;
}

/** JSON-safe form of a history (an unknown op's return time +∞ becomes null). */
export function encodeHistory(ops: readonly Op[]): unknown[] {
  return ops.map((o) => ({ ...o, return: Number.isFinite(o.return) ? o.return : null }));
}

/** Inverse of encodeHistory. */
export function decodeHistory(data: unknown): RecordedOp[] {
  return (data as Array<RecordedOp & { return: number | null }>).map((o) => ({ ...o, return: o.return ?? Infinity }));
}

/**
 * Runs checkLinearizable on `ops`, prints the op counts and the verdict under `label`, and returns the result. The
 * caller asserts on `result.ok` (true = linearizable, false = not, null = the checker's budget ran out).
 */
export function checkAndReport(label: string, ops: readonly Op[], summary: HistorySummary): CheckResult {
  const r = checkLinearizable(ops);
  const verdict = r.ok === true ? "LINEARIZABLE" : r.ok === false ? "NOT LINEARIZABLE" : "UNDECIDED";
  console.log(
    `${label}: ${formatSummary(summary)}\n${label}: checkLinearizable → ${verdict} ` +
      `(${r.stats.keys} keys, ${r.stats.ops} ops checked, ${r.stats.states} states, ${
        r.stats.elapsedMs.toFixed(0)
      } ms)` +
      (Object.keys(summary.errors).length ? `\n${label}: errors: ${JSON.stringify(summary.errors)}` : ""),
  );
  if (r.ok !== true) console.log(r.explanation ?? r.reason ?? "");
  return r;
}
