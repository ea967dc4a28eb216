/**
 * An ordered set of key ids: the key index of the MVCC store, ordered by the keys' bytes in a KeyArena. Ids live in
 * sorted chunks of at most CHUNK (a two-level B-tree), so an insert or delete moves at most one chunk's worth of
 * memory however many keys exist. The chunks are typed arrays: the index holds no JavaScript object per key for V8's
 * collector to mark. Lookups take the key as bytes (a probe); an id's own key must be in the arena while the id is in
 * the index.
 */
import { compareBytes, type KeyArena } from "./key_arena.ts";

const CHUNK = 512;
/** Keys per chunk of an index built at once: room for inserts before a chunk splits. */
const BUILD_CHUNK = (CHUNK * 3) >> 2;

/** A chunk: `n` ids in key order, and a copy of its last key (the search for a chunk reads no key of the arena). */
interface Chunk {
  ids: Int32Array;
  n: number;
  last: Uint8Array;
}

const NO_KEY = new Uint8Array(0);
const newChunk = (): Chunk => ({ ids: new Int32Array(CHUNK + 1), n: 0, last: NO_KEY });

/** Sorted set of key ids, ordered by their keys. */
export class SortedKeys {
  #chunks: Chunk[] = [];
  #size = 0;
  /** changes on every insert, delete or rebuild: a resumed walk whose count still matches has its place */
  #changes = 0;

  constructor(readonly keys: KeyArena) {}

  get size(): number {
    return this.#size;
  }

