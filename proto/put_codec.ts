/**
 * Hand-written codecs for the put path, the most frequent request: etcdserverpb.PutRequest from clients, the
 * egpb.Request{id, put} log entry it becomes (encoded once by the member that proposes it, decoded by every member
 * that applies it) and the PutResponse back. Each produces exactly what protobufjs produces with CONVERSION (same
 * bytes, same objects: tests/proto_test.ts compares them on random input) and returns null for anything else (another
 * layout, unknown fields, a value it does not take), which proto/mod.ts then hands to protobufjs. protobufjs builds a
 * message object and converts it to or from the plain shape (int64 through Long objects); these write and read the
 * wire format directly, which took a put's encode and decode from about 7 µs each to about 1 µs on a busy member.
 */
import { Buffer } from "node:buffer";
import type { InternalRequestShape, PutRequest } from "./types.ts";

const TWO32 = 2 ** 32;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const DECIMAL = /^-?[0-9]{1,20}$/;

/** A 64-bit value as the two 32-bit halves of its two's complement (what a varint carries). */
interface U64 {
  lo: number;
  hi: number;
}

/** The halves of a decimal string or safe integer within [min, max]; null when it is not one. */
function parts(v: unknown, min: bigint, max: bigint): U64 | null {
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) return null;
    if (v >= 0) return BigInt(v) <= max ? { lo: v >>> 0, hi: Math.floor(v / TWO32) >>> 0 } : null;
    v = String(v);
  }
  if (typeof v !== "string" || !DECIMAL.test(v)) return null;
  if (v.length <= 15 && v[0] !== "-") {
    const n = Number(v);
    return { lo: n >>> 0, hi: Math.floor(n / TWO32) >>> 0 };
  }
  const b = BigInt(v);
  if (b < min || b > max) return null;
  const u = BigInt.asUintN(64, b);
  return { lo: Number(u & 0xffffffffn), hi: Number(u >> 32n) };
}

function varintLen({ lo, hi }: U64): number {
  if (hi === 0) {
    let n = 1;
    for (let x = lo >>> 7; x !== 0; x >>>= 7) n++;
    return n;
  }
  // 32 bits of lo (5 groups of 7 cover 35 bits), then hi's bits above the 3 lo already placed in group 5
  let n = 5;
  for (let x = hi >>> 3; x !== 0; x >>>= 7) n++;
  return n;
}

