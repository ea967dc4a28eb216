/**
 * A member's replicated state machine: the Raft core, its durable log (WAL + snapshots), the peer transport and the
 * apply loop around the MVCC store.
 *
 * The write path: `propose` → Raft entry (forwarded to the leader by followers) → Ready → the leader sends appends
 * while it writes its own copy → WAL append + one fdatasync for everything in the Ready (group commit) → commit by a
 * majority → apply to the store → the waiting caller gets its response. Linearizable reads go through ReadIndex,
 * batched: one round confirms leadership for every read that arrived before it.
 * A single-member cluster runs the same path; its entries commit as soon as they are on its own disk.
 */
import type tls from "node:tls";
import { Applier } from "../apply/applier.ts";
import { BackendQuota, requestCost } from "../apply/quota.ts";
import { decodeState, encodeState } from "../apply/state_codec.ts";
import { Code, Errors, EtcdError } from "../errors.ts";
import { Lessor } from "../lease/lessor.ts";
import { type Member, type MemberContext, Members } from "../membership/members.ts";
import { MvccStore } from "../mvcc/store.ts";
import { hostPort, PeerTransport, snapshotLimit } from "../peer/transport.ts";
import type { PeerCertPolicy } from "../peer/peer_cert.ts";
import { NodeMetrics } from "../metrics/node.ts";
import type { LogFields } from "../etcd/log.ts";
import { CatchUpLog } from "./catch_up_log.ts";
import { MemoryStorage } from "../raft/log.ts";
import { RaftNode } from "../raft/raft.ts";
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  type Entry,
  EntryType,
  type Message,
  ProposalDroppedError,
  RaftInvariantError,
  type ReadState,
  type Snapshot,
  type SoftState,
} from "../raft/types.ts";
import { type Snapshot as SnapshotFile, Snapshotter } from "../snap/snapshotter.ts";
import { Wal } from "../wal/wal.ts";
import { putTrace, Stage } from "../trace/put_trace.ts";
import { AlarmAction, AlarmType, decodeInternal, encodeInternal, type InternalRequestShape } from "../../proto/mod.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

/** Configuration of a member's storage, identity and timing. */
export interface NodeConfig {
  /** where snapshots live: <data-dir>/member/snap */
  snapDir: string;
  /** where the WAL lives: --wal-dir or <data-dir>/member/wal */
  walDir: string;
  clusterId: string;
  memberId: string;
  /** members known from the command line: the founding members of a new cluster, or the cluster being joined */
  initialMembers: Member[];
  /** bootstrap a new cluster when the data dir is empty (--initial-cluster-state new) */
  newCluster: boolean;
  /** take a snapshot and release old WAL segments every this many applied entries */
  snapshotCount: number;
  minLeaseTTL: number;
  quotaBytes: number;
  /** entries larger than this are refused with "request is too large" */
  maxRequestBytes: number;
  heartbeatMs: number;
  electionMs: number;
  /** TLS for dialing peers (https peer URLs); plaintext when absent */
  peerTls?: tls.ConnectionOptions;
  /** --peer-cert-allowed-cn / --peer-cert-allowed-hostname (server/peer/peer_cert.ts) */
  peerCert?: PeerCertPolicy;
  log: (msg: string, fields?: LogFields) => void;
  /** --force-repair-wal: truncate the WAL at a damaged record instead of refusing to start */
  forceRepairWal?: boolean;
}

/**
 * A request waiting for its entry to apply or its read to be confirmed. It fails once `deadline` (performance.now())
 * has passed: the clock's tick looks for expired waiters, so that no request needs a timer of its own (setting one
 * took about 10 µs of the 60 µs from a put's bytes on the leader to its first append on the wire).
 */
interface Waiter {
  resolve: (r: Obj) => void;
  reject: (e: unknown) => void;
  deadline: number;
  /** answered or failed (reads: a waiter stays in the read structures until they drop it) */
  settled: boolean;
}

/**
 * After the connection to the leader broke, a follower campaigns after LEADER_LOST_MIN_MS plus a random share of
 * LEADER_LOST_SPREAD_MS: the others see the same broken connection within milliseconds, and the spread keeps two
 * followers from splitting the vote.
 */
const LEADER_LOST_MIN_MS = 20;
const LEADER_LOST_SPREAD_MS = 200;

/** Replayed WAL entries are handed to the Raft log this many at a time. */
const REPLAY_PIECE = 4096;

/** Entries a leader keeps in memory after a snapshot so slow followers can catch up without one. */
const CATCH_UP_ENTRIES = 5000;

