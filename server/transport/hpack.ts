/**
 * HPACK (RFC 7541) header compression for the HTTP/2 transport: a complete decoder (static and dynamic tables,
 * Huffman-coded strings, dynamic table size updates) and a small encoder that uses the static table, indexes a few
 * recurring gRPC response fields in its dynamic table, and sends everything else as plain literals.
 *
 * Header lists travel as flat string arrays: [name0, value0, name1, value1, ...].
 */

import { MAX_HEADER_LIST_SIZE } from "./h2frames.ts";

/** Thrown on any malformed header block; the connection answers with COMPRESSION_ERROR. */
export class HpackError extends Error {}

/** RFC 7541 Appendix A. Index 1 is STATIC[0]. */
const STATIC: ReadonlyArray<readonly [string, string]> = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];
const STATIC_LEN = STATIC.length; // 61

/** "name\0value" → static index for full matches; name → first static index for name matches. */
const STATIC_FULL = new Map<string, number>();
const STATIC_NAME = new Map<string, number>();
for (let i = 0; i < STATIC_LEN; i++) {
  const [n, v] = STATIC[i];
  if (v !== "") STATIC_FULL.set(n + "\0" + v, i + 1);
  if (!STATIC_NAME.has(n)) STATIC_NAME.set(n, i + 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Huffman code (RFC 7541 Appendix B). The code is canonical: codes of equal length are consecutive in symbol
// order, and each length's first code follows the last code of the previous length. So the bit length of each
// symbol (0..255, then EOS) defines it entirely. Lengths are written one character per symbol in base 36.

const HUFFMAN_LENGTHS =
  "dnsssssssoussussssssssusssssssss6aacd68baa8b8666555666666678f6cad67777777777777777777777878djde6f5656" +
  "5666577666567655677777fbedskmkkmmmnmnnnnnonoomnonnnnlmnmnnomlkmmnnlnmmolmnnllmlnmnnkmmmnmmnqqkjmnmpqqqrrqopjl" +
  "qrrqrollqqsrrrkoklmllnmmppooqnqrqqrrrrrsrrrrrq" + "u";

const EOS = 256;
const HUF_LEN = new Uint8Array(257);
const HUF_CODE = new Uint32Array(257);
/** Per bit length L: first code, and the index in HUF_SORTED of its first symbol; HUF_COUNT = symbols of length L. */
const HUF_FIRST = new Int32Array(32);
const HUF_COUNT = new Int32Array(32);
const HUF_START = new Int32Array(32);
const HUF_SORTED = new Uint16Array(257);
/** 8-bit lookahead: for codes of ≤ 8 bits, (symbol << 4) | length; 0 when the code is longer. */
const HUF_FAST = new Uint16Array(256);

(function buildHuffman() {
  for (let s = 0; s <= EOS; s++) HUF_LEN[s] = parseInt(HUFFMAN_LENGTHS[s], 36);
  let k = 0;
  for (let len = 1; len <= 30; len++) {
    HUF_START[len] = k;
    for (let s = 0; s <= EOS; s++) if (HUF_LEN[s] === len) HUF_SORTED[k++] = s;
    HUF_COUNT[len] = k - HUF_START[len];
  }
  let code = 0;
  for (let len = 1; len <= 30; len++) {
    HUF_FIRST[len] = code;
    for (let i = 0; i < HUF_COUNT[len]; i++) HUF_CODE[HUF_SORTED[HUF_START[len] + i]] = code + i;
    code = (code + HUF_COUNT[len]) << 1;
  }
  for (let s = 0; s < EOS; s++) {
    const len = HUF_LEN[s];
    if (len > 8) continue;
    const base = HUF_CODE[s] << (8 - len);
    for (let j = 0; j < 1 << (8 - len); j++) HUF_FAST[base + j] = (s << 4) | len;
  }
})();

/** The Huffman code of a symbol as [code, bit length] (exposed for tests). */
export function huffmanCode(sym: number): [number, number] {
  return [HUF_CODE[sym], HUF_LEN[sym]];
}

/** Decodes a Huffman-coded string (octets are returned as a latin1 string). */
export function huffmanDecode(buf: Uint8Array, start: number, end: number): string {
  const total = (end - start) * 8;
  const last = end - 1;
  let out = "";
  const codes: number[] = [];
  let bp = 0;
  while (bp < total) {
    const remaining = total - bp;
    const byte = start + (bp >> 3);
    const two = (buf[byte] << 8) | (byte < last ? buf[byte + 1] : 0xff); // ones beyond the end
    const fast = HUF_FAST[(two >> (8 - (bp & 7))) & 0xff];
    if (fast !== 0 && (fast & 15) <= remaining) {
      codes.push(fast >> 4);
      bp += fast & 15;
    } else {
      // canonical decoding bit by bit
      let code = 0;
      let found = -1;
      const maxLen = remaining < 30 ? remaining : 30;
      let len = 0;
      while (len < maxLen) {
        const i = bp + len;
        code = (code << 1) | ((buf[start + (i >> 3)] >> (7 - (i & 7))) & 1);
        len++;
        const idx = code - HUF_FIRST[len];
        if (idx >= 0 && idx < HUF_COUNT[len]) {
          found = HUF_SORTED[HUF_START[len] + idx];
          break;
        }
      }
      if (found < 0) {
        // only padding may remain: fewer than 8 bits, all ones
        if (remaining > 7 || code !== (1 << remaining) - 1) throw new HpackError("invalid Huffman padding");
        break;
      }
      if (found === EOS) throw new HpackError("EOS symbol in Huffman string");
      codes.push(found);
      bp += len;
    }
    if (codes.length >= 4096) {
      out += String.fromCharCode.apply(null, codes);
      codes.length = 0;
    }
  }
  return out + (codes.length > 0 ? String.fromCharCode.apply(null, codes) : "");
}

// ---------------------------------------------------------------------------------------------------------------

function latin1(buf: Uint8Array, start: number, end: number): string {
  const n = end - start;
  if (n <= 0) return "";
  if (n < 48) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]);
    return s;
  }
  return String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as number[]);
}

