/**
 * A member's replicated state machine: the Raft core, its durable log (WAL + snapshots), the peer transport and the
 * apply loop around the MVCC store.
 *
 * The write path: `propose` → Raft entry (forwarded to the leader by followers) → Ready → the leader sends appends
 * while it writes its own copy → WAL append + one fdatasync for everything in the Ready (group commit) → commit by a
 * majority → apply to the store → the waiting caller gets its response. Linearizable reads go through ReadIndex,
 * batched: one round confirms leadership for every read that arrived before it.
 * A single-member cluster runs the same path; its entries commit as soon as they are on its own disk.
 *
 * This module wires the parts together and runs the Ready loop: `storage.ts` (WAL and snapshot files), `apply.ts`
 * (committed entries and snapshots into the state machine, applied index and membership), `reads.ts` (ReadIndex
 * rounds) and `waiters.ts` (proposals waiting for their entries).
 */
import type tls from "node:tls";
import { Applier } from "../apply/applier.ts";
import { BackendQuota } from "../apply/quota.ts";
import { Code, Errors, EtcdError } from "../errors.ts";
import { Lessor } from "../lease/lessor.ts";
import { type Member, type MemberContext, Members } from "../membership/members.ts";
import { MvccStore } from "../mvcc/store.ts";
import { hostPort, PeerTransport, snapshotLimit, type SnapshotSink, type SnapshotSource } from "../peer/transport.ts";
import type { SnapshotWriter } from "../snap/snapshotter.ts";
import type { PeerCertPolicy } from "../peer/peer_cert.ts";
import { NodeMetrics } from "../metrics/node.ts";
import type { LogFields } from "../etcd/log.ts";
import { CatchUpLog } from "./catch_up_log.ts";
import { putTrace, Stage } from "../trace/put_trace.ts";
import { MemoryStorage } from "../raft/log.ts";
import { RaftNode } from "../raft/raft.ts";
import {
  type ConfChange,
  type Entry,
  type Message,
  ProposalDroppedError,
  RaftInvariantError,
  type Ready,
  type SoftState,
} from "../raft/types.ts";
import {
  AlarmAction,
  AlarmType,
  encodeInternal,
  type InternalRequestBody,
  type InternalRequestOf,
  type InternalResponse,
  type InternalResponses,
  type ResponseHeader,
} from "../../proto/mod.ts";
import { ApplyLoop, ArrivingDecode } from "./apply.ts";
import { nextTurn } from "../util/next_turn.ts";
import { LinearizableReads } from "./reads.ts";
import { DiskStorage } from "./storage.ts";
import { type ConfChangeReply, newWaiter, Proposals, type Reply } from "./waiters.ts";

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
 * After the connection to the leader broke, a follower campaigns after LEADER_LOST_MIN_MS plus a random share of
 * LEADER_LOST_SPREAD_MS: the others see the same broken connection within milliseconds, and the spread keeps two
 * followers from splitting the vote.
 */
const LEADER_LOST_MIN_MS = 20;
const LEADER_LOST_SPREAD_MS = 200;

/** Replayed WAL entries are handed to the Raft log this many at a time. */
const REPLAY_PIECE = 4096;

/**
 * The Ready loop yields to the event loop (setTimeout 0) before its next Ready once it has run this long: at a
 * million keys a burst of txns of 100 puts was drained in one turn of 0.1-0.2 s, reads and keep-alives waiting.
 */
const READY_SLICE_MS = 20;

/**
 * The data of every snapshot the Raft log holds: none. The state is in the store, and the snapshot's bytes are in its
 * file, which is read when a follower needs it ({@link PeerHooks.snapshotData}).
 */
const ON_DISK = new Uint8Array(0);

/** Entries a leader keeps in memory after a snapshot so slow followers can catch up without one. */
const CATCH_UP_ENTRIES = 5000;

/**
 * A snapshot writes the whole state, so one is due only once the log applied since the last one holds at least this
 * share of that snapshot's bytes (besides `--snapshot-count` entries, as in etcd): each byte of log then costs at most
 * 1 / share bytes of snapshot, and a restart replays at most about the state's size of log after the snapshot. With a
 * count alone, 3 members with 1 M keys of 256 B and a count of 10,000 each wrote a 315 MB snapshot every 7-9 s of
 * random puts: encoding and writing them took a third of the machine's CPU. etcd's
 * bbolt file is the state itself, updated in place, and its snapshots cost no such thing. The log is dropped from
 * memory at its own pace meanwhile (#maybeCompactLog), and the WAL keeps the rest until the next snapshot.
 */
const SNAPSHOT_LOG_SHARE = 1;

