/**
 * Unit tests of the Raft core (server/raft), written as specifications of its behaviour. A tiny synchronous
 * harness persists each Ready into a MemoryStorage, delivers messages (optionally filtered) and applies entries.
 */
import assert from "node:assert/strict";
import {
  ConfChangePendingError,
  ConfChangeType,
  decodeConfChange,
  encodeConfChange,
  type Entry,
  EntryType,
  type HardState,
  Inflights,
  MemoryStorage,
  type Message,
  message,
  ProposalDroppedError,
  RaftInvariantError,
  RaftNode,
  type ReadState,
  type Snapshot,
} from "../server/raft/mod.ts";
import type { Entry as WalEntry, HardState as WalHardState } from "../server/wal/wal.ts";
import { Prng } from "./sim/prng.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Member {
  raft: RaftNode;
  storage: MemoryStorage;
  applied: Entry[];
  readStates: ReadState[];
}

interface Opts {
  electionTick?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  maxInflightMsgs?: number;
  maxSizePerMsg?: number;
  maxUncommittedBytes?: number;
  maxApplyingBytes?: number;
}

/** A cluster stepped by hand: every message goes through `deliver`, which applies the filter. */
class Net {
  members = new Map<string, Member>();
  queue: Message[] = [];
  /** return true to drop a message */
  drop: (m: Message) => boolean = () => false;
  rng = new Prng(7);
  opts: Opts;
  /** members whose committed entries are handed out but not reported applied (their apply loop is busy) */
  holdApply = new Set<string>();

  constructor(ids: string[], opts: Opts = {}) {
    this.opts = opts;
    for (const id of ids) this.add(id, new MemoryStorage(), ids);
  }

  add(id: string, storage: MemoryStorage, bootstrap?: string[]): Member {
    const raft = new RaftNode({
      id,
      storage,
      random: () => this.rng.next(),
      electionTick: this.opts.electionTick ?? 10,
      heartbeatTick: 1,
      preVote: this.opts.preVote ?? true,
      checkQuorum: this.opts.checkQuorum ?? true,
      maxInflightMsgs: this.opts.maxInflightMsgs ?? 256,
      maxSizePerMsg: this.opts.maxSizePerMsg ?? 1 << 20,
      maxUncommittedBytes: this.opts.maxUncommittedBytes,
      maxApplyingBytes: this.opts.maxApplyingBytes,
      applied: storage.snapshot().metadata.index,
      bootstrap,
    });
    const m: Member = { raft, storage, applied: [], readStates: [] };
    this.members.set(id, m);
    return m;
  }

  get(id: string): Member {
    return this.members.get(id)!;
  }

  /** Persists, applies and advances every member's pending Ready; queues their messages. */
  flush(): void {
    for (let again = true; again;) {
      again = false;
      for (const [id, m] of this.members) {
        if (!m.raft.hasReady()) continue;
        again = true;
        const rd = m.raft.ready();
        if (rd.snapshot) m.storage.applySnapshot(rd.snapshot);
        m.storage.append(rd.entries);
        if (rd.hardState) m.storage.setHardState(rd.hardState);
        this.queue.push(...rd.preSyncMessages, ...rd.messages);
        for (const e of rd.committedEntries) {
          m.applied.push(e);
          if (e.type === EntryType.ConfChange) m.raft.applyConfChange(decodeConfChange(e.data), e.index);
        }
        m.readStates.push(...rd.readStates);
        m.raft.advance(rd);
        if (rd.committedEntries.length > 0 && !this.holdApply.has(id)) {
          m.raft.appliedTo(rd.committedEntries[rd.committedEntries.length - 1].index);
        }
      }
    }
  }

  /** Delivers messages until none are left (bounded). */
  settle(max = 10000): void {
    this.flush();
    for (let i = 0; i < max && this.queue.length > 0; i++) {
      const msg = this.queue.shift()!;
      if (!this.drop(msg)) this.members.get(msg.to)?.raft.step(msg);
      this.flush();
    }
  }

  tick(n: number, only?: string[]): void {
    for (let i = 0; i < n; i++) {
      for (const [id, m] of this.members) if (!only || only.includes(id)) m.raft.tick();
      this.settle();
    }
  }

  leaders(): string[] {
    return [...this.members.entries()].filter(([, m]) => m.raft.isLeader).map(([id]) => id);
  }

  /** Ticks until some member leads; returns its id. */
  elect(max = 200): string {
    for (let i = 0; i < max; i++) {
      const l = this.leaders();
      if (l.length === 1) {
        // let the leader's first entry commit
        this.tick(2);
        return l[0];
      }
      this.tick(1);
    }
    throw new Error("no leader elected");
  }

  isolate(id: string): void {
    this.drop = (m) => m.from === id || m.to === id;
  }

  heal(): void {
    this.drop = () => false;
  }
}

