/**
 * server/node/apply.ts on its own: committed entries and snapshots into the state machine, with the Raft core, the
 * transport and the proposal pipeline replaced by recorders. No disk, no network, no clock.
 */
import assert from "node:assert/strict";
import { Applier } from "../server/apply/applier.ts";
import { BackendQuota } from "../server/apply/quota.ts";
import { decodeState, StateEncoder } from "../server/apply/state_codec.ts";
import { EtcdError } from "../server/errors.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { type Member, Members } from "../server/membership/members.ts";
import { MvccStore } from "../server/mvcc/store.ts";
import { type ApplyDeps, ApplyLoop, COMPACTION_STAGGER_MS } from "../server/node/apply.ts";
import { type ConfChangeReply, newWaiter, Proposals, type Reply } from "../server/node/waiters.ts";
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  encodeConfChange,
  type Entry,
  EntryType,
} from "../server/raft/types.ts";
import { AlarmAction, AlarmType, encodeInternal, type InternalRequestShape, type PutResponse } from "../proto/mod.ts";

const SELF = "1";
const enc = new TextEncoder();

function member(ID: string): Member {
  return { ID, name: `m${ID}`, peerURLs: [`http://127.0.0.1:${ID}`], clientURLs: [], isLearner: false };
}

/** An ApplyLoop over a fresh state machine, whose callbacks are recorded in `calls`. */
function setup(opts: { quotaBytes?: number; raftConf?: (cc: ConfChange) => ConfState; rank?: number } = {}) {
  const store = new MvccStore();
  const lessor = new Lessor(2);
  const applier = new Applier(
    store,
    lessor,
    (revision) => ({ cluster_id: "7", member_id: SELF, revision, raft_term: "1" }),
  );
  const members = new Members();
  members.add(member(SELF));
  const proposals = new Proposals(SELF, 0);
  const calls: string[] = [];
  const raftConfs: ConfChange[] = [];
  const deps: ApplyDeps = {
    store,
    lessor,
    applier,
    members,
    memberId: SELF,
    initialMembers: [member(SELF), member("2")],
    quota: new BackendQuota(opts.quotaBytes ?? 0),
    proposals,
    applyToRaft: (cc) => {
      raftConfs.push(cc);
      return opts.raftConf?.(cc) ?? { voters: [SELF, cc.nodeId], learners: [] };
    },
    peerRemoved: (id) => calls.push(`peerRemoved ${id}`),
    selfRemoved: () => calls.push("selfRemoved"),
    overQuota: () => calls.push("overQuota"),
    restored: () => calls.push("restored"),
    fatal: (err) => {
      throw err;
    },
    rank: () => opts.rank ?? 0,
    log: (msg) => calls.push(`log ${msg}`),
  };
  return { loop: new ApplyLoop(deps), store, applier, members, proposals, calls, raftConfs };
}

