/**
 * Deterministic simulation of a Raft cluster in one process: simulated clock, network and disks, a tiny KV state
 * machine, clients recording a history, and a nemesis (loss, delay, reordering, duplication, partitions, crashes
 * that lose unsynced writes, membership changes, leader transfers, snapshots). Everything random comes from one
 * seeded PRNG, so a run is reproducible from its seed.
 *
 * Safety invariants are checked after every step (one event = one step):
 *  - election safety: at most one leader per term;
 *  - log matching: an (index, term) pair always names the same entry, preceded by the same term;
 *  - leader completeness: a new leader of term T holds every entry committed in an earlier term (the term of the
 *    leader whose commit index first passed it; an old entry is committed in a later term along with that term's
 *    own). A leader of an old term can still win its election late, e.g. through a delayed vote, after a later term
 *    committed entries: it need not hold those and can commit nothing. Every applied index was committed by a leader;
 *  - state machine safety: no index is ever applied with different entries on different members, and snapshots
 *    taken at the same index are identical;
 *  - acknowledged writes are applied (a client only hears "ok" after its member applied the write);
 *  - members never diverge: the state machine is the server's real apply layer (store, lessor, alarms, quota), and a
 *    digest of a member's whole applied state (Maintenance.Hash) is compared with every other member's at the same
 *    applied index: at every HASH_EVERY-th index, after every snapshot restore and at the end of the run. Members
 *    run with different --quota-backend-bytes small enough to be hit; an admin client fills the store, deletes,
 *    compacts, disarms alarms, grants and revokes leases and "defragments" (snapshots) as an operator would.
 * After the fault phase, faults stop and the cluster must make progress again (liveness), then settle: every member
 * applies the same last index and holds the same state.
 */
import {
  bytesEqual,
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  emptyHardState,
  type Entry,
  EntryType,
  type HardState,
  MemoryStorage,
  type Message,
  RaftNode,
  type Ready,
  type Snapshot,
} from "../../server/raft/mod.ts";
import { EventHeap } from "./heap.ts";
import { Prng } from "./prng.ts";
import { SimStateMachine } from "./state_machine.ts";
import { requestCost } from "../../server/apply/quota.ts";
import { AlarmAction, AlarmType, decodeInternal, encodeInternal, type InternalRequestShape } from "../../proto/mod.ts";

/** One client operation as recorded for the linearizability checker. */
export interface HistoryOp {
  client: number;
  op: "put" | "get";
  key: string;
  /** put: the (unique) value written; get: the value read (null = absent / not known) */
  value: string | null;
  invokeStep: number;
  returnStep: number;
  outcome: "ok" | "fail" | "unknown";
}

export interface SimParams {
  members: number;
  lossRate: number;
  dupRate: number;
  longDelayRate: number;
  baseLatency: number;
  jitter: number;
  syncLatency: number;
  nemesisEvery: number;
  snapshotEvery: number;
  snapshotKeep: number;
  maxSizePerMsg: number;
  maxInflightMsgs: number;
  maxUncommittedBytes: number;
  clients: number;
  keys: number;
  tornWrites: boolean;
  /** crashed members come back within tens of milliseconds */
  fastRestarts: boolean;
  /**
   * members are told when the connection to their leader broke (its process died, or spuriously while it lives):
   * they forget the leader and campaign after a short random delay, as server/node/node.ts does
   */
  leaderLostNotices: boolean;
  /** the quota flag of each member (by ID order; 0 = none): some small enough that NOSPACE is hit */
  quotas: number[];
  /** ms between the admin client's operations */
  adminEvery: number;
  /**
   * entries of a Ready that a leader's snapshot stepped meanwhile covers are skipped, as server/node/node.ts does;
   * else applied (conf changes among them are then no-ops in the core). Chosen by the seed's parity, not drawn from
   * the PRNG, so that every seed plays out as it did before the choice existed.
   */
  skipCovered: boolean;
  /**
   * 0: a Ready's committed entries are applied when its write completes, before `advance`. Else they are applied
   * beside the Raft loop as server/node/node.ts does: in later events, up to this many ms on, a few at a time, while
   * further Readies are written and sent. Chosen by the seed's bits 1 and 4 (no seed of REGRESSION_SEEDS, all older
   * than the asynchronous apply, has both set), not drawn from the PRNG.
   */
  applyLag: number;
  /** the core's maxApplyingBytes (with applyLag > 0: sometimes small, so that it holds committed entries back) */
  maxApplyingBytes: number;
}

export interface SimOptions {
  seed: number;
  /** events in the fault phase (default 4000) */
  steps?: number;
  /** events allowed for recovery after faults stop (default 6000) */
  livenessSteps?: number;
  /** keep a trace of the last events for failure reports (default 300) */
  traceSize?: number;
  /** replace individual parameters (for tests) */
  params?: Partial<SimParams>;
}

export interface SimResult {
  seed: number;
  steps: number;
  params: SimParams;
  history: HistoryOp[];
  stats: Record<string, number>;
}

/** A broken invariant (or lost liveness), with what is needed to debug it. */
export class SimFailure extends Error {
  seed: number;
  step: number;
  history: HistoryOp[];
  trace: string[];
  params: SimParams;
  constructor(seed: number, step: number, why: string, history: HistoryOp[], trace: string[], params: SimParams) {
    super(`seed ${seed}: step ${step}: ${why}`);
    this.name = "SimFailure";
    this.seed = seed;
    this.step = step;
    this.history = history;
    this.trace = trace;
    this.params = params;
  }
}

const TICK_MS = 10;
const OP_TIMEOUT_MS = 400;
const enc = new TextEncoder();
const dec = new TextDecoder();

// ------------------------------------------------------------------------------------------ disk

type DiskOp =
  | { kind: "snap"; snap: Snapshot }
  | { kind: "entries"; entries: Entry[] }
  | { kind: "hs"; hs: HardState };

/** A member's disk: what survives a crash is what was synced, plus (with torn writes) a prefix of the rest. */
class SimDisk {
  hs: HardState = emptyHardState();
  snap: Snapshot | null = null;
  entries: Entry[] = [];
  pending: DiskOp[] = [];

  write(op: DiskOp): void {
    this.pending.push(op);
  }

  sync(): void {
    for (const op of this.pending) this.#apply(op);
    this.pending = [];
  }

  crash(rng: Prng, torn: boolean): void {
    const keep = torn ? rng.int(this.pending.length + 1) : 0;
    for (let i = 0; i < keep; i++) this.#apply(this.pending[i]);
    this.pending = [];
  }

  /** A snapshot taken locally from applied state: written and synced at once, older entries dropped. */
  saveLocalSnapshot(snap: Snapshot, compactTo: number): void {
    this.snap = snap;
    this.entries = this.entries.filter((e) => e.index > compactTo);
  }

