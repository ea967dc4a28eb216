/**
 * Bytes per key of the MVCC store alone (no Raft log, no server): `deno run -A --v8-flags=--expose-gc
 * scripts/bench/bytes_per_key.ts [N]` puts N keys of 16 B (txns of 100) with 256 B values sliced from 64 KiB buffers,
 * as values arrive in the Raft log's arena chunks, and prints the V8 heap, the typed-array memory and the RSS that
 * each key added.
 */
import { Buffer } from "node:buffer";
import process from "node:process";
import { MvccStore } from "../../server/mvcc/store.ts";

const N = Number(Deno.args[0] ?? 200_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const settle = () => {
  gc();
  gc();
  return process.memoryUsage();
};
const before = settle();
const store = new MvccStore();
let arena = new ArrayBuffer(65536), off = 0;
for (let i = 0; i < N; i += 100) {
  const txn = store.write();
  for (let j = i; j < Math.min(i + 100, N); j++) {
    if (off + 256 > arena.byteLength) [arena, off] = [new ArrayBuffer(65536), 0];
    txn.put(j.toString(16).padStart(16, "0"), Buffer.from(arena, off, 256), "0");
    off += 256;
  }
  txn.end();
}
const after = settle();
const per = (k: "heapUsed" | "external" | "rss") => ((after[k] - before[k]) / N).toFixed(0);
console.log(
  `${store.keyCount} keys: V8 heap ${per("heapUsed")} B/key, typed arrays and buffers ${per("external")} B/key` +
    ` (256 B value + 56 B record), RSS ${per("rss")} B/key`,
);
