/**
 * Keys are arbitrary bytes. Inside the store each key is held as a "binary string" (one UTF-16 code unit per byte,
 * latin1), which keeps JavaScript's string order identical to etcd's byte order and makes keys usable as Map keys.
 */
import { Buffer } from "node:buffer";

/** A key as held by the store: one char per byte. */
export type BKey = string;

/** Up to this many bytes are converted char by char (faster than Buffer's latin1 codec for short strings). */
const SHORT = 1024;

/** Bytes → store key. */
export function toBKey(bytes: Uint8Array | undefined | null): BKey {
  if (!bytes || bytes.length === 0) return "";
  if (bytes.length <= SHORT) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/** Store key → bytes (a new Buffer). */
export function fromBKey(key: BKey): Buffer {
  const n = key.length;
  if (n > SHORT) return Buffer.from(key, "latin1");
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = key.charCodeAt(i);
  return b;
}

/**
 * The end of a range in store terms. `""` for a single key, `null` for "to the end of the key space" (etcd's
 * range_end "\0"), otherwise the exclusive upper bound.
 */
export type RangeEnd = BKey | null;

/** Maps a request's (key, range_end) to a store range end, following etcd's rules. */
export function rangeEndOf(rangeEnd: Uint8Array | undefined | null): RangeEnd {
  if (!rangeEnd || rangeEnd.length === 0) return "";
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return null;
  return toBKey(rangeEnd);
}

/** Whether `k` lies in [key, end) (or equals key when end is ""). */
export function inRange(k: BKey, key: BKey, end: RangeEnd): boolean {
  if (end === "") return k === key;
  return k >= key && (end === null || k < end);
}

/** The smallest key greater than every key with this prefix ("\0" semantics when none exists). */
export function prefixEnd(prefix: Uint8Array): Uint8Array {
  const end = Uint8Array.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.slice(0, i + 1);
    }
  }
  return new Uint8Array([0]);
}
