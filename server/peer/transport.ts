/**
 * The peer transport among primaries: Raft messages travel as frames on one long-lived gRPC client stream per peer
 * (`egpb.Raft/Send`), served on the peer URLs next to the etcd client API. Messages are batched per event-loop turn
 * into one frame. A broken stream drops what it held (Raft retransmits) and is re-dialed on the next send.
 * Every call carries the sender's cluster ID; a member of another cluster is refused with a clear error.
 */
import * as grpc from "@grpc/grpc-js";
import { grpcRoot } from "../../proto/mod.ts";
import type { Message } from "../raft/types.ts";
import { decodeMessages, encodeMessages } from "./codec.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

/** Most messages queued for one peer before the oldest are dropped (Raft recovers from drops). */
const MAX_QUEUE = 4096;
const CLUSTER_HEADER = "eg-cluster-id";
const FROM_HEADER = "eg-from";

/** What the transport needs from its member. */
export interface PeerHooks {
  selfId: string;
  clusterId: string;
  /** "host:port" of a member's first peer URL, if known */
  addressOf(id: string): string | undefined;
  /** messages received from peers */
  receive(msgs: Message[]): void;
  unreachable(id: string): void;
  snapshotSent(id: string, ok: boolean): void;
  /** answers a lease question when this member leads */
  lease(id: string, renew: boolean): Promise<{ ttl: number; granted_ttl: number }>;
  log(msg: string): void;
}

/** Host:port of a URL such as http://10.0.0.1:2380. */
export function hostPort(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || "80"}`;
}

class PeerLink {
  #client: Obj | null = null;
  #call: grpc.ClientWritableStream<Obj> | null = null;
  #queue: Message[] = [];
  #scheduled = false;
  #addr = "";
  #warned = false;

  constructor(readonly id: string, readonly hooks: PeerHooks) {}

  send(m: Message): void {
    if (this.#queue.length >= MAX_QUEUE) {
      this.#queue.shift();
      this.hooks.unreachable(this.id);
    }
    this.#queue.push(m);
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  client(): Obj | null {
    const addr = this.hooks.addressOf(this.id);
    if (!addr) return null;
    if (this.#client && addr === this.#addr) return this.#client;
    this.close();
    this.#addr = addr;
    this.#client = new grpcRoot.egpb.Raft(addr, grpc.credentials.createInsecure(), {
      "grpc.max_send_message_length": -1,
      "grpc.max_receive_message_length": -1,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
    });
    return this.#client;
  }

  metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(CLUSTER_HEADER, this.hooks.clusterId);
    md.set(FROM_HEADER, this.hooks.selfId);
    return md;
  }

  #flush(): void {
    this.#scheduled = false;
    const msgs = this.#queue;
    this.#queue = [];
    if (msgs.length === 0) return;
    const call = this.#stream();
    if (!call) {
      this.hooks.unreachable(this.id);
      for (const m of msgs) if (m.type === "Snap") this.hooks.snapshotSent(this.id, false);
      return;
    }
    const snaps = msgs.filter((m) => m.type === "Snap");
    call.write({ data: encodeMessages(msgs) }, (err: unknown) => {
      for (const _ of snaps) this.hooks.snapshotSent(this.id, !err);
    });
  }

  #stream(): grpc.ClientWritableStream<Obj> | null {
    if (this.#call) return this.#call;
    const client = this.client();
    if (!client) return null;
    const call: grpc.ClientWritableStream<Obj> = client.Send(this.metadata(), (err: grpc.ServiceError | null) => {
      if (this.#call === call) this.#call = null;
      if (err && err.code === grpc.status.FAILED_PRECONDITION) {
        if (!this.#warned) this.hooks.log(`peer ${this.id} refused us: ${err.details}`);
        this.#warned = true;
      }
      if (err) this.hooks.unreachable(this.id);
    });
    call.on("error", () => {});
    this.#call = call;
    return call;
  }

  close(): void {
    this.#call?.end();
    this.#call = null;
    this.#client?.close();
    this.#client = null;
  }
}

/** Sends Raft messages to peers and serves the receiving side. */
export class PeerTransport {
  #links = new Map<string, PeerLink>();

  constructor(readonly hooks: PeerHooks) {}

  /** Queues messages for their recipients. */
  send(msgs: Message[]): void {
    for (const m of msgs) {
      let link = this.#links.get(m.to);
      if (!link) {
        link = new PeerLink(m.to, this.hooks);
        this.#links.set(m.to, link);
      }
      link.send(m);
    }
  }

  /** Asks the leader about a lease (keep-alives and TTL questions on followers go to the leader). */
  askLease(leader: string, id: string, renew: boolean): Promise<{ ttl: number; granted_ttl: number }> {
    let link = this.#links.get(leader);
    if (!link) {
      link = new PeerLink(leader, this.hooks);
      this.#links.set(leader, link);
    }
    const client = link.client();
    if (!client) return Promise.reject(new Error(`no address for leader ${leader}`));
    return new Promise((resolve, reject) => {
      client.Lease({ id, renew }, link!.metadata(), { deadline: Date.now() + 3000 }, (err: unknown, r: Obj) => {
        if (err) reject(err);
        else resolve({ ttl: Number(r.ttl), granted_ttl: Number(r.granted_ttl) });
      });
    });
  }

  /** Forgets a peer (removed from the cluster). */
  drop(id: string): void {
    this.#links.get(id)?.close();
    this.#links.delete(id);
  }

  stop(): void {
    for (const l of this.#links.values()) l.close();
    this.#links.clear();
  }

  #check(md: grpc.Metadata): string | null {
    const cid = String(md.get(CLUSTER_HEADER)[0] ?? "");
    if (cid !== this.hooks.clusterId) {
      return `cluster ID mismatch: the sender belongs to cluster ${cid || "?"}, this member to ${this.hooks.clusterId}`;
    }
    return null;
  }

  /** The egpb.Raft service implementation for the gRPC server. */
  service(): grpc.UntypedServiceImplementation {
    return {
      Send: (call: grpc.ServerReadableStream<Obj, Obj>, cb: grpc.sendUnaryData<Obj>) => {
        const bad = this.#check(call.metadata);
        if (bad) {
          this.hooks.log(`refused peer ${call.metadata.get(FROM_HEADER)[0] ?? "?"}: ${bad}`);
          cb({ code: grpc.status.FAILED_PRECONDITION, details: bad } as grpc.ServiceError, null);
          return;
        }
        call.on("data", (f: Obj) => {
          let msgs: Message[];
          try {
            msgs = decodeMessages(f.data);
          } catch (err) {
            this.hooks.log(`bad frame from peer: ${err}`);
            return;
          }
          this.hooks.receive(msgs);
        });
        call.on("end", () => cb(null, {}));
        call.on("error", () => {});
      },
      Lease: (call: grpc.ServerUnaryCall<Obj, Obj>, cb: grpc.sendUnaryData<Obj>) => {
        const bad = this.#check(call.metadata);
        if (bad) return cb({ code: grpc.status.FAILED_PRECONDITION, details: bad } as grpc.ServiceError, null);
        this.hooks.lease(String(call.request.id), !!call.request.renew).then(
          (a) => cb(null, a),
          (err) =>
            cb({ code: grpc.status.UNAVAILABLE, details: String(err?.message ?? err) } as grpc.ServiceError, null),
        );
      },
    };
  }
}
