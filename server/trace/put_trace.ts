/**
 * The trace of a put across the members (`deno task trace-put`, scripts/trace_put.ts): when the environment variable
 * EG_TRACE_PUT_PREFIX is set, every member records the moments a put whose key starts with that prefix, and the log
 * entries it became, are handed on — client bytes in, proposal, Ready, peer frame out, peer frame in, fsync, ack out,
 * ack in, commit, apply, reply — into a ring buffer that `GET /debug/trace-put` on the client URL returns as JSON.
 *
 * Off (the variable unset, or no permission to read it), `putTrace.on` is false, read once at start: every hook is
 * one `if (putTrace.on)` on a constant and records nothing.
 *
 * Times are `performance.now()` of the recording process (CLOCK_MONOTONIC since its start); the endpoint adds the
 * process's `performance.timeOrigin` (the wall clock when the process started), so that `timeOrigin + now()` is one
 * time line shared by all processes of the host (exact while the wall clock is not stepped or slewed between their
 * starts; the tool checks the offsets). Log entries are traced by index on every member (followers cannot tell which
 * entry holds a traced key without decoding it): `proposed` links a traced request to its entry on the leader.
 */
import type { Entry, Message } from "../raft/types.ts";

/** The hand-offs, as the JSON names them. */
export const Stage = {
  /** the socket chunk that completed the request was read (the handler runs in the same turn) */
  bytesIn: 0,
  /** the Put handler took the request */
  recv: 1,
  /** the leader's Raft core appended it: `lo` is its index */
  propose: 2,
  /** a Ready handed the entries to be written and sent */
  ready: 3,
  /** the entries' WAL write and fdatasync returned */
  fsync: 4,
  /** a frame with an append of the entries to `peer` is handed to the socket (stamped just before the write) */
  appOut: 5,
  /** a frame with an append of the entries from `peer` arrived */
  appIn: 6,
  /** an append acknowledgement up to `hi` to `peer` is handed to the socket (stamped just before the write) */
  ackOut: 7,
  /** an append acknowledgement up to `hi` from `peer` arrived */
  ackIn: 8,
  /** a Ready handed the entries over as committed */
  commit: 9,
  /** the committed entries were applied to the store */
  apply: 10,
  /** the Put handler answered (the response is queued for the client's socket) */
  reply: 11,
} as const;

const STAGE_NAMES = Object.keys(Stage);

/** Events kept per member; older ones are overwritten. */
const CAPACITY = 1 << 16;

/** One recorded event as `GET /debug/trace-put` returns it. */
export interface TraceEvent {
  stage: string;
  /** performance.now() of the member */
  t: number;
  /** first and last log index (request events: the trace ID in `lo`, `propose` adds the index as `hi`) */
  lo: number;
  hi: number;
  /** the other member of a peer event (its ID, decimal) */
  peer?: string;
}

/** The body of `GET /debug/trace-put`. */
export interface TraceDump {
  /** performance.timeOrigin of the member's process: add it to `t` for the shared time line */
  timeOrigin: number;
  prefix: string;
  /** traced requests: trace ID → key */
  keys: Record<string, string>;
  events: TraceEvent[];
}

function readPrefix(): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: "EG_TRACE_PUT_PREFIX" }).state !== "granted") return;
    return Deno.env.get("EG_TRACE_PUT_PREFIX") || undefined;
  } catch {
    return undefined;
  }
}

class PutTrace {
  /** Whether tracing is on (EG_TRACE_PUT_PREFIX was set when the process started). */
  readonly on: boolean;
  /** When the HTTP/2 server last read a socket chunk (set by the transport only while tracing). */
  inputAt = 0;
  readonly #prefix: Uint8Array;
  readonly #prefixText: string;
  #t = new Float64Array(0);
  #lo = new Float64Array(0);
  #hi = new Float64Array(0);
  #stage = new Uint8Array(0);
  #peer: string[] = [];
  #n = 0;
  #seq = 0;
  /** the traced request whose proposal is being made (the Put handler proposes synchronously) */
  #current = 0;
  #keys = new Map<number, string>();

