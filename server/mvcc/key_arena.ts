/**
 * The bytes of the store's keys, outside V8's heap. A key id names a slot: the key's bytes in one of a few large
 * pages, found by its page, offset and length in typed arrays. Held as one string per key, ten million keys were ten
 * million objects in V8's old generation: the collector's marking of them stalled a load of 10 M keys for 260 ms, and
 * each cost 16 bytes of header and a pointer on top of its bytes.
 *
 * Keys are compared here, byte by byte, against a probe (a key in a Uint8Array): the key index (SortedKeys) holds key
 * ids and orders them by their bytes, which is etcd's order.
 */
import { Buffer } from "node:buffer";

/** Bytes per page; a longer key gets a page of its own. */
const PAGE_BYTES = 1 << 20;
/** Key ids per page of the slot arrays. */
const SLOT_PAGE_BITS = 12;
const SLOT_PAGE = 1 << SLOT_PAGE_BITS;
const SLOT_MASK = SLOT_PAGE - 1;
/**
 * Freed bytes are given back by a repack once they exceed both the live bytes and this much. Until then a freed slot
 * is reused by the next key of the same length (keys of one workload tend to share lengths).
 */
const REPACK_MIN_DEAD = 8 << 20;
/** Up to this many bytes are turned into a string char by char (faster than Buffer's latin1 codec when short). */
const SHORT = 1024;

/** The bytes of each key id: `set` when the id gets its key, `free` when it loses it. */
export class KeyArena {
  #pages: Uint8Array[] = [];
  /** free bytes from `#pos` to the end of the last page */
  #pos = PAGE_BYTES;
  /** per key id, side by side (one cache line for a lookup): page, offset, length (-1: no key) */
  #slots: Int32Array[] = [];
  /** one more than the highest key id the slots have room for */
  #limit = 0;
  /** freed slots by length: page * PAGE_BYTES + offset */
  #free = new Map<number, number[]>();
  #liveBytes = 0;
  #deadBytes = 0;

  /** Bytes of the keys held. */
  get liveBytes(): number {
    return this.#liveBytes;
  }

  /** Length of key `kid` in bytes (-1 when it has none). */
  length(kid: number): number {
    return kid < this.#limit ? this.#slots[kid >>> SLOT_PAGE_BITS][(kid & SLOT_MASK) * 3 + 2] : -1;
  }

