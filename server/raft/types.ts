/**
 * Types shared by the Raft core: log entries, hard state, snapshots, membership, messages and the Ready batch.
 *
 * `Entry` and `HardState` have exactly the shape of server/wal/wal.ts's types, so what the core hands out in a Ready
 * can be given to the WAL as is. Member ids are decimal uint64 strings ("0" = none); indexes and terms are numbers.
 */

/** Entry types; the values are those the WAL stores. */
export const EntryType = { Normal: 0, ConfChange: 1 } as const;

/** One Raft log entry (same shape as the WAL's `Entry`). Entries are treated as immutable once created. */
export interface Entry {
  index: number;
  term: number;
  /** 0 normal, 1 conf change (data = {@link encodeConfChange}) */
  type: number;
  data: Uint8Array;
}

/** The state that must be durable before a message depending on it is sent (same shape as the WAL's). */
export interface HardState {
  term: number;
  /** member voted for in `term`, "0" = none */
  vote: string;
  commit: number;
}

/** "No member" as an id. */
export const NONE = "0";

export const emptyHardState = (): HardState => ({ term: 0, vote: NONE, commit: 0 });

export const isEmptyHardState = (hs: HardState): boolean => hs.term === 0 && hs.vote === NONE && hs.commit === 0;

export const hardStateEqual = (a: HardState, b: HardState): boolean =>
  a.term === b.term && a.vote === b.vote && a.commit === b.commit;

/** Membership as of some log index. */
export interface ConfState {
  voters: string[];
  learners: string[];
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  confState: ConfState;
}

/** A state-machine image covering the log up to `metadata.index`. */
export interface Snapshot {
  metadata: SnapshotMetadata;
  data: Uint8Array;
}

export const emptySnapshot = (): Snapshot => ({
  metadata: { index: 0, term: 0, confState: { voters: [], learners: [] } },
  data: new Uint8Array(0),
});

/** Kinds of one-member membership change (values of raftpb.ConfChangeType). */
export const ConfChangeType = { AddNode: 0, RemoveNode: 1, UpdateNode: 2, AddLearnerNode: 3 } as const;
export type ConfChangeType = typeof ConfChangeType[keyof typeof ConfChangeType];

/**
 * A one-member membership change. AddNode of an existing learner promotes it; UpdateNode changes nothing in Raft
 * (the application keeps member attributes in `context`).
 */
export interface ConfChange {
  type: ConfChangeType;
  nodeId: string;
  /** request id (decimal uint64), opaque to Raft */
  id?: string;
  context?: Uint8Array;
}

/** Roles a member can be in. */
export type Role = "follower" | "preCandidate" | "candidate" | "leader";

/** Message types. Only network messages are passed to `RaftNode.step`; local actions are methods. */
export type MessageType =
  | "App"
  | "AppResp"
  | "Vote"
  | "VoteResp"
  | "PreVote"
  | "PreVoteResp"
  | "Snap"
  | "Heartbeat"
  | "HeartbeatResp"
  | "Prop"
  | "ReadIndex"
  | "ReadIndexResp"
  | "TransferLeader"
  | "TimeoutNow";

/**
 * A Raft message. Every field is always present so that all messages share one object shape.
 * `term` 0 marks a forwarded proposal / read request, which is not subject to term checks.
 */
export interface Message {
  type: MessageType;
  from: string;
  to: string;
  term: number;
  /** App: term of the entry at `index`; Vote/PreVote: term of the candidate's last entry */
  logTerm: number;
  /** App: index preceding `entries`; AppResp: last index matched (or rejected index); Vote: candidate's last index */
  index: number;
  entries: Entry[];
  commit: number;
  snapshot: Snapshot | null;
  reject: boolean;
  /** AppResp with reject: the follower's last index, a hint for where to probe next */
  rejectHint: number;
  /** Heartbeat(Resp)/ReadIndex(Resp): read request context; Vote: TRANSFER_CONTEXT for a forced election */
  context: Uint8Array | null;
  /**
   * App without entries that only carries a new commit index to a follower in replicate state: accepting it needs
   * no AppResp (the appends that carried the entries are acknowledged on their own); a rejection is still answered.
   */
  commitOnly: boolean;
}

/** Builds a message, filling every field that is not given. */
export function message(m: Partial<Message> & { type: MessageType }): Message {
  return {
    type: m.type,
    from: m.from ?? NONE,
    to: m.to ?? NONE,
    term: m.term ?? 0,
    logTerm: m.logTerm ?? 0,
    index: m.index ?? 0,
    entries: m.entries ?? [],
    commit: m.commit ?? 0,
    snapshot: m.snapshot ?? null,
    reject: m.reject ?? false,
    rejectHint: m.rejectHint ?? 0,
    context: m.context ?? null,
    commitOnly: m.commitOnly ?? false,
  };
}

/** Context of a Vote sent because the leader handed over leadership: bypasses the voters' leader lease. */
export const TRANSFER_CONTEXT: Uint8Array = new TextEncoder().encode("CampaignTransfer");

/** The volatile state reported to the application when it changes. */
export interface SoftState {
  lead: string;
  role: Role;
}

/** A linearizable read that may be served once the local applied index reaches `index`. */
export interface ReadState {
  index: number;
  ctx: Uint8Array;
}

