/**
 * etcd's --auto-tls / --peer-auto-tls: a self-signed certificate (ECDSA P-256, one year, organization "etcd", SANs =
 * the listen URLs' hosts) written to <data-dir>/fixtures/{client,peer}/{cert,key}.pem, or reused if already there.
 * The X.509 DER is built by hand and signed with WebCrypto.
 */
import path from "node:path";
import net from "node:net";
import type { EtcdConfig, TlsFiles } from "./flags.ts";
import type { Logger } from "./log.ts";
import { pathExists } from "../util/files.ts";

// --- a minimal ASN.1 DER encoder -------------------------------------------------------------------------------------

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

function tlv(tag: number, ...content: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const body = concat(content);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : null;
  if (!len) throw new Error("DER value too long");
  return concat([Uint8Array.of(tag, ...len), body]);
}

const seq = (...c: Uint8Array[]) => tlv(0x30, ...c);
const set = (...c: Uint8Array[]) => tlv(0x31, ...c);
const octets = (b: Uint8Array) => tlv(0x04, b);
const bits = (b: Uint8Array, unused = 0) => tlv(0x03, Uint8Array.of(unused), b);
const bool = (v: boolean) => tlv(0x01, Uint8Array.of(v ? 0xff : 0));
const printable = (s: string) => tlv(0x13, new TextEncoder().encode(s));
/** [n] EXPLICIT (constructed context tag) */
const explicit = (n: number, ...c: Uint8Array[]) => tlv(0xa0 | n, ...c);
/** [n] IMPLICIT primitive (context tag) */
const implicit = (n: number, b: Uint8Array) => tlv(0x80 | n, b);

/** A non-negative INTEGER from big-endian magnitude bytes. */
function uint(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0] & 0x80 ? concat([Uint8Array.of(0), v]) : v);
}

function oid(dotted: string): Uint8Array {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [40 * a + b];
  for (const n of rest) {
    const chunk = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Uint8Array.from(out));
}

/** UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5), to the second. */
function time(d: Date): Uint8Array {
  const s = d.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";
  return d.getUTCFullYear() < 2050
    ? tlv(0x17, new TextEncoder().encode(s.slice(2)))
    : tlv(0x18, new TextEncoder().encode(s));
}

/** IPv4 or IPv6 text as its 4 or 16 address bytes. */
function ipBytes(ip: string): Uint8Array {
  if (net.isIPv4(ip)) return Uint8Array.from(ip.split(".").map(Number));
  let s = ip;
  const v4 = s.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const [a, b, c, d] = v4[1].split(".").map(Number);
    s = s.slice(0, -v4[1].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = s.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return Uint8Array.from(groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]));
}

/** WebCrypto's raw r||s ECDSA signature as the DER SEQUENCE { r INTEGER, s INTEGER } X.509 wants. */
function derSignature(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  return seq(uint(raw.subarray(0, half)), uint(raw.subarray(half)));
}

function pem(label: string, der: Uint8Array): string {
  let b64 = "";
  for (let i = 0; i < der.length; i += 0x8000) b64 += String.fromCharCode(...der.subarray(i, i + 0x8000));
  const lines = btoa(b64).match(/.{1,64}/g)!.join("\n");
  return `-----BEGIN ${label}-----\n${lines}\n-----END ${label}-----\n`;
}

// --- the certificate -------------------------------------------------------------------------------------------------

const ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";

/**
 * A self-signed certificate and its key as PEM: ECDSA P-256, valid from now for `validityDays`, subject/issuer
 * O=etcd, key usage digital signature + key encipherment, ext key usage server + client auth, basic constraints
 * CA:false, and SANs for `hosts` (IP literals as IP SANs, names as DNS SANs).
 */
export async function selfSignedCert(
  hosts: string[],
  validityDays = 365,
): Promise<{ certPem: string; keyPem: string }> {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] &= 0x7f;
  serial[0] |= 0x01; // positive and non-zero
  const now = new Date();
  const name = seq(set(seq(oid("2.5.4.10"), printable("etcd"))));
  const sans = [...new Set(hosts)].map((h) =>
    net.isIP(h) ? implicit(7, ipBytes(h)) : implicit(2, new TextEncoder().encode(h))
  );
  const ext = (id: string, critical: boolean, value: Uint8Array) =>
    seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
  const extensions = [
    ext("2.5.29.15", true, bits(Uint8Array.of(0xa0), 5)), // digitalSignature | keyEncipherment
    ext("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.1"), oid("1.3.6.1.5.5.7.3.2"))), // serverAuth, clientAuth
    ext("2.5.29.19", true, seq()), // CA:false
    ...(sans.length > 0 ? [ext("2.5.29.17", false, seq(...sans))] : []),
  ];
  const tbs = seq(
    explicit(0, uint(Uint8Array.of(2))), // v3
    uint(serial),
    seq(oid(ECDSA_WITH_SHA256)),
    name,
    seq(time(now), time(new Date(now.getTime() + validityDays * 86_400_000))),
    name,
    spki,
    explicit(3, seq(...extensions)),
  );
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, keys.privateKey, tbs));
  const cert = seq(tbs, seq(oid(ECDSA_WITH_SHA256)), bits(derSignature(sig)));
  return { certPem: pem("CERTIFICATE", cert), keyPem: pem("PRIVATE KEY", pkcs8) };
}

/**
 * etcd's transport.SelfCert: `dir`/cert.pem and `dir`/key.pem, created for the hosts of `urls` unless both files
 * already exist (then they are reused as they are). The key is written with mode 0600.
 */
export async function selfCert(dir: string, urls: string[]): Promise<{ certFile: string; keyFile: string }> {
  const certFile = path.join(dir, "cert.pem");
  const keyFile = path.join(dir, "key.pem");
  if (await pathExists(certFile) && await pathExists(keyFile)) return { certFile, keyFile };
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const hosts = urls.map((u) => new URL(u).hostname.replace(/^\[(.*)\]$/, "$1"));
  const { certPem, keyPem } = await selfSignedCert(hosts);
  await Deno.writeTextFile(certFile, certPem, { mode: 0o644 });
  await Deno.writeTextFile(keyFile, keyPem, { mode: 0o600 });
  return { certFile, keyFile };
}

/**
 * Applies --auto-tls / --peer-auto-tls as etcd does (ClientSelfCert / PeerSelfCert): without certificate files of
 * that side, generate or reuse <data-dir>/fixtures/{client,peer}; with them, auto TLS is ignored with a warning.
 * Generated files are marked `selfCert`, so that peers dialing with them skip verifying the other side.
 */
export async function applyAutoTls(cfg: EtcdConfig, log: Logger): Promise<EtcdConfig> {
  const side = async (on: boolean, given: TlsFiles | null, which: "client" | "peer", urls: string[]) => {
    if (!on) return given;
    if (given) {
      log.warn("embed", `ignoring ${which} auto TLS since certs given`);
      return given;
    }
    const files = await selfCert(path.join(cfg.dataDir, "fixtures", which), urls);
    log.info("embed", `${which} auto TLS: using self-signed certificate ${files.certFile}`);
    return { ...files, trustedCaFile: "", clientCertAuth: false, selfCert: true };
  };
  return {
    ...cfg,
    clientTls: await side(!!cfg.clientAutoTls, cfg.clientTls, "client", cfg.listenClientUrls),
    peerTls: await side(!!cfg.peerAutoTls, cfg.peerTls, "peer", cfg.listenPeerUrls),
  };
}
