/**
 * Progress of long work (a snapshot sent or received, the WAL replayed, a follower catching up): how much is done,
 * since when, at what rate, and whether a progress line is due. Lines are throttled to one per
 * {@link PROGRESS_LOG_MS}, whatever the size of the pieces (chunks, segments, ticks) the work advances by.
 */
import type { LogFields } from "../etcd/log.ts";

/** Progress lines of one piece of work are at most this often (its first and last lines aside). */
export const PROGRESS_LOG_MS = 1000;

/** A Go time.Duration's String() of `ms` milliseconds ("850µs", "12.5ms", "3.2s", "1m5s"), as zap writes durations. */
export function goDuration(ms: number): string {
  if (ms <= 0) return "0s";
  if (ms < 0.001) return `${Math.round(ms * 1e6)}ns`;
  if (ms < 1) return `${trim(ms * 1000)}µs`;
  if (ms < 1000) return `${trim(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${trim(s)}s`;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return `${h > 0 ? `${h}h` : ""}${m}m${trim(s % 60)}s`;
}

function trim(x: number): string {
  return String(Number(x.toFixed(3)));
}

/** `bytes` as a short size: "512 B", "3.4 kB", "12 MB" (decimal units, as etcd's humanize does). */
export function humanBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = bytes, u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v >= 10 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/** One piece of long work measured in `unit`s (bytes or entries). */
export class Progress {
  readonly startedAt: number;
  #lastLine: number;
  /** units done so far */
  done = 0;

  constructor(readonly unit: "bytes" | "entries", readonly now: () => number = () => performance.now()) {
    this.startedAt = this.#lastLine = now();
  }

  /** Milliseconds since the work started. */
  elapsedMs(): number {
    return this.now() - this.startedAt;
  }

  /** Whether a progress line is due; if so, the next one is due {@link PROGRESS_LOG_MS} from now. */
  due(): boolean {
    const t = this.now();
    if (t - this.#lastLine < PROGRESS_LOG_MS) return false;
    this.#lastLine = t;
    return true;
  }

  /** Units per second so far. */
  rate(): number {
    const s = this.elapsedMs() / 1000;
    return s > 0 ? this.done / s : 0;
  }

  /** The line's fields: done (and of `total`), rate, elapsed. */
  fields(total?: number): LogFields {
    const rate = this.rate();
    const f: LogFields = { [this.unit]: this.done };
    if (total !== undefined) f.total = total;
    if (total !== undefined && total > 0) f.percent = Math.floor((this.done / total) * 1000) / 10;
    f.rate = this.unit === "bytes" ? `${humanBytes(Math.round(rate))}/s` : `${Math.round(rate)} entries/s`;
    f.took = goDuration(this.elapsedMs());
    return f;
  }
}
