/**
 * A member's ReadIndex contexts are unique across process restarts (issue 10 item 6). A leader keeps a read round
 * under its context until a quorum confirms it and ignores a second request with a context it already holds; if a
 * restarted follower reused its previous process's contexts, the leader would answer its new read with the older
 * round's index, and the follower would serve a read that misses writes acknowledged before it began.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Node, type NodeConfig } from "../server/node/node.ts";

const dec = new TextDecoder();

function config(dir: string): NodeConfig {
  const peer = "http://127.0.0.1:1"; // a single member never dials
  return {
    snapDir: path.join(dir, "snap"),
    walDir: path.join(dir, "wal"),
    clusterId: "77",
    memberId: "5",
    initialMembers: [{ ID: "5", name: "m", peerURLs: [peer], clientURLs: [], isLearner: false }],
    newCluster: true,
    snapshotCount: 10_000,
    minLeaseTTL: 2,
    quotaBytes: 1 << 30,
    maxRequestBytes: 1 << 20,
    heartbeatMs: 10,
    electionMs: 100,
    log: () => {},
  };
}

/** Starts the member on `dir`, serves `reads` linearizable reads, stops it; returns the contexts the core was given. */
async function contextsOfOneStart(dir: string, reads: number): Promise<string[]> {
  const node = await Node.open(config(dir));
  const seen: string[] = [];
  const readIndex = node.raft.readIndex.bind(node.raft);
  node.raft.readIndex = (ctx: Uint8Array) => {
    seen.push(dec.decode(ctx));
    readIndex(ctx);
  };
  try {
    await node.start();
    await node.waitForLeader(5000);
    for (let i = 0; i < reads; i++) await node.readIndex();
  } finally {
    await node.close();
  }
  return seen;
}

Deno.test({
  name: "read context: a member's ReadIndex contexts never repeat across restarts",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "read-context-"));
    try {
      const starts: string[][] = [];
      for (let i = 0; i < 3; i++) starts.push(await contextsOfOneStart(dir, 3));
      const all = starts.flat();
      assert.equal(all.length, 9, `every read went through ReadIndex: ${JSON.stringify(starts)}`);
      assert.equal(new Set(all).size, all.length, `a context repeated across restarts: ${JSON.stringify(starts)}`);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  },
});
