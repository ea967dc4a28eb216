/**
 * The Raft consensus core as a pure, deterministic state machine: no I/O, no timers, no randomness but the
 * `random` function it is given. It is driven by `tick()` (logical clock), `step(message)` (network input) and
 * local requests (`propose`, `readIndex`, ...), and says what to persist, send and apply through `ready()`;
 * the application acknowledges with `advance()`. See {@link Ready} for the persistence/sending rule.
 *
 * Features: elections with randomized timeouts, pre-vote, check-quorum (leader lease), pipelined replication with
 * probe/replicate/snapshot progress states and a bounded in-flight window, proposal batching and forwarding,
 * ReadIndex, snapshots (InstallSnapshot), leadership transfer, one-member-at-a-time membership changes with
 * learners. Membership changes take effect when the application applies them (`applyConfChange`), and a leader
 * refuses a new one until the previous one is applied.
 *
 * Durability of the leader's own log (Raft thesis §10.2.1): a leader's appends/heartbeats may be sent while its
 * own write is in flight (`Ready.preSyncMessages`), but the leader counts itself towards a commit quorum only for
 * entries the application reported durable through `advance()`.
 */
import { limitSize, RaftLog, type Storage } from "./log.ts";
import { Progress, Tracker } from "./progress.ts";
import { ReadOnly } from "./read_only.ts";
import {
  bytesEqual,
  CompactedError,
  type ConfChange,
  ConfChangePendingError,
  ConfChangeType,
  type ConfState,
  encodeConfChange,
  type Entry,
  EntryType,
  type HardState,
  hardStateEqual,
  invariant,
  isEmptyHardState,
  type Message,
  message,
  NONE,
  ProposalDroppedError,
  RaftError,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  SnapshotTemporarilyUnavailableError,
  type SoftState,
  TRANSFER_CONTEXT,
} from "./types.ts";

/** Configuration of a {@link RaftNode}. */
export interface RaftConfig {
  /** this member's id (decimal uint64, not "0") */
  id: string;
  /** what the application has persisted; read for the initial state and for stable entries */
  storage: Storage;
  /** source of randomness for election timeouts, in [0, 1) */
  random: () => number;
  /** ticks without hearing from a leader before campaigning (randomized in [electionTick, 2·electionTick)) */
  electionTick?: number;
  /** ticks between a leader's heartbeats */
  heartbeatTick?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** maximum appends in flight to one member while replicating */
  maxInflightMsgs?: number;
  /** maximum bytes of entries in one append */
  maxSizePerMsg?: number;
  /** maximum bytes of committed entries handed out in one Ready */
  maxCommittedSizePerReady?: number;
  /**
   * no committed entries are handed out while this many bytes of entry payload are handed out and not yet reported
   * applied with `appliedTo` (default: no limit)
   */
  maxApplyingBytes?: number;
  /** a leader refuses proposals once this many bytes of entry payload are uncommitted (0 = no limit) */
  maxUncommittedBytes?: number;
  /** last applied index at start (defaults to the storage snapshot's index) */
  applied?: number;
  /** voter ids to start a brand-new cluster with, used only when the storage is empty */
  bootstrap?: string[];
  /** followers refuse proposals instead of forwarding them to the leader */
  disableProposalForwarding?: boolean;
}

/** A member's progress as the leader sees it (in {@link Status}). */
export interface ProgressStatus {
  match: number;
  next: number;
  state: "probe" | "replicate" | "snapshot";
  recentActive: boolean;
  isLearner: boolean;
  inflight: number;
}

/** A snapshot of a member's state for observers. */
export interface Status {
  id: string;
  term: number;
  vote: string;
  commit: number;
  applied: number;
  lead: string;
  role: Role;
  lastIndex: number;
  firstIndex: number;
  leadTransferee: string;
  voters: string[];
  learners: string[];
  /** leader only */
  progress?: Record<string, ProgressStatus>;
}

type CampaignKind = "preElection" | "election" | "transfer";

const EMPTY = new Uint8Array(0);

