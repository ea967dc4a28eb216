/**
 * The Proxy filter (kind `Proxy`): one main pool, candidate pools chosen by their request matcher, an optional mirror
 * pool served asynchronously, gzip compression of responses and the upstream transport (mtls, idle connections).
 */
import { gzipSync } from "node:zlib";
import { Buffer } from "node:buffer";
import { type Context, GwRequest } from "../../context.ts";
import type { Filter, FilterEnv, FilterKind, FilterSpec } from "../filter.ts";
import type { ProxySpec } from "../../../easegress/specs/mod.ts";
import { DEFAULT_MAX_BODY, type ProxyTransport, ServerPool } from "./pool.ts";
import { IdleBudget, type Origin, type UpstreamTls } from "./upstream.ts";
import { transformStream } from "../gzip.ts";

class Proxy implements Filter {
  #main!: ServerPool;
  #candidates: ServerPool[] = [];
  #mirror: ServerPool | null = null;
  #transport: ProxyTransport;
  #minCompress = -1;
  #name: string;

  constructor(spec: FilterSpec<ProxySpec>, env: FilterEnv) {
    this.#name = spec.name;
    let tls: UpstreamTls | null = null;
    if (spec.mtls) {
      const m = spec.mtls;
      if (!m.certBase64 || !m.keyBase64 || !m.rootCertBase64) {
        throw new Error("mtls: certBase64, keyBase64 and rootCertBase64 are required");
      }
      const dec = (s: string) => Buffer.from(s, "base64").toString("utf8");
      tls = {
        cert: dec(m.certBase64),
        key: dec(m.keyBase64),
        caCerts: [dec(m.rootCertBase64)],
        insecure: m.insecureSkipVerify === true,
      };
    }
    const smbs = Number(spec.serverMaxBodySize ?? 0);
    this.#transport = {
      origins: new Map<string, Origin>(),
      tls,
      maxIdleConnsPerHost: Number(spec.maxIdleConnsPerHost ?? 1024) || 1024,
      idle: new IdleBudget(Number(spec.maxIdleConns ?? 10240) || 0),
      serverMaxBodySize: smbs === 0 ? DEFAULT_MAX_BODY : smbs < 0 ? -1 : smbs,
    };
    const pools = (spec.pools ?? []) as Record<string, unknown>[];
    const mains = pools.filter((p) => !p.filter);
    if (mains.length !== 1) throw new Error("one and only one mainPool is required");
    const created: ServerPool[] = [];
    try {
      let ci = 0;
      for (const p of pools) {
        const pool = new ServerPool(
          p.filter ? `candidate#${ci++}` : "main",
          p,
          this.#transport,
          env.resilience,
        );
        created.push(pool);
        if (p.filter) this.#candidates.push(pool);
        else this.#main = pool;
      }
      if (spec.mirrorPool) {
        if (!spec.mirrorPool.filter) throw new Error("filter of mirrorPool is required");
        if (spec.mirrorPool.memoryCache) throw new Error("memoryCache must be empty in mirrorPool");
        this.#mirror = new ServerPool("mirror", spec.mirrorPool, this.#transport, env.resilience);
        created.push(this.#mirror);
      }
    } catch (err) {
      for (const p of created) p.close();
      throw err;
    }
    if (spec.compression) this.#minCompress = Number(spec.compression.minLength ?? 0);
  }

  handle(ctx: Context): Promise<string> | string {
    const mirror = this.#mirror;
    if (mirror !== null && mirror.matcher!.match(ctx)) this.#mirrorRequest(ctx, mirror);
    let pool = this.#main;
    for (const c of this.#candidates) {
      if (c.matcher!.match(ctx)) {
        pool = c;
        break;
      }
    }
    if (this.#minCompress < 0) return pool.handle(ctx, this.#name);
    return pool.handle(ctx, this.#name).then((r) => {
      this.#compress(ctx);
      return r;
    });
  }

  /** The mirror gets a copy of the request in a context of its own; its response is dropped. */
  #mirrorRequest(ctx: Context, mirror: ServerPool): void {
    const req = ctx.request;
    const copy = new (ctx.constructor as typeof Context)(req.stream === null ? req : streamStandIn(req));
    mirror.handle(copy, this.#name).catch(() => {}).finally(() => copy.finish());
  }

  #compress(ctx: Context): void {
    const resp = ctx.response;
    if (resp === undefined) return;
    const stream = resp.stream;
    if (
      stream !== null ? stream.length >= 0 && stream.length < this.#minCompress : resp.body.length < this.#minCompress
    ) {
      return;
    }
    const ae = ctx.request.headers.get("accept-encoding");
    if (ae !== "" && !ae.includes("gzip") && !ae.includes("*/*")) return;
    if (resp.headers.get("content-encoding").includes("gzip")) return;
    if (stream !== null) {
      // compressed as the client takes it (an encoded stream stays as it is: gzip over br is of no use to a client)
      resp.stream = transformStream(resp.headers, stream, "compress");
      if (resp.stream === stream) return;
      resp.headers.add("Vary", "Content-Encoding");
      ctx.addTag("gzip");
      return;
    }
    resp.body = gzipSync(resp.body);
    resp.headers.set("Content-Encoding", "gzip");
    resp.headers.add("Vary", "Content-Encoding");
    ctx.addTag("gzip");
  }

  status(): unknown {
    const stat = (p: ServerPool) => ({ stat: p.stat });
    return {
      mainPool: stat(this.#main),
      candidatePools: this.#candidates.map(stat),
      ...(this.#mirror ? { mirrorPool: stat(this.#mirror) } : {}),
    };
  }

  close(): void {
    this.#main.close();
    for (const c of this.#candidates) c.close();
    this.#mirror?.close();
    for (const o of this.#transport.origins.values()) o.close();
  }
}

export const proxyKind: FilterKind<ProxySpec> = {
  kind: "Proxy",
  results: ["internalError", "clientError", "serverError", "failureCode", "timeout", "shortCircuited"],
  create: (spec, env) => new Proxy(spec, env),
};

const STREAM_TO_MIRROR = new TextEncoder().encode("cannot send a stream body to mirror");

/** What the mirror gets for a request whose body is a stream (read once, by the main pool): Easegress's text. */
function streamStandIn(req: GwRequest): GwRequest {
  const r = new GwRequest(
    req.method,
    req.requestUri,
    req.proto,
    req.headers.clone(),
    req.remoteIp,
    req.remoteAddr,
    req.scheme,
  );
  r.host = req.host;
  r.body = STREAM_TO_MIRROR;
  return r;
}
