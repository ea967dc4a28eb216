/**
 * The cluster's membership as the state machine knows it: every member's ID, name, peer and client URLs and whether
 * it is a learner. Changed only by applied log entries (Raft conf changes and published member attributes), so all
 * members agree on it; saved in snapshots.
 */

import type { Member } from "../../proto/types.ts";

/** A member as listed by Cluster.MemberList (etcdserverpb.Member, its field names). */
export type { Member };

/** What a conf change's context carries for an added member (etcd puts the member there too). */
export interface MemberContext {
  ID: string;
  peerURLs: string[];
  isLearner: boolean;
}

/** The membership table. */
export class Members {
  #byId = new Map<string, Member>();
  /** IDs removed from the cluster; they may never come back. */
  readonly removed = new Set<string>();

  /** Members sorted by ID (a stable order for listing). */
  list(): Member[] {
    return [...this.#byId.values()].sort((a, b) => (BigInt(a.ID) < BigInt(b.ID) ? -1 : 1));
  }

  get(id: string): Member | undefined {
    return this.#byId.get(id);
  }

  has(id: string): boolean {
    return this.#byId.has(id);
  }

  get size(): number {
    return this.#byId.size;
  }

  /** Adds a member (or promotes a learner to voter when `isLearner` is false and it exists). */
  add(m: Member): void {
    const cur = this.#byId.get(m.ID);
    if (cur) {
      cur.isLearner = cur.isLearner && m.isLearner;
      if (m.peerURLs.length > 0) cur.peerURLs = m.peerURLs;
      return;
    }
    this.#byId.set(m.ID, { ...m, peerURLs: [...m.peerURLs], clientURLs: [...m.clientURLs] });
  }

  remove(id: string): void {
    this.#byId.delete(id);
    this.removed.add(id);
  }

  /** Sets the attributes a member publishes when it starts. */
  publish(id: string, name: string, clientURLs: string[]): void {
    const m = this.#byId.get(id);
    if (!m) return;
    m.name = name;
    m.clientURLs = [...clientURLs];
  }

  /** Changes a member's peer URLs (Cluster.MemberUpdate). */
  updatePeerURLs(id: string, peerURLs: string[]): void {
    const m = this.#byId.get(id);
    if (m) m.peerURLs = [...peerURLs];
  }

  /** Serializes for snapshots. */
  toJSON(): { members: Member[]; removed: string[] } {
    return { members: this.list(), removed: [...this.removed] };
  }

  /** Replaces the table with a snapshot's. */
  restore(data: { members: Member[]; removed: string[] }): void {
    this.#byId.clear();
    this.removed.clear();
    for (const m of data.members) this.#byId.set(m.ID, { ...m });
    for (const id of data.removed) this.removed.add(id);
  }
}