/** Member "2" with the server's settings and a fixed random source, for tests that step it by hand. */
const follower2 = (storage: MemoryStorage) =>
  new RaftNode({
    id: "2",
    storage,
    random: () => 0.5,
    electionTick: 10,
    heartbeatTick: 1,
    preVote: true,
    checkQuorum: true,
    maxInflightMsgs: 256,
    maxSizePerMsg: 1 << 20,
  });

const normalData = (m: Member) =>
  m.applied.filter((e) => e.type === EntryType.Normal && e.data.length > 0).map((e) => dec.decode(e.data));

Deno.test("raft types: Entry and HardState are the WAL's shapes; ConfChange round-trips as protobuf", () => {
  const e: Entry = { index: 1, term: 2, type: 1, data: new Uint8Array([1]) };
  const w: WalEntry = e;
  const back: Entry = w;
  const hs: HardState = { term: 3, vote: "18446744073709551615", commit: 2 };
  const whs: WalHardState = hs;
  assert.equal(back.index, 1);
  assert.equal(whs.vote, "18446744073709551615");
  const cc = {
    type: ConfChangeType.AddLearnerNode,
    nodeId: "10276657743932975437",
    id: "42",
    context: enc.encode("{}"),
  } as const;
  const rt = decodeConfChange(encodeConfChange(cc));
  assert.deepEqual(rt, { ...cc, context: enc.encode("{}") });
  // field 1 (ID) = 42, field 2 (Type) = 3: the bytes etcd's raftpb.ConfChange would produce
  assert.deepEqual([...encodeConfChange({ type: 0, nodeId: "1", id: "42" })], [0x08, 42, 0x10, 0, 0x18, 1]);
});

Deno.test("inflights: bounded window freed in order", () => {
  const inf = new Inflights(3);
  inf.add(5);
  inf.add(7);
  inf.add(9);
  assert.ok(inf.full());
  assert.throws(() => inf.add(10));
  inf.freeLE(7);
  assert.equal(inf.count, 1);
  inf.add(11);
  inf.add(12);
  assert.ok(inf.full());
  inf.freeFirstOne();
  assert.equal(inf.count, 2);
  inf.freeLE(100);
  assert.equal(inf.count, 0);
});

Deno.test("single member: commits an entry only after it is durable (advance)", () => {
  const net = new Net(["1"]);
  net.elect();
  const m = net.get("1");
  assert.equal(m.raft.role, "leader");
  m.raft.propose(enc.encode("a"));
  const rd = m.raft.ready();
  assert.equal(rd.entries.length, 1);
  const before = m.raft.log.committed;
  assert.ok(before < rd.entries[0].index, "not committed before the write is durable");
  m.storage.append(rd.entries);
  if (rd.hardState) m.storage.setHardState(rd.hardState);
  m.raft.advance(rd);
  assert.equal(m.raft.log.committed, rd.entries[0].index, "committed once advance reports it durable");
  net.settle();
  assert.deepEqual(normalData(m), ["a"]);
});

Deno.test("election: one leader, followers learn it; vote and term are persisted before vote replies", () => {
  const net = new Net(["1", "2", "3"]);
  // Bootstrap entries (the founding members) must be applied before anyone may campaign.
  net.get("1").raft.campaign();
  assert.equal(net.get("1").raft.role, "follower");
  net.flush();
  // A candidate's vote request must not overtake the durable write of its own vote.
  net.get("1").raft.campaign();
  const rd = net.get("1").raft.ready();
  assert.equal(rd.preSyncMessages.length, 0);
  assert.equal(rd.messages.length, 2);
  assert.ok(rd.messages.every((m) => m.type === "PreVote"));
  net.get("1").raft.advance(rd);
  net.queue.push(...rd.messages);
  net.settle();
  assert.deepEqual(net.leaders(), ["1"]);
  for (const id of ["2", "3"]) {
    assert.equal(net.get(id).raft.lead, "1");
    assert.equal(net.get(id).storage.hardState.vote, "1");
  }
});

Deno.test("election: a candidate with a shorter log cannot win (isUpToDate)", () => {
  // No lease and no pre-vote: only the log comparison can refuse the vote.
  const net = new Net(["1", "2", "3"], { checkQuorum: false, preVote: false });
  const l = net.elect();
  net.get(l).raft.propose(enc.encode("x"));
  const behind = ["1", "2", "3"].find((i) => i !== l)!;
  // `behind` misses the write; the others have it
  net.drop = (m) => m.to === behind && m.type === "App";
  net.settle();
  net.heal();
  net.drop = (m) => m.from === l || m.to === l; // leader gone
  const before = net.get(behind).raft.log.lastIndex();
  assert.ok(before < net.get(l).raft.log.lastIndex());
  // Force `behind` to campaign repeatedly: the up-to-date member refuses.
  const voter = ["1", "2", "3"].find((i) => i !== l && i !== behind)!;
  for (let i = 0; i < 5; i++) {
    net.get(behind).raft.campaign();
    net.settle();
  }
  assert.notEqual(net.get(behind).raft.role, "leader");
  assert.ok(net.get(behind).raft.term > net.get(l).raft.term, "it did campaign");
  assert.notEqual(net.get(voter).raft.vote, behind);
});

