/**
 * The apply layer: executes one committed log entry (an egpb.Request) against the MVCC store and the lessor and
 * produces the client's response. It is a pure function of the log: every member applying the same entries reaches
 * the same state, and an entry that fails (e.g. a put on an unknown lease) fails identically everywhere. Nothing local
 * (member ID, flags, clock) decides whether an entry takes effect: space is refused only while the replicated alarm
 * list holds NOSPACE, and a request that fails changes nothing (a txn is all of its operations or none).
 * Read-only requests (Range) also go through `range` here so that top-level reads and reads in a Txn share one path.
 */
import { Buffer } from "node:buffer";
import { Errors } from "../errors.ts";
import { AuthStore, isAuthOp } from "../auth/store.ts";
import { leaseId, type Lessor } from "../lease/lessor.ts";
import { type BKey, type RangeEnd, rangeEndOf, toBKey } from "../mvcc/keys.ts";
import { RangeResponseBuilder } from "../watch/encode.ts";
import { type KeyValue, type MvccStore, PUT, type WriteTxn } from "../mvcc/store.ts";
import { txnCost } from "./quota.ts";
import { nextTurn } from "../util/next_turn.ts";
import {
  AlarmAction,
  type AlarmMember,
  type AlarmRequest,
  type AlarmResponse,
  AlarmType,
  type Compare,
  CompareResult,
  CompareTarget,
  type DeleteRangeRequest,
  type DeleteRangeResponse,
  type InternalRequestBody,
  type InternalRequestOf,
  type InternalResponse,
  type InternalResponses,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type ResponseHeader,
  type ResponseOp,
  SortOrder,
  SortTarget,
  type TxnRequest,
  type TxnResponse,
} from "../../proto/mod.ts";

/** A raised alarm. */
export type Alarm = AlarmMember;

/** A RangeResponse as the store produced it: its kvs are store records (keys and values as Buffers). */
export type RangeOut = Omit<RangeResponse, "kvs"> & { kvs: KeyValue[] };

/** A Range answered with its RangeResponse bytes already encoded (the Range RPC sends them as they are). */
export interface EncodedRange {
  encoded: Uint8Array;
  /** `encoded` lies in a buffer lent by the range builder: call once nothing reads it any more (see `lend`) */
  release?: () => void;
}

/** A range read visits this many keys between looks at the clock ... */
const SCAN_STEP_KEYS = 256;
/** ... and yields to the event loop once it has run this long (a read alone holds the loop at most this long) ... */
export const SCAN_SLICE_MS = 10;
/**
 * ... or, while several reads go on, its share of this: the timers of all of them fire in the same turn, and with a
 * whole slice each, 4 reads of 10,000 keys held the loop for 40 ms and more at a time.
 */
export const SCAN_TURN_MS = 20;
/** A read's slice is never shorter than this (each slice visits at least SCAN_STEP_KEYS keys anyway). */
const SCAN_MIN_SLICE_MS = 2;
/** Range reads under way in slices (all appliers of the process: they share one event loop). */
let scansActive = 0;
/** When this turn's SCAN_TURN_MS of reads ends (-1: no read ran a slice yet in this turn). */
let scanTurnEnd = -1;
const newScanTurn = () => void (scanTurnEnd = -1);
/**
 * When a read's slice starting now yields: after SCAN_SLICE_MS for a read alone; while several go on, after its share
 * of SCAN_TURN_MS, and all within the SCAN_TURN_MS of the turn (reads that start in the same turn, or whose timers
 * fire in the same turn, run their slices one after the other). A timer set when the turn's first slice starts, so
 * before the reads' own, ends it. A slice visits SCAN_STEP_KEYS keys before it first looks at the clock.
 */
function scanSliceEnd(): number {
  const now = performance.now();
  if (scanTurnEnd < 0) {
    scanTurnEnd = now + SCAN_TURN_MS;
    setTimeout(newScanTurn, 0);
  }
  const share = scansActive <= 1 ? SCAN_SLICE_MS : Math.max(SCAN_MIN_SLICE_MS, SCAN_TURN_MS / scansActive);
  return Math.min(now + share, scanTurnEnd);
}

