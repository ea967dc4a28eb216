/**
 * The backend quota (--quota-backend-bytes), as in etcd: a member checks a write against its own quota before it
 * proposes it, and raises the NOSPACE alarm (through the log) when the write would not fit. Once in the log, a write
 * is applied by every member alike; while the replicated alarm list holds a NOSPACE alarm, apply refuses every
 * request that costs space (see Applier). The quota is a member's local flag and so never decides anything at apply.
 */
import type { InternalRequestBody, PutRequest, RequestOp, TxnRequest } from "../../proto/mod.ts";

/** What a key-value version costs besides its key and value; the store counts each version the same way. */
export const KV_OVERHEAD = 64;
/** What a lease costs. */
export const LEASE_OVERHEAD = 64;

function putCost(p: PutRequest): number {
  return KV_OVERHEAD + (p.key?.length ?? 0) + (p.value?.length ?? 0);
}

function branchCost(ops: RequestOp[]): number {
  let c = 0;
  for (const op of ops) {
    if (op.request === "request_put") c += putCost(op.request_put!);
    else if (op.request === "request_txn") c += txnCost(op.request_txn!);
  }
  return c;
}

/** A txn costs what the costlier of its branches puts (nested txns included). */
export function txnCost(t: TxnRequest): number {
  return Math.max(branchCost(t.success ?? []), branchCost(t.failure ?? []));
}

/** The bytes a request may add to the store: 0 for requests that add nothing (deletes, compaction, reads). */
export function requestCost(req: InternalRequestBody): number {
  switch (req.op) {
    case "put":
      return putCost(req.put!);
    case "txn":
      return txnCost(req.txn!);
    case "lease_grant":
      return LEASE_OVERHEAD;
    default:
      return 0;
  }
}

/** A member's quota: `bytes` <= 0 means none. */
export class BackendQuota {
  constructor(readonly bytes: number) {}

  /** Whether a request costing `cost` fits in a store of `sizeBytes` (etcd: size + cost < quota). */
  available(sizeBytes: number, cost: number): boolean {
    return this.bytes <= 0 || cost === 0 || sizeBytes + cost < this.bytes;
  }
}
