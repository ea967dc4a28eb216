/** An ordered set of store keys with binary search; the key index of the MVCC store. */
import type { BKey } from "./keys.ts";

/** Sorted array of distinct keys. Inserts and deletes move memory (fast for up to millions of keys). */
export class SortedKeys {
  #keys: BKey[] = [];

  get size(): number {
    return this.#keys.length;
  }

  /** Index of the first key >= k. */
  lowerBound(k: BKey): number {
    const a = this.#keys;
    let lo = 0, hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] < k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Adds k if absent. */
  insert(k: BKey): void {
    const a = this.#keys;
    if (a.length === 0 || a[a.length - 1] < k) {
      a.push(k);
      return;
    }
    const i = this.lowerBound(k);
    if (a[i] !== k) a.splice(i, 0, k);
  }

  /** Removes k if present. */
  delete(k: BKey): void {
    const i = this.lowerBound(k);
    if (this.#keys[i] === k) this.#keys.splice(i, 1);
  }

  /** Keys in [from, end); end null means no upper bound. */
  *range(from: BKey, end: BKey | null): Generator<BKey> {
    const a = this.#keys;
    for (let i = this.lowerBound(from); i < a.length; i++) {
      const k = a[i];
      if (end !== null && k >= end) return;
      yield k;
    }
  }

  /** Removes every key for which `drop` returns true, in one pass. */
  filterOut(drop: (k: BKey) => boolean): void {
    this.#keys = this.#keys.filter((k) => !drop(k));
  }
}