function writeVarint(out: Uint8Array, pos: number, { lo, hi }: U64): number {
  while (hi !== 0 || lo > 127) {
    out[pos++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  out[pos++] = lo;
  return pos;
}

function lenLen(n: number): number {
  return varintLen({ lo: n, hi: 0 });
}

/** The put fields as protobufjs's fromObject takes them: which are set, and their values. */
interface PutFields {
  key: Uint8Array | null;
  value: Uint8Array | null;
  lease: U64 | null;
  flags: Array<boolean | null>;
  size: number;
}

function putFields(p: Record<string, unknown>): PutFields | null {
  const bytesOf = (b: unknown): Uint8Array | null | undefined =>
    b == null ? null : b instanceof Uint8Array ? b : undefined;
  const key = bytesOf(p.key), value = bytesOf(p.value);
  if (key === undefined || value === undefined) return null;
  let lease: U64 | null = null;
  if (p.lease != null) {
    lease = parts(p.lease, INT64_MIN, INT64_MAX);
    if (!lease) return null;
  }
  const flags = [p.prev_kv, p.ignore_value, p.ignore_lease].map((f) => f == null ? null : Boolean(f));
  let size = 0;
  if (key) size += 1 + lenLen(key.length) + key.length;
  if (value) size += 1 + lenLen(value.length) + value.length;
  if (lease) size += 1 + varintLen(lease);
  for (const f of flags) if (f !== null) size += 2;
  return { key, value, lease, flags, size };
}

function writePut(out: Uint8Array, pos: number, f: PutFields): number {
  if (f.key) {
    out[pos++] = 0x0a;
    pos = writeVarint(out, pos, { lo: f.key.length, hi: 0 });
    out.set(f.key, pos);
    pos += f.key.length;
  }
  if (f.value) {
    out[pos++] = 0x12;
    pos = writeVarint(out, pos, { lo: f.value.length, hi: 0 });
    out.set(f.value, pos);
    pos += f.value.length;
  }
  if (f.lease) {
    out[pos++] = 0x18;
    pos = writeVarint(out, pos, f.lease);
  }
  for (let i = 0; i < 3; i++) {
    const flag = f.flags[i];
    if (flag === null) continue;
    out[pos++] = 0x20 + 8 * i; // fields 4, 5, 6 as varints
    out[pos++] = flag ? 1 : 0;
  }
  return pos;
}

/** egpb.Request {id, put} as protobufjs encodes it; null for any other request. */
export function encodePutEntry(req: Record<string, unknown>): Buffer | null {
  if (req.op !== "put" || req.put == null || typeof req.put !== "object") return null;
  for (const k in req) if (k !== "op" && k !== "put" && k !== "id" && req[k] != null) return null;
  const id = req.id == null ? null : parts(req.id, 0n, UINT64_MAX);
  if (req.id != null && !id) return null;
  const f = putFields(req.put as Record<string, unknown>);
  if (!f) return null;
  const out = Buffer.allocUnsafe((id ? 1 + varintLen(id) : 0) + 1 + lenLen(f.size) + f.size);
  let pos = 0;
  if (id) {
    out[pos++] = 0x08;
    pos = writeVarint(out, pos, id);
  }
  out[pos++] = 0x1a;
  pos = writeVarint(out, pos, { lo: f.size, hi: 0 });
  writePut(out, pos, f);
  return out;
}

/** Varint ids of the response headers (a member answers with the same cluster and member ID every time). */
const idVarints = new Map<string, { v: U64; len: number }>();

function headerId(s: unknown): { v: U64; len: number } | null {
  if (typeof s !== "string") return null;
  let e = idVarints.get(s);
  if (!e) {
    const v = parts(s, 0n, UINT64_MAX);
    if (!v) return null;
    if (idVarints.size >= 64) idVarints.clear();
    e = { v, len: varintLen(v) };
    idVarints.set(s, e);
  }
  return e;
}

/** etcdserverpb.PutResponse {header} as protobufjs encodes it; null for any other shape (a prev_kv, say). */
export function encodePutResponse(resp: unknown): Buffer | null {
  if (resp == null || typeof resp !== "object") return null;
  const r = resp as Record<string, unknown>;
  for (const k in r) if (k !== "header" && r[k] != null) return null;
  const h = r.header as Record<string, unknown> | null | undefined;
  if (h == null || typeof h !== "object") return null;
  for (const k in h) {
    if (k !== "cluster_id" && k !== "member_id" && k !== "revision" && k !== "raft_term" && h[k] != null) return null;
  }
  const cluster = headerId(h.cluster_id), member = headerId(h.member_id), term = headerId(h.raft_term);
  const rev = parts(h.revision, INT64_MIN, INT64_MAX);
  if (!cluster || !member || !term || !rev) return null;
  const size = 4 + cluster.len + member.len + varintLen(rev) + term.len;
  const out = Buffer.allocUnsafe(1 + lenLen(size) + size);
  let pos = 0;
  out[pos++] = 0x0a;
  pos = writeVarint(out, pos, { lo: size, hi: 0 });
  out[pos++] = 0x08;
  pos = writeVarint(out, pos, cluster.v);
  out[pos++] = 0x10;
  pos = writeVarint(out, pos, member.v);
  out[pos++] = 0x18;
  pos = writeVarint(out, pos, rev);
  out[pos++] = 0x20;
  writeVarint(out, pos, term.v);
  return out;
}

/** Reads the wire format; every read returns null (or -1) when the bytes end early or a varint runs past 64 bits. */
class WireReader {
  pos: number;
  lo = 0;
  hi = 0;
  /** bytes of the last varint */
  n = 0;

  constructor(readonly buf: Uint8Array, start: number, readonly end: number) {
    this.pos = start;
  }

  /** Reads a varint into lo/hi; false if malformed. */
  varint(): boolean {
    const start = this.pos;
    let lo = 0, hi = 0, shift = 0;
    while (this.pos < this.end) {
      const b = this.buf[this.pos++];
      if (shift < 28) lo |= (b & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (b & 0x0f) << 28;
        hi = (b & 0x7f) >>> 4;
      } else if (shift < 64) hi |= (b & 0x7f) << (shift - 32);
      else return false;
      shift += 7;
      if (b < 0x80) {
        if (shift > 64 && b > 1) return false; // the 10th byte carries one bit
        this.lo = lo >>> 0;
        this.hi = hi >>> 0;
        this.n = this.pos - start;
        return true;
      }
    }
    return false;
  }

  /**
   * A varint protobufjs reads as uint32 (lengths, bools): at most 5 bytes, of which it keeps the low 32 bits (it
   * would misread a longer one, so those are left to it).
   */
  uint32(): boolean {
    return this.varint() && this.n <= 5;
  }

  /** A length prefix followed by that many bytes: the start offset, or -1. */
  lengthDelimited(): number {
    if (!this.uint32() || this.lo > this.end - this.pos) return -1;
    const start = this.pos;
    this.pos += this.lo;
    return start;
  }
}

/** The decimal string protobufjs gives for an int64 (signed) or uint64 varint. */
function decimal(lo: number, hi: number, signed: boolean): string {
  if (hi === 0) return String(lo);
  if (hi < 0x200000) return String(hi * TWO32 + lo);
  const u = (BigInt(hi) << 32n) | BigInt(lo);
  return (signed ? BigInt.asIntN(64, u) : u).toString();
}

/**
 * Decodes a PutRequest from buf[start, end) into protobufjs's shape: bytes as views of `buf` (Buffers when `buf` is
 * one), `empty` for absent bytes fields, Buffer.alloc(0) for present empty ones. null when any field is unexpected.
 */
function readPut(buf: Uint8Array, start: number, end: number, empty: Buffer): PutRequest | null {
  const isBuffer = Buffer.isBuffer(buf);
  const view = (s: number, n: number): Uint8Array =>
    n === 0 ? Buffer.alloc(0) : isBuffer ? Buffer.from(buf.buffer, buf.byteOffset + s, n) : buf.subarray(s, s + n);
  const r = new WireReader(buf, start, end);
  let key: Uint8Array = empty, value: Uint8Array = empty, lease = "0";
  let prevKv = false, ignoreValue = false, ignoreLease = false;
  while (r.pos < end) {
    const tag = buf[r.pos++];
    if (tag === 0x0a || tag === 0x12) {
      const s = r.lengthDelimited();
      if (s < 0) return null;
      if (tag === 0x0a) key = view(s, r.pos - s);
      else value = view(s, r.pos - s);
    } else if (tag === 0x18) {
      if (!r.varint()) return null;
      lease = decimal(r.lo, r.hi, true);
    } else if (tag === 0x20 || tag === 0x28 || tag === 0x30) {
      if (!r.uint32()) return null;
      if (tag === 0x20) prevKv = r.lo !== 0;
      else if (tag === 0x28) ignoreValue = r.lo !== 0;
      else ignoreLease = r.lo !== 0;
    } else return null;
  }
  return { key, value, lease, prev_kv: prevKv, ignore_value: ignoreValue, ignore_lease: ignoreLease } as PutRequest;
}

/** A PutRequest as protobufjs decodes it with CONVERSION; null when protobufjs should decode it. */
export function decodePutRequest(buf: Uint8Array, empty: Buffer): PutRequest | null {
  return readPut(buf, 0, buf.length, empty);
}

/** An egpb.Request {id, put} entry as decodeInternal gives it; null for any other request. */
export function decodePutEntry(buf: Buffer, empty: Buffer): InternalRequestShape | null {
  const r = new WireReader(buf, 0, buf.length);
  let id = "0";
  let put: PutRequest | null = null;
  while (r.pos < buf.length) {
    const tag = buf[r.pos++];
    if (tag === 0x08) {
      if (!r.varint()) return null;
      id = decimal(r.lo, r.hi, false);
    } else if (tag === 0x1a) {
      if (put) return null; // protobufjs would merge two occurrences
      const s = r.lengthDelimited();
      if (s < 0) return null;
      put = readPut(buf, s, r.pos, empty);
      if (!put) return null;
    } else return null;
  }
  if (!put) return null;
  return { id, put, op: "put" };
}