/** One member's log, state machine and proposal pipeline. */
export class Node {
  readonly store = new MvccStore();
  readonly lessor: Lessor;
  readonly applier: Applier;
  /** --quota-backend-bytes: checked before proposing a write, and after applying one (to raise NOSPACE) */
  readonly quota: BackendQuota;
  readonly members = new Members();
  readonly storage = new MemoryStorage();
  /** what /metrics shows of this member (server/metrics) */
  readonly metrics = new NodeMetrics();
  raft!: RaftNode;
  transport!: PeerTransport;
  appliedIndex = 0;
  /** Set when the member is stopped: proposals are refused. */
  stopped = false;
  /** Called when this member has been removed from the cluster. */
  onRemoved: () => void = () => {};
  /** Called when a snapshot from the leader replaced the whole state (watchers must resynchronize). */
  onRestore: () => void = () => {};

  #wal!: Wal;
  #snap: Snapshotter;
  #snapIndex = 0;
  #cfg: NodeConfig;
  /** proposals waiting to be applied, by request ID, in the order they were made (so also by deadline) */
  #proposals = new Map<string, Waiter>();
  #reqSeq = 0n;
  #reqPrefix: bigint;
  #processing = false;
  /**
   * Raft membership as of `appliedIndex` (etcd's confState of the apply loop). The Raft core's own is ahead of it
   * from the moment a leader's snapshot is stepped until its Ready is applied, so snapshots must not use it.
   */
  #appliedConf: ConfState = { voters: [], learners: [] };
  #processScheduled = false;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #leaderWaiters: Array<() => void> = [];
  /** reads waiting for the next ReadIndex round */
  #readQueue: Waiter[] = [];
  /** reads of the round in flight, by context */
  #readRounds = new Map<string, { waiters: Waiter[]; sentAt: number }>();
  /** reads confirmed by a ReadIndex, waiting for the applied index to reach it */
  #readsToServe: Array<{ index: number; waiters: Waiter[] }> = [];
  /** every read waiter not yet known to be settled, in arrival order (so also by deadline) */
  #readDeadlines: Waiter[] = [];
  #readSeq = 0;
  /**
   * Unique to this process start: a leader may still hold a read round of this member's previous process under the
   * same sequence number, and would answer the new round with that round's older index (a stale read).
   */
  readonly #readPrefix = crypto.randomUUID();
  #snapshotting = false;
  #catchUp: CatchUpLog;
  #lastLeader = "0";
  #raisingNoSpace: Promise<void> | undefined;

  private constructor(cfg: NodeConfig) {
    this.#cfg = cfg;
    this.lessor = new Lessor(cfg.minLeaseTTL);
    this.applier = new Applier(this.store, this.lessor, (rev) => this.header(rev));
    this.quota = new BackendQuota(cfg.quotaBytes);
    this.#snap = new Snapshotter(cfg.snapDir, { log: cfg.log });
    this.#catchUp = new CatchUpLog(cfg.log);
    this.#reqPrefix = (BigInt(cfg.memberId) & 0xffffn) << 48n | (BigInt(Date.now()) & 0xffffffffffn) << 8n;
  }

