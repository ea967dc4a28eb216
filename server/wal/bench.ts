/**
 * WAL throughput on this disk: `deno run -A server/wal/bench.ts [seconds]`.
 * For 1 and 64 concurrent appenders (each: append one 256 B entry, await sync, repeat) prints entries/s and fsyncs/s.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Wal } from "./wal.ts";

/** Runs `writers` concurrent append+sync loops for `ms` and returns the rates. */
export async function benchWal(writers: number, ms: number): Promise<{ entriesPerSec: number; fsyncsPerSec: number }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "walbench-"));
  try {
    const { wal } = await Wal.open(dir);
    const data = new Uint8Array(256).fill(7);
    let next = 1;
    let done = 0;
    const deadline = performance.now() + ms;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: writers }, async () => {
      while (performance.now() < deadline) {
        wal.append([{ index: next++, term: 1, type: 0, data }]);
        await wal.sync();
        done++;
      }
    }));
    const secs = (performance.now() - t0) / 1000;
    const fsyncs = wal.syncCount;
    await wal.close();
    return { entriesPerSec: done / secs, fsyncsPerSec: fsyncs / secs };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const ms = Number(Deno.args[0] ?? 3) * 1000;
  for (const w of [1, 64]) {
    const r = await benchWal(w, ms);
    console.log(
      `${w} appender(s): ${Math.round(r.entriesPerSec)} entries/s, ${Math.round(r.fsyncsPerSec)} fsyncs/s, ` +
        `${(r.entriesPerSec / r.fsyncsPerSec).toFixed(1)} entries/fsync`,
    );
  }
}
