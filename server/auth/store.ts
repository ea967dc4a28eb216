/**
 * etcd 3.4's auth state, part of the replicated state machine: users (bcrypt password hashes, roles), roles (key
 * permissions), whether auth is enabled, and the auth revision that every change of users or roles raises. It changes
 * only by applying log entries, the same on every member; the API layer reads it to check the requests it serves, and
 * the apply checks the requests of the log again with the user and revision they carry (etcd's authApplierV3).
 *
 * Keys are store keys (latin1 strings, see mvcc/keys.ts). A user's permissions are merged per user into sorted,
 * disjoint read and write intervals whenever users or roles change (etcd's range permission cache).
 */
import { Buffer } from "node:buffer";
import { type RangeEnd, rangeEndOf, toBKey } from "../mvcc/keys.ts";
import type { Lessor } from "../lease/lessor.ts";
import {
  type AuthHeader,
  type AuthResponse,
  type InternalRequestBody,
  type Permission as PermissionMessage,
  PermissionType,
  type RequestOp,
} from "../../proto/mod.ts";
import { AuthErrors } from "./errors.ts";

/** The user and the role that may do anything once auth is enabled. */
export const ROOT = "root";

/** A user: name, bcrypt hash of the password ("" for a no-password user), sorted role names. */
export interface User {
  name: string;
  hash: string;
  roles: string[];
  noPassword: boolean;
}

/** Access to one key (rangeEnd "") or a range [key, rangeEnd) (rangeEnd "\0": every key from key on). */
export interface Permission {
  permType: number;
  key: string;
  rangeEnd: string;
}

/** A role: its permissions sorted by key. */
export interface Role {
  name: string;
  perms: Permission[];
}

/** Who a request is made as, and the auth revision the credentials were checked against. */
export interface AuthInfo {
  username: string;
  revision: number;
}

/** [start, end) of store keys; end null: no end. */
type Interval = [string, string | null];

/** A user's permissions merged into disjoint sorted intervals. */
interface Merged {
  read: Interval[];
  write: Interval[];
}

/** Serialized form (snapshots). */
export interface AuthState {
  enabled: boolean;
  revision: number;
  users: User[];
  roles: Role[];
}

/**
 * Turns a successful Authenticate entry into this member's token for the user ("" when the token is made by the
 * member that answers, as JWTs are).
 */
export type TokenAssigner = (username: string, revision: number, simpleToken: string, issuedMs: number) => string;

/** Listens to changes that invalidate tokens. */
export interface TokenInvalidation {
  /** auth was enabled or disabled: every token is void */
  reset(): void;
  /** a user was deleted or changed its password */
  invalidateUser(name: string): void;
}

/** What an auth entry answers besides the header: Authenticate's token. */
type AuthResult = Omit<AuthResponse, "header">;

const ADMIN_OPS = new Set([
  "auth_enable",
  "auth_disable",
  "auth_user_add",
  "auth_user_delete",
  "auth_user_change_password",
  "auth_user_grant_role",
  "auth_user_revoke_role",
  "auth_role_add",
  "auth_role_delete",
  "auth_role_grant_permission",
  "auth_role_revoke_permission",
]);

/** The auth state machine. */
export class AuthStore {
  enabled = false;
  /** raised by every change of users, roles and by disabling (etcd starts at 1) */
  revision = 1;
  readonly users = new Map<string, User>();
  readonly roles = new Map<string, Role>();
  #merged = new Map<string, Merged>();
  /** makes tokens on Authenticate (set by the server; the default refuses) */
  assignToken: TokenAssigner = () => "";
  /** told when tokens become void */
  tokens: TokenInvalidation | null = null;

