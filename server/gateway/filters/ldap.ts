/**
 * The LDAP simple bind of the Validator's basicAuth LDAP mode: one connection per check (plain, StartTLS, or LDAPS),
 * a BindRequest as `<uid>=<user>,<baseDN>` with the password, success when the server answers resultCode 0. Only the
 * few BER elements these two messages need (RFC 4511) are encoded and decoded. The client certificate
 * (certBase64/keyBase64) is presented on LDAPS and on StartTLS alike (go-ldap-client, Easegress's, only does it on
 * LDAPS, so a server demanding one refuses its StartTLS binds).
 */
import { Buffer } from "node:buffer";
import net from "node:net";
import tls from "node:tls";

/** A check gives up (fails) after this long: an LDAP server that does not answer must not hold requests. */
export const LDAP_TIMEOUT_MS = 10_000;
/** A response larger than this is not a BindResponse: the connection is dropped. */
const MAX_LDAP_MESSAGE = 64 * 1024;
const STARTTLS_OID = "1.3.6.1.4.1.1466.20037";

/** basicAuth.ldap of the spec. */
export interface LdapSpec {
  host: string;
  port: number;
  baseDN: string;
  uid: string;
  useSSL: boolean;
  skipTLS: boolean;
  insecure: boolean;
  serverName: string;
  cert: string;
  key: string;
}

function berLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function ber(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), berLength(content.length), content]);
}

const int = (n: number) => ber(0x02, Buffer.from([n]));

/** An LDAPMessage: SEQUENCE { messageID, protocolOp }. */
function message(id: number, op: Buffer): Buffer {
  return ber(0x30, Buffer.concat([int(id), op]));
}

/** BindRequest [APPLICATION 0] { version 3, name, simple [0] password }. */
export function bindRequest(id: number, dn: string, password: string): Buffer {
  return message(
    id,
    ber(0x60, Buffer.concat([int(3), ber(0x04, Buffer.from(dn)), ber(0x80, Buffer.from(password))])),
  );
}

function startTlsRequest(id: number): Buffer {
  return message(id, ber(0x77, ber(0x80, Buffer.from(STARTTLS_OID))));
}

/** Reads a tag-length header at `pos`: [content start, content length], or null when incomplete. */
function header(b: Buffer, pos: number): [number, number] | null {
  if (b.length < pos + 2) return null;
  const first = b[pos + 1];
  if (first < 0x80) return [pos + 2, first];
  const n = first & 0x7f;
  if (n === 0 || n > 4) throw new Error("ldap: bad BER length");
  if (b.length < pos + 2 + n) return null;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + b[pos + 2 + i];
  return [pos + 2 + n, len];
}

/**
 * The resultCode of a complete LDAPMessage whose op is `opTag` (BindResponse 0x61, ExtendedResponse 0x78) in `b`, or
 * null when more bytes are needed.
 */
export function resultCode(b: Buffer, opTag: number): number | null {
  const outer = header(b, 0);
  if (outer === null) return null;
  if (b[0] !== 0x30) throw new Error("ldap: not an LDAPMessage");
  if (outer[1] > MAX_LDAP_MESSAGE) throw new Error("ldap: message too large");
  if (b.length < outer[0] + outer[1]) return null;
  const id = header(b, outer[0])!; // messageID
  const opPos = id[0] + id[1];
  if (b[opPos] !== opTag) throw new Error(`ldap: unexpected response 0x${b[opPos]?.toString(16)}`);
  const op = header(b, opPos)!;
  const rc = header(b, op[0])!; // resultCode ENUMERATED
  if (b[op[0]] !== 0x0a) throw new Error("ldap: malformed result");
  let code = 0;
  for (let i = 0; i < rc[1]; i++) code = code * 256 + b[rc[0] + i];
  return code;
}

/** Escapes a DN attribute value (RFC 4514), so a user name cannot change the DN's structure. */
export function escapeDnValue(v: string): string {
  return v.replace(/[,+"\\<>;=\0]/g, (c) => "\\" + c.charCodeAt(0).toString(16).padStart(2, "0"))
    .replace(/^[ #]/, (c) => "\\" + c).replace(/ $/, "\\ ");
}

/** Sends `req` and waits for the response with `opTag`: its resultCode. */
function exchange(sock: net.Socket, req: Buffer, opTag: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      try {
        const rc = resultCode(got, opTag);
        if (rc === null) return;
        done();
        resolve(rc);
      } catch (err) {
        done();
        reject(err);
      }
    };
    const onEnd = () => {
      done();
      reject(new Error("ldap: connection closed"));
    };
    const done = () => {
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("error", onEnd);
    };
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.on("error", onEnd);
    sock.write(req);
  });
}

function connected(sock: net.Socket, event: string): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.once(event, () => resolve());
    sock.once("error", reject);
  });
}

/** Whether `user` binds with `password` (an empty password never does: it would be an anonymous bind). */
export async function ldapBind(spec: LdapSpec, user: string, password: string): Promise<boolean> {
  if (password === "" || user === "") return false;
  const tlsOpts = {
    rejectUnauthorized: !spec.insecure,
    // a name for SNI and verification (TLS forbids an IP address as SNI; node then checks the IP against the certificate)
    ...(spec.serverName || !net.isIP(spec.host) ? { servername: spec.serverName || spec.host } : {}),
    ...(spec.cert && spec.key ? { cert: spec.cert, key: spec.key } : {}),
  };
  let sock: net.Socket = spec.useSSL
    ? tls.connect({ host: spec.host, port: spec.port, ...tlsOpts })
    : net.connect({ host: spec.host, port: spec.port });
  const timer = setTimeout(() => sock.destroy(new Error("ldap: timeout")), LDAP_TIMEOUT_MS);
  try {
    await connected(sock, spec.useSSL ? "secureConnect" : "connect");
    if (!spec.useSSL && !spec.skipTLS) {
      // StartTLS, verification off (as go-ldap-client does it)
      if (await exchange(sock, startTlsRequest(1), 0x78) !== 0) throw new Error("ldap: StartTLS refused");
      const secure = tls.connect({ socket: sock, ...tlsOpts, rejectUnauthorized: false });
      await connected(secure, "secureConnect");
      sock = secure;
    }
    const dn = `${spec.uid}=${escapeDnValue(user)},${spec.baseDN}`;
    return await exchange(sock, bindRequest(2, dn, password), 0x61) === 0;
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}
