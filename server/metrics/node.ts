/**
 * The metrics a member's Raft loop and peer transport record, under etcd 3.4's names, types, labels and buckets
 * (etcdserver/metrics.go, wal/metrics.go, mvcc/backend/metrics.go, rafthttp/metrics.go), so etcd's Grafana dashboards
 * and alerts read them unchanged. Where our store differs from etcd's:
 * - etcd_disk_wal_fsync_duration_seconds: one group commit of the WAL (the batch's write and its fdatasync).
 * - etcd_disk_backend_commit_duration_seconds: applying one batch of committed entries to the MVCC store. Our store
 *   is in memory and made durable by the WAL, so there is no bbolt commit; this is the step that takes its place
 *   between commit and the client's answer, and what grows when applying is the bottleneck.
 * - etcd_disk_backend_snapshot_duration_seconds: writing one snapshot file of the whole state.
 * - etcd_server_slow_apply_total: batches of committed entries whose apply took over 100 ms (see batchApplied).
 * - etcd_network_peer_round_trip_time_seconds: from a leader's heartbeat to the follower's answer (etcd measures a
 *   separate probe; the heartbeat makes the same trip and needs no extra traffic).
 */
import {
  type Counter,
  CounterChild,
  exponentialBuckets,
  type Histogram,
  type HistogramChild,
  Registry,
} from "./registry.ts";
import { GrpcServerMetrics } from "./grpc.ts";

/** etcd warns about (and counts) an apply slower than this (etcdserver's warnApplyDuration). */
export const SLOW_APPLY_MS = 100;

/** Per-peer series, resolved once per peer. */
interface PeerSeries {
  sent: CounterChild;
  received: CounterChild;
  rtt: HistogramChild;
  /** performance.now() of the oldest unanswered heartbeat, 0 when none */
  heartbeatAt: number;
}

/** What a member records; `registry` renders it (with the gauges {@link describeServer} adds) on /metrics. */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly grpc = new GrpcServerMetrics(this.registry);
  readonly leaderChanges = this.registry.counter(
    "etcd_server_leader_changes_seen_total",
    "The number of leader changes seen.",
  ).labels();
  readonly proposalsFailed = this.registry.counter(
    "etcd_server_proposals_failed_total",
    "The total number of failed proposals seen.",
  ).labels();
  readonly slowApplies = this.registry.counter(
    "etcd_server_slow_apply_total",
    "The total number of slow apply requests (likely overloaded from slow disk).",
  ).labels();
  readonly walFsync = this.registry.histogram(
    "etcd_disk_wal_fsync_duration_seconds",
    "The latency distributions of fsync called by WAL.",
    exponentialBuckets(0.001, 2, 14),
  ).labels();
  readonly backendCommit = this.registry.histogram(
    "etcd_disk_backend_commit_duration_seconds",
    "The latency distributions of commit called by backend (here: applying a batch of committed entries).",
    exponentialBuckets(0.001, 2, 14),
  ).labels();
  readonly snapshotSave = this.registry.histogram(
    "etcd_disk_backend_snapshot_duration_seconds",
    "The latency distribution of backend snapshots.",
    exponentialBuckets(0.01, 2, 17),
  ).labels();
  readonly #sent: Counter;
  readonly #received: Counter;
  readonly #rtt: Histogram;
  readonly #peers = new Map<string, PeerSeries>();

  constructor() {
    const r = this.registry;
    this.#sent = r.counter("etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", ["To"]);
    this.#received = r.counter(
      "etcd_network_peer_received_bytes_total",
      "The total number of bytes received from peers.",
      ["From"],
    );
    this.#rtt = r.histogram(
      "etcd_network_peer_round_trip_time_seconds",
      "Round-Trip-Time histogram between peers",
      exponentialBuckets(0.0001, 2, 16),
      ["To"],
    );
  }

  /** The series of peer `id` (etcd labels peers by hexadecimal member ID). */
  #peer(id: string): PeerSeries {
    let p = this.#peers.get(id);
    if (!p) {
      const hex = hexId(id);
      p = {
        sent: this.#sent.labels(hex),
        received: this.#received.labels(hex),
        rtt: this.#rtt.labels(hex),
        heartbeatAt: 0,
      };
      this.#peers.set(id, p);
    }
    return p;
  }

  /** Bytes written to peer `to`. */
  peerSent(to: string, bytes: number): void {
    this.#peer(to).sent.inc(bytes);
  }

  /** Bytes read from peer `from`. */
  peerReceived(from: string, bytes: number): void {
    this.#peer(from).received.inc(bytes);
  }

  /** A heartbeat left for `to` (only the oldest unanswered one is timed). */
  heartbeatSent(to: string, now: number): void {
    const p = this.#peer(to);
    if (p.heartbeatAt === 0) p.heartbeatAt = now;
  }

  /** `from` answered a heartbeat. */
  heartbeatAnswered(from: string, now: number): void {
    const p = this.#peers.get(from);
    if (!p || p.heartbeatAt === 0) return;
    p.rtt.observe((now - p.heartbeatAt) / 1000);
    p.heartbeatAt = 0;
  }

  /** Forgets a removed member's series. */
  dropPeer(id: string): void {
    if (!this.#peers.delete(id)) return;
    const hex = hexId(id);
    this.#sent.remove(hex);
    this.#received.remove(hex);
    this.#rtt.remove(hex);
  }

  /**
   * Records the apply of one batch of committed entries that took `ms`. A batch slower than SLOW_APPLY_MS counts as
   * one slow apply: etcd times each request, but reading the clock per entry would cost more than some entries' apply
   * (about 0.2 µs per reading here), and the clients of a slow batch all waited for it.
   */
  batchApplied(ms: number): void {
    this.backendCommit.observe(ms / 1000);
    if (ms > SLOW_APPLY_MS) this.slowApplies.inc();
  }
}

/** A member ID as etcd writes it in labels: hexadecimal (an ID that is not a number is kept as it is). */
function hexId(id: string): string {
  return /^\d+$/.test(id) ? BigInt(id).toString(16) : id;
}
