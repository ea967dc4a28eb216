/**
 * htpasswd files for the Validator's `basicAuth` (FILE mode): `user:hash` lines, the formats go-htpasswd accepts by
 * default except crypt-SHA — bcrypt (`$2a$`/`$2b$`/`$2y$`), apr1-MD5 (`$apr1$`), `{SHA}`, `{SSHA}`, and plain text
 * as the last resort. crypt-SHA (`$5$`/`$6$`) entries are reported and never match.
 *
 * The file is re-read when its modification time or size changes, checked at most once per `RELOAD_CHECK_MS`.
 */
import { Buffer } from "node:buffer";
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** bcryptjs, loaded the first time a bcrypt entry is checked. */
let bcryptModule: Promise<typeof import("bcryptjs").default> | null = null;
const bcrypt = () => (bcryptModule ??= import("bcryptjs").then((m) => m.default));

/** How often at most the file's stat is compared with the loaded one. */
export const RELOAD_CHECK_MS = 1000;

/**
 * How many verified (bcrypt hash, password) pairs are remembered: bcrypt at cost 10 takes 0.1–0.2 s of JavaScript,
 * and a client sends its credentials with every request. A pair is remembered as an HMAC under a key of this process.
 */
const VERIFIED_CACHE_SIZE = 1024;
const cacheKey = randomBytes(32);
const verified = new Set<string>();

function equal(a: string | Buffer, b: string | Buffer): boolean {
  const x = Buffer.from(a), y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** The Apache `$apr1$` MD5-crypt of a password with a salt (at most 8 characters). */
export function apr1(password: string, salt: string): string {
  const pw = Buffer.from(password);
  const sl = Buffer.from(salt.slice(0, 8));
  const magic = Buffer.from("$apr1$");
  const md5 = (...parts: Uint8Array[]) => {
    const h = createHash("md5");
    for (const p of parts) h.update(p);
    return h.digest();
  };
  const alt = md5(pw, sl, pw);
  const parts: Uint8Array[] = [pw, magic, sl];
  for (let i = pw.length; i > 0; i -= 16) parts.push(alt.subarray(0, Math.min(16, i)));
  for (let i = pw.length; i > 0; i >>= 1) parts.push(i & 1 ? Buffer.from([0]) : pw.subarray(0, 1));
  let fin = md5(...parts);
  for (let i = 0; i < 1000; i++) {
    const round: Uint8Array[] = [i & 1 ? pw : fin];
    if (i % 3) round.push(sl);
    if (i % 7) round.push(pw);
    round.push(i & 1 ? fin : pw);
    fin = md5(...round);
  }
  let out = "";
  const to64 = (v: number, n: number) => {
    for (; n > 0; n--, v >>= 6) out += ITOA64[v & 63];
  };
  for (const [a, b, c] of [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]]) {
    to64((fin[a] << 16) | (fin[b] << 8) | fin[c], 4);
  }
  to64(fin[11], 2);
  return `$apr1$${sl.toString()}$${out}`;
}

/** Whether a password matches an htpasswd hash. */
export async function checkPassword(hash: string, password: string): Promise<boolean> {
  if (/^\$2[aby]\$/.test(hash)) {
    const key = createHmac("sha256", cacheKey).update(hash).update("\0").update(password).digest("base64");
    if (verified.has(key)) return true;
    if (!await (await bcrypt()).compare(password, hash)) return false;
    if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.values().next().value!);
    verified.add(key);
    return true;
  }
  if (hash.startsWith("$apr1$")) {
    const salt = hash.slice(6).split("$")[0];
    return equal(apr1(password, salt), hash);
  }
  if (hash.startsWith("{SHA}")) {
    return equal(createHash("sha1").update(password).digest("base64"), hash.slice(5));
  }
  if (hash.startsWith("{SSHA}")) {
    const raw = Buffer.from(hash.slice(6), "base64");
    if (raw.length <= 20) return false;
    const salt = raw.subarray(20);
    return equal(createHash("sha1").update(password).update(salt).digest(), raw.subarray(0, 20));
  }
  if (/^\$[56]\$/.test(hash)) return false;
  return equal(password, hash);
}

/** Parses htpasswd text: user → hash (blank lines and `#` comments skipped; the last entry of a user wins). */
export function parseHtpasswd(text: string, log: (msg: string) => void): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "" || line.trimStart().startsWith("#")) return;
    const colon = line.indexOf(":");
    if (colon <= 0) return log(`htpasswd line ${i + 1}: not user:hash, skipped`);
    const hash = line.slice(colon + 1);
    if (/^\$[56]\$/.test(hash)) {
      log(`htpasswd line ${i + 1}: crypt-SHA ($5$/$6$) is not supported, entry never matches`);
    }
    users.set(line.slice(0, colon), hash);
  });
  return users;
}

/** An htpasswd file, re-read when it changes. */
export class HtpasswdFile {
  #users: Map<string, string>;
  #stamp: string;
  #nextCheck = 0;
  #checking: Promise<void> | null = null;
  readonly #log: (msg: string) => void;

  /** Reads the file now; throws when it cannot be read. */
  constructor(readonly path: string, log: (msg: string) => void) {
    this.#log = log;
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(path);
      this.#users = parseHtpasswd(Deno.readTextFileSync(path), log);
    } catch (e) {
      throw new Error(`basicAuth: cannot read userFile ${path}: ${(e as Error).message}`);
    }
    this.#stamp = this.#stampOf(st);
    this.#nextCheck = Date.now() + RELOAD_CHECK_MS;
  }

  #stampOf(st: Deno.FileInfo): string {
    return `${st.mtime?.getTime()}/${st.size}/${st.ino}`;
  }

  async #reload(): Promise<void> {
    try {
      const st = await Deno.stat(this.path);
      const stamp = this.#stampOf(st);
      if (stamp === this.#stamp) return;
      this.#users = parseHtpasswd(await Deno.readTextFile(this.path), this.#log);
      this.#stamp = stamp;
    } catch (e) {
      // Keep the last good users: a file being replaced must not lock everyone out.
      this.#log(`basicAuth: cannot re-read userFile ${this.path}: ${(e as Error).message}`);
    }
  }

  /** Whether user:password is an entry of the (current) file. */
  async check(user: string, password: string): Promise<boolean> {
    const now = Date.now();
    if (now >= this.#nextCheck) {
      this.#nextCheck = now + RELOAD_CHECK_MS;
      this.#checking ??= this.#reload().finally(() => this.#checking = null);
    }
    if (this.#checking !== null) await this.#checking;
    const hash = this.#users.get(user);
    return hash !== undefined && await checkPassword(hash, password);
  }
}
