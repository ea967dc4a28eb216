/**
 * The peer transport among primaries: Raft messages travel as frames on one long-lived gRPC client stream per peer
 * (`egpb.Raft/Send`), served on the peer URLs next to the etcd client API. Messages are batched per event-loop turn
 * into one frame. A broken stream drops what it held (Raft retransmits) and is re-dialed on the next send (after a
 * short backoff when the peer could not be reached; at once when the peer opens a stream to us, as a restarted member
 * does). Every call carries the sender's cluster ID; a member of another cluster is refused with a clear error.
 *
 * The sending side uses our own HTTP/2 client (server/transport/http2_client.ts): all frames of one event-loop turn go
 * out in one socket write. The receiving side is a grpc-js-shaped service served by our GrpcServer, on the peer
 * listeners only (server/etcd/server.ts): never on a client URL.
 *
 * Who may send: a stream is refused unless its sender is a current member of this cluster, and a member removed from
 * the cluster is told so (it then stops, as etcd's removed members do). Inside a stream, only messages from the
 * stream's sender to this member are taken. An incoming snapshot is refused once it exceeds the backend quota. A
 * stream that came with a verified TLS client certificate (https peer URLs under --peer-client-cert-auth) must also
 * pass the certificate rules of ./peer_cert.ts: etcd's allowed CN / host name, and a certificate with SANs must name a
 * host of the claimed sender's peer URLs.
 */
import type * as grpc from "@grpc/grpc-js";
import type tls from "node:tls";
import { Buffer } from "node:buffer";
import { type RaftAck, RaftService, type ServiceDefinition, type SnapshotChunk } from "../../proto/mod.ts";
import { GrpcClient, type GrpcClientStream, GrpcError, Status } from "../transport/http2_client.ts";
import type { CertAltNames } from "../transport/http2.ts";
import { type PeerCertificate, type PeerCertPolicy, refusePeerCertificate } from "./peer_cert.ts";
import type { Message } from "../raft/types.ts";
import type { LogFields } from "../etcd/log.ts";
import { Progress } from "../util/progress.ts";
import { putTrace } from "../trace/put_trace.ts";
import {
  decodeFrame,
  decodeMessages,
  encodeFrame,
  encodeMessages,
  type LeaseAnswer,
  type LeaseQuery,
  type PeerFrame,
} from "./codec.ts";

/** Most messages queued for one peer before the oldest are dropped (Raft recovers from drops). */
const MAX_QUEUE = 4096;
const CLUSTER_HEADER = "eg-cluster-id";
const FROM_HEADER = "eg-from";
/** On a snapshot call: the size of the data that follows, so that the receiver copies each chunk into place once. */
export const SNAPSHOT_SIZE_HEADER = "eg-snapshot-bytes";

/** Takes the data of an arriving snapshot as it comes ({@link PeerHooks.snapshotSink}). */
export interface SnapshotSink {
  /** the next bytes: a view of the buffer the snapshot is assembled in, which is not changed afterwards */
  write(bytes: Uint8Array): void;
  /** the transfer broke off or was refused: nothing more comes, and the snapshot is not handed to the member */
  abort(): void;
}

/** The data of a snapshot being sent, read in order piece by piece (from the member's snapshot file). */
export interface SnapshotSource {
  readonly size: number;
  /** the next bytes, at most `max`; null once all were read; rejects when the data is found damaged */
  next(max: number): Promise<Uint8Array | null>;
  /** stops reading (the transfer broke off) */
  close(): void;
}

/** A snapshot's data held in memory, as a {@link SnapshotSource}. */
export function snapshotSourceOf(data: Uint8Array): SnapshotSource {
  let off = 0;
  return {
    size: data.length,
    next: (max) => {
      if (off === data.length) return Promise.resolve(null);
      const piece = data.subarray(off, Math.min(data.length, off + max));
      off += piece.length;
      return Promise.resolve(piece);
    },
    close: () => {},
  };
}