const num = (s: string | number | undefined): number => (s === undefined ? 0 : Number(s));

/** Applies requests to the state machine made of store, lessor and alarms. */
export class Applier {
  /** the replicated alarm list, in the order the alarms were raised */
  alarms: Alarm[] = [];
  /** users, roles and permissions (server/auth/) */
  readonly auth: AuthStore = new AuthStore();

  constructor(
    readonly store: MvccStore,
    readonly lessor: Lessor,
    readonly header: (rev: number) => ResponseHeader,
  ) {}

  /** Whether a NOSPACE alarm is raised: puts, txns that put and lease grants are refused (etcd's capped applier). */
  get noSpace(): boolean {
    return this.alarms.some((a) => a.alarm === AlarmType.NOSPACE);
  }

  /** Applies a committed entry; returns the response or throws the EtcdError to send. */
  apply<Op extends keyof InternalResponses>(req: InternalRequestOf<Op>): InternalResponses[Op];
  apply(req: InternalRequestBody): InternalResponse;
  apply(req: InternalRequestBody): InternalResponse {
    // requests made while auth is enabled carry their user; check it as etcd's authApplierV3 does
    if (req.auth && this.auth.enabled) this.auth.checkRequest(req, this.lessor);
    switch (req.op) {
      case "put":
        if (this.noSpace) throw Errors.noSpace();
        return this.#write((t) => this.#put(t, req.put!));
      case "delete_range":
        return this.#write((t) => this.#deleteRange(t, req.delete_range!));
      case "txn":
        if (this.noSpace && txnCost(req.txn!) > 0) throw Errors.noSpace();
        return this.#write((t) => this.#txn(t, req.txn!));
      case "compaction": {
        this.store.beginCompaction(num(req.compaction!.revision));
        return { header: this.header(this.store.currentRev) };
      }
      case "lease_grant": {
        const g = req.lease_grant!;
        if (this.noSpace) throw Errors.noSpace();
        const l = this.lessor.grant(leaseId(g.ID), num(g.TTL));
        return { header: this.header(this.store.currentRev), ID: l.id, TTL: l.ttl, error: "" };
      }
      case "lease_revoke":
        return this.#write((t) => this.#revoke(t, leaseId(req.lease_revoke!.ID)));
      case "alarm":
        return this.#alarm(req.alarm!);
      case "lease_checkpoint":
        return { header: this.header(this.store.currentRev) };
      default:
        if (isAuthOp(req.op)) return { header: this.header(this.store.currentRev), ...this.auth.apply(req) };
        throw new Error(`apply: unknown request ${JSON.stringify(req.op)}`);
    }
  }

