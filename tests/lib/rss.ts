/** The resident memory of a process under test (Linux /proc), for the tests that bound a member's growth. */

/** A process's resident set size (VmRSS) in bytes. */
export async function rss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/** Samples a process's VmRSS every 50 ms until `done` settles: `done`'s value and the peak. */
export async function peakRssDuring<T>(pid: number, done: Promise<T>): Promise<[T, number]> {
  let peak = await rss(pid);
  let finished = false;
  const sampler = (async () => {
    while (!finished) {
      peak = Math.max(peak, await rss(pid));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    return [await done, peak];
  } finally {
    finished = true;
    await sampler;
  }
}