  /** Opens (or creates) the member's storage; the state machine is rebuilt from the newest snapshot, and Raft then
   * re-delivers the committed entries after it. */
  static async open(cfg: NodeConfig): Promise<Node> {
    const n = new Node(cfg);
    await Deno.mkdir(cfg.snapDir, { recursive: true });
    const metadata = new TextEncoder().encode(JSON.stringify({ clusterId: cfg.clusterId, memberId: cfg.memberId }));
    let chosen: SnapshotFile | null = null;
    const { wal, contents } = await Wal.open(cfg.walDir, {
      log: cfg.log,
      progress: cfg.log,
      metadata,
      forceRepair: cfg.forceRepairWal,
      // as etcd: the newest snapshot file the WAL records, at an index the WAL's hard state has committed
      chooseSnapshot: async (marks, hs) => {
        chosen = await n.#snap.loadNewest(marks.filter((m) => m.index <= hs.commit));
        return chosen?.index ?? 0;
      },
    });
    n.#wal = wal;
    const snap = chosen as SnapshotFile | null;
    if (snap) {
      const meta = decodeState(snap.data, n.store, n.lessor, n.applier.alarms, n.members, n.applier.auth);
      n.appliedIndex = meta.appliedIndex;
      n.#snapIndex = snap.index;
      n.#appliedConf = meta.confState;
      n.storage.applySnapshot({
        metadata: { index: snap.index, term: snap.term, confState: meta.confState },
        data: snap.data,
      });
      cfg.log(`recovered store from snapshot at index ${snap.index} (revision ${n.store.currentRev})`);
    }
    const restarted = contents.metadata !== null &&
      (contents.hardState.term > 0 || contents.entries.length > 0 || !!snap);
    if (contents.metadata) {
      // An existing member keeps the identity it was created with, whatever the flags say now.
      const meta = JSON.parse(new TextDecoder().decode(contents.metadata));
      if (restarted && (meta.clusterId !== cfg.clusterId || meta.memberId !== cfg.memberId)) {
        cfg.log(`using the identity in the data dir: member ${meta.memberId} of cluster ${meta.clusterId}`);
      }
      cfg.clusterId = meta.clusterId;
      cfg.memberId = meta.memberId;
    }
    if (contents.hardState.term > 0) n.storage.setHardState(contents.hardState);
    // in pieces, so that the replayed log is never held as one Entry object per entry (MemoryStorage copies the data)
    const replayed = contents.entries.length;
    for (let i = 0; i < replayed; i += REPLAY_PIECE) n.storage.append(contents.entries.slice(i, i + REPLAY_PIECE));
    contents.entries.release(); // MemoryStorage holds copies
    if (!snap) { for (const m of cfg.initialMembers) if (!n.members.has(m.ID)) n.members.add(m); }
    const voters = cfg.initialMembers.filter((m) => !m.isLearner).map((m) => m.ID);
    const fresh = n.storage.lastIndex() === 0 && !snap;
    n.raft = new RaftNode({
      id: cfg.memberId,
      storage: n.storage,
      random: Math.random,
      electionTick: Math.max(2, Math.round(cfg.electionMs / cfg.heartbeatMs)),
      heartbeatTick: 1,
      preVote: true,
      checkQuorum: true,
      maxInflightMsgs: 256,
      maxSizePerMsg: 1 << 20,
      maxUncommittedBytes: 64 << 20,
      applied: n.appliedIndex,
      bootstrap: fresh && cfg.newCluster ? voters : undefined,
    });
    n.transport = new PeerTransport({
      selfId: cfg.memberId,
      clusterId: cfg.clusterId,
      tls: cfg.peerTls,
      addressOf: (id) => {
        const m = n.members.get(id) ?? cfg.initialMembers.find((x) => x.ID === id);
        return m && m.peerURLs.length > 0 ? hostPort(m.peerURLs[0]) : undefined;
      },
      receive: (msgs) => n.#receive(msgs),
      unreachable: (id) => n.raft.reportUnreachable(id),
      disconnected: (id) => n.#leaderDisconnected(id),
      snapshotSent: (id, ok) => {
        n.raft.reportSnapshot(id, ok);
        n.#schedule();
      },
      lease: (id, renew) => n.leaseAsLeader(id, renew),
      standing: (id) => n.members.has(id) ? "member" : n.members.removed.has(id) ? "removed" : "unknown",
      removed: () => n.onRemoved(),
      peerURLs: (id) => n.members.get(id)?.peerURLs ?? [],
      peerCert: cfg.peerCert,
      maxSnapshotBytes: snapshotLimit(cfg.quotaBytes),
      stats: n.metrics,
      log: cfg.log,
    });
    if (replayed > 0 || snap) {
      cfg.log(
        `log holds entries up to ${n.storage.lastIndex()} (commit ${contents.hardState.commit}, term ${contents.hardState.term})`,
      );
    }
    return n;
  }

