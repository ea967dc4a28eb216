/**
 * A Proxy server pool (Easegress `proxies/httpproxy/pool.go`): servers and their load balancer, the request matcher
 * of candidate and mirror pools, health check, timeout, retry and circuit breaker, failure codes, the memory cache,
 * and the round trip itself: build the upstream head from the request, send it on a pooled connection, map the
 * outcome to a result and a status (503 serverError, 408 timeout, 500 internalError, failureCode...).
 */
import { type Context, type GwRequest, GwResponse, isIp } from "../../context.ts";
import { connectionTokens, HeaderList, HOP_BY_HOP, putText } from "../../http1.ts";
import { parseGoDuration } from "../../../easegress/gotime.ts";
import type { CircuitBreaker, ResiliencePolicies, RetryPolicy } from "../../pipeline/resilience.ts";
import { fnv32a, LoadBalancer, type Server } from "./balancer.ts";
import { HealthChecker } from "./healthcheck.ts";
import {
  type IdleBudget,
  Origin,
  OutgoingHead,
  UpstreamError,
  UpstreamFailure,
  type UpstreamResponse,
  type UpstreamTls,
} from "./upstream.ts";
import { MemoryCache } from "./memorycache.ts";

import type {
  RequestMatcherSpec,
  ServerPoolSpec,
  ServerSpec,
  Stored,
  StringMatcher as StringMatcherSpec,
} from "../../../easegress/specs/mod.ts";

/** Default request and response body limit: 4 MiB. */
export const DEFAULT_MAX_BODY = 4 * 1024 * 1024;

/** Request headers never copied into the upstream head (we write Host and Content-Length; the body is complete). */
const SKIP_UPSTREAM = new Set([...HOP_BY_HOP, "host", "content-length", "expect"]);
/** Response headers not kept from the upstream (we frame the body ourselves). */
const SKIP_DOWNSTREAM = new Set([...HOP_BY_HOP, "content-length"]);

/** Transport settings shared by a Proxy's pools. */
export interface ProxyTransport {
  origins: Map<string, Origin>;
  tls: UpstreamTls | null;
  maxIdleConnsPerHost: number;
  /** the idle connections of all origins, capped by maxIdleConns */
  idle: IdleBudget;
  serverMaxBodySize: number;
}

/** Counters of a pool (its `stat` in the status). */
export interface PoolStat {
  count: number;
  errCount: number;
  codes: Record<string, number>;
}

