/**
 * The etcd v3 gRPC services (KV, Watch, Lease, Cluster, Maintenance, Auth, grpc.health.v1) on top of a member.
 * Each handler checks the request, proposes writes to the log or reads the applied state, and answers with etcd's
 * response shapes and errors.
 */
import type * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Code, Errors, EtcdError } from "../errors.ts";
import { leaseId } from "../lease/lessor.ts";
import { Node } from "../node/node.ts";
import type { GrpcServer, ServerCall } from "../transport/grpc_server.ts";
import { lendUntilSent } from "../transport/h2frames.ts";
import { ConfChangeType } from "../raft/types.ts";
import { memberIdOf } from "../etcd/ids.ts";
import type { WatchHub } from "../watch/watch_stream.ts";
import { encodeEtcdSnapshot, etcdSnapshotInput } from "../snapshot/etcd_backend.ts";
import { checkDelete, checkPut, checkRange, checkTxn } from "./validate.ts";
import { requestCost } from "../apply/quota.ts";
import type { EncodedRange } from "../apply/applier.ts";
import { putTrace } from "../trace/put_trace.ts";
import { stateHash } from "../apply/state_hash.ts";
import {
  AlarmAction,
  type AlarmRequest,
  type AlarmResponse,
  AuthService,
  ClusterService,
  type CompactionRequest,
  type CompactionResponse,
  type DeleteRangeRequest,
  type DeleteRangeResponse,
  type EmptyRequest,
  type HashKVRequest,
  type HashKVResponse,
  type HashResponse,
  type HeaderResponse,
  type HealthCheckResponse,
  HealthService,
  type InternalRequestOf,
  type InternalResponses,
  KVService,
  type LeaseGrantRequest,
  type LeaseGrantResponse,
  type LeaseKeepAliveRequest,
  type LeaseKeepAliveResponse,
  type LeaseLeasesResponse,
  type LeaseRevokeRequest,
  type LeaseRevokeResponse,
  LeaseService,
  type LeaseTimeToLiveRequest,
  type LeaseTimeToLiveResponse,
  MaintenanceService,
  type MemberAddRequest,
  type MemberAddResponse,
  type MemberIdRequest,
  type MemberListResponse,
  type MemberUpdateRequest,
  type MoveLeaderRequest,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type ServiceDefinition,
  ServingStatus,
  type SnapshotResponse,
  type StatusResponse,
  type TxnRequest,
  type TxnResponse,
  type WatchCreateRequest,
  type WatchRequest,
  type WatchResponse,
  WatchService,
} from "../../proto/mod.ts";
import { encodeRangeResponse } from "../watch/encode.ts";
import type { AuthGate } from "../auth/gate.ts";
import { authService } from "../auth/service.ts";

/** How long a peer must have been connected to count for a reconfiguration (etcd's HealthInterval). */
const HEALTH_INTERVAL_MS = 5000;

/** What the services need from the member they serve. */
export interface ServiceContext {
  node: Node;
  hub: WatchHub;
  maxTxnOps: number;
  /** --strict-reconfig-check: refuse membership changes the connected members could not survive */
  strictReconfigCheck: boolean;
  version: string;
  quotaBytes: number;
  /** who calls are made as, and the auth state (its `store.enabled` is the only check while auth is off) */
  auth: AuthGate;
  /** server-picked lease IDs */
  nextLeaseId: () => string;
  log: (msg: string) => void;
}

/** Turns any thrown value into a gRPC error for the client (no custom trailers: GrpcServer needs no metadata). */
function toServiceError(err: unknown): grpc.ServiceError {
  const [code, details] = err instanceof EtcdError
    ? [err.code, err.message]
    : [Code.INTERNAL, err instanceof Error ? err.message : String(err)];
  return Object.assign(new Error(details), { code, details }) as unknown as grpc.ServiceError;
}

/**
 * Wraps an async handler into a grpc-js unary handler. The transport decoded the request with protobufjs
 * (proto/mod.ts CONVERSION: every field present, defaults filled, the oneof's name set), so it has exactly the shape of
 * its message in proto/types.ts; `Req` names that shape, here and only here. `Res` is the response message's shape.
 */
function unary<Req, Res>(
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, cb) => {
    let p: Res | Promise<Res>;
    try {
      p = fn(call.request, call);
    } catch (err) {
      cb(toServiceError(err), null);
      return;
    }
    if (p instanceof Promise) p.then((r) => cb(null, r), (err) => cb(toServiceError(err), null));
    else cb(null, p);
  };
}