function putRequest(id: string, key: string, value = "v"): InternalRequestShape {
  return {
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
}

const normal = (index: number, req: InternalRequestShape): Entry => ({
  index,
  term: 1,
  type: EntryType.Normal,
  data: encodeInternal(req),
});
const confEntry = (index: number, cc: ConfChange): Entry => ({
  index,
  term: 1,
  type: EntryType.ConfChange,
  data: encodeConfChange(cc),
});

/** Registers a proposal `id` and returns how it settles. */
function waitFor(proposals: Proposals, id: string): Promise<{ ok: Reply } | { err: unknown }> {
  return new Promise((resolve) => {
    proposals.add(id, newWaiter((ok) => resolve({ ok }), (err) => resolve({ err }), Infinity));
  });
}

Deno.test("apply: entries apply once, in order; an empty entry only moves the applied index", () => {
  const { loop, store } = setup();
  loop.applyEntry({ index: 1, term: 1, type: EntryType.Normal, data: new Uint8Array() });
  assert.equal(loop.appliedIndex, 1);
  assert.equal(store.currentRev, 1, "a new leader's empty entry changes nothing");
  loop.applyEntry(normal(2, putRequest("0", "a")));
  loop.applyEntry(normal(3, putRequest("0", "b")));
  assert.equal(store.currentRev, 3);
  loop.applyEntry(normal(3, putRequest("0", "b"))); // re-delivered (after a restart, say)
  loop.applyEntry(normal(2, putRequest("0", "a")));
  assert.equal(store.currentRev, 3, "an entry at or below the applied index is not applied again");
  assert.equal(loop.appliedIndex, 3);
});

Deno.test("apply: the proposal made here gets the response of its entry; others' entries answer nobody", async () => {
  const { loop, proposals } = setup();
  const mine = waitFor(proposals, "7");
  loop.applyEntry(normal(1, putRequest("8", "theirs")));
  assert.equal(proposals.size, 1, "another member's entry leaves this member's proposal waiting");
  loop.applyEntry(normal(2, putRequest("7", "mine")));
  const got = await mine;
  assert.ok("ok" in got);
  assert.equal((got.ok as PutResponse).header.revision, 3);
  assert.equal(proposals.size, 0);
});

Deno.test("apply: a refused request fails its proposal with the etcd error; the applied index still moves", async () => {
  const { loop, proposals, applier, calls } = setup();
  applier.alarms.push({ memberID: SELF, alarm: AlarmType.NOSPACE });
  const refused = waitFor(proposals, "9");
  loop.applyEntry(normal(1, putRequest("9", "k")));
  const got = await refused;
  assert.ok("err" in got && got.err instanceof EtcdError, JSON.stringify(got));
  assert.match((got.err as Error).message, /database space exceeded/);
  assert.equal(loop.appliedIndex, 1);
  assert.deepEqual(calls, [], "an etcd error is the caller's answer, not a log line");
});

Deno.test("apply: a write past this member's quota is applied, then NOSPACE is raised in a later microtask", async () => {
  const { loop, store, calls } = setup({ quotaBytes: 1000 });
  loop.applyEntry(normal(1, putRequest("0", "small", "x")));
  await Promise.resolve();
  assert.deepEqual(calls, []);
  loop.applyEntry(normal(2, putRequest("0", "big", "x".repeat(2000))));
  assert.equal(store.currentRev, 3, "applied everywhere alike");
  assert.deepEqual(calls, [], "not raised while applying");
  await Promise.resolve();
  assert.deepEqual(calls, ["overQuota"]);
});

Deno.test("apply: an alarm entry changes the replicated alarm list", () => {
  const { loop, applier } = setup();
  const alarm = { action: AlarmAction.ACTIVATE, memberID: "2", alarm: AlarmType.NOSPACE };
  loop.applyEntry(normal(1, { id: "0", op: "alarm", alarm }));
  assert.deepEqual(applier.alarms, [{ memberID: "2", alarm: AlarmType.NOSPACE }]);
});

Deno.test("apply: adding a member records it and takes the Raft core's new membership", async () => {
  const { loop, members, proposals, raftConfs } = setup();
  const added = waitFor(proposals, "11");
  const context = enc.encode(JSON.stringify({ peerURLs: ["http://10.0.0.3:2380"] }));
  loop.applyEntry(confEntry(1, { type: ConfChangeType.AddLearnerNode, nodeId: "3", id: "11", context }));
  assert.deepEqual(members.get("3"), {
    ID: "3",
    name: "",
    peerURLs: ["http://10.0.0.3:2380"],
    clientURLs: [],
    isLearner: true,
  });
  assert.deepEqual(raftConfs.map((c) => [c.type, c.nodeId]), [[ConfChangeType.AddLearnerNode, "3"]]);
  assert.deepEqual(loop.confState, { voters: [SELF, "3"], learners: [] }, "what the core answered");
  const got = await added;
  assert.ok("ok" in got);
  assert.deepEqual((got.ok as ConfChangeReply).members.map((m: Member) => m.ID), [SELF, "3"]);
  // a founding member's entry carries no context: its name and URLs come from --initial-cluster
  loop.applyEntry(confEntry(2, { type: ConfChangeType.AddNode, nodeId: "2" }));
  assert.equal(members.get("2")?.name, "m2");
  assert.deepEqual(members.get("2")?.peerURLs, ["http://127.0.0.1:2"]);
});

Deno.test("apply: removing a member drops its peer; removing this member says so in a later microtask", async () => {
  const { loop, members, calls } = setup();
  loop.applyEntry(confEntry(1, { type: ConfChangeType.AddNode, nodeId: "2" }));
  loop.applyEntry(confEntry(2, { type: ConfChangeType.RemoveNode, nodeId: "2" }));
  assert.equal(members.has("2"), false);
  assert.ok(members.removed.has("2"));
  assert.deepEqual(calls, ["peerRemoved 2"]);
  loop.applyEntry(confEntry(3, { type: ConfChangeType.RemoveNode, nodeId: SELF }));
  assert.deepEqual(calls, [
    "peerRemoved 2",
    `peerRemoved ${SELF}`,
    "log this member has been permanently removed from the cluster",
  ]);
  await Promise.resolve();
  assert.equal(calls.at(-1), "selfRemoved");
});

Deno.test("apply: the encoded state carries the membership as of the applied index, whatever the core holds", async () => {
  const { loop } = setup({ raftConf: () => ({ voters: [SELF, "2"], learners: [] }) });
  loop.applyEntry(confEntry(1, { type: ConfChangeType.AddNode, nodeId: "2" }));
  loop.applyEntry(normal(2, putRequest("0", "k")));
  const encoding = loop.encodeInSlices(4, 5);
  loop.applyEntry(normal(3, putRequest("0", "later"))); // applied while the blob is encoded: not in it
  const store = new MvccStore();
  const meta = decodeState(await encoding, store, new Lessor(2), [], new Members());
  assert.deepEqual(meta, { appliedIndex: 2, term: 4, confState: { voters: [SELF, "2"], learners: [] } });
  assert.equal(store.keyCount, 1);
});

Deno.test("apply: a leader's snapshot replaces the state, the applied index and the membership", async () => {
  const leader = setup();
  leader.loop.applyEntry(confEntry(1, { type: ConfChangeType.AddNode, nodeId: "2" }));
  leader.loop.applyEntry(normal(2, putRequest("0", "k1")));
  leader.loop.applyEntry(normal(3, putRequest("0", "k2")));
  const data = await leader.loop.encodeInSlices(2, 5);

  const follower = setup();
  follower.loop.applyEntry(normal(1, putRequest("0", "old")));
  const confState = { voters: [SELF, "2"], learners: [] };
  const snap = { metadata: { index: 3, term: 2, confState }, data };
  const decoder = await follower.loop.decode(snap);
  // decoded beside the live state: nothing changed yet
  assert.equal(follower.loop.appliedIndex, 1);
  assert.equal(follower.store.keyCount, 1);
  assert.deepEqual(follower.calls, []);
  follower.loop.install(snap, decoder);
  assert.equal(follower.loop.appliedIndex, 3);
  assert.equal(follower.loop.snapIndex, 3);
  assert.deepEqual(follower.loop.confState, confState);
  assert.equal(follower.store.keyCount, 2, "the leader's keys, not the old one");
  assert.ok(follower.members.has("2"));
  assert.equal(follower.calls.length, 2);
  assert.match(follower.calls[0], /^log restored state from the leader's snapshot at index 3 \(decoded in \d+ ms\)$/);
  assert.equal(follower.calls[1], "restored");
  follower.loop.applyEntry(normal(3, putRequest("0", "again")));
  assert.equal(follower.store.keyCount, 2, "entries the snapshot covers are not applied again");
});

Deno.test("apply: recovering from a snapshot file takes the applied index and membership it records", async () => {
  const first = setup();
  first.loop.applyEntry(confEntry(1, { type: ConfChangeType.AddNode, nodeId: "2" }));
  first.loop.applyEntry(normal(2, putRequest("0", "k")));
  const data = await first.loop.encodeInSlices(1, 5);

  const again = setup();
  const confState = again.loop.recover({ index: 2, data });
  assert.deepEqual(confState, { voters: [SELF, "2"], learners: [] });
  assert.deepEqual(again.loop.confState, confState);
  assert.equal(again.loop.appliedIndex, 2);
  assert.equal(again.loop.snapIndex, 2);
  assert.equal(again.store.keyCount, 1);
  assert.deepEqual(again.calls, [], "recovery at start-up is not a restore watchers must hear of");
});

Deno.test("apply: a compaction's records are dropped in steps after its entry; a physical one is answered then", async () => {
  const { loop, store, proposals } = setup();
  let index = 0;
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 3000; i++) loop.applyEntry(normal(++index, putRequest("0", `k${i}`, `v${round}`)));
  }
  const sizeBefore = store.sizeBytes, rev = store.currentRev;
  const physical = waitFor(proposals, "5");
  const compaction = (id: string, revision: number, phys: boolean): InternalRequestShape => ({
    id,
    op: "compaction",
    compaction: { revision: String(revision), physical: phys },
  });
  // a snapshot encode under way holds the compaction's steps back (deterministically, whatever the machine's speed)
  const encode = new StateEncoder(
    { appliedIndex: index, term: 1, confState: { voters: [SELF], learners: [] } },
    store,
    new Lessor(2),
    [],
    new Members(),
  );
  assert.equal(encode.step(0), false);
  loop.applyEntry(normal(++index, compaction("5", rev, true)));
  assert.ok(store.compacting, "the entry is applied; its records go in steps");
  assert.throws(() => store.range("k1", "", { rev: rev - 1 }), /compacted/, "and reads see it at once");
  let answered = false;
  physical.then(() => answered = true);
  await Promise.resolve();
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(!answered && store.compacting, "a physical compaction is not answered before its records are gone");
  loop.applyEntry(normal(++index, putRequest("0", "during", "x")));
  encode.finish();
  const got = await physical;
  assert.ok("ok" in got);
  assert.ok(!store.compacting);
  assert.ok(store.sizeBytes < sizeBefore / 3, `${store.sizeBytes} < ${sizeBefore / 3}`);
  assert.equal(store.range("during", "").kvs[0].value.toString(), "x");
  // one that is not physical is answered at once (its first step ran with its entry), and a snapshot's encode waits
  // for the rest
  for (let i = 0; i < 3000; i++) loop.applyEntry(normal(++index, putRequest("0", `k${i}`, "last")));
  const plain = waitFor(proposals, "6");
  loop.applyEntry(normal(++index, compaction("6", store.currentRev, false)));
  assert.ok("ok" in await plain);
  await loop.compactionDone();
  assert.ok(!store.compacting);
  loop.stop();
});

