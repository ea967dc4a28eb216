/**
 * The digest members compare to find divergence (Maintenance.HashKV and Maintenance.Hash): a crc32 over a canonical
 * encoding of records fed in a canonical order, so two members holding the same state hash alike however they reached
 * it (entry by entry, or through a snapshot).
 */
import zlib from "node:zlib";

const utf8 = new TextEncoder();

/** Bytes gathered before they are fed to the crc (one native call per this many, not one per field). */
const CHUNK = 64 * 1024;

/** Accumulates a crc32 (zlib polynomial) over length-delimited fields. */
export class StateHasher {
  #crc = 0;
  #buf = new Uint8Array(CHUNK);
  #view = new DataView(this.#buf.buffer);
  #pos = 0;

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    this.#flush();
    if (n > this.#buf.length) {
      this.#buf = new Uint8Array(n);
      this.#view = new DataView(this.#buf.buffer);
    }
  }

  #flush(): void {
    if (this.#pos > 0) this.#crc = zlib.crc32(this.#buf.subarray(0, this.#pos), this.#crc);
    this.#pos = 0;
  }

  /** A number (an exact integer up to 2^53, or any float64) as 8 bytes. */
  number(n: number): this {
    this.#room(8);
    this.#view.setFloat64(this.#pos, n, true);
    this.#pos += 8;
    return this;
  }

  /** Bytes, prefixed by their length. */
  bytes(b: Uint8Array): this {
    this.number(b.length);
    if (b.length > CHUNK) {
      this.#flush();
      this.#crc = zlib.crc32(b, this.#crc);
      return this;
    }
    this.#room(b.length);
    this.#buf.set(b, this.#pos);
    this.#pos += b.length;
    return this;
  }

  /** A string of chars below 256 (a store key, a decimal lease ID), one byte each, prefixed by its length. */
  binary(s: string): this {
    this.number(s.length);
    for (let at = 0; at < s.length; at += CHUNK) {
      const end = Math.min(s.length, at + CHUNK);
      this.#room(end - at);
      for (let i = at; i < end; i++) this.#buf[this.#pos++] = s.charCodeAt(i);
    }
    return this;
  }

  /** Text as UTF-8, prefixed by its length. */
  text(s: string): this {
    return this.bytes(utf8.encode(s));
  }

  /** One MVCC record: key, create and mod revision, version, lease and value. */
  record(key: Uint8Array, create: number, mod: number, version: number, lease: string, value: Uint8Array): this {
    return this.bytes(key).number(create).number(mod).number(version).binary(lease).bytes(value);
  }

  /** The digest so far (unsigned 32 bits). */
  get value(): number {
    this.#flush();
    return this.#crc >>> 0;
  }
}