Deno.test("pre-vote: an isolated member does not inflate its term and does not disrupt the leader on return", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const x = ["1", "2", "3"].find((i) => i !== l)!;
  const term = net.get(l).raft.term;
  net.isolate(x);
  net.tick(100);
  assert.equal(net.get(x).raft.term, term, "pre-vote keeps the term");
  net.heal();
  net.tick(5);
  assert.equal(net.get(l).raft.role, "leader");
  assert.equal(net.get(l).raft.term, term);
});

Deno.test("without pre-vote an isolated member's term grows (control for the test above)", () => {
  const net = new Net(["1", "2", "3"], { preVote: false });
  const l = net.elect();
  const x = ["1", "2", "3"].find((i) => i !== l)!;
  const term = net.get(l).raft.term;
  net.isolate(x);
  net.tick(100);
  assert.ok(net.get(x).raft.term > term);
});

Deno.test("check-quorum: a leader that cannot hear a majority steps down; the rest elect a new one", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  net.isolate(l);
  net.tick(30);
  assert.equal(net.get(l).raft.role, "follower");
  const others = net.leaders();
  assert.equal(others.length, 1);
  assert.notEqual(others[0], l);
});

Deno.test("check-quorum lease: a follower that hears from its leader ignores a disruptive vote request", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  const term = net.get(f).raft.term;
  net.get(f).raft.step(message({ type: "Vote", from: "9", to: f, term: term + 5, index: 100, logTerm: 100 }));
  assert.equal(net.get(f).raft.term, term);
  assert.equal(net.get(f).raft.vote, net.get(f).storage.hardState.vote);
});

Deno.test("log repair: a follower's conflicting uncommitted suffix is replaced by the leader's log", () => {
  const net = new Net(["1", "2", "3"]);
  const l1 = net.elect();
  const [a, b] = ["1", "2", "3"].filter((i) => i !== l1);
  // The leader appends entries nobody else receives, then loses leadership.
  net.isolate(l1);
  net.get(l1).raft.propose([enc.encode("lost1"), enc.encode("lost2")]);
  net.settle();
  net.tick(40, [a, b]);
  const l2 = net.leaders().find((i) => i !== l1)!;
  assert.ok(l2 === a || l2 === b);
  net.get(l2).raft.propose(enc.encode("kept"));
  net.settle();
  net.heal();
  net.tick(40);
  const logs = ["1", "2", "3"].map((id) => normalData(net.get(id)));
  for (const lg of logs) assert.deepEqual(lg, ["kept"]);
  const m = net.get(l1);
  assert.equal(m.raft.log.lastIndex(), net.get(l2).raft.log.lastIndex());
});

Deno.test("commit rule: a leader does not commit an entry of an earlier term by counting replicas (Fig. 8)", () => {
  // Member 1 holds index 2 from term 2 that nobody else has; it becomes leader of term 3.
  const s1 = new MemoryStorage();
  const snap: Snapshot = {
    metadata: { index: 1, term: 1, confState: { voters: ["1", "2", "3"], learners: [] } },
    data: new Uint8Array(0),
  };
  s1.applySnapshot(snap);
  s1.append([{ index: 2, term: 2, type: 0, data: enc.encode("old") }]);
  s1.setHardState({ term: 2, vote: "1", commit: 1 });
  const s2 = new MemoryStorage();
  s2.applySnapshot(snap);
  s2.setHardState({ term: 2, vote: "0", commit: 1 });
  const net = new Net([]);
  net.add("1", s1);
  net.add("2", s2);
  const s3 = new MemoryStorage();
  s3.applySnapshot(snap);
  s3.setHardState({ term: 2, vote: "0", commit: 1 });
  net.add("3", s3);
  net.drop = (m) => m.to === "3" || m.from === "3";
  net.get("1").raft.campaign();
  net.flush();
  // Let the election happen but hold back the appends.
  const held: Message[] = [];
  net.drop = (m) => {
    if (m.to === "3" || m.from === "3") return true;
    if (m.type === "App" && m.from === "1") {
      held.push(m);
      return true;
    }
    return false;
  };
  net.settle();
  const r1 = net.get("1").raft;
  assert.equal(r1.role, "leader");
  assert.equal(r1.term, 3);
  assert.equal(r1.log.lastIndex(), 3); // 2@t2 + the leader's empty 3@t3
  // Member 2 acknowledges index 2 (the old-term entry) only.
  r1.step(message({ type: "AppResp", from: "2", to: "1", term: 3, index: 2 }));
  net.flush();
  assert.equal(r1.log.committed, 1, "index 2 (term 2) is on a majority but must not be committed by counting");
  r1.step(message({ type: "AppResp", from: "2", to: "1", term: 3, index: 3 }));
  net.flush();
  assert.equal(r1.log.committed, 3, "committing 3@t3 commits 2@t2 with it");
});

