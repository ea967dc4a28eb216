/**
 * Serializes the whole applied state (MVCC versions and history, leases, alarms, applied index) into one byte blob:
 * the payload of store snapshots on disk and of Maintenance.Snapshot.
 */
import { BinaryReader, BinaryWriter } from "../util/binary.ts";
import type { Members } from "../membership/members.ts";
import type { ConfState } from "../raft/types.ts";
import type { Alarm } from "./applier.ts";
import type { Lessor } from "../lease/lessor.ts";
import { toBKey } from "../mvcc/keys.ts";
import { isTombstone, type KeyValue, type MvccStore } from "../mvcc/store.ts";

const MAGIC = 0x45475332; // "EGS2"

/** What a state blob holds besides the store contents. */
export interface StateMeta {
  appliedIndex: number;
  term: number;
  /** Raft membership at appliedIndex */
  confState: ConfState;
}

/** Encodes the state machine. */
export function encodeState(
  meta: StateMeta,
  store: MvccStore,
  lessor: Lessor,
  alarms: Alarm[],
  members: Members,
): Uint8Array {
  const w = new BinaryWriter(1 << 16);
  w.u32(MAGIC);
  w.f64(meta.appliedIndex);
  w.f64(meta.term);
  w.str(JSON.stringify(meta.confState));
  w.str(JSON.stringify(members.toJSON()));
  w.f64(store.currentRev);
  w.f64(store.compactRev);
  w.u32(lessor.leases.size);
  for (const l of lessor.leases.values()) {
    w.str(l.id);
    w.f64(l.ttl);
  }
  w.u32(alarms.length);
  for (const a of alarms) {
    w.str(a.memberID);
    w.u32(a.alarm);
  }
  for (const kv of store.dump()) {
    w.u8(1);
    w.bytes(kv.key);
    w.f64(kv.create_revision);
    w.f64(kv.mod_revision);
    w.f64(kv.version);
    w.str(kv.lease);
    w.bytes(kv.value);
  }
  w.u8(0);
  return w.done();
}

/** Decodes a state blob into the given (emptied) store, lessor and alarm list; returns its meta. */
export function decodeState(
  data: Uint8Array,
  store: MvccStore,
  lessor: Lessor,
  alarms: Alarm[],
  members: Members,
): StateMeta {
  const r = new BinaryReader(data, "state snapshot");
  if (r.u32() !== MAGIC) throw new Error("state snapshot: bad magic");
  const meta: StateMeta = { appliedIndex: r.f64(), term: r.f64(), confState: JSON.parse(r.str()) };
  members.restore(JSON.parse(r.str()));
  const currentRev = r.f64();
  const compactRev = r.f64();
  lessor.clear();
  const nLeases = r.u32();
  for (let i = 0; i < nLeases; i++) {
    const id = r.str();
    const ttl = r.f64();
    lessor.leases.set(id, { id, ttl, expiry: 0, keys: new Set() });
  }
  lessor.extendAll();
  alarms.length = 0;
  const nAlarms = r.u32();
  for (let i = 0; i < nAlarms; i++) alarms.push({ memberID: r.str(), alarm: r.u32() });
  const records: KeyValue[] = [];
  while (r.u8() === 1) {
    records.push({
      key: r.bytes(),
      create_revision: r.f64(),
      mod_revision: r.f64(),
      version: r.f64(),
      lease: r.str(),
      value: r.bytes(),
    });
  }
  store.restore(currentRev, compactRev, records);
  // leases know their keys from the live records
  const live = new Map<string, KeyValue>();
  for (const kv of records) live.set(toBKey(kv.key), kv);
  for (const [k, kv] of live) if (!isTombstone(kv)) lessor.attach(kv.lease, k);
  return meta;
}
