/** The auth errors etcd 3.4 sends clients (rpctypes), with their gRPC codes and exact messages. */
import { Code, Errors, EtcdError } from "../errors.ts";

const e = (code: number, msg: string) => new EtcdError(code, msg);

/** etcd's auth errors, by the name its auth package gives them. */
export const AuthErrors = {
  rootUserNotExist: () => e(Code.FAILED_PRECONDITION, "etcdserver: root user does not exist"),
  rootRoleNotExist: () => e(Code.FAILED_PRECONDITION, "etcdserver: root user does not have root role"),
  userAlreadyExist: () => e(Code.FAILED_PRECONDITION, "etcdserver: user name already exists"),
  userEmpty: () => e(Code.INVALID_ARGUMENT, "etcdserver: user name is empty"),
  userNotFound: () => e(Code.FAILED_PRECONDITION, "etcdserver: user name not found"),
  roleAlreadyExist: () => e(Code.FAILED_PRECONDITION, "etcdserver: role name already exists"),
  roleNotFound: () => e(Code.FAILED_PRECONDITION, "etcdserver: role name not found"),
  roleEmpty: () => e(Code.INVALID_ARGUMENT, "etcdserver: role name is empty"),
  authFailed: () => e(Code.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"),
  /** etcd has no gRPC mapping for this one: it reaches clients as Unknown with the auth package's text */
  noPasswordUser: () => e(Code.UNKNOWN, "auth: authentication failed, password was given for no password user"),
  permissionDenied: Errors.permissionDenied,
  roleNotGranted: () => e(Code.FAILED_PRECONDITION, "etcdserver: role is not granted to the user"),
  permissionNotGranted: () => e(Code.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role"),
  authNotEnabled: Errors.authNotEnabled,
  invalidAuthToken: () => e(Code.UNAUTHENTICATED, "etcdserver: invalid auth token"),
  invalidAuthMgmt: () => e(Code.INVALID_ARGUMENT, "etcdserver: invalid auth management"),
  authOldRevision: () => e(Code.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"),
} as const;
