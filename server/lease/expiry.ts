/**
 * Leader-only lease expiry: every tick the leader proposes a revoke for each lease whose TTL has passed, as etcd's
 * revokeExpiredLeases does. Finding them costs O(expired · log n) (the lessor's heap), and two caps keep a mass
 * expiry from flooding the log and the event loop: revokes proposed per tick, and revokes in flight (proposed, not
 * yet applied) at once. The in-flight cap makes the revoke rate follow what the cluster applies, so leases that
 * expire together are revoked as fast as the log allows, while other requests keep their share of every turn.
 */
import type { Lessor } from "./lessor.ts";

/**
 * How often the leader looks for expired leases (etcd: every 500 ms). Often, so that a lease is revoked close to its
 * expiry and a mass expiry is spread over many short turns; a look that finds nothing due costs one heap peek.
 */
export const EXPIRY_TICK_MS = 10;
/**
 * Revokes proposed in one tick at most: bounds the work one turn of the event loop does for expiry,
 * while allowing up to 10,000 revokes/s (etcd allows 1,000/s).
 */
export const MAX_REVOKES_PER_TICK = 100;
/** Revokes in flight at most: a storm of expiries cannot queue more than this many proposals ahead of clients. */
export const MAX_REVOKES_IN_FLIGHT = 1000;
/**
 * The longest sleep between looks when nothing is due sooner (etcd's interval), so that an idle member does not wake
 * every EXPIRY_TICK_MS. A lease granted or renewed during the sleep is due no sooner than the minimum TTL (seconds),
 * after the next look, so sleeping does not make an expiry late.
 */
export const EXPIRY_IDLE_LOOK_MS = 500;

/** Proposes the revokes of expired leases while this member leads. */
export class LeaseExpiry {
  readonly #inFlight = new Set<string>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;

  constructor(
    readonly lessor: Lessor,
    readonly isLeader: () => boolean,
    readonly revoke: (id: string) => Promise<unknown>,
  ) {}

  /** Revokes proposed and not yet settled. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** One look for expired leases: proposes up to the caps' worth of revokes; returns how many it proposed. */
  tick(): number {
    if (!this.isLeader()) return 0;
    const room = Math.min(MAX_REVOKES_PER_TICK, MAX_REVOKES_IN_FLIGHT - this.#inFlight.size);
    if (room <= 0) return 0;
    let n = 0;
    for (const id of this.lessor.expired(room)) {
      if (this.#inFlight.has(id)) continue; // its revoke is slower than the retry interval: still waiting
      this.#inFlight.add(id);
      n++;
      this.revoke(id).catch(() => {}).finally(() => this.#inFlight.delete(id));
    }
    return n;
  }

  /**
   * Ticks until `stop`: again after EXPIRY_TICK_MS while leases are due or revokes wait for room, else when the next
   * lease is due (at least EXPIRY_TICK_MS, at most EXPIRY_IDLE_LOOK_MS later; a follower looks every
   * EXPIRY_IDLE_LOOK_MS).
   */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#look();
  }

  readonly #look = (): void => {
    this.#timer = undefined;
    if (!this.#running) return;
    this.tick();
    const wait = this.isLeader()
      ? Math.min(EXPIRY_IDLE_LOOK_MS, Math.max(EXPIRY_TICK_MS, this.lessor.untilDue()))
      : EXPIRY_IDLE_LOOK_MS;
    this.#timer = setTimeout(this.#look, wait);
  };

  /** Stops ticking (revokes in flight still settle). */
  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
