/**
 * A snapshot carries the Raft membership as of the index it was taken at (b9c24fa; first caught by simulation seed
 * 132932078). A leader's snapshot changes the Raft core's membership the moment it is stepped, while the member's
 * applied state only follows once the Ready carrying it has been persisted and applied; a snapshot of the applied state
 * taken in between (Defragment, or the snapshot-count trigger) must still record the older membership. Before the fix
 * it recorded the core's newer one, and a member that died before applying the leader's snapshot restarted from its
 * own with a membership it never applied: here a lone voter came back as one of two voters and could not elect itself.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { decodeState, encodeState } from "../server/apply/state_codec.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { type Member, Members } from "../server/membership/members.ts";
import { MvccStore } from "../server/mvcc/store.ts";
import { Node, type NodeConfig } from "../server/node/node.ts";
import { message } from "../server/raft/types.ts";
import { Snapshotter } from "../server/snap/snapshotter.ts";

const SELF = "5";
const OTHER = "9";
const member = (ID: string): Member => ({
  ID,
  name: `m${ID}`,
  peerURLs: [`http://127.0.0.1:${ID}`], // never dialed: the other member only exists in the stepped snapshot
  clientURLs: [],
  isLearner: false,
});

function config(dir: string): NodeConfig {
  return {
    snapDir: path.join(dir, "snap"),
    walDir: path.join(dir, "wal"),
    clusterId: "77",
    memberId: SELF,
    initialMembers: [member(SELF)],
    newCluster: true,
    snapshotCount: 10_000,
    minLeaseTTL: 2,
    quotaBytes: 1 << 30,
    maxRequestBytes: 1 << 20,
    // no tick during the test: the Ready holding the stepped snapshot is only drained when something schedules it
    heartbeatMs: 60_000,
    electionMs: 600_000,
    log: () => {},
  };
}

/** The state a leader of members {5, 9} would send at `index`: a valid blob, whose membership is the newer one. */
function leaderState(index: number, term: number): Uint8Array {
  const members = new Members();
  members.add(member(SELF));
  members.add(member(OTHER));
  const confState = { voters: [SELF, OTHER], learners: [] };
  return encodeState({ appliedIndex: index, term, confState }, new MvccStore(), new Lessor(2), [], members);
}

const put = (key: string) => ({
  id: "",
  op: "put" as const,
  put: {
    key: new TextEncoder().encode(key),
    value: new TextEncoder().encode("v"),
    lease: "0",
    prev_kv: false,
    ignore_value: false,
    ignore_lease: false,
  },
});

Deno.test({
  name: "snapshot membership: a snapshot taken while a leader's snapshot waits to be applied keeps the applied one",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapshot-membership-"));
    try {
      const node = await Node.open(config(dir));
      let applied: number, appliedTerm: number;
      try {
        await node.start();
        await node.waitForLeader(5000);
        for (let i = 0; i < 3; i++) await node.propose(put(`k${i}`));
        applied = node.appliedIndex;
        appliedTerm = node.storage.term(applied);
        assert.deepEqual(node.raft.confState().voters, [SELF]);

        // A leader of a later term sends a snapshot far ahead whose membership adds member 9. Stepped into the core
        // (as the transport does), it waits in a Ready; nothing drains that Ready before the member dies below.
        const index = applied + 100, term = node.term + 5;
        const snapshot = {
          metadata: { index, term, confState: { voters: [SELF, OTHER], learners: [] } },
          data: leaderState(index, term),
        };
        node.raft.step(message({ type: "Snap", from: OTHER, to: SELF, term, snapshot }));
        assert.deepEqual(node.raft.confState().voters, [SELF, OTHER], "the core took the snapshot's membership");
        assert.equal(node.appliedIndex, applied, "the stepped snapshot is not applied yet");

        // Defragment arrives in this window: a snapshot of the applied state.
        await node.snapshotNow();
      } finally {
        await node.close(); // the member dies before its Ready loop persisted and applied the leader's snapshot
      }

      const own = await new Snapshotter(config(dir).snapDir).loadNewest([{ index: applied, term: appliedTerm }]);
      assert.ok(own, `the snapshot at the applied index ${applied} was saved`);
      const meta = decodeState(own.data, new MvccStore(), new Lessor(2), [], new Members());
      assert.equal(meta.appliedIndex, applied);
      assert.deepEqual(
        meta.confState,
        { voters: [SELF], learners: [] },
        "the snapshot's membership is the applied one",
      );

      // Restarted from that snapshot, the member is again the lone voter it was and leads its cluster.
      const again = await Node.open(config(dir));
      try {
        assert.equal(again.appliedIndex, applied, "restarted from its own snapshot");
        assert.deepEqual(again.raft.confState(), { voters: [SELF], learners: [] });
        await again.start();
        await again.waitForLeader(5000);
        await again.propose(put("after-restart"));
        assert.equal(again.store.keyCount, 4, "the three keys of the snapshot and the one written after the restart");
      } finally {
        await again.close();
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  },
});
