/**
 * What the leader knows about each member's log: the replication state machine (probe → replicate, or snapshot),
 * the window of in-flight appends, and the quorum arithmetic over voters.
 */
import { invariant } from "./types.ts";

/** A bounded FIFO of the last indexes of appends sent but not yet acknowledged (a ring buffer). */
export class Inflights {
  readonly capacity: number;
  #buf: number[] = [];
  #start = 0;
  #count = 0;

  constructor(capacity: number) {
    invariant(capacity > 0, () => "inflights capacity must be positive");
    this.capacity = capacity;
  }

  get count(): number {
    return this.#count;
  }

  full(): boolean {
    return this.#count === this.capacity;
  }

  /** Records an append whose last entry is `index` (indexes are added in increasing order). */
  add(index: number): void {
    invariant(!this.full(), () => "cannot add into a full inflights window");
    let next = this.#start + this.#count;
    if (next >= this.capacity) next -= this.capacity;
    if (next >= this.#buf.length) this.#buf.push(index);
    else this.#buf[next] = index;
    this.#count++;
  }

  /** Frees every in-flight append whose last index is ≤ `to`. */
  freeLE(to: number): void {
    if (this.#count === 0 || to < this.#buf[this.#start]) return;
    let i = 0;
    let idx = this.#start;
    for (; i < this.#count; i++) {
      if (to < this.#buf[idx]) break;
      if (++idx >= this.capacity) idx -= this.capacity;
    }
    this.#count -= i;
    this.#start = idx;
    if (this.#count === 0) this.#start = 0;
  }

  freeFirstOne(): void {
    if (this.#count > 0) this.freeLE(this.#buf[this.#start]);
  }

  reset(): void {
    this.#count = 0;
    this.#start = 0;
  }
}

export type ProgressState = "probe" | "replicate" | "snapshot";

/** The leader's view of one member. */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** index of the snapshot being sent (state "snapshot") */
  pendingSnapshot = 0;
  /** heard from since the last check-quorum round */
  recentActive = false;
  /** probe state: an append was sent and no reply has come back yet */
  probeSent = false;
  /**
   * Set at each of the leader's heartbeat intervals: the next heartbeat response from this member may unblock its held
   * back appends (resend a probe, free a slot of a full window). Read-index rounds send heartbeats far more often,
   * and a resend per answer would repeat a full-size append for every round.
   */
  resendDue = false;
  /** the highest commit index sent to this member in an append */
  sentCommit = 0;
  readonly inflights: Inflights;
  isLearner: boolean;

  constructor(next: number, maxInflight: number, isLearner: boolean) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
    this.isLearner = isLearner;
  }

  #resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot, resume right after it (the follower has it once it replied).
    if (this.state === "snapshot") {
      const pending = this.pendingSnapshot;
      this.#resetState("probe");
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.#resetState("probe");
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.#resetState("replicate");
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.#resetState("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  /** An append up to n was acknowledged; returns whether match moved. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /** Replicate state: entries up to n were sent (optimistically assumed to arrive). */
  optimisticUpdate(n: number): void {
    this.next = n + 1;
  }

  /**
   * An append at `rejected` was refused; `hint` is the follower's guess of its last matching index.
   * Returns false when the rejection is stale (it refers to an append that is no longer the one outstanding).
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  /** Whether appends to this member are currently held back. */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      default:
        return true;
    }
  }
}

/** Members and their progress; voters decide elections and commits, learners only receive the log. */
export class Tracker {
  voters = new Set<string>();
  learners = new Set<string>();
  progress = new Map<string, Progress>();
  readonly maxInflight: number;

  constructor(maxInflight: number) {
    this.maxInflight = maxInflight;
  }

  /** Size of a majority of voters. */
  quorum(): number {
    return (this.voters.size >> 1) + 1;
  }

  /** The largest index a majority of voters have (0 with no voters). */
  committedIndex(): number {
    const n = this.voters.size;
    if (n === 0) return 0;
    const m: number[] = [];
    for (const id of this.voters) m.push(this.progress.get(id)?.match ?? 0);
    m.sort((a, b) => b - a);
    return m[this.quorum() - 1];
  }

  /** Outcome of an election given the answers so far (true = granted). */
  voteResult(votes: Map<string, boolean>): "won" | "lost" | "pending" {
    let granted = 0;
    let rejected = 0;
    for (const id of this.voters) {
      const v = votes.get(id);
      if (v === true) granted++;
      else if (v === false) rejected++;
    }
    const q = this.quorum();
    if (granted >= q) return "won";
    if (this.voters.size - rejected < q) return "lost";
    return "pending";
  }

  /** Whether a majority of voters were heard from recently (`self` always counts). */
  quorumActive(self: string): boolean {
    let active = 0;
    for (const id of this.voters) {
      if (id === self || this.progress.get(id)?.recentActive) active++;
    }
    return active >= this.quorum();
  }

  isSingleVoter(self: string): boolean {
    return this.voters.size === 1 && this.voters.has(self);
  }
}
