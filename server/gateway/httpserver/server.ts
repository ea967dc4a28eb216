/**
 * An HTTPServer object: its listener (TCP, or TLS), the HTTP/1.1 connection loop, limits and timeouts, routing, the
 * pipeline hand-off by name and the response writing. The hot path per request: find the head end in the
 * connection's buffer, parse it (http1.ts), route, read the body, run the pipeline, write head and body in one write.
 *
 * Live changes (rules, ipFilter, xForwardedFor, maxConnections...) swap the router and settings; open connections
 * keep going. Other changes restart the listener. A port that cannot be bound puts the server in state `failed`,
 * retried every 10 s.
 */
import { Buffer } from "node:buffer";
import { type BodyStream, Context, GwRequest, type GwResponse, type WebUpgrade } from "../context.ts";
import {
  BodyKind,
  ChunkedDecoder,
  concat,
  findHeadEnd,
  HeaderList,
  httpDate,
  httpDateLine,
  HttpParseError,
  MAX_HEAD_BYTES,
  parseRequestHead,
  putText,
  STATUS_TEXT,
  statusLine,
} from "../http1.ts";
import { closeQuietly, encodeHead, encodeHeadInto, writeAll, writeRest } from "../filters/proxy/upstream.ts";
import { parseGoDuration } from "../../easegress/gotime.ts";
import { Pipeline, type PipelineObject } from "../pipeline/pipeline.ts";
import { type IpFilter, ipFilterOf } from "./ipfilter.ts";
import { type Route, Router } from "./router.ts";
import { ServerStats } from "./stats.ts";
import { type RouteTraffic, type ServerTraffic, TRAFFIC } from "../../metrics/traffic.ts";
import type { AccessLog } from "./accesslog.ts";
import { expandVariables } from "./variables.ts";
import { readRid, readSocket } from "../sockread.ts";
import { H2BodyStream, Http1BodyStream, makeRoom, webBodyStream } from "./bodystream.ts";
import { type CertPair, listenNodeTls, validateTls } from "./tls.ts";
import type { Server as NodeTlsServer, TLSSocket } from "node:tls";
import { DEFAULT_TIMEOUTS, ErrorCode, Http2ServerConnection, type Http2Stream } from "../../transport/http2.ts";
import type { HTTPServerSpec, MetaSpec, Stored } from "../../easegress/specs/mod.ts";

/** An HTTPServer object as stored: its name, the other meta fields and its spec. */
export type HttpServerObject = Stored<MetaSpec & HTTPServerSpec> & { name: string };

/** A failed listen is retried this often (Easegress: 10 s). */
export const LISTEN_RETRY_MS = 10_000;
/**
 * A request head must arrive completely within this long after its first byte, or keepAliveTimeout when shorter
 * (stops slowloris heads).
 */
export const HEAD_READ_TIMEOUT_MS = 10_000;
/** A graceful close waits this long for busy connections before closing them (Easegress: 30 s). */
export const SHUTDOWN_GRACE_MS = 30_000;
/** Default request body limit (clientMaxBodySize 0): 4 MiB. */
export const DEFAULT_CLIENT_MAX_BODY = 4 * 1024 * 1024;
/** The connection's read buffer starts this small (idle keep-alive connections stay cheap) and doubles as needed. */
const INITIAL_BUFFER = 1024;
/** Responses up to this size are assembled in the connection's write buffer and sent in one write. */
const MAX_WRITE_BUFFER = 32 * 1024;
/** Deadlines are checked this often. */
const SWEEP_MS = 500;
/**
 * The client-gone probe's tick. While requests are in flight, one interval per server looks at the busy HTTP/1
 * connections; one busy with the same request at two ticks in a row gets a read started on its socket: EOF or an error
 * means the client went away (the context is marked and the upstream exchange cancelled: 499 `clientError`), bytes
 * (a pipelined next request) are kept in the connection's buffer. Fast requests never see a read or a timer of their
 * own (the hot path only stores the context on the connection).
 */
const GONE_TICK_MS = 200;
/** the probe's read size (bytes beyond are left in the socket) */
const PROBE_BYTES = 4096;

/** Fields Easegress applies without restarting the listener (and the object's meta fields, which do not matter). */
const LIVE_FIELDS = new Set([
  "rules",
  "ipFilter",
  "cacheSize",
  "xForwardedFor",
  "tracing",
  "maxConnections",
  "createdAt",
  "labels",
  "version",
]);

/** Finds a pipeline by name at request time. */
export type PipelineLookup = (name: string) => Pipeline | undefined;

/** Response headers we write ourselves. */
const SKIP_RESPONSE = new Set(["content-length", "transfer-encoding", "connection", "date", "keep-alive"]);
/** Connection-specific fields HTTP/2 forbids in a response (RFC 9113 §8.2.2) besides those of SKIP_RESPONSE. */
const H2_SKIP_RESPONSE = new Set(["proxy-connection", "upgrade"]);
const EMPTY = new Uint8Array(0);

class ClientConn {
  buf = new Uint8Array(INITIAL_BUFFER);
  /** response bytes are assembled here (allocated at the first response) */
  wbuf: Uint8Array | null = null;
  /** the last response's view of wbuf, written through again by the next response of the same size (null: none) */
  wview: Uint8Array | null = null;
  start = 0;
  end = 0;
  /** close when Date.now() passes it */
  deadline = 0;
  busy = false;
  /** a streamed request body waits for the client (the deadline applies while busy) */
  reading = false;
  closed = false;
  /** the request in flight, while the client-gone probe may read the socket (see GONE_TICK_MS) */
  ctx: Context | null = null;
  /** the request the last tick saw in flight */
  seen: Context | null = null;
  /** the probe's read (resolves to its byte count, 0 at EOF or error, its bytes appended to buf); the loop's next */
  probe: Promise<number> | null = null;
  probing = false;
  /** see sockread.ts */
  readonly rid: number;
  constructor(readonly conn: Deno.Conn, readonly remoteIp: string, readonly remoteAddr: string) {
    this.rid = readRid(conn);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.conn);
  }
}

