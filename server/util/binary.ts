/** Little-endian binary writer and reader for the project's own compact encodings (state snapshots, peer frames). */
import { Buffer } from "node:buffer";

/** Appends values to a growing buffer. */
export class BinaryWriter {
  #buf: Buffer;
  #pos = 0;

  constructor(initial = 1 << 12) {
    this.#buf = Buffer.allocUnsafe(initial);
  }

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#pos + n) size *= 2;
    const b = Buffer.allocUnsafe(size);
    this.#buf.copy(b, 0, 0, this.#pos);
    this.#buf = b;
  }

  u8(v: number): void {
    this.#room(1);
    this.#buf[this.#pos++] = v;
  }

  u32(v: number): void {
    this.#room(4);
    this.#buf.writeUInt32LE(v, this.#pos);
    this.#pos += 4;
  }

  /** Any JS number (indexes, terms, revisions, TTLs): exact for integers up to 2^53. */
  f64(v: number): void {
    this.#room(8);
    this.#buf.writeDoubleLE(v, this.#pos);
    this.#pos += 8;
  }

  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.raw(b);
  }

  /** Bytes as they are, without a length. */
  raw(b: Uint8Array): void {
    this.#room(b.length);
    this.#buf.set(b, this.#pos);
    this.#pos += b.length;
  }

  /** Bytes or null (a length of 0xffffffff marks null). */
  optBytes(b: Uint8Array | null): void {
    if (b === null) this.u32(0xffffffff);
    else this.bytes(b);
  }

  str(s: string): void {
    const n = Buffer.byteLength(s, "utf8");
    this.u32(n);
    this.#room(n);
    this.#pos += this.#buf.write(s, this.#pos, n, "utf8");
  }

  /** The bytes written so far (a view, valid until the next write). */
  done(): Uint8Array {
    return this.#buf.subarray(0, this.#pos);
  }

  /** Size of the buffer (it only grows). */
  get capacity(): number {
    return this.#buf.length;
  }

  /** Starts over in the same buffer, leaving `space` bytes free at the start for {@link withHead}. */
  reset(space = 0): void {
    this.#pos = space;
  }

  /** The bytes written since reset(space), with `head` placed right before them in that space: a view. */
  withHead(head: Uint8Array, space: number): Uint8Array {
    if (head.length > space) throw new RangeError("head larger than the space left for it");
    const start = space - head.length;
    const b = this.#buf;
    b.set(head, start);
    return new Uint8Array(b.buffer, b.byteOffset + start, this.#pos - start); // plain: its slice() copies
  }
}

/** Reads what BinaryWriter wrote; throws on truncated input. */
export class BinaryReader {
  #buf: Buffer;
  #pos = 0;

  constructor(data: Uint8Array, readonly what: string) {
    this.#buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }

  get offset(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.#buf.length - this.#pos;
  }

  #need(n: number): void {
    if (this.#pos + n > this.#buf.length) throw new Error(`${this.what}: truncated at offset ${this.#pos}`);
  }

  u8(): number {
    this.#need(1);
    return this.#buf[this.#pos++];
  }

  u32(): number {
    this.#need(4);
    const v = this.#buf.readUInt32LE(this.#pos);
    this.#pos += 4;
    return v;
  }

  f64(): number {
    this.#need(8);
    const v = this.#buf.readDoubleLE(this.#pos);
    this.#pos += 8;
    return v;
  }

  /** A copy of the next byte string (so it does not pin the whole input). */
  bytes(): Buffer {
    const n = this.u32();
    this.#need(n);
    const b = Buffer.from(this.#buf.subarray(this.#pos, this.#pos + n));
    this.#pos += n;
    return b;
  }

  /** A view of the next byte string (it keeps the whole input alive while it is referenced). */
  view(): Uint8Array {
    const n = this.u32();
    this.#need(n);
    const b = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return b;
  }

  optBytes(): Buffer | null {
    const n = this.u32();
    if (n === 0xffffffff) return null;
    this.#need(n);
    const b = Buffer.from(this.#buf.subarray(this.#pos, this.#pos + n));
    this.#pos += n;
    return b;
  }

  str(): string {
    const n = this.u32();
    this.#need(n);
    const s = this.#buf.toString("utf8", this.#pos, this.#pos + n);
    this.#pos += n;
    return s;
  }
}
