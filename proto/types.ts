/**
 * Plain TypeScript shapes of the etcd messages, field names as in the .proto. Requests as grpc handlers receive them
 * (int64/uint64 as decimal strings, bytes as Uint8Array/Buffer, every field present). Responses as the server sends
 * them (IDs as decimal strings, counts and revisions as numbers: protobufjs and the hand-written encoders of
 * server/watch/encode.ts take both); fields holding their default value may be left out.
 */

/** RangeRequest.SortOrder values. */
export const SortOrder = { NONE: 0, ASCEND: 1, DESCEND: 2 } as const;
/** RangeRequest.SortTarget values. */
export const SortTarget = { KEY: 0, VERSION: 1, CREATE: 2, MOD: 3, VALUE: 4 } as const;
/** Compare.CompareResult values. */
export const CompareResult = { EQUAL: 0, GREATER: 1, LESS: 2, NOT_EQUAL: 3 } as const;
/** Compare.CompareTarget values. */
export const CompareTarget = { VERSION: 0, CREATE: 1, MOD: 2, VALUE: 3, LEASE: 4 } as const;
/** WatchCreateRequest.FilterType values. */
export const FilterType = { NOPUT: 0, NODELETE: 1 } as const;
/** mvccpb.Event.EventType values. */
export const EventType = { PUT: 0, DELETE: 1 } as const;
/** AlarmType values. */
export const AlarmType = { NONE: 0, NOSPACE: 1, CORRUPT: 2 } as const;
/** AlarmRequest.AlarmAction values. */
export const AlarmAction = { GET: 0, ACTIVATE: 1, DEACTIVATE: 2 } as const;
/** authpb.Permission.Type values. */
export const PermissionType = { READ: 0, WRITE: 1, READWRITE: 2 } as const;
/** grpc.health.v1.HealthCheckResponse.ServingStatus values. */
export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;

/** Numeric value type of one of the enum objects above. */
export type EnumValue<T> = T[keyof T];

/** A message without fields (StatusRequest, MemberListRequest, AuthEnableRequest, ...). */
export type EmptyRequest = Record<string, never>;

/** etcdserverpb.ResponseHeader as sent. */
export interface ResponseHeader {
  cluster_id: string;
  member_id: string;
  revision: number;
  raft_term: string;
}

/** The header of a response inside a TxnResponse: only the revision (a nested txn's: none), as etcd's. */
export interface TxnOpHeader {
  revision?: number;
}

/** mvccpb.KeyValue as sent (a tombstone has create_revision 0). */
export interface KeyValue {
  key: Uint8Array;
  create_revision: number;
  mod_revision: number;
  version: number;
  value: Uint8Array;
  /** lease ID as a decimal string, "0" for none */
  lease: string;
}

/** mvccpb.Event as sent. */
export interface Event {
  type: EnumValue<typeof EventType>;
  kv: KeyValue;
  prev_kv?: KeyValue;
}

/** etcdserverpb.RangeRequest. */
export interface RangeRequest {
  key: Uint8Array;
  range_end: Uint8Array;
  limit: string;
  revision: string;
  sort_order: EnumValue<typeof SortOrder>;
  sort_target: EnumValue<typeof SortTarget>;
  serializable: boolean;
  keys_only: boolean;
  count_only: boolean;
  min_mod_revision: string;
  max_mod_revision: string;
  min_create_revision: string;
  max_create_revision: string;
}

/** etcdserverpb.RangeResponse. */
export interface RangeResponse {
  header: ResponseHeader | TxnOpHeader;
  kvs: KeyValue[];
  more: boolean;
  count: number;
}

/** etcdserverpb.PutRequest. */
export interface PutRequest {
  key: Uint8Array;
  value: Uint8Array;
  lease: string;
  prev_kv: boolean;
  ignore_value: boolean;
  ignore_lease: boolean;
}

/** etcdserverpb.PutResponse. */
export interface PutResponse {
  header: ResponseHeader | TxnOpHeader;
  prev_kv?: KeyValue;
}

/** etcdserverpb.DeleteRangeRequest. */
export interface DeleteRangeRequest {
  key: Uint8Array;
  range_end: Uint8Array;
  prev_kv: boolean;
}

/** etcdserverpb.DeleteRangeResponse. */
export interface DeleteRangeResponse {
  header: ResponseHeader | TxnOpHeader;
  deleted: number;
  prev_kvs?: KeyValue[];
}

/** etcdserverpb.Compare; `target_union` names the oneof member that is set. */
export interface Compare {
  result: EnumValue<typeof CompareResult>;
  target: EnumValue<typeof CompareTarget>;
  key: Uint8Array;
  target_union?: "version" | "create_revision" | "mod_revision" | "value" | "lease";
  version?: string;
  create_revision?: string;
  mod_revision?: string;
  value?: Uint8Array;
  lease?: string;
  range_end: Uint8Array;
}