interface Settings {
  router: Router;
  /** pipelines of inline backendPools by generated name */
  generated: Map<string, Pipeline>;
  ipFilter: IpFilter | null;
  xForwardedFor: boolean;
  maxConnections: number;
}

function settingsOf(spec: HttpServerObject, log: (msg: string) => void): Settings {
  // a path's inline backendPool runs as a pipeline of its own, GENERATED-<server>-<rule>-<path> (Easegress writes
  // such pipelines to the store; every member derives the same ones from the server's spec, so this one keeps them)
  const generated = new Map<string, Pipeline>();
  const rules = (spec.rules ?? []).map((r, ri) => ({
    ...r,
    paths: (r.paths ?? []).map((p, pi) => {
      if (p.backend || !p.backendPool) return p;
      const name = `GENERATED-${spec.name}-${ri}-${pi}`;
      const pipelineSpec: PipelineObject = {
        name,
        kind: "Pipeline",
        flow: [{ filter: "proxy" }],
        filters: [{ name: "proxy", kind: "Proxy", pools: [p.backendPool] }],
      };
      try {
        generated.set(name, new Pipeline(pipelineSpec, log));
      } catch (err) {
        for (const g of generated.values()) g.close();
        throw new Error(`backendPool of rules[${ri}].paths[${pi}]: ${(err as Error).message}`);
      }
      return { ...p, backend: name };
    }),
  }));
  try {
    return {
      router: new Router(rules, String(spec.routerKind ?? "")),
      ipFilter: ipFilterOf(spec.ipFilter),
      xForwardedFor: spec.xForwardedFor === true,
      maxConnections: Number(spec.maxConnections ?? 10240) || 10240,
      generated,
    };
  } catch (err) {
    for (const g of generated.values()) g.close();
    throw err;
  }
}

/** Listener-level settings (a change restarts the listener). */
interface ListenConfig {
  hostname: string;
  port: number;
  /**
   * HTTPS: the certificates (certBase64/keyBase64 first, then the certs/keys maps; the first is the default) and the
   * CA of client certificates (caCertBase64). One certificate and no CA: Deno.serve (HTTP/2 and HTTP/1.1 by ALPN);
   * otherwise node:tls (SNI, client verification): HTTP/1.1 into the HTTP/1.1 loop, HTTP/2 into transport/http2.ts.
   */
  tls: { pairs: CertPair[]; clientCa: string | null } | null;
  keepAlive: boolean;
  keepAliveMs: number;
  clientMaxBody: number;
}

function decodePem(s: string): string {
  const t = s.trim();
  if (t.startsWith("-----BEGIN")) return t;
  return Buffer.from(t, "base64").toString("utf8");
}

function listenConfigOf(spec: HttpServerObject): ListenConfig {
  const port = Number(spec.port ?? 0);
  if (!(port >= 1 && port <= 65535)) throw new Error("port: must be greater than or equal to 1");
  let tls: ListenConfig["tls"] = null;
  if (spec.https === true) {
    const pairs: CertPair[] = [];
    if (spec.certBase64 && spec.keyBase64) {
      pairs.push({ cert: decodePem(spec.certBase64), key: decodePem(spec.keyBase64) });
    }
    for (const [k, c] of Object.entries((spec.certs ?? {}) as Record<string, string>)) {
      const key = spec.keys?.[k];
      if (!key) throw new Error(`certs ${k} hasn't secret corresponded to it`);
      pairs.push({ cert: decodePem(c), key: decodePem(key) });
    }
    if (pairs.length === 0) {
      throw new Error("certBase64/keyBase64, certs/keys are both empty and autocert is disabled when https enabled");
    }
    tls = { pairs, clientCa: spec.caCertBase64 ? decodePem(String(spec.caCertBase64)) : null };
    try {
      validateTls(tls);
    } catch (err) {
      throw new Error(`https: ${(err as Error).message}`);
    }
  }
  const cmbs = Number(spec.clientMaxBodySize ?? 0);
  return {
    hostname: String(spec.address ?? "") || "0.0.0.0",
    port,
    tls,
    keepAlive: spec.keepAlive !== false,
    keepAliveMs: spec.keepAliveTimeout ? parseGoDuration(String(spec.keepAliveTimeout)) : 60_000,
    clientMaxBody: cmbs === 0 ? DEFAULT_CLIENT_MAX_BODY : cmbs < 0 ? -1 : cmbs,
  };
}

/** The server ipFilter, then the router: a route or the status to answer with. */
function search(req: GwRequest, settings: Settings): Route | number {
  if (settings.ipFilter !== null && !settings.ipFilter.allow(req.realIp)) return 403;
  return settings.router.search(req);
}

/** Reads a stream up to `limit` bytes (-1 = no limit): the bytes, or 413 when over, 400 on a read error. */
async function readLimited(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array | number> {
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      size += chunk.length;
      if (limit >= 0 && size > limit) return 413;
      parts.push(chunk);
    }
  } catch {
    return 400;
  }
  return concat(parts, size);
}

/** A running HTTPServer. */
export class HttpServer {
  readonly name: string;
  spec: HttpServerObject;
  state: "running" | "failed" | "closed" = "failed";
  error = "";
  readonly stats = new ServerStats();
  /** this server's series on the admin API's /apis/v2/metrics */
  readonly #traffic: ServerTraffic;
  /** the series of requests that matched no route (403/404/405/400 answers, malformed requests) */
  #unrouted: RouteTraffic | null = null;
  #settings: Settings;
  #cfg: ListenConfig;
  #listener: Deno.Listener | null = null;
  #tlsServer: Deno.HttpServer | null = null;
  #nodeTlsServer: NodeTlsServer | null = null;
  /** HTTP/2 connections of the node:tls listener */
  #h2conns = new Set<Http2ServerConnection>();
  #conns = new Set<ClientConn>();
  #retryTimer?: ReturnType<typeof setTimeout>;
  #sweepTimer?: ReturnType<typeof setInterval>;
  #goneTimer: ReturnType<typeof setInterval> | undefined = undefined;
  #lookup: PipelineLookup;
  #log: (msg: string) => void;
  #accessLog: AccessLog | null;
  #acceptWaiter: (() => void) | null = null;
  #scheme: string;