/** What the transport needs from its member. */
export interface PeerHooks {
  selfId: string;
  clusterId: string;
  /** TLS options for dialing peers; plaintext when absent */
  tls?: tls.ConnectionOptions;
  /** "host:port" of a member's first peer URL, if known */
  addressOf(id: string): string | undefined;
  /** messages received from peers */
  receive(msgs: Message[]): void;
  unreachable(id: string): void;
  /** an established connection to a peer was closed by the other side or broke (not by us) */
  disconnected(id: string): void;
  snapshotSent(id: string, ok: boolean): void;
  /**
   * The data of a snapshot this member sends, when its message carries none (a member keeps its snapshot's data on
   * disk, not in memory): read piece by piece; null when the member has no such snapshot.
   */
  snapshotData?(meta: { index: number; term: number }): Promise<SnapshotSource | null>;
  /**
   * a snapshot from a peer began (true) or ended (false: received, refused or broken off) arriving; `index`: the
   * snapshot's, from its header
   */
  snapshotIncoming?(receiving: boolean, index: number): void;
  /**
   * where the data of a snapshot arriving from a peer (its size announced, `data` the buffer it is assembled in) is
   * written as it comes, besides that buffer: the member's disk, so that little is left to write once it arrived
   */
  snapshotSink?(meta: { index: number; term: number }, data: Uint8Array): SnapshotSink;
  /** answers a lease question when this member leads */
  lease(id: string, renew: boolean): Promise<{ ttl: number; granted_ttl: number }>;
  /** what this member knows of the sender `id`: a current member, one removed from the cluster, or neither */
  standing(id: string): Standing;
  /** a peer told us this member was removed from the cluster */
  removed(): void;
  /** the peer URLs of member `id` (a certificate with SANs must name one of their hosts) */
  peerURLs(id: string): string[];
  /** --peer-cert-allowed-cn / --peer-cert-allowed-hostname, checked on streams with a verified client certificate */
  peerCert?: PeerCertPolicy;
  /** Largest snapshot accepted from a peer, in bytes ({@link snapshotLimit}). */
  maxSnapshotBytes: number;
  /** counts bytes per peer and times heartbeats (server/metrics) */
  stats?: PeerStats;
  log(msg: string, fields?: LogFields): void;
}

/** What the transport reports for /metrics: bytes per peer, and heartbeats for the round-trip time. */
export interface PeerStats {
  peerSent(to: string, bytes: number): void;
  peerReceived(from: string, bytes: number): void;
  heartbeatSent(to: string, now: number): void;
  heartbeatAnswered(from: string, now: number): void;
}

/** A peer call as our gRPC server hands it over: metadata and the TLS client certificate it came with. */
type PeerCall<Req = unknown> = grpc.ServerReadableStream<Req, RaftAck> & {
  getPeerCommonName?: () => string;
  getPeerAltNames?: () => CertAltNames;
};

/** The verified client certificate a call came with, or null (plaintext, or no certificate asked for). */
function callCertificate(call: PeerCall): PeerCertificate | null {
  const commonName = call.getPeerCommonName?.() ?? "";
  const altNames = call.getPeerAltNames?.() ?? { dns: [], ip: [] };
  if (commonName === "" && altNames.dns.length === 0 && altNames.ip.length === 0) return null;
  return { commonName, altNames };
}

/** A sender's standing with this member. */
export type Standing = "member" | "removed" | "unknown";

/** What a removed member is told, and how it recognises it (etcd: "the member has been permanently removed"). */
export const ERR_MEMBER_REMOVED = "the member has been permanently removed from the cluster";

/**
 * A snapshot may exceed the backend quota by this much: what the state blob holds besides the keys the quota counts
 * (leases, members, alarms, encoding). More than that is refused: a forged or runaway transfer cannot fill memory.
 */
export const SNAPSHOT_HEADROOM = 64 << 20;

/** The largest snapshot taken from a peer under a backend quota (0: etcd's default quota, 2 GiB). */
export function snapshotLimit(quotaBytes: number): number {
  return (quotaBytes > 0 ? quotaBytes : 2 * 1024 ** 3) + SNAPSHOT_HEADROOM;
}

