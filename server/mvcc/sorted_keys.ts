/**
 * An ordered set of store keys: the key index of the MVCC store. Keys live in sorted chunks of at most CHUNK keys
 * (a two-level B-tree), so an insert or delete moves at most one chunk's worth of memory however many keys exist.
 * Each key carries a number (the store's key id), held in chunks parallel to the keys: the index is also the store's
 * key → id map (a Map beside it cost another ~37 bytes per key).
 */
import type { BKey } from "./keys.ts";

const CHUNK = 512;

/** Sorted set of distinct keys, each with a number. */
export class SortedKeys {
  /** non-empty sorted chunks; every key of chunk i is below every key of chunk i+1 */
  #chunks: BKey[][] = [];
  /** the numbers of the keys, chunk by chunk */
  #vals: number[][] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Index of the chunk that holds (or would hold) k. */
  #chunkOf(k: BKey): number {
    const c = this.#chunks;
    let lo = 0, hi = c.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const last = c[mid][c[mid].length - 1];
      if (last < k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Adds k (with number v) if absent. */
  insert(k: BKey, v = 0): void {
    if (this.#chunks.length === 0) {
      this.#chunks.push([k]);
      this.#vals.push([v]);
      this.#size = 1;
      return;
    }
    const ci = this.#chunkOf(k);
    const chunk = this.#chunks[ci], vals = this.#vals[ci];
    const i = lowerBound(chunk, k);
    if (chunk[i] === k) return;
    if (i === chunk.length) {
      chunk.push(k);
      vals.push(v);
    } else {
      chunk.splice(i, 0, k);
      vals.splice(i, 0, v);
    }
    this.#size++;
    if (chunk.length > CHUNK) {
      this.#chunks.splice(ci + 1, 0, chunk.splice(CHUNK / 2));
      this.#vals.splice(ci + 1, 0, vals.splice(CHUNK / 2));
    }
  }

  /** The number of k, or undefined when k is absent. */
  get(k: BKey): number | undefined {
    if (this.#chunks.length === 0) return undefined;
    const ci = this.#chunkOf(k);
    const chunk = this.#chunks[ci];
    const i = lowerBound(chunk, k);
    return chunk[i] === k ? this.#vals[ci][i] : undefined;
  }

  /** Removes k if present. */
  delete(k: BKey): void {
    if (this.#chunks.length === 0) return;
    const ci = this.#chunkOf(k);
    const chunk = this.#chunks[ci];
    const i = lowerBound(chunk, k);
    if (chunk[i] !== k) return;
    chunk.splice(i, 1);
    this.#vals[ci].splice(i, 1);
    this.#size--;
    if (chunk.length === 0) {
      this.#chunks.splice(ci, 1);
      this.#vals.splice(ci, 1);
    }
  }

  /** Keys in [from, end); end null means no upper bound. */
  *range(from: BKey, end: BKey | null): Generator<BKey> {
    const c = this.#chunks;
    if (c.length === 0) return;
    let ci = this.#chunkOf(from);
    let i = lowerBound(c[ci], from);
    for (; ci < c.length; ci++, i = 0) {
      const chunk = c[ci];
      for (; i < chunk.length; i++) {
        const k = chunk[i];
        if (end !== null && k >= end) return;
        yield k;
      }
    }
  }

  /** Calls fn(number, key) for the keys in [from, end) in order (end null: no upper bound). */
  forEach(from: BKey, end: BKey | null, fn: (v: number, k: BKey) => void): void {
    const c = this.#chunks;
    if (c.length === 0) return;
    let ci = this.#chunkOf(from);
    let i = lowerBound(c[ci], from);
    for (; ci < c.length; ci++, i = 0) {
      const chunk = c[ci], vals = this.#vals[ci];
      for (; i < chunk.length; i++) {
        const k = chunk[i];
        if (end !== null && k >= end) return;
        fn(vals[i], k);
      }
    }
  }

  /**
   * The numbers of all keys in key order, lazily: safe to resume after the set changed (a long walk that yields to
   * the event loop). Keys present throughout are seen once each, in order; keys inserted or deleted meanwhile may or
   * may not be seen.
   */
  *values(): Generator<number> {
    let ci = 0, i = 0;
    for (;;) {
      const c = this.#chunks;
      if (ci >= c.length) return;
      const k = c[ci][i];
      yield this.#vals[ci][i];
      if (this.#chunks[ci]?.[i] !== k) {
        // the chunks moved while the caller held the walk: find k (or where it was) again
        if (this.#chunks.length === 0) return;
        ci = this.#chunkOf(k);
        i = lowerBound(this.#chunks[ci], k);
        if (this.#chunks[ci][i] !== k) i--; // k is gone: its successor is at i
      }
      if (++i >= this.#chunks[ci].length) {
        ci++;
        i = 0;
      }
    }
  }

  /**
   * A walk over the keys in [from, end) (end null: no upper bound) in steps: each call `(max, fn)` calls fn(number)
   * for up to `max` more keys in order and returns whether the walk is done. Safe to resume after the set changed
   * (each step finds its place again after the last key it visited): keys present throughout are seen once each, in
   * order; keys inserted or deleted meanwhile may or may not be seen.
   */
  walk(from: BKey, end: BKey | null): (max: number, fn: (v: number) => void) => boolean {
    let last: BKey | null = null, done = false;
    return (max, fn) => {
      const c = this.#chunks;
      if (done || c.length === 0) return done = true;
      const at = last ?? from;
      let ci = this.#chunkOf(at);
      let i = lowerBound(c[ci], at);
      if (last !== null && c[ci][i] === last) i++;
      for (let n = 0; ci < c.length; ci++, i = 0) {
        const chunk = c[ci], vals = this.#vals[ci];
        for (; i < chunk.length; i++) {
          const k = chunk[i];
          if (end !== null && k >= end) return done = true;
          if (n++ === max) return false;
          last = k;
          fn(vals[i]);
        }
      }
      return done = true;
    };
  }

  /** @internal replaces the contents with `keys` (sorted, distinct) and their numbers (SortedKeysBuilder). */
  _fill(keys: BKey[], vals: number[]): void {
    this.#chunks = [];
    this.#vals = [];
    for (let i = 0; i < keys.length; i += BUILD_CHUNK) {
      this.#chunks.push(keys.slice(i, i + BUILD_CHUNK));
      this.#vals.push(vals.slice(i, i + BUILD_CHUNK));
    }
    this.#size = keys.length;
  }

  /**
   * @internal adds k, with number v, after every key held (a restore from keys in order): chunks fill to the size a
   * built set has. Throws unless k is above the last key.
   */
  _append(k: BKey, v: number): void {
    const c = this.#chunks;
    let last = c[c.length - 1];
    if (last && !(last[last.length - 1] < k)) throw new Error("store: restored keys out of order");
    if (!last || last.length === BUILD_CHUNK) {
      c.push(last = []);
      this.#vals.push([]);
    }
    last.push(k);
    this.#vals[c.length - 1].push(v);
    this.#size++;
  }

  /** Removes every key for which `drop` returns true, in one pass. */
  filterOut(drop: (k: BKey) => boolean): void {
    const kept: BKey[][] = [];
    const keptVals: number[][] = [];
    let size = 0;
    for (let ci = 0; ci < this.#chunks.length; ci++) {
      const chunk = this.#chunks[ci], vals = this.#vals[ci];
      const rest: BKey[] = [], restVals: number[] = [];
      for (let i = 0; i < chunk.length; i++) {
        if (drop(chunk[i])) continue;
        rest.push(chunk[i]);
        restVals.push(vals[i]);
      }
      if (rest.length > 0) {
        kept.push(rest);
        keptVals.push(restVals);
      }
      size += rest.length;
    }
    this.#chunks = kept;
    this.#vals = keptVals;
    this.#size = size;
  }
}

/** Keys per chunk of a SortedKeys built at once: room for inserts before a chunk splits. */
const BUILD_CHUNK = (CHUNK * 3) >> 2;

/**
 * Builds a SortedKeys from distinct keys given in any order, in steps: a restore of a large store yields to the event
 * loop between them. Each `seal` sorts the keys added since the last one into a run and merges runs of similar size
 * (a merge sort spread over the steps); `build` merges what is left. Sorting once is several times faster than
 * inserting keys one by one in random order.
 */
export class SortedKeysBuilder {
  /** sorted runs, each at least twice as long as the next */
  #runs: { keys: BKey[]; vals: number[] }[] = [];
  #keys: BKey[] = [];

  /** `ids`: the number of each key added (looked up when its run is sorted). */
  constructor(readonly ids: Map<BKey, number>) {}

  /** Adds key k (its number is in `ids`; k must not have been added before). */
  add(k: BKey): void {
    this.#keys.push(k);
  }

  /** Sorts the keys added since the last call into a run, and merges runs while the newest is not the shortest. */
  seal(): void {
    if (this.#keys.length === 0) return;
    const keys = this.#keys.sort(); // code unit order: the order of `<` on keys
    this.#keys = [];
    const vals = new Array<number>(keys.length);
    for (let i = 0; i < keys.length; i++) vals[i] = this.ids.get(keys[i])!;
    const runs = this.#runs;
    runs.push({ keys, vals });
    while (runs.length > 1 && runs[runs.length - 2].keys.length <= 2 * runs[runs.length - 1].keys.length) {
      const b = runs.pop()!, a = runs.pop()!;
      runs.push(merge(a, b));
    }
  }

  /** The SortedKeys of every key added. */
  build(): SortedKeys {
    this.seal();
    const runs = this.#runs;
    while (runs.length > 1) {
      const b = runs.pop()!, a = runs.pop()!;
      runs.push(merge(a, b));
    }
    this.#runs = [];
    const out = new SortedKeys();
    if (runs.length > 0) out._fill(runs[0].keys, runs[0].vals);
    return out;
  }
}

/** Merges two sorted runs of distinct keys. */
function merge(a: { keys: BKey[]; vals: number[] }, b: { keys: BKey[]; vals: number[] }) {
  const n = a.keys.length + b.keys.length;
  const keys = new Array<BKey>(n), vals = new Array<number>(n);
  let i = 0, j = 0, o = 0;
  while (i < a.keys.length && j < b.keys.length) {
    if (a.keys[i] < b.keys[j]) {
      keys[o] = a.keys[i];
      vals[o++] = a.vals[i++];
    } else {
      keys[o] = b.keys[j];
      vals[o++] = b.vals[j++];
    }
  }
  for (; i < a.keys.length; i++, o++) {
    keys[o] = a.keys[i];
    vals[o] = a.vals[i];
  }
  for (; j < b.keys.length; j++, o++) {
    keys[o] = b.keys[j];
    vals[o] = b.vals[j];
  }
  return { keys, vals };
}

/** Index of the first key >= k in a sorted array. */
function lowerBound(a: BKey[], k: BKey): number {
  let lo = 0, hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
