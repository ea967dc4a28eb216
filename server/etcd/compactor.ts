/**
 * Auto-compaction (--auto-compaction-mode/--auto-compaction-retention), proposed through the log like a client's
 * Compact. periodic: keep the revisions of the last retention period (a number means hours, or a duration such as
 * "30m"); revision: keep the last N revisions.
 */
import type { Node } from "../node/node.ts";
import type { Logger } from "./log.ts";

/** Parses "1" (hours), "1.5", "30m", "2h", "10s" into milliseconds; 0 disables. */
export function parseRetention(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new Error(`invalid auto-compaction-retention ${JSON.stringify(v)}`);
  const n = Number(m[1]);
  const unit = m[2] ?? "h";
  return n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[unit];
}

/** Starts the compactor; returns a function that stops it. */
export function startAutoCompaction(node: Node, mode: "periodic" | "revision", retention: string, log: Logger) {
  const compact = (rev: number) => {
    if (rev <= node.store.compactRev || rev > node.store.currentRev) return;
    node.propose({ op: "compaction", compaction: { revision: `${rev}`, physical: false } })
      .then(() => log.info("compactor", `finished scheduled compaction at ${rev}`))
      .catch((err) => log.warn("compactor", `compaction at ${rev} failed: ${err.message}`));
  };
  if (mode === "revision") {
    const keep = Number(retention);
    if (!(keep > 0)) return () => {};
    const t = setInterval(() => compact(node.store.currentRev - keep), 5 * 60_000);
    return () => clearInterval(t);
  }
  const period = parseRetention(retention);
  if (period <= 0) return () => {};
  // sample the revision every period/10 and compact to the one seen `period` ago
  const step = Math.max(period / 10, 100);
  const samples: number[] = [];
  const t = setInterval(() => {
    samples.push(node.store.currentRev);
    if (samples.length > 10) compact(samples.shift()!);
  }, step);
  return () => clearInterval(t);
}
