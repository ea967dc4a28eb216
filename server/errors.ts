/**
 * Errors that reach clients: each carries the gRPC status code and etcd's exact message, since etcd clients match on
 * the message string (see ../shared/reference/etcd-api.md §2.2).
 */

import { Status } from "./transport/grpc_server.ts";

/** gRPC status codes (the transport's table). */
export const Code = Status;

/** An error with a gRPC code and the message etcd sends for it. */
export class EtcdError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
    this.name = "EtcdError";
  }
}

const e = (code: number, msg: string) => new EtcdError(code, msg);

/** etcd's client-visible errors, by the name etcd's rpctypes gives them. */
export const Errors = {
  emptyKey: () => e(Code.INVALID_ARGUMENT, "etcdserver: key is not provided"),
  keyNotFound: () => e(Code.INVALID_ARGUMENT, "etcdserver: key not found"),
  valueProvided: () => e(Code.INVALID_ARGUMENT, "etcdserver: value is provided"),
  leaseProvided: () => e(Code.INVALID_ARGUMENT, "etcdserver: lease is provided"),
  tooManyOps: () => e(Code.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
  duplicateKey: () => e(Code.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
  invalidSortOption: () => e(Code.INVALID_ARGUMENT, "etcdserver: invalid sort option"),
  requestTooLarge: () => e(Code.INVALID_ARGUMENT, "etcdserver: request is too large"),
  memberBadURLs: () => e(Code.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid"),
  compacted: () => e(Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
  futureRev: () => e(Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
  leaseTTLTooLarge: () => e(Code.OUT_OF_RANGE, "etcdserver: too large lease TTL"),
  noSpace: () => e(Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
  tooManyRequests: () => e(Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests"),
  leaseNotFound: () => e(Code.NOT_FOUND, "etcdserver: requested lease not found"),
  memberNotFound: () => e(Code.NOT_FOUND, "etcdserver: member not found"),
  leaseExists: () => e(Code.FAILED_PRECONDITION, "etcdserver: lease already exists"),
  memberExists: () => e(Code.FAILED_PRECONDITION, "etcdserver: member ID already exist"),
  peerURLExists: () => e(Code.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists"),
  notEnoughStartedMembers: () =>
    e(Code.FAILED_PRECONDITION, "etcdserver: re-configuration failed due to not enough started members"),
  memberNotLearner: () => e(Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"),
  notLeader: () => e(Code.FAILED_PRECONDITION, "etcdserver: not leader"),
  authNotEnabled: () => e(Code.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"),
  permissionDenied: () => e(Code.PERMISSION_DENIED, "etcdserver: permission denied"),
  noLeader: () => e(Code.UNAVAILABLE, "etcdserver: no leader"),
  timeout: () => e(Code.UNAVAILABLE, "etcdserver: request timed out"),
  timeoutDueToLeaderFail: () =>
    e(Code.UNAVAILABLE, "etcdserver: request timed out, possibly due to previous leader failure"),
  stopped: () => e(Code.UNAVAILABLE, "etcdserver: server stopped"),
  unhealthyCluster: () => e(Code.UNAVAILABLE, "etcdserver: unhealthy cluster"),
  corrupt: () => e(Code.DATA_LOSS, "etcdserver: corrupt cluster"),
  canceled: () => e(Code.CANCELLED, "etcdserver: request canceled"),
} as const;
