/**
 * WAL throughput on this disk: `deno run -A server/wal/bench.ts [seconds]`.
 * For batches of 1 and 32 entries of 256 B (append the batch, sync, repeat) prints entries/s and fsyncs/s.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Wal } from "./wal.ts";

/** Appends batches of `batch` entries with one sync each for `ms` and returns the rates. */
export async function benchWal(batch: number, ms: number): Promise<{ entriesPerSec: number; fsyncsPerSec: number }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "walbench-"));
  try {
    const { wal } = await Wal.open(dir);
    const data = new Uint8Array(256).fill(7);
    let next = 1;
    const t0 = performance.now();
    const deadline = t0 + ms;
    while (performance.now() < deadline) {
      for (let i = 0; i < batch; i++) wal.append([{ index: next++, term: 1, type: 0, data }]);
      wal.sync();
    }
    const secs = (performance.now() - t0) / 1000;
    const fsyncs = wal.syncCount;
    wal.close();
    return { entriesPerSec: (next - 1) / secs, fsyncsPerSec: fsyncs / secs };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const ms = Number(Deno.args[0] ?? 3) * 1000;
  for (const batch of [1, 32]) {
    const r = await benchWal(batch, ms);
    console.log(
      `batches of ${batch}: ${Math.round(r.entriesPerSec)} entries/s, ${Math.round(r.fsyncsPerSec)} fsyncs/s`,
    );
  }
}
