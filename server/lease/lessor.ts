/**
 * Leases: granted with a TTL, kept alive by clients, and revoked (with their keys) when they expire. The lessor holds
 * lease state only; grants and revokes reach it through the log so that every member agrees, while keep-alives only
 * move the local expiry time (as in etcd, where only the leader tracks expiry).
 *
 * Leases sit in a binary min-heap by the time they are next due (their expiry, or the time to retry a revoke that
 * did not land), each lease knowing its slot: a keep-alive moves one lease in O(log n), and finding the expired ones
 * costs O(expired · log n), never a scan of every lease.
 */
import { Errors } from "../errors.ts";
import type { BKey } from "../mvcc/keys.ts";

/** etcd's largest TTL, in seconds. */
export const MAX_LEASE_TTL = 9_000_000_000;

/** A granted lease. */
export interface Lease {
  /** decimal int64 */
  id: string;
  /** TTL in seconds as granted (after raising to the minimum) */
  ttl: number;
  /** monotonic ms at which it expires */
  expiry: number;
  keys: Set<BKey>;
}

/**
 * After `expired` hands a lease out for revocation it is due again this much later, in case the revoke never
 * lands (a lost leadership, a failed proposal): etcd's expiredLeaseRetryInterval.
 */
export const EXPIRED_RETRY_MS = 3000;

/** A lease in the expiry heap: `due` is its heap key, `at` its index in the heap. */
interface Slot {
  lease: Lease;
  due: number;
  at: number;
}

/** Normalizes an int64 given as string/number/bigint to its decimal form. */
export function leaseId(x: string | number | bigint | undefined | null): string {
  if (x === undefined || x === null || x === "") return "0";
  return BigInt(x).toString();
}

/** Lease bookkeeping. */
export class Lessor {
  readonly #leases = new Map<string, Lease>();
  /** the expiry heap (min `due` first) and each lease's slot index in it */
  #heap: Slot[] = [];
  #slots = new Map<string, Slot>();
  #now: () => number;

  /** minTTL in seconds: etcd raises shorter requests to ceil(1.5 × election timeout). */
  constructor(readonly minTTL: number, now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** The leases by ID (read only: change them through the methods). */
  get leases(): ReadonlyMap<string, Lease> {
    return this.#leases;
  }

  /** Validates a grant request before it is logged. */
  checkGrant(id: string, ttl: number): void {
    if (ttl > MAX_LEASE_TTL) throw Errors.leaseTTLTooLarge();
    if (this.#leases.has(id)) throw Errors.leaseExists();
  }

  /**
   * The TTL a grant request is proposed with: raised to this member's minimum (a local setting, so it is applied
   * before the request enters the log, never at apply).
   */
  grantTTL(ttl: number): number {
    return Math.max(ttl, this.minTTL);
  }

  /** Creates a lease with the TTL the log holds (applied from the log). */
  grant(id: string, ttl: number): Lease {
    this.checkGrant(id, ttl);
    return this.restore(id, ttl);
  }

  /** Adds a lease read from a snapshot (its clock starts now). */
  restore(id: string, ttl: number): Lease {
    const lease: Lease = { id, ttl, expiry: this.#now() + ttl * 1000, keys: new Set() };
    this.#leases.set(id, lease);
    this.#push({ lease, due: lease.expiry, at: 0 });
    return lease;
  }

  /** Removes a lease and returns the keys attached to it (the caller deletes them in the same revision). */
  revoke(id: string): BKey[] {
    const l = this.#leases.get(id);
    if (!l) throw Errors.leaseNotFound();
    this.#leases.delete(id);
    this.#remove(id);
    return [...l.keys].sort();
  }

  /** The lease, or undefined. */
  get(id: string): Lease | undefined {
    return this.#leases.get(id);
  }

  /** Binds a key to a lease (no-op for "0"). */
  attach(id: string, key: BKey): void {
    if (id !== "0") this.#leases.get(id)?.keys.add(key);
  }

  /** Unbinds a key from a lease (no-op for "0"). */
  detach(id: string, key: BKey): void {
    if (id !== "0") this.#leases.get(id)?.keys.delete(key);
  }

  /** Refreshes a lease; returns its TTL, or 0 when the lease does not exist. */
  renew(id: string): number {
    const l = this.#leases.get(id);
    if (!l) return 0;
    l.expiry = this.#now() + l.ttl * 1000;
    this.#reschedule(this.#slots.get(id)!, l.expiry);
    return l.ttl;
  }

  /** Remaining whole seconds of a lease (never negative), or -1 when unknown. */
  remaining(id: string): number {
    const l = this.#leases.get(id);
    if (!l) return -1;
    return Math.max(0, Math.floor((l.expiry - this.#now()) / 1000));
  }

  /**
   * IDs of leases whose expiry has passed, soonest first, at most `max`, for the leader to revoke. Each one handed
   * out is not handed out again for EXPIRED_RETRY_MS (unless a keep-alive or a new term moves its clock first).
   */
  expired(max = 1000): string[] {
    const now = this.#now();
    const out: string[] = [];
    while (out.length < max && this.#heap.length > 0 && this.#heap[0].due <= now) {
      const top = this.#heap[0];
      if (top.lease.expiry <= now) out.push(top.lease.id);
      top.due = top.lease.expiry <= now ? now + EXPIRED_RETRY_MS : top.lease.expiry;
      this.#down(0);
    }
    return out;
  }

  /** Monotonic ms at which the next lease is due (Infinity when there is none). */
  nextDue(): number {
    return this.#heap.length > 0 ? this.#heap[0].due : Infinity;
  }

  /** Milliseconds until the next lease is due (0 when one is due now, Infinity when there is none). */
  untilDue(): number {
    return Math.max(0, this.nextDue() - this.#now());
  }

  /** Restarts every lease's clock (on start-up or when this member becomes leader), as etcd does on promotion. */
  extendAll(): void {
    const now = this.#now();
    for (const s of this.#heap) s.due = s.lease.expiry = now + s.lease.ttl * 1000;
    // every key grew by its own TTL: rebuild the heap bottom-up (O(n))
    for (let i = (this.#heap.length >>> 1) - 1; i >= 0; i--) this.#down(i);
  }

  /** Drops all state (before restoring a snapshot). */
  clear(): void {
    this.#leases.clear();
    this.#heap = [];
    this.#slots.clear();
  }

  #push(s: Slot): void {
    this.#slots.set(s.lease.id, s);
    s.at = this.#heap.length;
    this.#heap.push(s);
    this.#up(s.at);
  }

  #remove(id: string): void {
    const s = this.#slots.get(id);
    if (!s) return;
    this.#slots.delete(id);
    const last = this.#heap.pop()!;
    if (last === s) return;
    this.#heap[s.at] = last;
    last.at = s.at;
    this.#up(last.at);
    this.#down(last.at);
  }

  #reschedule(s: Slot, due: number): void {
    const before = s.due;
    s.due = due;
    if (due < before) this.#up(s.at);
    else this.#down(s.at);
  }

  #up(i: number): void {
    const h = this.#heap, s = h[i];
    while (i > 0) {
      const p = (i - 1) >>> 1;
      if (h[p].due <= s.due) break;
      h[i] = h[p];
      h[i].at = i;
      i = p;
    }
    h[i] = s;
    s.at = i;
  }

  #down(i: number): void {
    const h = this.#heap, s = h[i], n = h.length;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1].due < h[c].due) c++;
      if (h[c].due >= s.due) break;
      h[i] = h[c];
      h[i].at = i;
      i = c;
    }
    h[i] = s;
    s.at = i;
  }
}