Deno.test("replication: pipelining is bounded by the in-flight window", () => {
  const net = new Net(["1", "2", "3"], { maxInflightMsgs: 2, maxSizePerMsg: 1 });
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  const r = net.get(l).raft;
  // Cut replies from f so nothing is acknowledged.
  net.drop = (m) => m.from === f;
  for (let i = 0; i < 5; i++) r.propose(enc.encode(`p${i}`));
  const rd = r.ready();
  const apps = [...rd.preSyncMessages, ...rd.messages].filter((m) => m.type === "App" && m.to === f);
  assert.equal(apps.length, 2, "at most maxInflightMsgs appends in flight");
  assert.ok(
    rd.preSyncMessages.some((m) => m.type === "App"),
    "a leader's appends may go out before its own write is durable",
  );
  r.advance(rd);
  assert.equal(r.status().progress![f].state, "replicate");
  assert.equal(r.status().progress![f].inflight, 2);
});

Deno.test("batching: proposals and acknowledgements stepped before a Ready share one append per follower", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const fs = ["1", "2", "3"].filter((i) => i !== l);
  const r = net.get(l).raft;
  // three proposals, one of them forwarded by a follower: a single append to each follower carries all three
  net.get(fs[0]).raft.propose(enc.encode("via follower"));
  const frd = net.get(fs[0]).raft.ready();
  const props = frd.messages.filter((m) => m.type === "Prop");
  net.get(fs[0]).raft.advance(frd);
  r.propose(enc.encode("a"));
  r.propose(enc.encode("b"));
  for (const m of props) r.step(m);
  let rd = r.ready();
  let apps = [...rd.preSyncMessages, ...rd.messages].filter((m) => m.type === "App");
  assert.deepEqual(apps.map((m) => m.to).sort(), [...fs].sort(), "one append per follower");
  assert.ok(apps.every((m) => m.entries.length === 3), "each carries the three proposals");
  net.get(l).storage.append(rd.entries);
  r.advance(rd);
  // both followers acknowledge: one commit notice per follower, not one per acknowledgement
  for (const app of apps) net.get(app.to).raft.step(app);
  for (const f of fs) {
    const frd2 = net.get(f).raft.ready();
    net.get(f).storage.append(frd2.entries);
    for (const m of frd2.messages) if (m.type === "AppResp") r.step(m);
    net.get(f).raft.advance(frd2);
  }
  rd = r.ready();
  apps = [...rd.preSyncMessages, ...rd.messages].filter((m) => m.type === "App");
  assert.equal(rd.committedEntries.length, 3);
  assert.deepEqual(apps.map((m) => m.to).sort(), [...fs].sort(), "one commit notice per follower");
  assert.ok(apps.every((m) => m.commitOnly && m.entries.length === 0 && m.commit === r.status().commit));
  r.advance(rd);
  // a follower takes the commit notice without answering it
  const f0 = net.get(fs[0]).raft;
  f0.step(apps.find((m) => m.to === fs[0])!);
  const frd3 = f0.ready();
  assert.equal(f0.status().commit, r.status().commit);
  assert.equal(frd3.messages.filter((m) => m.type === "AppResp").length, 0, "no reply to a commit notice");
  f0.advance(frd3);
});

Deno.test("batching: a commit notice that does not match the follower's log is answered with a rejection", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  const lr = net.get(l).raft;
  const notice = message({
    type: "App",
    from: l,
    to: f,
    term: lr.term,
    index: lr.log.lastIndex() + 5,
    logTerm: lr.term,
    commit: lr.status().commit,
    commitOnly: true,
  });
  const fr = net.get(f).raft;
  fr.step(notice);
  const rd = fr.ready();
  const resp = rd.messages.filter((m) => m.type === "AppResp");
  assert.equal(resp.length, 1);
  assert.ok(resp[0].reject, "a mismatch is always answered, so the leader can repair the follower's log");
  fr.advance(rd);
});

Deno.test("forgetLeader: a follower that lost its leader grants votes at once; a live leader is followed again", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const [a, b] = ["1", "2", "3"].filter((i) => i !== l);
  // the leader dies: both followers are told (their connections to it closed) and one campaigns right away,
  // long before an election timeout passed
  net.drop = (m) => m.from === l || m.to === l;
  net.get(a).raft.forgetLeader();
  net.get(b).raft.forgetLeader();
  net.get(a).raft.campaign();
  net.settle();
  assert.equal(net.get(a).raft.isLeader, true, "elected without waiting for the old leader's lease");
  // a follower told spuriously (its leader is alive): the others refuse its pre-vote and it follows the leader again
  net.heal();
  net.tick(2);
  const leader = net.leaders()[0];
  const other = ["1", "2", "3"].find((i) => i !== leader && net.get(i).raft.lead === leader)!;
  const term = net.get(leader).raft.term;
  net.get(other).raft.forgetLeader();
  net.get(other).raft.campaign();
  net.settle();
  net.tick(1);
  assert.deepEqual(net.leaders(), [leader], "the live leader keeps leading");
  assert.equal(net.get(leader).raft.term, term, "no term was lost");
  assert.equal(net.get(other).raft.lead, leader);
});