/** etcdserverpb.RequestOp; `request` names the oneof member that is set. */
export interface RequestOp {
  request?: "request_range" | "request_put" | "request_delete_range" | "request_txn";
  request_range?: RangeRequest;
  request_put?: PutRequest;
  request_delete_range?: DeleteRangeRequest;
  request_txn?: TxnRequest;
}

/** etcdserverpb.ResponseOp as sent: one of the members is set. */
export interface ResponseOp {
  response_range?: RangeResponse;
  response_put?: PutResponse;
  response_delete_range?: DeleteRangeResponse;
  response_txn?: TxnResponse;
}

/** etcdserverpb.TxnRequest. */
export interface TxnRequest {
  compare: Compare[];
  success: RequestOp[];
  failure: RequestOp[];
}

/** etcdserverpb.TxnResponse. */
export interface TxnResponse {
  header: ResponseHeader | TxnOpHeader;
  succeeded: boolean;
  responses: ResponseOp[];
}

/** etcdserverpb.CompactionRequest. */
export interface CompactionRequest {
  revision: string;
  physical: boolean;
}

/** etcdserverpb.CompactionResponse. */
export interface CompactionResponse {
  header: ResponseHeader;
}

/** etcdserverpb.WatchCreateRequest. */
export interface WatchCreateRequest {
  key: Uint8Array;
  range_end: Uint8Array;
  start_revision: string;
  progress_notify: boolean;
  filters: EnumValue<typeof FilterType>[];
  prev_kv: boolean;
  watch_id: string;
  fragment: boolean;
}

/** etcdserverpb.WatchCancelRequest. */
export interface WatchCancelRequest {
  watch_id: string;
}

/** etcdserverpb.WatchRequest; `request_union` names the oneof member that is set. */
export interface WatchRequest {
  request_union?: "create_request" | "cancel_request" | "progress_request";
  create_request?: WatchCreateRequest;
  cancel_request?: WatchCancelRequest;
  progress_request?: Record<string, never>;
}

/** etcdserverpb.WatchResponse. */
export interface WatchResponse {
  header: ResponseHeader;
  /** -1 answers a create the server refused, and a progress notification to the whole stream */
  watch_id: number;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: number;
  cancel_reason?: string;
  fragment?: boolean;
  events?: Event[];
}

/** etcdserverpb.LeaseGrantRequest. */
export interface LeaseGrantRequest {
  TTL: string;
  ID: string;
}

/** etcdserverpb.LeaseGrantResponse. */
export interface LeaseGrantResponse {
  header: ResponseHeader;
  ID: string;
  TTL: number;
  error: string;
}

/** etcdserverpb.LeaseRevokeRequest. */
export interface LeaseRevokeRequest {
  ID: string;
}

/** etcdserverpb.LeaseRevokeResponse. */
export interface LeaseRevokeResponse {
  header: ResponseHeader;
}

/** etcdserverpb.LeaseCheckpoint. */
export interface LeaseCheckpoint {
  ID: string;
  remaining_TTL: string;
}

/** etcdserverpb.LeaseCheckpointRequest. */
export interface LeaseCheckpointRequest {
  checkpoints: LeaseCheckpoint[];
}

/** etcdserverpb.LeaseCheckpointResponse. */
export interface LeaseCheckpointResponse {
  header: ResponseHeader;
}

/** etcdserverpb.LeaseKeepAliveRequest. */
export interface LeaseKeepAliveRequest {
  ID: string;
}

/** etcdserverpb.LeaseKeepAliveResponse. */
export interface LeaseKeepAliveResponse {
  header: ResponseHeader;
  ID: string;
  TTL: number;
}

/** etcdserverpb.LeaseTimeToLiveRequest. */
export interface LeaseTimeToLiveRequest {
  ID: string;
  keys: boolean;
}

/** etcdserverpb.LeaseTimeToLiveResponse. */
export interface LeaseTimeToLiveResponse {
  /** empty for an unknown lease, as etcd's */
  header: ResponseHeader | Record<string, never>;
  ID: string;
  TTL: number;
  grantedTTL: number;
  keys: Uint8Array[];
}

/** etcdserverpb.LeaseLeasesRequest. */
export type LeaseLeasesRequest = Record<string, never>;

/** etcdserverpb.LeaseStatus. */
export interface LeaseStatus {
  ID: string;
}

/** etcdserverpb.LeaseLeasesResponse. */
export interface LeaseLeasesResponse {
  header: ResponseHeader;
  leases: LeaseStatus[];
}

