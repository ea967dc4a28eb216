/**
 * Serializes the whole applied state (MVCC versions and history, leases, alarms, applied index) into one byte blob:
 * the payload of store snapshots on disk and of Maintenance.Snapshot.
 */
import { Buffer } from "node:buffer";
import type { Alarm } from "./applier.ts";
import type { Lessor } from "../lease/lessor.ts";
import { toBKey } from "../mvcc/keys.ts";
import { isTombstone, type KeyValue, type MvccStore } from "../mvcc/store.ts";

const MAGIC = 0x45475331; // "EGS1"

/** What a state blob holds besides the store contents. */
export interface StateMeta {
  appliedIndex: number;
  term: number;
}

class Writer {
  buf = Buffer.allocUnsafe(1 << 16);
  pos = 0;
  #room(n: number) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const b = Buffer.allocUnsafe(size);
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }
  u8(v: number) {
    this.#room(1);
    this.buf[this.pos++] = v;
  }
  u32(v: number) {
    this.#room(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }
  f64(v: number) {
    this.#room(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }
  bytes(b: Uint8Array) {
    this.u32(b.length);
    this.#room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  str(s: string) {
    this.bytes(Buffer.from(s, "utf8"));
  }
  done(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  #need(n: number) {
    if (this.pos + n > this.buf.length) throw new Error(`state snapshot truncated at offset ${this.pos}`);
  }
  u8(): number {
    this.#need(1);
    return this.buf[this.pos++];
  }
  u32(): number {
    this.#need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  f64(): number {
    this.#need(8);
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(): Buffer {
    const n = this.u32();
    this.#need(n);
    // copy so the record does not pin the whole snapshot buffer
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return b;
  }
  str(): string {
    return this.bytes().toString("utf8");
  }
}

/** Encodes the state machine. */
export function encodeState(meta: StateMeta, store: MvccStore, lessor: Lessor, alarms: Alarm[]): Uint8Array {
  const w = new Writer();
  w.u32(MAGIC);
  w.f64(meta.appliedIndex);
  w.f64(meta.term);
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
export function decodeState(data: Uint8Array, store: MvccStore, lessor: Lessor, alarms: Alarm[]): StateMeta {
  const r = new Reader(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  if (r.u32() !== MAGIC) throw new Error("state snapshot: bad magic");
  const meta = { appliedIndex: r.f64(), term: r.f64() };
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