/**
 * Proposes a write, unless it does not fit this member's quota (etcd's quotaKVServer / quotaLeaseServer): then the
 * member raises its NOSPACE alarm through the log and refuses the write without proposing it.
 */
function proposeWithinQuota<Op extends keyof InternalResponses>(
  node: Node,
  req: InternalRequestOf<Op>,
): Promise<InternalResponses[Op]> {
  if (node.quota.available(node.store.sizeBytes, requestCost(req))) return node.propose(req);
  return node.raiseNoSpace().then(() => {
    throw Errors.noSpace();
  });
}

function kv(ctx: ServiceContext): grpc.UntypedServiceImplementation {
  const { node, auth } = ctx;
  const authState = auth.store;
  return {
    Range: unary<RangeRequest, RangeResponse | EncodedRange>(async (r, call) => {
      checkRange(r);
      if (authState.enabled) authState.checkRead(auth.info(call), r);
      if (!r.serializable) await node.readIndex();
      return await node.applier.rangeInSlices(r);
    }),
    Put: unary<PutRequest, PutResponse>((r, call) => {
      checkPut(r);
      const req: InternalRequestOf<"put"> = authState.enabled
        ? { op: "put", put: r, auth: auth.header(call) }
        : { op: "put", put: r };
      if (putTrace.on) return putTrace.put(r.key, () => proposeWithinQuota(node, req));
      return proposeWithinQuota(node, req);
    }),
    DeleteRange: unary<DeleteRangeRequest, DeleteRangeResponse>((r, call) => {
      checkDelete(r);
      const who = authState.enabled ? auth.header(call) : undefined;
      return node.propose({ op: "delete_range", delete_range: r, auth: who });
    }),
    Txn: unary<TxnRequest, TxnResponse>(async (r, call) => {
      checkTxn(r, ctx.maxTxnOps);
      const who = authState.enabled ? auth.header(call) : undefined;
      if (!hasWrites(r)) {
        // read-only txns are served like reads (etcd does the same)
        await node.readIndex();
        return node.applier.apply({ op: "txn", txn: r, auth: who });
      }
      return proposeWithinQuota(node, { op: "txn", txn: r, auth: who });
    }),
    Compact: unary<CompactionRequest, CompactionResponse>(async (r) => {
      // Compacted already: refused without a proposal (the compaction point only moves up). A revision above this
      // member's is not refused here: a follower may not have applied yet a revision another member served. The
      // apply, after every entry before it, refuses a future revision, as etcd's does.
      if (Number(r.revision) <= node.store.compactRev) throw Errors.compacted();
      return await node.propose({ op: "compaction", compaction: r });
    }),
  };
}

function hasWrites(t: TxnRequest): boolean {
  for (const op of [...t.success, ...t.failure]) {
    if (op.request === "request_put" || op.request === "request_delete_range") return true;
    if (op.request === "request_txn" && hasWrites(op.request_txn!)) return true;
  }
  return false;
}

function watch(ctx: ServiceContext): grpc.UntypedServiceImplementation {
  return {
    Watch: (call: grpc.ServerDuplexStream<WatchRequest, WatchResponse>) => {
      const stream = ctx.hub.open({
        sendFramed: (head, body) => (call as unknown as ServerCall).writeFramed(head, body),
      });
      call.on("drain", () => stream.drained());
      // a create's permission is checked when it is handled (requests may wait their turn), so that its answer comes
      // in order
      call.on("data", (req: WatchRequest) => {
        try {
          const c = req.create_request;
          stream.request(req, ctx.auth.store.enabled && c ? () => watchPermitted(ctx, call, c) : undefined);
        } catch (err) {
          ctx.log(`watch: request failed: ${err}`);
        }
      });
      const done = () => stream.close();
      call.on("end", () => {
        done();
        call.end();
      });
      call.on("error", done);
      call.on("close", done);
      call.on("cancelled", done);
    },
  };
}

/**
 * etcd's isWatchPermitted: a watch on keys the caller may not read is answered created-and-canceled with the reason
 * (watch ID -1), and the stream goes on.
 */
function watchPermitted(
  ctx: ServiceContext,
  call: grpc.ServerDuplexStream<WatchRequest, WatchResponse>,
  c: WatchCreateRequest,
): boolean {
  try {
    ctx.auth.store.checkRead(ctx.auth.info(call), c);
    return true;
  } catch (err) {
    call.write({
      header: ctx.node.header(ctx.node.store.currentRev),
      watch_id: -1,
      created: true,
      canceled: true,
      cancel_reason: watchCancelReason(err),
    });
    return false;
  }
}