Deno.test("replication: a follower that lost appends is repaired via probe after a rejection", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  net.drop = (m) => m.to === f && m.type === "App";
  for (let i = 0; i < 4; i++) {
    net.get(l).raft.propose(enc.encode(`e${i}`));
    net.settle();
  }
  net.heal();
  net.tick(3);
  assert.deepEqual(normalData(net.get(f)), ["e0", "e1", "e2", "e3"]);
});

Deno.test("read index: a member whose appends are held back is resent to once per heartbeat interval, not once per read round", () => {
  // Regression (partition test): a healed member answered thousands of buffered read-round heartbeats at once, and the
  // leader built a full-size probe for each answer, which kept it too busy to lead.
  const net = new Net(["1", "2", "3"], { maxInflightMsgs: 4 });
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  const leader = net.get(l).raft;
  let apps = 0;
  net.drop = (m) => m.to === f && m.type === "App" && ++apps > 0;
  const rounds = (n: number, tag: string) => {
    for (let i = 0; i < n; i++) {
      leader.readIndex(enc.encode(`${tag}${i}`));
      net.settle();
    }
  };
  for (let i = 0; i < 8; i++) {
    leader.propose(enc.encode(`e${i}`));
    net.settle();
  }
  assert.equal(leader.status().progress?.[f]?.state, "replicate");
  // The window is full: 50 read rounds answered by f let the leader resend to it at most once.
  apps = 0;
  rounds(50, "a");
  assert.ok(apps <= 1, `${apps} appends for 50 read rounds (replicate state, window full)`);
  // Probe state: the same.
  leader.reportUnreachable(f);
  assert.equal(leader.status().progress?.[f]?.state, "probe");
  apps = 0;
  rounds(50, "b");
  assert.ok(apps <= 1, `${apps} appends for 50 read rounds (probe state)`);
  // Each heartbeat interval allows one more.
  apps = 0;
  net.tick(3);
  assert.ok(apps >= 1 && apps <= 3, `${apps} appends in 3 heartbeat intervals`);
  assert.equal(net.get(l).readStates.length, 100, "every read round was served by the quorum");
  net.heal();
  net.tick(3);
  assert.deepEqual(normalData(net.get(f)), ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
});

Deno.test("proposals: followers forward to the leader; without a leader proposing throws", () => {
  const net = new Net(["1", "2", "3"]);
  assert.throws(() => net.get("2").raft.propose(enc.encode("x")), ProposalDroppedError);
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  net.get(f).raft.propose([enc.encode("f1"), enc.encode("f2")]);
  net.settle();
  for (const id of ["1", "2", "3"]) assert.deepEqual(normalData(net.get(id)), ["f1", "f2"]);
});

Deno.test("proposals: the uncommitted-bytes quota refuses proposals on an isolated leader", () => {
  const net = new Net(["1", "2", "3"], { maxUncommittedBytes: 10 });
  const l = net.elect();
  net.isolate(l);
  net.get(l).raft.propose(enc.encode("12345678"));
  assert.throws(() => net.get(l).raft.propose(enc.encode("abcdefgh")), ProposalDroppedError);
});

Deno.test("read index: served after a heartbeat quorum; an isolated leader serves nothing; followers forward", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  net.get(l).raft.propose(enc.encode("w"));
  net.settle();
  const commit = net.get(l).raft.log.committed;
  net.get(l).raft.readIndex(enc.encode("r1"));
  net.settle();
  assert.deepEqual(net.get(l).readStates.map((r) => [r.index, dec.decode(r.ctx)]), [[commit, "r1"]]);

  net.get(f).raft.readIndex(enc.encode("r2"));
  net.settle();
  assert.deepEqual(net.get(f).readStates.map((r) => [r.index, dec.decode(r.ctx)]), [[commit, "r2"]]);

  net.isolate(l);
  net.get(l).raft.readIndex(enc.encode("r3"));
  net.settle();
  assert.equal(net.get(l).readStates.length, 1, "no quorum, no read");
});

Deno.test("read index: a new leader defers reads until it commits an entry of its own term", () => {
  const net = new Net(["1", "2", "3"]);
  net.drop = (m) => m.type === "App" || m.type === "AppResp";
  let l: string | undefined;
  for (let i = 0; i < 100 && !l; i++) {
    net.tick(1);
    l = net.leaders()[0];
  }
  assert.ok(l);
  const r = net.get(l).raft;
  assert.notEqual(r.log.term(r.log.committed), r.term);
  r.readIndex(enc.encode("early"));
  net.settle();
  assert.equal(net.get(l).readStates.length, 0, "deferred: commit index may be stale");
  net.heal();
  net.tick(2);
  assert.equal(net.get(l).readStates.length, 1);
  assert.ok(net.get(l).readStates[0].index >= r.log.firstIndex());
});

