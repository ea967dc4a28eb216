/**
 * Bytes per key of the MVCC store alone (no Raft log, no server): `deno run -A --v8-flags=--expose-gc
 * scripts/bench/bytes_per_key.ts [N] [keys|watchers|leases]` puts N keys of 16 B (txns of 100) with 256 B values
 * sliced from 64 KiB buffers, as values arrive in the Raft log's arena chunks, and prints the V8 heap, the typed-array
 * memory and the RSS that each key added. `watchers` then opens 100 watch streams with N / 2 watchers on distinct keys
 * (the watch hub alone, no transport), `leases` grants N / 3 leases of 3 of those keys each (the lessor alone: the
 * Lease with its key set, its expiry-heap slot, two map entries), and prints the V8 heap each one added. Measure one
 * kind per process: with both in one heap the second one read ~300 B high.
 */
import { Buffer } from "node:buffer";
import process from "node:process";
import { Lessor } from "../../server/lease/lessor.ts";
import { MvccStore } from "../../server/mvcc/store.ts";

const N = Number(Deno.args[0] ?? 200_000);
const what = Deno.args[1] ?? "keys";
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
/** Memory after full collections, once timers the store set (a restructure in slices) had their turn. */
const settle = async () => {
  gc();
  await new Promise((r) => setTimeout(r, 200));
  gc();
  gc();
  return process.memoryUsage();
};
const before = await settle();
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
const after = await settle();
const per = (k: "heapUsed" | "external" | "rss") => ((after[k] - before[k]) / N).toFixed(0);
console.log(
  `${store.keyCount} keys: V8 heap ${per("heapUsed")} B/key, typed arrays and buffers ${per("external")} B/key` +
    ` (256 B value + 56 B record), RSS ${per("rss")} B/key`,
);

if (what === "watchers") {
  const { HeaderEncoder } = await import("../../server/watch/encode.ts");
  const { WatchHub } = await import("../../server/watch/watch_stream.ts");
  const hub = new WatchHub(store, new HeaderEncoder("1", "2"), () => 2, 1.5 * 1024 * 1024, 600_000);
  const sink = { sendFramed: () => true };
  const streams = Array.from({ length: 100 }, () => hub.open(sink));
  const watchers = Math.floor(N / 2);
  for (let i = 0; i < watchers; i++) {
    const key = new TextEncoder().encode(i.toString(16).padStart(16, "0"));
    const create = { key, range_end: new Uint8Array(0), start_revision: "0", progress_notify: false, filters: [] };
    streams[i % streams.length].handle({
      create_request: { ...create, prev_kv: false, watch_id: "0", fragment: false },
    });
  }
  const withWatchers = await settle();
  console.log(
    `${hub.watcherCount} watchers on distinct keys in 100 streams: V8 heap ${
      ((withWatchers.heapUsed - after.heapUsed) / watchers).toFixed(0)
    } B/watcher`,
  );
} else if (what === "leases") {
  const lessor = new Lessor(1);
  const leases = Math.floor(N / 3);
  for (let i = 0; i < leases; i++) {
    const id = String(7587868224012345000n + BigInt(i) * 7n); // 19 digits, as etcd's lease IDs
    lessor.grant(id, 60);
    for (let j = 3 * i; j < 3 * i + 3; j++) lessor.attach(id, j.toString(16).padStart(16, "0"));
  }
  const withLeases = await settle();
  console.log(
    `${lessor.leases.size} leases of 3 keys: V8 heap ${
      ((withLeases.heapUsed - after.heapUsed) / leases).toFixed(0)
    } B/lease`,
  );
}