  /** Applies an auth entry; returns the response fields besides the header. */
  apply(req: InternalRequestBody): AuthResult {
    switch (req.op) {
      case "auth_enable":
        return this.#enable();
      case "auth_disable":
        if (this.enabled) {
          this.enabled = false;
          this.revision++;
          this.tokens?.reset();
        }
        return {};
      case "authenticate": {
        const a = req.authenticate!;
        if (!this.enabled) throw AuthErrors.authNotEnabled();
        const u = this.users.get(a.name);
        if (!u || u.noPassword) throw AuthErrors.authFailed();
        return { token: this.assignToken(a.name, this.revision, a.simple_token, Number(a.issued_ms)) };
      }
      case "auth_user_add": {
        const r = req.auth_user_add!;
        if (r.name === "") throw AuthErrors.userEmpty();
        if (this.users.has(r.name)) throw AuthErrors.userAlreadyExist();
        const noPassword = !!r.options?.no_password;
        this.users.set(r.name, { name: r.name, hash: noPassword ? "" : r.hashedPassword, roles: [], noPassword });
        return this.#changed();
      }
      case "auth_user_delete": {
        const name = req.auth_user_delete!.name;
        if (this.enabled && name === ROOT) throw AuthErrors.invalidAuthMgmt();
        if (!this.users.delete(name)) throw AuthErrors.userNotFound();
        this.tokens?.invalidateUser(name);
        return this.#changed();
      }
      case "auth_user_change_password": {
        const r = req.auth_user_change_password!;
        const u = this.users.get(r.name);
        if (!u) throw AuthErrors.userNotFound();
        u.hash = r.hashedPassword;
        this.tokens?.invalidateUser(r.name);
        return this.#changed();
      }
      case "auth_user_grant_role": {
        const r = req.auth_user_grant_role!;
        const u = this.users.get(r.user);
        if (!u) throw AuthErrors.userNotFound();
        if (r.role !== ROOT && !this.roles.has(r.role)) throw AuthErrors.roleNotFound();
        if (u.roles.includes(r.role)) return {};
        u.roles = [...u.roles, r.role].sort();
        return this.#changed();
      }
      case "auth_user_revoke_role": {
        const r = req.auth_user_revoke_role!;
        if (this.enabled && r.name === ROOT && r.role === ROOT) throw AuthErrors.invalidAuthMgmt();
        const u = this.users.get(r.name);
        if (!u) throw AuthErrors.userNotFound();
        if (!u.roles.includes(r.role)) throw AuthErrors.roleNotGranted();
        u.roles = u.roles.filter((x) => x !== r.role);
        return this.#changed();
      }
      case "auth_role_add": {
        const name = req.auth_role_add!.name;
        if (name === "") throw AuthErrors.roleEmpty();
        if (this.roles.has(name)) throw AuthErrors.roleAlreadyExist();
        this.roles.set(name, { name, perms: [] });
        return this.#changed();
      }
      case "auth_role_delete": {
        const name = req.auth_role_delete!.role;
        if (this.enabled && name === ROOT) throw AuthErrors.invalidAuthMgmt();
        if (!this.roles.delete(name)) throw AuthErrors.roleNotFound();
        for (const u of this.users.values()) u.roles = u.roles.filter((x) => x !== name);
        return this.#changed();
      }
      case "auth_role_grant_permission": {
        const r = req.auth_role_grant_permission!;
        const role = this.roles.get(r.name);
        if (!role) throw AuthErrors.roleNotFound();
        const p: Permission = {
          permType: r.perm?.permType ?? PermissionType.READ,
          key: toBKey(r.perm?.key),
          rangeEnd: toBKey(r.perm?.range_end),
        };
        const same = role.perms.find((x) => x.key === p.key && x.rangeEnd === p.rangeEnd);
        if (same) same.permType = p.permType;
        else role.perms = [...role.perms, p].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
        return this.#changed();
      }
      case "auth_role_revoke_permission": {
        const r = req.auth_role_revoke_permission!;
        const role = this.roles.get(r.role);
        if (!role) throw AuthErrors.roleNotFound();
        const key = toBKey(r.key), end = toBKey(r.range_end);
        const kept = role.perms.filter((x) => x.key !== key || x.rangeEnd !== end);
        if (kept.length === role.perms.length) throw AuthErrors.permissionNotGranted();
        role.perms = kept;
        return this.#changed();
      }
      default:
        throw new Error(`auth: not an auth request ${JSON.stringify(req.op)}`);
    }
  }