/**
 * Longest accepted HPACK integer: 9 continuation bytes (63 bits), as Go's decoder; an attacker's 150-byte integer
 * once became NaN and slipped past the overflow check. Values above 2^31-1 are rejected as well.
 */
export const MAX_INTEGER_CONTINUATION_BYTES = 9;
/** Largest HPACK integer we accept (indexes, lengths, table sizes). */
const MAX_INTEGER = 0x7fffffff;
/**
 * Dynamic table size updates allowed at the start of one header block: RFC 7541 4.2 needs at most two (the smallest
 * size since the last block, then the final one); more is a peer playing games.
 */
export const MAX_TABLE_SIZE_UPDATES_PER_BLOCK = 2;
/** Per-entry overhead of the dynamic table (RFC 7541 4.1): also the smallest entry, which bounds the entry count. */
const ENTRY_OVERHEAD = 32;

/**
 * A decoder: one per connection direction, fed every header block in order. Its dynamic table is a ring buffer (O(1)
 * insert and evict) bounded by the table size we announced: at most maxTableSize / 32 entries.
 */
export class HpackDecoder {
  /** Ring buffer of entries: slot (head - 1 - i) & mask holds entry i (0 = newest). Capacity is a power of two. */
  private names: string[];
  private values: string[];
  private mask: number;
  private head = 0;
  private count = 0;
  private size = 0;
  /** The table size this side announced (SETTINGS_HEADER_TABLE_SIZE); the encoder may pick anything up to it. */
  private readonly maxAllowed: number;
  private maxSize: number;
  /** Upper bound on the decoded header list (name+value+32 per field). */
  maxHeaderListSize: number;

  constructor(maxTableSize = 4096, maxHeaderListSize = MAX_HEADER_LIST_SIZE) {
    this.maxAllowed = maxTableSize;
    this.maxSize = maxTableSize;
    this.maxHeaderListSize = maxHeaderListSize;
    let cap = 8;
    while (cap < Math.floor(maxTableSize / ENTRY_OVERHEAD)) cap <<= 1;
    this.names = new Array<string>(cap).fill("");
    this.values = new Array<string>(cap).fill("");
    this.mask = cap - 1;
  }

  /** Entries in the dynamic table (for tests). */
  get tableLength(): number {
    return this.count;
  }

  /** Bytes the dynamic table accounts for (for tests). */
  get tableSize(): number {
    return this.size;
  }