/** Member IDs (decimal uint64) in numeric order, without duplicates. */
function sortedIds(ids: string[]): string[] {
  return [...new Set(ids)].sort((a, b) => {
    const x = BigInt(a), y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

/** One member's Raft state machine. */
export class RaftNode {
  readonly id: string;
  readonly log: RaftLog;
  #term = 0;
  #vote = NONE;
  #lead = NONE;
  #role: Role = "follower";

  readonly #tracker: Tracker;
  readonly #votes = new Map<string, boolean>();
  #msgs: Message[] = [];
  /** a leader's appends to every follower are due (sent when the next Ready is taken, see #flushBcast) */
  #bcastPending = false;
  #readStates: ReadState[] = [];

  readonly #electionTimeout: number;
  readonly #heartbeatTimeout: number;
  #electionElapsed = 0;
  #heartbeatElapsed = 0;
  #randomizedElectionTimeout = 0;
  readonly #random: () => number;

  readonly #preVote: boolean;
  readonly #checkQuorum: boolean;
  readonly #maxSizePerMsg: number;
  readonly #maxUncommittedBytes: number;
  readonly #disableForwarding: boolean;
  /**
   * Index of the newest snapshot installed from a leader while running: the membership it carries includes every
   * conf change at or below it, so such a change applied afterwards (the application still applying entries of an
   * earlier Ready when the snapshot arrived) is stale and must not touch the membership again.
   */
  #restoredConfIndex = 0;

  #leadTransferee = NONE;
  /** index of the newest conf-change entry this leader appended (or its last index at election) */
  #pendingConfIndex = 0;
  #uncommittedBytes = 0;
  readonly #readOnly = new ReadOnly();
  /** read requests that arrived before this leader committed an entry of its term */
  #pendingReads: Message[] = [];

  #prevSoft: SoftState;
  /** the hard state the application last reported durable */
  #prevHard: HardState;
  #readyOutstanding = false;

  constructor(cfg: RaftConfig) {
    invariant(cfg.id !== NONE && /^[0-9]+$/.test(cfg.id), () => `invalid member id ${cfg.id}`);
    this.id = cfg.id;
    this.#random = cfg.random;
    this.#electionTimeout = cfg.electionTick ?? 10;
    this.#heartbeatTimeout = cfg.heartbeatTick ?? 1;
    invariant(this.#heartbeatTimeout > 0, () => "heartbeat tick must be greater than 0");
    invariant(
      this.#electionTimeout > this.#heartbeatTimeout,
      () => "election tick must be greater than heartbeat tick",
    );
    this.#preVote = cfg.preVote ?? true;
    this.#checkQuorum = cfg.checkQuorum ?? true;
    this.#maxSizePerMsg = cfg.maxSizePerMsg ?? 1024 * 1024;
    this.#maxUncommittedBytes = cfg.maxUncommittedBytes ?? 0;
    this.#disableForwarding = cfg.disableProposalForwarding ?? false;
    this.#tracker = new Tracker(cfg.maxInflightMsgs ?? 256);
    this.log = new RaftLog(cfg.storage, cfg.maxCommittedSizePerReady ?? this.#maxSizePerMsg, cfg.maxApplyingBytes);

    const { hardState, confState } = cfg.storage.initialState();
    const fresh = isEmptyHardState(hardState) && cfg.storage.lastIndex() === 0;
    this.#prevHard = { ...hardState };
    if (fresh && cfg.bootstrap && cfg.bootstrap.length > 0) {
      // A new cluster: its founding members are the first entries of the log, committed by definition. They are in
      // member-ID order, so that members given the same members in another order hold the same bytes.
      const founders = sortedIds(cfg.bootstrap);
      const ents: Entry[] = founders.map((v, i) => ({
        index: i + 1,
        term: 1,
        type: EntryType.ConfChange,
        data: encodeConfChange({ type: ConfChangeType.AddNode, nodeId: v }),
      }));
      this.#term = 1;
      this.log.append(ents);
      this.log.committed = ents.length;
      for (const v of founders) this.#addMember(v, false);
    } else {
      this.#restoreConf(confState);
      if (!isEmptyHardState(hardState)) {
        invariant(
          hardState.commit <= this.log.lastIndex(),
          () => `hard state commit ${hardState.commit} beyond last index ${this.log.lastIndex()}; log lost?`,
        );
        // The snapshot's index is committed even if the hard state saved with it did not survive.
        this.log.committed = Math.max(this.log.committed, hardState.commit);
        this.#term = hardState.term;
        this.#vote = hardState.vote;
      }
    }
    if (cfg.applied !== undefined && cfg.applied > 0) this.log.appliedTo(cfg.applied);
    this.#becomeFollower(this.#term, NONE);
    this.#prevSoft = { lead: this.#lead, role: this.#role };
  }

  // ---------------------------------------------------------------- accessors

  get term(): number {
    return this.#term;
  }

  get vote(): string {
    return this.#vote;
  }

  get lead(): string {
    return this.#lead;
  }

  get role(): Role {
    return this.#role;
  }

  get isLeader(): boolean {
    return this.#role === "leader";
  }

  /**
   * Index of a leader's snapshot stepped into the core and not yet applied (taken by `advance` of the Ready that
   * carries it), 0 when none. Every committed entry of a Ready still being applied lies below it (a snapshot is only
   * restored above the commit index): the application may skip those entries, since the next Ready carries the
   * snapshot that replaces what they would build (a conf change among them is a no-op once the snapshot is restored,
   * see `applyConfChange`).
   */
  pendingSnapshotIndex(): number {
    return this.log.unstable.snapshot?.metadata.index ?? 0;
  }

  /** The leader's snapshot stepped into the core and not yet taken by `advance`, if any. */
  pendingSnapshot(): Snapshot | undefined {
    return this.log.unstable.snapshot ?? undefined;
  }

  /** Current membership. */
  confState(): ConfState {
    return { voters: [...this.#tracker.voters], learners: [...this.#tracker.learners] };
  }

  hardState(): HardState {
    return { term: this.#term, vote: this.#vote, commit: this.log.committed };
  }

  status(): Status {
    const s: Status = {
      id: this.id,
      term: this.#term,
      vote: this.#vote,
      commit: this.log.committed,
      applied: this.log.applied,
      lead: this.#lead,
      role: this.#role,
      lastIndex: this.log.lastIndex(),
      firstIndex: this.log.firstIndex(),
      leadTransferee: this.#leadTransferee,
      voters: [...this.#tracker.voters],
      learners: [...this.#tracker.learners],
    };
    if (this.#role === "leader") {
      s.progress = {};
      for (const [id, pr] of this.#tracker.progress) {
        s.progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          recentActive: pr.recentActive,
          isLearner: pr.isLearner,
          inflight: pr.inflights.count,
        };
      }
    }
    return s;
  }

  // ---------------------------------------------------------------- local requests

  /** Advances the logical clock by one tick. */
  tick(): void {
    if (this.#role === "leader") this.#tickHeartbeat();
    else this.#tickElection();
  }

  /** Starts an election now (as if the election timeout had elapsed). */
  campaign(): void {
    this.#hup("preElection");
  }

  /**
   * A follower learns that its leader is gone (say, the leader's process closed its connections): it stops
   * following it, so it no longer refuses (pre-)votes because of the leader's lease. It does not campaign by
   * itself; whoever calls this may call `campaign()` next. A leader that is in fact alive is simply followed again
   * on its next message.
   */
  forgetLeader(): void {
    if (this.#role !== "follower" || this.#lead === NONE) return;
    this.#lead = NONE;
  }

  /**
   * Proposes one or more normal entries (a batch becomes consecutive entries of one append). On a follower the
   * batch is forwarded to the leader. Throws ProposalDroppedError when it cannot be accepted.
   */
  propose(data: Uint8Array | Uint8Array[]): void {
    const list = Array.isArray(data) ? data : [data];
    if (list.length === 0) return;
    this.#proposeLocal(list.map((d) => ({ index: 0, term: 0, type: EntryType.Normal, data: d })));
  }

  /**
   * Proposes a one-member membership change. Throws ConfChangePendingError on a leader while an earlier change is
   * not yet applied (a forwarded one is dropped by the leader in that case).
   */
  proposeConfChange(cc: ConfChange): void {
    if (this.#role === "leader" && this.#pendingConfIndex > this.log.applied) throw new ConfChangePendingError();
    this.#proposeLocal([{ index: 0, term: 0, type: EntryType.ConfChange, data: encodeConfChange(cc) }]);
  }

  /**
   * Requests a linearizable read point. When confirmed, a ReadState {index, ctx} appears in a Ready: the read may
   * be served once the applied index reaches `index`. `ctx` must be unique and non-empty. Throws when no leader is
   * known; a request lost on the way (leader change, message loss) is never answered, so callers need a timeout.
   */
  readIndex(ctx: Uint8Array): void {
    invariant(ctx.length > 0, () => "readIndex needs a non-empty context");
    const m = message({ type: "ReadIndex", from: this.id, context: ctx });
    if (this.#role === "leader") {
      this.#leaderReadIndex(m);
    } else if (this.#role === "follower" && this.#lead !== NONE) {
      this.#send({ ...m, to: this.#lead });
    } else {
      throw new ProposalDroppedError("no leader");
    }
  }

  /** Asks the leader to hand leadership to `transferee` (forwarded when this member is not the leader). */
  transferLeader(transferee: string): void {
    if (this.#role === "leader") {
      this.#leaderTransfer(transferee);
    } else if (this.#lead !== NONE) {
      this.#send(message({ type: "TransferLeader", to: this.#lead, context: new TextEncoder().encode(transferee) }));
    } else {
      throw new ProposalDroppedError("no leader");
    }
  }

  /** The transport could not reach `id`: stop optimistic pipelining to it. */
  reportUnreachable(id: string): void {
    const pr = this.#tracker.progress.get(id);
    if (this.#role !== "leader" || !pr) return;
    if (pr.state === "replicate") pr.becomeProbe();
  }

  /** The transport finished (or failed) sending a snapshot to `id`. */
  reportSnapshot(id: string, ok: boolean): void {
    const pr = this.#tracker.progress.get(id);
    if (this.#role !== "leader" || !pr || pr.state !== "snapshot") return;
    if (!ok) pr.pendingSnapshot = 0;
    // Wait for the member's reply before sending more (and resend the snapshot if it failed).
    pr.becomeProbe();
    pr.probeSent = true;
  }

  /**
   * Applies a committed membership change (call it when applying the conf-change entry at `index`, in log order) and
   * returns the new membership. A change at or below the index of a snapshot installed since is already part of the
   * snapshot's membership: it changes nothing (re-applied, an add would bring back a member the snapshot no longer has).
   */
  applyConfChange(cc: ConfChange, index: number): ConfState {
    if (index <= this.#restoredConfIndex) return this.confState();
    switch (cc.type) {
      case ConfChangeType.AddNode:
        this.#addMember(cc.nodeId, false);
        break;
      case ConfChangeType.AddLearnerNode:
        this.#addMember(cc.nodeId, true);
        break;
      case ConfChangeType.RemoveNode:
        this.#tracker.voters.delete(cc.nodeId);
        this.#tracker.learners.delete(cc.nodeId);
        this.#tracker.progress.delete(cc.nodeId);
        if (this.#leadTransferee === cc.nodeId) this.#abortLeaderTransfer();
        break;
      case ConfChangeType.UpdateNode:
        break;
      default:
        throw new RaftError(`unknown conf change type ${cc.type}`);
    }
    if (this.#role === "leader") {
      if (!this.#tracker.voters.has(this.id)) {
        // A leader that is no longer a voter cannot count itself; let the remaining voters elect a new leader.
        this.#becomeFollower(this.#term, NONE);
      } else if (this.#maybeCommit()) {
        this.#bcastAppend();
      } else if (cc.type === ConfChangeType.AddNode || cc.type === ConfChangeType.AddLearnerNode) {
        this.#sendAppend(cc.nodeId, true);
      }
    }
    return this.confState();
  }

  // ---------------------------------------------------------------- ready / advance

  /** Whether `ready()` has anything to hand out (always false while a Ready awaits `advance`). */
  hasReady(): boolean {
    if (this.#readyOutstanding) return false;
    if (this.#bcastPending && this.#role === "leader") return true;
    if (this.#lead !== this.#prevSoft.lead || this.#role !== this.#prevSoft.role) return true;
    if (
      this.#term !== this.#prevHard.term || this.#vote !== this.#prevHard.vote ||
      this.log.committed !== this.#prevHard.commit
    ) return true;
    if (this.log.hasPendingSnapshot()) return true;
    if (this.#msgs.length > 0 || this.log.unstable.entries.length > 0 || this.#readStates.length > 0) return true;
    return this.log.hasNextEnts();
  }

  /** Takes what must be persisted, sent and applied. Call `advance(ready)` before the next `ready()`. */
  ready(): Ready {
    invariant(!this.#readyOutstanding, () => "ready() called again before advance()");
    this.#flushBcast();
    this.#readyOutstanding = true;
    const hs = this.hardState();
    const rd: Ready = {
      entries: this.log.unstableEntries(),
      committedEntries: this.log.nextEnts(),
      messages: [],
      preSyncMessages: [],
      readStates: this.#readStates,
      mustSync: false,
    };
    const soft = { lead: this.#lead, role: this.#role };
    if (soft.lead !== this.#prevSoft.lead || soft.role !== this.#prevSoft.role) {
      rd.softState = soft;
      this.#prevSoft = soft;
    }
    if (!hardStateEqual(hs, this.#prevHard)) rd.hardState = hs;
    if (this.log.unstable.snapshot) rd.snapshot = this.log.unstable.snapshot;
    rd.mustSync = rd.entries.length > 0 || rd.snapshot !== undefined || hs.term !== this.#prevHard.term ||
      hs.vote !== this.#prevHard.vote;
    // A leader's appends may overtake its own write once its vote for this term is durable (it can never lead
    // this term again after a crash, so nobody can see different entries of this term at the same index).
    const early = this.#prevHard.term === this.#term && this.#prevHard.vote === this.id;
    for (const m of coalesce(this.#msgs)) {
      if (early && m.term === this.#term && (m.type === "App" || m.type === "Heartbeat" || m.type === "Snap")) {
        rd.preSyncMessages.push(m);
      } else {
        rd.messages.push(m);
      }
    }
    this.#msgs = [];
    this.#readStates = [];
    return rd;
  }

  /**
   * Acknowledges that `rd` was persisted, its snapshot (if any) restored, and its committed entries taken for
   * applying: the application reports them applied with `appliedTo`, in this turn or later (the Raft loop need not
   * wait for the state machine).
   */
  advance(rd: Ready): void {
    invariant(this.#readyOutstanding, () => "advance() without a ready()");
    this.#readyOutstanding = false;
    if (rd.hardState) this.#prevHard = { ...rd.hardState };
    if (rd.snapshot) {
      this.log.stableSnapTo(rd.snapshot.metadata.index);
      if (rd.snapshot.metadata.index > this.log.applied) this.log.appliedTo(rd.snapshot.metadata.index);
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      this.log.stableTo(last.index, last.term);
    }
    if (rd.committedEntries.length > 0) {
      let bytes = 0;
      for (const e of rd.committedEntries) bytes += e.data.length;
      this.log.acceptApplying(rd.committedEntries[rd.committedEntries.length - 1].index, bytes);
      this.#uncommittedBytes = Math.max(0, this.#uncommittedBytes - bytes);
    }
    if (this.#role === "leader") {
      // The leader's own vote towards a commit: only what is durable on its disk.
      const self = this.#tracker.progress.get(this.id);
      if (self && self.maybeUpdate(this.log.stableLastIndex()) && this.#maybeCommit()) this.#bcastAppend();
    }
  }

  /**
   * The application applied every committed entry up to `index` (handed out by earlier Readies; entries a restored
   * snapshot covers count as applied). A conf change proposal waits for the previous one to be applied, a member
   * campaigns only once the conf changes it has committed are applied, and committed entries beyond
   * `maxApplyingBytes` are handed out only as earlier ones are applied.
   */
  appliedTo(index: number): void {
    if (index > this.log.applied) this.log.appliedTo(index);
  }

  // ---------------------------------------------------------------- network input

  /** Handles a message from another member. */
  step(m: Message): void {
    if (m.term === 0) {
      // Forwarded requests carry no term (they are not tied to the sender's view).
      if (m.type !== "Prop" && m.type !== "ReadIndex") return;
    } else if (m.term > this.#term) {
      if (m.type === "Vote" || m.type === "PreVote") {
        const force = bytesEqual(m.context, TRANSFER_CONTEXT);
        const inLease = this.#checkQuorum && this.#lead !== NONE && this.#electionElapsed < this.#electionTimeout;
        // Within the lease of a live leader, a disruptive candidate is ignored (thesis §4.2.3).
        if (!force && inLease) return;
      }
      if (m.type === "PreVote") {
        // a pre-vote never changes our term
      } else if (m.type === "PreVoteResp" && !m.reject) {
        // granted pre-votes carry the term we would campaign in
      } else if (m.type === "App" || m.type === "Heartbeat" || m.type === "Snap") {
        this.#becomeFollower(m.term, m.from);
      } else {
        this.#becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.#term) {
      if ((this.#checkQuorum || this.#preVote) && (m.type === "Heartbeat" || m.type === "App")) {
        // A stale leader (e.g. cut off while we moved on): tell it our term so that it steps down.
        this.#send(message({ type: "AppResp", to: m.from }));
      } else if (m.type === "PreVote") {
        this.#send(message({ type: "PreVoteResp", to: m.from, term: this.#term, reject: true }));
      }
      return;
    }

    switch (m.type) {
      case "Vote":
      case "PreVote":
        this.#handleVote(m);
        return;
    }
    switch (this.#role) {
      case "leader":
        this.#stepLeader(m);
        break;
      case "candidate":
      case "preCandidate":
        this.#stepCandidate(m);
        break;
      default:
        this.#stepFollower(m);
    }
  }

  // ---------------------------------------------------------------- role transitions

  #reset(term: number): void {
    invariant(term >= this.#term, () => `term going backwards ${this.#term} -> ${term}`);
    if (term !== this.#term) {
      this.#term = term;
      this.#vote = NONE;
    }
    this.#lead = NONE;
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    this.#randomizedElectionTimeout = this.#electionTimeout + Math.floor(this.#random() * this.#electionTimeout);
    this.#abortLeaderTransfer();
    this.#votes.clear();
    const next = this.log.lastIndex() + 1;
    for (const [id, old] of this.#tracker.progress) {
      const pr = new Progress(next, this.#tracker.maxInflight, old.isLearner);
      if (id === this.id) pr.match = this.log.stableLastIndex();
      this.#tracker.progress.set(id, pr);
    }
    this.#pendingConfIndex = 0;
    this.#uncommittedBytes = 0;
    this.#readOnly.reset();
    this.#pendingReads = [];
  }

  #becomeFollower(term: number, lead: string): void {
    this.#reset(term);
    this.#lead = lead;
    this.#role = "follower";
  }

  #becomePreCandidate(): void {
    invariant(this.#role !== "leader", () => "invalid transition leader -> preCandidate");
    // Neither the term nor the vote changes.
    this.#votes.clear();
    this.#lead = NONE;
    this.#role = "preCandidate";
  }

  #becomeCandidate(): void {
    invariant(this.#role !== "leader", () => "invalid transition leader -> candidate");
    this.#reset(this.#term + 1);
    this.#vote = this.id;
    this.#role = "candidate";
  }

  #becomeLeader(): void {
    invariant(this.#role === "candidate", () => `invalid transition ${this.#role} -> leader`);
    this.#reset(this.#term);
    this.#lead = this.id;
    this.#role = "leader";
    const self = this.#tracker.progress.get(this.id);
    if (self) {
      self.becomeReplicate();
      self.recentActive = true;
    }
    // No conf change may be proposed until everything up to here is applied (which includes any conf change
    // a previous leader appended).
    this.#pendingConfIndex = this.log.lastIndex();
    this.#appendEntries([{ index: 0, term: 0, type: EntryType.Normal, data: EMPTY }], true);
  }

  #promotable(): boolean {
    return this.#tracker.voters.has(this.id) && !this.log.hasPendingSnapshot();
  }

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.#promotable() && this.#electionElapsed >= this.#randomizedElectionTimeout) {
      this.#electionElapsed = 0;
      this.#hup("preElection");
    }
  }

  #tickHeartbeat(): void {
    this.#heartbeatElapsed++;
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#electionTimeout) {
      this.#electionElapsed = 0;
      if (this.#checkQuorum) {
        const ok = this.#tracker.quorumActive(this.id);
        for (const [id, pr] of this.#tracker.progress) pr.recentActive = id === this.id;
        if (!ok) {
          this.#becomeFollower(this.#term, NONE);
          return;
        }
      }
      if (this.#leadTransferee !== NONE) this.#abortLeaderTransfer();
    }
    if (this.#heartbeatElapsed >= this.#heartbeatTimeout) {
      this.#heartbeatElapsed = 0;
      for (const pr of this.#tracker.progress.values()) pr.resendDue = true;
      this.#bcastHeartbeat(null);
    }
  }

  #hup(kind: CampaignKind): void {
    if (this.#role === "leader" || !this.#promotable()) return;
    if (this.log.committed > this.log.applied) {
      const lo = Math.max(this.log.applied + 1, this.log.firstIndex());
      if (lo <= this.log.committed) {
        for (const e of this.log.slice(lo, this.log.committed + 1, Infinity)) {
          // Our view of the membership is behind what is committed: wait until it is applied.
          if (e.type === EntryType.ConfChange) return;
        }
      }
    }
    if (kind === "preElection" && !this.#preVote) kind = "election";
    this.#campaign(kind);
  }

  #campaign(kind: CampaignKind): void {
    let term: number;
    let type: "Vote" | "PreVote";
    if (kind === "preElection") {
      this.#becomePreCandidate();
      type = "PreVote";
      term = this.#term + 1;
    } else {
      this.#becomeCandidate();
      type = "Vote";
      term = this.#term;
    }
    this.#votes.set(this.id, true);
    if (this.#tracker.voteResult(this.#votes) === "won") {
      if (kind === "preElection") {
        this.#campaign("election");
      } else {
        this.#becomeLeader();
        this.#bcastAppend();
      }
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const id of this.#tracker.voters) {
      if (id === this.id) continue;
      this.#send(message({
        type,
        to: id,
        term,
        index: lastIndex,
        logTerm: lastTerm,
        context: kind === "transfer" ? TRANSFER_CONTEXT : null,
      }));
    }
  }

  // ---------------------------------------------------------------- message handling

  #handleVote(m: Message): void {
    const pre = m.type === "PreVote";
    const canVote = this.#vote === m.from || (this.#vote === NONE && this.#lead === NONE) ||
      (pre && m.term > this.#term);
    const respType = pre ? "PreVoteResp" : "VoteResp";
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      // Answer with the request's term (for a pre-vote it is ahead of ours).
      this.#send(message({ type: respType, to: m.from, term: m.term }));
      if (!pre) {
        this.#electionElapsed = 0;
        this.#vote = m.from;
      }
    } else {
      this.#send(message({ type: respType, to: m.from, term: this.#term, reject: true }));
    }
  }

  #stepLeader(m: Message): void {
    switch (m.type) {
      case "Prop":
        this.#leaderPropose(m.entries, false);
        return;
      case "ReadIndex":
        this.#leaderReadIndex(m);
        return;
      case "TransferLeader":
        if (m.context) this.#leaderTransfer(new TextDecoder().decode(m.context));
        return;
      case "App":
      case "Snap":
      case "Heartbeat":
        invariant(false, () => `leader ${this.id} of term ${this.#term} got ${m.type} from ${m.from} in its own term`);
    }
    const pr = this.#tracker.progress.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case "AppResp":
        this.#handleAppResp(m, pr);
        break;
      case "HeartbeatResp":
        this.#handleHeartbeatResp(m, pr);
        break;
    }
  }

  #handleAppResp(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      if (pr.maybeDecrTo(m.index, m.rejectHint)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.#sendAppend(m.from, true);
      }
      return;
    }
    invariant(
      m.index <= this.log.lastIndex(),
      () => `member ${m.from} acknowledged index ${m.index} beyond leader's last ${this.log.lastIndex()}`,
    );
    const oldPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) return;
    if (pr.state === "probe") pr.becomeReplicate();
    else if (pr.state === "snapshot" && pr.match >= pr.pendingSnapshot) pr.becomeProbe();
    else if (pr.state === "replicate") pr.inflights.freeLE(m.index);

    if (this.#maybeCommit()) this.#bcastAppend();
    else if (oldPaused) this.#sendAppend(m.from, true);
    while (this.#sendAppend(m.from, false)) { /* fill the in-flight window */ }
    if (m.from === this.#leadTransferee && pr.match === this.log.lastIndex()) this.#sendTimeoutNow(m.from);
  }

  #handleHeartbeatResp(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (pr.resendDue) {
      // The member is reachable: appends held back by a lost probe or a full window go out again.
      pr.resendDue = false;
      pr.probeSent = false;
      if (pr.state === "replicate" && pr.inflights.full()) pr.inflights.freeFirstOne();
      if (pr.match < this.log.lastIndex()) this.#sendAppend(m.from, true);
    }
    if (!m.context || m.context.length === 0) return;
    const acks = this.#readOnly.recvAck(m.from, m.context);
    if (!acks) return;
    let n = 0;
    for (const id of acks) if (this.#tracker.voters.has(id)) n++;
    if (n < this.#tracker.quorum()) return;
    for (const rs of this.#readOnly.advance(m.context)) this.#answerRead(rs.req, rs.index);
  }

  #stepCandidate(m: Message): void {
    switch (m.type) {
      case "App":
        this.#becomeFollower(m.term, m.from);
        this.#handleAppend(m);
        return;
      case "Heartbeat":
        this.#becomeFollower(m.term, m.from);
        this.#handleHeartbeat(m);
        return;
      case "Snap":
        this.#becomeFollower(m.term, m.from);
        this.#handleSnapshot(m);
        return;
      case "VoteResp":
      case "PreVoteResp": {
        const expected = this.#role === "preCandidate" ? "PreVoteResp" : "VoteResp";
        if (m.type !== expected) return;
        if (!this.#votes.has(m.from)) this.#votes.set(m.from, !m.reject);
        const res = this.#tracker.voteResult(this.#votes);
        if (res === "won") {
          if (this.#role === "preCandidate") {
            this.#campaign("election");
          } else {
            this.#becomeLeader();
            this.#bcastAppend();
          }
        } else if (res === "lost") {
          this.#becomeFollower(this.#term, NONE);
        }
        return;
      }
    }
    // Prop / ReadIndex / TransferLeader / TimeoutNow: no leader to give them to; dropped.
  }

  #stepFollower(m: Message): void {
    switch (m.type) {
      case "Prop":
        if (this.#lead === NONE || this.#disableForwarding) return;
        this.#send({ ...m, to: this.#lead, term: 0 });
        return;
      case "App":
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleAppend(m);
        return;
      case "Heartbeat":
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleHeartbeat(m);
        return;
      case "Snap":
        this.#electionElapsed = 0;
        this.#lead = m.from;
        this.#handleSnapshot(m);
        return;
      case "TransferLeader":
        if (this.#lead === NONE) return;
        this.#send({ ...m, to: this.#lead });
        return;
      case "TimeoutNow":
        // Leadership handed to us: campaign at once, skipping pre-vote and the voters' lease.
        this.#hup("transfer");
        return;
      case "ReadIndex":
        if (this.#lead === NONE) return;
        this.#send({ ...m, to: this.#lead, term: 0 });
        return;
      case "ReadIndexResp":
        if (m.context) this.#readStates.push({ index: m.index, ctx: m.context });
        return;
    }
  }

  #handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.#send(message({ type: "AppResp", to: m.from, index: this.log.committed }));
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      if (!m.commitOnly) this.#send(message({ type: "AppResp", to: m.from, index: lastNew }));
      return;
    }
    // Hint: our last index at or below the probe whose term is not newer than the leader's entry there, so
    // whole terms that cannot match are skipped.
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.#send(message({ type: "AppResp", to: m.from, index: m.index, reject: true, rejectHint: hint }));
  }

  #handleHeartbeat(m: Message): void {
    this.log.commitTo(m.commit);
    this.#send(message({ type: "HeartbeatResp", to: m.from, context: m.context }));
  }

  #handleSnapshot(m: Message): void {
    const s = m.snapshot;
    if (s && this.#restore(s)) {
      this.#send(message({ type: "AppResp", to: m.from, index: this.log.lastIndex() }));
    } else {
      this.#send(message({ type: "AppResp", to: m.from, index: this.log.committed }));
    }
  }

  /** Installs a snapshot from the leader; false when it brings nothing new. */
  #restore(s: Snapshot): boolean {
    if (s.metadata.index <= this.log.committed) return false;
    if (this.#role !== "follower") {
      this.#becomeFollower(this.#term + 1, NONE);
      return false;
    }
    if (this.log.matchTerm(s.metadata.index, s.metadata.term)) {
      // We have the entries: just learn that they are committed.
      this.log.commitTo(s.metadata.index);
      return false;
    }
    this.log.restore(s);
    this.#tracker.progress.clear();
    this.#tracker.voters.clear();
    this.#tracker.learners.clear();
    this.#restoreConf(s.metadata.confState);
    this.#restoredConfIndex = s.metadata.index;
    return true;
  }

  // ---------------------------------------------------------------- leader actions

  #proposeLocal(ents: Entry[]): void {
    if (this.#role === "leader") {
      this.#leaderPropose(ents, true);
    } else if (this.#role === "follower" && this.#lead !== NONE) {
      if (this.#disableForwarding) throw new ProposalDroppedError("proposal forwarding is disabled");
      this.#send(message({ type: "Prop", to: this.#lead, entries: ents }));
    } else {
      throw new ProposalDroppedError("no leader");
    }
  }

  #leaderPropose(ents: Entry[], local: boolean): void {
    const drop = (why: string) => {
      if (local) throw new ProposalDroppedError(why);
    };
    if (ents.length === 0) return;
    if (!this.#tracker.progress.has(this.id)) return drop("this member was removed");
    if (this.#leadTransferee !== NONE) return drop("leadership transfer in progress");
    const out: Entry[] = [];
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i];
      if (e.type === EntryType.ConfChange) {
        if (this.#pendingConfIndex > this.log.applied) {
          if (local) throw new ConfChangePendingError();
          // A forwarded change while another is pending: keep the slot, drop the change.
          out.push({ index: 0, term: 0, type: EntryType.Normal, data: EMPTY });
          continue;
        }
        this.#pendingConfIndex = this.log.lastIndex() + i + 1;
      }
      out.push(e);
    }
    if (!this.#appendEntries(out, false)) return drop("too many uncommitted bytes");
    this.#bcastAppend();
  }

  /** Appends entries at the end of the leader's log; false when the uncommitted-bytes quota refuses them. */
  #appendEntries(ents: Entry[], force: boolean): boolean {
    let bytes = 0;
    for (const e of ents) bytes += e.data.length;
    if (
      !force && this.#maxUncommittedBytes > 0 && this.#uncommittedBytes > 0 &&
      this.#uncommittedBytes + bytes > this.#maxUncommittedBytes
    ) return false;
    this.#uncommittedBytes += bytes;
    const li = this.log.lastIndex();
    const out = ents.map((e, i) => ({ index: li + 1 + i, term: this.#term, type: e.type, data: e.data }));
    const last = this.log.append(out);
    invariant(last === li + out.length, () => `leader ${this.id} overwrote its own log at ${li + 1}`);
    const self = this.#tracker.progress.get(this.id);
    if (self) self.next = last + 1;
    return true;
  }

  #maybeCommit(): boolean {
    const before = this.log.committed;
    if (!this.log.maybeCommit(this.#tracker.committedIndex(), this.#term)) return false;
    invariant(this.log.committed > before, () => "commit did not advance");
    if (this.#pendingReads.length > 0) {
      // First commit of this term: reads that waited for it can be handled now.
      const reads = this.#pendingReads;
      this.#pendingReads = [];
      for (const r of reads) this.#leaderReadIndex(r);
    }
    return true;
  }

  #leaderReadIndex(m: Message): void {
    if (this.log.term(this.log.committed) !== this.#term) {
      // Until an entry of this term is committed, our commit index may be behind the cluster's.
      this.#pendingReads.push(m);
      return;
    }
    if (this.#tracker.isSingleVoter(this.id)) {
      this.#answerRead(m, this.log.committed);
      return;
    }
    if (this.#readOnly.add(this.log.committed, m)) this.#readOnly.recvAck(this.id, m.context);
    this.#bcastHeartbeat(m.context);
  }

  #answerRead(req: Message, index: number): void {
    if (req.from === this.id || req.from === NONE) {
      if (req.context) this.#readStates.push({ index, ctx: req.context });
    } else {
      this.#send(message({ type: "ReadIndexResp", to: req.from, index, context: req.context }));
    }
  }

  #leaderTransfer(transferee: string): void {
    const pr = this.#tracker.progress.get(transferee);
    if (!pr || pr.isLearner || transferee === this.id) return;
    if (this.#leadTransferee !== NONE) {
      if (this.#leadTransferee === transferee) return;
      this.#abortLeaderTransfer();
    }
    // The transfer must finish within an election timeout, or it is abandoned.
    this.#electionElapsed = 0;
    this.#leadTransferee = transferee;
    if (pr.match === this.log.lastIndex()) this.#sendTimeoutNow(transferee);
    else this.#sendAppend(transferee, true);
  }

  #abortLeaderTransfer(): void {
    this.#leadTransferee = NONE;
  }

  #sendTimeoutNow(to: string): void {
    this.#send(message({ type: "TimeoutNow", to }));
  }

  /**
   * Sends the next append (or a snapshot) to `to`; returns whether a message was sent. `commitOnly`: an append
   * without entries is only a commit notice (see Message.commitOnly).
   */
  #sendAppend(to: string, sendIfEmpty: boolean, commitOnly = false): boolean {
    const pr = this.#tracker.progress.get(to);
    if (!pr || to === this.id || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    let ents: Entry[] | undefined;
    if (prevTerm !== undefined) {
      try {
        ents = this.log.entries(pr.next, this.#maxSizePerMsg);
      } catch (err) {
        if (!(err instanceof CompactedError)) throw err;
      }
    }
    if (prevTerm === undefined || ents === undefined) {
      // The entries it needs are compacted: send the snapshot instead.
      if (!pr.recentActive) return false;
      let snap: Snapshot;
      try {
        snap = this.log.snapshot();
      } catch (err) {
        if (err instanceof SnapshotTemporarilyUnavailableError) return false;
        throw err;
      }
      invariant(snap.metadata.index > 0, () => `need a non-empty snapshot to catch up ${to}`);
      this.#send(message({ type: "Snap", to, snapshot: snap }));
      pr.becomeSnapshot(snap.metadata.index);
      return true;
    }
    if (!sendIfEmpty && ents.length === 0) return false;
    ents = limitSize(ents, this.#maxSizePerMsg);
    this.#send(message({
      type: "App",
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
      commitOnly: commitOnly && ents.length === 0 && pr.state === "replicate",
    }));
    if (this.log.committed > pr.sentCommit) pr.sentCommit = this.log.committed;
    if (ents.length > 0) {
      if (pr.state === "replicate") {
        const last = ents[ents.length - 1].index;
        pr.optimisticUpdate(last);
        pr.inflights.add(last);
      } else if (pr.state === "probe") {
        pr.probeSent = true;
      }
    }
    return true;
  }

  /**
   * Appends to every follower are due: new entries, or a commit index they have not been sent. They are sent once,
   * when the next Ready is taken, so that every proposal and acknowledgement stepped before it shares one append per
   * follower (instead of one append per proposal and one commit notice per acknowledgement).
   */
  #bcastAppend(): void {
    this.#bcastPending = true;
  }

  #flushBcast(): void {
    if (!this.#bcastPending) return;
    this.#bcastPending = false;
    if (this.#role !== "leader") return;
    for (const [id, pr] of this.#tracker.progress) {
      if (id === this.id) continue;
      if (pr.next <= this.log.lastIndex() || pr.state !== "replicate") {
        // new entries (or a probe): fill the in-flight window, or at least tell the commit index
        if (!this.#sendAppend(id, pr.sentCommit < this.log.committed || pr.state !== "replicate")) continue;
        while (this.#sendAppend(id, false)) { /* fill the in-flight window */ }
      } else if (pr.sentCommit < this.log.committed) {
        this.#sendAppend(id, true, true);
      }
    }
  }

  #bcastHeartbeat(ctx: Uint8Array | null): void {
    const context = ctx ?? this.#readOnly.lastPendingContext();
    for (const [id, pr] of this.#tracker.progress) {
      if (id === this.id) continue;
      // Never tell a member to commit beyond what it is known to hold.
      const commit = Math.min(pr.match, this.log.committed);
      this.#send(message({ type: "Heartbeat", to: id, commit, context }));
    }
  }

  // ---------------------------------------------------------------- membership helpers

  #addMember(id: string, learner: boolean): void {
    const t = this.#tracker;
    if (t.voters.has(id)) return; // already a voter (a voter is never demoted)
    if (t.learners.has(id)) {
      if (learner) return;
      t.learners.delete(id);
      t.voters.add(id);
      t.progress.get(id)!.isLearner = false;
      return;
    }
    if (learner) t.learners.add(id);
    else t.voters.add(id);
    const pr = new Progress(this.log.lastIndex() + 1, t.maxInflight, learner);
    // A new member counts as active until the next check-quorum round.
    pr.recentActive = true;
    if (id === this.id) pr.match = this.log.stableLastIndex();
    t.progress.set(id, pr);
  }

  #restoreConf(cs: ConfState): void {
    for (const v of cs.voters) this.#addMember(v, false);
    for (const l of cs.learners) this.#addMember(l, true);
  }

  #send(m: Message): void {
    m.from = this.id;
    if (m.type === "Vote" || m.type === "PreVote" || m.type === "VoteResp" || m.type === "PreVoteResp") {
      invariant(m.term !== 0, () => `term should be set when sending ${m.type}`);
    } else if (m.type === "Prop" || m.type === "ReadIndex") {
      m.term = 0;
    } else {
      m.term = this.#term;
    }
    this.#msgs.push(m);
  }
}

/**
 * Merges messages of one Ready that say nothing the last of them does not: forwarded proposals to the same leader
 * become one proposal (entries in order), and of the accepting append responses to the same member in the same term
 * only the one acknowledging the most is kept (the leader only moves its view of the member forward). Rejections
 * and every other message are kept as they are, in order.
 */
export function coalesce(msgs: Message[]): Message[] {
  if (msgs.length < 2) return msgs;
  const out: (Message | null)[] = [];
  const props = new Map<string, Message>();
  const acks = new Map<string, number>();
  let dropped = false;
  for (const m of msgs) {
    if (m.type === "Prop") {
      const first = props.get(m.to);
      if (first) {
        first.entries = first.entries.concat(m.entries);
        continue;
      }
      const copy = { ...m, entries: m.entries };
      props.set(m.to, copy);
      out.push(copy);
      continue;
    }
    if (m.type === "AppResp" && !m.reject) {
      const key = `${m.to}/${m.term}`;
      const at = acks.get(key);
      if (at !== undefined) {
        if (out[at]!.index >= m.index) continue;
        out[at] = null; // superseded: the later, larger acknowledgement goes out in its own place
        dropped = true;
      }
      acks.set(key, out.length);
    }
    out.push(m);
  }
  return dropped ? out.filter((m): m is Message => m !== null) : out as Message[];
}