  #enable(): AuthResult {
    if (this.enabled) return {};
    const root = this.users.get(ROOT);
    if (!root) throw AuthErrors.rootUserNotExist();
    if (!root.roles.includes(ROOT)) throw AuthErrors.rootRoleNotExist();
    this.enabled = true;
    this.tokens?.reset();
    this.#remerge();
    return {};
  }

  #changed(): AuthResult {
    this.revision++;
    this.#remerge();
    return {};
  }

  #remerge(): void {
    this.#merged.clear();
    for (const u of this.users.values()) this.#merged.set(u.name, this.#merge(u));
  }

  #merge(u: User): Merged {
    const read: Interval[] = [], write: Interval[] = [];
    for (const name of u.roles) {
      for (const p of this.roles.get(name)?.perms ?? []) {
        const ivl: Interval = p.rangeEnd === ""
          ? [p.key, p.key + "\0"]
          : [p.key, p.rangeEnd === "\0" ? null : p.rangeEnd];
        if (p.permType === PermissionType.READ || p.permType === PermissionType.READWRITE) read.push(ivl);
        if (p.permType === PermissionType.WRITE || p.permType === PermissionType.READWRITE) write.push(ivl);
      }
    }
    return { read: union(read), write: union(write) };
  }

  /** Whether the user has the root role. */
  isRoot(name: string): boolean {
    return this.users.get(name)?.roles.includes(ROOT) ?? false;
  }

  /** Whether the user has the role. */
  hasRole(name: string, role: string): boolean {
    return this.users.get(name)?.roles.includes(role) ?? false;
  }

  /** etcd's IsAdminPermitted: nothing to check when auth is off; otherwise the user must have the root role. */
  checkAdmin(ai: AuthInfo | null): void {
    if (!this.enabled) return;
    if (!ai || ai.username === "") throw AuthErrors.userEmpty();
    const u = this.users.get(ai.username);
    if (!u) throw AuthErrors.userNotFound();
    if (!u.roles.includes(ROOT)) throw AuthErrors.permissionDenied();
  }

  /**
   * etcd's isOpPermitted: may `ai` read (write) the key (end "") or the range [key, end) (end null: to the last key)?
   * Throws the error etcd answers otherwise.
   */
  check(ai: AuthInfo | null, key: string, end: RangeEnd, write: boolean): void {
    if (!this.enabled) return;
    if (!ai || ai.revision === 0) throw AuthErrors.userEmpty();
    if (ai.revision < this.revision) throw AuthErrors.authOldRevision();
    const u = this.users.get(ai.username);
    if (!u) throw AuthErrors.permissionDenied();
    if (u.roles.includes(ROOT)) return;
    const m = this.#merged.get(u.name);
    const ivls = m ? (write ? m.write : m.read) : [];
    const want: Interval = end === "" ? [key, key + "\0"] : [key, end];
    if (!covers(ivls, want)) throw AuthErrors.permissionDenied();
  }

  /** Checks a RangeRequest-like (key, range_end) for reading. */
  checkRead(ai: AuthInfo | null, r: { key?: Uint8Array; range_end?: Uint8Array }): void {
    this.check(ai, toBKey(r.key), rangeEndOf(r.range_end), false);
  }

  /** The permission checks etcd's authApplierV3 makes of a log entry (or a read-only txn) before applying it. */
  checkRequest(req: InternalRequestBody, lessor: Lessor): void {
    const h = req.auth;
    if (!h) return; // a member's own request (lease expiry, compaction, attributes)
    const ai: AuthInfo = { username: h.username, revision: Number(h.revision) };
    if (ADMIN_OPS.has(req.op!)) return this.checkAdmin(ai);
    switch (req.op) {
      case "put":
        return this.#checkPut(ai, req.put!, lessor);
      case "delete_range": {
        const d = req.delete_range!;
        this.check(ai, toBKey(d.key), rangeEndOf(d.range_end), true);
        if (d.prev_kv) this.checkRead(ai, d);
        return;
      }
      case "txn":
        return this.#checkTxn(ai, req.txn!, lessor);
      case "lease_revoke":
        return this.#checkLeaseKeys(ai, String(req.lease_revoke!.ID), lessor);
    }
  }

  #checkPut(ai: AuthInfo, p: { key: Uint8Array; lease?: string | number; prev_kv?: boolean }, lessor: Lessor) {
    this.check(ai, toBKey(p.key), "", true);
    this.#checkLeaseKeys(ai, String(p.lease ?? "0"), lessor);
    if (p.prev_kv) this.check(ai, toBKey(p.key), "", false);
  }

  #checkLeaseKeys(ai: AuthInfo, id: string, lessor: Lessor): void {
    if (id === "0") return;
    for (const k of lessor.get(id)?.keys ?? []) this.check(ai, k, "", true);
  }

  #checkTxn(
    ai: AuthInfo,
    t: { compare: { key: Uint8Array; range_end: Uint8Array }[]; success: RequestOp[]; failure: RequestOp[] },
    lessor: Lessor,
  ): void {
    for (const c of t.compare) this.checkRead(ai, c);
    for (const op of [...t.success, ...t.failure]) {
      switch (op.request) {
        case "request_range":
          this.checkRead(ai, op.request_range!);
          break;
        case "request_put":
          this.#checkPut(ai, op.request_put!, lessor);
          break;
        case "request_delete_range": {
          const d = op.request_delete_range!;
          if (d.prev_kv) this.checkRead(ai, d);
          this.check(ai, toBKey(d.key), rangeEndOf(d.range_end), true);
          break;
        }
        case "request_txn":
          this.#checkTxn(ai, op.request_txn!, lessor);
          break;
      }
    }
  }

  /** The state for a snapshot. */
  toJSON(): AuthState {
    return {
      enabled: this.enabled,
      revision: this.revision,
      users: [...this.users.values()],
      roles: [...this.roles.values()],
    };
  }

  /** Replaces the state with a snapshot's. */
  restore(s: AuthState | null): void {
    this.users.clear();
    this.roles.clear();
    this.enabled = s?.enabled ?? false;
    this.revision = s?.revision ?? 1;
    for (const u of s?.users ?? []) this.users.set(u.name, { ...u, roles: [...u.roles] });
    for (const r of s?.roles ?? []) this.roles.set(r.name, { name: r.name, perms: r.perms.map((p) => ({ ...p })) });
    this.#remerge();
  }
}

