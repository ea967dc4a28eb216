/**
 * Lays our applied state out as etcd 3.4's backend database (a bbolt file), the format Maintenance.Snapshot streams
 * and `etcdctl snapshot status|restore` read. A snapshot taken from this server can therefore be restored into a
 * real etcd data directory: a migration path to etcd.
 *
 * Buckets, as etcd 3.4 creates them:
 *   key              17-byte revision (8-byte big-endian main, '_', 8-byte big-endian sub; a tombstone has a
 *                    trailing 't') -> mvccpb.KeyValue; every version held, including the history since compaction
 *   meta             consistent_index -> 8-byte BE applied index; scheduledCompactRev / finishedCompactRev -> the
 *                    compaction revision as 17 revision bytes, when a compaction happened
 *   lease            8-byte BE lease ID -> leasepb.Lease {ID, TTL}
 *   members          hex member ID -> member JSON (optional: `snapshot restore` rewrites membership from its flags)
 *   members_removed  empty
 *   cluster          clusterVersion -> "3.4.0"
 *   alarm            etcdserverpb.AlarmMember -> empty value
 *   auth             authEnabled -> 1 (only while auth is enabled); authRevision -> 8-byte BE auth revision
 *   authUsers        user name -> authpb.User (bcrypt hash, roles, no-password option)
 *   authRoles        role name -> authpb.Role (key permissions)
 *
 * Protobuf messages are encoded by hand the way Go's gogo-protobuf does (zero fields omitted, fields in number order),
 * so the bytes match what etcd itself writes for the same data.
 */
import { type BoltBucket, writeBbolt } from "./bbolt_writer.ts";
import { Buffer } from "node:buffer";
import { pbRoot } from "../../proto/mod.ts";
import type { AuthState } from "../auth/store.ts";

/** One stored version of a key (mvccpb.KeyValue; a tombstone has create_revision 0, like MvccStore's records). */
export interface SnapshotRecord {
  key: Uint8Array;
  create_revision: number;
  mod_revision: number;
  version: number;
  value: Uint8Array;
  /** lease ID (decimal string as our store keeps it, or a number/bigint); 0 / "0" for none */
  lease: string | number | bigint;
}

/** A granted lease. */
export interface SnapshotLease {
  id: string | number | bigint;
  /** TTL in seconds as granted */
  ttl: number;
}

/** A cluster member, as Cluster.MemberList reports it. */
export interface SnapshotMember {
  /** decimal uint64 */
  ID: string;
  name: string;
  peerURLs: string[];
  clientURLs: string[];
  isLearner?: boolean;
}

/** An active alarm. */
export interface SnapshotAlarm {
  /** decimal uint64 */
  memberID: string;
  /** etcdserverpb.AlarmType: 1 NOSPACE, 2 CORRUPT */
  alarm: number;
}

/** Everything an etcd backend snapshot is built from; plain data. */
export interface EtcdSnapshotInput {
  /**
   * Every version held, each key's versions in revision order, and records of one revision in the order they were
   * made (as MvccStore.dump() yields them). Sub-revisions are numbered in this order within each revision.
   */
  records: Iterable<SnapshotRecord>;
  leases: Iterable<SnapshotLease>;
  /** raft index of the last applied entry (meta/consistent_index) */
  appliedIndex: number;
  /** revision of the last compaction; <= 0 when the store was never compacted */
  compactRev: number;
  /** raft term; etcd 3.4 keeps no term in its backend (3.5 adds meta/term), so it is not written */
  term?: number;
  /** members to list in the "members" bucket; none by default (restore builds membership from its flags) */
  members?: Iterable<SnapshotMember>;
  alarms?: Iterable<SnapshotAlarm>;
  /** cluster bucket's clusterVersion; default "3.4.0" */
  clusterVersion?: string;
  /** users, roles, enabled flag and auth revision; auth disabled at revision 1 when absent */
  auth?: AuthState;
}

const enc = new TextEncoder();

/**
 * Hands out small byte arrays as views into shared 1 MiB chunks: one typed array with its own backing store per
 * record costs several times more than a view, and snapshots hold one or two per stored version.
 */
class Arena {
  static readonly CHUNK = 1 << 20;
  #chunk = new Uint8Array(0);
  #pos = 0;

  alloc(n: number): Uint8Array {
    if (n > Arena.CHUNK / 4) return new Uint8Array(n);
    if (this.#pos + n > this.#chunk.length) {
      this.#chunk = new Uint8Array(Arena.CHUNK);
      this.#pos = 0;
    }
    const out = this.#chunk.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }
}

/** Encoding space shared by all messages (one message is encoded at a time, then copied out). */
let scratch = new Uint8Array(1 << 16);

/** Minimal protobuf writer (varint and length-delimited fields only) over the shared scratch buffer. */
class Pb {
  #pos = 0;