Deno.test("apply: member k of a cluster starts dropping a compaction's records k staggers after its entry", async () => {
  const compactionAt = (id: string, revision: number): InternalRequestShape => ({
    id,
    op: "compaction",
    compaction: { revision: String(revision), physical: true },
  });
  const { loop, store, proposals } = setup({ rank: 2 });
  let index = 0;
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 1000; i++) loop.applyEntry(normal(++index, putRequest("0", `k${i}`, `v${round}`)));
  }
  const sizeBefore = store.sizeBytes, rev = store.currentRev;
  const physical = waitFor(proposals, "7");
  const applied = performance.now();
  loop.applyEntry(normal(++index, compactionAt("7", rev)));
  assert.throws(() => store.range("k1", "", { rev: rev - 1 }), /compacted/, "reads see the compaction at once");
  // a timer due sooner than the member's turn fires first
  await new Promise((r) => setTimeout(r, COMPACTION_STAGGER_MS));
  assert.ok(store.compacting && store.sizeBytes === sizeBefore, "no record is dropped before the member's turn");
  assert.ok("ok" in await physical);
  assert.ok(
    performance.now() - applied >= 2 * COMPACTION_STAGGER_MS,
    "answered once the records are gone, after the turn",
  );
  assert.ok(!store.compacting && store.sizeBytes < sizeBefore / 1.5, `${store.sizeBytes} < ${sizeBefore / 1.5}`);

  // a member that closes while it waits for its turn stops waiting, and drops nothing
  for (let i = 0; i < 1000; i++) loop.applyEntry(normal(++index, putRequest("0", `k${i}`, "last")));
  loop.applyEntry(normal(++index, compactionAt("8", store.currentRev)));
  loop.stop();
  await loop.compactionDone();
  assert.ok(store.compacting, "the records stay: the member closed before its turn");
});

Deno.test("apply: a snapshot due while the compaction waits for the member's turn starts its steps at once", async () => {
  // a turn far away (rank 1000: 100 s): only an early start lets compactionDone resolve within the test
  const { loop, store } = setup({ rank: 1000 });
  let index = 0;
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 1000; i++) loop.applyEntry(normal(++index, putRequest("0", `k${i}`, `v${round}`)));
  }
  loop.applyEntry(
    normal(++index, { id: "0", op: "compaction", compaction: { revision: String(store.currentRev), physical: false } }),
  );
  assert.ok(store.compacting);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise((_, reject) =>
    timer = setTimeout(() => reject(new Error("still waiting for its turn")), 10_000)
  );
  try {
    await Promise.race([loop.compactionDone(), late]);
  } finally {
    clearTimeout(timer);
  }
  assert.ok(!store.compacting, "the records are gone");
  loop.stop();
});