  /** Index of the chunk that holds (or would hold) the probe. */
  #chunkOf(probe: Uint8Array): number {
    const c = this.#chunks;
    let lo = 0, hi = c.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareBytes(c[mid].last, probe) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The chunk's last key changed: its copy is taken again. */
  #lastChanged(c: Chunk): void {
    c.last = c.n === 0 ? NO_KEY : this.keys.view(c.ids[c.n - 1]).slice();
  }

  /** Index in chunk `c` of the first key >= probe. */
  #lowerBound(c: Chunk, probe: Uint8Array): number {
    const ids = c.ids, keys = this.keys;
    let lo = 0, hi = c.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (keys.compare(ids[mid], probe) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Adds key id `kid` (its key set in the arena) unless its key is present. */
  insert(kid: number): void {
    const probe = this.keys.view(kid);
    if (this.#chunks.length === 0) this.#chunks.push(newChunk());
    const ci = this.#chunkOf(probe);
    const c = this.#chunks[ci];
    const i = this.#lowerBound(c, probe);
    if (i < c.n && this.keys.compare(c.ids[i], probe) === 0) return;
    c.ids.copyWithin(i + 1, i, c.n);
    c.ids[i] = kid;
    c.n++;
    this.#size++;
    this.#changes++;
    if (i === c.n - 1) this.#lastChanged(c);
    if (c.n > CHUNK) {
      const half = CHUNK >> 1, next = newChunk();
      next.ids.set(c.ids.subarray(half, c.n));
      next.n = c.n - half;
      next.last = c.last;
      c.n = half;
      this.#lastChanged(c);
      this.#chunks.splice(ci + 1, 0, next);
    }
  }

  /** The id of the key `probe`, or undefined when it is absent. */
  get(probe: Uint8Array): number | undefined {
    if (this.#chunks.length === 0) return undefined;
    const c = this.#chunks[this.#chunkOf(probe)];
    const i = this.#lowerBound(c, probe);
    return i < c.n && this.keys.compare(c.ids[i], probe) === 0 ? c.ids[i] : undefined;
  }

  /** Removes key id `kid` (its key still in the arena) if present. */
  delete(kid: number): void {
    if (this.#chunks.length === 0) return;
    const probe = this.keys.view(kid);
    const ci = this.#chunkOf(probe);
    const c = this.#chunks[ci];
    const i = this.#lowerBound(c, probe);
    if (i >= c.n || c.ids[i] !== kid) return;
    c.ids.copyWithin(i, i + 1, c.n);
    c.n--;
    this.#size--;
    this.#changes++;
    if (c.n === 0) this.#chunks.splice(ci, 1);
    else if (i === c.n) this.#lastChanged(c);
  }

  /** Calls fn(id) for the keys in [from, end) in order (end null: no upper bound). */
  forEach(from: Uint8Array, end: Uint8Array | null, fn: (kid: number) => void): void {
    const chunks = this.#chunks, keys = this.keys;
    if (chunks.length === 0) return;
    let ci = this.#chunkOf(from);
    let i = this.#lowerBound(chunks[ci], from);
    for (; ci < chunks.length; ci++, i = 0) {
      const c = chunks[ci], ids = c.ids;
      // only the chunk that holds `end` needs a comparison per key
      const last = end === null || compareBytes(c.last, end) < 0;
      for (; i < c.n; i++) {
        if (!last && keys.compare(ids[i], end!) >= 0) return;
        fn(ids[i]);
      }
    }
  }

  /**
   * The ids of all keys in key order, lazily: safe to resume after the set changed (a long walk that yields to the
   * event loop). Keys present throughout are seen once each, in order; keys inserted or deleted meanwhile may or may
   * not be seen.
   */
  *values(): Generator<number> {
    let ci = 0, i = 0;
    let last = new Uint8Array(64);
    for (;;) {
      if (ci >= this.#chunks.length) return;
      const kid = this.#chunks[ci].ids[i];
      const v = this.keys.view(kid);
      if (v.length > last.length) last = new Uint8Array(v.length * 2);
      last.set(v);
      const lastKey = last.subarray(0, v.length);
      const changes = this.#changes;
      yield kid;
      if (this.#changes !== changes) {
        // the chunks moved while the caller held the walk: find the key (or where it was) again
        if (this.#chunks.length === 0) return;
        ci = this.#chunkOf(lastKey);
        i = this.#lowerBound(this.#chunks[ci], lastKey);
        const c = this.#chunks[ci];
        if (!(i < c.n && this.keys.compare(c.ids[i], lastKey) === 0)) i--; // the key is gone: its successor is at i
      }
      if (++i >= this.#chunks[ci].n) {
        ci++;
        i = 0;
      }
    }
  }

  /**
   * A walk over the keys in [from, end) (end null: no upper bound) in steps: each call `(max, fn)` calls fn(id) for
   * up to `max` more keys in order and returns whether the walk is done. Safe to resume after the set changed (each
   * step finds its place again after the last key it visited): keys present throughout are seen once each, in order;
   * keys inserted or deleted meanwhile may or may not be seen.
   */
  walk(from: Uint8Array, end: Uint8Array | null): (max: number, fn: (kid: number) => void) => boolean {
    let last: Uint8Array | null = null, done = false;
    const keys = this.keys;
    return (max, fn) => {
      const chunks = this.#chunks;
      if (done || chunks.length === 0) return done = true;
      const at = last ?? from;
      let ci = this.#chunkOf(at);
      let i = this.#lowerBound(chunks[ci], at);
      if (last !== null && i < chunks[ci].n && keys.compare(chunks[ci].ids[i], last) === 0) i++;
      let lastKid = -1;
      try {
        for (let n = 0; ci < chunks.length; ci++, i = 0) {
          const c = chunks[ci], ids = c.ids;
          for (; i < c.n; i++) {
            const kid = ids[i];
            if (end !== null && keys.compare(kid, end) >= 0) return done = true;
            if (n++ === max) return false;
            lastKid = kid;
            fn(kid);
          }
        }
        return done = true;
      } finally {
        // the place to resume from, kept as bytes: the key may be gone by the next step
        if (lastKid >= 0) last = keys.view(lastKid).slice();
      }
    };
  }

  /** @internal replaces the contents with `kids`, whose keys are sorted and distinct (SortedKeysBuilder). */
  _fill(kids: ArrayLike<number>): void {
    this.#chunks = [];
    for (let i = 0; i < kids.length; i += BUILD_CHUNK) {
      const c = newChunk();
      const n = Math.min(BUILD_CHUNK, kids.length - i);
      for (let j = 0; j < n; j++) c.ids[j] = kids[i + j];
      c.n = n;
      this.#lastChanged(c);
      this.#chunks.push(c);
    }
    this.#size = kids.length;
    this.#changes++;
  }

  /**
   * @internal adds key id `kid` after every key held (a restore from keys in order): chunks fill to the size a built
   * set has. Throws unless its key is above the last key. `_appendEnd` after the last one.
   */
  _append(kid: number): void {
    const chunks = this.#chunks;
    let last = chunks[chunks.length - 1];
    if (last && this.keys.compare(last.ids[last.n - 1], this.keys.view(kid)) >= 0) {
      throw new Error("store: restored keys out of order");
    }
    if (!last || last.n === BUILD_CHUNK) chunks.push(last = newChunk());
    last.ids[last.n++] = kid;
    // a chunk's copy of its last key is taken once it is full (or by `_appendEnd`), not at every key
    if (last.n === BUILD_CHUNK) this.#lastChanged(last);
    this.#size++;
    this.#changes++;
  }

  /** @internal the last `_append` was made: the last chunk's copy of its last key is taken. */
  _appendEnd(): void {
    const last = this.#chunks[this.#chunks.length - 1];
    if (last) this.#lastChanged(last);
  }

  /** Removes every id for which `drop` returns true, in one pass. */
  filterOut(drop: (kid: number) => boolean): void {
    const kept: Chunk[] = [];
    let size = 0;
    for (const c of this.#chunks) {
      let n = 0;
      for (let i = 0; i < c.n; i++) if (!drop(c.ids[i])) c.ids[n++] = c.ids[i];
      c.n = n;
      if (n > 0) {
        this.#lastChanged(c);
        kept.push(c);
      }
      size += n;
    }
    this.#chunks = kept;
    this.#size = size;
    this.#changes++;
  }
}

/**
 * Builds a SortedKeys from distinct keys given in any order, in steps: a restore of a large store yields to the event
 * loop between them. Each `seal` sorts the keys added since the last one into a run and merges runs of similar size
 * (a merge sort spread over the steps); `build` merges what is left. Sorting once is several times faster than
 * inserting keys one by one in random order. The keys are held as strings (one char per byte, whose `<` is byte
 * order) only while the index is built.
 */
export class SortedKeysBuilder {
  /** sorted runs, each at least twice as long as the next */
  #runs: { keys: string[]; vals: number[] }[] = [];
  #keys: string[] = [];

  /** `ids`: the id of each key added (looked up when its run is sorted). */
  constructor(readonly ids: Map<string, number>) {}

  /** Adds key k (its id is in `ids`; k must not have been added before). */
  add(k: string): void {
    this.#keys.push(k);
  }

  /** Sorts the keys added since the last call into a run, and merges runs while the newest is not the shortest. */
  seal(): void {
    if (this.#keys.length === 0) return;
    const keys = this.#keys.sort(); // code unit order: byte order
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

  /** The index of every key added, over `keys` (which holds each key under its id). */
  build(keys: KeyArena): SortedKeys {
    this.seal();
    const runs = this.#runs;
    while (runs.length > 1) {
      const b = runs.pop()!, a = runs.pop()!;
      runs.push(merge(a, b));
    }
    this.#runs = [];
    const out = new SortedKeys(keys);
    if (runs.length > 0) out._fill(runs[0].vals);
    return out;
  }
}

/** Merges two sorted runs of distinct keys. */
function merge(a: { keys: string[]; vals: number[] }, b: { keys: string[]; vals: number[] }) {
  const n = a.keys.length + b.keys.length;
  const keys = new Array<string>(n), vals = new Array<number>(n);
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
