/**
 * The API side of auth (etcd's AuthInfoFromCtx, CheckPassword and the password hashing of its API layer): who a call
 * is made as — the `token` (or `authorization`) metadata, else, under --client-cert-auth, the common name of the
 * client's certificate — and the bcrypt work done before a request is proposed, so the log holds only hashes and
 * applying it is deterministic.
 */
import crypto from "node:crypto";
import type { AuthHeader } from "../../proto/mod.ts";
import { AuthErrors } from "./errors.ts";
import type { AuthInfo, AuthStore } from "./store.ts";
import type { TokenProvider } from "./tokens.ts";

/** bcryptjs, loaded the first time a password is hashed or checked (members that never use auth do not load it). */
let bcryptModule: Promise<typeof import("bcryptjs").default> | null = null;
const bcrypt = () => (bcryptModule ??= import("bcryptjs").then((m) => m.default));

/** etcd's default --bcrypt-cost. */
export const DEFAULT_BCRYPT_COST = 10;

/**
 * How many verified (hash, password) pairs are remembered. bcrypt at cost 10 takes about 0.1-0.2 s in JavaScript,
 * and clients such as etcdctl authenticate on every command; a pair that passed bcrypt once is recognized again by
 * an HMAC under a key of this process (nothing that would help guess a password is kept). A changed password has a
 * new hash, so its old pairs never match again.
 */
const VERIFIED_CACHE_SIZE = 1024;

/** What the gate reads of a call: its metadata and the client certificate's common name. */
export interface CallCredentials {
  metadata: { get(key: string): (string | Uint8Array)[] };
  getPeerCommonName?: () => string;
}

/** Settings of the API side of auth. */
export interface AuthGateOptions {
  tokens: TokenProvider;
  /** --client-cert-auth: a client certificate's common name is the user when no token is given */
  clientCertAuth: boolean;
  /** --bcrypt-cost (4..31) */
  bcryptCost: number;
}

/** Credentials of calls and password work for one member. */
export class AuthGate {
  readonly tokens: TokenProvider;
  readonly #verified = new Set<string>();
  readonly #macKey = crypto.randomBytes(32);

  constructor(readonly store: AuthStore, readonly opts: AuthGateOptions) {
    this.tokens = opts.tokens;
    store.assignToken = (user, rev, prefix, issuedMs) => this.tokens.assign(user, rev, prefix, issuedMs);
    store.tokens = this.tokens;
  }

  /** Whether auth is enabled: the one check the request path makes while it is not. */
  get enabled(): boolean {
    return this.store.enabled;
  }

  /** Who the call is made as (null: nobody); throws "invalid auth token" for a token no member issued or alive. */
  info(call: CallCredentials): AuthInfo | null {
    const md = call.metadata;
    const t = md.get("token")[0] ?? md.get("authorization")[0];
    if (t !== undefined) {
      const ai = this.tokens.info(String(t), this.store.revision);
      if (!ai) throw AuthErrors.invalidAuthToken();
      return ai;
    }
    if (this.opts.clientCertAuth) {
      const cn = call.getPeerCommonName?.() ?? "";
      if (cn !== "") return { username: cn, revision: this.store.revision };
    }
    return null;
  }

  /** The auth header of a proposal made for the call. */
  header(call: CallCredentials): AuthHeader {
    const ai = this.info(call);
    return { username: ai?.username ?? "", revision: ai?.revision ?? 0 };
  }

  /** etcd's IsAdminPermitted for the call. */
  checkAdmin(call: CallCredentials): void {
    if (this.store.enabled) this.store.checkAdmin(this.info(call));
  }

  /** bcrypt hash of a password, with the configured cost (computed off the event loop's critical path). */
  hash(password: string): Promise<string> {
    return bcrypt().then((b) => b.hash(password, this.opts.bcryptCost));
  }

  /** etcd's CheckPassword: the auth revision the password was checked at, or the error to answer. */
  async checkPassword(name: string, password: string): Promise<number> {
    if (!this.store.enabled) throw AuthErrors.authNotEnabled();
    const u = this.store.users.get(name);
    if (!u) throw AuthErrors.authFailed();
    if (u.noPassword) throw AuthErrors.noPasswordUser();
    const revision = this.store.revision;
    const mac = crypto.createHmac("sha256", this.#macKey).update(u.hash).update("\0").update(password).digest("hex");
    if (this.#verified.has(mac)) return revision;
    if (!(await (await bcrypt()).compare(password, u.hash))) throw AuthErrors.authFailed();
    if (this.#verified.size >= VERIFIED_CACHE_SIZE) this.#verified.delete(this.#verified.values().next().value!);
    this.#verified.add(mac);
    return revision;
  }
}