  /** Gives key id `kid` the key `key` (a copy is kept). */
  set(kid: number, key: Uint8Array): void {
    while (kid >= this.#limit) this.#grow();
    const slots = this.#slots[kid >>> SLOT_PAGE_BITS], i = (kid & SLOT_MASK) * 3;
    if (slots[i + 2] >= 0) this.free(kid);
    const n = key.length;
    const at = this.#place(n);
    const page = Math.floor(at / PAGE_BYTES), off = at - page * PAGE_BYTES;
    this.#pages[page].set(key, off);
    slots[i] = page;
    slots[i + 1] = off;
    slots[i + 2] = n;
    this.#liveBytes += n;
  }

  /** Key id `kid` no longer has a key; its bytes are reused. */
  free(kid: number): void {
    const slots = this.#slots[kid >>> SLOT_PAGE_BITS], i = (kid & SLOT_MASK) * 3;
    const n = slots[i + 2];
    if (n < 0) return;
    slots[i + 2] = -1;
    this.#liveBytes -= n;
    if (n === 0) return;
    const at = slots[i] * PAGE_BYTES + slots[i + 1];
    let list = this.#free.get(n);
    if (!list) this.#free.set(n, list = []);
    list.push(at);
    this.#deadBytes += n;
    if (this.#deadBytes > REPACK_MIN_DEAD && this.#deadBytes > this.#liveBytes) this.#repack();
  }

  /** A view of the bytes of key `kid` (valid until the next `set` or `free`). */
  view(kid: number): Uint8Array {
    const slots = this.#slots[kid >>> SLOT_PAGE_BITS], i = (kid & SLOT_MASK) * 3;
    const off = slots[i + 1];
    return this.#pages[slots[i]].subarray(off, off + slots[i + 2]);
  }

  /** A copy of the bytes of key `kid`. */
  buffer(kid: number): Buffer {
    const slots = this.#slots[kid >>> SLOT_PAGE_BITS], i = (kid & SLOT_MASK) * 3;
    const bytes = this.#pages[slots[i]], off = slots[i + 1], n = slots[i + 2];
    const out = Buffer.allocUnsafe(n);
    // a loop beats a native copy for the short keys of most stores (Buffer.from(view): ten times the time)
    if (n > 64) out.set(bytes.subarray(off, off + n));
    else for (let j = 0; j < n; j++) out[j] = bytes[off + j];
    return out;
  }

  /** Key `kid` as a store key (one char per byte). */
  string(kid: number): string {
    const v = this.view(kid);
    if (v.length <= SHORT) return String.fromCharCode.apply(null, v as unknown as number[]);
    let s = "";
    for (let i = 0; i < v.length; i += SHORT) {
      s += String.fromCharCode.apply(null, v.subarray(i, i + SHORT) as unknown as number[]);
    }
    return s;
  }

  /** Sign of key `kid` compared with `probe` (byte order, a prefix first). */
  compare(kid: number, probe: Uint8Array): number {
    const slots = this.#slots[kid >>> SLOT_PAGE_BITS], i = (kid & SLOT_MASK) * 3;
    const bytes = this.#pages[slots[i]], off = slots[i + 1], n = slots[i + 2], m = probe.length;
    const l = n < m ? n : m;
    for (let j = 0; j < l; j++) {
      const d = bytes[off + j] - probe[j];
      if (d !== 0) return d;
    }
    return n - m;
  }

  #grow(): void {
    const slots = new Int32Array(SLOT_PAGE * 3);
    for (let i = 2; i < slots.length; i += 3) slots[i] = -1;
    this.#slots.push(slots);
    this.#limit += SLOT_PAGE;
  }

  /** Where `n` bytes go: a freed slot of that length, else the end of the last page (a new page when full). */
  #place(n: number): number {
    const list = this.#free.get(n);
    if (list && list.length > 0) {
      this.#deadBytes -= n;
      return list.pop()!;
    }
    if (this.#pos + n > PAGE_BYTES) {
      this.#pages.push(new Uint8Array(Math.max(PAGE_BYTES, n)));
      this.#pos = n > PAGE_BYTES ? PAGE_BYTES : 0;
      if (n > PAGE_BYTES) {
        // a page of its own; the next key starts a new page
        return (this.#pages.length - 1) * PAGE_BYTES;
      }
    }
    const at = (this.#pages.length - 1) * PAGE_BYTES + this.#pos;
    this.#pos += n;
    return at;
  }

  /** Copies every key into new pages, leaving the freed bytes behind. */
  #repack(): void {
    const old = this.#pages;
    this.#pages = [];
    this.#pos = PAGE_BYTES;
    this.#free.clear();
    this.#deadBytes = 0;
    for (let kid = 0; kid < this.#limit; kid++) {
      const slots = this.#slots[kid >>> SLOT_PAGE_BITS], i = (kid & SLOT_MASK) * 3;
      const n = slots[i + 2];
      if (n < 0) continue;
      const off = slots[i + 1];
      const at = this.#place(n);
      const page = Math.floor(at / PAGE_BYTES);
      this.#pages[page].set(old[slots[i]].subarray(off, off + n), at - page * PAGE_BYTES);
      slots[i] = page;
      slots[i + 1] = at - page * PAGE_BYTES;
    }
  }
}

/** A store key (one char per byte) as bytes, written into `scratch` when given and large enough (else a new array). */
export function keyBytes(k: string, scratch?: Uint8Array): Uint8Array {
  const n = k.length;
  const out = scratch && n <= scratch.length ? scratch.subarray(0, n) : new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = k.charCodeAt(i);
  return out;
}

/** Sign of `a` compared with `b` (byte order, a prefix first): `KeyArena.compare` for two arrays. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i] - b[i];
    if (d !== 0) return d;
  }
  return a.length - b.length;
}