  /** Decodes a complete header block into a flat [name, value, ...] list. Throws HpackError. */
  decode(buf: Uint8Array, start = 0, end = buf.length): string[] {
    const out: string[] = [];
    let pos = start;
    let listSize = 0;
    let fieldSeen = false;
    let sizeUpdates = 0;
    const readInt = (first: number, prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let v = first & mask;
      if (v < mask) return v;
      for (let i = 0; i < MAX_INTEGER_CONTINUATION_BYTES; i++) {
        if (pos >= end) throw new HpackError("truncated integer");
        const b = buf[pos++];
        v += (b & 127) * 2 ** (7 * i);
        if (v > MAX_INTEGER) throw new HpackError("integer overflow");
        if ((b & 128) === 0) return v;
      }
      throw new HpackError("integer too long");
    };
    const readString = (): string => {
      if (pos >= end) throw new HpackError("truncated string");
      const b = buf[pos++];
      const len = readInt(b, 7);
      if (len > end - pos) throw new HpackError("truncated string");
      const s = (b & 128) !== 0 ? huffmanDecode(buf, pos, pos + len) : latin1(buf, pos, pos + len);
      pos += len;
      return s;
    };
    while (pos < end) {
      const b = buf[pos++];
      let name: string;
      let value: string;
      if (b & 128) {
        // indexed field
        const idx = readInt(b, 7);
        if (idx === 0) throw new HpackError("index 0");
        if (idx <= STATIC_LEN) {
          name = STATIC[idx - 1][0];
          value = STATIC[idx - 1][1];
        } else {
          const slot = this.slot(idx);
          name = this.names[slot];
          value = this.values[slot];
        }
      } else if ((b & 0xe0) === 0x20) {
        // dynamic table size update: only before the first field
        if (fieldSeen) throw new HpackError("table size update after a field");
        if (++sizeUpdates > MAX_TABLE_SIZE_UPDATES_PER_BLOCK) throw new HpackError("too many table size updates");
        const sz = readInt(b, 5);
        if (sz > this.maxAllowed) throw new HpackError("table size update above the limit");
        this.maxSize = sz;
        this.evict(0);
        continue;
      } else {
        const incremental = (b & 0xc0) === 0x40;
        const idx = incremental ? readInt(b, 6) : readInt(b, 4);
        if (idx === 0) name = readString();
        else if (idx <= STATIC_LEN) name = STATIC[idx - 1][0];
        else name = this.names[this.slot(idx)];
        value = readString();
        if (incremental) this.add(name, value);
      }
      fieldSeen = true;
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize > this.maxHeaderListSize) throw new HpackError("header list too large");
      out.push(name, value);
    }
    return out;
  }

  /** The ring slot of dynamic index `idx` (> STATIC_LEN). */
  private slot(idx: number): number {
    const d = idx - STATIC_LEN - 1;
    if (d >= this.count) throw new HpackError(`index ${idx} out of range`);
    return (this.head - 1 - d) & this.mask;
  }

  private add(name: string, value: string): void {
    const sz = name.length + value.length + ENTRY_OVERHEAD;
    if (sz > this.maxSize) {
      // an entry larger than the table empties it (RFC 7541 4.4)
      this.evict(this.maxSize + 1);
      return;
    }
    this.evict(sz);
    const h = this.head;
    this.names[h] = name;
    this.values[h] = value;
    this.head = (h + 1) & this.mask;
    this.count++;
    this.size += sz;
  }

  /** Drops the oldest entries until `room` more bytes fit (every entry is at least 32 bytes: count <= capacity). */
  private evict(room: number): void {
    while (this.count > 0 && this.size + room > this.maxSize) {
      const oldest = (this.head - this.count) & this.mask;
      this.size -= this.names[oldest].length + this.values[oldest].length + ENTRY_OVERHEAD;
      this.names[oldest] = "";
      this.values[oldest] = "";
      this.count--;
    }
  }
}

/** Fields worth a dynamic-table slot: they repeat on every gRPC response. */
const INDEXABLE = new Set(["content-type", "grpc-status", "grpc-encoding", "grpc-accept-encoding"]);

/** An encoder writing into a growable scratch buffer; `encode` returns a view valid until the next call. */
export class HpackEncoder {
  private buf = new Uint8Array(512);
  private pos = 0;
  /** Dynamic table: "name\0value" → absolute insertion number; entries oldest first. */
  private byKey = new Map<string, number>();
  private entries: { key: string; size: number; abs: number }[] = [];
  private head = 0; // index of the oldest live entry in `entries`
  private inserted = 0;
  private size = 0;
  private maxSize = 4096;
  private pendingUpdate = -1;
  /** Bumped whenever the table changes, which may change how a field list encodes. */
  private version = 0;
  /** Encodings of frozen (constant) field lists, valid while `version` is unchanged. */
  private readonly cache = new Map<string[], { version: number; bytes: Uint8Array }>();

