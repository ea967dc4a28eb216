/**
 * Who a peer's TLS client certificate lets it be. Under `--peer-client-cert-auth` the TLS handshake already verified
 * the certificate against `--peer-trusted-ca-file`; a peer stream is then also refused when
 *
 * - `--peer-cert-allowed-cn` is set and the certificate's common name differs (etcd 3.4), or
 * - `--peer-cert-allowed-hostname` is set and the certificate is not valid for that host name or IP (etcd 3.4), or
 * - the certificate has subject alternative names and none of them is the host of a peer URL of the member the
 *   stream claims to come from (ours: etcd does not tie a certificate to a member ID). A certificate shared by all
 *   members lists every member's host and passes; a certificate without SANs is tied to no member and passes.
 */
import { isIP } from "node:net";
import type tls from "node:tls";
import { type CertAltNames, parseAltNames } from "../transport/http2.ts";

/** etcd's restrictions on peers' client certificates (at most one of the two is set). */
export interface PeerCertPolicy {
  /** --peer-cert-allowed-cn: the only common name accepted */
  allowedCn?: string;
  /** --peer-cert-allowed-hostname: a host name or IP the certificate must be valid for */
  allowedHostname?: string;
}

/** What a verified client certificate says about its holder. */
export interface PeerCertificate {
  commonName: string;
  altNames: CertAltNames;
}

/** An IP address in one spelling (IPv6 compressed and lower case), or null when `s` is not one. */
function canonicalIp(s: string): string | null {
  const bare = s.startsWith("[") && s.endsWith("]") ? s.slice(1, -1) : s;
  const v = isIP(bare);
  if (v === 4) return bare;
  if (v === 6) return new URL(`http://[${bare}]/`).hostname;
  return null;
}

/**
 * Whether a certificate with these SANs is valid for `host`, as Go's x509 VerifyHostname decides: an IP against the
 * IP SANs, a name against the DNS SANs (case-insensitive; `*.` matches exactly one leftmost label).
 */
export function certificateNamesHost(alt: CertAltNames, host: string): boolean {
  const ip = canonicalIp(host);
  if (ip !== null) return alt.ip.some((a) => canonicalIp(a) === ip);
  const name = host.toLowerCase().replace(/\.$/, "");
  return alt.dns.some((d) => {
    const pattern = d.toLowerCase().replace(/\.$/, "");
    if (!pattern.startsWith("*.")) return pattern === name;
    const dot = name.indexOf(".");
    return dot > 0 && name.slice(dot + 1) === pattern.slice(2);
  });
}

/** Why a verified client certificate breaks --peer-cert-allowed-cn / --peer-cert-allowed-hostname; null if it does not. */
export function refuseByPolicy(cert: PeerCertificate, policy: PeerCertPolicy): string | null {
  if (policy.allowedCn !== undefined && cert.commonName !== policy.allowedCn) {
    return `its certificate's common name "${cert.commonName}" is not the allowed "${policy.allowedCn}"`;
  }
  if (policy.allowedHostname !== undefined && !certificateNamesHost(cert.altNames, policy.allowedHostname)) {
    return `its certificate is not valid for the allowed host name "${policy.allowedHostname}"`;
  }
  return null;
}

/**
 * The verified client certificate of a TLS connection to a peer listener; null when the handshake verified none (no
 * --peer-client-cert-auth). The listener refuses connections whose certificate breaks the policy ({@link
 * refuseByPolicy}), as etcd's handshake does, so no client API call on a peer URL gets through either.
 */
export function verifiedCertificate(socket: tls.TLSSocket): PeerCertificate | null {
  if (!socket.authorized) return null;
  const c = socket.getPeerCertificate();
  if (!c || !c.subject) return null;
  return { commonName: String(c.subject.CN ?? ""), altNames: parseAltNames(c.subjectaltname ?? "") };
}

/**
 * Why a peer stream from member `claimedId`, whose peer URLs are `peerURLs`, is refused given its client certificate;
 * null when it may proceed. Streams without a verified certificate (plaintext peer URLs, no --peer-client-cert-auth)
 * are not judged here.
 */
export function refusePeerCertificate(
  cert: PeerCertificate | null,
  policy: PeerCertPolicy,
  claimedId: string,
  peerURLs: string[],
): string | null {
  if (!cert) return null;
  const broken = refuseByPolicy(cert, policy);
  if (broken !== null) return broken;
  const { dns, ip } = cert.altNames;
  if (dns.length === 0 && ip.length === 0) return null;
  const hosts = peerURLs.map((u) => new URL(u).hostname);
  if (hosts.some((h) => certificateNamesHost(cert.altNames, h))) return null;
  const sans = [...dns.map((d) => `DNS:${d}`), ...ip.map((i) => `IP:${i}`)].join(", ");
  return `its certificate (${sans}) names none of the peer URL hosts of member ${claimedId} (${hosts.join(", ")})`;
}
