/**
 * The gauges of a member's /metrics that are read from its state at scrape time (nothing to record on the hot path):
 * leadership, proposal indexes, the store's size, keys and revisions, quota, version and ID, learner status, and the
 * process metrics.
 */
import type { Node } from "../node/node.ts";
import type { Registry } from "./registry.ts";
import { registerProcessMetrics } from "./process.ts";
import { registerEventLoopMetrics } from "./event_loop.ts";

const described = new WeakSet<Node>();

/** Adds the scrape-time gauges of `node` to its registry (once) and returns the registry to render. */
export function describeServer(node: Node, version: string): Registry {
  const r = node.metrics.registry;
  if (described.has(node)) return r;
  described.add(node);
  const gauge = (name: string, help: string, read: () => number) =>
    r.gauge(name, help, [], (g) => g.labels().set(read()));
  gauge(
    "etcd_server_has_leader",
    "Whether or not a leader exists. 1 is existence, 0 is not.",
    () => node.leader !== "0" ? 1 : 0,
  );
  gauge(
    "etcd_server_is_leader",
    "Whether or not this member is a leader. 1 if is, 0 otherwise.",
    () => node.isLeader ? 1 : 0,
  );
  gauge(
    "etcd_server_is_learner",
    "Whether or not this member is a learner. 1 if is, 0 otherwise.",
    () => node.members.get(node.memberId)?.isLearner ? 1 : 0,
  );
  gauge(
    "etcd_server_proposals_committed_total",
    "The total number of consensus proposals committed.",
    () => node.raft.log.committed,
  );
  gauge(
    "etcd_server_proposals_applied_total",
    "The total number of consensus proposals applied.",
    () => node.appliedIndex,
  );
  gauge(
    "etcd_server_proposals_pending",
    "The current number of pending proposals to commit.",
    () => node.pendingProposals,
  );
  gauge(
    "etcd_server_quota_backend_bytes",
    "Current backend storage quota size in bytes.",
    () => node.quota.bytes,
  );
  gauge(
    "etcd_mvcc_db_total_size_in_bytes",
    "Total size of the underlying database physically allocated in bytes.",
    () => node.store.sizeBytes,
  );
  gauge(
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "Total size of the underlying database logically in use in bytes.",
    () => node.store.sizeBytes,
  );
  gauge(
    "etcd_debugging_mvcc_db_total_size_in_bytes",
    "Total size of the underlying database physically allocated in bytes.",
    () => node.store.sizeBytes,
  );
  gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.", () => node.store.keyCount);
  gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", () => node.store.currentRev);
  gauge(
    "etcd_debugging_mvcc_compact_revision",
    "The revision of the last compaction in store.",
    () => node.store.compactRev,
  );
  r.gauge("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.", [
    "server_version",
  ]).labels(version).set(1);
  r.gauge(
    "etcd_cluster_version",
    "Which version is running. 1 for 'cluster_version' label with current cluster version",
    [
      "cluster_version",
    ],
  ).labels(version.split(".").slice(0, 2).join(".")).set(1);
  r.gauge("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.", [
    "server_id",
  ]).labels(BigInt(node.memberId).toString(16)).set(1);
  const self = BigInt(node.memberId).toString(16);
  r.gauge("etcd_network_active_peers", "The current number of active peer connections.", ["Local", "Remote"], (g) => {
    g.children.clear(); // members come and go
    for (const m of node.members.list()) {
      if (m.ID !== node.memberId) g.labels(self, BigInt(m.ID).toString(16)).set(node.peerConnected(m.ID) ? 1 : 0);
    }
  });
  registerProcessMetrics(r);
  registerEventLoopMetrics(r);
  return r;
}
