/**
 * Request checks made before anything is proposed, with etcd's errors: they depend only on the request, never on the
 * store, so a bad request is refused without touching the log.
 */
import { Errors } from "../errors.ts";
import { rangeEndOf, toBKey } from "../mvcc/keys.ts";
import {
  type DeleteRangeRequest,
  type PutRequest,
  type RangeRequest,
  type RequestOp,
  SortOrder,
  SortTarget,
  type TxnRequest,
} from "../../proto/mod.ts";

const isZero = (v: string | number | undefined) => v === undefined || v === "0" || v === 0;

/** Checks a Range request. */
export function checkRange(r: RangeRequest): void {
  if (!r.key || r.key.length === 0) throw Errors.emptyKey();
  const order = r.sort_order ?? 0, target = r.sort_target ?? 0;
  if (order < SortOrder.NONE || order > SortOrder.DESCEND) throw Errors.invalidSortOption();
  if (target < SortTarget.KEY || target > SortTarget.VALUE) throw Errors.invalidSortOption();
}

/** Checks a Put request. */
export function checkPut(r: PutRequest): void {
  if (!r.key || r.key.length === 0) throw Errors.emptyKey();
  if (r.ignore_value && r.value && r.value.length !== 0) throw Errors.valueProvided();
  if (r.ignore_lease && !isZero(r.lease)) throw Errors.leaseProvided();
}

/** Checks a DeleteRange request. */
export function checkDelete(r: DeleteRangeRequest): void {
  if (!r.key || r.key.length === 0) throw Errors.emptyKey();
}

/** Checks a Txn: op counts, each op, and that no key is written twice in one branch. */
export function checkTxn(t: TxnRequest, maxOps: number): void {
  if (t.compare.length > maxOps || t.success.length > maxOps || t.failure.length > maxOps) {
    throw Errors.tooManyOps();
  }
  for (const c of t.compare) if (!c.key || c.key.length === 0) throw Errors.emptyKey();
  for (const ops of [t.success, t.failure]) {
    for (const op of ops) checkOp(op, maxOps);
    writeSet(ops);
  }
}

function checkOp(op: RequestOp, maxOps: number): void {
  switch (op.request) {
    case "request_range":
      return checkRange(op.request_range!);
    case "request_put":
      return checkPut(op.request_put!);
    case "request_delete_range":
      return checkDelete(op.request_delete_range!);
    case "request_txn":
      return checkTxn(op.request_txn!, maxOps);
  }
}

interface WriteSet {
  puts: Set<string>;
  dels: Array<[string, string | null]>;
}

/** The keys a branch may put and the ranges it may delete; throws on a key put twice or put and deleted. */
function writeSet(ops: RequestOp[]): WriteSet {
  const ws: WriteSet = { puts: new Set(), dels: [] };
  const addPut = (k: string) => {
    if (ws.puts.has(k)) throw Errors.duplicateKey();
    ws.puts.add(k);
  };
  const nested: WriteSet[] = [];
  for (const op of ops) {
    if (op.request === "request_put") addPut(toBKey(op.request_put!.key));
    else if (op.request === "request_delete_range") {
      const d = op.request_delete_range!;
      const k = toBKey(d.key), e = rangeEndOf(d.range_end);
      ws.dels.push([k, e === "" ? k + "\0" : e]);
    } else if (op.request === "request_txn") {
      const t = op.request_txn!;
      // only one of the nested branches runs, so they may overlap each other but not this branch
      const a = writeSet(t.success), b = writeSet(t.failure);
      nested.push({ puts: new Set([...a.puts, ...b.puts]), dels: [...a.dels, ...b.dels] });
    }
  }
  for (const n of nested) {
    for (const k of n.puts) addPut(k);
    ws.dels.push(...n.dels);
  }
  for (const k of ws.puts) {
    for (const [from, end] of ws.dels) if (k >= from && (end === null || k < end)) throw Errors.duplicateKey();
  }
  return ws;
}