/**
 * The in-memory log is cut short of `--snapshot-count` entries once the log applied since its last cut holds this share
 * of the newest snapshot's bytes: a follower that far behind costs about as much to send a snapshot as to send the
 * entries, and every entry kept pins its arena chunk (and, with it, the values of the store that share the chunk). One
 * member, 2,000 puts/s over 10,000 keys of 256 B with auto-compaction every 10 s, --snapshot-count at its default of
 * 100,000, four alternating pairs of 60-90 s runs: peak RSS 147-166 MB with the log cut at 100,000 entries only,
 * 141-145 MB with this share as well (etcd 3.4.23's peak on the bench's soak row: 153-159 MB).
 */
const LOG_CUT_SHARE = 1;

/**
 * The slices a snapshot is encoded in when a follower waits for it (MemoryStorage.snapshotWanted, or asked for), and
 * when it is only due. Each turn of the event loop between two slices lasts a millisecond or two (setTimeout(0)
 * here), so short slices make the encode slower, but a request that meets one waits less: 3 members, 10,000 keys
 * churned at 2,000 puts/s, a snapshot of about 15 MB every 10,000 entries per member: put p99/p99.9 15.5/41.2 ms with
 * 5 ms slices, 12.7/27.5 with 1 ms (and 7.7/25.4 with SNAPSHOT_LOG_SHARE at 1 rather than 0.25, so a snapshot every
 * 45,000 entries or so).
 */
const ENCODE_SLICE_WANTED_MS = 5;
const ENCODE_SLICE_DUE_MS = 1;

/**
 * Committed entries are applied in slices of about this long, yielding to the event loop between them: a member that
 * replays a long log at start, or catches up on many entries, keeps answering its peers and clients meanwhile.
 */
const APPLY_SLICE_MS = 20;

/**
 * While a snapshot from the leader that is ahead of this member's commit index arrives, applying committed entries
 * pauses: the snapshot replaces what they would build (a follower restarted on a long log would otherwise spend the
 * transfer applying replayed entries, for nothing, on the CPU the transfer and its decode need), and once it is stepped
 * the rest of the Ready is skipped. A pause ends when the transfer ends (received, refused or broken off) or after
 * this long, so that a sender which stalls without closing its stream cannot stop this member's apply for good.
 */
export const APPLY_PAUSE_MAX_MS = 30_000;

/**
 * Committed entries are applied beside the Raft loop (go.etcd.io/raft's asynchronous apply): the core hands out at
 * most this many bytes of entry payload that are not yet applied. Meanwhile the Raft loop goes on persisting, sending
 * and answering its peers (heartbeats included) while the state machine works through a long replayed log or waits
 * for a leader's snapshot (APPLY_PAUSE_MAX_MS): the leader is not left without this member's votes toward a quorum.
 */
const APPLY_AHEAD_BYTES = 16 << 20;

