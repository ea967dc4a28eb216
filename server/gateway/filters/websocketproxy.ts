/**
 * WebSocketProxy (kind `WebSocketProxy`): a WebSocket upgrade request is relayed to a server of the main pool (or of
 * the first candidate pool whose filter matches): the request head goes to the server with X-Forwarded-For,
 * X-Forwarded-Host and X-Forwarded-Proto, the server's 101 answer goes back, and then bytes flow both ways until either
 * side closes. Results: `internalError` (no server, 503), `clientError` (not an upgrade request, 400), `serverError`
 * (the server cannot be reached, 503). On plain HTTP/1.1 and the node:tls listener, frames are relayed as bytes rather
 * than re-framed (unlike Easegress), so message size limits are the ends' own. Through Deno.serve (HTTPS with one
 * certificate, where the socket is not ours) the gateway opens the WebSocket to the server first (the client's
 * subprotocols, headers and X-Forwarded-*), then upgrades the client with the protocol the server chose, and relays
 * messages (text and binary) and the close between the two.
 */
import type { Context, WebUpgrade } from "../context.ts";
import { HOP_BY_HOP } from "../http1.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { StringMatcher as StringMatcherSpec, WebSocketProxySpec } from "../../easegress/specs/mod.ts";
import { LoadBalancer, type Server } from "./proxy/balancer.ts";
import { parseServer } from "./proxy/pool.ts";
import { closeQuietly, encodeHead, writeAll } from "./proxy/upstream.ts";

/** Relay buffer per direction of a tunnel. */
const RELAY_BUFFER = 16 * 1024;

/** Headers of the client request not copied (the hop-by-hop ones except the upgrade pair, which the server needs). */
const SKIP = new Set([...HOP_BY_HOP, "host"].filter((h) => h !== "upgrade" && h !== "connection"));

interface WsPool {
  lb: LoadBalancer;
  match: ((ctx: Context) => boolean) | null;
}

async function relay(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(RELAY_BUFFER);
  while (true) {
    const n = await from.read(buf).catch(() => null);
    if (n === null) return;
    await writeAll(to, buf.subarray(0, n));
  }
}

class WebSocketProxy implements Filter {
  #pools: WsPool[];

