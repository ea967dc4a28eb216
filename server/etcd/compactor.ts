/**
 * Auto-compaction (--auto-compaction-mode/--auto-compaction-retention), proposed through the log like a client's
 * Compact, by the leader only (as etcd pauses its compactor on the other members).
 * - periodic: keep the revisions of the last retention period (a number means hours, or a duration such as "30m").
 *   As etcd 3.4: the revision is sampled every tenth of the period (of an hour, for periods over an hour), and every
 *   period (at most every hour) the store is compacted at the oldest sample kept, from about 1.1 periods ago.
 * - revision: every 5 minutes, keep the last N revisions.
 */
import type { Node } from "../node/node.ts";
import type { Logger } from "./log.ts";

const HOUR = 3_600_000;
/** The revision mode's compactions are this far apart (etcd: 5 minutes). */
const REVISION_MODE_EVERY = 5 * 60_000;

/** Parses "1" (hours), "1.5", "30m", "2h", "10s" into milliseconds; 0 disables. */
export function parseRetention(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new Error(`invalid auto-compaction-retention ${JSON.stringify(v)}`);
  const n = Number(m[1]);
  const unit = m[2] ?? "h";
  return n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[unit];
}

/** What a compactor reads and does. */
export interface CompactionTarget {
  currentRev(): number;
  /** whether this member leads (only the leader compacts) */
  isLeader(): boolean;
  /** Proposes a compaction at `rev`; resolves once it is applied (or needs none: at or below the compaction point). */
  compact(rev: number): Promise<void>;
}

/**
 * The periodic mode's schedule, driven by `tick(now)` every `sampleEvery` ms (a clock of the caller's, so that tests
 * step it): each tick first compacts when one is due, then samples the revision.
 */
export class PeriodicCompactor {
  /** ms between two ticks: a tenth of the period, of an hour at most */
  readonly sampleEvery: number;
  /** ms between two compactions: the period, an hour at most */
  readonly interval: number;
  /** samples kept: the oldest is `keep` ticks old when a compaction reads it */
  readonly #keep: number;
  #samples: number[];
  /** when the last compaction that succeeded began (the start, before the first) */
  #lastRun: number;
  /** ms from #lastRun to the next compaction: the whole period before the first */
  #wait: number;
  #running = false;

  constructor(private readonly target: CompactionTarget, period: number, now: number) {
    this.interval = Math.min(period, HOUR);
    this.sampleEvery = this.interval / 10;
    this.#keep = Math.floor(period / this.sampleEvery) + 1;
    this.#samples = [target.currentRev()];
    this.#lastRun = now;
    this.#wait = period;
  }

  tick(now: number): void {
    // half a tick of slack: a timer that fired late must not push the next compaction back by a whole tick
    if (!this.#running && now - this.#lastRun >= this.#wait - this.sampleEvery / 2 && this.target.isLeader()) {
      this.#running = true;
      this.target.compact(this.#samples[0]).then(
        () => {
          this.#lastRun = now;
          this.#wait = this.interval;
        },
        () => {}, // tried again at the next tick
      ).finally(() => this.#running = false);
    }
    this.#samples.push(this.target.currentRev());
    if (this.#samples.length > this.#keep) this.#samples.shift();
  }
}

/** Starts the compactor; returns a function that stops it. */
export function startAutoCompaction(node: Node, mode: "periodic" | "revision", retention: string, log: Logger) {
  const target: CompactionTarget = {
    currentRev: () => node.store.currentRev,
    isLeader: () => node.isLeader,
    compact: async (rev) => {
      if (rev <= node.store.compactRev || rev > node.store.currentRev) return;
      try {
        await node.propose({ op: "compaction", compaction: { revision: `${rev}`, physical: false } });
        log.info("compactor", `finished scheduled compaction at ${rev}`);
      } catch (err) {
        log.warn("compactor", `compaction at ${rev} failed: ${(err as Error).message}`);
        throw err;
      }
    },
  };
  if (mode === "revision") {
    const keep = Number(retention);
    if (!(keep > 0)) return () => {};
    const t = setInterval(() => {
      if (target.isLeader()) target.compact(target.currentRev() - keep).catch(() => {});
    }, REVISION_MODE_EVERY);
    return () => clearInterval(t);
  }
  const period = parseRetention(retention);
  if (period <= 0) return () => {};
  const c = new PeriodicCompactor(target, period, performance.now());
  const t = setInterval(() => c.tick(performance.now()), Math.max(c.sampleEvery, 10));
  return () => clearInterval(t);
}
