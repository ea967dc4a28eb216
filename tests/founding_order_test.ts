/**
 * The founding members of a new cluster are its first log entries (issue 10 item 7): members started with the same
 * --initial-cluster in different orders must write the same bytes at the same index and term, so the entries are in
 * member-ID order. Each member here is opened and started on its own data dir, and its WAL is read back from disk.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { clusterIdOf, memberIdOf } from "../server/etcd/ids.ts";
import type { Member } from "../server/membership/members.ts";
import { Node } from "../server/node/node.ts";
import { Wal } from "../server/wal/wal.ts";

const TOKEN = "founding-order";
const NAMES = ["m1", "m2", "m3"];
const peerUrl = (name: string) => `http://127.0.0.1:${1 + NAMES.indexOf(name)}`; // never dialed successfully

function membersInOrder(order: string[]): Member[] {
  return order.map((name) => ({
    ID: memberIdOf([peerUrl(name)], TOKEN),
    name,
    peerURLs: [peerUrl(name)],
    clientURLs: [],
    isLearner: false,
  }));
}

/** Starts member `self` of a new cluster given the members in `order`; returns the entries its WAL holds. */
async function foundingEntries(self: string, order: string[]): Promise<string[]> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "founding-"));
  const members = membersInOrder(order);
  try {
    const node = await Node.open({
      snapDir: path.join(dir, "snap"),
      walDir: path.join(dir, "wal"),
      clusterId: clusterIdOf(members.map((m) => m.ID)),
      memberId: members.find((m) => m.name === self)!.ID,
      initialMembers: members,
      newCluster: true,
      snapshotCount: 10_000,
      minLeaseTTL: 2,
      quotaBytes: 1 << 30,
      maxRequestBytes: 1 << 20,
      heartbeatMs: 1000,
      electionMs: 10_000,
      log: () => {},
    });
    await node.start();
    await node.close();
    const { wal, contents } = await Wal.open(path.join(dir, "wal"), { log: () => {} });
    wal.close();
    return contents.entries.slice().map((e) => `${e.index}/${e.term}/${e.type}/${[...e.data].join(",")}`);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

Deno.test({
  name: "founding entries: members given the initial cluster in different orders write the same bytes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const a = await foundingEntries("m1", ["m1", "m2", "m3"]);
    const b = await foundingEntries("m2", ["m3", "m1", "m2"]);
    const c = await foundingEntries("m3", ["m2", "m3", "m1"]);
    assert.equal(a.length, 3, a.join("\n"));
    assert.deepEqual(b, a);
    assert.deepEqual(c, a);
  },
});