/** Host:port of a URL such as http://10.0.0.1:2380. */
export function hostPort(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || "80"}`;
}

const SEND_PATH = "/egpb.Raft/Send";
const SNAPSHOT_PATH = "/egpb.Raft/Snapshot";
/**
 * Snapshot data travels in pieces of this size, each written when the stream has room. 64 KiB (one socket read on the
 * receiver) rather than 1 MiB: less is copied ahead of the flow-control window, and the receiver gathers (and grows
 * its buffer for) a 64 KiB message at a time instead of a 1 MiB one before copying it into place.
 */
const SNAPSHOT_CHUNK = 64 << 10;
/** A snapshot's data is read from its file in pieces of this size, each sent as chunks of SNAPSHOT_CHUNK. */
const SNAPSHOT_READ = 1 << 20;
/** Frames are dropped (Raft retransmits) while this much waits for a peer that does not read (flow control). */
const MAX_BUFFERED = 32 << 20;
const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 1000;

// the service definition's codecs (proto/mod.ts)
const serializeChunk = RaftService.Snapshot.requestSerialize;
/** A refused sender retries on every tick: the same refusal is logged at most once in this many ms. */
const REFUSAL_LOG_MS = 10_000;
/** How long a follower waits for the leader's answer to a lease question. */
const LEASE_ANSWER_MS = 3000;

/** egpb.Raft as this server registers it: Send hands its handler each frame's bytes, for {@link decodeFrame}. */
export const RaftPeerService: ServiceDefinition = {
  ...RaftService,
  Send: { ...RaftService.Send, requestDeserialize: (bytes: Uint8Array) => bytes },
};

class PeerLink {
  #client: GrpcClient | null = null;
  #call: GrpcClientStream | null = null;
  #queue: Message[] = [];
  #queries: LeaseQuery[] = [];
  #answers: LeaseAnswer[] = [];
  #scheduled = false;
  #addr = "";
  #warned = false;
  /** no dial before this time (the last connection attempt failed) */
  #retryAt = 0;
  #backoff = MIN_BACKOFF_MS;
  /** When the current connection to the peer came up (Date.now()); 0 while there is none or the peer refused us. */
  activeSince = 0;

  constructor(
    readonly id: string,
    readonly hooks: PeerHooks,
    /** lease questions that could not be sent, or whose answers the closed connection took with it */
    readonly leaseLost: (peer: string, queries?: LeaseQuery[]) => void,
  ) {}

  /** Opens the connection and the message stream if they are not open (unless backing off after a failure). */
  keepConnected(): void {
    this.#stream();
  }

  /**
   * The peer opened a stream to us, so it is up (a restarted member, say): our connection to it is dialled now, not
   * after the backoff its earlier failed attempts set (up to MAX_BACKOFF_MS), so that what the peer needs (a leader's
   * appends or snapshot) leaves at once.
   */
  peerIsUp(): void {
    if (this.#client && !this.#client.closed) return;
    this.#retryAt = 0;
    this.#backoff = MIN_BACKOFF_MS;
    this.#stream();
  }

  send(m: Message): void {
    if (this.#queue.length >= MAX_QUEUE) {
      this.#queue.shift();
      this.hooks.unreachable(this.id);
    }
    this.#queue.push(m);
    this.#schedule();
  }

  /** Queues a lease question for this peer (the leader), sent with the next frame. */
  ask(q: LeaseQuery): void {
    this.#queries.push(q);
    this.#schedule();
  }

  /** Queues the answer to a lease question this peer asked. */
  answer(a: LeaseAnswer): void {
    this.#answers.push(a);
    this.#schedule();
  }

  #schedule(): void {
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  /** The connection to the peer: reused while it is open, else a new one (unless backing off). */
  client(): GrpcClient | null {
    const addr = this.hooks.addressOf(this.id);
    if (!addr) return null;
    if (this.#client && addr === this.#addr && !this.#client.closed) return this.#client;
    if (addr === this.#addr && Date.now() < this.#retryAt) return null;
    this.close();
    this.#addr = addr;
    const client = new GrpcClient(addr, { maxReceiveMessageLength: 64 << 20, tls: this.hooks.tls });
    let connected = false;
    client.once("connect", () => {
      connected = true;
      if (this.#client === client) this.activeSince = Date.now();
    });
    client.on("close", () => {
      this.leaseLost(this.id);
      if (this.#client === client) {
        this.#client = null;
        this.activeSince = 0;
        if (connected) this.hooks.disconnected(this.id);
      }
      if (connected) {
        this.#backoff = MIN_BACKOFF_MS;
        this.#retryAt = 0;
      } else {
        this.#retryAt = Date.now() + this.#backoff;
        this.#backoff = Math.min(this.#backoff * 2, MAX_BACKOFF_MS);
      }
    });
    this.#client = client;
    return client;
  }

  metadata(): Record<string, string> {
    return { [CLUSTER_HEADER]: this.hooks.clusterId, [FROM_HEADER]: this.hooks.selfId };
  }

  /** Writes the queued messages now, if any. */
  flush(): void {
    if (this.#queue.length > 0) this.#flush();
  }

  #flush(): void {
    this.#scheduled = false;
    const msgs = this.#queue, queries = this.#queries, answers = this.#answers;
    if (msgs.length === 0 && queries.length === 0 && answers.length === 0) return;
    this.#queue = [];
    if (queries.length > 0) this.#queries = [];
    if (answers.length > 0) this.#answers = [];
    const call = this.#stream();
    if (!call || call.bufferedBytes > MAX_BUFFERED) {
      this.hooks.unreachable(this.id);
      for (const m of msgs) if (m.type === "Snap") this.hooks.snapshotSent(this.id, false);
      if (queries.length > 0) this.leaseLost(this.id, queries);
      return;
    }
    const snaps = msgs.filter((m) => m.type === "Snap");
    const rest = snaps.length === 0 ? msgs : msgs.filter((m) => m.type !== "Snap");
    if (rest.length > 0 || queries.length > 0 || answers.length > 0) {
      const frame = encodeFrame(rest, queries, answers);
      if (putTrace.on) putTrace.messages(rest, true);
      call.write(frame);
      call.flush();
      this.hooks.stats?.peerSent(this.id, frame.length);
    }
    for (const m of snaps) this.#sendSnapshot(m);
  }

  /**
   * Streams a Snap message on its own call: the message, then its data in chunks under flow control. Logs the start,
   * progress (bytes handed to the connection, rate, elapsed; throttled, not per chunk) and the outcome.
   */
  #sendSnapshot(m: Message): void {
    const client = this.client();
    if (!client) return this.hooks.snapshotSent(this.id, false);
    const meta = m.snapshot!.metadata, about = { "remote-peer-id": this.id, "snapshot-index": meta.index };
    const held = m.snapshot!.data;
    const opened = held.length > 0 || !this.hooks.snapshotData
      ? Promise.resolve(snapshotSourceOf(held))
      : this.hooks.snapshotData({ index: meta.index, term: meta.term });
    opened.then(
      (source) => {
        if (source) return this.#streamSnapshot(client, m, source, about);
        this.hooks.log("cannot send database snapshot: this member has no file of it", about);
        this.hooks.snapshotSent(this.id, false);
      },
      (err) => {
        this.hooks.log(`cannot send database snapshot: ${err}`, about);
        this.hooks.snapshotSent(this.id, false);
      },
    );
  }

  /** Streams the Snap message `m` with the data of `source` (see {@link #sendSnapshot}). */
  #streamSnapshot(client: GrpcClient, m: Message, source: SnapshotSource, about: LogFields): void {
    const size = source.size;
    const call = client.clientStream(SNAPSHOT_PATH, { ...this.metadata(), [SNAPSHOT_SIZE_HEADER]: `${size}` });
    const progress = new Progress("bytes");
    this.hooks.log("sending database snapshot", { ...about, total: size });
    let settled = false;
    const settle = (ok: boolean) => {
      if (settled) return;
      settled = true;
      source.close();
      if (ok) this.hooks.log("sent database snapshot", { ...about, ...progress.fields(size) });
      else this.hooks.log("sending database snapshot failed", { ...about, ...progress.fields(size) });
      this.hooks.snapshotSent(this.id, ok);
    };
    call.on("response", () => settle(true));
    call.on("error", () => settle(false));
    call.on("close", () => settle(false));
    const head = { ...m, snapshot: { metadata: m.snapshot!.metadata, data: new Uint8Array(0) } };
    call.write(serializeChunk({ message: encodeMessages([head]) }));
    // pieces of SNAPSHOT_READ are read while the connection takes the previous one's chunks
    let piece: Uint8Array | null = null, at = 0;
    const pump = async () => {
      while (!settled) {
        if (!piece || at === piece.length) {
          piece = await source.next(SNAPSHOT_READ);
          at = 0;
          if (!piece) return call.end();
          if (settled) return;
        }
        const end = Math.min(at + SNAPSHOT_CHUNK, piece.length);
        const room = call.write(serializeChunk({ data: piece.subarray(at, end) }));
        this.hooks.stats?.peerSent(this.id, end - at);
        progress.done += end - at;
        at = end;
        if (progress.done < size && progress.due()) {
          this.hooks.log("sending database snapshot: progress", { ...about, ...progress.fields(size) });
        }
        if (!room) return void call.once("drain", resume);
      }
    };
    const resume = () => {
      pump().catch((err) => {
        if (settled) return; // the call ended first, and closed the source under the read
        this.hooks.log(`sending database snapshot: ${err}`, about);
        call.cancel();
        settle(false);
      });
    };
    resume();
  }

  #stream(): GrpcClientStream | null {
    if (this.#call && !this.#call.closed) return this.#call;
    this.#call = null;
    const client = this.client();
    if (!client) return null;
    const call = client.clientStream(SEND_PATH, this.metadata());
    call.on("error", (err: GrpcError) => {
      if (err.code === Status.PERMISSION_DENIED && err.details === ERR_MEMBER_REMOVED) {
        this.hooks.log(`peer ${this.id} says ${ERR_MEMBER_REMOVED}`);
        this.hooks.removed();
        return;
      }
      if (err.code === Status.FAILED_PRECONDITION || err.code === Status.PERMISSION_DENIED) {
        if (!this.#warned) this.hooks.log(`peer ${this.id} refused us: ${err.details}`);
        this.#warned = true;
        this.activeSince = 0;
      }
      this.hooks.unreachable(this.id);
    });
    call.on("close", () => {
      if (this.#call === call) this.#call = null;
    });
    this.#call = call;
    return call;
  }

  close(): void {
    this.#call?.end();
    this.#call = null;
    this.#client?.close();
    this.#client = null;
    this.activeSince = 0;
  }
}

interface LeaseWaiter {
  leader: string;
  resolve: (a: { ttl: number; granted_ttl: number }) => void;
  reject: (e: unknown) => void;
  /** performance.now() after which {@link PeerTransport.expire} fails it (no timer per question) */
  deadline: number;
}

/** Sends Raft messages to peers and serves the receiving side. */
export class PeerTransport {
  #links = new Map<string, PeerLink>();
  /** lease questions waiting for the leader's answer, by seq (in the order asked, so also by deadline) */
  #asked = new Map<number, LeaseWaiter>();
  /** when each refusal line was last logged (performance.now()) */
  #refusalsLogged = new Map<string, number>();
  #askSeq = 0;

  constructor(readonly hooks: PeerHooks) {}

  /**
   * Keeps a connection open to each of `ids` (dialing those that are down), as etcd keeps a stream to every peer
   * whether or not Raft has something to send it: `activeSince` then tells how long each peer has been reachable.
   */
  keepConnected(ids: Iterable<string>): void {
    for (const id of ids) if (id !== this.hooks.selfId) this.#link(id).keepConnected();
  }

  /** When the connection to member `id` came up (Date.now()); 0 if it is down. */
  activeSince(id: string): number {
    return this.#links.get(id)?.activeSince ?? 0;
  }

  #link(id: string): PeerLink {
    let link = this.#links.get(id);
    if (!link) {
      link = new PeerLink(id, this.hooks, (peer, queries) => this.#leaseLost(peer, queries));
      this.#links.set(id, link);
    }
    return link;
  }

  /** Writes every queued message to its peer's socket now (instead of at the end of the event-loop turn). */
  flush(): void {
    for (const l of this.#links.values()) l.flush();
  }

  /** Queues messages for their recipients (written at the end of the turn, or by `flush`). */
  send(msgs: Message[]): void {
    const stats = this.hooks.stats;
    for (const m of msgs) {
      if (stats && m.type === "Heartbeat") stats.heartbeatSent(m.to, performance.now());
      this.#link(m.to).send(m);
    }
  }

  /**
   * Asks the leader about a lease (keep-alives and TTL questions on followers go to the leader). The question travels
   * on this member's Send stream to the leader, the answer on the leader's Send stream back.
   */
  askLease(leader: string, id: string, renew: boolean): Promise<{ ttl: number; granted_ttl: number }> {
    const link = this.#link(leader);
    if (!link.client()) {
      if (!this.hooks.addressOf(leader)) return Promise.reject(new Error(`no address for leader ${leader}`));
      return Promise.reject(new GrpcError(Status.UNAVAILABLE, `leader ${leader} is unreachable`));
    }
    const seq = ++this.#askSeq;
    return new Promise((resolve, reject) => {
      this.#asked.set(seq, { leader, resolve, reject, deadline: performance.now() + LEASE_ANSWER_MS });
      link.ask({ id, renew, seq });
    });
  }

  /** Fails the lease questions whose answer is overdue; the member's clock calls it on every tick. */
  expire(now: number): void {
    for (const [seq, w] of this.#asked) {
      if (w.deadline > now) break;
      this.#asked.delete(seq);
      w.reject(
        new GrpcError(Status.DEADLINE_EXCEEDED, `the leader ${w.leader} did not answer a lease question in time`),
      );
    }
  }

  /** Takes the waiter of question `seq` asked of `leader`, if it still waits. */
  #takeAsked(seq: number, leader: string): LeaseWaiter | undefined {
    const w = this.#asked.get(seq);
    if (!w || w.leader !== leader) return undefined;
    this.#asked.delete(seq);
    return w;
  }

  /** The leader's answer to one of our lease questions. */
  #answered(from: string, a: LeaseAnswer): void {
    const w = this.#takeAsked(a.seq, from);
    if (!w) return;
    if (a.error) w.reject(new GrpcError(Status.UNAVAILABLE, a.error));
    else w.resolve({ ttl: a.ttl, granted_ttl: a.granted_ttl });
  }

  /** Lease questions to `peer` that cannot be answered any more: those given, or all (its connection closed). */
  #leaseLost(peer: string, queries?: LeaseQuery[]): void {
    const seqs = queries ? queries.map((q) => q.seq) : [...this.#asked.keys()];
    for (const seq of seqs) {
      this.#takeAsked(seq, peer)?.reject(new GrpcError(Status.UNAVAILABLE, `leader ${peer} is unreachable`));
    }
  }

  /** Answers a lease question `from` asked, on our stream to it. */
  #answer(from: string, q: LeaseQuery): void {
    const link = this.#link(from);
    this.hooks.lease(q.id, q.renew).then(
      (a) => link.answer({ seq: q.seq, ttl: a.ttl, granted_ttl: a.granted_ttl, error: "" }),
      (err) => link.answer({ seq: q.seq, ttl: 0, granted_ttl: 0, error: String(err?.message ?? err) }),
    );
  }

  /** Forgets a peer (removed from the cluster). */
  drop(id: string): void {
    this.#links.get(id)?.close();
    this.#links.delete(id);
  }

  stop(): void {
    for (const l of this.#links.values()) l.close();
    this.#links.clear();
    for (const w of this.#asked.values()) w.reject(new GrpcError(Status.UNAVAILABLE, "this member is stopping"));
    this.#asked.clear();
  }

  /**
   * Who sent a call: its sender's ID when the sender belongs to this cluster, is a current member and its client
   * certificate (if any) may speak for it, else the error to refuse it with.
   */
  #sender(call: PeerCall): { from: string } | { refuse: grpc.ServiceError } {
    const refuse = (code: number, details: string) => ({ refuse: { code, details } as grpc.ServiceError });
    const md = call.metadata;
    const cid = String(md.get(CLUSTER_HEADER)[0] ?? "");
    const from = String(md.get(FROM_HEADER)[0] ?? "");
    if (cid !== this.hooks.clusterId) {
      return refuse(
        Status.FAILED_PRECONDITION,
        `cluster ID mismatch: the sender belongs to cluster ${cid || "?"}, this member to ${this.hooks.clusterId}`,
      );
    }
    switch (from && from !== this.hooks.selfId ? this.hooks.standing(from) : "unknown") {
      case "member": {
        const why = refusePeerCertificate(
          callCertificate(call),
          this.hooks.peerCert ?? {},
          from,
          this.hooks.peerURLs(from),
        );
        return why === null ? { from } : refuse(Status.PERMISSION_DENIED, `the sender ${from}: ${why}`);
      }
      case "removed":
        return refuse(Status.PERMISSION_DENIED, ERR_MEMBER_REMOVED);
      default:
        return refuse(Status.PERMISSION_DENIED, `the sender ${from || "?"} is not a member of this cluster`);
    }
  }

  /** Refuses a call, logging why at most once per {@link REFUSAL_LOG_MS} for each reason (senders retry each tick). */
  #refuse(md: grpc.Metadata, err: grpc.ServiceError, cb: grpc.sendUnaryData<RaftAck>): void {
    const line = `refused peer ${md.get(FROM_HEADER)[0] ?? "?"}: ${err.details}`;
    const now = performance.now();
    if ((this.#refusalsLogged.get(line) ?? -Infinity) + REFUSAL_LOG_MS <= now) {
      if (this.#refusalsLogged.size >= 1000) this.#refusalsLogged.clear();
      this.#refusalsLogged.set(line, now);
      this.hooks.log(line);
    }
    cb(err, null);
  }

  /** The egpb.Raft service implementation for the gRPC server of the peer listeners. */
  service(): grpc.UntypedServiceImplementation {
    const self = this.hooks.selfId;
    return {
      Send: (call: PeerCall<Uint8Array>, cb: grpc.sendUnaryData<RaftAck>) => {
        const who = this.#sender(call);
        if ("refuse" in who) return this.#refuse(call.metadata, who.refuse, cb);
        const { from } = who;
        this.#link(from).peerIsUp();
        let open = true;
        call.on("data", (bytes: Uint8Array) => {
          if (!open) return;
          // a stream outlives its sender's membership: removed meanwhile, it is told so now
          if (this.hooks.standing(from) !== "member") {
            open = false;
            const again = this.#sender(call);
            if ("refuse" in again) this.#refuse(call.metadata, again.refuse, cb);
            return;
          }
          this.hooks.stats?.peerReceived(from, bytes.length);
          let frame: PeerFrame;
          try {
            frame = decodeFrame(bytes);
          } catch (err) {
            this.hooks.log(`bad frame from peer: ${err}`);
            return;
          }
          // a member speaks for itself only, and to this member only
          const msgs = frame.msgs.filter((m) => m.from === from && m.to === self);
          if (msgs.length < frame.msgs.length) {
            this.hooks.log(`dropped ${frame.msgs.length - msgs.length} message(s) from peer ${from} not from it to us`);
          }
          const stats = this.hooks.stats;
          if (stats) {
            for (const m of msgs) if (m.type === "HeartbeatResp") stats.heartbeatAnswered(m.from, performance.now());
          }
          if (putTrace.on) putTrace.messages(msgs, false);
          if (msgs.length > 0) this.hooks.receive(msgs);
          for (const q of frame.queries) this.#answer(from, q);
          for (const a of frame.answers) this.#answered(from, a);
        });
        call.on("end", () => open && cb(null, {}));
        call.on("error", () => {});
      },
      Snapshot: (call: PeerCall<SnapshotChunk>, cb: grpc.sendUnaryData<RaftAck>) => {
        const who = this.#sender(call);
        if ("refuse" in who) return this.#refuse(call.metadata, who.refuse, cb);
        const max = this.hooks.maxSnapshotBytes;
        // with the size announced, the data is copied into one buffer as it arrives (no concatenation at the end)
        const announced = Number(call.metadata.get(SNAPSHOT_SIZE_HEADER)[0] ?? NaN);
        let whole = Number.isSafeInteger(announced) && announced >= 0 && announced <= max
          ? new Uint8Array(announced)
          : null;
        let head: Message | null = null;
        let parts: Uint8Array[] = [];
        let sink: SnapshotSink | null = null;
        let refused = false;
        const progress = new Progress("bytes");
        const about = () => ({ "remote-peer-id": who.from, "snapshot-index": head?.snapshot?.metadata.index ?? 0 });
        // the member hears when a snapshot begins to arrive and, once, when it stopped arriving (however it ended)
        let incoming = false;
        const stopped = () => {
          if (incoming) this.hooks.snapshotIncoming?.(false, head?.snapshot?.metadata.index ?? 0);
          incoming = false;
        };
        /** the transfer will not be handed to the member: what arrived of it is let go */
        const giveUp = () => {
          parts = [];
          whole = null;
          sink?.abort();
          sink = null;
          stopped();
        };
        call.on("close", giveUp);
        call.on("data", (c: SnapshotChunk) => {
          if (refused) return;
          if (c.data?.length) this.hooks.stats?.peerReceived(who.from, c.data.length);
          if (!head) {
            try {
              head = decodeMessages(c.message)[0] ?? null;
            } catch (err) {
              this.hooks.log(`bad snapshot header from peer: ${err}`);
            }
            if (head) {
              this.hooks.log("receiving database snapshot", about());
              incoming = true;
              this.hooks.snapshotIncoming?.(true, head.snapshot?.metadata.index ?? 0);
              if (whole && head.snapshot) sink = this.hooks.snapshotSink?.(head.snapshot.metadata, whole) ?? null;
            }
            return;
          }
          if (!c.data?.length) return;
          const at = progress.done;
          progress.done += c.data.length;
          if (progress.done > (whole?.length ?? max)) {
            refused = true;
            giveUp();
            const details = progress.done > max
              ? `snapshot from ${who.from} exceeds ${max} bytes (the backend quota and its headroom)`
              : `snapshot from ${who.from} exceeds the ${announced} bytes it announced`;
            const code = progress.done > max ? Status.RESOURCE_EXHAUSTED : Status.INVALID_ARGUMENT;
            this.#refuse(call.metadata, { code, details } as grpc.ServiceError, cb);
            return;
          }
          if (whole) {
            whole.set(c.data, at);
            sink?.write(whole.subarray(at, at + c.data.length));
          } else parts.push(c.data);
          if (progress.due()) {
            this.hooks.log("receiving database snapshot: progress", { ...about(), ...progress.fields() });
          }
        });
        call.on("end", () => {
          stopped();
          if (refused) return;
          if (!head?.snapshot || head.from !== who.from || head.to !== self) {
            giveUp();
            const details = "snapshot without a header from its sender to this member";
            return cb({ code: Status.INVALID_ARGUMENT, details } as grpc.ServiceError, null);
          }
          if (whole && progress.done !== whole.length) {
            giveUp();
            const details = `snapshot from ${who.from} holds ${progress.done} of the ${announced} bytes it announced`;
            return cb({ code: Status.INVALID_ARGUMENT, details } as grpc.ServiceError, null);
          }
          head.snapshot.data = whole ?? Buffer.concat(parts);
          parts = [];
          whole = null;
          this.hooks.log("received database snapshot", { ...about(), ...progress.fields() });
          sink = null; // the member's now, with the snapshot
          this.hooks.receive([head]);
          cb(null, {});
        });
        call.on("error", () => {
          if (head && !refused && progress.done > 0) {
            this.hooks.log("receiving database snapshot failed", { ...about(), ...progress.fields() });
          }
          giveUp();
        });
      },
    };
  }
}
