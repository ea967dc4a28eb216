/**
 * The event loop's stalls, for the scale benchmark: with EG_EVENT_LOOP_STALLS=1 in the environment a 10 ms timer
 * measures how late it fires (a stall: a garbage collection or a long task held the only thread) and exports
 * `eg_event_loop_stall_seconds` (histogram of lateness) and `eg_event_loop_stall_max_seconds` (longest since start).
 * Off by default: the timer wakes the process 100 times a second.
 *
 * On a loaded machine a stall also holds time the OS did not run the thread. Where Linux reports the thread's
 * scheduler times (/proc/thread-self/schedstat: ns on a CPU, ns runnable but waiting for one), the longest stall is
 * split into the two (`eg_event_loop_stall_max_cpu_seconds`, `..._wait_seconds`; what is left the thread was blocked,
 * a page fault for instance), and `eg_event_loop_busy_max_seconds` is the most CPU time the thread used between two
 * ticks: the longest stall our own work (a task, a collection on the thread) would cause on an idle machine.
 */
import type { Registry } from "./registry.ts";

/** The timer's period. */
const TICK_MS = 10;
/** Histogram bounds, seconds: where a collection or a long task lands. */
const STALL_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];
/** The scheduler's times of the calling thread (the JS thread: sync ops run on it). */
const SCHEDSTAT = "/proc/thread-self/schedstat";

/** Whether the environment asks for the monitor (a process without --allow-env: no). */
function wanted(): boolean {
  try {
    return Deno.env.get("EG_EVENT_LOOP_STALLS") === "1";
  } catch {
    return false;
  }
}

/**
 * Reads the calling thread's scheduler times, ns on a CPU and ns waiting for one, into `out`; returns false where
 * they are not available. The file stays open and is read again from its start (the kernel renders it anew).
 */
export function schedTimes(): ((out: Float64Array) => boolean) | undefined {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(SCHEDSTAT, { read: true });
  } catch {
    return undefined;
  }
  const buf = new Uint8Array(128);
  const read = (out: Float64Array): boolean => {
    try {
      f.seekSync(0, Deno.SeekMode.Start);
      const n = f.readSync(buf) ?? 0;
      // "<on cpu ns> <wait ns> <slices>\n": parsed by hand (no string per tick)
      let field = 0, v = 0;
      for (let i = 0; i < n && field < 2; i++) {
        const c = buf[i];
        if (c >= 48 && c <= 57) v = v * 10 + (c - 48);
        else {
          out[field++] = v;
          v = 0;
        }
      }
      return field === 2;
    } catch {
      return false;
    }
  };
  const probe = new Float64Array(2);
  if (!read(probe)) {
    f.close();
    return undefined;
  }
  return read;
}

/**
 * Registers the stall metrics and starts the timer (unref'ed) when EG_EVENT_LOOP_STALLS=1 (or `force`); returns a
 * function that stops the timer.
 */
export function registerEventLoopMetrics(registry: Registry, force = false): () => void {
  if (!force && !wanted()) return () => {};
  const hist = registry.histogram(
    "eg_event_loop_stall_seconds",
    "How late a 10 ms timer fired: time the event loop was blocked.",
    STALL_BUCKETS,
  ).labels();
  const max = registry.gauge("eg_event_loop_stall_max_seconds", "Longest event loop stall since start.").labels();
  const sched = schedTimes();
  const maxCpu = sched &&
    registry.gauge(
      "eg_event_loop_stall_max_cpu_seconds",
      "Time the event loop's thread ran on a CPU during the longest stall (our code, collections on the thread).",
    ).labels();
  const maxWait = sched &&
    registry.gauge(
      "eg_event_loop_stall_max_wait_seconds",
      "Time the event loop's thread was runnable but not run by the OS during the longest stall.",
    ).labels();
  const busy = sched &&
    registry.gauge(
      "eg_event_loop_busy_max_seconds",
      "Most CPU time the event loop's thread used between two 10 ms ticks: the longest stall of its own making.",
    ).labels();
  const prev = new Float64Array(2), cur = new Float64Array(2);
  let haveSched = sched?.(prev) ?? false;
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    const late = Math.max(0, now - last - TICK_MS) / 1000;
    last = now;
    hist.observe(late);
    let cpu = 0, wait = 0;
    if (sched && sched(cur)) {
      if (haveSched) {
        cpu = (cur[0] - prev[0]) / 1e9;
        wait = (cur[1] - prev[1]) / 1e9;
        if (cpu > busy!.value) busy!.set(cpu);
      }
      prev.set(cur);
      haveSched = true;
    } else haveSched = false;
    if (late > max.value) {
      max.set(late);
      // the interval measured ran from the previous tick: at most `late` + TICK_MS of it was the stall
      maxCpu?.set(Math.min(cpu, late));
      maxWait?.set(Math.min(wait, late));
    }
  }, TICK_MS);
  Deno.unrefTimer(t);
  return () => clearInterval(t);
}
