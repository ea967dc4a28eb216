/**
 * A list of 32-bit integers that grows a page at a time: the store's newest record of each key id. A plain array
 * grows by copying itself into one 1.5 times larger (at a million elements that single push stopped the event loop
 * for 0.17-0.26 s), and its slots are part of V8's heap, which a collection walks; typed-array pages never move, and
 * the collector does not look inside them.
 */
const PAGE_BITS = 12;
const PAGE = 1 << PAGE_BITS;
const MASK = PAGE - 1;

/** Int32 values addressed by index, appended to at the end. */
export class PagedInt32Array {
  #pages: Int32Array[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  get(i: number): number {
    return this.#pages[i >>> PAGE_BITS][i & MASK];
  }

  set(i: number, v: number): void {
    this.#pages[i >>> PAGE_BITS][i & MASK] = v;
  }

  /** Appends `v`; returns its index. */
  push(v: number): number {
    const i = this.#length++;
    if ((i & MASK) === 0) this.#pages.push(new Int32Array(PAGE));
    this.#pages[i >>> PAGE_BITS][i & MASK] = v;
    return i;
  }
}
