/**
 * The digest members compare to find divergence (Maintenance.HashKV and Maintenance.Hash): a crc32 over a canonical
 * encoding of records fed in a canonical order, so two members holding the same state hash alike however they reached
 * it (entry by entry, or through a snapshot).
 */
import zlib from "node:zlib";

const utf8 = new TextEncoder();

/** Accumulates a crc32 (zlib polynomial) over length-delimited fields. */
export class StateHasher {
  #crc = 0;
  readonly #scratch = new Uint8Array(8);
  readonly #view = new DataView(this.#scratch.buffer);

  /** A number (an exact integer up to 2^53, or any float64) as 8 bytes. */
  number(n: number): this {
    this.#view.setFloat64(0, n, true);
    this.#crc = zlib.crc32(this.#scratch, this.#crc);
    return this;
  }

  /** Bytes, prefixed by their length. */
  bytes(b: Uint8Array): this {
    this.number(b.length);
    if (b.length > 0) this.#crc = zlib.crc32(b, this.#crc);
    return this;
  }

  /** A store key (one char per byte), prefixed by its length. */
  binary(s: string): this {
    const b = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
    return this.bytes(b);
  }

  /** Text as UTF-8, prefixed by its length. */
  text(s: string): this {
    return this.bytes(utf8.encode(s));
  }

  /** One MVCC record: key, create and mod revision, version, lease and value. */
  record(key: string, create: number, mod: number, version: number, lease: string, value: Uint8Array): this {
    return this.binary(key).number(create).number(mod).number(version).text(lease).bytes(value);
  }

  /** The digest so far (unsigned 32 bits). */
  get value(): number {
    return this.#crc >>> 0;
  }
}
