/**
 * Leases: granted with a TTL, kept alive by clients, and revoked (with their keys) when they expire. The lessor holds
 * lease state only; grants and revokes reach it through the log so that every member agrees, while keep-alives only
 * move the local expiry time (as in etcd, where only the leader tracks expiry).
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

/** Normalizes an int64 given as string/number/bigint to its decimal form. */
export function leaseId(x: string | number | bigint | undefined | null): string {
  if (x === undefined || x === null || x === "") return "0";
  return BigInt(x).toString();
}

/** Lease bookkeeping. */
export class Lessor {
  readonly leases = new Map<string, Lease>();
  #now: () => number;

  /** minTTL in seconds: etcd raises shorter requests to ceil(1.5 × election timeout). */
  constructor(readonly minTTL: number, now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Validates a grant request before it is logged. */
  checkGrant(id: string, ttl: number): void {
    if (ttl > MAX_LEASE_TTL) throw Errors.leaseTTLTooLarge();
    if (this.leases.has(id)) throw Errors.leaseExists();
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
    const lease: Lease = { id, ttl, expiry: this.#now() + ttl * 1000, keys: new Set() };
    this.leases.set(id, lease);
    return lease;
  }

  /** Removes a lease and returns the keys attached to it (the caller deletes them in the same revision). */
  revoke(id: string): BKey[] {
    const l = this.leases.get(id);
    if (!l) throw Errors.leaseNotFound();
    this.leases.delete(id);
    return [...l.keys].sort();
  }

  /** The lease, or undefined. */
  get(id: string): Lease | undefined {
    return this.leases.get(id);
  }

  /** Binds a key to a lease (no-op for "0"). */
  attach(id: string, key: BKey): void {
    if (id !== "0") this.leases.get(id)?.keys.add(key);
  }

  /** Unbinds a key from a lease (no-op for "0"). */
  detach(id: string, key: BKey): void {
    if (id !== "0") this.leases.get(id)?.keys.delete(key);
  }

  /** Refreshes a lease; returns its TTL, or 0 when the lease does not exist. */
  renew(id: string): number {
    const l = this.leases.get(id);
    if (!l) return 0;
    l.expiry = this.#now() + l.ttl * 1000;
    return l.ttl;
  }

  /** Remaining whole seconds of a lease (never negative), or -1 when unknown. */
  remaining(id: string): number {
    const l = this.leases.get(id);
    if (!l) return -1;
    return Math.max(0, Math.floor((l.expiry - this.#now()) / 1000));
  }

  /** IDs of leases whose expiry has passed, at most `max`. */
  expired(max = 1000): string[] {
    const now = this.#now();
    const out: string[] = [];
    for (const l of this.leases.values()) {
      if (l.expiry <= now) {
        out.push(l.id);
        if (out.length >= max) break;
      }
    }
    return out;
  }

  /** Restarts every lease's clock (on start-up or when this member becomes leader), as etcd does on promotion. */
  extendAll(): void {
    const now = this.#now();
    for (const l of this.leases.values()) l.expiry = now + l.ttl * 1000;
  }

  /** Drops all state (before restoring a snapshot). */
  clear(): void {
    this.leases.clear();
  }
}
