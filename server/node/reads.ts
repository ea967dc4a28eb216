/**
 * Linearizable reads through ReadIndex, batched: every read that arrives while no round is in flight joins the next
 * round, and one round (one read context sent to the Raft core) confirms leadership for all of them. A confirmed
 * round is served once the applied index reaches the index the leader returned.
 */
import { newWaiter, type Waiter } from "./waiters.ts";

/** A round that got no answer (lost messages, leader change) is asked again after this long, as etcd does. */
export const READ_RETRY_MS = 500;

/** What the read path needs of the member around it. */
export interface ReadsDeps {
  /** this member's ID: the first part of every read context */
  memberId: string;
  /** Asks the Raft core for a read index under `ctx` (RaftNode.readIndex, errors handled by the caller). */
  askReadIndex: (ctx: Uint8Array) => void;
  /** Whether a leader is known; a round is only started when one is. */
  hasLeader: () => boolean;
  /** How long a read may wait before it fails, in ms. */
  timeoutMs: number;
  /** The clock of deadlines and retries (performance.now()). */
  now?: () => number;
}

/** The reads waiting on ReadIndex rounds of one member. */
export class LinearizableReads {
  #deps: ReadsDeps;
  #now: () => number;
  /** reads waiting for the next ReadIndex round */
  #queue: Waiter[] = [];
  /** reads of the round in flight, by context */
  #rounds = new Map<string, { waiters: Waiter[]; sentAt: number }>();
  /** reads confirmed by a ReadIndex, waiting for the applied index to reach it */
  #toServe: Array<{ index: number; waiters: Waiter[] }> = [];
  /** every read waiter not yet known to be settled, in arrival order (so also by deadline) */
  #deadlines: Waiter[] = [];
  #seq = 0;
  /**
   * Unique to this process start: a leader may still hold a read round of this member's previous process under the
   * same sequence number, and would answer the new round with that round's older index (a stale read).
   */
  readonly #prefix = crypto.randomUUID();

  constructor(deps: ReadsDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? (() => performance.now());
  }

  /** Resolves when a linearizable read may be served from the local state. */
  read(): Promise<void> {
    return new Promise((resolve, reject) => {
      const w = newWaiter(() => resolve(), reject, this.#now() + this.#deps.timeoutMs);
      this.#queue.push(w);
      this.#deadlines.push(w);
      if (this.#rounds.size === 0) this.startRound();
    });
  }

  /** Sends the waiting reads as one round, when a leader is known (and again after a leader appeared). */
  startRound(): void {
    if (this.#queue.length === 0 || !this.#deps.hasLeader()) return;
    const waiters = this.#queue;
    this.#queue = [];
    const ctx = `${this.#deps.memberId}/${this.#prefix}/${++this.#seq}`;
    this.#rounds.set(ctx, { waiters, sentAt: this.#now() });
    this.#deps.askReadIndex(new TextEncoder().encode(ctx));
  }

  /** Re-issues read rounds that got no answer within READ_RETRY_MS. */
  retry(): void {
    const now = this.#now();
    for (const [ctx, round] of this.#rounds) {
      if (now - round.sentAt < READ_RETRY_MS) continue;
      this.#rounds.delete(ctx);
      this.#queue.unshift(...round.waiters);
    }
    if (this.#rounds.size === 0) this.startRound();
  }

  /** The leader confirmed the round `ctx` at `index` (a ReadState of a Ready); the next round may start. */
  confirmed(ctx: Uint8Array, index: number): void {
    const key = new TextDecoder().decode(ctx);
    const round = this.#rounds.get(key);
    if (!round) return;
    this.#rounds.delete(key);
    this.#toServe.push({ index, waiters: round.waiters });
    this.startRound();
  }

  /** Answers the confirmed reads whose index `appliedIndex` has reached. */
  serve(appliedIndex: number): void {
    if (this.#toServe.length === 0) return;
    const rest: Array<{ index: number; waiters: Waiter[] }> = [];
    for (const r of this.#toServe) {
      if (r.index > appliedIndex) {
        rest.push(r);
        continue;
      }
      for (const w of r.waiters) {
        if (w.settled) continue; // timed out meanwhile
        w.settled = true;
        w.resolve({});
      }
    }
    this.#toServe = rest;
  }

  /** Fails the reads whose deadline has passed with `failure()`. */
  expire(now: number, failure: () => unknown): void {
    const reads = this.#deadlines;
    let keep = 0;
    while (keep < reads.length && (reads[keep].settled || reads[keep].deadline <= now)) {
      const w = reads[keep++];
      if (w.settled) continue;
      w.settled = true;
      w.reject(failure());
    }
    if (keep > 0) this.#deadlines = reads.slice(keep);
  }

  /** Fails every read not yet answered with `err` (the member stops). */
  rejectAll(err: unknown): void {
    for (const w of this.#deadlines) {
      if (w.settled) continue;
      w.settled = true;
      w.reject(err);
    }
    this.#deadlines = [];
  }
}