  /**
   * Runs a request's changes as one store txn: committed if it succeeds, rolled back if it throws, so that a failed
   * request changes nothing. Leases learn their keys from the committed events.
   */
  #write<R extends object>(fn: (t: WriteTxn) => R): R & { header: ResponseHeader } {
    const t = this.store.write();
    let resp: R;
    try {
      resp = fn(t);
    } catch (err) {
      t.abort();
      throw err;
    }
    for (const ev of t.events) {
      if (ev.prev && ev.prev.lease !== "0") this.lessor.detach(ev.prev.lease, toBKey(ev.kv.key));
      if (ev.type === PUT && ev.kv.lease !== "0") this.lessor.attach(ev.kv.lease, toBKey(ev.kv.key));
    }
    t.end();
    const out = resp as R & { header: ResponseHeader };
    out.header = this.header(this.store.currentRev);
    return out;
  }

  /** Range at the store's latest state (or inside a write txn), applying etcd's sort, filter and limit rules. */
  range(r: RangeRequest, t?: WriteTxn): RangeOut {
    const q = rangeQuery(r);
    const opts = { rev: num(r.revision), limit: q.fetchAll || q.limit <= 0 ? 0 : q.limit + 1, countOnly: r.count_only };
    const res = t ? t.range(q.key, q.end, opts) : this.store.range(q.key, q.end, opts);
    // inside a txn etcd's inner headers carry only the revision
    return shapeRange(r, q, res.kvs, res.count, t ? { revision: res.rev } : this.header(res.rev));
  }

  /**
   * `range` for the Range RPC, with the same result: the keys are visited in slices of SCAN_SLICE_MS (while several
   * reads go on, each one's share of SCAN_TURN_MS) that yield to the event loop between them (a count or scan over a million keys would hold it for a quarter of a second), and,
   * unless a sort or filter needs the records as objects, the response is encoded straight from the store's records.
   */
  async rangeInSlices(r: RangeRequest): Promise<RangeOut | EncodedRange> {
    const q = rangeQuery(r), store = this.store;
    // one key needs no slices; its record is encoded when the transport sends it, not before (600 reads of a 1 MB
    // value on a connection whose window stays shut held 600 encoded copies at once: +660 MB against +100)
    if (q.end === "") return this.range(r);
    const header = this.header(store.currentRev);
    const kvs: KeyValue[] = [];
    // the records as they come, in key order, are the answer unless they are sorted (or filtered) first
    const builder = q.fetchAll || q.sorted || r.count_only ? null : new RangeResponseBuilder(r.keys_only);
    const read = q.fetchAll || q.limit <= 0 ? Infinity : q.limit + 1;
    const scan = store.scan(q.key, q.end, num(r.revision), (idx) => {
      if (r.count_only) return;
      if (builder) {
        if (q.limit <= 0 || scan.count <= q.limit) builder.add(store.record(idx));
      } else if (scan.count <= read) kvs.push(store._kv(idx));
    });
    scansActive++;
    try {
      let sliceEnd = scanSliceEnd();
      while (!scan.step(SCAN_STEP_KEYS)) {
        if (performance.now() < sliceEnd) continue;
        await nextTurn();
        sliceEnd = scanSliceEnd();
      }
    } finally {
      scansActive--;
    }
    if (!builder) return shapeRange(r, q, kvs, scan.count, header);
    const { bytes, release } = builder.lend(header, q.limit > 0 && scan.count > q.limit, scan.count);
    return release ? { encoded: bytes, release } : { encoded: bytes };
  }

  #put(t: WriteTxn, p: PutRequest): PutResponse {
    const key = toBKey(p.key);
    this.#checkPut(t, p);
    const prevLive = p.ignore_value || p.ignore_lease ? t.get(key) : null;
    // checked again here: an earlier operation of the same txn may have deleted the key
    if ((p.ignore_value || p.ignore_lease) && !prevLive) throw Errors.keyNotFound();
    const value = p.ignore_value ? prevLive!.value : asBuffer(p.value);
    const lease = p.ignore_lease ? prevLive!.lease : leaseId(p.lease);
    const { prev } = t.put(key, value, lease);
    const resp: PutResponse = { header: { revision: t.rev } };
    if (p.prev_kv && prev) resp.prev_kv = prev;
    return resp;
  }

  /** State-dependent checks of a put, made before any change of the request is applied. */
  #checkPut(t: WriteTxn, p: PutRequest): void {
    if (p.ignore_value || p.ignore_lease) {
      if (!t.get(toBKey(p.key))) throw Errors.keyNotFound();
    }
    const lease = p.ignore_lease ? "0" : leaseId(p.lease);
    if (lease !== "0" && !this.lessor.get(lease)) throw Errors.leaseNotFound();
  }

  #deleteRange(t: WriteTxn, d: DeleteRangeRequest): DeleteRangeResponse {
    const deleted = t.deleteRange(toBKey(d.key), rangeEndOf(d.range_end));
    const resp: DeleteRangeResponse = { header: { revision: t.latestRev }, deleted: deleted.length };
    if (d.prev_kv) resp.prev_kvs = deleted;
    return resp;
  }

  #txn(t: WriteTxn, txn: TxnRequest): TxnResponse {
    const ok = txn.compare.every((c) => this.#compare(t, c));
    const ops = ok ? txn.success : txn.failure;
    this.#checkOps(t, ops);
    const responses: ResponseOp[] = [];
    for (const op of ops) {
      switch (op.request) {
        case "request_range":
          responses.push({ response_range: this.range(op.request_range!, t) });
          break;
        case "request_put":
          responses.push({ response_put: this.#put(t, op.request_put!) });
          break;
        case "request_delete_range":
          responses.push({ response_delete_range: this.#deleteRange(t, op.request_delete_range!) });
          break;
        case "request_txn":
          responses.push({ response_txn: this.#txn(t, op.request_txn!) });
          break;
      }
    }
    return { header: {}, succeeded: ok, responses };
  }

  /** Validates the puts a txn branch would make (recursively) before executing any of it. */
  #checkOps(t: WriteTxn, ops: RequestOp[]): void {
    for (const op of ops) {
      if (op.request === "request_put") this.#checkPut(t, op.request_put!);
      else if (op.request === "request_range") {
        const rev = num(op.request_range!.revision);
        if (rev > 0 && rev > this.store.currentRev) throw Errors.futureRev();
        if (rev > 0 && rev < this.store.compactRev) throw Errors.compacted();
      } else if (op.request === "request_txn") {
        const n = op.request_txn!;
        this.#checkOps(t, n.compare.every((c) => this.#compare(t, c)) ? n.success : n.failure);
      }
    }
  }

  #compare(t: WriteTxn, c: Compare): boolean {
    const key = toBKey(c.key);
    const end = rangeEndOf(c.range_end);
    let kvs: KeyValue[];
    if (end === "") {
      const kv = t.get(key);
      kvs = kv ? [kv] : [];
    } else {
      kvs = t.range(key, end).kvs;
    }
    if (kvs.length === 0) {
      if (c.target === CompareTarget.VALUE) return false;
      return compareOne(c, ZERO_KV);
    }
    return kvs.every((kv) => compareOne(c, kv));
  }

  #revoke(t: WriteTxn, id: string): Record<string, never> {
    const keys = this.lessor.revoke(id);
    for (const k of keys) {
      if (t.get(k)) t.deleteRange(k, "");
    }
    return {};
  }

  #alarm(a: AlarmRequest): AlarmResponse {
    const action = a.action ?? AlarmAction.GET;
    const member = leaseId(a.memberID);
    const kind = a.alarm ?? AlarmType.NONE;
    const pick = (x: Alarm) =>
      (member === "0" || x.memberID === member) && (kind === AlarmType.NONE || x.alarm === kind);
    if (action === AlarmAction.ACTIVATE && kind !== AlarmType.NONE) {
      if (!this.alarms.some((x) => x.memberID === member && x.alarm === kind)) {
        this.alarms.push({ memberID: member, alarm: kind });
      }
      return { header: this.header(this.store.currentRev), alarms: [{ memberID: member, alarm: kind }] };
    }
    if (action === AlarmAction.DEACTIVATE) {
      const gone = this.alarms.filter(pick);
      this.alarms = this.alarms.filter((x) => !pick(x));
      return { header: this.header(this.store.currentRev), alarms: gone };
    }
    return { header: this.header(this.store.currentRev), alarms: this.alarms.filter(pick) };
  }
}

const EMPTY = Buffer.alloc(0);
const ZERO_KV: KeyValue = { key: EMPTY, create_revision: 0, mod_revision: 0, version: 0, value: EMPTY, lease: "0" };

function asBuffer(b: Uint8Array | undefined): Buffer {
  if (!b) return EMPTY;
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function cmpResult(result: number, d: number): boolean {
  switch (result) {
    case CompareResult.EQUAL:
      return d === 0;
    case CompareResult.GREATER:
      return d > 0;
    case CompareResult.LESS:
      return d < 0;
    case CompareResult.NOT_EQUAL:
      return d !== 0;
  }
  return false;
}

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareOne(c: Compare, kv: KeyValue): boolean {
  switch (c.target) {
    case CompareTarget.VERSION:
      return cmpResult(c.result, cmpBig(BigInt(kv.version), BigInt(c.version ?? 0)));
    case CompareTarget.CREATE:
      return cmpResult(c.result, cmpBig(BigInt(kv.create_revision), BigInt(c.create_revision ?? 0)));
    case CompareTarget.MOD:
      return cmpResult(c.result, cmpBig(BigInt(kv.mod_revision), BigInt(c.mod_revision ?? 0)));
    case CompareTarget.VALUE:
      return cmpResult(c.result, Buffer.compare(kv.value, asBuffer(c.value)));
    case CompareTarget.LEASE:
      return cmpResult(c.result, cmpBig(BigInt(kv.lease), BigInt(c.lease ?? 0)));
  }
  return false;
}

/** A RangeRequest's key range and the rules that decide how its records are shaped. */
interface RangeQuery {
  key: BKey;
  end: RangeEnd;
  limit: number;
  /** min/max mod/create revision filters */
  filtered: boolean;
  /** the records must all be read before the limit applies (a sort order or a filter) */
  fetchAll: boolean;
  /** the records are sorted before the limit applies (a sort order, or a sort target other than the key) */
  sorted: boolean;
}

function rangeQuery(r: RangeRequest): RangeQuery {
  const filtered = !!(num(r.min_mod_revision) || num(r.max_mod_revision) || num(r.min_create_revision) ||
    num(r.max_create_revision));
  const ordered = (r.sort_order ?? SortOrder.NONE) !== SortOrder.NONE;
  return {
    key: toBKey(r.key),
    end: rangeEndOf(r.range_end),
    limit: num(r.limit),
    filtered,
    fetchAll: ordered || filtered,
    sorted: ordered || (r.sort_target ?? SortTarget.KEY) !== SortTarget.KEY,
  };
}

/**
 * etcd's filter, sort, limit and keys_only rules over the records read (all of them with `fetchAll`, else at most
 * limit + 1), and the response.
 */
function shapeRange(
  r: RangeRequest,
  q: RangeQuery,
  read: KeyValue[],
  count: number,
  header: Partial<ResponseHeader>,
): RangeOut {
  let kvs = read;
  if (q.filtered) {
    const minMod = num(r.min_mod_revision), maxMod = num(r.max_mod_revision);
    const minCr = num(r.min_create_revision), maxCr = num(r.max_create_revision);
    kvs = kvs.filter((kv) =>
      !(minMod > 0 && kv.mod_revision < minMod) && !(maxMod > 0 && kv.mod_revision > maxMod) &&
      !(minCr > 0 && kv.create_revision < minCr) && !(maxCr > 0 && kv.create_revision > maxCr)
    );
  }
  const sortTarget = r.sort_target ?? SortTarget.KEY;
  let order = r.sort_order ?? SortOrder.NONE;
  if (sortTarget !== SortTarget.KEY && order === SortOrder.NONE) order = SortOrder.ASCEND;
  if (order !== SortOrder.NONE) kvs = sortKvs(kvs === read ? kvs.slice() : kvs, sortTarget, order);
  let more = false;
  if (q.limit > 0 && kvs.length > q.limit) {
    kvs = kvs.slice(0, q.limit);
    more = true;
  }
  if (r.keys_only) {
    kvs = kvs.map((kv) => ({ ...kv, value: EMPTY }));
  }
  return { header: header as ResponseHeader, kvs, more, count };
}

function sortKvs(kvs: KeyValue[], target: number, order: number): KeyValue[] {
  const sign = order === SortOrder.DESCEND ? -1 : 1;
  const keyOf = (kv: KeyValue): number | Buffer => {
    switch (target) {
      case SortTarget.VERSION:
        return kv.version;
      case SortTarget.CREATE:
        return kv.create_revision;
      case SortTarget.MOD:
        return kv.mod_revision;
      case SortTarget.VALUE:
        return kv.value;
      default:
        return kv.key;
    }
  };
  // stable sort; ties keep key order, as etcd's stable sort does
  return kvs.sort((a, b) => {
    const x = keyOf(a), y = keyOf(b);
    const d = typeof x === "number" ? x - (y as number) : Buffer.compare(x, y as Buffer);
    return sign * d;
  });
}