  /** Validates the spec and starts listening (or enters `failed` and retries). */
  constructor(spec: HttpServerObject, lookup: PipelineLookup, log: (msg: string) => void, accessLog: AccessLog | null) {
    this.name = spec.name;
    this.spec = spec;
    this.#traffic = TRAFFIC.httpServer(this.name);
    this.#cfg = listenConfigOf(spec);
    this.#settings = settingsOf(spec, log);
    this.#lookup = lookup;
    this.#log = log;
    this.#accessLog = accessLog;
    this.#scheme = this.#cfg.tls ? "https" : "http";
    this.#sweepTimer = setInterval(() => this.#sweep(), SWEEP_MS);
    this.#start();
  }

  /** Whether replacing the spec with `next` can be done without restarting the listener. */
  static isLiveChange(prev: HttpServerObject, next: HttpServerObject): boolean {
    const keys = new Set([...Object.keys(prev), ...Object.keys(next)]);
    const a: Record<string, unknown> = prev, b: Record<string, unknown> = next;
    for (const k of keys) {
      if (LIVE_FIELDS.has(k)) continue;
      if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return false;
    }
    return true;
  }

  /** Applies a live change: new router and settings; open connections stay. */
  updateLive(spec: HttpServerObject): void {
    const old = this.#settings;
    this.#settings = settingsOf(spec, this.#log);
    for (const g of old.generated.values()) g.close();
    this.spec = spec;
    this.#acceptWaiter?.();
  }