/** Whether an entry is an auth request of the log. */
export function isAuthOp(op: string | undefined): boolean {
  return op !== undefined && (op === "authenticate" || ADMIN_OPS.has(op));
}

/** The union of intervals as sorted disjoint intervals. */
function union(ivls: Interval[]): Interval[] {
  const sorted = ivls.filter(([s, e]) => e === null || s < e).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: Interval[] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && (last[1] === null || s <= last[1])) {
      if (last[1] !== null && (e === null || e > last[1])) last[1] = e;
    } else out.push([s, e]);
  }
  return out;
}

/** Whether one of the disjoint intervals holds all of `want`. */
function covers(ivls: Interval[], [s, e]: Interval): boolean {
  for (const [a, b] of ivls) {
    if (a > s) return false;
    if (b === null || (e !== null && e <= b)) return true;
  }
  return false;
}

/** Permission key bytes for responses. */
export function permOut(p: Permission): PermissionMessage {
  return { permType: p.permType, key: Buffer.from(p.key, "latin1"), range_end: Buffer.from(p.rangeEnd, "latin1") };
}

/** The header a proposal carries when auth is enabled. */
export function authHeader(ai: AuthInfo | null): AuthHeader {
  return { username: ai?.username ?? "", revision: ai?.revision ?? 0 };
}
