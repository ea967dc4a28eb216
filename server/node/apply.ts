/**
 * The apply half of a member's Ready loop: committed entries and the leader's snapshots go into the state machine
 * (MVCC store, leases, alarms, auth, members), in log order, and the proposals made here get their answers. It keeps
 * the member's progress as etcd's apply loop does: the applied index, the Raft membership as of that index, and the
 * index of the newest snapshot of the applied state.
 */
import type { Applier } from "../apply/applier.ts";
import { type BackendQuota, requestCost } from "../apply/quota.ts";
import { nextTurn } from "../util/next_turn.ts";
import { type BlobSink, decodeState, StateDecoder, StateEncoder } from "../apply/state_codec.ts";
import { EtcdError } from "../errors.ts";
import type { Lessor } from "../lease/lessor.ts";
import type { Member, MemberContext, Members } from "../membership/members.ts";
import type { MvccStore } from "../mvcc/store.ts";
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  type Entry,
  EntryType,
  type Snapshot,
} from "../raft/types.ts";
import { decodeInternal, type InternalRequestShape } from "../../proto/mod.ts";
import type { Proposals, Reply } from "./waiters.ts";

/**
 * Work one slice of decoding a leader's snapshot does before it yields: longer than an encode's (the member being
 * restored serves no writes), so that yielding costs little of the restore's time, and still far below a stall
 * anyone would notice.
 */
const RESTORE_SLICE_MS = 20;

/**
 * Work one step of a compaction's record drop does before it yields (the member serves meanwhile): a million keys
 * took 0.2 s at once, ten million 2 s, longer than an election timeout. A put crosses the event loop several times
 * (request in, proposal, fsync done, apply, response out) and may wait for a step at each: with 5 ms steps the puts
 * during a compaction of 10,000 churned keys took up to 33 ms (one member, 2,000 puts/s, auto-compaction every 10 s:
 * 49 puts of 10 ms or more at four compactions); with 1 ms steps up to 31 ms, but 27-33 such puts, and half the
 * compactions slowed none.
 */
const COMPACTION_SLICE_MS = 1;

/**
 * Member k of a cluster (by ID, as its snapshots are staggered: node.ts) starts dropping a compaction's records k times
 * this long after the compaction applied. Every member applies it at the same index, and all three of a cluster on
 * shared cores dropped their records at once (15-73 ms each at 10,000 keys churned at 2,000 puts/s): a commit needs
 * the leader and one follower, and each waited for a core.
 */
export const COMPACTION_STAGGER_MS = 100;

/** The parts of the replicated state machine. */
export interface StateMachine {
  store: MvccStore;
  lessor: Lessor;
  applier: Applier;
  members: Members;
}

/** What applying needs of the member around it. */
export interface ApplyDeps extends StateMachine {
  /** this member's ID */
  memberId: string;
  /** the members known from the command line: names and peer URLs of the founding members' conf changes */
  initialMembers: Member[];
  /** --quota-backend-bytes, checked after each write */
  quota: BackendQuota;
  /** the proposals made here, answered as their entries apply */
  proposals: Proposals;
  /** Hands an applied conf change to the Raft core (RaftNode.applyConfChange); returns the new membership. */
  applyToRaft: (cc: ConfChange, index: number) => ConfState;
  /** A member left the membership: its connection and metrics go. */
  peerRemoved: (id: string) => void;
  /** This member left the membership (called in a later microtask). */
  selfRemoved: () => void;
  /** A write took the store past this member's quota: raise NOSPACE through the log (called in a later microtask). */
  overQuota: () => void;
  /** The state was replaced by a leader's snapshot. */
  restored: () => void;
  /** An entry cannot be decoded: the member must stop. */
  fatal: (err: Error) => never;
  /** This member's place among the members (0 for the first by ID): its compactions start that late (see above). */
  rank: () => number;
  log: (msg: string) => void;
}

/**
 * The decode of a leader's snapshot that follows its arrival: what has arrived is decoded in slices beside the live
 * state while the rest comes (the transfer takes seconds at a million keys), so that little is left to decode once
 * it is all there. {@link ApplyLoop.decode} finishes it.
 */
export class ArrivingDecode {
  readonly #decoder: StateDecoder;
  #loop: Promise<void> | null = null;
  /** more arrived while the loop ran */
  #more = false;
  #failed: { err: unknown } | null = null;
  #abandoned = false;

  /** A decode of `data`, a buffer the snapshot arrives into from its start. */
  constructor(data: Uint8Array) {
    this.#decoder = new StateDecoder(data, 0);
  }