  #apply(op: DiskOp): void {
    switch (op.kind) {
      case "snap":
        if (!this.snap || op.snap.metadata.index > this.snap.metadata.index) {
          this.snap = op.snap;
          this.entries = [];
        }
        break;
      case "hs":
        this.hs = { ...op.hs };
        break;
      case "entries": {
        const ents = op.entries;
        if (ents.length === 0) break;
        const first = ents[0].index;
        if (this.entries.length > 0) {
          const base = this.entries[0].index;
          const last = base + this.entries.length - 1;
          if (first <= last) this.entries.length = Math.max(0, first - base);
          else if (first > last + 1) throw new Error(`disk: gap appending ${first} after ${last}`);
        }
        const snapIndex = this.snap?.metadata.index ?? 0;
        for (const e of ents) if (e.index > snapIndex) this.entries.push(e);
        break;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------ members

interface PendingOp {
  rec: HistoryOp;
  id: string;
  node: SimNode;
  deadline: number;
  done: boolean;
  /** get: read index once known */
  readIndex: number;
}

class SimNode {
  readonly id: string;
  alive = false;
  removed = false;
  incarnation = 0;
  disk = new SimDisk();
  storage!: MemoryStorage;
  raft!: RaftNode;
  sm!: SimStateMachine;
  /** --quota-backend-bytes of this member */
  quota = 0;
  /** until when a NOSPACE alarm proposed by this member is taken to be on its way */
  raisingUntil = -1;
  pendingReady: Ready | null = null;
  /** index of the last entry applied to `sm` (or of the snapshot it restored); the core hears of it by appliedTo */
  appliedIndex = 0;
  /** committed entries handed out by completed Readies, not yet applied (params.applyLag > 0) */
  toApply: Entry[] = [];
  lastSnapIndex = 0;
  /** membership as of the applied index (raft's own is ahead once a leader's snapshot is stepped, not applied) */
  appliedConf: ConfState = { voters: [], learners: [] };
  prevRole = "follower";
  prevTerm = 0;
  /** puts waiting to be applied here, by op id */
  puts = new Map<string, PendingOp>();
  /** gets waiting for their read index, by ctx */
  gets = new Map<string, PendingOp>();
  /** gets with a read index, waiting for the applied index to reach it */
  readsWaiting: PendingOp[] = [];

  constructor(id: string) {
    this.id = id;
  }
}

// ------------------------------------------------------------------------------------------ events

const EV_TICK = 0;
const EV_MSG = 1;
const EV_SYNC = 2;
const EV_CLIENT = 3;
const EV_NEMESIS = 4;
const EV_RESTART = 5;
const EV_STOP = 6;
const EV_TIMEOUT = 7;
const EV_SNAPREPORT = 8;
const EV_LEADER_LOST = 9;
const EV_CAMPAIGN = 10;
const EV_ADMIN = 11;
const EV_APPLY = 12;

class SimEvent {
  time: number;
  seq: number;
  kind: number;
  node: SimNode | null;
  inc: number;
  msg: Message | null;
  client: number;
  op: PendingOp | null;
  flag: boolean;
  /** EV_LEADER_LOST: the leader whose connection broke */
  about = "";
  constructor(time: number, seq: number, kind: number) {
    this.time = time;
    this.seq = seq;
    this.kind = kind;
    this.node = null;
    this.inc = 0;
    this.msg = null;
    this.client = -1;
    this.op = null;
    this.flag = false;
  }
}

const KIND_NAMES = [
  "tick",
  "msg",
  "sync",
  "client",
  "nemesis",
  "restart",
  "stop",
  "timeout",
  "snapreport",
  "leaderlost",
  "campaign",
  "admin",
  "apply",
];

/** Bits of the seed mixed (Knuth's multiplicative hash), for choices made without the PRNG. */
function seedHash(seed: number): number {
  return Math.imul(seed, 2654435761) >>> 24;
}

/** Picks the parameters of a run from its seed. */
export function paramsFor(rng: Prng, seed: number): SimParams {
  return {
    skipCovered: (seed & 1) === 0,
    applyLag: (seed & 0b10010) === 0b10010 ? [1, 4, 15, 60][seedHash(seed) & 3] : 0,
    maxApplyingBytes: (seed & 0b10010) === 0b10010 && (seedHash(seed) & 4) !== 0 ? 300 : Infinity,
    members: rng.pick([3, 5]),
    lossRate: rng.pick([0, 0.01, 0.05, 0.15]),
    dupRate: rng.pick([0, 0.01, 0.05]),
    longDelayRate: rng.pick([0, 0.01, 0.05]),
    baseLatency: rng.range(1, 3),
    jitter: rng.pick([0, 2, 8]),
    syncLatency: rng.pick([0, 1, 3, 12]),
    nemesisEvery: rng.pick([15, 50, 150, 400]),
    snapshotEvery: rng.pick([5, 20, 100]),
    snapshotKeep: rng.pick([0, 3, 30]),
    maxSizePerMsg: rng.pick([60, 300, 1 << 20]),
    maxInflightMsgs: rng.pick([1, 4, 256]),
    maxUncommittedBytes: rng.pick([0, 0, 400]),
    clients: rng.range(2, 4),
    keys: rng.range(1, 4),
    tornWrites: rng.chance(0.5),
    fastRestarts: rng.chance(0.5),
    leaderLostNotices: rng.chance(0.5),
    quotas: quotasFor(rng),
    adminEvery: rng.pick([10, 40, 150]),
  };
}

/** Quota flags: a base small enough to be hit within a run, varied per member (some without any). */
function quotasFor(rng: Prng): number[] {
  const base = rng.pick([0, 2500, 6000, 20000]);
  return Array.from({ length: 8 }, () => rng.pick([base, base, base * 2, 0]));
}

/** Within this many ms a member's NOSPACE proposal is taken to be in flight (it is not proposed again). */
const RAISE_TIMEOUT_MS = 200;
/** The divergence check compares members' state digests at every this-th applied index. */
const HASH_EVERY = 16;

/** One simulated cluster run. */
export class Simulation {
  readonly seed: number;
  readonly rng: Prng;
  readonly params: SimParams;
  readonly nodes = new Map<string, SimNode>();
  readonly history: HistoryOp[] = [];
  readonly stats: Record<string, number> = {
    msgs: 0,
    dropped: 0,
    crashes: 0,
    elections: 0,
    snapshotsSent: 0,
    snapshotsTaken: 0,
    /** committed entries not applied because a leader's snapshot stepped meanwhile covers them */
    entriesSkipped: 0,
    asyncApplies: 0,
    appliesDropped: 0,
    confChanges: 0,
    transfers: 0,
    adminOps: 0,
    noSpaceRefused: 0,
    alarmsRaised: 0,
    hashChecks: 0,
    partitions: 0,
    opsOk: 0,
    opsFail: 0,
    opsUnknown: 0,
    maxCommit: 0,
  };

  #heap = new EventHeap<SimEvent>();
  #seq = 0;
  #now = 0;
  #step = 0;
  #nextId: number;
  #faults = true;
  /** blocked[from] = set of destinations */
  #blocked = new Map<string, Set<string>>();
  #clientSeq: number[] = [];
  #trace: (string | SimEvent)[] = [];
  #traceSize: number;

  // invariant registries
  #leaderOfTerm = new Map<number, string>();
  #entryReg = new Map<string, { data: Uint8Array; prevTerm: number; type: number }>();
  #applied: ({ term: number; data: Uint8Array; type: number } | undefined)[] = [];
  #maxApplied = 0;
  /**
   * Per index, the term in which it was committed: that of the leader whose commit index first passed it (seen after
   * every step). An entry of an earlier term is committed in a later one when an entry of the leader's own term after
   * it is (Raft §5.4.2), so this, not the entry's term, says which leaders must hold it.
   */
  #committedIn: number[] = [];
  #maxCommitSeen = 0;
  #snapReg = new Map<number, Uint8Array>();
  /** state digest at an applied index, with the member that recorded it first */
  #hashReg = new Map<number, { hash: number; by: string; what: string }>();
  /** clients and the admin stop issuing operations (the run is settling) */
  #quiet = false;
  #reqSeq = 0;
  constructor(opts: SimOptions) {
    this.seed = opts.seed >>> 0;
    this.rng = new Prng(this.seed);
    this.params = { ...paramsFor(this.rng, this.seed), ...opts.params };
    this.#traceSize = opts.traceSize ?? 300;
    const ids: string[] = [];
    for (let i = 1; i <= this.params.members; i++) ids.push(String(i));
    this.#nextId = this.params.members + 1;
    for (const id of ids) this.#start(this.#newNode(id), ids);
    // the founding members' conf changes are committed at the start, by no leader
    for (const n of this.nodes.values()) {
      while (this.#maxCommitSeen < n.raft.log.committed) this.#committedIn[++this.#maxCommitSeen] = 0;
    }
    for (let c = 0; c < this.params.clients; c++) {
      this.#clientSeq.push(0);
      this.#schedule(EV_CLIENT, this.rng.range(50, 150)).client = c;
    }
    this.#schedule(EV_ADMIN, this.rng.range(50, 150));
    this.#schedule(EV_NEMESIS, this.params.nemesisEvery + this.rng.int(this.params.nemesisEvery));
  }

  #newNode(id: string): SimNode {
    const n = new SimNode(id);
    n.quota = this.params.quotas[(Number(id) - 1) % this.params.quotas.length];
    this.nodes.set(id, n);
    return n;
  }

  get now(): number {
    return this.#now;
  }

  get step(): number {
    return this.#step;
  }

  // ---------------------------------------------------------------- run

  /** Runs the fault phase, then the recovery phase; throws SimFailure on any violation. */
  run(steps = 4000, livenessSteps = 6000): SimResult {
    try {
      this.#runPhase(steps);
      this.#healAll();
      this.#recover(livenessSteps);
      this.#settle(livenessSteps);
      this.#finishOps();
      this.#checkAckedWrites();
    } catch (err) {
      if (err instanceof SimFailure) throw err;
      throw this.#failure(`exception: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    }
    return { seed: this.seed, steps: this.#step, params: this.params, history: this.history, stats: this.stats };
  }

  #runPhase(steps: number): void {
    const end = this.#step + steps;
    while (this.#step < end) this.#one();
  }

  #one(): void {
    const ev = this.#heap.pop();
    if (!ev) throw this.#failure("event queue ran dry");
    this.#step++;
    this.#now = ev.time;
    if (this.#traceSize > 0) {
      this.#trace.push(ev);
      if (this.#trace.length > this.#traceSize) this.#trace.shift();
    }
    this.#handle(ev);
    this.#checkLeaders();
  }

  /** Faults stop; all crashed members restart; the cluster must elect a leader and commit a fresh write. */
  #recover(budget: number): void {
    this.#faults = false;
    const end = this.#step + budget;
    let probe: PendingOp | null = null;
    let probeDoneAt = -1;
    /** the index by which the last #freeSpace is applied (it is not repeated before) */
    let freedAt = 0;
    while (this.#step < end) {
      this.#one();
      if ((this.#step & 31) !== 0) continue;
      if (!probe || (probe.done && probe.rec.outcome !== "ok")) {
        const leader = this.#leader();
        if (!leader) continue;
        // a probe refused for want of space: the operator frees space and disarms, then tries again
        if (probe?.rec.outcome === "fail" && leader.raft.log.applied >= freedAt) {
          const before = leader.raft.log.lastIndex();
          this.#freeSpace(leader);
          // refused (a leadership transfer in progress) it left the log as it was: the operator tries again
          if (leader.raft.log.lastIndex() > before) freedAt = before + 1;
        }
        probe = this.#startPut(-1, leader, "probe");
        continue;
      }
      if (probe.done && probe.rec.outcome === "ok") {
        if (probeDoneAt < 0) probeDoneAt = this.#step;
        // Every live member must catch up to the probe write.
        const target = this.#maxApplied;
        let converged = true;
        for (const n of this.nodes.values()) {
          if (n.alive && !n.removed && n.raft.log.applied < target) converged = false;
        }
        if (converged) return;
      }
    }
    throw this.#failure(
      `liveness: no progress after faults stopped (probe ${probe?.rec.outcome ?? "none"}) ${this.#statuses()}`,
    );
  }

  /** The Raft status of every live member, for failure reports. */
  #statuses(): string {
    return [...this.nodes.values()].filter((n) => n.alive).map((n) => {
      const s = n.raft.status();
      return `${n.id}:${s.role}/t${s.term}/c${s.commit}/a${s.applied}/l${s.lastIndex}/lead${s.lead}` +
        `/v[${s.voters}]/l[${s.learners}]` + (s.progress ? JSON.stringify(s.progress) : "") +
        (n.removed ? "/removed" : "") + (n.pendingReady ? "/syncing" : "");
    }).join(" ");
  }

  /**
   * Clients stop; the cluster settles until every live member has applied the same last index (the commit index
   * of the leader) and has nothing left to apply (a Ready in flight may still carry heartbeat replies). Then all of
   * them must hold the same state.
   */
  #settle(budget: number): void {
    this.#quiet = true;
    const end = this.#step + budget;
    while (this.#step < end) {
      this.#one();
      if ((this.#step & 31) !== 0) continue;
      const leader = this.#leader();
      if (!leader) continue;
      const members = [...this.nodes.values()].filter((n) => n.alive && !n.removed);
      const target = leader.raft.log.committed;
      const toApply = (n: SimNode) =>
        (n.pendingReady?.committedEntries.length ?? 0) > 0 || n.pendingReady?.snapshot || n.toApply.length > 0;
      if (members.some((n) => n.raft.log.applied !== target || toApply(n))) continue;
      for (const n of members) this.#checkHash(n, target);
      return;
    }
    throw this.#failure(`the cluster did not settle: members never applied the same last index ${this.#statuses()}`);
  }

  // ---------------------------------------------------------------- scheduling

  #schedule(kind: number, delay: number): SimEvent {
    const ev = new SimEvent(this.#now + delay, this.#seq++, kind);
    this.#heap.push(ev);
    return ev;
  }

  #handle(ev: SimEvent): void {
    switch (ev.kind) {
      case EV_TICK: {
        const n = ev.node!;
        if (!n.alive || ev.inc !== n.incarnation) return;
        n.raft.tick();
        this.#drive(n);
        const tick = this.#schedule(EV_TICK, TICK_MS + (this.params.jitter > 0 ? this.rng.range(-1, 1) : 0));
        tick.node = n;
        tick.inc = n.incarnation;
        return;
      }
      case EV_MSG:
        this.#deliver(ev);
        return;
      case EV_SYNC: {
        const n = ev.node!;
        if (!n.alive || ev.inc !== n.incarnation) return;
        this.#completeSync(n);
        return;
      }
      case EV_CLIENT:
        this.#clientOp(ev.client);
        return;
      case EV_ADMIN:
        if (!this.#faults) return;
        this.#adminOp();
        this.#schedule(EV_ADMIN, 1 + this.rng.int(2 * this.params.adminEvery));
        return;
      case EV_NEMESIS:
        if (!this.#faults) return;
        this.#nemesis();
        this.#schedule(EV_NEMESIS, this.params.nemesisEvery + this.rng.int(this.params.nemesisEvery));
        return;
      case EV_RESTART: {
        const n = ev.node!;
        if (n.alive || n.removed) return;
        this.#start(n, null);
        return;
      }
      case EV_STOP: {
        const n = ev.node!;
        if (n.alive) this.#crash(n);
        return;
      }
      case EV_TIMEOUT: {
        const op = ev.op!;
        if (op.done) return;
        // A put may still take effect later; a read that did not return did nothing.
        this.#finish(op, op.rec.op === "put" ? "unknown" : "fail", null);
        return;
      }
      case EV_SNAPREPORT: {
        const n = ev.node!;
        if (!n.alive || ev.inc !== n.incarnation) return;
        n.raft.reportSnapshot(ev.msg!.to, ev.flag);
        this.#drive(n);
        return;
      }
      case EV_LEADER_LOST: {
        const n = ev.node!;
        if (!n.alive || ev.inc !== n.incarnation || n.raft.lead !== ev.about) return;
        n.raft.forgetLeader();
        this.#drive(n);
        const c = this.#schedule(EV_CAMPAIGN, this.rng.range(2, 22));
        c.node = n;
        c.inc = n.incarnation;
        return;
      }
      case EV_APPLY: {
        const n = ev.node!;
        if (!n.alive || ev.inc !== n.incarnation) return;
        this.#applySome(n);
        return;
      }
      case EV_CAMPAIGN: {
        const n = ev.node!;
        if (!n.alive || ev.inc !== n.incarnation || n.raft.lead !== "0" || n.raft.role !== "follower") return;
        n.raft.campaign();
        this.#drive(n);
        return;
      }
    }
  }

  /** Tells `n` that its connection to `leader` broke, after `delay`. */
  #noticeLeaderLost(n: SimNode, leader: string, delay: number): void {
    const ev = this.#schedule(EV_LEADER_LOST, delay);
    ev.node = n;
    ev.inc = n.incarnation;
    ev.about = leader;
  }

  // ---------------------------------------------------------------- members

  #start(n: SimNode, bootstrap: string[] | null): void {
    n.incarnation++;
    n.alive = true;
    n.pendingReady = null;
    const storage = new MemoryStorage();
    const d = n.disk;
    if (d.snap) storage.applySnapshot(d.snap);
    storage.setHardState(d.hs);
    storage.append(d.entries);
    n.storage = storage;
    n.sm = new SimStateMachine(n.quota, () => this.#now);
    n.raisingUntil = -1;
    if (d.snap) n.sm.restore(d.snap.data);
    n.appliedConf = d.snap ? d.snap.metadata.confState : { voters: [], learners: [] };
    n.lastSnapIndex = d.snap?.metadata.index ?? 0;
    n.appliedIndex = n.lastSnapIndex;
    n.toApply = [];
    const rng = this.rng.fork();
    n.raft = new RaftNode({
      id: n.id,
      storage,
      random: () => rng.next(),
      electionTick: 10,
      heartbeatTick: 1,
      preVote: true,
      checkQuorum: true,
      maxSizePerMsg: this.params.maxSizePerMsg,
      maxInflightMsgs: this.params.maxInflightMsgs,
      maxUncommittedBytes: this.params.maxUncommittedBytes,
      maxApplyingBytes: this.params.maxApplyingBytes,
      applied: d.snap?.metadata.index ?? 0,
      bootstrap: bootstrap ?? undefined,
    });
    n.prevRole = n.raft.role;
    n.prevTerm = n.raft.term;
    const tick = this.#schedule(EV_TICK, this.rng.range(1, TICK_MS));
    tick.node = n;
    tick.inc = n.incarnation;
    this.#drive(n);
  }

  #crash(n: SimNode): void {
    this.stats.crashes++;
    n.alive = false;
    n.pendingReady = null;
    n.disk.crash(this.rng, this.params.tornWrites);
    for (const op of n.puts.values()) this.#finish(op, "unknown", null);
    for (const op of n.gets.values()) this.#finish(op, "fail", null);
    for (const op of n.readsWaiting) this.#finish(op, "fail", null);
    n.puts.clear();
    n.gets.clear();
    n.readsWaiting = [];
    if (this.params.leaderLostNotices) {
      for (const m of this.nodes.values()) {
        if (m !== n && m.alive && m.raft.lead === n.id) this.#noticeLeaderLost(m, n.id, this.rng.range(0, 3));
      }
    }
    if (!n.removed && this.#faults) {
      const down = this.params.fastRestarts ? this.rng.range(5, 60) : this.rng.range(10, 600);
      this.#schedule(EV_RESTART, down).node = n;
    }
  }

  /** Takes the next Ready if the member's disk is idle: sends what may go early, starts the write. */
  #drive(n: SimNode): void {
    if (!n.alive || n.pendingReady !== null || !n.raft.hasReady()) return;
    const rd = n.raft.ready();
    n.pendingReady = rd;
    this.#checkReady(n, rd);
    for (const m of rd.preSyncMessages) this.#send(n, m);
    if (rd.snapshot) n.disk.write({ kind: "snap", snap: rd.snapshot });
    if (rd.entries.length > 0) n.disk.write({ kind: "entries", entries: rd.entries });
    if (rd.hardState) n.disk.write({ kind: "hs", hs: rd.hardState });
    // as server/node/node.ts: only a Ready that must be durable waits for an fsync; the others (heartbeats and
    // their replies, a commit index that moved) are written without one and go on at once
    const fsync = rd.mustSync && this.params.syncLatency > 0;
    const ev = this.#schedule(EV_SYNC, fsync ? this.rng.range(0, this.params.syncLatency) : 0);
    ev.node = n;
    ev.inc = n.incarnation;
  }

  /** The write of the outstanding Ready is done (durable when it had to be): send, apply, advance. */
  #completeSync(n: SimNode): void {
    const rd = n.pendingReady;
    if (!rd) return;
    // without an fsync the write stays in the page cache: a crash may lose it until a later fsync covers it
    if (rd.mustSync) n.disk.sync();
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    for (const m of rd.messages) this.#send(n, m);
    if (rd.snapshot) {
      this.#applySnapshot(n, rd.snapshot);
      this.stats.appliesDropped += n.toApply.length;
      n.toApply = []; // all below the snapshot, which replaced what they would build
    }
    if (this.params.applyLag === 0) {
      for (const e of rd.committedEntries) this.#applyCommitted(n, e);
    } else if (rd.committedEntries.length > 0) {
      if (n.toApply.length === 0) this.#scheduleApply(n);
      n.toApply.push(...rd.committedEntries);
    }
    for (const rs of rd.readStates) {
      const key = dec.decode(rs.ctx);
      const op = n.gets.get(key);
      if (!op) continue;
      n.gets.delete(key);
      op.readIndex = rs.index;
      n.readsWaiting.push(op);
    }
    this.#serveReads(n);
    n.pendingReady = null;
    n.raft.advance(rd);
    n.raft.appliedTo(n.appliedIndex);
    this.#maybeSnapshot(n);
    this.#drive(n);
  }

  /**
   * As server/node/node.ts: a committed entry that a leader's snapshot stepped meanwhile covers is skipped (the Ready
   * that carries the snapshot replaces its state), as is one below a snapshot installed since it was handed out.
   */
  #applyCommitted(n: SimNode, e: Entry): void {
    if (this.params.skipCovered && e.index <= n.raft.pendingSnapshotIndex()) this.stats.entriesSkipped++;
    else if (e.index > n.appliedIndex) this.#applyEntry(n, e);
  }

  #scheduleApply(n: SimNode): void {
    const ev = this.#schedule(EV_APPLY, this.rng.range(0, this.params.applyLag));
    ev.node = n;
    ev.inc = n.incarnation;
  }