/** etcd's cancel reason: the text of a Go gRPC status error; anything but a token problem is "permission denied". */
function watchCancelReason(err: unknown): string {
  const e = err instanceof EtcdError ? err : Errors.permissionDenied();
  const name = e.code === Code.UNAUTHENTICATED
    ? "Unauthenticated"
    : e.code === Code.INVALID_ARGUMENT
    ? "InvalidArgument"
    : "PermissionDenied";
  const msg = name === "PermissionDenied" ? Errors.permissionDenied().message : e.message;
  return `rpc error: code = ${name} desc = ${msg}`;
}

function lease(ctx: ServiceContext): grpc.UntypedServiceImplementation {
  const { node } = ctx;
  const header = () => node.header(node.store.currentRev);
  return {
    LeaseGrant: unary<LeaseGrantRequest, LeaseGrantResponse>((r) => {
      const id = leaseId(r.ID) === "0" ? ctx.nextLeaseId() : leaseId(r.ID);
      node.lessor.checkGrant(id, Number(r.TTL));
      const TTL = String(node.lessor.grantTTL(Number(r.TTL)));
      return proposeWithinQuota(node, { op: "lease_grant", lease_grant: { TTL, ID: id } });
    }),
    LeaseRevoke: unary<LeaseRevokeRequest, LeaseRevokeResponse>((r, call) => {
      const id = leaseId(r.ID);
      if (!node.lessor.get(id)) throw Errors.leaseNotFound();
      const who = ctx.auth.store.enabled ? ctx.auth.header(call) : undefined;
      return node.propose({ op: "lease_revoke", lease_revoke: { ID: id }, auth: who });
    }),
    LeaseKeepAlive: (call: grpc.ServerDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse>) => {
      call.on("data", async (r: LeaseKeepAliveRequest) => {
        try {
          const id = leaseId(r.ID);
          const { ttl } = await node.lease(id, true);
          call.write({ header: header(), ID: id, TTL: ttl });
        } catch (err) {
          call.destroy(toServiceError(err));
        }
      });
      call.on("end", () => call.end());
      call.on("error", () => {});
    },
    LeaseTimeToLive: unary<LeaseTimeToLiveRequest, LeaseTimeToLiveResponse>(async (r) => {
      await node.readIndex();
      const id = leaseId(r.ID);
      const l = node.lessor.get(id);
      // etcd answers an unknown lease with TTL -1 and an empty header
      if (!l) return { header: {}, ID: id, TTL: -1, grantedTTL: 0, keys: [] };
      const { ttl } = await node.lease(id, false);
      const keys = r.keys ? [...l.keys].sort().map((k) => Buffer.from(k, "latin1")) : [];
      return { header: header(), ID: id, TTL: Math.max(ttl, 0), grantedTTL: l.ttl, keys };
    }),
    LeaseLeases: unary<EmptyRequest, LeaseLeasesResponse>(async () => {
      await node.readIndex();
      return { header: header(), leases: [...node.lessor.leases.keys()].map((ID) => ({ ID })) };
    }),
  };
}

