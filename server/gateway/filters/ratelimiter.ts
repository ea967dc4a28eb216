/**
 * RateLimiter (kind `RateLimiter`, result `rateLimited`): per URL rule a limiter admitting limitForPeriod requests per
 * limitRefreshPeriod, queueing at most timeoutDuration worth of permits (Easegress's algorithm); a rejection is 429
 * with `X-EG-Rate-Limiter: too-many-requests`.
 */
import type { Context } from "../context.ts";
import { parseGoDuration } from "../../easegress/gotime.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { RateLimiterSpec, RateLimitPolicy, Stored } from "../../easegress/specs/mod.ts";
import { StringMatcher } from "./proxy/pool.ts";

class Limiter {
  #start = Date.now();
  #outstanding = 0;
  #lastCycle = 0;
  #maxTokens: number;
  constructor(readonly n: number, readonly periodMs: number, timeoutMs: number) {
    this.#maxTokens = n * (Math.floor(timeoutMs / periodMs) + 1);
  }

  /** -1: reject; 0: admit now; > 0: admit after that many ms. */
  acquire(now: number): number {
    const cycle = Math.floor((now - this.#start) / this.periodMs);
    this.#outstanding = Math.max(0, this.#outstanding - (cycle - this.#lastCycle) * this.n);
    this.#lastCycle = cycle;
    if (this.#outstanding >= this.#maxTokens) return -1;
    const old = this.#outstanding++;
    if (old < this.n) return 0;
    return Math.max(0, this.#start + this.periodMs * (cycle + Math.floor(old / this.n)) - now);
  }
}

interface UrlRule {
  methods: string[];
  url: StringMatcher;
  limiter: Limiter;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class RateLimiter implements Filter {
  #rules: UrlRule[];

  constructor(spec: FilterSpec<RateLimiterSpec>) {
    const policies = new Map<string, Stored<RateLimitPolicy>>();
    for (const p of (spec.policies ?? [])) {
      if (!p.name) throw new Error("policies: name is required");
      policies.set(p.name, p);
    }
    if (!Array.isArray(spec.urls)) throw new Error("urls: required");
    this.#rules = spec.urls.map((u) => {
      const ref = u.policyRef || spec.defaultPolicyRef;
      const p = policies.get(ref ?? "");
      if (!p) throw new Error(`policy '${ref ?? ""}' is not defined`);
      const n = Number(p.limitForPeriod ?? 50);
      if (!(n >= 1)) throw new Error("limitForPeriod must be >= 1");
      const period = p.limitRefreshPeriod ? parseGoDuration(String(p.limitRefreshPeriod)) : 10;
      const timeout = p.timeoutDuration ? parseGoDuration(String(p.timeoutDuration)) : 100;
      return { methods: u.methods ?? [], url: new StringMatcher(u.url), limiter: new Limiter(n, period, timeout) };
    });
  }

  handle(ctx: Context): string | Promise<string> {
    const req = ctx.request;
    for (const r of this.#rules) {
      if ((r.methods.length > 0 && !r.methods.includes(req.method)) || !r.url.match(req.path)) continue;
      const wait = r.limiter.acquire(Date.now());
      if (wait === 0) return "";
      if (wait > 0) {
        ctx.addTag(`rateLimiter: waiting duration: ${wait}ms`);
        return sleep(wait).then(() => "");
      }
      const resp = ctx.outputResponse();
      resp.status = 429;
      resp.body = new Uint8Array(0);
      resp.headers.set("X-EG-Rate-Limiter", "too-many-requests");
      ctx.addTag("rateLimiter: too many requests");
      return "rateLimited";
    }
    return "";
  }
}

export const rateLimiterKind: FilterKind<RateLimiterSpec> = {
  kind: "RateLimiter",
  results: ["rateLimited"],
  create: (spec) => new RateLimiter(spec),
};