/** etcdserverpb.Member. */
export interface Member {
  ID: string;
  name: string;
  peerURLs: string[];
  clientURLs: string[];
  isLearner: boolean;
}

/** etcdserverpb.MemberListResponse, and the Remove, Update and Promote responses (the members after the change). */
export interface MemberListResponse {
  header: ResponseHeader;
  members: Member[];
}

/** etcdserverpb.MemberAddResponse. */
export interface MemberAddResponse extends MemberListResponse {
  member: Member;
}

/** etcdserverpb.StatusResponse. */
export interface StatusResponse {
  header: ResponseHeader;
  version: string;
  dbSize: number;
  leader: string;
  raftIndex: number;
  raftTerm: number;
  raftAppliedIndex: number;
  errors: string[];
  dbSizeInUse: number;
  isLearner: boolean;
  dbSizeQuota: number;
}

/** etcdserverpb.DefragmentResponse and MoveLeaderResponse. */
export interface HeaderResponse {
  header: ResponseHeader;
}

/** etcdserverpb.HashResponse. */
export interface HashResponse {
  header: ResponseHeader;
  hash: number;
}

/** etcdserverpb.HashKVResponse. */
export interface HashKVResponse {
  header: ResponseHeader;
  hash: number;
  compact_revision: number;
  hash_revision: number;
}

/** etcdserverpb.SnapshotResponse: one chunk of the snapshot stream. */
export interface SnapshotResponse {
  header: ResponseHeader;
  remaining_bytes: number;
  blob: Uint8Array;
}

/** grpc.health.v1.HealthCheckResponse. */
export interface HealthCheckResponse {
  status: EnumValue<typeof ServingStatus>;
}

/** etcdserverpb.MemberAddRequest. */
export interface MemberAddRequest {
  peerURLs: string[];
  isLearner: boolean;
}

/** etcdserverpb.MemberRemoveRequest and MemberPromoteRequest. */
export interface MemberIdRequest {
  ID: string;
}

/** etcdserverpb.MemberUpdateRequest. */
export interface MemberUpdateRequest {
  ID: string;
  peerURLs: string[];
}

/** etcdserverpb.HashKVRequest. */
export interface HashKVRequest {
  revision: string;
}

/** etcdserverpb.MoveLeaderRequest. */
export interface MoveLeaderRequest {
  targetID: string;
}

/** etcdserverpb.AuthenticateRequest. */
export interface AuthenticateRequest {
  name: string;
  password: string;
}

/** etcdserverpb.AuthUserAddRequest. */
export interface AuthUserAddRequest {
  name: string;
  password: string;
  options: { no_password: boolean } | null;
  hashedPassword: string;
}

/** etcdserverpb.AuthUserGetRequest, AuthUserDeleteRequest and AuthRoleAddRequest. */
export interface AuthNameRequest {
  name: string;
}

/** etcdserverpb.AuthRoleGetRequest and AuthRoleDeleteRequest. */
export interface AuthRoleRequest {
  role: string;
}

/** etcdserverpb.AuthUserChangePasswordRequest. */
export interface AuthUserChangePasswordRequest {
  name: string;
  password: string;
  hashedPassword: string;
}

/** etcdserverpb.AuthUserGrantRoleRequest. */
export interface AuthUserGrantRoleRequest {
  user: string;
  role: string;
}

/** etcdserverpb.AuthUserRevokeRoleRequest. */
export interface AuthUserRevokeRoleRequest {
  name: string;
  role: string;
}

/** etcdserverpb.AuthStatusResponse. */
export interface AuthStatusResponse {
  header: ResponseHeader;
  enabled: boolean;
  authRevision: number;
}

/**
 * The answer to an auth change of the log (etcdserverpb.AuthEnableResponse, AuthUserAddResponse, ...): a header, and
 * for Authenticate (AuthenticateResponse) the token.
 */
export interface AuthResponse {
  header: ResponseHeader;
  token?: string;
}

/** etcdserverpb.AuthUserGetResponse. */
export interface AuthUserGetResponse {
  header: ResponseHeader;
  roles: string[];
}

/** etcdserverpb.AuthUserListResponse. */
export interface AuthUserListResponse {
  header: ResponseHeader;
  users: string[];
}

/** etcdserverpb.AuthRoleGetResponse. */
export interface AuthRoleGetResponse {
  header: ResponseHeader;
  perm: Permission[];
}

/** etcdserverpb.AuthRoleListResponse. */
export interface AuthRoleListResponse {
  header: ResponseHeader;
  roles: string[];
}

/** authpb.Permission. */
export interface Permission {
  /** a PermissionType value */
  permType: number;
  key: Uint8Array;
  range_end: Uint8Array;
}

