/**
 * The process_* metrics every Prometheus client exports (as Go's process collector does): CPU seconds, resident and virtual memory, open and maximum file descriptors, start time. CPU and resident memory
 * come from the runtime; the others from /proc/self, and stay 0 where it cannot be read (another OS, or a process
 * whose --allow-read does not cover /proc).
 */
import process from "node:process";
import type { Registry } from "./registry.ts";

/** Registers the process metrics, refreshed at each scrape. */
export function registerProcessMetrics(registry: Registry): void {
  const startSeconds = Date.now() / 1000 - performance.now() / 1000;
  const cpu = registry.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.");
  const rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  const vsz = registry.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
  const vmax = registry.gauge(
    "process_virtual_memory_max_bytes",
    "Maximum amount of virtual memory available in bytes.",
  );
  const fds = registry.gauge("process_open_fds", "Number of open file descriptors.");
  const maxFds = registry.gauge("process_max_fds", "Maximum number of open file descriptors.");
  registry.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.").labels()
    .set(Math.round(startSeconds * 100) / 100);
  registry.onCollect(() => {
    // these two need no file access
    const cpuTime = process.cpuUsage();
    cpu.labels().value = (cpuTime.user + cpuTime.system) / 1e6;
    rss.labels().set(process.memoryUsage.rss());
    try {
      const stat = Deno.readTextFileSync("/proc/self/stat");
      // fields after the command name, which is in parentheses and may hold spaces
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      vsz.labels().set(Number(f[20]));
      let n = 0;
      for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
      fds.labels().set(n);
      const limits = Deno.readTextFileSync("/proc/self/limits");
      const files = /^Max open files\s+(\S+)/m.exec(limits)?.[1];
      if (files) maxFds.labels().set(files === "unlimited" ? -1 : Number(files));
      const as = /^Max address space\s+(\S+)/m.exec(limits)?.[1];
      if (as) vmax.labels().set(as === "unlimited" ? 18446744073709552000 : Number(as));
    } catch {
      // no /proc to read: these values stay as they are
    }
  });
}