  /** The apply loop's turn: some of the handed-out entries are applied, and the core hears how far it got. */
  #applySome(n: SimNode): void {
    const k = this.rng.range(1, Math.min(n.toApply.length, 8));
    for (const e of n.toApply.splice(0, k)) this.#applyCommitted(n, e);
    this.stats.asyncApplies++;
    n.raft.appliedTo(n.appliedIndex);
    this.#serveReads(n);
    // a snapshot of its own is taken between writes (as node.ts's, whose saves do not interleave a Ready's)
    if (n.pendingReady === null) this.#maybeSnapshot(n);
    if (n.toApply.length > 0) this.#scheduleApply(n);
    this.#drive(n); // further committed entries may be handed out now
  }

  #applySnapshot(n: SimNode, s: Snapshot): void {
    const idx = s.metadata.index;
    const known = this.#applied[idx];
    if (known && known.term !== s.metadata.term) {
      throw this.#failure(
        `member ${n.id} installed snapshot ${idx}/${s.metadata.term}, applied term there is ${known.term}`,
      );
    }
    this.#checkSnapshotData(n, idx, s.data);
    n.sm.restore(s.data);
    n.appliedIndex = idx;
    n.appliedConf = s.metadata.confState;
    n.lastSnapIndex = idx;
    this.#checkHash(n, idx);
  }

  #applyEntry(n: SimNode, e: Entry): void {
    if (n.raft.role === "leader") this.#noteCommits(n);
    if (e.index > this.#maxCommitSeen) {
      throw this.#failure(`member ${n.id} applied ${e.index}, which no leader's commit index has reached`);
    }
    const known = this.#applied[e.index];
    if (known) {
      if (known.term !== e.term || !bytesEqual(known.data, e.data)) {
        throw this.#failure(
          `state machine safety: member ${n.id} applied ${e.index}/${e.term}, others applied ${e.index}/${known.term}`,
        );
      }
    } else {
      this.#applied[e.index] = { term: e.term, data: e.data, type: e.type };
      if (e.index > this.#maxApplied) this.#maxApplied = e.index;
      if (e.index > this.stats.maxCommit) this.stats.maxCommit = e.index;
    }
    n.appliedIndex = e.index;
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      n.appliedConf = n.raft.applyConfChange(cc, e.index);
      this.#onConfChangeApplied(n, cc.type, cc.nodeId);
      return;
    }
    if (e.data.length > 0) this.#applyRequest(n, decodeInternal(e.data));
    if (e.index % HASH_EVERY === 0) this.#checkHash(n, e.index);
  }

  #applyRequest(n: SimNode, req: InternalRequestShape): void {
    const sizeBefore = n.sm.store.sizeBytes;
    const out = n.sm.apply(req);
    if (req.op === "alarm" && req.alarm!.memberID === n.id) n.raisingUntil = -1;
    if (out.ok && !n.sm.quota.available(sizeBefore, requestCost(req))) this.#raiseNoSpace(n);
    if (!out.ok && out.error.includes("space")) this.stats.noSpaceRefused++;
    const op = n.puts.get(req.id);
    if (op) {
      n.puts.delete(req.id);
      this.#finish(op, out.ok ? "ok" : "fail", null);
    }
  }

  /** As a server does when a write does not fit its quota: propose its own NOSPACE alarm (once at a time). */
  #raiseNoSpace(n: SimNode): void {
    if (n.sm.applier.noSpace || n.raisingUntil > this.#now) return;
    n.raisingUntil = this.#now + RAISE_TIMEOUT_MS;
    this.stats.alarmsRaised++;
    this.#proposeOn(n, {
      op: "alarm",
      alarm: { action: AlarmAction.ACTIVATE, memberID: n.id, alarm: AlarmType.NOSPACE },
    });
  }

  /** Proposes a request nobody waits for; false if the member cannot propose now. */
  #proposeOn(n: SimNode, req: Omit<InternalRequestShape, "id">): boolean {
    try {
      n.raft.propose(encodeInternal({ ...req, id: String(++this.#reqSeq) } as InternalRequestShape));
    } catch {
      return false;
    }
    this.#drive(n);
    return true;
  }

  /** Records a member's state digest at an applied index; another member's at the same index must be equal. */
  #checkHash(n: SimNode, index: number): void {
    this.stats.hashChecks++;
    const hash = n.sm.hash();
    const known = this.#hashReg.get(index);
    if (!known) this.#hashReg.set(index, { hash, by: n.id, what: n.sm.describe() });
    else if (known.hash !== hash) {
      throw this.#failure(
        `replicas diverged at applied index ${index}: member ${known.by} (${known.what}) ` +
          `but member ${n.id} (${n.sm.describe()})`,
      );
    }
  }

  #serveReads(n: SimNode): void {
    if (n.readsWaiting.length === 0) return;
    const applied = n.appliedIndex;
    const rest: PendingOp[] = [];
    for (const op of n.readsWaiting) {
      if (op.done) continue;
      if (op.readIndex <= applied) this.#finish(op, "ok", n.sm.get(op.rec.key));
      else rest.push(op);
    }
    n.readsWaiting = rest;
  }

  #maybeSnapshot(n: SimNode, force = false): void {
    // as node.ts: none while a leader's snapshot is stepped and not yet installed
    if (n.raft.pendingSnapshotIndex() > 0) return;
    const applied = n.appliedIndex;
    if (applied - n.lastSnapIndex < (force ? 1 : this.params.snapshotEvery)) return;
    const data = n.sm.encode(applied, n.appliedConf);
    this.#checkSnapshotData(n, applied, data);
    const snap = n.storage.createSnapshot(applied, n.appliedConf, data);
    const compactTo = Math.max(0, applied - this.params.snapshotKeep);
    if (compactTo >= n.storage.firstIndex()) n.storage.compact(compactTo);
    n.disk.saveLocalSnapshot(snap, compactTo);
    n.lastSnapIndex = applied;
    this.stats.snapshotsTaken++;
  }

  #onConfChangeApplied(_by: SimNode, type: number, id: string): void {
    if (type === ConfChangeType.AddNode || type === ConfChangeType.AddLearnerNode) {
      if (!this.nodes.has(id)) {
        const n = this.#newNode(id);
        this.#start(n, null);
      }
    } else if (type === ConfChangeType.RemoveNode) {
      const n = this.nodes.get(id);
      if (n && !n.removed) {
        // Its peers stop talking to it; it shuts down soon after (as an etcd member does).
        n.removed = true;
        this.#schedule(EV_STOP, this.rng.range(0, 50)).node = n;
      }
    }
  }

  // ---------------------------------------------------------------- network

  #send(from: SimNode, m: Message): void {
    this.stats.msgs++;
    const to = this.nodes.get(m.to);
    const blocked = this.#blocked.get(m.from)?.has(m.to) ?? false;
    if (!to || blocked || (this.#faults && this.rng.chance(this.params.lossRate))) {
      this.stats.dropped++;
      if (m.type === "Snap") this.#reportSnap(from, m, false, 0);
      else if (blocked && m.type === "App") from.raft.reportUnreachable(m.to);
      return;
    }
    if (m.type === "Snap") this.stats.snapshotsSent++;
    let delay = this.params.baseLatency + (this.params.jitter > 0 ? this.rng.int(this.params.jitter + 1) : 0);
    if (this.#faults && this.params.longDelayRate > 0 && this.rng.chance(this.params.longDelayRate)) {
      delay += this.rng.range(20, 300);
    }
    const ev = this.#schedule(EV_MSG, delay);
    ev.msg = m;
    ev.node = from;
    ev.inc = from.incarnation;
    // A forwarded proposal is never delivered twice (the peer transport runs over TCP and does not retry it): the
    // state machine, as etcd's, would apply a duplicated proposal twice.
    if (this.params.dupRate > 0 && m.type !== "Prop" && this.rng.chance(this.params.dupRate)) {
      const dup = this.#schedule(EV_MSG, delay + this.rng.range(0, 50));
      dup.msg = m;
      dup.node = from;
      dup.inc = from.incarnation;
      dup.flag = true; // a duplicate: no snapshot report
    }
  }

  #reportSnap(from: SimNode, m: Message, ok: boolean, delay: number): void {
    const ev = this.#schedule(EV_SNAPREPORT, delay);
    ev.node = from;
    ev.inc = from.incarnation;
    ev.msg = m;
    ev.flag = ok;
  }

  #deliver(ev: SimEvent): void {
    const m = ev.msg!;
    const to = this.nodes.get(m.to);
    const ok = to !== undefined && to.alive;
    if (m.type === "Snap" && !ev.flag) this.#reportSnap(ev.node!, m, ok, 0);
    if (!ok) return;
    to.raft.step(m);
    this.#drive(to);
  }

  // ---------------------------------------------------------------- clients

  #clientOp(c: number): void {
    if (this.#quiet) return;
    const live = [...this.nodes.values()].filter((n) => n.alive && !n.removed);
    if (live.length === 0) {
      this.#schedule(EV_CLIENT, 20).client = c;
      return;
    }
    const n = this.rng.pick(live);
    const key = `k${this.rng.int(this.params.keys)}`;
    if (this.rng.chance(0.6)) this.#startPut(c, n, key);
    else this.#startGet(c, n, key);
  }

  #startPut(c: number, n: SimNode, key: string): PendingOp {
    const seq = c >= 0 ? ++this.#clientSeq[c] : ++this.#nextProbe;
    const id = String(++this.#reqSeq);
    const value = `v${c}.${seq}`;
    const rec: HistoryOp = {
      client: c,
      op: "put",
      key,
      value,
      invokeStep: this.#step,
      returnStep: -1,
      outcome: "unknown",
    };
    const op: PendingOp = { rec, id, node: n, deadline: this.#now + OP_TIMEOUT_MS, done: false, readIndex: 0 };
    this.history.push(rec);
    const req: InternalRequestShape = {
      id,
      op: "put",
      put: {
        key: enc.encode(key),
        value: enc.encode(value),
        lease: "0",
        prev_kv: false,
        ignore_value: false,
        ignore_lease: false,
      },
    };
    // the member's own quota, checked before proposing (etcd's quotaKVServer)
    if (!n.sm.quota.available(n.sm.store.sizeBytes, requestCost(req))) {
      this.stats.noSpaceRefused++;
      this.#raiseNoSpace(n);
      this.#finish(op, "fail", null);
      return op;
    }
    try {
      n.raft.propose(encodeInternal(req));
    } catch {
      this.#finish(op, "fail", null);
      return op;
    }
    n.puts.set(id, op);
    this.#schedule(EV_TIMEOUT, OP_TIMEOUT_MS).op = op;
    this.#drive(n);
    return op;
  }

  #nextProbe = 0;
  #leaseSeq = 0;

  /**
   * The admin client, on a random live member: fills the store with large values on keys f0..f2 (by puts and txns,
   * some under leases), deletes them, compacts, disarms the alarms the member lists, grants and revokes leases and
   * snapshots the member ("defrag"). Writes are checked against the member's own quota before they are proposed.
   * Its keys are not the clients' (k0..), so the client history stays checkable.
   */
  #adminOp(): void {
    const live = [...this.nodes.values()].filter((n) => n.alive && !n.removed);
    if (live.length === 0) return;
    const n = this.rng.pick(live);
    const r = this.rng.next();
    const big = () => enc.encode("x".repeat(this.rng.range(50, 400)));
    const filler = () => enc.encode(`f${this.rng.int(3)}`);
    const leases = [...n.sm.lessor.leases.keys()];
    this.stats.adminOps++;
    if (r < 0.25) {
      const lease = leases.length > 0 && this.rng.chance(0.3) ? this.rng.pick(leases) : "0";
      this.#adminWrite(n, {
        op: "put",
        put: { key: filler(), value: big(), lease, prev_kv: false, ignore_value: false, ignore_lease: false },
      });
    } else if (r < 0.33) {
      const put = { key: filler(), value: big(), lease: "0", prev_kv: false, ignore_value: false, ignore_lease: false };
      const del = { key: filler(), range_end: new Uint8Array(), prev_kv: false };
      this.#adminWrite(n, {
        op: "txn",
        txn: {
          compare: [],
          success: [{ request: "request_delete_range", request_delete_range: del }, {
            request: "request_put",
            request_put: put,
          }],
          failure: [],
        },
      } as Omit<InternalRequestShape, "id">);
    } else if (r < 0.45) {
      this.#proposeOn(n, { op: "delete_range", delete_range: this.#fillerRange() });
    } else if (r < 0.57) {
      this.#proposeOn(n, {
        op: "compaction",
        compaction: { revision: String(n.sm.store.currentRev), physical: false },
      });
    } else if (r < 0.72) {
      this.#disarm(n);
    } else if (r < 0.8) {
      this.#adminWrite(n, { op: "lease_grant", lease_grant: { ID: String(1000 + ++this.#leaseSeq), TTL: "100" } });
    } else if (r < 0.86) {
      if (leases.length > 0) this.#proposeOn(n, { op: "lease_revoke", lease_revoke: { ID: this.rng.pick(leases) } });
    } else if (r < 0.9) {
      if (n.pendingReady === null) this.#maybeSnapshot(n, true);
    }
  }

  /** A write the admin makes on `n`: refused (and NOSPACE raised) when it does not fit n's quota. */
  #adminWrite(n: SimNode, req: Omit<InternalRequestShape, "id">): void {
    if (!n.sm.quota.available(n.sm.store.sizeBytes, requestCost(req as InternalRequestShape))) {
      this.stats.noSpaceRefused++;
      this.#raiseNoSpace(n);
      return;
    }
    this.#proposeOn(n, req);
  }

  #fillerRange() {
    return { key: enc.encode("f"), range_end: enc.encode("g"), prev_kv: false };
  }

  /** etcdctl alarm disarm: deactivates every alarm the member lists, one request each. */
  #disarm(n: SimNode): void {
    for (const a of n.sm.applier.alarms) {
      this.#proposeOn(n, {
        op: "alarm",
        alarm: { action: AlarmAction.DEACTIVATE, memberID: a.memberID, alarm: a.alarm as typeof AlarmType.NOSPACE },
      });
    }
  }

  /** What an operator does when writes are refused for want of space: delete, compact, disarm. */
  #freeSpace(n: SimNode): void {
    this.#proposeOn(n, { op: "delete_range", delete_range: this.#fillerRange() });
    const s = n.sm.store;
    if (s.currentRev > s.compactRev) {
      this.#proposeOn(n, { op: "compaction", compaction: { revision: String(s.currentRev), physical: false } });
    }
    this.#disarm(n);
  }

  #startGet(c: number, n: SimNode, key: string): void {
    const seq = ++this.#clientSeq[c];
    const ctx = `r${c}-${seq}`;
    const rec: HistoryOp = {
      client: c,
      op: "get",
      key,
      value: null,
      invokeStep: this.#step,
      returnStep: -1,
      outcome: "unknown",
    };
    const op: PendingOp = { rec, id: ctx, node: n, deadline: this.#now + OP_TIMEOUT_MS, done: false, readIndex: 0 };
    this.history.push(rec);
    try {
      n.raft.readIndex(enc.encode(ctx));
    } catch {
      this.#finish(op, "fail", null);
      return;
    }
    n.gets.set(ctx, op);
    this.#schedule(EV_TIMEOUT, OP_TIMEOUT_MS).op = op;
    this.#drive(n);
  }

  #finish(op: PendingOp, outcome: HistoryOp["outcome"], value: string | null): void {
    if (op.done) return;
    op.done = true;
    op.rec.outcome = outcome;
    op.rec.returnStep = this.#step;
    if (op.rec.op === "get" && outcome === "ok") op.rec.value = value;
    if (outcome === "ok") this.stats.opsOk++;
    else if (outcome === "fail") this.stats.opsFail++;
    else this.stats.opsUnknown++;
    op.node.puts.delete(op.id);
    op.node.gets.delete(op.id);
    const c = op.rec.client;
    if (c >= 0 && this.#faults) {
      // Think time, then the next operation (at a later step, so real-time order is unambiguous).
      this.#schedule(EV_CLIENT, 1 + this.rng.int(20)).client = c;
    } else if (c >= 0) {
      this.#schedule(EV_CLIENT, 5 + this.rng.int(40)).client = c;
    }
  }

  /** Operations still open at the end have an unknown outcome (puts) or did nothing (gets). */
  #finishOps(): void {
    for (const n of this.nodes.values()) {
      for (const op of [...n.puts.values()]) this.#finish(op, "unknown", null);
      for (const op of [...n.gets.values()]) this.#finish(op, "fail", null);
      for (const op of n.readsWaiting) this.#finish(op, "fail", null);
    }
    for (const rec of this.history) {
      if (rec.returnStep < 0) {
        rec.returnStep = this.#step;
        rec.outcome = rec.op === "put" ? "unknown" : "fail";
      }
    }
  }

  // ---------------------------------------------------------------- nemesis

  #leader(): SimNode | null {
    let best: SimNode | null = null;
    for (const n of this.nodes.values()) {
      if (n.alive && n.raft.isLeader && (!best || n.raft.term > best.raft.term)) best = n;
    }
    return best;
  }

  #block(from: string, to: string): void {
    let s = this.#blocked.get(from);
    if (!s) this.#blocked.set(from, s = new Set());
    s.add(to);
  }

  #nemesis(): void {
    const r = this.rng.next();
    const live = [...this.nodes.values()].filter((n) => n.alive && !n.removed);
    const ids = [...this.nodes.values()].filter((n) => !n.removed).map((n) => n.id);
    const leader = this.#leader();
    if (r < 0.2) {
      this.#blocked.clear();
    } else if (r < 0.35) {
      // symmetric split
      this.stats.partitions++;
      this.#blocked.clear();
      const side = new Set(ids.filter(() => this.rng.chance(0.5)));
      for (const a of ids) for (const b of ids) if (side.has(a) !== side.has(b)) this.#block(a, b);
    } else if (r < 0.45) {
      // isolate the leader
      if (!leader) return;
      this.stats.partitions++;
      this.#blocked.clear();
      for (const b of ids) {
        if (b === leader.id) continue;
        this.#block(leader.id, b);
        this.#block(b, leader.id);
      }
    } else if (r < 0.5) {
      // the leader and one follower on one side (the leader keeps a minority and can append but not commit)
      if (!leader) return;
      this.stats.partitions++;
      this.#blocked.clear();
      const mate = this.rng.pick(ids.filter((i) => i !== leader.id));
      const side = new Set([leader.id, mate]);
      for (const a of ids) for (const b of ids) if (side.has(a) !== side.has(b)) this.#block(a, b);
    } else if (r < 0.55) {
      // asymmetric: one member can only send, or only receive
      this.stats.partitions++;
      this.#blocked.clear();
      const x = this.rng.pick(ids);
      const outgoing = this.rng.chance(0.5);
      for (const b of ids) {
        if (b === x) continue;
        if (outgoing) this.#block(x, b);
        else this.#block(b, x);
      }
    } else if (r < 0.63) {
      if (live.length > 0) this.#crash(this.rng.pick(live));
    } else if (r < 0.7) {
      // the leader, most likely with writes in flight (sometimes with a follower at the same moment)
      if (leader) {
        this.#crash(leader);
        if (this.rng.chance(0.3)) {
          const others = live.filter((n) => n !== leader);
          if (others.length > 0) this.#crash(this.rng.pick(others));
        }
      }
    } else if (r < 0.77) {
      if (!leader) return;
      const st = leader.raft.status();
      const others = st.voters.filter((v) => v !== leader.id);
      if (others.length === 0) return;
      this.stats.transfers++;
      leader.raft.transferLeader(this.rng.pick(others));
      this.#drive(leader);
    } else if (r < 0.92) {
      this.#membership(leader);
    } else if (r < 0.95 && this.params.leaderLostNotices && leader) {
      // a follower's connection to a leader that is alive breaks: it must not disrupt the cluster for long
      const followers = live.filter((n) => n !== leader && n.raft.lead === leader.id);
      if (followers.length > 0) this.#noticeLeaderLost(this.rng.pick(followers), leader.id, 0);
    }
    // else: quiet period
  }

  #membership(leader: SimNode | null): void {
    if (!leader) return;
    const cs = leader.raft.confState();
    const maxVoters = this.params.members === 3 ? 5 : 7;
    const choices: (() => { type: ConfChangeType; nodeId: string })[] = [];
    if (cs.learners.length > 0) {
      const l = this.rng.pick(cs.learners);
      choices.push(() => ({ type: ConfChangeType.AddNode, nodeId: l }));
      choices.push(() => ({ type: ConfChangeType.RemoveNode, nodeId: l }));
    } else if (cs.voters.length < maxVoters) {
      choices.push(() => ({ type: ConfChangeType.AddLearnerNode, nodeId: String(this.#nextId) }));
    }
    if (cs.voters.length > 3) {
      const v = this.rng.pick(cs.voters);
      choices.push(() => ({ type: ConfChangeType.RemoveNode, nodeId: v }));
    }
    choices.push(() => ({ type: ConfChangeType.UpdateNode, nodeId: this.rng.pick(cs.voters) }));
    const cc = this.rng.pick(choices)();
    try {
      leader.raft.proposeConfChange(cc);
    } catch {
      return;
    }
    if (cc.type === ConfChangeType.AddLearnerNode) this.#nextId++;
    this.stats.confChanges++;
    this.#drive(leader);
  }

  #healAll(): void {
    this.#blocked.clear();
    for (const n of this.nodes.values()) {
      if (!n.alive && !n.removed) this.#start(n, null);
    }
  }

  // ---------------------------------------------------------------- invariants

  /** Election safety and leader completeness, checked after every step. */
  #checkLeaders(): void {
    for (const n of this.nodes.values()) {
      if (!n.alive) continue;
      const r = n.raft;
      const role = r.role;
      const term = r.term;
      if (term < n.prevTerm) throw this.#failure(`member ${n.id} term went back ${n.prevTerm} -> ${term}`);
      if (role === "leader") this.#noteCommits(n);
      if (role === "leader" && (n.prevRole !== "leader" || n.prevTerm !== term)) {
        this.stats.elections++;
        const other = this.#leaderOfTerm.get(term);
        if (other !== undefined && other !== n.id) {
          throw this.#failure(`election safety: ${other} and ${n.id} both leaders of term ${term}`);
        }
        this.#leaderOfTerm.set(term, n.id);
        this.#checkCompleteness(n);
      }
      n.prevRole = role;
      n.prevTerm = term;
    }
  }

  /** Records the indexes a leader's commit index passed for the first time as committed in its term. */
  #noteCommits(n: SimNode): void {
    const c = n.raft.log.committed;
    while (this.#maxCommitSeen < c) this.#committedIn[++this.#maxCommitSeen] = n.raft.term;
  }

  #checkCompleteness(n: SimNode): void {
    const log = n.raft.log;
    const last = log.lastIndex();
    // commits are prefixes and terms only grow, so the indexes committed in earlier terms form a prefix. A leader of
    // an old term can still win late (a delayed vote) after a later term committed entries of its own term or older
    // ones: it need not hold those, and can commit nothing.
    let upto = this.#maxCommitSeen;
    while (upto > 0 && this.#committedIn[upto] >= n.raft.term) upto--;
    if (last < upto) {
      throw this.#failure(
        `leader completeness: leader ${n.id} (term ${n.raft.term}) ends at ${last}, ` +
          `but ${upto} was committed in an earlier term (${this.#committedIn[upto]})`,
      );
    }
    const first = log.firstIndex();
    for (let i = Math.max(1, first - 1); i <= upto; i++) {
      const a = this.#applied[i];
      if (!a) continue;
      const t = log.term(i);
      if (t !== a.term) {
        throw this.#failure(
          `leader completeness: leader ${n.id} (term ${n.raft.term}) has term ${t} at ${i}, ` +
            `applied entry there has term ${a.term}`,
        );
      }
    }
  }

  /** Log matching: every entry entering a log is consistent with every other log's entry at (index, term). */
  #checkReady(n: SimNode, rd: Ready): void {
    const log = n.raft.log;
    for (const e of rd.entries) {
      const key = `${e.index}:${e.term}`;
      const prevTerm = e.index > 1 ? log.term(e.index - 1) ?? -1 : 0;
      const reg = this.#entryReg.get(key);
      if (!reg) {
        this.#entryReg.set(key, { data: e.data, prevTerm, type: e.type });
      } else if (reg.prevTerm !== prevTerm && prevTerm !== -1 && reg.prevTerm !== -1) {
        throw this.#failure(
          `log matching: ${n.id} has ${key} after term ${prevTerm}, another log after ${reg.prevTerm}`,
        );
      } else if (reg.type !== e.type || !bytesEqual(reg.data, e.data)) {
        throw this.#failure(`log matching: ${n.id} has different content at ${key}`);
      }
    }
    const hs = rd.hardState;
    if (hs && hs.commit > log.lastIndex()) {
      throw this.#failure(`member ${n.id} would persist commit ${hs.commit} beyond last index ${log.lastIndex()}`);
    }
  }

  #checkSnapshotData(n: SimNode, index: number, data: Uint8Array): void {
    const known = this.#snapReg.get(index);
    if (known === undefined) this.#snapReg.set(index, Uint8Array.from(data));
    else if (!bytesEqual(known, data)) throw this.#failure(`state machine safety: ${n.id}'s state at ${index} differs`);
  }

  /** Every write acknowledged as ok is in the applied log. */
  #checkAckedWrites(): void {
    const appliedValues = new Set<string>();
    for (const a of this.#applied) {
      if (!a || a.data.length === 0 || a.type !== EntryType.Normal) continue;
      const req = decodeInternal(a.data);
      if (req.op === "put") appliedValues.add(dec.decode(req.put!.value));
    }
    for (const rec of this.history) {
      if (rec.op !== "put" || rec.outcome !== "ok") continue;
      if (!appliedValues.has(rec.value!)) throw this.#failure(`acknowledged write ${rec.value} is not in the log`);
    }
  }

  #failure(why: string): SimFailure {
    const trace = this.#trace.map((t) => {
      if (typeof t === "string") return t;
      const m = t.msg;
      const what = m
        ? `${m.type} ${m.from}->${m.to} t${m.term} i${m.index} lt${m.logTerm} c${m.commit} n${m.entries.length}` +
          (m.reject ? ` reject hint${m.rejectHint}` : "")
        : t.node
        ? `node ${t.node.id}`
        : t.client >= 0
        ? `client ${t.client}`
        : "";
      return `@${t.time} ${KIND_NAMES[t.kind]} ${what}`;
    });
    return new SimFailure(this.seed, this.#step, why, this.history, trace, this.params);
  }
}

/** Convenience: one run with the given options. */
export function runSimulation(opts: SimOptions): SimResult {
  return new Simulation(opts).run(opts.steps ?? 4000, opts.livenessSteps ?? 6000);
}
