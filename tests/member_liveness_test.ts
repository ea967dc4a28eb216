/**
 * The member state operators see (`egctl get member`, /apis/v2/status/members, the dashboard): the live store's
 * Raft state for primaries that heartbeat, Offline once a heartbeat is older than STALE_HEARTBEAT_MS, Removed once a
 * primary left the membership. The cluster-level check (SIGKILL of the leader) is in tests/easegress_cluster_test.ts.
 */
import assert from "node:assert/strict";
import {
  heartbeatAgeMs,
  isOffline,
  type LiveMembership,
  memberState,
  OFFLINE,
  readLiveMembership,
  STALE_HEARTBEAT_MS,
  unrecordedPrimaries,
} from "../server/easegress/liveness.ts";
import { rfc3339 } from "../server/easegress/gotime.ts";

const NOW = Date.parse("2026-12-05T10:00:00Z");
const beatAgo = (ms: number) => rfc3339(new Date(NOW - ms));
const member = (id: bigint, isLearner = false) => ({
  id: id.toString(),
  name: `m${id}`,
  peerURLs: [],
  clientURLs: [],
  isLearner,
});
/** Three voters 0xa, 0xb, 0xc and a learner 0xd; 0xb leads. */
const LIVE: LiveMembership = {
  members: [member(0xan), member(0xbn), member(0xcn), member(0xdn, true)],
  leaderId: (0xbn).toString(),
  raftTerm: 3,
  errors: [],
};
const primary = (id: string, ageMs: number, stored = "Leader") => ({
  lastHeartbeatTime: beatAgo(ageMs),
  etcd: { id, state: stored },
});

Deno.test("a heartbeating primary is in the state the live store says, whatever it last stored", () => {
  assert.equal(memberState(primary("b", 1000, "Follower"), LIVE, NOW), "Leader");
  assert.equal(memberState(primary("a", 1000, "Leader"), LIVE, NOW), "Follower");
  assert.equal(memberState(primary("d", 1000, "Follower"), LIVE, NOW), "Learner");
});

Deno.test("a member whose heartbeat is older than STALE_HEARTBEAT_MS is Offline, primary or secondary", () => {
  assert.equal(STALE_HEARTBEAT_MS, 12_000);
  assert.equal(memberState(primary("a", STALE_HEARTBEAT_MS), LIVE, NOW), "Follower");
  assert.equal(memberState(primary("a", STALE_HEARTBEAT_MS + 1000), LIVE, NOW), OFFLINE);
  // even the one the store still names leader (before a new election)
  assert.equal(memberState(primary("b", 42_000), LIVE, NOW), OFFLINE);
  assert.equal(memberState({ lastHeartbeatTime: beatAgo(1000) }, LIVE, NOW), "");
  assert.equal(memberState({ lastHeartbeatTime: beatAgo(60_000) }, LIVE, NOW), OFFLINE);
});

Deno.test("a primary no longer in the membership is Removed, heartbeating or not", () => {
  assert.equal(memberState(primary("e", 1000), LIVE, NOW), "Removed");
  assert.equal(memberState(primary("e", 60_000), LIVE, NOW), "Removed");
});

Deno.test("without the membership, a primary keeps its stored state until its heartbeat is late", () => {
  const unknown: LiveMembership = { leaderId: "0", raftTerm: 0, errors: ["unavailable"] };
  assert.equal(memberState(primary("a", 1000, "Leader"), unknown, NOW), "Leader");
  assert.equal(memberState(primary("a", 60_000, "Leader"), unknown, NOW), OFFLINE);
});

Deno.test("a heartbeat time that is not a time is unknown, not offline", () => {
  assert.equal(heartbeatAgeMs("yesterday", NOW), Infinity);
  assert.equal(isOffline("yesterday", NOW), false);
  assert.equal(isOffline(undefined, NOW), false);
  assert.equal(heartbeatAgeMs(beatAgo(5000), NOW), 5000);
});

Deno.test("readLiveMembership reports what it could not read instead of failing", async () => {
  const live = await readLiveMembership({
    memberList: () => Promise.resolve(LIVE.members!),
    status: () => Promise.reject(new Error("etcdserver: request timed out")),
  });
  assert.deepEqual(live, {
    members: LIVE.members,
    leaderId: "0",
    raftTerm: 0,
    errors: ["etcdserver: request timed out"],
  });
});

Deno.test("a primary of the membership without a record is listed: a learner not started yet, by its hex ID", () => {
  const unstarted = { ...member(0xen, true), name: "" }; // added online, not started: no name published yet
  const live = { ...LIVE, members: [...LIVE.members!, unstarted] };
  const records = ["a", "b", "c", "d"].map((id) => primary(id, 1000));
  assert.deepEqual(unrecordedPrimaries(records, live), [{
    options: { Name: "e", ClusterRole: "primary" },
    lastHeartbeatTime: "",
    etcd: { id: "e", startTime: "", state: "Learner" },
  }]);
  // a voter before its first heartbeat, by its name
  assert.deepEqual(
    unrecordedPrimaries(records.slice(1), LIVE).map((u) => [u.options.Name, u.etcd.state]),
    [["m10", "Follower"]],
  );
  // without the membership, nothing to add
  assert.deepEqual(unrecordedPrimaries(records, { leaderId: "0", raftTerm: 0, errors: ["unavailable"] }), []);
});