function cluster(ctx: ServiceContext): grpc.UntypedServiceImplementation {
  const { node } = ctx;
  const header = () => node.header(node.store.currentRev);
  const members = () => node.members.list();
  const checkURLs = (urls: string[], except?: string) => {
    if (urls.length === 0 || urls.some((u) => !validUrl(u))) throw Errors.memberBadURLs();
    if (members().some((m) => m.ID !== except && m.peerURLs.some((u) => urls.includes(u)))) {
      throw Errors.peerURLExists();
    }
  };
  const started = (m: { name: string }) => m.name !== "";
  return {
    MemberList: unary<EmptyRequest, MemberListResponse>(() => ({ header: header(), members: members() })),
    MemberAdd: unary<MemberAddRequest, MemberAddResponse>(async (r, call) => {
      ctx.auth.checkAdmin(call);
      const urls = r.peerURLs;
      checkURLs(urls);
      const isLearner = r.isLearner;
      const voters = members().filter((m) => !m.isLearner);
      if (isLearner) {
        if (members().filter((m) => m.isLearner).length >= 1) {
          throw new EtcdError(Code.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster");
        }
      } else if (ctx.strictReconfigCheck) {
        // etcd's strict reconfiguration check: the new quorum must be reachable by the members already started...
        const nstarted = voters.filter(started).length;
        const nmembers = voters.length + 1;
        if (!(nstarted === 1 && nmembers === 2) && nstarted < Math.floor(nmembers / 2) + 1) {
          throw Errors.notEnoughStartedMembers();
        }
        // ...and this member must have been connected to every voter for a while
        if (node.connectedFor(voters.map((m) => m.ID), HEALTH_INTERVAL_MS) !== voters.length) {
          throw Errors.unhealthyCluster();
        }
      }
      const id = memberIdOf(urls, `${Date.now()}`);
      if (node.members.has(id) || node.members.removed.has(id)) throw Errors.memberExists();
      await node.proposeConfChange(
        Node.confChange(isLearner ? ConfChangeType.AddLearnerNode : ConfChangeType.AddNode, id, {
          ID: id,
          peerURLs: urls,
          isLearner,
        }),
      );
      const m = node.members.get(id)!;
      return { header: header(), member: m, members: members() };
    }),
    MemberRemove: unary<MemberIdRequest, MemberListResponse>(async (r, call) => {
      ctx.auth.checkAdmin(call);
      const id = leaseId(r.ID);
      const m = node.members.get(id);
      if (!m) throw Errors.memberNotFound();
      if (!m.isLearner && ctx.strictReconfigCheck) {
        const voters = members().filter((x) => !x.isLearner);
        const nstarted = voters.filter((x) => x.ID !== id && started(x)).length;
        const quorum = Math.floor((voters.length - 1) / 2) + 1;
        if (voters.length - 1 === 0 || nstarted < quorum) throw Errors.notEnoughStartedMembers();
        // removing a member that is down takes nothing from the active quorum; otherwise the members this one has
        // been connected to for a while, less the removed one, must still be a quorum of the remaining voters
        if (id === node.memberId || node.peerConnected(id)) {
          const active = node.connectedFor(voters.map((x) => x.ID), HEALTH_INTERVAL_MS);
          if (active - 1 < quorum) throw Errors.unhealthyCluster();
        }
      }
      await node.proposeConfChange(Node.confChange(ConfChangeType.RemoveNode, id));
      return { header: header(), members: members() };
    }),
    MemberUpdate: unary<MemberUpdateRequest, MemberListResponse>(async (r, call) => {
      ctx.auth.checkAdmin(call);
      const id = leaseId(r.ID);
      if (!node.members.get(id)) throw Errors.memberNotFound();
      const urls = r.peerURLs;
      checkURLs(urls, id);
      await node.proposeConfChange(Node.confChange(ConfChangeType.UpdateNode, id, { peerURLs: urls }));
      return { header: header(), members: members() };
    }),
    MemberPromote: unary<MemberIdRequest, MemberListResponse>(async (r, call) => {
      ctx.auth.checkAdmin(call);
      const id = leaseId(r.ID);
      const m = node.members.get(id);
      if (!m) throw Errors.memberNotFound();
      if (!m.isLearner) throw Errors.memberNotLearner();
      if (!node.learnerInSync(id)) {
        throw new EtcdError(
          Code.FAILED_PRECONDITION,
          "etcdserver: can only promote a learner member which is in sync with leader",
        );
      }
      if (ctx.strictReconfigCheck) {
        // the voters after the promotion must still make a quorum of started members this leader is connected to
        const voters = [...members().filter((x) => !x.isLearner), m];
        const quorum = Math.floor(voters.length / 2) + 1;
        if (voters.filter(started).length < quorum) throw Errors.notEnoughStartedMembers();
        if (node.connectedFor(voters.map((x) => x.ID), HEALTH_INTERVAL_MS) < quorum) throw Errors.unhealthyCluster();
      }
      await node.proposeConfChange(
        Node.confChange(ConfChangeType.AddNode, id, { ID: id, peerURLs: m.peerURLs, isLearner: false }),
      );
      return { header: header(), members: members() };
    }),
  };
}

function validUrl(u: string): boolean {
  try {
    const x = new URL(u);
    return (x.protocol === "http:" || x.protocol === "https:") && x.port !== "" && x.pathname === "/";
  } catch {
    return false;
  }
}

function maintenance(ctx: ServiceContext): grpc.UntypedServiceImplementation {
  const { node } = ctx;
  const header = () => node.header(node.store.currentRev);
  return {
    Alarm: unary<AlarmRequest, AlarmResponse>(async (r) => {
      const alarm: AlarmRequest = {
        action: r.action ?? AlarmAction.GET,
        memberID: leaseId(r.memberID),
        alarm: r.alarm ?? 0,
      };
      if (alarm.action !== AlarmAction.GET) return await node.propose({ op: "alarm", alarm });
      // the list as of now, like every linearizable read (etcd sends even a GET through the log)
      await node.readIndex();
      return node.applier.apply({ op: "alarm", alarm });
    }),
    Status: unary<EmptyRequest, StatusResponse>(() => ({
      header: header(),
      version: ctx.version,
      dbSize: node.store.sizeBytes,
      leader: node.leader,
      raftIndex: node.lastIndex,
      raftTerm: node.term,
      raftAppliedIndex: node.appliedIndex,
      errors: node.applier.alarms.map((a) => `memberID:${a.memberID} alarm:${a.alarm === 1 ? "NOSPACE" : "CORRUPT"} `),
      dbSizeInUse: node.store.sizeBytes,
      isLearner: node.members.get(node.memberId)?.isLearner ?? false,
      dbSizeQuota: ctx.quotaBytes,
    })),
    Defragment: unary<EmptyRequest, HeaderResponse>(async (_r, call) => {
      ctx.auth.checkAdmin(call);
      // Our store has no free pages to reclaim; a snapshot compacts the WAL instead.
      await node.snapshotNow();
      return { header: header() };
    }),
    // the whole applied state (store with its history, leases, alarms, size): members at the same applied index
    // must agree (etcd hashes its whole backend)
    Hash: unary<EmptyRequest, HashResponse>((_r, call) => {
      ctx.auth.checkAdmin(call);
      return { header: header(), hash: stateHash(node.store, node.lessor, node.applier.alarms) };
    }),
    HashKV: unary<HashKVRequest, HashKVResponse>((r, call) => {
      ctx.auth.checkAdmin(call);
      const h = node.store.hashKV(Number(r.revision));
      return { header: header(), hash: h.hash, compact_revision: h.compactRev, hash_revision: h.rev };
    }),
    Snapshot: (call: grpc.ServerWritableStream<EmptyRequest, SnapshotResponse>) => {
      try {
        ctx.auth.checkAdmin(call);
      } catch (err) {
        call.destroy(toServiceError(err));
        return;
      }
      // The snapshot is a bbolt database file with etcd 3.4's bucket layout, so `etcdctl snapshot status` reads it
      // and `etcdctl snapshot restore` turns it into a data dir the real etcd starts from.
      const blob = Buffer.from(encodeEtcdSnapshot(etcdSnapshotInput(node)));
      const sha = createHash("sha256").update(blob).digest();
      const CHUNK = 32 * 1024;
      let off = 0;
      const pump = () => {
        while (off < blob.length) {
          const end = Math.min(off + CHUNK, blob.length);
          const ok = call.write({
            header: header(),
            remaining_bytes: blob.length - end + sha.length,
            blob: blob.subarray(off, end),
          });
          off = end;
          if (!ok) {
            call.once("drain", pump);
            return;
          }
        }
        call.write({ header: header(), remaining_bytes: 0, blob: sha });
        call.end();
      };
      pump();
    },
    MoveLeader: unary<MoveLeaderRequest, HeaderResponse>(async (r) => {
      const target = leaseId(r.targetID);
      if (!node.isLeader) throw Errors.notLeader();
      const m = node.members.get(target);
      if (!m || m.isLearner) throw new EtcdError(Code.FAILED_PRECONDITION, "etcdserver: bad leader transferee");
      if (target !== node.memberId) await node.transferLeadership(target);
      return { header: header() };
    }),
  };
}

function health(): grpc.UntypedServiceImplementation {
  return {
    Check: (_call: unknown, cb: grpc.sendUnaryData<HealthCheckResponse>) => cb(null, { status: ServingStatus.SERVING }),
  };
}

/** Registers every etcd service on a grpc-js server. */
export function addEtcdServices(server: GrpcServer, ctx: ServiceContext): void {
  server.addService(rangeEncodedByHand(KVService), kv(ctx));
  server.addService(WatchService, watch(ctx));
  server.addService(LeaseService, lease(ctx));
  server.addService(ClusterService, cluster(ctx));
  server.addService(MaintenanceService, maintenance(ctx));
  server.addService(AuthService, authService(ctx, unary));
  server.addService(HealthService, health());
}

/** The KV service with Range's responses encoded by hand (server/watch/encode.ts): large ranges are the hot case. */
function rangeEncodedByHand(def: ServiceDefinition): ServiceDefinition {
  const serialize = (v: unknown) => {
    // the value is what the Range handler answered: bytes already encoded, or a response to encode
    const e = v as Partial<EncodedRange>;
    const b = e.encoded ?? encodeRangeResponse(v as RangeResponse);
    const out = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    // the builder's buffer goes back once the transport copied the bytes into frames (or dropped them)
    if (e.release) lendUntilSent(out, e.release);
    return out;
  };
  return { ...def, Range: { ...def.Range, responseSerialize: serialize } };
}