Deno.test("snapshots: a follower behind the compacted log receives InstallSnapshot and catches up", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  net.drop = (m) => m.to === f || m.from === f;
  for (let i = 0; i < 10; i++) {
    net.get(l).raft.propose(enc.encode(`s${i}`));
    net.settle();
  }
  const lm = net.get(l);
  const applied = lm.raft.log.applied;
  lm.storage.createSnapshot(applied, lm.raft.confState(), enc.encode(JSON.stringify(normalData(lm))));
  lm.storage.compact(applied);
  net.heal();
  let sawSnap = false;
  net.drop = (m) => {
    if (m.type === "Snap" && m.to === f) sawSnap = true;
    return false;
  };
  net.tick(3);
  assert.ok(sawSnap, "snapshot sent");
  const fm = net.get(f);
  assert.equal(fm.storage.snapshot().metadata.index, applied);
  assert.equal(fm.raft.log.committed, lm.raft.log.committed);
  net.get(l).raft.propose(enc.encode("after"));
  net.settle();
  assert.deepEqual(normalData(fm).at(-1), "after");
});

Deno.test("leader transfer: the transferee takes over; proposals are refused meanwhile", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const t = ["1", "2", "3"].find((i) => i !== l)!;
  net.drop = (m) => m.type === "TimeoutNow";
  net.get(l).raft.transferLeader(t);
  net.settle();
  assert.equal(net.get(l).raft.status().leadTransferee, t);
  assert.throws(() => net.get(l).raft.propose(enc.encode("x")), ProposalDroppedError);
  // Abandoned after an election timeout without success.
  net.tick(12);
  assert.equal(net.get(l).raft.status().leadTransferee, "0");
  net.heal();
  net.get(l).raft.transferLeader(t);
  net.settle();
  assert.equal(net.get(t).raft.role, "leader");
  assert.equal(net.get(l).raft.role, "follower");
  assert.equal(net.get(l).raft.lead, t);
});

Deno.test("membership: add learner (no vote), promote, refuse a second pending change, remove", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const r = net.get(l).raft;
  r.proposeConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: "4" });
  assert.throws(() => r.proposeConfChange({ type: ConfChangeType.AddNode, nodeId: "5" }), ConfChangePendingError);
  net.add("4", new MemoryStorage());
  net.settle();
  net.tick(3);
  assert.deepEqual(r.confState(), { voters: ["1", "2", "3"], learners: ["4"] });
  assert.equal(net.get("4").raft.log.committed, r.log.committed, "the learner replicates the log");
  assert.deepEqual(net.get("4").raft.confState().learners, ["4"]);
  // A learner does not campaign.
  net.isolate(l);
  net.tick(50, ["4"]);
  assert.notEqual(net.get("4").raft.role, "leader");
  net.heal();
  net.tick(3);
  const l2 = net.leaders()[0];
  net.get(l2).raft.proposeConfChange({ type: ConfChangeType.AddNode, nodeId: "4" });
  net.settle();
  assert.deepEqual(net.get(l2).raft.confState().voters.sort(), ["1", "2", "3", "4"]);
  assert.deepEqual(net.get("4").raft.confState().voters.sort(), ["1", "2", "3", "4"]);
  net.get(l2).raft.proposeConfChange({ type: ConfChangeType.UpdateNode, nodeId: "4" });
  net.settle();
  net.get(l2).raft.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: "4" });
  net.settle();
  assert.deepEqual(net.get(l2).raft.confState().voters.sort(), ["1", "2", "3"]);
});

Deno.test("membership: a leader that removes itself steps down and the others elect a leader", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  net.get(l).raft.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: l });
  net.settle();
  assert.equal(net.get(l).raft.role, "follower");
  net.members.delete(l);
  net.tick(40);
  const leaders = net.leaders();
  assert.equal(leaders.length, 1);
  assert.deepEqual(net.get(leaders[0]).raft.confState().voters.length, 2);
});

Deno.test("restart: state is rebuilt from storage; commit and term never go back", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  net.get(l).raft.propose(enc.encode("d"));
  net.settle();
  const m = net.get(l);
  const hs = m.storage.hardState;
  const restarted = net.add(l, m.storage);
  assert.equal(restarted.raft.term, hs.term);
  assert.equal(restarted.raft.log.committed, hs.commit);
  assert.equal(restarted.raft.role, "follower");
  net.tick(40);
  assert.equal(net.leaders().length, 1);
  net.get(net.leaders()[0]).raft.propose(enc.encode("e"));
  net.settle();
  assert.deepEqual(normalData(net.get(l)).slice(-1), ["e"]);
});