  #start(): void {
    if (this.state === "closed") return;
    const c = this.#cfg;
    try {
      if (c.tls && (c.tls.pairs.length > 1 || c.tls.clientCa !== null)) {
        this.#startNodeTls(c.tls.pairs, c.tls.clientCa);
        return;
      }
      if (c.tls) {
        this.#tlsServer = Deno.serve({
          hostname: c.hostname,
          port: c.port,
          cert: c.tls.pairs[0].cert,
          key: c.tls.pairs[0].key,
          onListen() {},
          onError: (err) => {
            this.#log(`httpserver ${this.name}: ${(err as Error).message}`);
            return new Response(null, { status: 500 });
          },
        }, (req, info) => this.#serveTls(req, info as Deno.ServeHandlerInfo<Deno.NetAddr>));
      } else {
        this.#listener = Deno.listen({ hostname: c.hostname, port: c.port });
        this.#acceptLoop(this.#listener);
      }
      this.#running();
    } catch (err) {
      this.#listenFailed(err as Error);
    }
  }

  #running(): void {
    this.state = "running";
    this.error = "";
    this.#traffic.setHealthy(true);
  }

  #listenFailed(err: Error): void {
    const c = this.#cfg;
    this.state = "failed";
    this.#traffic.setHealthy(false);
    this.error = `listen tcp ${c.hostname}:${c.port}: ${err.message}`;
    this.#log(`httpserver ${this.name}: ${this.error}; retrying in ${LISTEN_RETRY_MS / 1000}s`);
    this.#retryTimer = setTimeout(() => this.#start(), LISTEN_RETRY_MS);
  }

  /** Several certificates (SNI) or client verification: node:tls; HTTP/1.1 through the loop, h2 through #adoptH2. */
  async #startNodeTls(pairs: CertPair[], clientCa: string | null): Promise<void> {
    const cfg = this.#cfg;
    let server: NodeTlsServer;
    try {
      const full = () =>
        this.#nodeTlsServer !== server || this.#conns.size + this.#h2conns.size >= this.#settings.maxConnections;
      server = await listenNodeTls({ hostname: cfg.hostname, port: cfg.port, pairs, clientCa }, {
        http1: (conn) => full() ? closeQuietly(conn) : this.#adopt(conn),
        h2: (socket) => full() ? socket.destroy() : this.#adoptH2(socket),
      });
    } catch (err) {
      if (this.state !== "closed") this.#listenFailed(err as Error);
      return;
    }
    if (this.state === "closed") {
      server.close();
      return;
    }
    this.#nodeTlsServer = server;
    this.#running();
  }

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    while (true) {
      while (this.#conns.size >= this.#settings.maxConnections) {
        await new Promise<void>((r) => (this.#acceptWaiter = r));
        this.#acceptWaiter = null;
        if (this.#listener !== listener) return;
      }
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (this.#listener !== listener || this.state === "closed") return;
        // EMFILE and the like: wait a little instead of spinning
        this.#log(`httpserver ${this.name}: accept: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (!this.#cfg.tls) (conn as Deno.TcpConn).setNoDelay(true);
      this.#adopt(conn);
    }
  }

  /** Serves a new connection until it ends. */
  #adopt(conn: Deno.Conn): void {
    const addr = conn.remoteAddr as Deno.NetAddr;
    const c = new ClientConn(
      conn,
      addr.hostname,
      addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`,
    );
    this.#conns.add(c);
    this.#serve(c).finally(() => {
      c.close();
      this.#conns.delete(c);
      this.#acceptWaiter?.();
    });
  }

  /** Serves an HTTP/2 connection of the node:tls listener: each stream is one request. */
  #adoptH2(socket: TLSSocket): void {
    const ip = (socket.remoteAddress ?? "").replace(/^::ffff:(?=\d+\.)/, "");
    const addr = ip.includes(":") ? `[${ip}]:${socket.remotePort}` : `${ip}:${socket.remotePort}`;
    const conn: Http2ServerConnection = new Http2ServerConnection(socket, {
      onStream: (s) => this.#serveH2(s, ip, addr),
      onClose: () => {
        this.#h2conns.delete(conn);
        this.#acceptWaiter?.();
      },
    });
    this.#h2conns.add(conn);
  }

  /** One HTTP/2 request: the head is complete; the body arrives through the stream's handler. */
  #serveH2(s: Http2Stream, ip: string, addr: string): void {
    const t0 = Date.now();
    const headers = new HeaderList();
    let method = "GET";
    let target = "/";
    let authority = "";
    for (let i = 0; i < s.headers.length; i += 2) {
      const k = s.headers[i];
      const v = s.headers[i + 1];
      if (k === ":method") method = v;
      else if (k === ":path") target = v;
      else if (k === ":authority") authority = v;
      else if (k[0] !== ":") headers.add(k, v);
    }
    if (!headers.has("host") && authority !== "") headers.add("Host", authority);
    const req = new GwRequest(method, target, "HTTP/2.0", headers, ip, addr, "https");
    // the body: kept up to the route's limit, counted beyond it, or a stream (limit -1). #exchange sets the limit
    // synchronously (before any DATA is handled) when it reads the body; an answer without reading it (403/404/405)
    // keeps nothing. The bytes kept count against the connection's MAX_BUFFERED_REQUEST_BYTES (1000 streams x 4 MiB
    // bodies would be 4 GB): beyond it, 413.
    const parts: Uint8Array[] = [];
    let size = 0;
    let limit = 0;
    let reserved = 0;
    let overBudget = false;
    let state: "open" | "ended" | "reset" = "open";
    let wake: (() => void) | null = null;
    let stream: H2BodyStream | null = null;
    let drained: (() => void) | null = null;
    // a reset (or the connection lost) while the pipeline runs: the client went away (499, the upstream cancelled)
    const gone = new AbortController();
    s.handler = {
      onData(chunk) {
        if (stream !== null) return stream.push(chunk);
        size += chunk.length;
        if (overBudget || (limit >= 0 && size > limit)) return;
        if (!s.reserveReceive(chunk.length)) overBudget = true;
        else {
          reserved += chunk.length;
          parts.push(chunk.slice());
        }
      },
      onEnd() {
        state = "ended";
        stream?.end();
        wake?.();
      },
      onReset() {
        state = "reset";
        gone.abort();
        stream?.fail("the client reset the stream");
        wake?.();
        drained?.();
      },
      onDrain() {
        drained?.();
      },
    };
    const idleMs = this.#cfg.keepAliveMs;
    const readBody = async (max: number): Promise<Uint8Array | number | BodyStream> => {
      limit = max;
      if (max < 0 && !s.remoteClosed) return stream = new H2BodyStream(s, declared < 0 ? -1 : declared, idleMs);
      if (state === "open") await new Promise<void>((r) => (wake = r));
      if (state === "reset") return 400;
      if (overBudget || (max >= 0 && size > max)) return 413;
      return concat(parts, size);
    };
    const cl = headers.get("content-length");
    const declared = cl === "" ? -1 : Number(cl);
    const answered = this.#exchange(req, declared, readBody, null, gone.signal);
    answered.finally(() => {
      overBudget = true; // answered: DATA still arriving is dropped
      s.reserveReceive(-reserved);
      stream?.stop();
    }).catch(() => {});
    answered.then(({ code, resp, ctx, route }) => {
      const fields = [":status", String(code)];
      if (resp !== undefined) {
        for (let i = 0; i < resp.headers.names.length; i++) {
          const k = resp.headers.keys[i];
          if (!SKIP_RESPONSE.has(k) && !H2_SKIP_RESPONSE.has(k)) fields.push(k, resp.headers.values[i]);
        }
      }
      const noBody = code === 204 || code === 304;
      const rx = stream !== null ? stream.consumed : req.body.length;
      const rstream = resp !== undefined && !noBody && method !== "HEAD" ? resp.stream : null;
      if (rstream !== null) {
        if (rstream.length >= 0) fields.push("content-length", String(rstream.length));
        s.respond(fields);
        pumpH2(s, rstream, (w) => (drained = w)).then((sent) =>
          this.#finishH2(req, target, code, ctx, route, t0, rx, sent)
        );
        return;
      }
      const body = resp !== undefined && !noBody ? resp.body : EMPTY;
      if (!noBody) fields.push("content-length", String(body.length));
      if (body.length === 0 || method === "HEAD") s.respond(fields, true);
      else {
        s.respond(fields);
        s.write(body.slice(), null, true); // queued output is not copied: the body may be an upstream buffer's view
      }
      this.#finishH2(req, target, code, ctx, route, t0, rx, method === "HEAD" ? 0 : body.length);
    }, (err) => {
      this.#log(`httpserver ${this.name}: ${(err as Error).stack ?? err}`);
      s.reset();
    });
  }

  /** After an HTTP/2 response of the node:tls listener went out: the context's release, statistics, access log. */
  #finishH2(
    req: GwRequest,
    target: string,
    code: number,
    ctx: Context | null,
    route: Route | null,
    t0: number,
    rx: number,
    sent: number,
  ): void {
    ctx?.finish();
    const ms = Date.now() - t0;
    this.#record(route, code, ms, rx, sent);
    this.#accessLog?.write(req, target, code, ms, rx, sent, ctx?.tags ?? undefined);
  }

  /**
   * A request whose head came through an HTTP/2 stack (Deno.serve's or ours): the ipFilter and routing, the body within
   * the limit (413), the pipeline. Returns the status, the response (none for a bare status) and the route.
   */
  async #exchange(
    req: GwRequest,
    declared: number,
    readBody: ((limit: number) => Promise<Uint8Array | number | BodyStream>) | null,
    web: WebUpgrade | null = null,
    signal: AbortSignal | null = null,
  ): Promise<{ code: number; resp: GwResponse | undefined; ctx: Context | null; route: Route | null }> {
    const settings = this.#settings;
    const found = search(req, settings);
    if (typeof found === "number") return { code: found, resp: undefined, ctx: null, route: null };
    let limit = this.#cfg.clientMaxBody;
    if (found.path.clientMaxBodySize !== 0) {
      limit = found.path.clientMaxBodySize < 0 ? -1 : found.path.clientMaxBodySize;
    }
    if (limit >= 0 && declared > limit) return { code: 413, resp: undefined, ctx: null, route: found };
    if (readBody !== null) {
      const b = await readBody(limit);
      if (typeof b === "number") return { code: b, resp: undefined, ctx: null, route: found };
      if (b instanceof Uint8Array) req.body = b;
      else req.stream = b;
    }
    const r = await this.#dispatch(req, found, settings, null, web, null, signal);
    if (typeof r === "number") return { code: r, resp: undefined, ctx: null, route: found };
    const resp = r.defaultResponse;
    return { code: resp?.status ?? 503, resp, ctx: r, route: found };
  }

  #sweep(): void {
    const now = Date.now();
    for (const c of this.#h2conns) c.checkTimeouts(now, DEFAULT_TIMEOUTS);
    for (const c of this.#conns) if ((!c.busy || c.reading) && c.deadline > 0 && now > c.deadline) c.close();
  }

  /** The client-gone tick (see GONE_TICK_MS); stops when no request is in flight. */
  #goneTick(): void {
    let busy = false;
    for (const c of this.#conns) {
      const ctx = c.ctx;
      if (ctx === null) {
        c.seen = null;
        continue;
      }
      busy = true;
      if (c.seen !== ctx) {
        c.seen = ctx;
        continue;
      }
      if (c.probing || ctx.clientGone || c.closed || c.end - c.start >= MAX_HEAD_BYTES) continue;
      c.probing = true;
      const tmp = new Uint8Array(PROBE_BYTES);
      c.probe = readSocket(c.conn, c.rid, tmp).catch(() => 0).then((n) => {
        c.probing = false;
        if (n > 0) {
          makeRoom(c, n); // a pipelined request: kept for the loop
          c.buf.set(tmp.subarray(0, n), c.end);
          c.end += n;
        } else if (c.ctx !== null) c.ctx.markClientGone();
        return n;
      });
    }
    if (!busy) {
      clearInterval(this.#goneTimer);
      this.#goneTimer = undefined;
    }
  }

  /** Reads more bytes into the connection buffer; false at EOF. */
  async #fill(c: ClientConn): Promise<boolean> {
    makeRoom(c);
    let n: number | null;
    try {
      n = await c.conn.read(c.buf.subarray(c.end));
    } catch {
      return false;
    }
    if (n === null) return false;
    c.end += n;
    return true;
  }

  async #serve(c: ClientConn): Promise<void> {
    const cfg = this.#cfg;
    const headTimeout = Math.min(HEAD_READ_TIMEOUT_MS, cfg.keepAliveMs);
    while (!c.closed) {
      // wait for a complete head
      if (c.start === c.end) {
        c.start = c.end = 0;
        if (c.buf.length > INITIAL_BUFFER * 4) c.buf = new Uint8Array(INITIAL_BUFFER);
      }
      c.deadline = c.start === c.end ? Date.now() + cfg.keepAliveMs : Date.now() + headTimeout;
      let headEnd = findHeadEnd(c.buf, c.start, c.end);
      let headStarted = c.start !== c.end;
      let readAt = 0;
      while (headEnd < 0) {
        if (c.end - c.start >= MAX_HEAD_BYTES) return this.#fail(c, 431);
        const scanFrom = Math.max(c.start, c.end - 3);
        let n: number;
        if (c.probe !== null) {
          // the client-gone probe's read (it appends what it read)
          const p = c.probe;
          c.probe = null;
          n = await p;
          if (n === 0) return;
        } else {
          // #fill, inlined: one async frame less per request
          makeRoom(c);
          try {
            n = await readSocket(c.conn, c.rid, c.end === 0 ? c.buf : c.buf.subarray(c.end));
          } catch {
            n = 0;
          }
          if (n === 0) return;
          c.end += n;
        }
        readAt = 0;
        if (!headStarted) {
          headStarted = true;
          c.deadline = (readAt = Date.now()) + headTimeout;
        }
        headEnd = findHeadEnd(c.buf, scanFrom, c.end);
      }
      if (headEnd - c.start > MAX_HEAD_BYTES) return this.#fail(c, 431);
      // a head that came whole in its first read: the clock was read then
      const t0 = readAt !== 0 ? readAt : Date.now();
      let head;
      try {
        head = parseRequestHead(c.buf, c.start, headEnd);
      } catch (err) {
        return this.#fail(c, err instanceof HttpParseError ? err.status : 400);
      }
      const reqBytes = headEnd - c.start;
      c.start = headEnd;
      const req = new GwRequest(
        head.method,
        head.target,
        head.proto,
        head.headers,
        c.remoteIp,
        c.remoteAddr,
        this.#scheme,
      );
      const settings = this.#settings;
      let status = 0;
      let route: Route | null = null;
      const found = search(req, settings);
      if (typeof found === "number") status = found;
      else route = found;
      // body
      let limit = cfg.clientMaxBody;
      if (route !== null && route.path.clientMaxBodySize !== 0) {
        limit = route.path.clientMaxBodySize < 0 ? -1 : route.path.clientMaxBodySize;
      }
      let closeAfter = head.close || !cfg.keepAlive;
      let stream: Http1BodyStream | null = null;
      if (head.bodyKind !== BodyKind.None) {
        if (head.headers.get("expect").toLowerCase() === "100-continue") {
          if (head.bodyKind === BodyKind.Length && limit >= 0 && head.contentLength > limit) {
            status = 413;
            closeAfter = true;
          } else await writeAll(c.conn, CONTINUE).catch(() => c.close());
        }
        if (status === 413) { /* answered without reading */ }
        else if (limit < 0) {
          req.stream = stream = new Http1BodyStream(c, head.bodyKind, head.contentLength, cfg.keepAliveMs);
        } else {
          const b = await this.#readBody(c, head.bodyKind, head.contentLength, limit);
          if (typeof b === "number") {
            if (b === 0) return; // EOF mid-body
            status = b;
            closeAfter = true;
          } else req.body = b;
        }
      }
      c.busy = true;
      let resp: GwResponse | undefined;
      let ctx: Context | null = null;
      if (status === 0) {
        const upgrade = head.headers.has("upgrade") ? { conn: c.conn, pending: c.buf.slice(c.start, c.end) } : null;
        // the probe may read the socket while the pipeline runs, unless something else reads it (body stream, upgrade)
        const r = await this.#dispatch(
          req,
          route!,
          settings,
          upgrade,
          null,
          stream === null && upgrade === null ? c : null,
          null,
        );
        c.ctx = null;
        if (typeof r === "number") status = r;
        else {
          ctx = r;
          if (ctx.hijacked !== null) {
            c.busy = true;
            await ctx.hijacked;
            this.#record(route, 101, Date.now() - t0, reqBytes, 0);
            this.#accessLog?.write(req, head.target, 101, Date.now() - t0, reqBytes, 0, ctx.tags ?? undefined);
            return;
          }
          resp = ctx.defaultResponse;
          if (resp === undefined) status = 503;
        }
      }
      if (stream !== null && !stream.done && !(await stream.drain())) closeAfter = true;
      const respBytes = resp === undefined
        ? await this.#write(c, status, undefined, head.method, closeAfter)
        : resp.stream === null || head.method === "HEAD"
        ? await this.#write(c, resp.status, resp, head.method, closeAfter)
        : await this.#writeStream(c, resp, resp.stream, head.proto, closeAfter);
      ctx?.finish();
      const code = resp !== undefined ? resp.status : status;
      const ms = Date.now() - t0;
      const rx = reqBytes + (stream !== null ? stream.consumed : req.body.length);
      this.#record(route, code, ms, rx, respBytes);
      this.#accessLog?.write(req, head.target, code, ms, rx, respBytes, ctx?.tags ?? undefined);
      c.busy = false;
      if (closeAfter || respBytes < 0) return;
    }
  }

  /**
   * After routing and the body: finds the pipeline (503 when missing), applies rewriteTarget, X-Forwarded-For and
   * setHeaders, and runs the pipeline. Returns the context (its DEFAULT response is the answer) or a status.
   */
  async #dispatch(
    req: GwRequest,
    route: Route,
    settings: Settings,
    upgrade: Context["upgrade"] = null,
    web: WebUpgrade | null = null,
    cc: ClientConn | null = null,
    signal: AbortSignal | null = null,
  ): Promise<Context | number> {
    const pipeline = settings.generated.get(route.path.backend) ?? this.#lookup(route.path.backend);
    if (pipeline === undefined) return 503;
    if (route.rewritten !== null) req.path = route.rewritten;
    if (settings.xForwardedFor) {
      const xff = req.headers.get("x-forwarded-for");
      const ip = req.realIp;
      if (xff === "") req.headers.set("X-Forwarded-For", ip);
      else if (!xff.includes(ip)) req.headers.set("X-Forwarded-For", xff + "," + ip);
    }
    const sh = route.path.setHeaders;
    for (let i = 0; i < sh.length; i++) {
      const v = sh[i][1].includes("$") ? expandVariables(sh[i][1], req, route.captures) : sh[i][1];
      if (v === "") req.headers.del(sh[i][0]);
      else req.headers.set(sh[i][0], v);
    }
    const ctx = new Context(req);
    ctx.upgrade = upgrade;
    ctx.webUpgrade = web;
    if (cc !== null) {
      cc.ctx = ctx;
      if (this.#goneTimer === undefined) this.#goneTimer = setInterval(() => this.#goneTick(), GONE_TICK_MS);
    }
    // Deno.serve's request: its signal aborts when the client goes away
    let onAbort: (() => void) | null = null;
    if (signal !== null) {
      if (signal.aborted) ctx.clientGone = true;
      else signal.addEventListener("abort", onAbort = () => ctx.markClientGone(), { once: true });
    }
    try {
      const r = pipeline.handle(ctx);
      if (typeof r !== "string") await r;
    } catch (err) {
      this.#log(`httpserver ${this.name}: pipeline ${pipeline.name}: ${(err as Error).stack ?? err}`);
    }
    if (onAbort !== null) signal!.removeEventListener("abort", onAbort);
    return ctx;
  }

  /** HTTPS (HTTP/2 by ALPN, or HTTP/1.1) through Deno.serve: the same routing and pipelines as the plain loop. */
  async #serveTls(request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Promise<Response> {
    const t0 = Date.now();
    const url = new URL(request.url);
    const headers = new HeaderList();
    request.headers.forEach((v, k) => headers.add(k, v));
    if (!headers.has("host")) headers.add("Host", url.host);
    const ip = info.remoteAddr.hostname;
    const req = new GwRequest(
      request.method,
      url.pathname + url.search,
      "HTTP/1.1",
      headers,
      ip,
      `${ip}:${info.remoteAddr.port}`,
      "https",
    );
    const cl = request.headers.get("content-length");
    const declared = cl === null ? -1 : Number(cl);
    const stream = request.body;
    const web = headers.get("upgrade").toLowerCase() === "websocket" ? { request, response: null } : null;
    const { code, resp, ctx, route } = await this.#exchange(
      req,
      declared,
      stream === null
        ? null
        : (limit) => limit < 0 ? Promise.resolve(webBodyStream(stream, declared)) : readLimited(stream, limit),
      web,
      request.signal,
    );
    if (web?.response) {
      // a WebSocketProxy took the connection over (wss://)
      ctx?.finish();
      this.#record(route, 101, Date.now() - t0, 0, 0);
      this.#accessLog?.write(req, url.pathname + url.search, 101, Date.now() - t0, 0, 0, ctx?.tags ?? undefined);
      return web.response;
    }
    const out = new Headers();
    if (resp !== undefined) {
      for (let i = 0; i < resp.headers.names.length; i++) {
        if (!SKIP_RESPONSE.has(resp.headers.keys[i])) out.append(resp.headers.names[i], resp.headers.values[i]);
      }
    }
    if (resp?.stream != null && code !== 204 && code !== 304 && request.method !== "HEAD") {
      // the stream's bytes are counted and the request finished once the client took them all (or went away)
      const done = (sent: number) => {
        ctx?.finish();
        const ms = Date.now() - t0;
        const rx = req.stream !== null ? req.stream.consumed : req.body.length;
        this.#record(route, code, ms, rx, sent);
        this.#accessLog?.write(req, url.pathname + url.search, code, ms, rx, sent, ctx?.tags ?? undefined);
      };
      if (resp.stream.length >= 0) out.set("content-length", String(resp.stream.length));
      return new Response(webStreamOf(resp.stream, done), { status: code, headers: out });
    }
    const body = resp !== undefined && resp.body.length > 0 && code !== 204 && code !== 304 ? resp.body.slice() : null;
    ctx?.finish();
    const ms = Date.now() - t0;
    this.#record(route, code, ms, req.body.length, body?.length ?? 0);
    this.#accessLog?.write(
      req,
      url.pathname + url.search,
      code,
      ms,
      req.body.length,
      body?.length ?? 0,
      ctx?.tags ?? undefined,
    );
    return new Response(body, { status: code, headers: out });
  }

  /** Reads a request body: the bytes, or 413 / 400, or 0 at EOF. */
  async #readBody(c: ClientConn, kind: BodyKind, length: number, limit: number): Promise<Uint8Array | number> {
    c.deadline = Date.now() + this.#cfg.keepAliveMs;
    if (kind === BodyKind.Length) {
      if (limit >= 0 && length > limit) return 413;
      const have = c.end - c.start;
      if (have >= length) {
        const b = c.buf.slice(c.start, c.start + length);
        c.start += length;
        return b;
      }
      const body = new Uint8Array(length);
      body.set(c.buf.subarray(c.start, c.end));
      let got = have;
      c.start = c.end = 0;
      while (got < length) {
        let n: number | null;
        try {
          n = await c.conn.read(body.subarray(got));
        } catch {
          n = null;
        }
        if (n === null) return 0;
        got += n;
        c.deadline = Date.now() + this.#cfg.keepAliveMs;
      }
      return body;
    }
    const dec = new ChunkedDecoder();
    try {
      while (true) {
        c.start = dec.decode(c.buf, c.start, c.end, limit);
        if (dec.done) return dec.body();
        if (!(await this.#fill(c))) return 0;
        c.deadline = Date.now() + this.#cfg.keepAliveMs;
      }
    } catch (err) {
      return err instanceof HttpParseError ? err.status : 400;
    }
  }

  /** Counts a finished request in the object's status and in its Prometheus series (per route: router kind, backend). */
  #record(route: Route | null, status: number, ms: number, reqBytes: number, respBytes: number): void {
    this.stats.record(status, ms, reqBytes, respBytes);
    const series = route !== null
      ? (route.path.traffic ??= this.#traffic.route(this.#routerKind(), route.path.backend))
      : (this.#unrouted ??= this.#traffic.route(this.#routerKind(), ""));
    series.record(status, ms, reqBytes, respBytes);
  }

  #routerKind(): string {
    return String(this.spec.routerKind || "Ordered");
  }

  /** Answers a malformed request and ends the connection. */
  async #fail(c: ClientConn, status: number): Promise<void> {
    c.busy = true;
    await this.#write(c, status, undefined, "GET", true);
    this.#record(null, status, 0, 0, 0);
  }

  /** Writes a response; returns the bytes written, or -1 when the connection broke. */
  async #write(
    c: ClientConn,
    status: number,
    resp: GwResponse | undefined,
    method: string,
    close: boolean,
  ): Promise<number> {
    const body = resp === undefined || method === "HEAD" ? EMPTY : resp.body;
    // the head's pieces are written into the buffer where they are (no head string to build and encode)
    const sl = statusLine(status);
    const cl = status !== 204 && status !== 304 && !(status < 200)
      ? String(resp === undefined ? 0 : resp.body.length)
      : "";
    const date = httpDateLine();
    const headLength = sl.length + (resp !== undefined ? resp.headers.serializedLength(SKIP_RESPONSE) : 0) +
      (cl !== "" ? CONTENT_LENGTH.length + cl.length + 2 : 0) + date.length + (close ? CONNECTION_CLOSE.length : 0) + 2;
    const n = headLength + body.length;
    try {
      if (n <= MAX_WRITE_BUFFER) {
        let w = c.wbuf;
        if (w === null || w.length < n) {
          c.wbuf = w = new Uint8Array(Math.max(512, 1 << (32 - Math.clz32(n))));
          c.wview = null;
        }
        responseHeadInto(w, sl, resp, cl, date, close);
        if (body.length > 0) w.set(body, headLength);
        let out = c.wview;
        if (out === null || out.length !== n) c.wview = out = w.subarray(0, n);
        const written = await c.conn.write(out);
        if (written < n) await writeRest(c.conn, out, written);
      } else {
        const head = new Uint8Array(headLength);
        responseHeadInto(head, sl, resp, cl, date, close);
        await writeAll(c.conn, head);
        await writeAll(c.conn, body);
      }
    } catch {
      return -1;
    }
    return n;
  }

  /**
   * Writes a response whose body is a stream (an upstream's, serverMaxBodySize -1), each read as it arrives: with its
   * Content-Length when known, else chunked (an HTTP/1.0 client: until the connection closes). The next read waits for
   * the client to take the last write, so a slow client slows the upstream instead of filling memory. A read error
   * (the upstream broke off) closes the connection without ending the body, so the client sees it cut. Returns the
   * bytes written, or -1 when the connection broke or was closed.
   */
  async #writeStream(
    c: ClientConn,
    resp: GwResponse,
    body: BodyStream,
    proto: string,
    close: boolean,
  ): Promise<number> {
    const status = resp.status;
    const hasBody = status !== 204 && status !== 304 && status >= 200;
    const chunked = hasBody && body.length < 0 && proto === "HTTP/1.1";
    if (hasBody && body.length < 0 && !chunked) close = true;
    let head = "HTTP/1.1 " + status + " " + (STATUS_TEXT[status] ?? "status code " + status) + "\r\n" +
      resp.headers.serialize(SKIP_RESPONSE);
    if (body.length >= 0 && hasBody) head += "Content-Length: " + body.length + "\r\n";
    if (chunked) head += "Transfer-Encoding: chunked\r\n";
    head += "Date: " + httpDate() + "\r\n";
    if (close) head += "Connection: close\r\n";
    head += "\r\n";
    let n = head.length;
    let frame: Uint8Array | null = null; // the chunked framing's buffer, reused: the chunk's size line, data, CRLF
    try {
      await writeAll(c.conn, encodeHead(head));
      while (hasBody) {
        let b: Uint8Array | null;
        try {
          b = await body.read();
        } catch {
          c.close();
          return -1;
        }
        if (b === null) break;
        if (b.length === 0) continue;
        let out = b;
        if (chunked) {
          if (frame === null || frame.length < b.length + 12) frame = new Uint8Array(b.length + 12);
          out = chunkFrame(b, frame);
        }
        await writeAll(c.conn, out);
        n += out.length;
      }
      if (chunked) {
        await writeAll(c.conn, LAST_CHUNK);
        n += LAST_CHUNK.length;
      }
    } catch {
      return -1;
    }
    if (close) c.close(); // the body's end is the connection's
    return n;
  }

  /** Status in Easegress's shape. */
  status(): Record<string, unknown> {
    return {
      name: this.name,
      health: this.error,
      state: this.state,
      ...(this.error ? { error: this.error } : {}),
      ...this.stats.read(),
    };
  }

  /** Stops listening, closes idle connections now and busy ones after the grace period. */
  async close(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
    this.state = "closed";
    for (const g of this.#settings.generated.values()) g.close();
    clearTimeout(this.#retryTimer);
    clearInterval(this.#sweepTimer);
    clearInterval(this.#goneTimer);
    this.#goneTimer = undefined;
    const l = this.#listener;
    this.#listener = null;
    if (l) closeQuietly(l);
    this.#nodeTlsServer?.close();
    this.#nodeTlsServer = null;
    for (const c of this.#h2conns) c.shutdown();
    this.#acceptWaiter?.();
    const tls = this.#tlsServer;
    this.#tlsServer = null;
    if (tls) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([tls.shutdown(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    const deadline = Date.now() + graceMs;
    while ((this.#conns.size > 0 || this.#h2conns.size > 0) && Date.now() < deadline) {
      for (const c of this.#conns) if (!c.busy) c.close();
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const c of this.#conns) c.close();
    for (const c of this.#h2conns) c.destroy();
  }
}

const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
const CONTENT_LENGTH = "Content-Length: ";
const CONNECTION_CLOSE = "Connection: close\r\n";

/** Writes a response head (from its status line, the response's headers, Content-Length when cl is set) into dst. */
function responseHeadInto(
  dst: Uint8Array,
  statusLine: string,
  resp: GwResponse | undefined,
  cl: string,
  dateLine: string,
  close: boolean,
): void {
  let o = putText(dst, 0, statusLine);
  if (resp !== undefined) o = resp.headers.serializeInto(dst, o, SKIP_RESPONSE);
  if (cl !== "") {
    o = putText(dst, o, CONTENT_LENGTH);
    o = putText(dst, o, cl);
    dst[o++] = 13;
    dst[o++] = 10;
  }
  o = putText(dst, o, dateLine);
  if (close) o = putText(dst, o, CONNECTION_CLOSE);
  dst[o++] = 13;
  dst[o] = 10;
}

/**
 * Sends a streamed response body as DATA of an HTTP/2 stream, one read at a time: the next read waits until the
 * client's flow-control window took the last one (`onDrain`, which `setWaiter` wires). A read error (the upstream
 * broke off) resets the stream, so the client sees the response as failed rather than short. Returns the bytes sent.
 */
async function pumpH2(
  s: Http2Stream,
  body: BodyStream,
  setWaiter: (wake: (() => void) | null) => void,
): Promise<number> {
  let sent = 0;
  try {
    while (!s.closed) {
      const b = await body.read();
      if (b === null) {
        s.end();
        break;
      }
      if (b.length === 0) continue;
      sent += b.length;
      if (!s.write(b.slice())) { // queued output is not copied, and the read buffer is reused
        await new Promise<void>((r) => setWaiter(r));
        setWaiter(null);
      }
    }
  } catch {
    s.reset(ErrorCode.INTERNAL_ERROR);
  }
  return sent;
}

/**
 * A streamed response body for Deno.serve: read when the client's side asks for more (no read ahead), each read copied
 * (the stream reuses its buffer). A read error errors the web stream, so Deno.serve breaks the response off. `done`
 * gets the bytes sent, once: at the end, on the error, or when the client went away.
 */
function webStreamOf(body: BodyStream, done: (sent: number) => void): ReadableStream<Uint8Array> {
  let sent = 0;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done(sent);
  };
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      let b: Uint8Array | null;
      try {
        b = await body.read();
      } catch (err) {
        ctrl.error(err);
        finish();
        return;
      }
      if (b === null) {
        ctrl.close();
        finish();
      } else {
        sent += b.length;
        ctrl.enqueue(b.slice());
      }
    },
    cancel: finish,
  }, { highWaterMark: 0 });
}

/** Frames one chunk of a chunked body into `dst` (room for the data and 12 bytes): size line, data, CRLF. */
function chunkFrame(b: Uint8Array, dst: Uint8Array): Uint8Array {
  const size = b.length.toString(16) + "\r\n";
  encodeHeadInto(size, dst);
  dst.set(b, size.length);
  const end = size.length + b.length;
  dst[end] = 13;
  dst[end + 1] = 10;
  return dst.subarray(0, end + 2);
}

const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");