  /** The snapshot's bytes up to `end` have arrived. */
  arrived(end: number): void {
    this.#decoder.arrived(end);
    if (this.#loop) this.#more = true;
    else this.#kick();
  }

  /** The snapshot will not be installed (its transfer broke off, or the Raft core did not take it). */
  abandon(): void {
    this.#abandoned = true;
  }

  /** The decoder, once the whole snapshot arrived: decodes what is left (a blob that failed its decode throws). */
  async finish(): Promise<StateDecoder> {
    while (this.#loop) await this.#loop;
    if (this.#failed) throw this.#failed.err;
    await this.#decoder.inSlices(RESTORE_SLICE_MS);
    return this.#decoder;
  }

  #kick(): void {
    if (this.#failed || this.#abandoned) return;
    this.#more = false;
    this.#loop = this.#run().finally(() => {
      this.#loop = null;
      if (this.#more) this.#kick();
    });
  }

  async #run(): Promise<void> {
    try {
      while (!this.#decoder.step(RESTORE_SLICE_MS)) {
        if (this.#decoder.waiting || this.#abandoned) return;
        await nextTurn();
      }
    } catch (err) {
      this.#failed = { err };
    }
  }
}

/** Applies committed entries and snapshots to the state machine, and tracks how far it got. */
export class ApplyLoop {
  #deps: ApplyDeps;
  /** index of the last entry applied to the state machine */
  appliedIndex = 0;
  /** bytes of entry data applied since the member started (the log a snapshot would let go of: see node.ts) */
  appliedBytes = 0;
  /** index of the newest snapshot of the applied state (this member's own or the leader's) */
  snapIndex = 0;
  /**
   * Raft membership as of `appliedIndex` (etcd's confState of the apply loop). The Raft core's own is ahead of it
   * from the moment a leader's snapshot is stepped until its Ready is applied, so snapshots must not use it.
   */
  confState: ConfState = { voters: [], learners: [] };

  /** the steps of the compaction under way, while they run (or wait for this member's turn) */
  #compacting: Promise<void> | null = null;
  #stopped = false;
  /** ends the wait for this member's turn to compact early (the member is closing, or its snapshot is due) */
  #endWait: (() => void) | null = null;

  constructor(deps: ApplyDeps) {
    this.#deps = deps;
  }

  /**
   * Resolves once the store holds no compaction under way: a snapshot's encode would otherwise finish it at once. A
   * compaction still waiting for this member's turn starts its steps now (the snapshot due is this member's own
   * burst, staggered from the others'), and one applied meanwhile is waited for too.
   */
  async compactionDone(): Promise<void> {
    while (this.#compacting) {
      this.#endWait?.();
      await this.#compacting;
    }
  }

  /** Stops the steps of a compaction under way (the member is closing). */
  stop(): void {
    this.#stopped = true;
    this.#endWait?.();
  }

  /**
   * Runs the steps of the store's compaction under way, yielding to the event loop between them, once this member's
   * turn came (COMPACTION_STAGGER_MS). Reads below the compaction's revision are refused from its apply on; only the
   * records' drop waits, and with it a physical compaction's answer and this member's next snapshot.
   */
  #driveCompaction(): Promise<void> {
    const store = this.#deps.store;
    this.#compacting ??= (async () => {
      const wait = this.#deps.rank() * COMPACTION_STAGGER_MS;
      if (wait > 0 && !this.#stopped) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          this.#endWait = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#endWait = null;
      }
      while (!this.#stopped && !store.compactionStep(COMPACTION_SLICE_MS)) await nextTurn();
    })().finally(() => this.#compacting = null);
    return this.#compacting;
  }

  /** Rebuilds the state machine from a snapshot file at start-up; returns the membership it records. */
  recover(snap: { index: number; data: Uint8Array }): ConfState {
    const meta = this.#decode(snap.data);
    this.appliedIndex = meta.appliedIndex;
    this.snapIndex = snap.index;
    this.confState = meta.confState;
    return meta.confState;
  }

  /**
   * Decodes a snapshot received from the leader, in slices that yield to the event loop, beside the live state (which
   * serves reads meanwhile and is not changed): {@link install} then replaces the state machine with it.
   */
  async decode(s: Snapshot, arriving?: ArrivingDecode): Promise<StateDecoder> {
    const start = performance.now();
    let decoder: StateDecoder;
    if (arriving) decoder = await arriving.finish();
    else {
      decoder = new StateDecoder(s.data);
      await decoder.inSlices(RESTORE_SLICE_MS);
    }
    const ms = Math.round(performance.now() - start);
    this.#decoded = arriving ? `decoded as it arrived, the rest in ${ms} ms` : `decoded in ${ms} ms`;
    return decoder;
  }

  /** how the last `decode` went, for the log line of its install */
  #decoded = "";

  /** Replaces the state machine, at once, with the leader's snapshot `s` that `decoder` decoded. */
  install(s: Snapshot, decoder: StateDecoder): void {
    const { store, lessor, applier, members } = this.#deps;
    decoder.install(store, lessor, applier.alarms, members, applier.auth);
    this.appliedIndex = s.metadata.index;
    this.snapIndex = s.metadata.index;
    this.confState = s.metadata.confState;
    this.#deps.log(`restored state from the leader's snapshot at index ${s.metadata.index} (${this.#decoded})`);
    this.#deps.restored();
  }

  /**
   * The applied state at the call as one blob (snapshots, and what a new member receives), whose index is
   * `appliedIndex` at the call; `term`: the Raft core's. Encoded in slices of `sliceMs` that yield to the event loop:
   * entries applied meanwhile are not in it. Abandoned (rejected with its reason) once `signal` is aborted.
   */
  encodeInSlices(term: number, sliceMs: number, signal?: AbortSignal): Promise<Uint8Array> {
    return this.#encoder(term).inSlices(sliceMs, signal);
  }

  /**
   * Encodes the applied state as `encodeInSlices` does, into the sink `open(size)` returns (this member's snapshot
   * file), in reused pieces; resolves with the blob's size.
   */
  encodeToSink(
    term: number,
    open: (size: number) => BlobSink,
    sliceMs: number,
    signal?: AbortSignal,
  ): Promise<number> {
    return this.#encoder(term).toSink(open, sliceMs, signal);
  }

  #encoder(term: number): StateEncoder {
    const { store, lessor, applier, members } = this.#deps;
    return new StateEncoder(
      { appliedIndex: this.appliedIndex, term, confState: this.confState },
      store,
      lessor,
      applier.alarms,
      members,
      applier.auth,
    );
  }