  /** Applies the peer's SETTINGS_HEADER_TABLE_SIZE (our encoder uses at most 4096 bytes of it). */
  setPeerTableSize(n: number): void {
    const want = Math.min(n, 4096);
    if (want === this.maxSize) return;
    this.maxSize = want;
    this.version++;
    this.evict(0);
    this.pendingUpdate = this.pendingUpdate < 0 ? want : Math.min(this.pendingUpdate, want);
  }

  /**
   * Encodes a flat [name, value, ...] list; names must be lower case. The encoding of a frozen list is cached
   * (for the constant response headers and trailers of every call).
   */
  encode(fields: string[]): Uint8Array {
    if (Object.isFrozen(fields)) {
      const c = this.cache.get(fields);
      if (c && c.version === this.version && this.pendingUpdate < 0) return c.bytes;
      const v = this.version;
      const pending = this.pendingUpdate >= 0;
      const bytes = this.encodeFields(fields);
      if (!pending && v === this.version && this.cache.size < 64) {
        this.cache.set(fields, { version: v, bytes: bytes.slice() });
      }
      return bytes;
    }
    return this.encodeFields(fields);
  }

  private encodeFields(fields: string[]): Uint8Array {
    this.pos = 0;
    if (this.pendingUpdate >= 0) {
      // announce the smallest size we went through, then the final one (RFC 7541 4.2)
      if (this.pendingUpdate !== this.maxSize) this.writeInt(0x20, 5, this.pendingUpdate);
      this.writeInt(0x20, 5, this.maxSize);
      this.pendingUpdate = -1;
    }
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i];
      const value = fields[i + 1];
      const key = name + "\0" + value;
      const st = STATIC_FULL.get(key);
      if (st !== undefined) {
        this.writeInt(0x80, 7, st);
        continue;
      }
      const abs = this.byKey.get(key);
      if (abs !== undefined) {
        this.writeInt(0x80, 7, STATIC_LEN + (this.inserted - abs));
        continue;
      }
      const nameIdx = STATIC_NAME.get(name) ?? 0;
      const entrySize = name.length + value.length + 32;
      if (INDEXABLE.has(name) && entrySize <= this.maxSize && value.length < 64) {
        this.writeInt(0x40, 6, nameIdx);
        if (nameIdx === 0) this.writeString(name);
        this.writeString(value);
        this.insert(key, entrySize);
      } else {
        this.writeInt(0x00, 4, nameIdx);
        if (nameIdx === 0) this.writeString(name);
        this.writeString(value);
      }
    }
    return this.buf.subarray(0, this.pos);
  }

  private insert(key: string, size: number): void {
    this.evict(size);
    const abs = this.inserted++;
    this.version++;
    this.entries.push({ key, size, abs });
    this.byKey.set(key, abs);
    this.size += size;
  }

  private evict(room: number): void {
    while (this.size + room > this.maxSize && this.head < this.entries.length) {
      const e = this.entries[this.head++];
      this.size -= e.size;
      if (this.byKey.get(e.key) === e.abs) this.byKey.delete(e.key);
    }
    if (this.head > 64 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const nb = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    nb.set(this.buf.subarray(0, this.pos));
    this.buf = nb;
  }

  private writeInt(flags: number, prefixBits: number, v: number): void {
    this.ensure(6);
    const max = (1 << prefixBits) - 1;
    if (v < max) {
      this.buf[this.pos++] = flags | v;
      return;
    }
    this.buf[this.pos++] = flags | max;
    v -= max;
    while (v >= 128) {
      this.buf[this.pos++] = (v & 127) | 128;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  private writeString(s: string): void {
    for (let i = 0; i < s.length; i++) {
      if (s.charCodeAt(i) > 0xff) {
        // not latin1: send the UTF-8 bytes
        const u = new TextEncoder().encode(s);
        this.writeInt(0, 7, u.length);
        this.ensure(u.length);
        this.buf.set(u, this.pos);
        this.pos += u.length;
        return;
      }
    }
    this.writeInt(0, 7, s.length);
    this.ensure(s.length);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i);
    this.pos = p;
  }
}
