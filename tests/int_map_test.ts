/**
 * IntMap (server/util/int_map.ts), the HTTP/2 connections' stream table: it answers as a Map would under any mix of
 * sets, gets and deletes, and a steady flow of short-lived keys leaves its table as it was.
 */
import assert from "node:assert/strict";
import { IntMap } from "../server/util/int_map.ts";

/** A small deterministic generator (xorshift32). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

Deno.test("IntMap answers as a Map under random sets, gets and deletes (keys dense, strided, colliding, large)", () => {
  const keySpaces: [string, (r: () => number) => number][] = [
    ["dense", (r) => Math.floor(r() * 64)],
    ["odd stream ids", (r) => 2 * Math.floor(r() * 5000) + 1],
    ["stride of 2^16", (r) => Math.floor(r() * 200) << 16],
    ["up to 2^31 - 1", (r) => Math.floor(r() * 0x80000000)],
  ];
  for (const [name, key] of keySpaces) {
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed * 7919);
      const m = new IntMap<number>(), model = new Map<number, number>();
      for (let step = 0; step < 3000; step++) {
        const k = key(r), op = r();
        if (op < 0.45) {
          m.set(k, step);
          model.set(k, step);
        } else if (op < 0.8) assert.equal(m.delete(k), model.delete(k), `${name} seed ${seed} step ${step}: delete`);
        else assert.equal(m.get(k), model.get(k), `${name} seed ${seed} step ${step}: get`);
        assert.equal(m.size, model.size);
      }
      for (const [k, v] of model) assert.equal(m.get(k), v, `${name} seed ${seed}: key ${k} at the end`);
      assert.deepEqual(m.values().sort((a, b) => a - b), [...model.values()].sort((a, b) => a - b));
      m.clear();
      assert.equal(m.size, 0);
      for (const k of model.keys()) assert.equal(m.has(k), false);
    }
  }
});

Deno.test("IntMap: streams opened and closed in turn, a few long-lived among them, are all found and none is lost", () => {
  const m = new IntMap<string>();
  const longLived = [1, 3, 5, 7];
  for (const id of longLived) m.set(id, `watch ${id}`);
  const open: number[] = [];
  for (let id = 9; id < 400_000; id += 2) {
    m.set(id, `unary ${id}`);
    open.push(id);
    if (open.length > 16) assert.equal(m.delete(open.shift()!), true);
  }
  assert.equal(m.size, longLived.length + 16);
  for (const id of longLived) assert.equal(m.get(id), `watch ${id}`);
  for (const id of open) assert.equal(m.get(id), `unary ${id}`);
  assert.equal(m.get(11), undefined);
});

Deno.test("IntMap refuses keys it cannot hold", () => {
  const m = new IntMap<number>();
  for (const bad of [-1, 0x80000000, 1.5, NaN]) assert.throws(() => m.set(bad, 0), RangeError);
});