/** A string matcher {exact, prefix, regex, empty}. */
export class StringMatcher {
  #exact: string;
  #prefix: string;
  #re: RegExp | null;
  #empty: boolean;
  constructor(spec: Stored<StringMatcherSpec> | null | undefined) {
    this.#exact = String(spec?.exact ?? "");
    this.#prefix = String(spec?.prefix ?? "");
    this.#re = spec?.regex ? new RegExp(spec.regex) : null;
    this.#empty = spec?.empty === true;
    if (this.#empty && (this.#exact || this.#prefix || this.#re)) {
      throw new Error("empty is conflict with other patterns");
    }
  }
  match(v: string): boolean {
    if (this.#empty && v === "") return true;
    if (this.#exact !== "" && v === this.#exact) return true;
    if (this.#prefix !== "" && v.startsWith(this.#prefix)) return true;
    return this.#re !== null && this.#re.test(v);
  }
}

/** The `filter` of candidate and mirror pools. */
class RequestMatcher {
  #policy: string;
  #headers: [string, StringMatcher][];
  #matchAll: boolean;
  #urls: { methods: string[]; url: StringMatcher }[];
  #permil: number;
  #headerKey: string;

  constructor(spec: Stored<RequestMatcherSpec>) {
    this.#policy = String(spec.policy ?? "general") || "general";
    this.#headers = Object.entries(spec.headers ?? {}).map((
      [k, v],
    ) => [k.toLowerCase(), new StringMatcher(v)]);
    this.#matchAll = spec.matchAllHeaders === true;
    this.#urls = (spec.urls ?? []).map((u) => ({ methods: u.methods ?? [], url: new StringMatcher(u.url) }));
    this.#permil = Number(spec.permil ?? 0);
    this.#headerKey = String(spec.headerHashKey ?? "").toLowerCase();
    if (this.#policy === "general" && this.#headers.length === 0) throw new Error("headers are required");
    if (this.#policy !== "general" && !(this.#permil > 0)) throw new Error("permil must be greater than 0");
  }

  match(ctx: Context): boolean {
    const req = ctx.request;
    switch (this.#policy) {
      case "random":
        return Math.floor(Math.random() * 1000) < this.#permil;
      case "ipHash":
        return fnv32a(req.realIp) % 1000 < this.#permil;
      case "headerHash":
        return fnv32a(req.headers.get(this.#headerKey)) % 1000 < this.#permil;
    }
    const one = ([k, m]: [string, StringMatcher]) => {
      const vs = req.headers.getAll(k);
      return vs.length === 0 ? m.match("") : vs.some((v) => m.match(v));
    };
    const headersOk = this.#matchAll ? this.#headers.every(one) : this.#headers.some(one);
    if (!headersOk) return false;
    if (this.#urls.length === 0) return true;
    return this.#urls.some((u) => (u.methods.length === 0 || u.methods.includes(req.method)) && u.url.match(req.path));
  }
}

/** A pool's server entry. */
export function parseServer(spec: Stored<ServerSpec>): Server {
  let u: URL;
  try {
    u = new URL(String(spec.url));
  } catch {
    throw new Error(`invalid server url ${spec.url}`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`invalid server url ${spec.url}`);
  const https = u.protocol === "https:";
  const port = u.port ? Number(u.port) : https ? 443 : 80;
  const hostname = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
  const basePath = u.pathname === "/" && !String(spec.url).replace(/^https?:\/\/[^/]*/, "").startsWith("/")
    ? ""
    : u.pathname;
  return {
    url: String(spec.url),
    origin: `${u.protocol}//${u.host}`,
    hostname,
    port,
    https,
    hostPort: u.host,
    basePath,
    isIp: isIp(hostname),
    weight: Number(spec.weight ?? 0),
    keepHost: spec.keepHost === true,
    tags: spec.tags ?? [],
  };
}

function failureCodeSet(codes: unknown): Set<number> | null {
  if (!Array.isArray(codes) || codes.length === 0) return null;
  return new Set(codes.map(Number));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A pool of a Proxy filter. */
export class ServerPool {
  readonly name: string;
  readonly servers: Server[];
  readonly lb: LoadBalancer;
  readonly matcher: RequestMatcher | null;
  readonly stat: PoolStat = { count: 0, errCount: 0, codes: {} };
  #transport: ProxyTransport;
  #timeoutMs: number;
  #retry: RetryPolicy | null = null;
  #breaker: CircuitBreaker | null = null;
  #failureCodes: Set<number> | null;
  #maxBody: number;
  #setUpstreamHost: boolean;
  #health: HealthChecker | null = null;
  #cache: MemoryCache | null;

  constructor(name: string, spec: Stored<ServerPoolSpec>, transport: ProxyTransport, resilience: ResiliencePolicies) {
    this.name = name;
    this.#transport = transport;
    const servers = spec.servers ?? [];
    if (servers.length === 0 && !spec.serviceName) throw new Error("both serviceName and servers are empty");
    if (spec.serviceName) {
      throw new Error("serviceRegistry is not supported: service discovery needs an outside system");
    }
    this.servers = servers.map(parseServer);
    const weighted = this.servers.filter((s) => s.weight > 0).length;
    if (weighted > 0 && weighted < this.servers.length) {
      throw new Error(`not all servers have weight(${weighted}/${this.servers.length})`);
    }
    this.lb = new LoadBalancer(spec.loadBalance, this.servers);
    this.matcher = spec.filter ? new RequestMatcher(spec.filter) : null;
    this.#timeoutMs = spec.timeout ? parseGoDuration(String(spec.timeout)) : 0;
    if (spec.retryPolicy) {
      this.#retry = resilience.retry.get(spec.retryPolicy) ?? null;
      if (!this.#retry) throw new Error(`retry policy ${spec.retryPolicy} not found`);
    }
    if (spec.circuitBreakerPolicy) {
      const p = resilience.breakers.get(spec.circuitBreakerPolicy);
      if (!p) throw new Error(`circuit breaker policy ${spec.circuitBreakerPolicy} not found`);
      this.#breaker = p.newBreaker();
    }
    this.#failureCodes = failureCodeSet(spec.failureCodes);
    this.#maxBody = spec.serverMaxBodySize ? Number(spec.serverMaxBodySize) : transport.serverMaxBodySize;
    this.#setUpstreamHost = spec.setUpstreamHost === true;
    this.#cache = spec.memoryCache ? new MemoryCache(spec.memoryCache) : null;
    const hc = spec.healthCheck ?? spec.loadBalance?.healthCheck;
    if (hc) this.#health = new HealthChecker(hc, this.servers, transport.tls, (healthy) => this.lb.setHealthy(healthy));
  }

  #origin(s: Server): Origin {
    let o = this.#transport.origins.get(s.origin);
    if (o === undefined) {
      const tls = s.https ? this.#transport.tls ?? { insecure: true } : null;
      o = new Origin(s.hostname, s.port, tls, this.#transport.maxIdleConnsPerHost, this.#transport.idle);
      this.#transport.origins.set(s.origin, o);
    }
    return o;
  }

  #isFailure(status: number): boolean {
    return this.#failureCodes === null ? status >= 500 && status <= 599 : this.#failureCodes.has(status);
  }

  /** Serves the request from this pool: the response goes to the active namespace. Returns the filter result. */
  handle(ctx: Context, proxyName: string): Promise<string> {
    // the common case without cache, breaker or retry: one attempt, no extra async frame
    if (this.#cache === null && this.#breaker === null && this.#retry === null) {
      this.stat.count++;
      return this.#attempt(ctx, proxyName);
    }
    return this.#handleResilient(ctx, proxyName);
  }

  async #handleResilient(ctx: Context, proxyName: string): Promise<string> {
    const req = ctx.request;
    this.stat.count++;
    if (this.#cache !== null) {
      const hit = this.#cache.load(req);
      if (hit !== undefined) {
        setResponse(ctx, hit.status, hit.headers.clone(), hit.body);
        return this.#isFailure(hit.status) ? this.#fail("failureCode", hit.status) : "";
      }
    }
    const breaker = this.#breaker;
    let permit = 0;
    if (breaker !== null) {
      permit = breaker.acquire();
      if (permit < 0) {
        ctx.addTag("short circuited");
        return this.#failStatus(ctx, "shortCircuited", 503);
      }
    }
    const started = breaker !== null ? performance.now() : 0;
    // a streamed body can be sent once: no retry (as Easegress)
    const maxAttempts = req.stream !== null ? 1 : this.#retry?.maxAttempts ?? 1;
    let result = "";
    const before = ctx.response;
    for (let attempt = 1;; attempt++) {
      if (attempt > 1 && before === undefined) ctx.response = undefined;
      result = await this.#attempt(ctx, proxyName);
      if (result === "" || result === "clientError" || attempt >= maxAttempts) break;
      await sleep(this.#retry!.waitFor(attempt));
    }
    if (breaker !== null) breaker.record(permit, result !== "", performance.now() - started);
    return result;
  }

  async #attempt(ctx: Context, proxyName: string): Promise<string> {
    const req = ctx.request;
    const server = this.lb.choose(req);
    if (server === undefined) return this.#failStatus(ctx, "internalError", 503);
    const host = server.keepHost || (server.isIp && !this.#setUpstreamHost) ? req.host : server.hostPort;
    const body = req.body;
    const stream = req.stream;
    let framing = "";
    if (stream !== null) {
      framing = stream.length >= 0 ? "Content-Length: " + stream.length + "\r\n" : "Transfer-Encoding: chunked\r\n";
    } else if (body.length > 0 || req.method === "POST" || req.method === "PUT" || req.method === "PATCH") {
      framing = "Content-Length: " + body.length + "\r\n";
    }
    // a mirror's request is the main flow's (see OutgoingHead)
    const head = new UpstreamHead(req, server.basePath, host, framing, this.name === "mirror");
    let resp: UpstreamResponse;
    try {
      resp = await this.#origin(server).roundTrip(
        head,
        body,
        req.method,
        this.#maxBody,
        this.#timeoutMs,
        stream,
        this.name === "mirror" ? null : ctx,
      );
    } catch (err) {
      if (ctx.clientGone) return this.#failStatus(ctx, "clientError", 499);
      const f = err instanceof UpstreamError ? err.failure : UpstreamFailure.Io;
      if (f === UpstreamFailure.Timeout) return this.#failStatus(ctx, "timeout", 408);
      if (f === UpstreamFailure.TooLarge || f === UpstreamFailure.Body) {
        ctx.addTag(`trace ${(err as Error).message}`);
        return this.#failStatus(ctx, "internalError", 500);
      }
      ctx.addTag(`trace ${(err as Error).message}`);
      return this.#failStatus(ctx, "serverError", 503);
    }
    if (resp.release !== null) ctx.onFinish(resp.release);
    // the parsed head is ours: the hop-by-hop fields and the framing are removed in place
    const headers = resp.headers;
    headers.removeKeys(SKIP_DOWNSTREAM, connectionTokens(headers));
    const out = setResponse(ctx, resp.status, headers, resp.body);
    if (resp.stream !== null) out.stream = resp.stream; // not cached (as Easegress)
    else this.#cache?.store(req, resp.status, headers, resp.body);
    this.lb.onResponse(out, server);
    ctx.addTag(this.#statusTag(proxyName, resp.status));
    this.#count(resp.status);
    if (this.#isFailure(resp.status)) {
      this.stat.errCount++;
      return "failureCode";
    }
    return "";
  }

  /** The access log's tag of a response, built once per proxy name and status. */
  #statusTag(proxyName: string, status: number): string {
    if (proxyName !== this.#tagProxy) {
      this.#tagProxy = proxyName;
      this.#tags.clear();
    }
    let tag = this.#tags.get(status);
    if (tag === undefined) this.#tags.set(status, tag = `proxy#${proxyName}#${this.name}#status code: ${status}`);
    return tag;
  }

  #tagProxy = "";
  readonly #tags = new Map<number, string>();

  #count(status: number): void {
    this.stat.codes[status] = (this.stat.codes[status] ?? 0) + 1;
  }

  #fail(result: string, status: number): string {
    this.stat.errCount++;
    this.#count(status);
    return result;
  }

  #failStatus(ctx: Context, result: string, status: number): string {
    const r = ctx.outputResponse();
    r.status = status;
    r.body = new Uint8Array(0);
    return this.#fail(result, status);
  }

  close(): void {
    this.#health?.close();
  }
}

/**
 * Puts the upstream response into the active namespace: a new response, or merged into an existing one
 * (Access-Control-* headers replaced, others appended), as Easegress does.
 */
function setResponse(ctx: Context, status: number, headers: HeaderList, body: Uint8Array): GwResponse {
  const existing = ctx.response;
  if (existing === undefined) {
    const r = new GwResponse(status, headers, body);
    ctx.response = r;
    return r;
  }
  existing.status = status;
  existing.body = body;
  for (let i = 0; i < headers.keys.length; i++) {
    if (headers.keys[i].startsWith("access-control-")) existing.headers.set(headers.names[i], headers.values[i]);
    else existing.headers.add(headers.names[i], headers.values[i]);
  }
  return existing;
}

/**
 * The upstream request head: the request line (the server's base path before the request's path), Host, the client's
 * fields but the hop-by-hop ones and those its Connection header names, and the body's framing. Written into the
 * connection's buffer piece by piece (no head string is built and encoded).
 */
class UpstreamHead extends OutgoingHead {
  readonly length: number;
  readonly #tokens: readonly string[] | undefined;

  constructor(
    readonly req: GwRequest,
    readonly basePath: string,
    readonly host: string,
    /** the Content-Length or Transfer-Encoding line, or "" */
    readonly framing: string,
    shared: boolean,
  ) {
    super(shared);
    this.#tokens = connectionTokens(req.headers);
    const query = req.query;
    this.length = req.method.length + 1 + basePath.length + req.path.length + (query === "" ? 0 : query.length + 1) +
      REQUEST_LINE_END.length + host.length + 2 + req.headers.serializedLength(SKIP_UPSTREAM, this.#tokens) +
      framing.length + 2;
  }

  protected write(dst: Uint8Array): void {
    const req = this.req;
    let o = putText(dst, 0, req.method);
    dst[o++] = 32;
    o = putText(dst, o, this.basePath);
    o = putText(dst, o, req.path);
    if (req.query !== "") {
      dst[o++] = 63; // '?'
      o = putText(dst, o, req.query);
    }
    o = putText(dst, o, REQUEST_LINE_END);
    o = putText(dst, o, this.host);
    dst[o++] = 13;
    dst[o++] = 10;
    o = req.headers.serializeInto(dst, o, SKIP_UPSTREAM, this.#tokens);
    o = putText(dst, o, this.framing);
    dst[o++] = 13;
    dst[o] = 10;
  }
}

const REQUEST_LINE_END = " HTTP/1.1\r\nHost: ";