/**
 * Everything the core wants done, handed out by `RaftNode.ready()` and acknowledged by `RaftNode.advance()`.
 *
 * The application must, in this order:
 *  1. send `preSyncMessages` (may go out before or while step 2 runs: they are a leader's appends/heartbeats in a
 *     term whose vote is already durable; the leader counts itself towards a quorum only after step 2, via advance);
 *  2. persist `snapshot` (if any), `entries` and `hardState` (if any) — fsync when `mustSync`;
 *  3. send `messages` (votes, vote replies and append replies promise that step 2 is durable);
 *  4. restore `snapshot` (if any), and take `committedEntries` for applying in order; serve `readStates` once the
 *     applied index reaches their index;
 *  5. call `advance(ready)`;
 *  6. apply the taken entries (now or later, beside the Ready loop; for a conf change entry call
 *     `RaftNode.applyConfChange`) and report how far with `RaftNode.appliedTo`.
 * Steps 3–4 may overlap; step 5 must come after 2 and 4.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  committedEntries: Entry[];
  messages: Message[];
  preSyncMessages: Message[];
  snapshot?: Snapshot;
  readStates: ReadState[];
  mustSync: boolean;
}

/** Base of the errors the core throws to callers. */
export class RaftError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = "RaftError";
  }
}

/** A proposal (or read / transfer request) could not be accepted: no known leader, transfer, or quota. */
export class ProposalDroppedError extends RaftError {
  constructor(why: string) {
    super(`raft proposal dropped: ${why}`);
    this.name = "ProposalDroppedError";
  }
}

/** A membership change was proposed while another is still unapplied. */
export class ConfChangePendingError extends RaftError {
  constructor() {
    super("raft: a membership change is already pending");
    this.name = "ConfChangePendingError";
  }
}

/** Storage: the requested index was compacted into a snapshot. */
export class CompactedError extends RaftError {
  constructor() {
    super("requested index is unavailable due to compaction");
    this.name = "CompactedError";
  }
}

/** Storage: the requested index is beyond the last one. */
export class UnavailableError extends RaftError {
  constructor() {
    super("requested entry at index is unavailable");
    this.name = "UnavailableError";
  }
}

/** Storage: the snapshot is being produced; retry later. */
export class SnapshotTemporarilyUnavailableError extends RaftError {
  constructor() {
    super("snapshot is temporarily unavailable");
    this.name = "SnapshotTemporarilyUnavailableError";
  }
}

/** A broken invariant of the core: the state can no longer be trusted. */
export class RaftInvariantError extends Error {
  constructor(msg: string) {
    super(`raft invariant violated: ${msg}`);
    this.name = "RaftInvariantError";
  }
}

export function invariant(cond: unknown, msg: () => string): asserts cond {
  if (!cond) throw new RaftInvariantError(msg());
}

/** Bytes an entry counts for against size limits (payload plus a fixed header estimate). */
export const entrySize = (e: Entry): number => e.data.length + 16;

export const bytesEqual = (a: Uint8Array | null, b: Uint8Array | null): boolean => {
  if (a === b) return true;
  if (a === null || b === null || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};

// ---- ConfChange wire form: protobuf raftpb.ConfChange {1: ID, 2: Type, 3: NodeID, 4: Context} ----

function putVarint(out: number[], v: bigint): void {
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
}

function getVarint(b: Uint8Array, pos: { p: number }): bigint {
  let v = 0n;
  let shift = 0n;
  for (;;) {
    if (pos.p >= b.length) throw new RaftError("confchange: truncated varint");
    const c = b[pos.p++];
    v |= BigInt(c & 0x7f) << shift;
    if (c < 0x80) return v;
    shift += 7n;
    if (shift > 63n) throw new RaftError("confchange: varint too long");
  }
}

/** Encodes a conf change as raftpb.ConfChange protobuf bytes (what etcd stores in a conf-change entry). */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  const out: number[] = [];
  out.push(0x08);
  putVarint(out, BigInt(cc.id ?? "0"));
  out.push(0x10);
  putVarint(out, BigInt(cc.type));
  out.push(0x18);
  putVarint(out, BigInt(cc.nodeId));
  if (cc.context && cc.context.length > 0) {
    out.push(0x22);
    putVarint(out, BigInt(cc.context.length));
    for (const c of cc.context) out.push(c);
  }
  return Uint8Array.from(out);
}

/** Decodes {@link encodeConfChange}'s bytes (unknown fields are skipped). */
export function decodeConfChange(b: Uint8Array): ConfChange {
  const pos = { p: 0 };
  const cc: ConfChange = { type: ConfChangeType.AddNode, nodeId: NONE, id: "0" };
  while (pos.p < b.length) {
    const key = Number(getVarint(b, pos));
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) {
      const v = getVarint(b, pos);
      if (field === 1) cc.id = v.toString();
      else if (field === 2) cc.type = Number(v) as ConfChangeType;
      else if (field === 3) cc.nodeId = v.toString();
    } else if (wire === 2) {
      const len = Number(getVarint(b, pos));
      if (pos.p + len > b.length) throw new RaftError("confchange: truncated field");
      if (field === 4) cc.context = b.slice(pos.p, pos.p + len);
      pos.p += len;
    } else if (wire === 1) pos.p += 8;
    else if (wire === 5) pos.p += 4;
    else throw new RaftError(`confchange: bad wire type ${wire}`);
  }
  return cc;
}
