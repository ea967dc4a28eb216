/**
 * The simulation's state machine: the server's real apply layer (MVCC store, lessor, applier, state codec) with the
 * member's own quota, so that the simulation checks that members never diverge (a digest of the whole applied state
 * compared at equal applied indexes, including after snapshot restores), whatever their quota flags.
 */
import { Buffer } from "node:buffer";
import { Applier } from "../../server/apply/applier.ts";
import { BackendQuota } from "../../server/apply/quota.ts";
import { decodeState, encodeState } from "../../server/apply/state_codec.ts";
import { stateHash } from "../../server/apply/state_hash.ts";
import { EtcdError } from "../../server/errors.ts";
import { Lessor } from "../../server/lease/lessor.ts";
import { Members } from "../../server/membership/members.ts";
import { toBKey } from "../../server/mvcc/keys.ts";
import { MvccStore } from "../../server/mvcc/store.ts";
import type { ConfState } from "../../server/raft/mod.ts";
import type { InternalRequestShape } from "../../proto/mod.ts";

/** How an entry applied: ok, or the etcd error every member answers alike. */
export type ApplyOutcome = { ok: true } | { ok: false; error: string };

/** One member's applied state. */
export class SimStateMachine {
  readonly store = new MvccStore();
  readonly lessor: Lessor;
  readonly applier: Applier;
  readonly quota: BackendQuota;

  constructor(quotaBytes: number, now: () => number) {
    this.lessor = new Lessor(1, now);
    this.applier = new Applier(this.store, this.lessor, (rev) => ({
      cluster_id: "1",
      member_id: "1",
      revision: rev,
      raft_term: "1",
    }));
    this.quota = new BackendQuota(quotaBytes);
  }

  /** Applies one entry. A non-etcd error is a bug and is thrown. */
  apply(req: InternalRequestShape): ApplyOutcome {
    try {
      this.applier.apply(req);
      return { ok: true };
    } catch (err) {
      if (err instanceof EtcdError) return { ok: false, error: err.message };
      throw err;
    }
  }

  /** The value of a key, null when absent. */
  get(key: string): string | null {
    const kv = this.store.range(toBKey(Buffer.from(key)), "").kvs[0];
    return kv ? kv.value.toString() : null;
  }

  /** Digest of the whole applied state (Maintenance.Hash). */
  hash(): number {
    return stateHash(this.store, this.lessor, this.applier.alarms);
  }

  /** What differs between members when their digests do, for failure reports. */
  describe(): string {
    const s = this.store;
    return `rev ${s.currentRev} compact ${s.compactRev} size ${s.sizeBytes} keys ${s.keyCount} ` +
      `leases [${[...this.lessor.leases.keys()].sort()}] alarms ${JSON.stringify(this.applier.alarms)}`;
  }

  /** The snapshot payload (the server's state codec; the term is left out: it is the snapshot's metadata). */
  encode(appliedIndex: number, confState: ConfState): Uint8Array {
    return encodeState(
      { appliedIndex, term: 0, confState },
      this.store,
      this.lessor,
      this.applier.alarms,
      new Members(),
    );
  }

  /** Replaces the state with a snapshot payload. */
  restore(data: Uint8Array): void {
    decodeState(data, this.store, this.lessor, this.applier.alarms, new Members());
  }
}
