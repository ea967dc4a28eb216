/**
 * WebSocketProxy (kind `WebSocketProxy`): a WebSocket upgrade request is relayed to a server of the main pool (or of
 * the first candidate pool whose filter matches): the request head goes to the server with X-Forwarded-For,
 * X-Forwarded-Host and X-Forwarded-Proto, the server's 101 answer goes back, and then bytes flow both ways until either
 * side closes. Results: `internalError` (no server, 503), `clientError` (not an upgrade request, 400), `serverError`
 * (the server cannot be reached, 503). Differs from Easegress in that frames are relayed as bytes rather than
 * re-framed, so message size limits are the ends' own.
 */
import type { Context } from "../context.ts";
import { HOP_BY_HOP } from "../http1.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import { LoadBalancer, type Server } from "./proxy/balancer.ts";
import { parseServer } from "./proxy/pool.ts";
import { closeQuietly, encodeHead, writeAll } from "./proxy/upstream.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

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

  constructor(spec: FilterSpec) {
    const pools = (spec.pools ?? []) as Obj[];
    if (pools.filter((p) => !p.filter).length !== 1) throw new Error("one and only one mainPool is required");
    // candidates first, the main pool last
    this.#pools = [...pools.filter((p) => p.filter), ...pools.filter((p) => !p.filter)].map((p) => {
      const servers = ((p.servers ?? []) as Obj[]).map(parseServer);
      if (servers.length === 0) throw new Error("servers are required");
      const headers = Object.entries((p.filter?.headers ?? {}) as Record<string, Obj>);
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
    if (ctx.upgrade === null || req.headers.get("upgrade").toLowerCase() !== "websocket") {
      return this.#fail(ctx, 400, "clientError");
    }
    const pool = this.#pools.find((p) => p.match === null || p.match(ctx))!;
    const server: Server | undefined = pool.lb.choose(req);
    if (server === undefined) return this.#fail(ctx, 503, "internalError");
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
}

export const webSocketProxyKind: FilterKind = {
  kind: "WebSocketProxy",
  results: ["internalError", "clientError"],
  create: (spec) => new WebSocketProxy(spec),
};
