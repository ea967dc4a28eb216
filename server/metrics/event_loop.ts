/**
 * The event loop's stalls, for the scale benchmark: with EG_EVENT_LOOP_STALLS=1 in the environment a 10 ms timer
 * measures how late it fires (a stall: a garbage collection or a long task held the only thread) and exports
 * `eg_event_loop_stall_seconds` (histogram of lateness) and `eg_event_loop_stall_max_seconds` (longest since start).
 * Off by default: the timer wakes the process 100 times a second.
 */
import type { Registry } from "./registry.ts";

/** The timer's period. */
const TICK_MS = 10;
/** Histogram bounds, seconds: where a collection or a long task lands. */
const STALL_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];

/** Whether the environment asks for the monitor (a process without --allow-env: no). */
function wanted(): boolean {
  try {
    return Deno.env.get("EG_EVENT_LOOP_STALLS") === "1";
  } catch {
    return false;
  }
}

/** Registers the stall metrics and starts the timer (unref'ed) when EG_EVENT_LOOP_STALLS=1. */
export function registerEventLoopMetrics(registry: Registry): void {
  if (!wanted()) return;
  const hist = registry.histogram(
    "eg_event_loop_stall_seconds",
    "How late a 10 ms timer fired: time the event loop was blocked.",
    STALL_BUCKETS,
  ).labels();
  const max = registry.gauge("eg_event_loop_stall_max_seconds", "Longest event loop stall since start.").labels();
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    const late = Math.max(0, now - last - TICK_MS) / 1000;
    last = now;
    hist.observe(late);
    if (late > max.value) max.set(late);
  }, TICK_MS);
  Deno.unrefTimer(t);
}
