/**
 * Hand-written protobuf encoding of the watch hot path: a WatchResponse carrying events. One event is delivered to
 * many watchers, so its mvccpb.Event bytes are encoded once (cached on the event) and each watcher's response is a
 * concatenation of a header, its watch ID and those bytes. Field numbers are etcd's (proto/etcdserverpb/rpc.proto,
 * proto/mvccpb/kv.proto); tests/watch_encode_test.ts checks the output against protobufjs.
 */
import type { StoreEvent } from "../mvcc/store.ts";
import type { KeyValue, RangeResponse, ResponseHeader } from "../../proto/mod.ts";

/** Length of the varint encoding of a non-negative integer below 2^53. */
function varintLen(n: number): number {
  let len = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

function putVarint(buf: Uint8Array, pos: number, n: number): number {
  while (n >= 128) {
    buf[pos++] = (n % 128) | 128;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

/** Varint bytes of a 64-bit value given as a decimal string (two's complement for negatives). */
function varint64(dec: string): Uint8Array {
  let v = BigInt.asUintN(64, BigInt(dec));
  const out: number[] = [];
  while (v >= 128n) {
    out.push(Number(v & 127n) | 128);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

/** Builds a message from (field, value) parts; sizes are computed first and one buffer is filled. */
class Msg {
  #parts: Array<[number, number | Uint8Array, boolean]> = [];
  #size = 0;

  /** A varint field; omitted when 0 (proto3). */
  int(field: number, n: number): this {
    if (n === 0) return this;
    this.#parts.push([field, n, false]);
    this.#size += varintLen(field << 3) + varintLen(n);
    return this;
  }

  /** A varint field whose bytes are already encoded. */
  rawVarint(field: number, bytes: Uint8Array): this {
    this.#parts.push([field, bytes, true]);
    this.#size += varintLen(field << 3) + bytes.length;
    return this;
  }

  /** A length-delimited field; omitted when empty unless `always`. */
  bytes(field: number, b: Uint8Array, always = false): this {
    if (b.length === 0 && !always) return this;
    this.#parts.push([field, b, false]);
    this.#size += varintLen((field << 3) | 2) + varintLen(b.length) + b.length;
    return this;
  }

  done(): Uint8Array {
    const out = new Uint8Array(this.#size);
    let pos = 0;
    for (const [field, v, raw] of this.#parts) {
      if (typeof v === "number") {
        pos = putVarint(out, pos, field << 3);
        pos = putVarint(out, pos, v);
      } else if (raw) {
        pos = putVarint(out, pos, field << 3);
        out.set(v, pos);
        pos += v.length;
      } else {
        pos = putVarint(out, pos, (field << 3) | 2);
        pos = putVarint(out, pos, v.length);
        out.set(v, pos);
        pos += v.length;
      }
    }
    return out;
  }
}

function encodeKv(kv: KeyValue): Uint8Array {
  const m = new Msg().bytes(1, kv.key).int(2, kv.create_revision).int(3, kv.mod_revision).int(4, kv.version)
    .bytes(5, kv.value);
  if (kv.lease !== "0") m.rawVarint(6, varint64(kv.lease));
  return m.done();
}

/** Cached encodings of an event: without and with its previous key-value. */
interface Encoded {
  plain?: Uint8Array;
  withPrev?: Uint8Array;
}
const cache = new WeakMap<StoreEvent, Encoded>();

/** mvccpb.Event bytes of a store event (encoded once per event and flavour). */
export function encodeEvent(ev: StoreEvent, prevKv: boolean): Uint8Array {
  let c = cache.get(ev);
  if (!c) cache.set(ev, c = {});
  const withPrev = prevKv && ev.prev !== null;
  if (withPrev) {
    return c.withPrev ??= new Msg().int(1, ev.type).bytes(2, encodeKv(ev.kv), true).bytes(3, encodeKv(ev.prev!), true)
      .done();
  }
  return c.plain ??= new Msg().int(1, ev.type).bytes(2, encodeKv(ev.kv), true).done();
}

/** Encodes etcdserverpb.ResponseHeader; the ID parts are fixed per member. */
export class HeaderEncoder {
  #cluster: Uint8Array;
  #member: Uint8Array;

  constructor(clusterId: string, memberId: string) {
    this.#cluster = varint64(clusterId);
    this.#member = varint64(memberId);
  }

  encode(revision: number, raftTerm: number): Uint8Array {
    return new Msg().rawVarint(1, this.#cluster).rawVarint(2, this.#member).int(3, revision).int(4, raftTerm).done();
  }
}

const eventFieldCache = new WeakMap<Uint8Array, Uint8Array>();

/**
 * The `events` fields (11) of a WatchResponse carrying these encoded events, in order. For one event the bytes are
 * cached on it: every watcher that gets the same event shares them.
 */
export function eventFields(events: Uint8Array[]): Uint8Array {
  if (events.length === 1) {
    const e = events[0];
    let f = eventFieldCache.get(e);
    if (!f) eventFieldCache.set(e, f = new Msg().bytes(11, e, true).done());
    return f;
  }
  const m = new Msg();
  for (const e of events) m.bytes(11, e, true);
  return m.done();
}

/**
 * The first part of a gRPC message carrying an etcdserverpb.WatchResponse with events: the 5-byte gRPC prefix, the
 * header, the watch ID and the fragment flag. `eventFields(events)` (`fieldsLength` bytes) is the rest. Small, so
 * each watcher's response costs little while the event bytes are shared.
 */
export function watchEventsHead(
  header: Uint8Array,
  watchId: number,
  fieldsLength: number,
  fragment: boolean,
): Uint8Array {
  const id = watchId >= 0 ? null : varint64(`${watchId}`);
  const idLen = watchId === 0 ? 0 : 1 + (id ? id.length : varintLen(watchId));
  const msgLen = 1 + varintLen(header.length) + header.length + idLen + (fragment ? 2 : 0) + fieldsLength;
  const out = new Uint8Array(5 + msgLen - fieldsLength);
  out[1] = msgLen >>> 24;
  out[2] = (msgLen >>> 16) & 0xff;
  out[3] = (msgLen >>> 8) & 0xff;
  out[4] = msgLen & 0xff;
  out[5] = (1 << 3) | 2;
  let pos = putVarint(out, 6, header.length);
  out.set(header, pos);
  pos += header.length;
  if (watchId !== 0) {
    out[pos++] = 2 << 3;
    if (id) {
      out.set(id, pos);
      pos += id.length;
    } else pos = putVarint(out, pos, watchId);
  }
  if (fragment) {
    out[pos++] = 7 << 3;
    out[pos] = 1;
  }
  return out;
}

/** Length of an encoded mvccpb.KeyValue; `lease` is the lease ID's varint bytes (null: no lease). */
function kvLength(kv: KeyValue, lease: Uint8Array | null): number {
  let n = 0;
  const k = kv.key.length, v = kv.value.length;
  if (k > 0) n += 1 + varintLen(k) + k;
  if (kv.create_revision !== 0) n += 1 + varintLen(kv.create_revision);
  if (kv.mod_revision !== 0) n += 1 + varintLen(kv.mod_revision);
  if (kv.version !== 0) n += 1 + varintLen(kv.version);
  if (v > 0) n += 1 + varintLen(v) + v;
  if (lease !== null) n += 1 + lease.length;
  return n;
}

/** Writes an mvccpb.KeyValue at `pos` (the layout `kvLength` measured); returns the position after it. */
function writeKv(out: Uint8Array, pos: number, kv: KeyValue, lease: Uint8Array | null): number {
  const k = kv.key, v = kv.value;
  if (k.length > 0) {
    out[pos++] = (1 << 3) | 2;
    pos = putVarint(out, pos, k.length);
    out.set(k, pos);
    pos += k.length;
  }
  if (kv.create_revision !== 0) {
    out[pos++] = 2 << 3;
    pos = putVarint(out, pos, kv.create_revision);
  }
  if (kv.mod_revision !== 0) {
    out[pos++] = 3 << 3;
    pos = putVarint(out, pos, kv.mod_revision);
  }
  if (kv.version !== 0) {
    out[pos++] = 4 << 3;
    pos = putVarint(out, pos, kv.version);
  }
  if (v.length > 0) {
    out[pos++] = (5 << 3) | 2;
    pos = putVarint(out, pos, v.length);
    out.set(v, pos);
    pos += v.length;
  }
  if (lease !== null) {
    out[pos++] = 6 << 3;
    out.set(lease, pos);
    pos += lease.length;
  }
  return pos;
}

/**
 * etcdserverpb.RangeResponse bytes, hand-encoded in two passes (lengths, then one buffer filled in place): through
 * protobufjs (fromObject, then encode) a range of 10,000 keys cost about five times etcd's time per request and a long
 * event-loop stall (`deno task bench -- --scale`, scan), and a message object per key-value still cost 4-9 ms per
 * 1,000 keys.
 */
export function encodeRangeResponse(res: RangeResponse): Uint8Array {
  const h: Partial<ResponseHeader> = res.header;
  const head = new Msg();
  if (h.cluster_id && h.cluster_id !== "0") head.rawVarint(1, varint64(h.cluster_id));
  if (h.member_id && h.member_id !== "0") head.rawVarint(2, varint64(h.member_id));
  const header = head.int(3, h.revision ?? 0).int(4, Number(h.raft_term ?? 0)).done();
  const kvs = res.kvs, n = kvs.length;
  const lens = new Int32Array(n);
  // lease IDs as varints: consecutive keys mostly share one (or none), so the last one is kept
  const leases: (Uint8Array | null)[] = new Array(n);
  let lastLease = "0", lastLeaseBytes: Uint8Array | null = null;
  let total = 1 + varintLen(header.length) + header.length;
  for (let i = 0; i < n; i++) {
    const kv = kvs[i];
    if (kv.lease !== lastLease) {
      lastLease = kv.lease;
      lastLeaseBytes = kv.lease === "0" ? null : varint64(kv.lease);
    }
    leases[i] = lastLeaseBytes;
    const len = kvLength(kv, lastLeaseBytes);
    lens[i] = len;
    total += 1 + varintLen(len) + len;
  }
  if (res.more) total += 2;
  if (res.count !== 0) total += 1 + varintLen(res.count);
  const out = new Uint8Array(total);
  out[0] = (1 << 3) | 2;
  let pos = putVarint(out, 1, header.length);
  out.set(header, pos);
  pos += header.length;
  for (let i = 0; i < n; i++) {
    out[pos++] = (2 << 3) | 2;
    pos = putVarint(out, pos, lens[i]);
    pos = writeKv(out, pos, kvs[i], leases[i]);
  }
  if (res.more) {
    out[pos++] = 3 << 3;
    out[pos++] = 1;
  }
  if (res.count !== 0) {
    out[pos++] = 4 << 3;
    pos = putVarint(out, pos, res.count);
  }
  if (pos !== total) throw new Error(`encodeRangeResponse: wrote ${pos} of ${total} bytes`);
  return out;
}
