/**
 * Requests waiting on the Raft loop: proposals until their entry is applied here (etcd's wait.Wait), with the request
 * IDs that tie an applied entry back to its caller.
 */

import type { InternalResponse, Member } from "../../proto/mod.ts";
import { IntMap } from "../util/int_map.ts";

/**
 * What a waiter is answered with: an applied request's response, the member list after a conf change, nothing for a
 * confirmed read.
 */
export type Reply = InternalResponse | ConfChangeReply | Record<string, never>;

/** What an applied conf change answers its proposer: the members after it. */
export interface ConfChangeReply {
  members: Member[];
}

/**
 * A request waiting for its entry to apply or its read to be confirmed. It fails once `deadline` (performance.now())
 * has passed: the clock's tick looks for expired waiters, so that no request needs a timer of its own (setting one
 * took about 10 µs of the 60 µs from a put's bytes on the leader to its first append on the wire).
 */
export interface Waiter {
  resolve: (r: Reply) => void;
  reject: (e: unknown) => void;
  deadline: number;
  /** answered or failed (reads: a waiter stays in the read structures until they drop it) */
  settled: boolean;
}

/** A waiter for a request that fails at `deadline`. */
export function newWaiter(resolve: (r: Reply) => void, reject: (e: unknown) => void, deadline: number): Waiter {
  return { resolve, reject, deadline, settled: false };
}

/**
 * The table key of a request ID: the number its last nine decimal digits make (IDs are uint64s in decimal). The IDs
 * this member gives out are consecutive numbers, so those waiting at once never share a key.
 */
function keyOf(id: string): number {
  let v = 0;
  for (let i = Math.max(0, id.length - 9); i < id.length; i++) v = v * 10 + ((id.charCodeAt(i) - 48) & 15);
  return v;
}

/**
 * Proposals made on this member and not yet applied, by request ID. IDs are unique across members and process starts:
 * the member ID's low 16 bits, the start time's low 40 bits (ms), then a sequence number.
 *
 * Held in a queue in proposal order (so also by deadline), found by {@link keyOf} in an IntMap, not in a Map: a Map
 * with one entry added and one deleted per request copies its table every few requests, and in a heap sampling of
 * 2,000 paced puts/s those copies were a quarter of what the major collector freed. A waiter leaves the queue as soon
 * as every one before it has left (entries mostly apply in proposal order); the others when the queue's head passes.
 */
export class Proposals {
  /** the queue counter of each waiting proposal, by {@link keyOf} of its ID */
  #byKey = new IntMap<number>();
  /** the same for IDs whose key another waiting ID holds (only IDs not from nextId can meet) */
  #overflow = new Map<string, number>();
  /**
   * Waiters in proposal order, a ring: counters #head to #tail, counter c in slot `c & (length - 1)`; a slot is
   * emptied when its waiter leaves.
   */
  #queue: (Waiter | undefined)[] = new Array(64).fill(undefined);
  #queueIds: (string | undefined)[] = new Array(64).fill(undefined);
  #head = 0;
  #tail = 0;
  #size = 0;
  #seq = 0n;
  readonly #prefix: bigint;

  constructor(memberId: string, startedMs: number = Date.now()) {
    this.#prefix = (BigInt(memberId) & 0xffffn) << 48n | (BigInt(startedMs) & 0xffffffffffn) << 8n;
  }

  /** A request ID not given out before. */
  nextId(): string {
    return (this.#prefix + this.#seq++).toString();
  }

  /** How many proposals wait. */
  get size(): number {
    return this.#size;
  }

  /** Registers the waiter of proposal `id` (replacing one registered under the same ID). */
  add(id: string, w: Waiter): void {
    this.#remove(id);
    if (this.#tail - this.#head === this.#queue.length) this.#growQueue();
    const c = this.#tail++, slot = c & (this.#queue.length - 1);
    this.#queue[slot] = w;
    this.#queueIds[slot] = id;
    this.#size++;
    const key = keyOf(id);
    if (this.#byKey.has(key)) this.#overflow.set(id, c);
    else this.#byKey.set(key, c);
  }

  /** Removes proposal `id`'s waiter; returns it, or undefined when none waits. */
  #remove(id: string): Waiter | undefined {
    const key = keyOf(id), mask = this.#queue.length - 1;
    let c = this.#byKey.get(key);
    if (c !== undefined && this.#queueIds[c & mask] === id) this.#byKey.delete(key);
    else if (this.#overflow.size > 0 && (c = this.#overflow.get(id)) !== undefined) this.#overflow.delete(id);
    else return undefined;
    const slot = c & mask, w = this.#queue[slot];
    this.#queue[slot] = undefined;
    this.#queueIds[slot] = undefined;
    this.#size--;
    while (this.#head < this.#tail && this.#queue[this.#head & mask] === undefined) this.#head++;
    return w;
  }

  /** Doubles the ring; every counter keeps its meaning (the waiting span is shorter than the old ring). */
  #growQueue(): void {
    const q = this.#queue, ids = this.#queueIds, mask = q.length - 1;
    const q2: (Waiter | undefined)[] = new Array(q.length * 2).fill(undefined);
    const ids2: (string | undefined)[] = new Array(q.length * 2).fill(undefined);
    const mask2 = q2.length - 1;
    for (let c = this.#head; c < this.#tail; c++) {
      q2[c & mask2] = q[c & mask];
      ids2[c & mask2] = ids[c & mask];
    }
    this.#queue = q2;
    this.#queueIds = ids2;
  }

  /** Forgets proposal `id` without settling it (its proposal never reached the Raft core). */
  drop(id: string): void {
    this.#remove(id);
  }

  /** The waiter of a proposal made here, if it still waits (it is then the caller's to settle). */
  take(id: string): Waiter | undefined {
    const w = this.#remove(id);
    if (w) w.settled = true;
    return w;
  }

  /** Fails the proposals whose deadline has passed with `failure()`; returns how many. */
  expire(now: number, failure: () => unknown): number {
    let n = 0;
    while (this.#head < this.#tail) {
      const slot = this.#head & (this.#queue.length - 1);
      const w = this.#queue[slot]!; // the head always waits (#remove moves it past those that left)
      if (w.deadline > now) break;
      this.#remove(this.#queueIds[slot]!);
      w.settled = true;
      n++;
      w.reject(failure());
    }
    return n;
  }

  /** Fails every waiting proposal with `err` (the member stops, or lost the leader they went to); how many. */
  rejectAll(err: unknown): number {
    const waiting: Waiter[] = [];
    for (let c = this.#head; c < this.#tail; c++) {
      const w = this.#queue[c & (this.#queue.length - 1)];
      if (w) waiting.push(w);
    }
    this.#byKey.clear();
    this.#overflow.clear();
    this.#queue.fill(undefined);
    this.#queueIds.fill(undefined);
    this.#head = this.#tail = 0;
    this.#size = 0;
    let n = 0;
    for (const w of waiting) {
      if (w.settled) continue;
      w.settled = true;
      w.reject(err);
      n++;
    }
    return n;
  }
}