Deno.test("ready/advance must alternate; a stale-term leader is told the current term", () => {
  const net = new Net(["1"]);
  const r = net.get("1").raft;
  r.campaign();
  r.ready();
  assert.throws(() => r.ready());
  assert.equal(r.hasReady(), false);

  const net3 = new Net(["1", "2", "3"]);
  const l = net3.elect();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  const fr = net3.get(f).raft;
  const term = fr.term;
  fr.step(message({ type: "App", from: "9", to: f, term: term - 1, index: 1, logTerm: 1 }));
  const rd = fr.ready();
  const resp = rd.messages.find((m) => m.to === "9");
  assert.ok(resp && resp.type === "AppResp" && resp.term === term, "a stale leader learns the newer term");
  fr.advance(rd);
});

Deno.test("invariants: a Heartbeat committing past the follower's last index throws RaftInvariantError", () => {
  // the node stops on a RaftInvariantError wherever it is raised (tests/raft_invariant_stop_test.ts plays another
  // kind, a second leader in a term, against a real process); a leader only sends a commit its follower holds
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  net.get(l).raft.propose(enc.encode("x"));
  net.settle();
  const f = ["1", "2", "3"].find((i) => i !== l)!;
  const fr = net.get(f).raft;
  const last = fr.log.lastIndex();
  fr.step(message({ type: "Heartbeat", from: l, to: f, term: fr.term, commit: last }));
  assert.equal(fr.log.committed, last);
  assert.throws(
    () => fr.step(message({ type: "Heartbeat", from: l, to: f, term: fr.term, commit: last + 5 })),
    RaftInvariantError,
  );
});

Deno.test("bootstrap: the founding conf-change entries are in member-ID order, whatever order the members were given", () => {
  const founded = (order: string[]) => {
    const storage = new MemoryStorage();
    const raft = new RaftNode({ id: "7", storage, random: () => 0.5, bootstrap: order });
    const rd = raft.ready();
    return rd.entries.map((e) => ({ index: e.index, term: e.term, type: e.type, data: [...e.data] }));
  };
  // IDs compare as numbers, not as strings: "10" > "9"
  const expected = founded(["7", "9", "10", "18446744073709551615"]);
  assert.deepEqual(
    expected.map((e) => decodeConfChange(new Uint8Array(e.data)).nodeId),
    ["7", "9", "10", "18446744073709551615"],
  );
  for (const order of [["10", "7", "18446744073709551615", "9"], ["18446744073709551615", "10", "9", "7"]]) {
    assert.deepEqual(founded(order), expected, `given ${order.join(",")}`);
  }
});

Deno.test("read index: a leader answers a context it already holds with the first round's index (so contexts must never repeat)", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const [f] = ["1", "2", "3"].filter((i) => i !== l);
  net.drop = (m) => m.type === "HeartbeatResp"; // the round stays unconfirmed
  net.get(f).raft.readIndex(enc.encode("f/1"));
  net.settle();
  const before = net.get(l).raft.log.committed;
  net.get(l).raft.propose(enc.encode("w"));
  net.settle();
  const after = net.get(l).raft.log.committed;
  assert.ok(after > before, "the write committed");
  // the follower's process restarts and, counting from 1 again, asks with the same context after the write
  net.get(f).raft.readIndex(enc.encode("f/1"));
  net.settle();
  net.heal();
  net.tick(2);
  assert.deepEqual(
    net.get(f).readStates.map((r) => [r.index, dec.decode(r.ctx)]),
    [[before, "f/1"]],
    "one answer, with the index from before the write: the new read would miss it",
  );
});

Deno.test("membership: a conf change at or below a snapshot installed since changes nothing (its membership has it)", () => {
  // a follower still applying entries of an earlier Ready (here: a learner added at index 8, removed at 9) when the
  // leader's snapshot at 10 arrives must not put the learner back (raft sim seed 2377425425)
  const storage = new MemoryStorage();
  const raft = follower2(storage);
  const snapshot: Snapshot = {
    data: new Uint8Array(0),
    metadata: { index: 10, term: 2, confState: { voters: ["1", "2", "3"], learners: [] } },
  };
  raft.step(message({ type: "Snap", from: "1", to: "2", term: 2, snapshot }));
  assert.deepEqual(raft.confState(), { voters: ["1", "2", "3"], learners: [] });
  assert.deepEqual(raft.applyConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: "6" }, 8), {
    voters: ["1", "2", "3"],
    learners: [],
  });
  // a change after the snapshot applies
  assert.deepEqual(raft.applyConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: "6" }, 11), {
    voters: ["1", "2", "3"],
    learners: ["6"],
  });
});

