/**
 * Hand-written protobuf encoding of the watch hot path: a WatchResponse carrying events. One event is delivered to
 * many watchers, so its mvccpb.Event bytes are encoded once (cached on the event) and each watcher's response is a
 * concatenation of a header, its watch ID and those bytes. Field numbers are etcd's (proto/etcdserverpb/rpc.proto,
 * proto/mvccpb/kv.proto); tests/watch_encode_test.ts checks the output against protobufjs.
 */
import type { RecordFields, StoreEvent } from "../mvcc/store.ts";
import type { KeyValue, RangeResponse, ResponseHeader } from "../../proto/mod.ts";

/** Length of the varint encoding of a non-negative integer below 2^53. */
export function varintLen(n: number): number {
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

/** A varint field with a one-byte tag (field < 16); nothing when 0 (proto3). */
function putIntField(buf: Uint8Array, pos: number, field: number, n: number): number {
  if (n === 0) return pos;
  buf[pos] = field << 3;
  return putVarint(buf, pos + 1, n);
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

/** mvccpb.Event bytes of a store event. */
export function encodeEvent(ev: StoreEvent, prevKv: boolean): Uint8Array {
  const m = new Msg().int(1, ev.type).bytes(2, encodeKv(ev.kv), true);
  if (prevKv && ev.prev !== null) m.bytes(3, encodeKv(ev.prev), true);
  return m.done();
}

/**
 * The `events` field (11) of a WatchResponse carrying a store event, encoded once per event and flavour (without,
 * with its previous key-value) and kept on the event: every watcher that gets it shares the bytes.
 */
export function eventField(ev: StoreEvent, prevKv: boolean): Uint8Array {
  if (prevKv && ev.prev !== null) return ev.fieldPrev ??= new Msg().bytes(11, encodeEvent(ev, true), true).done();
  return ev.field ??= new Msg().bytes(11, encodeEvent(ev, false), true).done();
}

/** The `events` fields of a WatchResponse from `eventField`s, in order (one alone is its own bytes). */
export function joinFields(fields: readonly Uint8Array[]): Uint8Array {
  if (fields.length === 1) return fields[0];
  let n = 0;
  for (const f of fields) n += f.length;
  const out = new Uint8Array(n);
  n = 0;
  for (const f of fields) {
    out.set(f, n);
    n += f.length;
  }
  return out;
}

/** The 5-byte gRPC message prefix (not compressed, `len` bytes) at the start of `out`. */
function putGrpcPrefix(out: Uint8Array, len: number): void {
  out[0] = 0;
  out[1] = len >>> 24;
  out[2] = (len >>> 16) & 0xff;
  out[3] = (len >>> 8) & 0xff;
  out[4] = len & 0xff;
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

/** The `events` fields (11) of a WatchResponse carrying these encoded mvccpb.Events, in order. */
export function eventFields(events: readonly Uint8Array[]): Uint8Array {
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
  putGrpcPrefix(out, msgLen);
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

/** What a WatchResponse without events says: created, canceled (with its reason and compaction) or progress. */
export interface WatchNotice {
  watchId: number;
  created?: boolean;
  canceled?: boolean;
  compactRevision?: number;
  cancelReason?: string;
}

const utf8 = new TextEncoder();

/**
 * A whole gRPC message (the 5-byte prefix, then an etcdserverpb.WatchResponse) without events: a creation, a
 * cancelation or a progress notification, encoded straight from its fields (no protobufjs message object).
 */
export function watchNoticeFrame(header: Uint8Array, n: WatchNotice): Uint8Array {
  const m = new Msg().bytes(1, header, true);
  if (n.watchId < 0) m.rawVarint(2, varint64(`${n.watchId}`));
  else m.int(2, n.watchId);
  m.int(3, n.created ? 1 : 0).int(4, n.canceled ? 1 : 0).int(5, n.compactRevision ?? 0);
  if (n.cancelReason) m.bytes(6, utf8.encode(n.cancelReason));
  const body = m.done();
  const out = new Uint8Array(5 + body.length);
  putGrpcPrefix(out, body.length);
  out.set(body, 5);
  return out;
}

/** etcdserverpb.ResponseHeader bytes of a header object. */
function encodeHeader(h: Partial<ResponseHeader>): Uint8Array {
  const head = new Msg();
  if (h.cluster_id && h.cluster_id !== "0") head.rawVarint(1, varint64(h.cluster_id));
  if (h.member_id && h.member_id !== "0") head.rawVarint(2, varint64(h.member_id));
  return head.int(3, h.revision ?? 0).int(4, Number(h.raft_term ?? 0)).done();
}

/**
 * etcdserverpb.RangeResponse bytes of a response whose records are objects (a sorted or filtered read): through
 * RangeResponseBuilder, one buffer filled in place. Through protobufjs (fromObject, then encode) a range of 10,000 keys
 * cost about five times etcd's time per request, and a message object per key-value 43.6 ms per 10,000 keys of 256 B
 * against 4.3 ms now.
 */
export function encodeRangeResponse(res: RangeResponse): Uint8Array {
  const b = new RangeResponseBuilder(false);
  for (const kv of res.kvs) {
    b.add({
      key: kv.key,
      create: kv.create_revision,
      mod: kv.mod_revision,
      version: kv.version,
      lease: kv.lease,
      value: kv.value,
    });
  }
  return b.done(res.header, res.more, res.count);
}

/** Unused room a built range response may keep in its buffer before it is copied out to its exact size. */
const MAX_SLACK_BYTES = 64 << 10;

/**
 * Build buffers from this size on are kept for the next responses: glibc maps every allocation of 128 KiB or more
 * on its own (server/util/malloc.ts), and fresh mapped memory costs a page fault per 4 KiB page when first written
 * (15-30 us each on a shared VM: with the transport's copies, 3,100 faults for a range of 10,000 keys of 256 B).
 * Smaller buffers come from malloc's arena, whose pages stay mapped.
 */
const POOL_MIN_BYTES = 128 << 10;
/**
 * Grown build buffers kept at once: as many as large ranges in flight at once (built, or lent until sent), as with
 * the scan row's 4 clients. With 2, a third of those ranges grew a fresh buffer: 130 faults a range against 11.
 */
export const POOL_BUFFERS = 4;
/** Bytes of kept build buffers in all (4 of 4 MiB, a range of 10,000 keys of 256 B); a larger one is not kept. */
export const POOL_MAX_BYTES = 16 << 20;
/** Grown build buffers that no builder holds (fewest bytes first), reused instead of freshly mapped memory. */
const buildPool: Uint8Array[] = [];

/**
 * The largest kept build buffer if it has at least `n` bytes, taken out of the pool; null otherwise. The largest: a
 * response that outgrew the arena's sizes is likely to grow on (a copy into a still larger buffer costs more).
 */
function takeBuildBuffer(n: number): Uint8Array | null {
  return buildPool.length > 0 && buildPool[buildPool.length - 1].length >= n ? buildPool.pop()! : null;
}

/** Gives a build buffer whose contents are no longer referenced back for reuse, within the pool's limits. */
function keepBuildBuffer(b: Uint8Array): void {
  if (b.length < POOL_MIN_BYTES || b.length > POOL_MAX_BYTES) return;
  buildPool.push(b);
  buildPool.sort((x, y) => x.length - y.length);
  // drop the smallest: a big buffer serves a small response too, not the other way round
  let total = 0;
  for (const x of buildPool) total += x.length;
  while (buildPool.length > POOL_BUFFERS || total > POOL_MAX_BYTES) total -= buildPool.shift()!.length;
}

/** @internal For tests: the kept build buffers' sizes. */
export function buildPoolSizes(): number[] {
  return buildPool.map((b) => b.length);
}

/**
 * etcdserverpb.RangeResponse bytes built straight from store records, one `add` at a time (no KeyValue objects, no
 * buffer per key): the bytes `encodeRangeResponse` gives for the same records. For the reads of many keys that are
 * encoded in slices. A grown buffer is reused by later builders (see POOL_MIN_BYTES): `done` then copies the
 * response out, `lend` leaves it there until its release.
 */
export class RangeResponseBuilder {
  /** the records start at HEAD_ROOM: the header field goes in front of them without a copy of the whole */
  #buf: Uint8Array = new Uint8Array(4096);
  #len = HEAD_ROOM;
  #leases = new Map<string, Uint8Array>();

  /** @param keysOnly leave every value out (RangeRequest.keys_only) */
  constructor(readonly keysOnly: boolean) {}

  /** Makes room for `n` more bytes, and always for the tail (`more`, `count`), so that `done` never grows the buffer. */
  #room(n: number): void {
    const need = this.#len + n + TAIL_ROOM;
    if (need <= this.#buf.length) return;
    const size = Math.max(this.#buf.length * 2, need);
    const b = (size >= POOL_MIN_BYTES ? takeBuildBuffer(need) : null) ?? new Uint8Array(size);
    b.set(this.#buf.subarray(0, this.#len));
    // a kept buffer outgrown by this response goes back for another builder
    if (this.#buf.length >= POOL_MIN_BYTES) keepBuildBuffer(this.#buf);
    this.#buf = b;
  }

  /** Appends one record as a `kvs` field. */
  add(r: RecordFields): void {
    const key = r.key, value = this.keysOnly ? EMPTY_BYTES : r.value;
    let lease: Uint8Array | undefined;
    if (r.lease !== "0") {
      lease = this.#leases.get(r.lease);
      if (!lease) this.#leases.set(r.lease, lease = varint64(r.lease));
    }
    let size = 0;
    if (key.length > 0) size += 1 + varintLen(key.length) + key.length;
    if (r.create !== 0) size += 1 + varintLen(r.create);
    if (r.mod !== 0) size += 1 + varintLen(r.mod);
    if (r.version !== 0) size += 1 + varintLen(r.version);
    if (value.length > 0) size += 1 + varintLen(value.length) + value.length;
    if (lease) size += 1 + lease.length;
    this.#room(1 + varintLen(size) + size);
    const b = this.#buf;
    let p = this.#len;
    b[p++] = (2 << 3) | 2;
    p = putVarint(b, p, size);
    if (key.length > 0) {
      b[p++] = (1 << 3) | 2;
      p = putVarint(b, p, key.length);
      b.set(key, p);
      p += key.length;
    }
    p = putIntField(b, p, 2, r.create);
    p = putIntField(b, p, 3, r.mod);
    p = putIntField(b, p, 4, r.version);
    if (value.length > 0) {
      b[p++] = (5 << 3) | 2;
      p = putVarint(b, p, value.length);
      b.set(value, p);
      p += value.length;
    }
    if (lease) {
      b[p++] = 6 << 3;
      b.set(lease, p);
      p += lease.length;
    }
    this.#len = p;
  }

  /** The whole response: the header, the records added so far, `more` and `count`. */
  done(header: Partial<ResponseHeader>, more: boolean, count: number): Uint8Array {
    const { bytes, release } = this.#finish(header, more, count, false);
    if (!release) return bytes;
    // copied out to its exact size, and the buffer goes back at once
    const copy = bytes.slice();
    release();
    return copy;
  }

  /**
   * `done`, with the response left in a kept buffer when it grew into one (see POOL_MIN_BYTES), which is then lent:
   * `release` gives it back for reuse and must be called only once nothing reads `bytes` any more (or never: the
   * garbage collector then takes it). A copy out to a fresh buffer costs a page fault per 4 KiB, as much as the
   * encoding. `release` is null when `bytes` are the caller's to keep.
   */
  lend(
    header: Partial<ResponseHeader>,
    more: boolean,
    count: number,
  ): { bytes: Uint8Array; release: (() => void) | null } {
    return this.#finish(header, more, count, true);
  }

  #finish(
    header: Partial<ResponseHeader>,
    more: boolean,
    count: number,
    lend: boolean,
  ): { bytes: Uint8Array; release: (() => void) | null } {
    const head = new Msg().bytes(1, encodeHeader(header), true).done();
    const tail = new Msg().int(3, more ? 1 : 0).int(4, count).done();
    if (head.length > HEAD_ROOM) throw new Error(`range response: a header of ${head.length} bytes`);
    const start = HEAD_ROOM - head.length;
    this.#buf.set(head, start);
    this.#buf.set(tail, this.#len);
    const buf = this.#buf;
    const out = buf.subarray(start, this.#len + tail.length);
    if (buf.length >= POOL_MIN_BYTES) {
      this.#buf = EMPTY_BYTES;
      this.#len = HEAD_ROOM;
      if (!lend) return { bytes: out, release: () => keepBuildBuffer(buf) };
      if (lentBuffers < MAX_LENT_BUFFERS && buf.length <= POOL_MAX_BYTES) return { bytes: out, release: lent(buf) };
      // too many out on loan already (or a buffer too large to keep): a copy, and the buffer goes back
      const copy = out.slice();
      keepBuildBuffer(buf);
      return { bytes: copy, release: null };
    }
    // a response much smaller than its buffer is copied out, so that what a queue holds is what it counts (the
    // transport caps queued bytes by length; a view would keep up to twice that alive)
    return {
      bytes: buf.length - out.length > Math.max(MAX_SLACK_BYTES, out.length >> 3) ? out.slice() : out,
      release: null,
    };
  }
}

/**
 * Build buffers lent at once (only those of a size the pool keeps). A lent buffer holds up to twice its response's
 * bytes (buffers grow by doubling) while the transport's queue limits count the response once: this bounds what
 * peers that do not read can make the member hold beyond those limits (8 x 8 MiB, against grpc_server.ts's
 * MAX_QUEUED_BYTES_TOTAL of 256 MiB).
 */
const MAX_LENT_BUFFERS = 8;
let lentBuffers = 0;
/** A lent buffer collected without its release (its response was dropped unsent) is no longer counted. */
const unreturned = new FinalizationRegistry<null>(() => lentBuffers--);

/** Lends `buf`: its release, which gives it back to the pool once. */
function lent(buf: Uint8Array): () => void {
  lentBuffers++;
  const token = {};
  unreturned.register(buf.buffer, null, token);
  let returned = false;
  return () => {
    if (returned) return;
    returned = true;
    lentBuffers--;
    unreturned.unregister(token);
    keepBuildBuffer(buf);
  };
}

/** @internal For tests: kept build buffers out on loan. */
export function lentBuildBuffers(): number {
  return lentBuffers;
}

/** Room for the header field before a range response's records: 2 + 4 varints of at most 10 bytes, and their tags. */
const HEAD_ROOM = 48;
/** Room for the fields after the records: `more` (2 bytes) and `count` (a tag and a varint of at most 10 bytes). */
const TAIL_ROOM = 13;

const EMPTY_BYTES = new Uint8Array(0);