/** etcdserverpb.AuthRoleGrantPermissionRequest. */
export interface AuthRoleGrantPermissionRequest {
  name: string;
  perm: Permission | null;
}

/** etcdserverpb.AuthRoleRevokePermissionRequest. */
export interface AuthRoleRevokePermissionRequest {
  role: string;
  key: Uint8Array;
  range_end: Uint8Array;
}

/** etcdserverpb.AlarmRequest. */
export interface AlarmRequest {
  action: EnumValue<typeof AlarmAction>;
  memberID: string;
  alarm: EnumValue<typeof AlarmType>;
}

/** etcdserverpb.AlarmMember: a raised alarm. */
export interface AlarmMember {
  memberID: string;
  /** an AlarmType value */
  alarm: number;
}

/** etcdserverpb.AlarmResponse. */
export interface AlarmResponse {
  header: ResponseHeader;
  alarms: AlarmMember[];
}

/** egpb.Request: one replicated log entry; `op` names the oneof member that is set. */
export interface InternalRequestShape {
  id: string;
  op?:
    | "put"
    | "delete_range"
    | "txn"
    | "compaction"
    | "lease_grant"
    | "lease_revoke"
    | "alarm"
    | "lease_checkpoint"
    | "member_attributes"
    | AuthOp;
  /** who asked, when auth is enabled */
  auth?: AuthHeader | null;
  put?: PutRequest;
  delete_range?: DeleteRangeRequest;
  txn?: TxnRequest;
  compaction?: CompactionRequest;
  lease_grant?: LeaseGrantRequest;
  lease_revoke?: LeaseRevokeRequest;
  alarm?: AlarmRequest;
  lease_checkpoint?: LeaseCheckpointRequest;
  member_attributes?: MemberAttributes;
  authenticate?: { name: string; simple_token: string; issued_ms: string | number };
  /** the oneof member that makes the entry an auth_enable / auth_disable (empty messages) */
  auth_enable?: Record<string, never>;
  auth_disable?: Record<string, never>;
  auth_user_add?: {
    name: string;
    password?: string;
    hashedPassword: string;
    options?: { no_password: boolean } | null;
  };
  auth_user_delete?: { name: string };
  auth_user_change_password?: { name: string; password?: string; hashedPassword: string };
  auth_user_grant_role?: { user: string; role: string };
  auth_user_revoke_role?: { name: string; role: string };
  auth_role_add?: { name: string };
  auth_role_delete?: { role: string };
  auth_role_grant_permission?: {
    name: string;
    perm: { permType: number; key: Uint8Array; range_end: Uint8Array } | null;
  };
  auth_role_revoke_permission?: { role: string; key: Uint8Array; range_end: Uint8Array };
}

/** An InternalRequest as a member proposes it: the member gives it its ID (Node.propose). */
export type InternalRequestBody = Omit<InternalRequestShape, "id">;

/** The auth requests of the log (their fields in InternalRequestShape have the same names). */
export type AuthOp =
  | "auth_enable"
  | "auth_disable"
  | "authenticate"
  | "auth_user_add"
  | "auth_user_delete"
  | "auth_user_change_password"
  | "auth_user_grant_role"
  | "auth_user_revoke_role"
  | "auth_role_add"
  | "auth_role_delete"
  | "auth_role_grant_permission"
  | "auth_role_revoke_permission";

/** egpb.AuthHeader: the user a request is made as and the auth revision it was checked against. */
export interface AuthHeader {
  username: string;
  revision: string | number;
}

/** egpb.MemberAttributes: a member's name and client URLs, published once it started. */
export interface MemberAttributes {
  member_id: string;
  name: string;
  client_urls: string[];
}

/** The response each request of the log answers, by its oneof name (`op`). */
export type InternalResponses =
  & {
    put: PutResponse;
    delete_range: DeleteRangeResponse;
    txn: TxnResponse;
    compaction: CompactionResponse;
    lease_grant: LeaseGrantResponse;
    lease_revoke: LeaseRevokeResponse;
    alarm: AlarmResponse;
    lease_checkpoint: LeaseCheckpointResponse;
    member_attributes: Record<string, never>;
  }
  & Record<AuthOp, AuthResponse>;

/** The response of a request of the log. */
export type InternalResponse = InternalResponses[keyof InternalResponses];

/** A request of the log whose oneof member is `Op`. */
export type InternalRequestOf<Op extends keyof InternalResponses> = InternalRequestBody & { op: Op };

/** egpb.SnapshotChunk: the first of a snapshot's chunks carries its Snap message, the following ones its data. */
export interface SnapshotChunk {
  message: Uint8Array;
  data: Uint8Array;
}

/** egpb.RaftAck: the answer to a peer stream (no fields). */
export type RaftAck = Record<string, never>;