Deno.test("snapshot: pendingSnapshotIndex names a leader's snapshot stepped while a Ready is applied, above all its entries", () => {
  // a restarted follower applies entries 3..7 of its own log when the leader's snapshot at 20 arrives: server/node
  // skips the rest of that Ready (the next one carries the snapshot)
  const storage = new MemoryStorage();
  storage.applySnapshot({
    metadata: { index: 2, term: 1, confState: { voters: ["1", "2", "3"], learners: [] } },
    data: new Uint8Array(0),
  });
  storage.append([3, 4, 5, 6, 7].map((index) => ({ index, term: 1, type: EntryType.Normal, data: enc.encode("x") })));
  storage.setHardState({ term: 1, vote: "0", commit: 7 });
  const raft = follower2(storage);
  assert.equal(raft.pendingSnapshotIndex(), 0);
  const rd = raft.ready();
  assert.deepEqual(rd.committedEntries.map((e) => e.index), [3, 4, 5, 6, 7]);
  const snapshot: Snapshot = {
    data: new Uint8Array(0),
    metadata: { index: 20, term: 1, confState: { voters: ["1", "2", "3"], learners: [] } },
  };
  raft.step(message({ type: "Snap", from: "1", to: "2", term: 1, snapshot }));
  assert.equal(raft.pendingSnapshotIndex(), 20);
  raft.advance(rd);
  const next = raft.ready();
  assert.equal(next.snapshot?.metadata.index, 20);
  assert.deepEqual(next.committedEntries, []);
  assert.equal(raft.pendingSnapshotIndex(), 20);
  storage.applySnapshot(next.snapshot!);
  raft.advance(next);
  assert.equal(raft.pendingSnapshotIndex(), 0);
  assert.equal(raft.log.applied, 20);
  // a snapshot at or below the commit index is not restored: nothing pends
  raft.step(message({ type: "Snap", from: "1", to: "2", term: 1, snapshot }));
  assert.equal(raft.pendingSnapshotIndex(), 0);
});

Deno.test("apply beside the Raft loop: a follower still applying keeps answering its leader, whose quorum needs it", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const [f, other] = ["1", "2", "3"].filter((id) => id !== l);
  net.holdApply.add(f);
  for (let i = 0; i < 5; i++) net.get(l).raft.propose(enc.encode(`v${i}`));
  net.settle();
  const fr = net.get(f).raft;
  assert.equal(fr.status().commit, net.get(l).raft.status().commit, "the follower learned the commit index");
  assert.ok(fr.status().applied < fr.status().commit, "and has applied none of the new entries");
  assert.deepEqual(normalData(net.get(f)).slice(-5), ["v0", "v1", "v2", "v3", "v4"], "they were handed out once");
  // the other follower is cut off: check-quorum keeps the leader only while the busy follower answers heartbeats
  net.isolate(other);
  net.tick(40);
  assert.equal(net.get(l).raft.isLeader, true, "still leading after 4 election timeouts");
  net.get(l).raft.propose(enc.encode("while applying"));
  net.settle();
  assert.equal(fr.status().commit, net.get(l).raft.status().commit, "a new entry commits with the busy follower");
  fr.appliedTo(fr.status().commit);
  assert.equal(fr.status().applied, fr.status().commit);
  assert.equal(normalData(net.get(f)).filter((d) => d === "v0").length, 1, "no entry is handed out twice");
});

Deno.test("apply beside the Raft loop: committed entries past maxApplyingBytes wait until appliedTo frees room", () => {
  const net = new Net(["1"], { maxApplyingBytes: 10 });
  net.elect();
  const m = net.get("1");
  net.holdApply.add("1");
  const handedBefore = m.applied.length;
  for (let i = 0; i < 3; i++) m.raft.propose(enc.encode("0123456789"));
  net.settle();
  assert.equal(m.applied.length - handedBefore, 3, "one Ready hands out all three (30 bytes, the room was free)");
  for (let i = 0; i < 2; i++) m.raft.propose(enc.encode("abcdefghij"));
  net.settle();
  const s = m.raft.status();
  assert.equal(s.commit, m.raft.log.lastIndex(), "the next two are committed");
  assert.equal(m.applied.length - handedBefore, 3, "but not handed out while 30 bytes are being applied");
  assert.equal(m.raft.hasReady(), false);
  m.raft.appliedTo(m.applied[m.applied.length - 2].index);
  assert.equal(m.raft.hasReady(), false, "room is freed by whole hand-outs: part of one frees none");
  m.raft.appliedTo(m.applied[m.applied.length - 1].index);
  net.settle();
  assert.deepEqual(
    normalData(m).slice(-2),
    ["abcdefghij", "abcdefghij"],
    "applied up to the hand-out: the rest follow",
  );
  assert.throws(() => m.raft.appliedTo(m.raft.log.committed + 1), RaftInvariantError, "never past the commit index");
});

Deno.test("apply beside the Raft loop: a conf change is proposed only once the previous one is applied, not handed out", () => {
  const net = new Net(["1", "2", "3"]);
  const l = net.elect();
  const lr = net.get(l).raft;
  net.holdApply.add(l);
  lr.proposeConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: "4" });
  net.settle();
  const cc = net.get(l).applied.findLast((e) => e.type === EntryType.ConfChange)!;
  assert.equal(lr.status().commit >= cc.index, true, "committed and handed out");
  assert.throws(
    () => lr.proposeConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: "5" }),
    ConfChangePendingError,
  );
  lr.appliedTo(cc.index); // (the harness changed the core's membership when it was handed out)
  lr.proposeConfChange({ type: ConfChangeType.AddLearnerNode, nodeId: "5" });
});
