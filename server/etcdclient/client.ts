/**
 * A small etcd v3 client on @grpc/grpc-js and the project's proto definitions, with what Easegress's member layer
 * needs from clientv3: an endpoint list with failover, member discovery through MemberList (clientv3's AutoSync,
 * which replaces the endpoints with the members' advertised client URLs), unary calls bounded by one request timeout,
 * leases (grant, time-to-live, keep-alive-once, revoke) and prefix watches that resume after a broken stream.
 * With a user name and password it authenticates as clientv3 does: the token goes with every call as `token`
 * metadata, and a call refused for its token (expired, auth revision old, auth just enabled) authenticates again and
 * is retried once; "authentication is not enabled" means calls go without a token.
 *
 * Endpoints are URLs (`http://host:port`) or `host:port`; they are dialled as plain `host:port` targets, because
 * Deno's node:http2 rejects a gRPC `:authority` that is not host:port.
 */
import { Buffer } from "node:buffer";
import {
  AuthService,
  ClusterService,
  KVService,
  LeaseService,
  MaintenanceService,
  type MethodDefinition,
  WatchService,
} from "../../proto/mod.ts";
import type * as pb from "../../proto/types.ts";
import { type CallMetadata, GrpcClient, type GrpcClientStream, GrpcError, Status } from "../transport/http2_client.ts";
import { prefixEnd as prefixEndBytes } from "../mvcc/keys.ts";

/** A key-value pair as read from the store (key and value decoded as UTF-8). */
export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: string;
}

/** A cluster member as MemberList reports it. */
export interface Member {
  id: string;
  name: string;
  peerURLs: string[];
  clientURLs: string[];
  isLearner: boolean;
}

/** One change seen by a watch. */
export interface WatchEvent {
  type: "put" | "delete";
  kv: KeyValue;
}

/** A running watch. */
export interface Watcher {
  close(): void;
}

/** Client settings. */
export interface EtcdClientOptions {
  /** initial endpoints: URLs or host:port */
  endpoints: string[];
  /** timeout of every request, ms (Easegress: cluster-request-timeout) */
  requestTimeoutMs: number;
  /** max size of one sent message (Easegress: max-call-send-msg-size) */
  maxCallSendMsgSize?: number;
  /** re-read the member list this often, ms (clientv3 AutoSyncInterval; 0 = only when connecting) */
  autoSyncIntervalMs?: number;
  /** etcd user name and password (clientv3's Username and Password) when the cluster has auth enabled */
  username?: string;
  password?: string;
  log?: (msg: string) => void;
}