/** Why a snapshot of this member's own state was abandoned. */
const LEADER_SNAPSHOT_COMING = "a snapshot from the leader is on its way (it supersedes this member's own)";

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
  readonly metrics: NodeMetrics;
  raft!: RaftNode;
  transport!: PeerTransport;
  /** Set when the member is stopped: proposals are refused. */
  stopped = false;
  /** Called when this member has been removed from the cluster. */
  onRemoved: () => void = () => {};
  /** Called when a snapshot from the leader replaced the whole state (watchers must resynchronize). */
  onRestore: () => void = () => {};

  #disk: DiskStorage;
  #apply: ApplyLoop;
  #reads: LinearizableReads;
  #cfg: NodeConfig;
  #proposals: Proposals;
  #processing = false;
  #processScheduled = false;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #leaderWaiters: Array<() => void> = [];
  #snapshotting = false;
  /** this member's snapshot being encoded into its file: a follower that needs it waits for the file */
  #saving: { index: number; done: Promise<void> } | null = null;
  /** the newest snapshot's size, and the entry bytes applied when it was taken (see SNAPSHOT_LOG_SHARE) */
  #snapLog = { size: 0, appliedBytes: 0 };
  /** the applied bytes (Apply.appliedBytes) when the in-memory log was last cut (#maybeCompactLog) */
  #logCutBytes = 0;
  /** aborts the encode of this member's own snapshot, while one runs */
  #ownSnapshot: AbortController | undefined;
  /** snapshots being received from the leader: this member takes none of its own meanwhile */
  #incomingSnapshots = 0;
  /** files of leaders' snapshots being written as they arrive (or arrived, not yet persisted), by their data buffer */
  #arriving = new Map<Uint8Array, { writer: SnapshotWriter; decode: ArrivingDecode; arrived: boolean }>();
  /** the highest index of the snapshots being received (0 when none is) */
  #incomingIndex = 0;
  /** the transfers begun so far; the one numbered {@link #pauseGaveUp} outlasted APPLY_PAUSE_MAX_MS */
  #incomingSeq = 0;
  #pauseGaveUp = -1;
  /** ends the pause of applying (a transfer ended, or the member stops) */
  #endPause: (() => void) | undefined;
  #catchUp: CatchUpLog;
  /** committed entries handed out by Readies and not yet applied, one batch per Ready, in order */
  #toApply: Entry[][] = [];
  /** whether the apply loop (#drainApply) runs; it ends when the queue is empty */
  #applyRunning = false;
  #lastLeader = "0";
  #raisingNoSpace: Promise<void> | undefined;

  /** `cfg` holds the identity the data dir settled on. */
  private constructor(cfg: NodeConfig, disk: DiskStorage, metrics: NodeMetrics) {
    this.#cfg = cfg;
    this.#disk = disk;
    this.metrics = metrics;
    this.lessor = new Lessor(cfg.minLeaseTTL);
    this.applier = new Applier(this.store, this.lessor, (rev) => this.header(rev));
    this.quota = new BackendQuota(cfg.quotaBytes);
    this.#proposals = new Proposals(cfg.memberId);
    this.#catchUp = new CatchUpLog(cfg.log);
    this.#apply = new ApplyLoop({
      store: this.store,
      lessor: this.lessor,
      applier: this.applier,
      members: this.members,
      memberId: cfg.memberId,
      initialMembers: cfg.initialMembers,
      quota: this.quota,
      proposals: this.#proposals,
      applyToRaft: (cc, index) => this.raft.applyConfChange(cc, index),
      peerRemoved: (id) => {
        this.transport.drop(id);
        this.metrics.dropPeer(id);
      },
      selfRemoved: () => this.onRemoved(),
      overQuota: () => void this.raiseNoSpace(),
      restored: () => this.onRestore(),
      fatal: (err) => this.#fatal(err),
      rank: () => this.#rank(),
      log: cfg.log,
    });
    this.#reads = new LinearizableReads({
      memberId: cfg.memberId,
      askReadIndex: (ctx) => {
        try {
          this.raft.readIndex(ctx);
        } catch (err) {
          this.#stopOnInvariant(err, "asking for a read index");
          // no leader after all: the round is asked again by the tick, like a lost one (LinearizableReads.retry)
        }
        this.#schedule();
      },
      hasLeader: () => this.raft.lead !== "0",
      timeoutMs: this.#requestTimeout,
    });
  }

  /** Opens (or creates) the member's storage; the state machine is rebuilt from the newest snapshot, and Raft then
   * re-delivers the committed entries after it. */
  static async open(cfg: NodeConfig): Promise<Node> {
    const metrics = new NodeMetrics();
    const { disk, snapshot: snap, contents } = await DiskStorage.open({
      snapDir: cfg.snapDir,
      walDir: cfg.walDir,
      metadata: new TextEncoder().encode(JSON.stringify({ clusterId: cfg.clusterId, memberId: cfg.memberId })),
      forceRepairWal: cfg.forceRepairWal,
      stats: metrics,
      log: cfg.log,
      progress: cfg.log,
    });
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
    const n = new Node(cfg, disk, metrics);
    if (snap) {
      const confState = n.#apply.recover(snap);
      n.storage.applySnapshot({ metadata: { index: snap.index, term: snap.term, confState }, data: ON_DISK });
      n.#snapLog = { size: snap.data.length, appliedBytes: 0 };
      cfg.log(`recovered store from snapshot at index ${snap.index} (revision ${n.store.currentRev})`);
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
      maxApplyingBytes: APPLY_AHEAD_BYTES,
      applied: n.#apply.appliedIndex,
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
      snapshotIncoming: (receiving, index) => n.#snapshotIncoming(receiving, index),
      snapshotSink: (meta, data) => n.#snapshotSink(meta, data),
      snapshotData: (meta) => n.#snapshotData(meta),
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

  /**
   * Starts the clock and the Raft loop, and applies the committed entries replayed from the log. The clock runs (and
   * the peers are dialled) while they apply: a follower restarted on a long log is found by its leader at once, and
   * a snapshot the leader sends it replaces what it has not applied yet.
   */
  async start(): Promise<void> {
    this.#ticker = setInterval(() => {
      this.transport.keepConnected(this.members.list().map((m) => m.ID));
      this.#raftCall("tick", () => this.raft.tick());
      this.#catchUp.observe(this.raft.status());
      const now = performance.now();
      this.#expireWaiters(now);
      this.transport.expire(now);
      this.#reads.retry();
      this.#schedule();
    }, this.#cfg.heartbeatMs);
    this.transport.keepConnected(this.members.list().map((m) => m.ID));
    try {
      await this.#process();
    } catch (err) {
      clearInterval(this.#ticker);
      throw err;
    }
    // the replayed log is applied (or replaced by a leader's snapshot) before the member counts as started
    const replayed = this.raft.log.committed;
    while (!this.stopped && this.#apply.appliedIndex < replayed) await new Promise((r) => setTimeout(r, 5));
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

  /** Index of the last entry applied to the state machine. */
  get appliedIndex(): number {
    return this.#apply.appliedIndex;
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
  header(rev: number): ResponseHeader {
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

  #waiter(resolve: (r: Reply) => void, reject: (e: unknown) => void) {
    return newWaiter(resolve, reject, performance.now() + this.#requestTimeout);
  }

  /** Fails the requests whose deadline has passed: "no leader" while none is known, else a timeout. */
  #expireWaiters(now: number): void {
    const failure = () => this.raft.lead === "0" ? Errors.noLeader() : Errors.timeout();
    this.metrics.proposalsFailed.inc(this.#proposals.expire(now, failure));
    this.#reads.expire(now, failure);
  }

  /** Proposes a request; resolves with its response once it is committed and applied here. */
  propose<Op extends keyof InternalResponses>(req: InternalRequestOf<Op>): Promise<InternalResponses[Op]>;
  propose(req: InternalRequestBody): Promise<InternalResponse>;
  async propose(req: InternalRequestBody): Promise<InternalResponse> {
    if (this.stopped) throw Errors.stopped();
    const id = this.#proposals.nextId();
    const data = encodeInternal({ ...req, id });
    if (data.length > this.#cfg.maxRequestBytes) throw Errors.requestTooLarge();
    if (this.raft.lead === "0") await this.waitForLeader(2 * this.#cfg.electionMs);
    // the entry proposed under `id` is this request: it is answered with this request's response
    return new Promise<Reply>((resolve, reject) => {
      this.#proposals.add(id, this.#waiter(resolve, reject));
      try {
        this.raft.propose(data);
        if (putTrace.on) putTrace.proposed(this.raft.isLeader ? this.lastIndex : 0);
      } catch (err) {
        this.#stopOnInvariant(err, "proposing");
        this.#proposals.drop(id);
        this.metrics.proposalsFailed.inc();
        reject(err instanceof ProposalDroppedError ? Errors.noLeader() : err);
        return;
      }
      this.#schedule();
    }) as Promise<InternalResponse>;
  }

  /**
   * Proposes this member's NOSPACE alarm, unless the alarm list already holds one or one is on its way; resolves
   * once it is applied here (or failed: the next write over quota tries again).
   */
  async raiseNoSpace(): Promise<void> {
    if (this.#raisingNoSpace || this.applier.noSpace) return await this.#raisingNoSpace;
    const alarm = { action: AlarmAction.ACTIVATE, memberID: this.memberId, alarm: AlarmType.NOSPACE };
    this.#raisingNoSpace = this.propose({ op: "alarm", alarm }).then(
      () => this.#cfg.log(`raised the NOSPACE alarm: the store (${this.store.sizeBytes} bytes) is at the quota`),
      (err) => this.#cfg.log(`raising the NOSPACE alarm failed: ${err}`),
    ).finally(() => this.#raisingNoSpace = undefined);
    return await this.#raisingNoSpace;
  }

  /** Proposes a membership change; resolves with the member list once it is applied here. */
  async proposeConfChange(cc: ConfChange): Promise<ConfChangeReply> {
    if (this.stopped) throw Errors.stopped();
    if (this.raft.lead === "0") await this.waitForLeader(2 * this.#cfg.electionMs);
    const id = this.#proposals.nextId();
    // the conf change proposed under `id` is answered with the member list after it
    return new Promise<Reply>((resolve, reject) => {
      this.#proposals.add(id, this.#waiter(resolve, reject));
      try {
        this.raft.proposeConfChange({ ...cc, id });
      } catch (err) {
        this.#stopOnInvariant(err, "proposing a membership change");
        this.#proposals.drop(id);
        reject(
          err instanceof ProposalDroppedError
            ? Errors.noLeader()
            : new EtcdError(Code.FAILED_PRECONDITION, `etcdserver: ${(err as Error).message}`),
        );
        return;
      }
      this.#schedule();
    }) as Promise<ConfChangeReply>;
  }

  /** Resolves when a linearizable read may be served from the local state. */
  readIndex(): Promise<void> {
    if (this.stopped) return Promise.reject(Errors.stopped());
    return this.#reads.read();
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
    const n = this.#proposals.rejectAll(Errors.timeoutDueToLeaderFail());
    if (n > 0) this.metrics.proposalsFailed.inc(n);
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
      if (m.snapshot) this.#dropUnusedSnapshotFiles(m.snapshot.data);
    }
    this.#schedule();
  }

  /**
   * The file of a leader's snapshot arriving into `data` is written as it comes ({@link DiskStorage.saveLeaderSnapshot}
   * then only finishes it): etcd's follower too writes the database file it receives as it arrives.
   */
  #snapshotSink(meta: { index: number; term: number }, data: Uint8Array): SnapshotSink {
    const writer = this.#disk.beginLeaderSnapshot(meta.index, meta.term, data.length);
    const decode = new ArrivingDecode(data);
    this.#arriving.set(data, { writer, decode, arrived: false });
    return {
      write: (bytes) => {
        writer.write(bytes);
        decode.arrived(bytes.byteOffset - data.byteOffset + bytes.length);
      },
      abort: () => void this.#giveUpArriving(data),
    };
  }

  /** A leader's snapshot arriving into `data` will not be installed: its decode stops and its file is deleted. */
  #giveUpArriving(data: Uint8Array): Promise<void> {
    const f = this.#arriving.get(data);
    if (!f) return Promise.resolve();
    this.#arriving.delete(data);
    f.decode.abandon();
    return f.writer.abort();
  }

  /**
   * A snapshot that arrived into `data` was stepped: the files of arrived snapshots that the core does not hold to be
   * persisted (it refused them, or a newer one replaced them) are deleted; their buffers are let go.
   */
  #dropUnusedSnapshotFiles(data: Uint8Array): void {
    const file = this.#arriving.get(data);
    if (file) file.arrived = true;
    const pending = this.raft.pendingSnapshot()?.data;
    for (const [d, f] of this.#arriving) if (f.arrived && d !== pending) void this.#giveUpArriving(d);
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
      let sliceStart = performance.now();
      while (this.raft.hasReady()) {
        if (performance.now() - sliceStart >= READY_SLICE_MS) {
          await nextTurn();
          if (this.stopped) return;
          sliceStart = performance.now();
          continue; // the core may have moved on meanwhile: ask again
        }
        const rd = this.raft.ready();
        if (putTrace.on) putTrace.entries(Stage.ready, rd.entries);
        if (rd.softState) this.#onSoftState(rd.softState);
        if (rd.preSyncMessages.length > 0) {
          // appends go out before this member writes its own copy, so followers persist in parallel
          this.transport.send(rd.preSyncMessages);
          this.transport.flush();
        }
        // a leader's snapshot is decoded (beside the live state) and written to disk as it arrives (#snapshotSink),
        // both finished here; the acknowledgement goes out once it is durable, the state is replaced once it is decoded
        // (a bad blob fails below)
        if (rd.snapshot) this.#ownSnapshot?.abort(LEADER_SNAPSHOT_COMING);
        const arrived = rd.snapshot && this.#arriving.get(rd.snapshot.data);
        if (rd.snapshot) this.#arriving.delete(rd.snapshot.data);
        const decoded = rd.snapshot ? this.#apply.decode(rd.snapshot, arrived?.decode) : undefined;
        decoded?.catch(() => {});
        if (rd.snapshot) {
          const s = rd.snapshot, ms = await this.#disk.saveLeaderSnapshot(s, arrived?.writer);
          this.#cfg.log(
            `saved the leader's snapshot at index ${s.metadata.index} (${s.data.length} bytes${
              arrived ? ", written as it arrived" : ""
            }) in ${Math.round(ms)} ms`,
          );
        }
        if (rd.entries.length > 0 || rd.hardState) this.#disk.append(rd.entries, rd.hardState);
        // committed entries this member wrote in earlier Readies are applied (and answered) while the fsync runs, and
        // reads confirmed by a quorum need no fsync either (etcd too hands both on before it writes its WAL)
        const early = rd.mustSync ? this.#applyDurable(rd) : 0;
        for (const rs of rd.readStates) this.#reads.confirmed(rs.ctx, rs.index);
        if (rd.mustSync && (early > 0 || rd.readStates.length > 0)) this.#reads.serve(this.#apply.appliedIndex);
        if (rd.mustSync) await this.#disk.syncAsync();
        if (putTrace.on) putTrace.entries(Stage.fsync, rd.entries);
        if (rd.messages.length > 0) {
          // what waited for the disk (acks, votes) goes out at once, before this turn's applying
          this.transport.send(rd.messages);
          this.transport.flush();
        }
        const decoder = decoded && await decoded;
        if (rd.snapshot) this.storage.applySnapshot({ metadata: rd.snapshot.metadata, data: ON_DISK });
        this.storage.append(rd.entries);
        if (rd.hardState) this.storage.setHardState(rd.hardState);
        if (rd.snapshot) {
          this.#apply.install(rd.snapshot, decoder!);
          this.#snapLog = { size: rd.snapshot.data.length, appliedBytes: this.#apply.appliedBytes };
        }
        if (rd.snapshot) this.#toApply.length = 0; // all below the snapshot, which replaced what they would build
        if (rd.committedEntries.length > early) {
          if (putTrace.on) putTrace.entries(Stage.commit, rd.committedEntries.slice(early));
          this.#toApply.push(early > 0 ? rd.committedEntries.slice(early) : rd.committedEntries);
        }
        this.raft.advance(rd);
        if (this.#toApply.length > 0 || early > 0) this.#applyFirstSlice();
        this.#reads.serve(this.#apply.appliedIndex);
        this.#maybeSnapshot();
      }
      // a follower may have asked for a snapshot with no Ready (MemoryStorage.snapshotWanted)
      this.#maybeSnapshot();
    } finally {
      this.#processing = false;
    }
  }

  /**
   * Applies, before the fsync of `rd`, its committed entries that this member's log already holds durably: those it
   * wrote in earlier Readies, below every entry `rd` writes. Their answers then wait for no later entry's fsync: a
   * leader's entry is committed by the Ready after its own fsync, and that Ready mostly writes new entries too, so
   * the answer waited for a second fsync. etcd's leader, too, applies committed entries while it writes its WAL.
   * Only when the apply loop is idle: the core learns what was applied after `advance(rd)` ({@link #applyFirstSlice}),
   * which no other slice may run before. Returns how many of `rd.committedEntries` were handed to the apply loop.
   */
  #applyDurable(rd: Ready): number {
    if (rd.snapshot || this.#applyRunning || this.#toApply.length > 0) return 0;
    const below = Math.min(this.storage.lastIndex() + 1, rd.entries[0]?.index ?? Infinity);
    let n = 0;
    while (n < rd.committedEntries.length && rd.committedEntries[n].index < below) n++;
    if (n === 0) return 0;
    const durable = n === rd.committedEntries.length ? rd.committedEntries : rd.committedEntries.slice(0, n);
    if (putTrace.on) putTrace.entries(Stage.commit, durable);
    this.#toApply.push(durable);
    this.#applySlice(); // what one slice leaves is applied after advance
    return n;
  }

  /**
   * The apply loop's first slice, run in the Ready loop's own turn when the loop is idle: while applying keeps up (the
   * common case) the next Ready waits for it, as with applying inline, so the proposals that arrive meanwhile share
   * the next Ready's fsync (handed to the apply loop at once, every Ready's entries let the Ready loop cycle sooner
   * with fewer entries per fsync). What does not fit in one slice, or must wait for a leader's snapshot, goes on in
   * the apply loop.
   */
  #applyFirstSlice(): void {
    if (!this.#applyRunning) {
      this.#applySlice();
      this.raft.appliedTo(this.#apply.appliedIndex);
    }
    if (this.#toApply.length > 0 && !this.#applyRunning) {
      this.#applyRunning = true;
      queueMicrotask(() => void this.#drainApply());
    }
  }

  /** The apply loop: applies the queued entries in slices, beside the Raft loop, until the queue is empty. */
  async #drainApply(): Promise<void> {
    try {
      while (this.#toApply.length > 0 && !this.stopped) {
        const pause = this.#applySlice();
        this.#reportApplied();
        if (this.#toApply.length === 0) break;
        if (pause) {
          const last = this.#toApply[this.#toApply.length - 1];
          await this.#pauseForSnapshot(this.#toApply[0][0].index, last[last.length - 1].index);
        } else await nextTurn();
      }
    } catch (err) {
      this.#stopOnInvariant(err, "applying");
      this.#fatal(err);
    } finally {
      this.#applyRunning = false;
    }
  }

  /**
   * Applies queued entries, in order across batches, for up to APPLY_SLICE_MS. Entries that a leader's snapshot
   * stepped meanwhile covers (all those queued: it is above the commit index they were handed out at) are dropped
   * with one log line: the Ready that carries it replaces their state. Returns true when it stopped because such a
   * snapshot is arriving (applying pauses, see APPLY_PAUSE_MAX_MS).
   */
  #applySlice(): boolean {
    const start = performance.now();
    let now = start, pause = false;
    while (this.#toApply.length > 0 && now - start < APPLY_SLICE_MS) {
      const covered = this.raft.pendingSnapshotIndex();
      if (covered > 0 && this.#toApply[0][0].index <= covered) {
        this.#dropCovered(covered);
        continue;
      }
      if ((pause = this.#snapshotAhead())) break;
      const batch = this.#toApply[0];
      let i = 0;
      while (i < batch.length && now - start < APPLY_SLICE_MS && !(pause = this.#snapshotAhead())) {
        this.#apply.applyEntry(batch[i++]);
        now = performance.now();
      }
      if (i < batch.length) {
        this.#toApply[0] = batch.slice(i);
        if (pause) break;
        continue;
      }
      this.#toApply.shift();
      if (putTrace.on) putTrace.entries(Stage.apply, batch);
    }
    if (now > start) this.metrics.batchApplied(now - start);
    return pause;
  }

  /** Drops the queued entries up to `covered`, the index of a leader's snapshot stepped and not yet installed. */
  #dropCovered(covered: number): void {
    const first = this.#toApply[0][0].index;
    let last = first - 1;
    while (this.#toApply.length > 0 && this.#toApply[0][0].index <= covered) {
      const batch = this.#toApply.shift()!;
      const keep = batch.findIndex((e) => e.index > covered);
      if (keep >= 0) {
        this.#toApply.unshift(batch.slice(keep));
        last = batch[keep - 1].index;
        break;
      }
      last = batch[batch.length - 1].index;
    }
    this.#cfg.log(
      `skipped ${last - first + 1} committed entries (${first}..${last}): the leader's snapshot at ${covered} ` +
        `replaces them`,
    );
  }

  /** Tells the Raft core and the waiting reads how far applying got; a snapshot may be due. */
  #reportApplied(): void {
    this.#raftCall("reporting the applied index", () => this.raft.appliedTo(this.#apply.appliedIndex));
    this.#reads.serve(this.#apply.appliedIndex);
    this.#maybeSnapshot();
    this.#schedule(); // more committed entries may be handed out now
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
      this.#reads.startRound();
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

  #maybeSnapshot(): void {
    this.#maybeCompactLog();
    if (this.#snapshotting || !(this.storage.snapshotWanted || this.#snapshotDue())) return;
    if (this.#incomingSnapshots > 0 || this.raft.pendingSnapshotIndex() > 0) return;
    // a follower waits for the snapshot it wants; one that is only due is background work
    this.snapshotNow(this.storage.snapshotWanted ? ENCODE_SLICE_WANTED_MS : ENCODE_SLICE_DUE_MS).catch((err) =>
      this.#cfg.log(err === LEADER_SNAPSHOT_COMING ? `abandoned a snapshot: ${err}` : `snapshot failed: ${err}`)
    );
  }

  /** This member's place among `members` (in the order `Members.list` keeps them), 0 when not among them. */
  #rank(members = this.members.list()): number {
    return Math.max(0, members.findIndex((m) => m.ID === this.memberId));
  }

  /**
   * Whether this member's next snapshot is due: every `--snapshot-count` applied entries, as in etcd, but the members
   * of a cluster take theirs at staggered indexes. Member k of n (by ID) snapshots at k·count/n past each multiple of
   * count, at least count/2 after its previous snapshot (so between count/2 and 1.5·count apart, count in the steady
   * state). At one index, every member would encode and write its state at the same moment: on shared cores the
   * three bursts queued each member's Raft loop behind the others' (3 members on 2 cores, a snapshot every 500
   * entries: put→event p99.9 57-100 ms, 7-9 ms without snapshots), and a commit needs the leader and one follower.
   */
  #snapshotDue(): boolean {
    const count = this.#cfg.snapshotCount, last = this.#apply.snapIndex, applied = this.#apply.appliedIndex;
    if (applied - last < count / 2) return false;
    if (this.#apply.appliedBytes - this.#snapLog.appliedBytes < SNAPSHOT_LOG_SHARE * this.#snapLog.size) return false;
    const members = this.members.list();
    const phase = Math.floor((this.#rank(members) * count) / Math.max(1, members.length));
    const next = phase + Math.ceil((last + count / 2 - phase) / count) * count;
    return applied >= next;
  }

  /**
   * Drops applied entries from the in-memory log, keeping the CATCH_UP_ENTRIES last ones for slow followers, once the
   * rest holds `--snapshot-count` entries (as etcd does at each snapshot, whether or not a snapshot was taken: they
   * are rarer with a large state, SNAPSHOT_LOG_SHARE), or earlier, once the log applied since the last cut is as large
   * as this member's newest snapshot (LOG_CUT_SHARE) and the rest holds CATCH_UP_ENTRIES. The only place the log is
   * cut. A follower that needs entries dropped past the newest snapshot gets a snapshot taken for it
   * (MemoryStorage.snapshotWanted). Not while a snapshot is being taken (the log would move past its index) or sent
   * (the follower needs the entries after it).
   */
  #maybeCompactLog(): void {
    if (this.#snapshotting) return;
    const to = Math.min(this.#apply.appliedIndex - CATCH_UP_ENTRIES, this.storage.lastIndex());
    const rest = to - this.storage.firstIndex() + 1;
    const grown = this.#apply.appliedBytes - this.#logCutBytes;
    const early = rest >= CATCH_UP_ENTRIES && grown >= LOG_CUT_SHARE * this.#snapLog.size;
    if (rest < this.#cfg.snapshotCount && !early) return;
    const progress = this.raft.status().progress;
    if (progress && Object.values(progress).some((p) => p.state === "snapshot")) return;
    this.storage.compact(to);
    this.#logCutBytes = this.#apply.appliedBytes;
  }

  /**
   * The transport began (or ended) receiving a snapshot from the leader. It will replace this member's state: an
   * encode of its own snapshot under way is abandoned (it would compete with the transfer and the restore for the
   * event loop and the disk, for nothing), and none is begun until the transfer ended.
   */
  #snapshotIncoming(receiving: boolean, index: number): void {
    this.#incomingSnapshots += receiving ? 1 : -1;
    if (receiving) {
      this.#incomingSeq++;
      this.#incomingIndex = Math.max(this.#incomingIndex, index);
      this.#ownSnapshot?.abort(LEADER_SNAPSHOT_COMING);
    } else if (this.#incomingSnapshots === 0) {
      this.#incomingIndex = 0;
      // resumes after this call: the transport hands the received snapshot to the core first
      this.#endPause?.();
    }
  }

  /**
   * Whether a snapshot arriving now will replace the state the committed entries build: it is ahead of the core's
   * commit index (so of every entry waiting to be applied), this member follows, and it has not outlasted a pause.
   */
  #snapshotAhead(): boolean {
    return this.#incomingSnapshots > 0 && this.#incomingIndex > this.raft.log.committed && !this.raft.isLeader &&
      this.#pauseGaveUp !== this.#incomingSeq;
  }

  /** Waits until the snapshot being received stopped arriving, at most APPLY_PAUSE_MAX_MS. */
  async #pauseForSnapshot(next: number, last: number): Promise<void> {
    const seq = this.#incomingSeq, index = this.#incomingIndex, began = performance.now();
    this.#cfg.log(
      `paused applying at entry ${next} (entries up to ${last} wait): the leader's snapshot at ${index} is arriving`,
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ended = await new Promise<boolean>((resolve) => {
      this.#endPause = () => resolve(true);
      timer = setTimeout(() => resolve(false), APPLY_PAUSE_MAX_MS);
    });
    clearTimeout(timer);
    this.#endPause = undefined;
    if (!ended) this.#pauseGaveUp = seq;
    if (this.stopped) return;
    const ms = (performance.now() - began).toFixed(0);
    this.#cfg.log(
      ended
        ? `resumed applying after ${ms} ms: the snapshot stopped arriving`
        : `resumed applying: the snapshot at ${index} is still arriving after ${ms} ms`,
    );
  }

  /**
   * Snapshots the applied state, then releases older log. The state is encoded in slices of `sliceMs` that yield to
   * the event loop (a large store would hold it for a second) straight into the snapshot file, piece by piece; the file
   * holds the state at the index of the call.
   */
  async snapshotNow(sliceMs = ENCODE_SLICE_WANTED_MS): Promise<void> {
    if (this.#snapshotting || this.#apply.appliedIndex <= this.#apply.snapIndex) return;
    this.#snapshotting = true;
    let file: SnapshotWriter | null = null;
    const saved = Promise.withResolvers<void>();
    saved.promise.catch(() => {}); // a failure is reported below; followers waiting for the file see none
    try {
      await this.#apply.compactionDone();
      const index = this.#apply.appliedIndex, confState = this.#apply.confState;
      const appliedBytes = this.#apply.appliedBytes;
      this.#saving = { index, done: saved.promise };
      this.#ownSnapshot = new AbortController();
      const term = this.storage.term(index);
      const size = await this.#apply.encodeToSink(
        this.term,
        (bytes) => (file = this.#disk.beginSnapshot(index, term, bytes)),
        sliceMs,
        this.#ownSnapshot.signal,
      ).finally(() => this.#ownSnapshot = undefined);
      // a leader's snapshot restored meanwhile is newer: createSnapshot refuses this one
      this.storage.createSnapshot(index, confState, ON_DISK);
      await this.#disk.commitSnapshot(file!);
      file = null;
      saved.resolve();
      this.#apply.snapIndex = index;
      this.#snapLog = { size, appliedBytes };
      await this.#disk.releaseBefore(index); // the in-memory log is cut by #maybeCompactLog
      this.#cfg.log(`saved snapshot at index ${index} (${size} bytes)`);
    } catch (err) {
      await (file as SnapshotWriter | null)?.abort();
      saved.reject(err);
      throw err;
    } finally {
      this.#saving = null;
      this.#snapshotting = false;
    }
  }

  /**
   * The data of this member's snapshot at `meta` for a follower: its file, once written (the Raft log holds each
   * snapshot with no data, ON_DISK: it would keep a copy of the whole state in memory).
   */
  async #snapshotData(meta: { index: number; term: number }): Promise<SnapshotSource | null> {
    const saving = this.#saving;
    if (saving?.index === meta.index) await saving.done.catch(() => {});
    return this.#disk.openSnapshot(meta.index, meta.term);
  }

  /** Stops the clock, fails waiting requests and closes the log. */
  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.#ticker);
    this.#apply.stop();
    this.#endPause?.();
    while (this.#processing || this.#applyRunning) await new Promise((r) => setTimeout(r, 5));
    this.#proposals.rejectAll(Errors.stopped());
    this.#reads.rejectAll(Errors.stopped());
    this.transport.stop();
    for (const d of [...this.#arriving.keys()]) await this.#giveUpArriving(d);
    this.#disk.close();
  }
}
