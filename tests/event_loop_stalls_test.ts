import assert from "node:assert/strict";
import { Registry } from "../server/metrics/registry.ts";
import { registerEventLoopMetrics, schedTimes } from "../server/metrics/event_loop.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A gauge's value in the registry's text. */
function gauge(r: Registry, name: string): number {
  const m = r.render().match(new RegExp(`^${name} (\\S+)$`, "m"));
  assert.ok(m, `${name} is exported`);
  return Number(m[1]);
}

Deno.test("stall monitor: a stall is split into the thread's CPU time and the rest, and the busiest tick is kept", async () => {
  const sched = schedTimes();
  if (!sched) return; // not Linux with schedstat: only the plain stall metrics exist
  const r = new Registry();
  const stop = registerEventLoopMetrics(r, true);
  try {
    await sleep(50);
    // blocked without running (a sleep of the thread): a stall, but not one of CPU work
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    await sleep(30);
    assert.ok(gauge(r, "eg_event_loop_stall_max_seconds") >= 0.19, "the sleep is a stall");
    assert.ok(gauge(r, "eg_event_loop_stall_max_cpu_seconds") < 0.1, "the thread slept: little CPU time in it");
    assert.ok(gauge(r, "eg_event_loop_busy_max_seconds") < 0.1);
    // 300 ms of the thread's own CPU time in one task (however long the OS takes to give it that much)
    const t = new Float64Array(2);
    sched(t);
    const until = t[0] + 300e6;
    let x = 0;
    do for (let i = 0; i < 10_000; i++) x += i; while (sched(t) && t[0] < until);
    assert.ok(x > 0);
    await sleep(30);
    const max = gauge(r, "eg_event_loop_stall_max_seconds");
    const cpu = gauge(r, "eg_event_loop_stall_max_cpu_seconds");
    const wait = gauge(r, "eg_event_loop_stall_max_wait_seconds");
    assert.ok(max >= 0.3, `the busy task is the longest stall (${max})`);
    assert.ok(cpu >= 0.29 && cpu <= max, `most of it on the CPU (${cpu} of ${max})`);
    assert.ok(wait >= 0 && cpu + wait <= max + 0.011, `CPU ${cpu} + wait ${wait} within the stall ${max}`);
    assert.ok(gauge(r, "eg_event_loop_busy_max_seconds") >= 0.29, "the busiest tick holds the task");
  } finally {
    stop();
  }
});