  /** Starts the clock and the Raft loop. */
  async start(): Promise<void> {
    await this.#process();
    this.#ticker = setInterval(() => {
      this.transport.keepConnected(this.members.list().map((m) => m.ID));
      this.#raftCall("tick", () => this.raft.tick());
      this.#catchUp.observe(this.raft.status());
      const now = performance.now();
      this.#expireWaiters(now);
      this.transport.expire(now);
      this.#retryReads();
      this.#schedule();
    }, this.#cfg.heartbeatMs);
    // A lone voter need not wait an election timeout to lead.
    const cs = this.raft.confState();
    if (cs.voters.length === 1 && cs.voters[0] === this.memberId && !this.raft.isLeader) {
      this.raft.campaign();
      this.#schedule();
    }
  }

  /** This member's ID (decimal uint64). */
  get memberId(): string {
    return this.#cfg.memberId;
  }

  /** The cluster's ID (decimal uint64). */
  get clusterId(): string {
    return this.#cfg.clusterId;
  }

  /** Current Raft term. */
  get term(): number {
    return this.raft.term;
  }

  /** Index of the last entry in the log. */
  get lastIndex(): number {
    return this.raft.log.lastIndex();
  }

  /** The leader's ID, "0" when unknown. */
  get leader(): string {
    return this.raft.lead;
  }

  get isLeader(): boolean {
    return this.raft.isLeader;
  }

  /** Proposals made here and not yet applied (etcd_server_proposals_pending). */
  get pendingProposals(): number {
    return this.#proposals.size;
  }

  /** The Raft role in etcd's words (as Easegress shows it): Leader, Follower, Candidate or PreCandidate. */
  raftState(): "Leader" | "Follower" | "Candidate" | "PreCandidate" {
    const names = {
      leader: "Leader",
      follower: "Follower",
      candidate: "Candidate",
      preCandidate: "PreCandidate",
    } as const;
    return names[this.raft.role];
  }

  /** The ResponseHeader for a response at store revision `rev`. */
  header(rev: number): { cluster_id: string; member_id: string; revision: number; raft_term: string } {
    return { cluster_id: this.#cfg.clusterId, member_id: this.#cfg.memberId, revision: rev, raft_term: `${this.term}` };
  }

  /** Resolves once a leader is known (immediately if one is), or rejects after `ms`. */
  waitForLeader(ms: number): Promise<void> {
    if (this.raft.lead !== "0") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.#leaderWaiters = this.#leaderWaiters.filter((w) => w !== done);
        reject(Errors.noLeader());
      }, ms);
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      this.#leaderWaiters.push(done);
    });
  }

  get #requestTimeout(): number {
    return 5000 + 2 * this.#cfg.electionMs;
  }

  #nextId(): string {
    return (this.#reqPrefix + this.#reqSeq++).toString();
  }

  #waiter(resolve: (r: Obj) => void, reject: (e: unknown) => void): Waiter {
    return { resolve, reject, deadline: performance.now() + this.#requestTimeout, settled: false };
  }

  /** Fails the requests whose deadline has passed: "no leader" while none is known, else a timeout. */
  #expireWaiters(now: number): void {
    const failure = () => this.raft.lead === "0" ? Errors.noLeader() : Errors.timeout();
    for (const [id, w] of this.#proposals) {
      if (w.deadline > now) break;
      this.#proposals.delete(id);
      w.settled = true;
      this.metrics.proposalsFailed.inc();
      w.reject(failure());
    }
    const reads = this.#readDeadlines;
    let keep = 0;
    while (keep < reads.length && (reads[keep].settled || reads[keep].deadline <= now)) {
      const w = reads[keep++];
      if (w.settled) continue;
      w.settled = true;
      w.reject(failure());
    }
    if (keep > 0) this.#readDeadlines = reads.slice(keep);
  }

  /** Proposes a request; resolves with its response once it is committed and applied here. */
  async propose(req: InternalRequestShape): Promise<Obj> {
    if (this.stopped) throw Errors.stopped();
    const id = this.#nextId();
    const data = encodeInternal({ ...req, id });
    if (data.length > this.#cfg.maxRequestBytes) throw Errors.requestTooLarge();
    if (this.raft.lead === "0") await this.waitForLeader(2 * this.#cfg.electionMs);
    return new Promise((resolve, reject) => {
      this.#proposals.set(id, this.#waiter(resolve, reject));
      try {
        this.raft.propose(data);
        if (putTrace.on) putTrace.proposed(this.raft.isLeader ? this.lastIndex : 0);
      } catch (err) {
        this.#stopOnInvariant(err, "proposing");
        this.#proposals.delete(id);
        this.metrics.proposalsFailed.inc();
        reject(err instanceof ProposalDroppedError ? Errors.noLeader() : err);
        return;
      }
      this.#schedule();
    });
  }

  /**
   * Proposes this member's NOSPACE alarm, unless the alarm list already holds one or one is on its way; resolves
   * once it is applied here (or failed: the next write over quota tries again).
   */
  async raiseNoSpace(): Promise<void> {
    if (this.#raisingNoSpace || this.applier.noSpace) return await this.#raisingNoSpace;
    const alarm = { action: AlarmAction.ACTIVATE, memberID: this.memberId, alarm: AlarmType.NOSPACE };
    this.#raisingNoSpace = this.propose({ id: "", op: "alarm", alarm }).then(
      () => this.#cfg.log(`raised the NOSPACE alarm: the store (${this.store.sizeBytes} bytes) is at the quota`),
      (err) => this.#cfg.log(`raising the NOSPACE alarm failed: ${err}`),
    ).finally(() => this.#raisingNoSpace = undefined);
    return await this.#raisingNoSpace;
  }

  /** Proposes a membership change; resolves with the member list once it is applied here. */
  async proposeConfChange(cc: ConfChange): Promise<Obj> {
    if (this.stopped) throw Errors.stopped();
    if (this.raft.lead === "0") await this.waitForLeader(2 * this.#cfg.electionMs);
    const id = this.#nextId();
    return new Promise((resolve, reject) => {
      this.#proposals.set(id, this.#waiter(resolve, reject));
      try {
        this.raft.proposeConfChange({ ...cc, id });
      } catch (err) {
        this.#stopOnInvariant(err, "proposing a membership change");
        this.#proposals.delete(id);
        reject(
          err instanceof ProposalDroppedError
            ? Errors.noLeader()
            : new EtcdError(Code.FAILED_PRECONDITION, `etcdserver: ${(err as Error).message}`),
        );
        return;
      }
      this.#schedule();
    });
  }

  /** Resolves when a linearizable read may be served from the local state. */
  readIndex(): Promise<void> {
    if (this.stopped) return Promise.reject(Errors.stopped());
    return new Promise((resolve, reject) => {
      const w = this.#waiter(() => resolve(), reject);
      this.#readQueue.push(w);
      this.#readDeadlines.push(w);
      if (this.#readRounds.size === 0) this.#startReadRound();
    });
  }

  #startReadRound(): void {
    if (this.#readQueue.length === 0 || this.raft.lead === "0") return;
    const waiters = this.#readQueue;
    this.#readQueue = [];
    const ctx = `${this.memberId}/${this.#readPrefix}/${++this.#readSeq}`;
    this.#readRounds.set(ctx, { waiters, sentAt: performance.now() });
    try {
      this.raft.readIndex(new TextEncoder().encode(ctx));
    } catch (err) {
      this.#stopOnInvariant(err, "asking for a read index");
      // no leader after all: the round is asked again by the tick, like a lost one (#retryReads)
    }
    this.#schedule();
  }

  /** Re-issues read rounds that got no answer (lost messages, leader change): etcd retries every 500 ms. */
  #retryReads(): void {
    const now = performance.now();
    for (const [ctx, round] of this.#readRounds) {
      if (now - round.sentAt < 500) continue;
      this.#readRounds.delete(ctx);
      this.#readQueue.unshift(...round.waiters);
    }
    if (this.#readRounds.size === 0) this.#startReadRound();
  }

  #onReadState(rs: ReadState): void {
    const ctx = new TextDecoder().decode(rs.ctx);
    const round = this.#readRounds.get(ctx);
    if (!round) return;
    this.#readRounds.delete(ctx);
    this.#readsToServe.push({ index: rs.index, waiters: round.waiters });
    this.#startReadRound();
  }

  #serveReads(): void {
    if (this.#readsToServe.length === 0) return;
    const rest: Array<{ index: number; waiters: Waiter[] }> = [];
    for (const r of this.#readsToServe) {
      if (r.index > this.appliedIndex) {
        rest.push(r);
        continue;
      }
      for (const w of r.waiters) {
        if (w.settled) continue; // timed out meanwhile
        w.settled = true;
        w.resolve({});
      }
    }
    this.#readsToServe = rest;
  }

  /** Lease keep-alive/TTL as the leader answers it (followers ask the leader through the peer transport). */
  leaseAsLeader(id: string, renew: boolean): Promise<{ ttl: number; granted_ttl: number }> {
    if (!this.raft.isLeader) return Promise.reject(Errors.notLeader());
    const l = this.lessor.get(id);
    if (!l) return Promise.resolve({ ttl: renew ? 0 : -1, granted_ttl: 0 });
    if (renew) return Promise.resolve({ ttl: this.lessor.renew(id), granted_ttl: l.ttl });
    return Promise.resolve({ ttl: this.lessor.remaining(id), granted_ttl: l.ttl });
  }

  /** Keep-alive or TTL question, answered by the leader wherever it is asked. */
  async lease(id: string, renew: boolean): Promise<{ ttl: number; granted_ttl: number }> {
    if (this.raft.lead === "0") await this.waitForLeader(2 * this.#cfg.electionMs);
    if (this.raft.isLeader) return this.leaseAsLeader(id, renew);
    return await this.transport.askLease(this.raft.lead, id, renew);
  }

  /**
   * How many of `ids` this member has been connected to for at least `ms` (itself included): etcd's view of which
   * members a reconfiguration can count on.
   */
  connectedFor(ids: string[], ms: number): number {
    const since = Date.now() - ms;
    let n = 0;
    for (const id of ids) {
      const t = this.transport.activeSince(id);
      if (id === this.memberId || (t > 0 && t <= since)) n++;
    }
    return n;
  }

  /** Whether the connection to member `id` is up. */
  peerConnected(id: string): boolean {
    return this.transport.activeSince(id) > 0;
  }

  /** Whether a learner has caught up enough to be promoted (etcd: within 10 % of the leader's log). */
  learnerInSync(id: string): boolean {
    if (!this.raft.isLeader) throw Errors.notLeader();
    const p = this.raft.status().progress?.[id];
    if (!p) return false;
    return p.match >= this.raft.log.committed * 0.9;
  }

  /** The voter (other than this leader) with the most replicated log, if any. */
  bestTransferee(): string | undefined {
    const progress = this.raft.status().progress ?? {};
    let best: string | undefined, match = -1;
    for (const id of this.raft.confState().voters) {
      if (id === this.memberId) continue;
      const p = progress[id];
      if (p && p.recentActive && p.match > match) {
        best = id;
        match = p.match;
      }
    }
    return best;
  }

  /** Hands leadership to another voter; resolves once it leads (or rejects on timeout). */
  async transferLeadership(to: string): Promise<void> {
    if (!this.raft.isLeader) throw Errors.notLeader();
    this.raft.transferLeader(to);
    this.#schedule();
    const deadline = Date.now() + 2 * this.#cfg.electionMs + 1000;
    while (this.raft.lead !== to) {
      if (Date.now() > deadline) throw Errors.timeout();
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * The connection to our leader broke. When its process died (kill -9, crash), the kernel closed its sockets and
   * every follower sees this at once: they stop following it (so they grant each other's votes without waiting for
   * its lease to run out) and one campaigns after a short random delay, instead of all waiting a full election
   * timeout. If the leader is in fact alive, the others still follow it and refuse the pre-vote; nothing changes.
   */
  #leaderDisconnected(id: string): void {
    if (this.stopped || id !== this.raft.lead || this.raft.isLeader) return;
    this.#cfg.log(`lost the connection to the leader ${BigInt(id).toString(16)}`);
    this.raft.forgetLeader();
    this.#failForwarded();
    this.#schedule();
    const delay = LEADER_LOST_MIN_MS + Math.random() * LEADER_LOST_SPREAD_MS;
    setTimeout(() => {
      if (this.stopped || this.raft.lead !== "0" || this.raft.role !== "follower") return;
      this.#raftCall("campaigning", () => this.raft.campaign());
      this.#schedule();
    }, delay);
  }

  /**
   * Fails the proposals this follower forwarded to the leader it lost, as etcd does once their deadline passes:
   * their fate is unknown (the new leader may still commit one), so the answer is the same as at the deadline, only
   * sooner — the client need not wait out its timeout before it writes again.
   */
  #failForwarded(): void {
    for (const [id, w] of this.#proposals) {
      this.#proposals.delete(id);
      w.settled = true;
      this.metrics.proposalsFailed.inc();
      w.reject(Errors.timeoutDueToLeaderFail());
    }
  }

  #receive(msgs: Message[]): void {
    for (const m of msgs) {
      if (m.to !== this.memberId) continue;
      try {
        this.raft.step(m);
      } catch (err) {
        this.#stopOnInvariant(err, `stepping ${m.type} from ${m.from} (term ${m.term})`);
        this.#cfg.log(`raft: dropped ${m.type} from ${m.from}: ${err}`);
      }
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#processScheduled) return;
    this.#processScheduled = true;
    queueMicrotask(() => {
      this.#processScheduled = false;
      this.#process().catch((err) => {
        this.#stopOnInvariant(err, "handling a Ready");
        this.#fatal(err);
      });
    });
  }

  /** Calls into the Raft core where nothing else catches: any error stops the member. */
  #raftCall(what: string, call: () => void): void {
    try {
      call();
    } catch (err) {
      this.#stopOnInvariant(err, what);
      this.#fatal(err);
    }
  }

  /**
   * A broken invariant of the Raft core (two leaders in a term, a conflict with a committed entry, a commit beyond the
   * last index, ...) means this member's state can no longer be trusted: it stops, as etcd panics, wherever the error
   * was raised (stepping a message, a tick, a proposal or the Ready loop).
   */
  #stopOnInvariant(err: unknown, what: string): void {
    if (!(err instanceof RaftInvariantError)) return;
    this.#cfg.log(`stopping this member: ${err.message} (while ${what}); its Raft state can no longer be trusted`);
    this.#fatal(err);
  }

  #fatal(err: unknown): never {
    this.#cfg.log(`fatal: ${err instanceof Error ? err.stack ?? err.message : err}`);
    Deno.exit(1);
  }

  /** Drains Readies one at a time, in the order the Raft core requires (see server/raft/README.md). */
  async #process(): Promise<void> {
    if (this.#processing || this.stopped) return;
    this.#processing = true;
    try {
      while (this.raft.hasReady()) {
        const rd = this.raft.ready();
        if (putTrace.on) putTrace.entries(Stage.ready, rd.entries);
        if (rd.softState) this.#onSoftState(rd.softState);
        if (rd.preSyncMessages.length > 0) {
          // appends go out before this member writes its own copy, so followers persist in parallel
          this.transport.send(rd.preSyncMessages);
          this.transport.flush();
        }
        if (rd.snapshot) await this.#persistSnapshot(rd.snapshot);
        if (rd.entries.length > 0 || rd.hardState) this.#wal.append(rd.entries, rd.hardState);
        if (rd.mustSync) {
          const start = performance.now();
          this.#wal.sync();
          this.metrics.walFsync.observe((performance.now() - start) / 1000);
        }
        if (putTrace.on) putTrace.entries(Stage.fsync, rd.entries);
        if (rd.messages.length > 0) {
          // what waited for the disk (acks, votes) goes out at once, before this turn's applying
          this.transport.send(rd.messages);
          this.transport.flush();
        }
        if (rd.snapshot) this.storage.applySnapshot(rd.snapshot);
        this.storage.append(rd.entries);
        if (rd.hardState) this.storage.setHardState(rd.hardState);
        if (rd.snapshot) this.#restore(rd.snapshot);
        if (rd.committedEntries.length > 0) {
          const start = performance.now();
          if (putTrace.on) putTrace.entries(Stage.commit, rd.committedEntries);
          for (const e of rd.committedEntries) this.#applyEntry(e);
          if (putTrace.on) putTrace.entries(Stage.apply, rd.committedEntries);
          this.metrics.batchApplied(performance.now() - start);
        }
        for (const rs of rd.readStates) this.#onReadState(rs);
        this.raft.advance(rd);
        this.#serveReads();
        this.#maybeSnapshot();
      }
    } finally {
      this.#processing = false;
    }
  }

  #onSoftState(s: SoftState): void {
    if (s.lead !== this.#lastLeader) {
      if (s.lead !== "0") this.metrics.leaderChanges.inc();
      this.#cfg.log(
        s.lead === "0"
          ? `lost the leader at term ${this.term}`
          : `leader is ${BigInt(s.lead).toString(16)} at term ${this.term}`,
      );
      this.#lastLeader = s.lead;
    }
    if (s.role === "leader") this.lessor.extendAll(); // a new leader restarts every lease's clock, as etcd does
    if (s.lead !== "0") {
      const ws = this.#leaderWaiters;
      this.#leaderWaiters = [];
      for (const w of ws) w();
      this.#startReadRound();
    }
  }

  #applyEntry(e: Entry): void {
    if (e.index <= this.appliedIndex) return;
    this.appliedIndex = e.index;
    if (e.type === EntryType.ConfChange) return this.#applyConfChange(decodeConfChange(e.data));
    if (e.data.length === 0) return; // a new leader's empty entry
    let req: InternalRequestShape;
    try {
      req = decodeInternal(e.data);
    } catch (err) {
      this.#fatal(new Error(`entry ${e.index} cannot be decoded: ${err}`));
    }
    const w = this.#takeProposal(req.id);
    try {
      let resp: Obj;
      if (req.op === "member_attributes") {
        const a = req.member_attributes!;
        this.members.publish(a.member_id, a.name, a.client_urls);
        resp = {};
      } else {
        const sizeBefore = this.store.sizeBytes;
        resp = this.applier.apply(req);
        // as etcd's quota applier: a write that did not fit this member's quota was still applied (everywhere
        // alike); this member then raises NOSPACE through the log
        if (!this.quota.available(sizeBefore, requestCost(req))) queueMicrotask(() => void this.raiseNoSpace());
      }
      w?.resolve(resp);
    } catch (err) {
      if (!(err instanceof EtcdError)) this.#cfg.log(`apply of entry ${e.index} failed: ${err}`);
      w?.reject(err);
    }
  }

  /** The waiter of a proposal made here, if it still waits (it is then this caller's to settle). */
  #takeProposal(id: string): Waiter | undefined {
    const w = this.#proposals.get(id);
    if (!w) return undefined;
    this.#proposals.delete(id);
    w.settled = true;
    return w;
  }

  #applyConfChange(cc: ConfChange): void {
    const w = cc.id ? this.#takeProposal(cc.id) : undefined;
    const ctx: Partial<MemberContext> = cc.context && cc.context.length > 0
      ? JSON.parse(new TextDecoder().decode(cc.context))
      : {};
    const known = this.#cfg.initialMembers.find((m) => m.ID === cc.nodeId);
    switch (cc.type) {
      case ConfChangeType.AddNode:
      case ConfChangeType.AddLearnerNode:
        this.members.add({
          ID: cc.nodeId,
          name: known?.name ?? "",
          peerURLs: ctx.peerURLs ?? known?.peerURLs ?? [],
          clientURLs: [], // published by the member itself (an attributes request), as in etcd
          isLearner: cc.type === ConfChangeType.AddLearnerNode,
        });
        break;
      case ConfChangeType.RemoveNode:
        this.members.remove(cc.nodeId);
        this.transport.drop(cc.nodeId);
        this.metrics.dropPeer(cc.nodeId);
        break;
      case ConfChangeType.UpdateNode:
        if (ctx.peerURLs) this.members.updatePeerURLs(cc.nodeId, ctx.peerURLs);
        break;
    }
    this.#appliedConf = this.raft.applyConfChange(cc);
    w?.resolve({ members: this.members.list() });
    if (cc.type === ConfChangeType.RemoveNode && cc.nodeId === this.memberId) {
      this.#cfg.log("this member has been permanently removed from the cluster");
      queueMicrotask(() => this.onRemoved());
    }
  }

  /** Encodes a conf change for a MemberAdd/Update request. */
  static confChange(type: number, nodeId: string, ctx?: MemberContext | { peerURLs: string[] }): ConfChange {
    return {
      type: type as ConfChange["type"],
      nodeId,
      context: ctx ? new TextEncoder().encode(JSON.stringify(ctx)) : undefined,
    };
  }

  async #persistSnapshot(s: Snapshot): Promise<void> {
    await this.#snap.save({ index: s.metadata.index, term: s.metadata.term, data: s.data });
    this.#wal.markSnapshot({ index: s.metadata.index, term: s.metadata.term });
  }

  /** Replaces the state machine with a snapshot received from the leader. */
  #restore(s: Snapshot): void {
    decodeState(s.data, this.store, this.lessor, this.applier.alarms, this.members, this.applier.auth);
    this.appliedIndex = s.metadata.index;
    this.#snapIndex = s.metadata.index;
    this.#appliedConf = s.metadata.confState;
    this.#cfg.log(`restored state from the leader's snapshot at index ${s.metadata.index}`);
    this.onRestore();
  }

  #maybeSnapshot(): void {
    if (this.#snapshotting || this.appliedIndex - this.#snapIndex < this.#cfg.snapshotCount) return;
    this.snapshotNow().catch((err) => this.#cfg.log(`snapshot failed: ${err}`));
  }

  /** Snapshots the applied state (encoded synchronously, so it is consistent), then releases older log. */
  async snapshotNow(): Promise<void> {
    if (this.#snapshotting || this.appliedIndex <= this.#snapIndex) return;
    this.#snapshotting = true;
    try {
      const index = this.appliedIndex;
      const data = this.encodeState();
      const snap = this.storage.createSnapshot(index, this.#appliedConf, data);
      const start = performance.now();
      await this.#snap.save({ index, term: snap.metadata.term, data });
      this.metrics.snapshotSave.observe((performance.now() - start) / 1000);
      this.#wal.markSnapshot({ index, term: snap.metadata.term });
      this.#wal.sync();
      this.#snapIndex = index;
      const compactTo = index - CATCH_UP_ENTRIES;
      if (compactTo > this.storage.firstIndex()) this.storage.compact(compactTo);
      await this.#wal.releaseBefore(index);
      this.#cfg.log(`saved snapshot at index ${index} (${data.length} bytes)`);
    } finally {
      this.#snapshotting = false;
    }
  }

  /** The applied state as one blob (snapshots, and what a new member receives). */
  encodeState(): Uint8Array {
    return encodeState(
      { appliedIndex: this.appliedIndex, term: this.term, confState: this.#appliedConf },
      this.store,
      this.lessor,
      this.applier.alarms,
      this.members,
      this.applier.auth,
    );
  }

  /** Stops the clock, fails waiting requests and closes the log. */
  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.#ticker);
    while (this.#processing) await new Promise((r) => setTimeout(r, 5));
    for (const w of [...this.#proposals.values(), ...this.#readDeadlines]) {
      if (w.settled) continue;
      w.settled = true;
      w.reject(Errors.stopped());
    }
    this.#proposals.clear();
    this.#readDeadlines = [];
    this.transport.stop();
    this.#wal.close();
  }
}
