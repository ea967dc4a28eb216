/**
 * A digest of a member's whole applied state (Maintenance.Hash): every record the store holds (versions and history,
 * as a snapshot carries them), its revision, compaction point and size count, the leases with their TTLs and keys,
 * and the alarm list. Members at the same applied index must agree, however they got there (entry by entry, or
 * through a snapshot); the replica-divergence checks compare it.
 */
import type { Lessor } from "../lease/lessor.ts";
import { StateHasher } from "../mvcc/hash.ts";
import type { MvccStore } from "../mvcc/store.ts";
import type { Alarm } from "./applier.ts";

/** The digest of store, lessor and alarms (unsigned 32 bits). */
export function stateHash(store: MvccStore, lessor: Lessor, alarms: readonly Alarm[]): number {
  store.settleCompaction(); // its records and size count as they are once the compaction under way is done
  const h = new StateHasher();
  h.number(store.currentRev).number(store.compactRev).number(store.sizeBytes);
  for (const idx of store.dumpRecords()) {
    const r = store.record(idx);
    h.record(r.key, r.create, r.mod, r.version, r.lease, r.value);
  }
  const leases = [...lessor.leases.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  h.number(leases.length);
  for (const l of leases) {
    h.text(l.id).number(l.ttl).number(l.keys.size);
    for (const k of [...l.keys].sort()) h.binary(k);
  }
  h.number(alarms.length);
  for (const a of alarms) h.text(a.memberID).number(a.alarm);
  return h.value;
}