/** An error from the server or the transport, with the gRPC code. */
export class EtcdClientError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** `http://host:port` → `host:port` (the form the endpoints are dialled in). */
export function endpointTarget(u: string): string {
  if (!/^[a-z]+:\/\//i.test(u)) return u;
  const x = new URL(u);
  const port = x.port || (x.protocol === "https:" ? "443" : "80");
  return `${x.hostname}:${port}`;
}

/** Smallest key greater than every key with this prefix (etcd's prefix range end), of the prefix's UTF-8 bytes. */
export function prefixEnd(prefix: string): Buffer {
  const end = prefixEndBytes(Buffer.from(prefix));
  return Buffer.from(end.buffer, end.byteOffset, end.byteLength);
}

function toKv(kv: pb.KeyValue): KeyValue {
  return {
    key: Buffer.from(kv.key).toString(),
    value: Buffer.from(kv.value).toString(),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: String(kv.lease ?? "0"),
  };
}

function toMember(m: pb.Member): Member {
  return { id: String(m.ID), name: m.name, peerURLs: m.peerURLs, clientURLs: m.clientURLs, isLearner: m.isLearner };
}

/** Default of `maxCallSendMsgSize` (Easegress's cluster default, and clientv3's). */
const DEFAULT_MAX_SEND = 2 * 1024 * 1024;

/** Pause before trying the endpoints again once each of them failed in turn (grpc-go's first reconnect backoff). */
const RETRY_ROUND_PAUSE_MS = 100;

/** Pause before a broken watch stream is opened again on the next endpoint. */
const WATCH_RETRY_MS = 200;

/** What a member that is not the leader answers a request only the leader serves (MemberPromote, MoveLeader). */
const NOT_LEADER = "etcdserver: not leader";

/** Cancel reasons of a watch that a fresh token cures. */
const WATCH_TOKEN_REFUSED = /invalid auth token|user name is empty|revision of auth store is old/;

/** Errors that a fresh token cures (clientv3's shouldRefreshToken). */
function tokenRefused(e: EtcdClientError): boolean {
  return e.code === Status.UNAUTHENTICATED || e.message === "etcdserver: user name is empty" ||
    e.message === "etcdserver: revision of auth store is old";
}

/** A transport or server failure as the client reports it: the gRPC code and the server's message. */
function clientError(err: unknown): EtcdClientError {
  if (err instanceof EtcdClientError) return err;
  if (err instanceof GrpcError) return new EtcdClientError(err.code, err.details);
  return new EtcdClientError(Status.UNKNOWN, (err as Error).message ?? String(err));
}

/**
 * The client. Calls go over this project's own HTTP/2 + gRPC client (server/transport/http2_client.ts), one
 * connection per endpoint, opened when first used and again after it closed.
 */
export class EtcdClient {
  #opts: EtcdClientOptions;
  #endpoints: string[];
  #current = 0;
  #conns = new Map<string, GrpcClient>();
  #sync?: ReturnType<typeof setInterval>;
  #closed = false;
  #watchers = new Set<{ close(): void }>();
  /** the auth token calls carry (null: none) */
  #token: string | null = null;

  private constructor(opts: EtcdClientOptions) {
    this.#opts = opts;
    this.#endpoints = [...new Set(opts.endpoints.map(endpointTarget))];
    if (this.#endpoints.length === 0) throw new Error("etcdclient: no available endpoints");
  }

  /**
   * Creates a client, checks that one endpoint answers (within the request timeout) and learns the members'
   * client URLs.
   */
  static async connect(opts: EtcdClientOptions): Promise<EtcdClient> {
    const c = new EtcdClient(opts);
    try {
      await c.#authenticate();
      await c.syncEndpoints();
    } catch (err) {
      c.close();
      throw err;
    }
    if (opts.autoSyncIntervalMs) {
      c.#sync = setInterval(() => c.syncEndpoints().catch(() => {}), opts.autoSyncIntervalMs);
      Deno.unrefTimer(c.#sync as unknown as number);
    }
    return c;
  }

  /** The endpoints in use (host:port), the one tried first at the front. */
  get endpoints(): string[] {
    return [...this.#endpoints.slice(this.#current), ...this.#endpoints.slice(0, this.#current)];
  }

  /** AutoSync: replace the endpoint list with the members' client URLs. */
  async syncEndpoints(): Promise<Member[]> {
    const members = await this.memberList();
    const urls = [...new Set(members.flatMap((m) => m.clientURLs).map(endpointTarget))];
    if (urls.length > 0) {
      const cur = this.#endpoints[this.#current];
      this.#endpoints = urls;
      this.#current = Math.max(0, urls.indexOf(cur));
      this.#opts.log?.(`etcd client endpoints: [${urls.join(" ")}]`);
      for (const [target, conn] of this.#conns) {
        if (!urls.includes(target)) {
          conn.close();
          this.#conns.delete(target);
        }
      }
    }
    return members;
  }

  /** The connection to `target`: the open one, or a new one. */
  #conn(target: string): GrpcClient {
    let c = this.#conns.get(target);
    if (!c || c.closed) {
      c?.destroy();
      c = new GrpcClient(target);
      this.#conns.set(target, c);
    }
    return c;
  }

  /** Moves on to the next endpoint. */
  #rotate(): void {
    this.#current = (this.#current + 1) % this.#endpoints.length;
  }

  /** Gets a token for the configured user (none when there is no user or auth is not enabled). */
  async #authenticate(): Promise<void> {
    if (this.#opts.username === undefined) return;
    this.#token = null;
    try {
      const r = await this.#unary<pb.AuthenticateRequest, pb.AuthResponse>(AuthService.Authenticate, {
        name: this.#opts.username,
        password: this.#opts.password ?? "",
      }, false);
      this.#token = r.token ?? null;
    } catch (err) {
      if ((err as Error).message !== "etcdserver: authentication is not enabled") throw err;
    }
  }

  /** Call metadata: the token, if any. */
  #metadata(): CallMetadata | undefined {
    return this.#token ? { token: this.#token } : undefined;
  }

  /**
   * One request within the request timeout, tried on the next endpoint when one is unavailable (or silent for half
   * the timeout); with `leaderOnly`, also when the member answers that it is not the leader. A call refused for its
   * token is retried once with a new one.
   */
  async #unary<Req, Res>(method: MethodDefinition, req: Req, reauth = true, leaderOnly = false): Promise<Res> {
    if (this.#closed) throw new EtcdClientError(Status.CANCELLED, "etcdclient: client is closed");
    const bytes = method.requestSerialize(req);
    const maxSend = this.#opts.maxCallSendMsgSize ?? DEFAULT_MAX_SEND;
    if (bytes.length > maxSend) {
      throw new EtcdClientError(
        Status.RESOURCE_EXHAUSTED,
        `trying to send message larger than max (${bytes.length} vs. ${maxSend})`,
      );
    }
    const deadline = Date.now() + this.#opts.requestTimeoutMs;
    let lastErr: EtcdClientError | undefined;
    let tries = 0;
    while (Date.now() < deadline) {
      const conn = this.#conn(this.#endpoints[this.#current]);
      // per-attempt deadline: the rest of the budget, but move on from an endpoint that stays silent
      const attemptMs = Math.min(deadline - Date.now(), Math.max(1000, this.#opts.requestTimeoutMs / 2));
      try {
        return method.responseDeserialize(await conn.unary(method.path, bytes, this.#metadata(), attemptMs)) as Res;
      } catch (err) {
        const e = clientError(err);
        lastErr = e;
        if (reauth && this.#opts.username !== undefined && tokenRefused(e)) {
          reauth = false;
          await this.#authenticate();
          continue;
        }
        const retry = e.code === Status.UNAVAILABLE || (leaderOnly && e.message === NOT_LEADER) ||
          (e.code === Status.DEADLINE_EXCEEDED && Date.now() < deadline && this.#endpoints.length > 1);
        if (!retry) throw e;
        this.#rotate();
        tries++;
        if (tries % this.#endpoints.length === 0) await new Promise((r) => setTimeout(r, RETRY_ROUND_PAUSE_MS));
      }
    }
    throw lastErr ?? new EtcdClientError(Status.DEADLINE_EXCEEDED, "context deadline exceeded");
  }

  /** Value of a key, undefined when absent. */
  async get(key: string): Promise<KeyValue | undefined> {
    const r = await this.#unary<Partial<pb.RangeRequest>, pb.RangeResponse>(KVService.Range, { key: Buffer.from(key) });
    return r.kvs.length > 0 ? toKv(r.kvs[0]) : undefined;
  }

  /** Every key with this prefix, in key order. */
  async getPrefix(prefix: string): Promise<KeyValue[]> {
    const r = await this.#unary<Partial<pb.RangeRequest>, pb.RangeResponse>(KVService.Range, {
      key: Buffer.from(prefix),
      range_end: prefixEnd(prefix),
    });
    return r.kvs.map(toKv);
  }

  /** Puts a key (attached to `lease` when given); returns the new revision. */
  async put(key: string, value: string, lease?: string): Promise<number> {
    const r = await this.#unary<Partial<pb.PutRequest>, pb.PutResponse>(KVService.Put, {
      key: Buffer.from(key),
      value: Buffer.from(value),
      lease: lease ?? "0",
    });
    return Number(r.header.revision);
  }

  /** Deletes a key; returns how many were deleted. */
  async delete(key: string): Promise<number> {
    const r = await this.#unary<Partial<pb.DeleteRangeRequest>, pb.DeleteRangeResponse>(KVService.DeleteRange, {
      key: Buffer.from(key),
    });
    return Number(r.deleted);
  }

  /** Deletes every key with this prefix. */
  async deletePrefix(prefix: string): Promise<number> {
    const r = await this.#unary<Partial<pb.DeleteRangeRequest>, pb.DeleteRangeResponse>(KVService.DeleteRange, {
      key: Buffer.from(prefix),
      range_end: prefixEnd(prefix),
    });
    return Number(r.deleted);
  }

  /**
   * One transaction of puts and deletes (a null value deletes), optionally guarded: `ifVersion` maps keys to the
   * version they must have (0 = absent). Returns whether the guard held.
   */
  async putAndDelete(
    ops: Record<string, string | null>,
    lease?: string,
    ifVersion?: Record<string, number>,
  ): Promise<boolean> {
    const compare = Object.entries(ifVersion ?? {}).map(([k, v]) => ({
      result: 0, // EQUAL
      target: 0, // VERSION
      key: Buffer.from(k),
      version: String(v),
    }));
    const success = Object.entries(ops).map(([k, v]) =>
      v === null
        ? { request_delete_range: { key: Buffer.from(k) } }
        : { request_put: { key: Buffer.from(k), value: Buffer.from(v), lease: lease ?? "0" } }
    );
    const r = await this.#unary<unknown, pb.TxnResponse>(KVService.Txn, { compare, success, failure: [] });
    return Boolean(r.succeeded);
  }

  /** Grants a lease of `ttl` seconds; returns its ID (decimal string). */
  async leaseGrant(ttl: number): Promise<string> {
    const r = await this.#unary<pb.LeaseGrantRequest, pb.LeaseGrantResponse>(LeaseService.LeaseGrant, {
      TTL: String(ttl),
      ID: "0",
    });
    if (r.error) throw new EtcdClientError(Status.UNKNOWN, r.error);
    return String(r.ID);
  }

  /** Remaining TTL of a lease in seconds (-1 when it does not exist). */
  async leaseTimeToLive(id: string): Promise<number> {
    const r = await this.#unary<pb.LeaseTimeToLiveRequest, pb.LeaseTimeToLiveResponse>(
      LeaseService.LeaseTimeToLive,
      { ID: id, keys: false },
    );
    return Number(r.TTL);
  }

  /** Revokes a lease, deleting every key attached to it. */
  async leaseRevoke(id: string): Promise<void> {
    await this.#unary<pb.LeaseRevokeRequest, pb.LeaseRevokeResponse>(LeaseService.LeaseRevoke, { ID: id });
  }

  /** One keep-alive round trip (clientv3's KeepAliveOnce); returns the new TTL, throws if the lease is gone. */
  async leaseKeepAliveOnce(id: string): Promise<number> {
    const deadline = Date.now() + this.#opts.requestTimeoutMs;
    const method = LeaseService.LeaseKeepAlive;
    const request = method.requestSerialize({ ID: id } satisfies pb.LeaseKeepAliveRequest);
    let lastErr: unknown;
    for (let i = 0; i < Math.max(1, this.#endpoints.length) && Date.now() < deadline; i++) {
      const call = this.#conn(this.#endpoints[this.#current]).bidiStream(method.path, this.#metadata());
      try {
        return await new Promise<number>((resolve, reject) => {
          const timer = setTimeout(() => {
            call.cancel();
            reject(new EtcdClientError(Status.DEADLINE_EXCEEDED, "context deadline exceeded"));
          }, deadline - Date.now());
          call.on("message", (bytes: Uint8Array) => {
            clearTimeout(timer);
            call.cancel();
            const ttl = Number((method.responseDeserialize(bytes) as pb.LeaseKeepAliveResponse).TTL);
            if (ttl <= 0) reject(new EtcdClientError(Status.NOT_FOUND, "etcdserver: requested lease not found"));
            else resolve(ttl);
          });
          call.on("close", () => {
            clearTimeout(timer);
            reject(
              call.error ? clientError(call.error) : new EtcdClientError(Status.UNAVAILABLE, "keep-alive stream ended"),
            );
          });
          call.write(request);
        });
      } catch (err) {
        lastErr = err;
        if (!(err instanceof EtcdClientError) || err.code !== Status.UNAVAILABLE) throw err;
        this.#rotate();
      }
    }
    throw lastErr ?? new EtcdClientError(Status.DEADLINE_EXCEEDED, "context deadline exceeded");
  }

  /** The cluster's members. */
  async memberList(): Promise<Member[]> {
    const r = await this.#unary<pb.EmptyRequest, pb.MemberListResponse>(ClusterService.MemberList, {});
    return r.members.map(toMember);
  }

  /** Removes a member from the cluster (Raft). */
  async memberRemove(id: string): Promise<void> {
    await this.#unary<pb.MemberIdRequest, pb.MemberListResponse>(ClusterService.MemberRemove, { ID: id });
  }

  /** Adds a member (a learner when `isLearner`) with these peer URLs; resolves with it as the cluster lists it. */
  async memberAdd(peerURLs: string[], isLearner: boolean): Promise<Member> {
    const r = await this.#unary<pb.MemberAddRequest, pb.MemberAddResponse>(ClusterService.MemberAdd, {
      peerURLs,
      isLearner,
    });
    return toMember(r.member);
  }

  /** Makes a learner a voting member; asked of the leader (the endpoints are tried until one leads). */
  async memberPromote(id: string): Promise<void> {
    await this.#unary<pb.MemberIdRequest, pb.MemberListResponse>(ClusterService.MemberPromote, { ID: id }, true, true);
  }

  /** Hands leadership to voter `id`; asked of the leader, resolves once `id` leads. */
  async moveLeader(id: string): Promise<void> {
    await this.#unary<pb.MoveLeaderRequest, pb.HeaderResponse>(
      MaintenanceService.MoveLeader,
      { targetID: id },
      true,
      true,
    );
  }

  /** Maintenance.Status of the endpoint in use. */
  async status(): Promise<{ leader: string; memberId: string; raftTerm: number; version: string }> {
    const r = await this.#unary<pb.EmptyRequest, pb.StatusResponse>(MaintenanceService.Status, {});
    return {
      leader: String(r.leader),
      memberId: String(r.header.member_id),
      raftTerm: Number(r.raftTerm),
      version: r.version,
    };
  }

  /**
   * Watches a key (or a prefix) from `startRevision` (default: now). When the stream breaks it is re-created on the
   * next endpoint from the revision after the last one seen, so no event is lost or repeated.
   */
  watch(
    key: string,
    opts: { prefix?: boolean; startRevision?: number },
    onEvents: (events: WatchEvent[], revision: number) => void,
    onError?: (err: Error) => void,
  ): Watcher {
    const method = WatchService.Watch;
    let nextRev = opts.startRevision ?? 0;
    let closed = false;
    let call: GrpcClientStream | undefined;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;
    const start = () => {
      if (closed || this.#closed) return;
      const current = this.#conn(this.#endpoints[this.#current]).bidiStream(method.path, this.#metadata());
      call = current;
      let broken = false;
      const restart = () => {
        if (broken || closed) return;
        broken = true;
        current.cancel();
        this.#rotate();
        retryTimer = setTimeout(start, WATCH_RETRY_MS);
      };
      current.on("message", (bytes: Uint8Array) => {
        if (broken) return;
        const resp = method.responseDeserialize(bytes) as pb.WatchResponse;
        if (resp.canceled) {
          const compact = Number(resp.compact_revision ?? 0);
          if (compact > 0) {
            onError?.(new Error(`etcdserver: mvcc: required revision has been compacted (${compact})`));
            nextRev = compact;
          }
          if (this.#opts.username !== undefined && WATCH_TOKEN_REFUSED.test(resp.cancel_reason ?? "")) {
            // the watch was refused for its token: authenticate again before the next attempt
            broken = true;
            current.cancel();
            this.#authenticate().catch((err) => onError?.(err)).finally(() => {
              broken = false;
              restart();
            });
            return;
          }
          restart();
          return;
        }
        const rev = Number(resp.header?.revision ?? 0);
        if (resp.created && nextRev === 0) nextRev = rev + 1;
        if (resp.events && resp.events.length > 0) {
          const events: WatchEvent[] = resp.events.map((e) => ({
            type: e.type === 1 ? "delete" : "put",
            kv: toKv(e.kv),
          }));
          nextRev = events[events.length - 1].kv.modRevision + 1;
          onEvents(events, rev);
        }
      });
      current.on("close", () => {
        if (broken || closed) return;
        if (current.error) onError?.(clientError(current.error));
        restart();
      });
      current.write(method.requestSerialize({
        create_request: {
          key: Buffer.from(key),
          range_end: opts.prefix ? prefixEnd(key) : Buffer.alloc(0),
          start_revision: String(nextRev),
        },
      }));
    };
    start();
    const w = {
      close: () => {
        closed = true;
        clearTimeout(retryTimer);
        call?.cancel();
        this.#watchers.delete(w);
      },
    };
    this.#watchers.add(w);
    return w;
  }

  /** Closes every connection and watch. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sync);
    for (const w of [...this.#watchers]) w.close();
    for (const c of this.#conns.values()) c.destroy();
    this.#conns.clear();
  }
}