  /** Applies one committed entry (entries at or below the applied index are skipped). */
  applyEntry(e: Entry): void {
    if (e.index <= this.appliedIndex) return;
    this.appliedIndex = e.index;
    this.appliedBytes += e.data.length;
    if (e.type === EntryType.ConfChange) return this.#applyConfChange(decodeConfChange(e.data), e.index);
    if (e.data.length === 0) return; // a new leader's empty entry
    let req: InternalRequestShape;
    try {
      req = decodeInternal(e.data);
    } catch (err) {
      this.#deps.fatal(new Error(`entry ${e.index} cannot be decoded: ${err}`));
    }
    const w = this.#deps.proposals.take(req.id);
    try {
      let resp: Reply;
      if (req.op === "member_attributes") {
        const a = req.member_attributes!;
        this.#deps.members.publish(a.member_id, a.name, a.client_urls);
        resp = {};
      } else {
        const sizeBefore = this.#deps.store.sizeBytes;
        resp = this.#deps.applier.apply(req);
        // as etcd's quota applier: a write that did not fit this member's quota was still applied (everywhere
        // alike); this member then raises NOSPACE through the log
        if (!this.#deps.quota.available(sizeBefore, requestCost(req))) queueMicrotask(() => this.#deps.overQuota());
      }
      if (req.op === "compaction") {
        const done = this.#driveCompaction();
        // as etcd: a physical compaction is answered once its records are gone
        if (w && req.compaction?.physical) return void done.then(() => w.resolve(resp));
      }
      w?.resolve(resp);
    } catch (err) {
      if (!(err instanceof EtcdError)) this.#deps.log(`apply of entry ${e.index} failed: ${err}`);
      w?.reject(err);
    }
  }

  #applyConfChange(cc: ConfChange, index: number): void {
    const { members, proposals } = this.#deps;
    const w = cc.id ? proposals.take(cc.id) : undefined;
    const ctx: Partial<MemberContext> = cc.context && cc.context.length > 0
      ? JSON.parse(new TextDecoder().decode(cc.context))
      : {};
    const known = this.#deps.initialMembers.find((m) => m.ID === cc.nodeId);
    switch (cc.type) {
      case ConfChangeType.AddNode:
      case ConfChangeType.AddLearnerNode:
        members.add({
          ID: cc.nodeId,
          name: known?.name ?? "",
          peerURLs: ctx.peerURLs ?? known?.peerURLs ?? [],
          clientURLs: [], // published by the member itself (an attributes request), as in etcd
          isLearner: cc.type === ConfChangeType.AddLearnerNode,
        });
        break;
      case ConfChangeType.RemoveNode:
        members.remove(cc.nodeId);
        this.#deps.peerRemoved(cc.nodeId);
        break;
      case ConfChangeType.UpdateNode:
        if (ctx.peerURLs) members.updatePeerURLs(cc.nodeId, ctx.peerURLs);
        break;
    }
    this.confState = this.#deps.applyToRaft(cc, index);
    w?.resolve({ members: members.list() });
    if (cc.type === ConfChangeType.RemoveNode && cc.nodeId === this.#deps.memberId) {
      this.#deps.log("this member has been permanently removed from the cluster");
      queueMicrotask(() => this.#deps.selfRemoved());
    }
  }

  #decode(data: Uint8Array) {
    const { store, lessor, applier, members } = this.#deps;
    return decodeState(data, store, lessor, applier.alarms, members, applier.auth);
  }
}