  constructor(prefix: string | undefined) {
    this.on = prefix !== undefined;
    this.#prefixText = prefix ?? "";
    this.#prefix = new TextEncoder().encode(this.#prefixText);
    if (!this.on) return;
    this.#t = new Float64Array(CAPACITY);
    this.#lo = new Float64Array(CAPACITY);
    this.#hi = new Float64Array(CAPACITY);
    this.#stage = new Uint8Array(CAPACITY);
    this.#peer = new Array(CAPACITY).fill("");
  }

  #record(stage: number, lo: number, hi: number, peer = "", t = performance.now()): void {
    const i = this.#n++ % CAPACITY;
    this.#t[i] = t;
    this.#stage[i] = stage;
    this.#lo[i] = lo;
    this.#hi[i] = hi;
    this.#peer[i] = peer;
  }

  #traced(key: Uint8Array): boolean {
    const p = this.#prefix;
    if (key.length < p.length) return false;
    for (let i = 0; i < p.length; i++) if (key[i] !== p[i]) return false;
    return true;
  }

  /**
   * Runs a Put's proposal: when the key is traced, records its arrival, links the entry the proposal makes (see
   * `proposed`) and records the reply.
   */
  put<T>(key: Uint8Array, propose: () => Promise<T>): Promise<T> {
    if (!this.#traced(key)) return propose();
    const id = ++this.#seq;
    if (this.#keys.size >= 4096) this.#keys.delete(this.#keys.keys().next().value!);
    this.#keys.set(id, new TextDecoder().decode(key));
    this.#record(Stage.bytesIn, id, id, "", this.inputAt);
    this.#record(Stage.recv, id, id);
    this.#current = id;
    let p: Promise<T>;
    try {
      p = propose();
    } finally {
      this.#current = 0;
    }
    return p.then((r) => {
      this.#record(Stage.reply, id, id);
      return r;
    });
  }

  /** The Raft core took a proposal; `index` is its entry's on a leader (0 on a follower, which forwards it). */
  proposed(index: number): void {
    if (this.#current === 0) return;
    this.#record(Stage.propose, this.#current, index);
    this.#current = 0;
  }

  /** `entries` reached `stage` (ready, fsync, commit, apply). */
  entries(stage: number, entries: Entry[]): void {
    if (entries.length === 0) return;
    this.#record(stage, entries[0].index, entries[entries.length - 1].index);
  }

  /** Raft messages went out (`out`) or came in: appends with entries and their acknowledgements are recorded. */
  messages(msgs: Message[], out: boolean): void {
    for (const m of msgs) {
      if (m.type === "App" && m.entries.length > 0) {
        const ents = m.entries;
        this.#record(out ? Stage.appOut : Stage.appIn, ents[0].index, ents[ents.length - 1].index, out ? m.to : m.from);
      } else if (m.type === "AppResp" && !m.reject) {
        this.#record(out ? Stage.ackOut : Stage.ackIn, m.index, m.index, out ? m.to : m.from);
      }
    }
  }

  /** The ring buffer's content, oldest first. */
  dump(): TraceDump {
    const events: TraceEvent[] = [];
    const n = Math.min(this.#n, CAPACITY);
    for (let k = this.#n - n; k < this.#n; k++) {
      const i = k % CAPACITY;
      const e: TraceEvent = { stage: STAGE_NAMES[this.#stage[i]], t: this.#t[i], lo: this.#lo[i], hi: this.#hi[i] };
      if (this.#peer[i]) e.peer = this.#peer[i];
      events.push(e);
    }
    return {
      timeOrigin: performance.timeOrigin,
      prefix: this.#prefixText,
      keys: Object.fromEntries([...this.#keys].map(([id, k]) => [String(id), k])),
      events,
    };
  }
}

/** This process's put tracer (off unless EG_TRACE_PUT_PREFIX is set). */
export const putTrace = new PutTrace(readPrefix());
