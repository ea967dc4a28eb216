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
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { grpcRoot } from "../../proto/grpc_js.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

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

/** `http://host:port` → `host:port` (the form grpc-js must dial under Deno). */
export function endpointTarget(u: string): string {
  if (!/^[a-z]+:\/\//i.test(u)) return u;
  const x = new URL(u);
  const port = x.port || (x.protocol === "https:" ? "443" : "80");
  return `${x.hostname}:${port}`;
}

/** Smallest key greater than every key with this prefix (etcd's prefix range end). */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i]++;
      return out;
    }
  }
  return Buffer.from([0]);
}

function toKv(kv: Any): KeyValue {
  return {
    key: Buffer.from(kv.key).toString(),
    value: Buffer.from(kv.value).toString(),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: String(kv.lease ?? "0"),
  };
}

interface Stubs {
  target: string;
  kv: Any;
  lease: Any;
  cluster: Any;
  watch: Any;
  maintenance: Any;
  auth: Any;
}

const RETRYABLE = new Set([grpc.status.UNAVAILABLE]);

/** What a member that is not the leader answers a request only the leader serves (MemberPromote, MoveLeader). */
const NOT_LEADER = "etcdserver: not leader";

/** Cancel reasons of a watch that a fresh token cures. */
const WATCH_TOKEN_REFUSED = /invalid auth token|user name is empty|revision of auth store is old/;

/** Errors that a fresh token cures (clientv3's shouldRefreshToken). */
function tokenRefused(e: EtcdClientError): boolean {
  return e.code === grpc.status.UNAUTHENTICATED || e.message === "etcdserver: user name is empty" ||
    e.message === "etcdserver: revision of auth store is old";
}

