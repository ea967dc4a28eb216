/**
 * HTTPS beyond what `Deno.serve` offers (one certificate, no client certificates): several certificates chosen by the
 * client's server name (SNI) and client-certificate verification (`caCertBase64`), through `node:tls`. Deno 2.9's
 * `Deno.serve` takes one `cert`/`key` and no CA for clients, and `Deno.listenTls` has no client verification either.
 *
 * ALPN offers `h2` and `http/1.1`: HTTP/1.1 connections run through the server's own HTTP/1.1 loop as `Deno.Conn`-like
 * objects (`NodeTlsConn`), HTTP/2 ones through the project's HTTP/2 server connection (server/transport/http2.ts).
 *
 * Measured (h2load, 16 connections, a Mock answer, loopback, load ~1.1, two runs): HTTP/2 here 54k–114k req/s (10
 * streams per connection) against 28k–39k for Deno.serve's; HTTP/1.1 here 23k–24k against 39k–40k for Deno.serve's
 * (every read of a NodeTlsConn is a node 'data' event plus a promise).
 */
import { X509Certificate } from "node:crypto";
import tls from "node:tls";
import { parseAltNames } from "../../transport/http2.ts";

/** A certificate chain and its private key, PEM. */
export interface CertPair {
  cert: string;
  key: string;
}

/** Bytes a connection buffers before it pauses its socket (a client faster than the HTTP loop reads). */
const MAX_BUFFERED = 256 * 1024;

/** The host names a certificate serves: its DNS subject alternative names, or its common name when it has none. */
export function certNames(pem: string): string[] {
  const x = new X509Certificate(pem);
  const dns = parseAltNames(x.subjectAltName ?? "").dns.map((n) => n.toLowerCase());
  if (dns.length > 0) return dns;
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(x.subject);
  return cn ? [cn[1].trim().toLowerCase()] : [];
}

/**
 * The index of the certificate for a server name, as Go's tls.Config with several Certificates picks: a certificate
 * naming it exactly, else one whose wildcard (`*.example.com`) covers its first label, else the first.
 */
export function pickCertificate(names: string[][], serverName: string): number {
  const name = serverName.toLowerCase().replace(/\.$/, "");
  if (name === "") return 0;
  for (let i = 0; i < names.length; i++) if (names[i].includes(name)) return i;
  const dot = name.indexOf(".");
  if (dot > 0) {
    const wild = "*" + name.slice(dot);
    for (let i = 0; i < names.length; i++) if (names[i].includes(wild)) return i;
  }
  return 0;
}

/** A TLS listener's settings: its certificates (the first is the default) and the CA client certificates must chain to. */
export interface NodeTlsConfig {
  hostname: string;
  port: number;
  pairs: CertPair[];
  /** PEM CA(s): when set, a client without a certificate it signed fails the handshake */
  clientCa: string | null;
}

/** Checks certificates and keys (a bad PEM or a key that does not fit throws with the reason). */
export function validateTls(cfg: Pick<NodeTlsConfig, "pairs" | "clientCa">): void {
  for (const p of cfg.pairs) {
    certNames(p.cert);
    tls.createSecureContext({ cert: p.cert, key: p.key });
  }
  if (cfg.clientCa !== null) tls.createSecureContext({ ca: cfg.clientCa });
}

/** Where a handshaken connection goes, by the protocol ALPN chose. */
export interface NodeTlsHandlers {
  http1(conn: Deno.Conn): void;
  h2(socket: tls.TLSSocket): void;
}

/**
 * A client must finish its TLS handshake within this long (as a request head must arrive within the HTTP/1.1 loop's
 * head timeout): node's default is 120 s, and Deno's node:tls reports the timeout without closing the socket, so a
 * silent client would otherwise hold its connection, and a slot of maxConnections, for good.
 */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Listens with node:tls. Resolves once listening, rejects when the port cannot be bound. */
export function listenNodeTls(cfg: NodeTlsConfig, on: NodeTlsHandlers): Promise<tls.Server> {
  const verify = cfg.clientCa !== null
    ? { ca: cfg.clientCa, requestCert: true, rejectUnauthorized: true }
    : { requestCert: false };
  // the CA goes into every context: the one SNI selects replaces the server's, client verification included
  const contexts = cfg.pairs.map((p) =>
    tls.createSecureContext({ cert: p.cert, key: p.key, ...(cfg.clientCa !== null ? { ca: cfg.clientCa } : {}) })
  );
  const names = cfg.pairs.map((p) => certNames(p.cert));
  const server = tls.createServer(
    {
      cert: cfg.pairs[0].cert,
      key: cfg.pairs[0].key,
      ...verify,
      ALPNProtocols: ["h2", "http/1.1"],
      handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS,
      SNICallback: (serverName, cb) => cb(null, contexts[pickCertificate(names, serverName)]),
    },
    (socket) =>
      socket.alpnProtocol === "h2" ? on.h2(socket) : on.http1(new NodeTlsConn(socket) as unknown as Deno.Conn),
  );
  // failed or timed-out handshakes (no or a foreign client certificate, plain HTTP, silence) end their own connection
  server.on("tlsClientError", (_err: Error, socket?: tls.TLSSocket) => socket?.destroy());
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(cfg.port, cfg.hostname, () => {
      server.off("error", reject);
      server.on("error", () => {});
      resolve(server);
    });
  });
}

/** A node:tls socket with the part of Deno.Conn the HTTP/1.1 loop, WebSocketProxy and the Proxy's unverified upstream TLS use (read, write, close). */
export class NodeTlsConn {
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #wake: (() => void) | null = null;

  constructor(readonly socket: tls.TLSSocket) {
    this.remoteAddr = {
      transport: "tcp",
      hostname: stripV4Mapped(socket.remoteAddress ?? ""),
      port: socket.remotePort ?? 0,
    };
    this.localAddr = {
      transport: "tcp",
      hostname: stripV4Mapped(socket.localAddress ?? ""),
      port: socket.localPort ?? 0,
    };
    socket.setNoDelay(true);
    socket.on("data", (b: Uint8Array) => {
      this.#chunks.push(b);
      this.#buffered += b.length;
      if (this.#buffered > MAX_BUFFERED) socket.pause();
      this.#notify();
    });
    const end = () => {
      this.#ended = true;
      this.#notify();
    };
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", end);
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** Copies buffered bytes into p: their count, or null at the end of the stream. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#ended) return null;
      await new Promise<void>((r) => (this.#wake = r));
    }
    let n = 0;
    while (n < p.length && this.#chunks.length > 0) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, p.length - n);
      p.set(k === c.length ? c : c.subarray(0, k), n);
      n += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#buffered -= n;
    if (this.socket.isPaused() && this.#buffered <= MAX_BUFFERED / 2) this.socket.resume();
    return n;
  }

  /** Writes all of p; resolves once the socket took it (the caller may then reuse p). */
  write(p: Uint8Array): Promise<number> {
    if (this.socket.destroyed) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) =>
      this.socket.write(p, (err?: Error | null) => (err ? reject(err) : resolve(p.length)))
    );
  }

  closeWrite(): Promise<void> {
    this.socket.end();
    return Promise.resolve();
  }

  close(): void {
    this.#ended = true;
    this.socket.destroy();
    this.#notify();
  }
}

function stripV4Mapped(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}