  constructor(spec: FilterSpec<WebSocketProxySpec>) {
    const pools = spec.pools ?? [];
    if (pools.filter((p) => !p.filter).length !== 1) throw new Error("one and only one mainPool is required");
    // candidates first, the main pool last
    this.#pools = [...pools.filter((p) => p.filter), ...pools.filter((p) => !p.filter)].map((p) => {
      const servers = (p.servers ?? []).map(parseServer);
      if (servers.length === 0) throw new Error("servers are required");
      // a header's matcher as given: a field is checked only when present
      const headers = Object.entries(p.filter?.headers ?? {}) as [string, Partial<StringMatcherSpec>][];
      return {
        lb: new LoadBalancer(p.loadBalance, servers),
        match: p.filter
          ? (ctx: Context) =>
            headers.some(([k, m]) => {
              const v = ctx.request.headers.get(k.toLowerCase());
              return (m.exact !== undefined && v === m.exact) || (m.prefix !== undefined && v.startsWith(m.prefix)) ||
                (m.regex !== undefined && new RegExp(m.regex).test(v));
            })
          : null,
      };
    });
  }

  #fail(ctx: Context, status: number, result: string): string {
    const r = ctx.outputResponse();
    r.status = status;
    r.body = new Uint8Array(0);
    return result;
  }

  async handle(ctx: Context): Promise<string> {
    const req = ctx.request;
    if (
      (ctx.upgrade === null && ctx.webUpgrade === null) || req.headers.get("upgrade").toLowerCase() !== "websocket"
    ) {
      return this.#fail(ctx, 400, "clientError");
    }
    const pool = this.#pools.find((p) => p.match === null || p.match(ctx))!;
    const server: Server | undefined = pool.lb.choose(req);
    if (server === undefined) return this.#fail(ctx, 503, "internalError");
    if (ctx.upgrade === null) return this.#relayMessages(ctx, ctx.webUpgrade!, server);
    let upstream: Deno.Conn;
    try {
      upstream = server.https
        ? await Deno.connectTls({ hostname: server.hostname, port: server.port })
        : await Deno.connect({ hostname: server.hostname, port: server.port });
    } catch (err) {
      ctx.addTag(`websocket: ${(err as Error).message}`);
      return this.#fail(ctx, 503, "serverError");
    }
    const host = server.keepHost || server.isIp ? req.host : server.hostPort;
    const xff = req.headers.get("x-forwarded-for");
    let head = `${req.method} ${server.basePath}${req.requestUri} HTTP/1.1\r\nHost: ${host}\r\n` +
      req.headers.serialize(SKIP);
    head += `X-Forwarded-For: ${xff === "" ? req.remoteIp : `${xff}, ${req.remoteIp}`}\r\n`;
    if (!req.headers.has("x-forwarded-host")) head += `X-Forwarded-Host: ${req.host}\r\n`;
    head += `X-Forwarded-Proto: ${req.scheme}\r\n\r\n`;
    const client = ctx.upgrade.conn;
    const pending = ctx.upgrade.pending;
    ctx.hijacked = (async () => {
      try {
        await writeAll(upstream, encodeHead(head));
        if (pending.length > 0) await writeAll(upstream, pending);
        await Promise.race([relay(client, upstream), relay(upstream, client)]);
      } catch {
        /* either side broke: both are closed below */
      } finally {
        closeQuietly(upstream);
        closeQuietly(client);
      }
    })();
    return "";
  }

  /**
   * Deno.serve's side: a WebSocket to the server, then the client's upgrade with the server's protocol, then messages
   * both ways.
   */
  async #relayMessages(ctx: Context, web: WebUpgrade, server: Server): Promise<string> {
    const req = ctx.request;
    const url = `${server.https ? "wss" : "ws"}://${server.hostPort}${server.basePath}${req.requestUri}`;
    const headers: Record<string, string> = {};
    for (let i = 0; i < req.headers.keys.length; i++) {
      const k = req.headers.keys[i];
      if (!SKIP.has(k) && !k.startsWith("sec-websocket-") && k !== "upgrade" && k !== "connection") {
        headers[req.headers.names[i]] = req.headers.values[i];
      }
    }
    const xff = req.headers.get("x-forwarded-for");
    headers["X-Forwarded-For"] = xff === "" ? req.remoteIp : `${xff}, ${req.remoteIp}`;
    if (!req.headers.has("x-forwarded-host")) headers["X-Forwarded-Host"] = req.host;
    headers["X-Forwarded-Proto"] = req.scheme;
    const protocols = req.headers.get("sec-websocket-protocol").split(",").map((p) => p.trim()).filter((p) => p);
    let upstream: WebSocket;
    try {
      upstream = await openWebSocket(url, protocols, headers);
    } catch (err) {
      ctx.addTag(`websocket: ${(err as Error).message}`);
      return this.#fail(ctx, 503, "serverError");
    }
    let client: WebSocket;
    try {
      const up = Deno.upgradeWebSocket(web.request, upstream.protocol ? { protocol: upstream.protocol } : {});
      client = up.socket;
      web.response = up.response;
    } catch (err) {
      upstream.close();
      ctx.addTag(`websocket: ${(err as Error).message}`);
      return this.#fail(ctx, 400, "clientError");
    }
    bridge(client, upstream);
    return "";
  }
}

/** Opens a WebSocket; rejects when it closes or fails before it opened. */
function openWebSocket(url: string, protocols: string[], headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    // Deno's WebSocket takes request headers as an extension of the standard options
    const ws = new WebSocket(url, { protocols, headers } as unknown as string[]);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = (e) => reject(new Error((e as ErrorEvent).message || `cannot connect to ${url}`));
    ws.onclose = () => reject(new Error(`${url} closed the connection`));
  });
}

/** A close code an endpoint may send (the WebSocket API allows 1000 and 3000–4999); else 1000. */
function sendableCode(code: number): number {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000;
}

/** Relays messages between the client (opening) and the server (open) and closes each when the other closes. */
function bridge(client: WebSocket, server: WebSocket): void {
  client.binaryType = "arraybuffer";
  const early: (string | ArrayBuffer)[] = [];
  client.onopen = () => {
    for (const m of early) client.send(m);
    early.length = 0;
  };
  client.onmessage = (e) => {
    if (server.readyState === WebSocket.OPEN) server.send(e.data);
  };
  server.onmessage = (e) => {
    if (client.readyState === WebSocket.OPEN) client.send(e.data);
    else if (client.readyState === WebSocket.CONNECTING) early.push(e.data);
  };
  const closeOther = (other: WebSocket) => (e: CloseEvent) => {
    if (other.readyState === WebSocket.OPEN || other.readyState === WebSocket.CONNECTING) {
      other.close(sendableCode(e.code), e.reason);
    }
  };
  client.onclose = closeOther(server);
  server.onclose = closeOther(client);
  client.onerror = () => {};
  server.onerror = () => {};
}

export const webSocketProxyKind: FilterKind<WebSocketProxySpec> = {
  kind: "WebSocketProxy",
  results: ["internalError", "clientError"],
  create: (spec) => new WebSocketProxy(spec),
};