/** The client. */
export class EtcdClient {
  #opts: EtcdClientOptions;
  #endpoints: string[];
  #current = 0;
  #stubs = new Map<string, Stubs>();
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
    }
    return members;
  }

  #stubsFor(target: string): Stubs {
    let s = this.#stubs.get(target);
    if (!s) {
      const creds = grpc.credentials.createInsecure();
      const options = {
        "grpc.max_send_message_length": this.#opts.maxCallSendMsgSize ?? 2 * 1024 * 1024,
        "grpc.max_receive_message_length": -1,
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 1000,
      };
      const kv = new grpcRoot.etcdserverpb.KV(target, creds, options);
      const channelOverride = kv.getChannel();
      const mk = (svc: Any) => new svc(target, creds, { ...options, channelOverride });
      s = {
        target,
        kv,
        lease: mk(grpcRoot.etcdserverpb.Lease),
        cluster: mk(grpcRoot.etcdserverpb.Cluster),
        watch: mk(grpcRoot.etcdserverpb.Watch),
        maintenance: mk(grpcRoot.etcdserverpb.Maintenance),
        auth: mk(grpcRoot.etcdserverpb.Auth),
      };
      this.#stubs.set(target, s);
    }
    return s;
  }

  /** Gets a token for the configured user (none when there is no user or auth is not enabled). */
  async #authenticate(): Promise<void> {
    if (this.#opts.username === undefined) return;
    this.#token = null;
    try {
      const r: Any = await this.#unary("auth", "Authenticate", {
        name: this.#opts.username,
        password: this.#opts.password ?? "",
      }, false);
      this.#token = r.token;
    } catch (err) {
      if ((err as Error).message !== "etcdserver: authentication is not enabled") throw err;
    }
  }

  /** Call metadata: the token, if any. */
  #metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.#token) md.set("token", this.#token);
    return md;
  }

  /**
   * Runs a unary call on the current endpoint, failing over to the next ones while the timeout allows; a call
   * refused for its token is retried once with a new one.
   */
  /**
   * One request, tried on the next endpoint when one is unavailable (or silent); with `leaderOnly`, also when the
   * member answers that it is not the leader.
   */
  async #unary<T>(
    service: keyof Omit<Stubs, "target">,
    method: string,
    req: unknown,
    reauth = true,
    leaderOnly = false,
  ): Promise<T> {
    if (this.#closed) throw new EtcdClientError(grpc.status.CANCELLED, "etcdclient: client is closed");
    const deadline = Date.now() + this.#opts.requestTimeoutMs;
    let lastErr: EtcdClientError | undefined;
    let tries = 0;
    while (Date.now() < deadline) {
      const target = this.#endpoints[this.#current];
      const stub = this.#stubsFor(target)[service];
      // per-attempt deadline: the rest of the budget, but move on from an endpoint that stays silent
      const attemptDeadline = Math.min(deadline, Date.now() + Math.max(1000, this.#opts.requestTimeoutMs / 2));
      try {
        return await new Promise<T>((resolve, reject) => {
          stub[method](
            req,
            this.#metadata(),
            { deadline: attemptDeadline },
            (err: grpc.ServiceError | null, resp: T) => {
              if (err) reject(new EtcdClientError(err.code, err.details || err.message));
              else resolve(resp);
            },
          );
        });
      } catch (err) {
        const e = err as EtcdClientError;
        lastErr = e;
        if (reauth && this.#opts.username !== undefined && tokenRefused(e)) {
          reauth = false;
          await this.#authenticate();
          continue;
        }
        const retry = RETRYABLE.has(e.code) || (leaderOnly && e.message === NOT_LEADER) ||
          (e.code === grpc.status.DEADLINE_EXCEEDED && Date.now() < deadline && this.#endpoints.length > 1);
        if (!retry) throw e;
        this.#current = (this.#current + 1) % this.#endpoints.length;
        tries++;
        if (tries % this.#endpoints.length === 0) await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw lastErr ?? new EtcdClientError(grpc.status.DEADLINE_EXCEEDED, "context deadline exceeded");
  }

  /** Value of a key, undefined when absent. */
  async get(key: string): Promise<KeyValue | undefined> {
    const r: Any = await this.#unary("kv", "Range", { key: Buffer.from(key) });
    return r.kvs.length > 0 ? toKv(r.kvs[0]) : undefined;
  }

  /** Every key with this prefix, in key order. */
  async getPrefix(prefix: string): Promise<KeyValue[]> {
    const r: Any = await this.#unary("kv", "Range", { key: Buffer.from(prefix), range_end: prefixEnd(prefix) });
    return r.kvs.map(toKv);
  }

  /** Puts a key (attached to `lease` when given); returns the new revision. */
  async put(key: string, value: string, lease?: string): Promise<number> {
    const r: Any = await this.#unary("kv", "Put", {
      key: Buffer.from(key),
      value: Buffer.from(value),
      lease: lease ?? "0",
    });
    return Number(r.header.revision);
  }

  /** Deletes a key; returns how many were deleted. */
  async delete(key: string): Promise<number> {
    const r: Any = await this.#unary("kv", "DeleteRange", { key: Buffer.from(key) });
    return Number(r.deleted);
  }

  /** Deletes every key with this prefix. */
  async deletePrefix(prefix: string): Promise<number> {
    const r: Any = await this.#unary("kv", "DeleteRange", { key: Buffer.from(prefix), range_end: prefixEnd(prefix) });
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
    const r: Any = await this.#unary("kv", "Txn", { compare, success, failure: [] });
    return Boolean(r.succeeded);
  }

  /** Grants a lease of `ttl` seconds; returns its ID (decimal string). */
  async leaseGrant(ttl: number): Promise<string> {
    const r: Any = await this.#unary("lease", "LeaseGrant", { TTL: String(ttl), ID: "0" });
    if (r.error) throw new EtcdClientError(grpc.status.UNKNOWN, r.error);
    return String(r.ID);
  }

  /** Remaining TTL of a lease in seconds (-1 when it does not exist). */
  async leaseTimeToLive(id: string): Promise<number> {
    const r: Any = await this.#unary("lease", "LeaseTimeToLive", { ID: id, keys: false });
    return Number(r.TTL);
  }

  /** Revokes a lease, deleting every key attached to it. */
  async leaseRevoke(id: string): Promise<void> {
    await this.#unary("lease", "LeaseRevoke", { ID: id });
  }

  /** One keep-alive round trip (clientv3's KeepAliveOnce); returns the new TTL, throws if the lease is gone. */
  async leaseKeepAliveOnce(id: string): Promise<number> {
    const deadline = Date.now() + this.#opts.requestTimeoutMs;
    let lastErr: unknown;
    for (let i = 0; i < Math.max(1, this.#endpoints.length) && Date.now() < deadline; i++) {
      const stub = this.#stubsFor(this.#endpoints[this.#current]).lease;
      try {
        const ttl = await new Promise<number>((resolve, reject) => {
          const call = stub.LeaseKeepAlive(this.#metadata(), { deadline });
          let done = false;
          call.on("data", (resp: Any) => {
            done = true;
            call.end();
            call.cancel();
            const ttl = Number(resp.TTL);
            if (ttl <= 0) reject(new EtcdClientError(grpc.status.NOT_FOUND, "etcdserver: requested lease not found"));
            else resolve(ttl);
          });
          call.on("error", (err: grpc.ServiceError) => {
            if (!done) reject(new EtcdClientError(err.code, err.details || err.message));
          });
          call.on("end", () => {
            if (!done) reject(new EtcdClientError(grpc.status.UNAVAILABLE, "keep-alive stream ended"));
          });
          call.write({ ID: id });
        });
        return ttl;
      } catch (err) {
        lastErr = err;
        if (!(err instanceof EtcdClientError) || !RETRYABLE.has(err.code)) throw err;
        this.#current = (this.#current + 1) % this.#endpoints.length;
      }
    }
    throw lastErr;
  }

  /** The cluster's members. */
  async memberList(): Promise<Member[]> {
    const r: Any = await this.#unary("cluster", "MemberList", {});
    return r.members.map((m: Any) => ({
      id: String(m.ID),
      name: m.name,
      peerURLs: m.peerURLs,
      clientURLs: m.clientURLs,
      isLearner: m.isLearner,
    }));
  }

  /** Removes a member from the cluster (Raft). */
  async memberRemove(id: string): Promise<void> {
    await this.#unary("cluster", "MemberRemove", { ID: id });
  }

  /** Adds a member (a learner when `isLearner`) with these peer URLs; resolves with it as the cluster lists it. */
  async memberAdd(peerURLs: string[], isLearner: boolean): Promise<Member> {
    const r: Any = await this.#unary("cluster", "MemberAdd", { peerURLs, isLearner });
    const m = r.member;
    return { id: String(m.ID), name: m.name, peerURLs: m.peerURLs, clientURLs: m.clientURLs, isLearner: m.isLearner };
  }

  /** Makes a learner a voting member; asked of the leader (the endpoints are tried until one leads). */
  async memberPromote(id: string): Promise<void> {
    await this.#unary("cluster", "MemberPromote", { ID: id }, true, true);
  }

  /** Hands leadership to voter `id`; asked of the leader, resolves once `id` leads. */
  async moveLeader(id: string): Promise<void> {
    await this.#unary("maintenance", "MoveLeader", { targetID: id }, true, true);
  }

  /** Maintenance.Status of the endpoint in use. */
  async status(): Promise<{ leader: string; memberId: string; raftTerm: number; version: string }> {
    const r: Any = await this.#unary("maintenance", "Status", {});
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
    let nextRev = opts.startRevision ?? 0;
    let closed = false;
    let call: Any;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;
    const start = () => {
      if (closed || this.#closed) return;
      const stub = this.#stubsFor(this.#endpoints[this.#current]).watch;
      call = stub.Watch(this.#metadata());
      let broken = false;
      const restart = () => {
        if (broken || closed) return;
        broken = true;
        try {
          call.cancel();
        } catch { /* already closed */ }
        this.#current = (this.#current + 1) % this.#endpoints.length;
        retryTimer = setTimeout(start, 200);
      };
      call.on("data", (resp: Any) => {
        if (resp.canceled) {
          const compact = Number(resp.compact_revision ?? 0);
          if (compact > 0) {
            onError?.(new Error(`etcdserver: mvcc: required revision has been compacted (${compact})`));
            nextRev = compact;
          }
          if (this.#opts.username !== undefined && WATCH_TOKEN_REFUSED.test(resp.cancel_reason ?? "")) {
            // the watch was refused for its token: authenticate again before the next attempt
            this.#authenticate().catch((err) => onError?.(err)).finally(restart);
            return;
          }
          restart();
          return;
        }
        const rev = Number(resp.header?.revision ?? 0);
        if (resp.created && nextRev === 0) nextRev = rev + 1;
        if (resp.events?.length > 0) {
          const events: WatchEvent[] = resp.events.map((e: Any) => ({
            type: e.type === 1 || e.type === "DELETE" ? "delete" : "put",
            kv: toKv(e.kv),
          }));
          const last = events[events.length - 1].kv.modRevision;
          nextRev = last + 1;
          onEvents(events, rev);
        }
      });
      call.on("error", (err: Error) => {
        if (!closed) onError?.(err);
        restart();
      });
      call.on("end", restart);
      call.write({
        create_request: {
          key: Buffer.from(key),
          range_end: opts.prefix ? prefixEnd(key) : Buffer.alloc(0),
          start_revision: String(nextRev),
        },
      });
    };
    start();
    const w = {
      close: () => {
        closed = true;
        clearTimeout(retryTimer);
        try {
          call?.cancel();
        } catch { /* already closed */ }
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
    for (const s of this.#stubs.values()) {
      for (const c of [s.kv, s.lease, s.cluster, s.watch, s.maintenance, s.auth]) {
        try {
          c.close();
        } catch { /* ignore */ }
      }
    }
    this.#stubs.clear();
  }
}
