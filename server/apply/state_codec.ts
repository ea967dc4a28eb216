/**
 * Serializes the whole applied state (MVCC versions and history, leases, alarms, applied index) into one byte blob:
 * the payload of store snapshots on disk and of Maintenance.Snapshot.
 *
 * Layout (little endian; str = u32 length + UTF-8, bytes = u32 length + bytes): u32 magic, f64 appliedIndex, f64 term,
 * str confState JSON, str members JSON, f64 currentRev, f64 compactRev, u32 #leases {str id, f64 ttl}, u32 #alarms
 * {str memberID, u32 alarm}, then per record u8 1, bytes key, f64 create, f64 mod, f64 version, str lease, bytes
 * value; u8 0 ends the records; then str auth state JSON (users with password hashes, roles, enabled, auth revision;
 * absent in blobs written before auth existed).
 *
 * The blob is sized exactly in a first pass and written in a second (no growing buffer, nothing to trim). Values are
 * never held twice: encoding moves the store's values into the blob (the store then references them there, and the
 * Raft log arena chunks they came from are freed once the log is compacted), and decoding references them in place.
 * The blob must therefore not be modified (the Raft log keeps it as its snapshot, which reads it only).
 */
import type { Members } from "../membership/members.ts";
import type { ConfState } from "../raft/types.ts";
import type { Alarm } from "./applier.ts";
import type { Lessor } from "../lease/lessor.ts";
import { toBKey } from "../mvcc/keys.ts";
import type { MvccStore } from "../mvcc/store.ts";
import type { AuthStore } from "../auth/store.ts";

const MAGIC = 0x45475332; // "EGS2"

/** What a state blob holds besides the store contents. */
export interface StateMeta {
  appliedIndex: number;
  term: number;
  /** Raft membership at appliedIndex */
  confState: ConfState;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Encodes the state machine. */
export function encodeState(
  meta: StateMeta,
  store: MvccStore,
  lessor: Lessor,
  alarms: Alarm[],
  members: Members,
  auth?: AuthStore,
): Uint8Array {
  const authJson = utf8.encode(JSON.stringify(auth?.toJSON() ?? null));
  const conf = utf8.encode(JSON.stringify(meta.confState));
  const mem = utf8.encode(JSON.stringify(members.toJSON()));
  const leases = [...lessor.leases.values()].map((l) => ({ id: utf8.encode(l.id), ttl: l.ttl }));
  const alarmList = alarms.map((a) => ({ member: utf8.encode(a.memberID), alarm: a.alarm }));
  let size = 4 + 8 + 8 + 4 + conf.length + 4 + mem.length + 8 + 8 + 4 + 4 + 1 + 4 + authJson.length;
  for (const l of leases) size += 4 + l.id.length + 8;
  for (const a of alarmList) size += 4 + a.member.length + 4;
  for (const idx of store.dumpRecords()) {
    const r = store.record(idx);
    // lease IDs are decimal ASCII: one byte per char
    size += 1 + 4 + r.key.length + 24 + 4 + r.lease.length + 4 + r.value.length;
  }

  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  let pos = 0;
  const u8 = (x: number) => {
    out[pos++] = x;
  };
  const u32 = (x: number) => {
    v.setUint32(pos, x, true);
    pos += 4;
  };
  const f64 = (x: number) => {
    v.setFloat64(pos, x, true);
    pos += 8;
  };
  const bytes = (b: Uint8Array) => {
    u32(b.length);
    out.set(b, pos);
    pos += b.length;
  };
  /** a string of chars < 256 (a store key, or ASCII) as its bytes */
  const latin1 = (s: string) => {
    u32(s.length);
    for (let i = 0; i < s.length; i++) out[pos + i] = s.charCodeAt(i);
    pos += s.length;
  };
  u32(MAGIC);
  f64(meta.appliedIndex);
  f64(meta.term);
  bytes(conf);
  bytes(mem);
  f64(store.currentRev);
  f64(store.compactRev);
  u32(leases.length);
  for (const l of leases) {
    bytes(l.id);
    f64(l.ttl);
  }
  u32(alarmList.length);
  for (const a of alarmList) {
    bytes(a.member);
    u32(a.alarm);
  }
  for (const idx of store.dumpRecords()) {
    const r = store.record(idx);
    u8(1);
    latin1(r.key);
    f64(r.create);
    f64(r.mod);
    f64(r.version);
    latin1(r.lease);
    u32(r.value.length);
    out.set(r.value, pos);
    store._moveValue(idx, out.buffer, pos);
    pos += r.value.length;
  }
  u8(0);
  bytes(authJson);
  if (pos !== size) throw new Error(`state snapshot: encoded ${pos} bytes, expected ${size}`);
  store._moveDone(out.buffer);
  return out;
}

/** Decodes a state blob into the given (emptied) store, lessor and alarm list; returns its meta. */
export function decodeState(
  data: Uint8Array,
  store: MvccStore,
  lessor: Lessor,
  alarms: Alarm[],
  members: Members,
  auth?: AuthStore,
): StateMeta {
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  const need = (n: number) => {
    if (pos + n > data.length) throw new Error(`state snapshot: truncated at offset ${pos}`);
  };
  const u8 = () => {
    need(1);
    return data[pos++];
  };
  const u32 = () => {
    need(4);
    const x = v.getUint32(pos, true);
    pos += 4;
    return x;
  };
  const f64 = () => {
    need(8);
    const x = v.getFloat64(pos, true);
    pos += 8;
    return x;
  };
  /** the next byte string as a view into `data` */
  const view = () => {
    const n = u32();
    need(n);
    pos += n;
    return data.subarray(pos - n, pos);
  };
  const str = () => utf8Decoder.decode(view());

  if (u32() !== MAGIC) throw new Error("state snapshot: bad magic");
  const meta: StateMeta = { appliedIndex: f64(), term: f64(), confState: JSON.parse(str()) };
  members.restore(JSON.parse(str()));
  const currentRev = f64();
  const compactRev = f64();
  lessor.clear();
  const nLeases = u32();
  for (let i = 0; i < nLeases; i++) {
    const id = str();
    const ttl = f64();
    lessor.restore(id, ttl);
  }
  alarms.length = 0;
  const nAlarms = u32();
  for (let i = 0; i < nAlarms; i++) alarms.push({ memberID: str(), alarm: u32() });
  store._restoreBegin(currentRev, compactRev);
  while (u8() === 1) {
    const key = toBKey(view());
    const create = f64();
    const mod = f64();
    const version = f64();
    const lb = view();
    const lease = lb.length === 1 && lb[0] === 0x30 ? "0" : toBKey(lb);
    const n = u32();
    need(n);
    store._restoreAdd(key, create, mod, version, lease, data.buffer, data.byteOffset + pos, n);
    pos += n;
  }
  if (auth) auth.restore(pos < data.length ? JSON.parse(str()) : null);
  // leases know their keys from the live records
  for (const [k, lease] of store.leasedKeys()) lessor.attach(lease, k);
  return meta;
}
