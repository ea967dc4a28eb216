/**
 * etcdserverpb.Auth: enabling and disabling auth, Authenticate, and the user and role RPCs. Changes are proposed to
 * the log with the caller's user (the apply checks that it has the root role once auth is enabled, as etcd's
 * authApplierV3 does); passwords are hashed here, before proposing; reads are answered from the applied state after
 * a read index, with etcd's rule that a user may read itself and the roles it has.
 */
import type * as grpc from "@grpc/grpc-js";
import type {
  AuthenticateRequest,
  AuthNameRequest,
  AuthOp,
  AuthResponse,
  AuthRoleGetResponse,
  AuthRoleGrantPermissionRequest,
  AuthRoleListResponse,
  AuthRoleRequest,
  AuthRoleRevokePermissionRequest,
  AuthStatusResponse,
  AuthUserAddRequest,
  AuthUserChangePasswordRequest,
  AuthUserGetResponse,
  AuthUserGrantRoleRequest,
  AuthUserListResponse,
  AuthUserRevokeRoleRequest,
  EmptyRequest,
  InternalRequestOf,
} from "../../proto/mod.ts";
import type { ServiceContext } from "../grpc/services.ts";
import type { CallCredentials } from "./gate.ts";
import { AuthErrors } from "./errors.ts";
import { type AuthInfo, permOut } from "./store.ts";

type Call = CallCredentials;
/** services.ts's unary: `Req` and `Res` name the shapes of the request and response messages (proto/types.ts) */
type Wrap = <Req, Res>(
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
) => grpc.handleUnaryCall<Req, Res>;

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The Auth service of a member; `unary` wraps handlers as the other services do. */
export function authService(ctx: ServiceContext, unary: Wrap): grpc.UntypedServiceImplementation {
  const { node, auth } = ctx;
  const store = auth.store;
  const header = () => node.header(node.store.currentRev);
  /** proposes an auth change made by the caller */
  const propose = <Op extends AuthOp>(call: Call, req: InternalRequestOf<Op>): Promise<AuthResponse> =>
    node.propose({ ...req, auth: store.enabled ? auth.header(call) : undefined });
  /** the caller, for the reads only root or the user itself may make; null when auth is off */
  const reader = async (call: Call): Promise<AuthInfo | null> => {
    const ai = store.enabled ? auth.info(call) : null;
    await node.readIndex();
    return ai;
  };
  /** answers admin requests early, before any bcrypt work (the apply checks again) */
  const admin = (call: Call) => auth.checkAdmin(call);

  return {
    AuthEnable: unary<EmptyRequest, AuthResponse>((_r, call) => propose(call, { op: "auth_enable", auth_enable: {} })),
    AuthDisable: unary<EmptyRequest, AuthResponse>((_r, call) =>
      propose(call, { op: "auth_disable", auth_disable: {} })
    ),
    AuthStatus: unary<EmptyRequest, AuthStatusResponse>(async () => {
      await node.readIndex();
      return { header: header(), enabled: store.enabled, authRevision: store.revision };
    }),
    Authenticate: unary<AuthenticateRequest, AuthResponse>(async (r) => {
      await node.readIndex();
      // etcd's optimistic loop: the password is checked against one auth revision; if users changed before the
      // token was made, check again
      for (;;) {
        const name = r.name;
        const checked = await auth.checkPassword(name, r.password);
        const resp = await node.propose({
          op: "authenticate",
          authenticate: { name, simple_token: auth.tokens.prefix(), issued_ms: Date.now() },
        });
        if (checked !== store.revision) continue;
        // a JWT is signed here, by the member that answers, for the auth revision the password was checked at
        if (!resp.token) resp.token = auth.tokens.sign(name, checked);
        return resp;
      }
    }),
    UserAdd: unary<AuthUserAddRequest, AuthResponse>(async (r, call) => {
      admin(call);
      if (!r.name) throw AuthErrors.userEmpty();
      const noPassword = !!r.options?.no_password;
      const hashedPassword = noPassword ? "" : (r.hashedPassword || await auth.hash(r.password));
      return propose(call, {
        op: "auth_user_add",
        auth_user_add: { name: r.name, hashedPassword, options: { no_password: noPassword } },
      });
    }),
    UserGet: unary<AuthNameRequest, AuthUserGetResponse>(async (r, call) => {
      const ai = await reader(call);
      if (store.enabled && r.name !== ai?.username) store.checkAdmin(ai);
      const u = store.users.get(r.name);
      if (!u) throw AuthErrors.userNotFound();
      return { header: header(), roles: [...u.roles] };
    }),
    UserList: unary<EmptyRequest, AuthUserListResponse>(async (_r, call) => {
      store.checkAdmin(await reader(call));
      return { header: header(), users: [...store.users.keys()].sort(byName) };
    }),
    UserDelete: unary<AuthNameRequest, AuthResponse>((r, call) =>
      propose(call, { op: "auth_user_delete", auth_user_delete: { name: r.name } })
    ),
    UserChangePassword: unary<AuthUserChangePasswordRequest, AuthResponse>(async (r, call) => {
      admin(call);
      if (!store.users.has(r.name)) throw AuthErrors.userNotFound(); // before the bcrypt work (the apply checks again)
      const hashedPassword = r.hashedPassword || await auth.hash(r.password);
      return propose(call, {
        op: "auth_user_change_password",
        auth_user_change_password: { name: r.name, hashedPassword },
      });
    }),
    UserGrantRole: unary<AuthUserGrantRoleRequest, AuthResponse>((r, call) =>
      propose(call, { op: "auth_user_grant_role", auth_user_grant_role: { user: r.user, role: r.role } })
    ),
    UserRevokeRole: unary<AuthUserRevokeRoleRequest, AuthResponse>((r, call) =>
      propose(call, { op: "auth_user_revoke_role", auth_user_revoke_role: { name: r.name, role: r.role } })
    ),
    RoleAdd: unary<AuthNameRequest, AuthResponse>((r, call) =>
      propose(call, { op: "auth_role_add", auth_role_add: { name: r.name } })
    ),
    RoleGet: unary<AuthRoleRequest, AuthRoleGetResponse>(async (r, call) => {
      const ai = await reader(call);
      if (store.enabled && !(ai && store.hasRole(ai.username, r.role))) store.checkAdmin(ai);
      const role = store.roles.get(r.role);
      if (!role) throw AuthErrors.roleNotFound();
      return { header: header(), perm: role.perms.map(permOut) };
    }),
    RoleList: unary<EmptyRequest, AuthRoleListResponse>(async (_r, call) => {
      store.checkAdmin(await reader(call));
      return { header: header(), roles: [...store.roles.keys()].sort(byName) };
    }),
    RoleDelete: unary<AuthRoleRequest, AuthResponse>((r, call) =>
      propose(call, { op: "auth_role_delete", auth_role_delete: { role: r.role } })
    ),
    RoleGrantPermission: unary<AuthRoleGrantPermissionRequest, AuthResponse>((r, call) =>
      propose(call, {
        op: "auth_role_grant_permission",
        auth_role_grant_permission: { name: r.name, perm: r.perm },
      })
    ),
    RoleRevokePermission: unary<AuthRoleRevokePermissionRequest, AuthResponse>((r, call) =>
      propose(call, {
        op: "auth_role_revoke_permission",
        auth_role_revoke_permission: { role: r.role, key: r.key, range_end: r.range_end },
      })
    ),
  };
}