  #room(n: number): void {
    if (this.#pos + n <= scratch.length) return;
    let size = scratch.length * 2;
    while (size < this.#pos + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(scratch.subarray(0, this.#pos));
    scratch = b;
  }

  #varint(v: number): void {
    this.#room(10);
    const buf = scratch;
    while (v >= 0x80) {
      buf[this.#pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    buf[this.#pos++] = v;
  }

  #varint64(v: bigint): void {
    let u = BigInt.asUintN(64, v);
    this.#room(10);
    while (u >= 0x80n) {
      scratch[this.#pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    scratch[this.#pos++] = Number(u);
  }

  /** int64/uint64/enum field given as a non-negative safe integer; omitted when 0. */
  uint(field: number, v: number): this {
    if (v !== 0) {
      if (!Number.isSafeInteger(v) || v < 0) return this.int64(field, BigInt(v));
      this.#varint(field << 3);
      this.#varint(v);
    }
    return this;
  }

  /** int64/uint64 field (decimal string, number or bigint; two's complement for negatives); omitted when 0. */
  int64(field: number, v: string | number | bigint | undefined | null): this {
    if (v === undefined || v === null || v === "" || v === "0" || v === 0 || v === 0n) return this;
    if (typeof v === "number" && Number.isSafeInteger(v) && v > 0) return this.uint(field, v);
    this.#varint(field << 3);
    this.#varint64(BigInt(v));
    return this;
  }

  /** bytes field; omitted when empty. */
  bytes(field: number, b: Uint8Array): this {
    if (b.length > 0) {
      this.#varint((field << 3) | 2);
      this.#varint(b.length);
      this.#room(b.length);
      scratch.set(b, this.#pos);
      this.#pos += b.length;
    }
    return this;
  }

  /** A copy of the encoded message (the scratch buffer is reused by the next message), in `arena` if given. */
  finish(arena?: Arena): Uint8Array {
    if (!arena) return scratch.slice(0, this.#pos);
    const out = arena.alloc(this.#pos);
    out.set(scratch.subarray(0, this.#pos));
    return out;
  }
}

function toBigInt(x: string | number | bigint | undefined | null): bigint {
  if (x === undefined || x === null || x === "") return 0n;
  return BigInt(x);
}

/** 8-byte big-endian encoding of an unsigned (or two's complement) 64-bit integer. */
export function u64be(v: number | bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)));
  return out;
}

/** Big-endian uint64 of a non-negative safe integer. */
function putU64(out: Uint8Array, off: number, v: number): void {
  let hi = Math.floor(v / 0x100000000);
  let lo = v >>> 0;
  for (let i = 7; i >= 4; i--) {
    out[off + i] = lo & 0xff;
    lo >>>= 8;
  }
  for (let i = 3; i >= 0; i--) {
    out[off + i] = hi & 0xff;
    hi >>>= 8;
  }
}

/** etcd's revision key: main and sub as 8-byte big-endian separated by '_', plus 't' for a tombstone. */
export function revisionKey(main: number, sub: number, tombstone = false, arena?: Arena): Uint8Array {
  const out = arena ? arena.alloc(tombstone ? 18 : 17) : new Uint8Array(tombstone ? 18 : 17);
  putU64(out, 0, main);
  out[8] = 0x5f; // '_'
  putU64(out, 9, sub);
  if (tombstone) out[17] = 0x74; // 't'
  return out;
}

/** mvccpb.KeyValue bytes of a record; a tombstone is stored as its key only, as etcd does. */
export function encodeKeyValue(kv: SnapshotRecord, arena?: Arena): Uint8Array {
  const pb = new Pb().bytes(1, kv.key);
  if (kv.create_revision === 0) return pb.finish(arena);
  return pb.uint(2, kv.create_revision)
    .uint(3, kv.mod_revision)
    .uint(4, kv.version)
    .bytes(5, kv.value)
    .int64(6, kv.lease)
    .finish(arena);
}

/** leasepb.Lease {ID = 1, TTL = 2} bytes. */
export function encodeLease(l: SnapshotLease): Uint8Array {
  return new Pb().int64(1, l.id).uint(2, l.ttl).finish();
}

/** A member as etcd's membership store marshals it to JSON (Go field order and omitempty rules). */
function memberJson(m: SnapshotMember): string {
  let s = `{"id":${BigInt.asUintN(64, BigInt(m.ID))},"peerURLs":${JSON.stringify(m.peerURLs ?? null)}`;
  if (m.isLearner) s += `,"isLearner":true`;
  if (m.name) s += `,"name":${JSON.stringify(m.name)}`;
  if (m.clientURLs && m.clientURLs.length > 0) s += `,"clientURLs":${JSON.stringify(m.clientURLs)}`;
  return s + "}";
}

/** The "key" bucket's entries in revision order: revision key -> KeyValue, subs numbered per revision in input order. */
function keyEntries(records: Iterable<SnapshotRecord>): Array<[Uint8Array, Uint8Array]> {
  const subs = new Map<number, number>();
  const revs: Array<{ main: number; sub: number; kv: SnapshotRecord }> = [];
  for (const kv of records) {
    const main = kv.mod_revision;
    const sub = subs.get(main) ?? 0;
    subs.set(main, sub + 1);
    revs.push({ main, sub, kv });
  }
  // numeric order is the byte order of the revision keys; the writer then finds them already sorted
  revs.sort((a, b) => a.main - b.main || a.sub - b.sub);
  const arena = new Arena();
  return revs.map((r) => [revisionKey(r.main, r.sub, r.kv.create_revision === 0, arena), encodeKeyValue(r.kv, arena)]);
}

/** Builds the etcd 3.4 backend bbolt file for the given state. The result is a whole number of 4 KiB pages. */
export function encodeEtcdSnapshot(input: EtcdSnapshotInput): Uint8Array {
  const meta: Array<[Uint8Array, Uint8Array]> = [[enc.encode("consistent_index"), u64be(input.appliedIndex)]];
  if (input.compactRev > 0) {
    meta.push([enc.encode("scheduledCompactRev"), revisionKey(input.compactRev, 0)]);
    meta.push([enc.encode("finishedCompactRev"), revisionKey(input.compactRev, 0)]);
  }
  const leases: Array<[Uint8Array, Uint8Array]> = [];
  for (const l of input.leases) leases.push([u64be(toBigInt(l.id)), encodeLease(l)]);
  const members: Array<[Uint8Array, Uint8Array]> = [];
  for (const m of input.members ?? []) {
    members.push([enc.encode(BigInt.asUintN(64, BigInt(m.ID)).toString(16)), enc.encode(memberJson(m))]);
  }
  const alarms: Array<[Uint8Array, Uint8Array]> = [];
  for (const a of input.alarms ?? []) {
    alarms.push([new Pb().int64(1, a.memberID).uint(2, a.alarm).finish(), new Uint8Array(0)]);
  }
  const auth = authBuckets(input.auth);
  const buckets: Array<[string, BoltBucket]> = [
    ["alarm", { entries: alarms }],
    ["auth", { entries: auth.auth }],
    ["authRoles", { entries: auth.roles }],
    ["authUsers", { entries: auth.users }],
    ["cluster", { entries: [[enc.encode("clusterVersion"), enc.encode(input.clusterVersion ?? "3.4.0")]] }],
    ["key", { entries: keyEntries(input.records) }],
    ["lease", { entries: leases }],
    ["members", { entries: members }],
    ["members_removed", {}],
    ["meta", { entries: meta }],
  ];
  return writeBbolt(buckets.map(([name, b]) => [enc.encode(name), b]));
}

const PbUser = pbRoot.lookupType("authpb.User");
const PbRole = pbRoot.lookupType("authpb.Role");

/** The auth, authUsers and authRoles buckets' entries, as etcd's auth store writes them. */
function authBuckets(a: AuthState | undefined) {
  const latin1 = (s: string) => Buffer.from(s, "latin1");
  const auth: Array<[Uint8Array, Uint8Array]> = [[enc.encode("authRevision"), u64be(a?.revision ?? 1)]];
  // etcd writes the flag the first time auth is switched; absent, auth is off
  if (a?.enabled) auth.push([enc.encode("authEnabled"), new Uint8Array([1])]);
  const users = (a?.users ?? []).map((u): [Uint8Array, Uint8Array] => [
    enc.encode(u.name),
    PbUser.encode(PbUser.fromObject({
      name: enc.encode(u.name),
      password: enc.encode(u.hash),
      roles: u.roles,
      options: u.noPassword ? { no_password: true } : undefined,
    })).finish(),
  ]);
  const roles = (a?.roles ?? []).map((r): [Uint8Array, Uint8Array] => [
    enc.encode(r.name),
    PbRole.encode(PbRole.fromObject({
      name: enc.encode(r.name),
      keyPermission: r.perms.map((p) => ({ permType: p.permType, key: latin1(p.key), range_end: latin1(p.rangeEnd) })),
    })).finish(),
  ]);
  return { auth, users, roles };
}

/** The parts of our server state a snapshot is taken from (structurally: the Node). */
export interface SnapshotSource {
  store: { dump(): Iterable<SnapshotRecord>; compactRev: number };
  lessor: { leases: ReadonlyMap<string, { id: string; ttl: number }> };
  applier: { alarms: SnapshotAlarm[]; auth?: { toJSON(): AuthState } };
  appliedIndex: number;
  term: number;
}

/** Collects an `EtcdSnapshotInput` from a running node (synchronously, so it is one consistent state). */
export function etcdSnapshotInput(node: SnapshotSource, members?: SnapshotMember[]): EtcdSnapshotInput {
  return {
    records: [...node.store.dump()],
    leases: [...node.lessor.leases.values()].map((l) => ({ id: l.id, ttl: l.ttl })),
    appliedIndex: node.appliedIndex,
    compactRev: node.store.compactRev,
    term: node.term,
    members,
    alarms: node.applier.alarms.map((a) => ({ ...a })),
    auth: node.applier.auth?.toJSON(),
  };
}
