/**
 * Request routing of an HTTPServer (Easegress `httpserver/routers`): rules by host, paths by path / pathPrefix /
 * pathRegexp (Ordered) or path patterns (RadixTree), then methods, headers, queries and ipFilter. A failed search
 * answers by the flags gathered over every rule and path: 403 > 400 > 405 > 404.
 */
import type { RouteTraffic } from "../../metrics/traffic.ts";
import type { GwRequest } from "../context.ts";
import { type IpFilter, ipFilterOf } from "./ipfilter.ts";
import type { HeaderMatch, PathSpec, RuleSpec, Stored } from "../../easegress/specs/mod.ts";

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"]);

interface ValueMatcher {
  key: string;
  values: string[];
  re: RegExp | null;
}

/** A compiled path of a rule. */
export interface RoutePath {
  path: string;
  pathPrefix: string;
  pathRe: RegExp | null;
  /** RadixTree pattern matcher: returns captures or null */
  pattern: ((p: string) => Record<string, string> | null) | null;
  rewriteTarget: string;
  methods: Set<string> | null;
  headers: ValueMatcher[];
  queries: ValueMatcher[];
  matchAllHeader: boolean;
  matchAllQuery: boolean;
  ipFilter: IpFilter | null;
  backend: string;
  clientMaxBodySize: number;
  setHeaders: [string, string][];
  /** no methods, headers, queries or ipFilter: matches as soon as the path does */
  fast: boolean;
  /** this path's Prometheus series, made on its first request (see HttpServer.#record) */
  traffic?: RouteTraffic;
}

interface HostMatcher {
  exact?: string;
  suffix?: string;
  prefix?: string;
  re?: RegExp;
}

interface RouteRule {
  hosts: HostMatcher[];
  ipFilter: IpFilter | null;
  paths: RoutePath[];
  /** RadixTree: static patterns by path */
  statics: Map<string, RoutePath[]> | null;
}

/** A found route. */
export interface Route {
  path: RoutePath;
  /** the request path after rewriteTarget */
  rewritten: string | null;
  captures: Record<string, string> | null;
}

/** The outcome of a search: a route, or the status to answer with. */
export type RouteResult = Route | number;

function valueMatchers(list: Stored<HeaderMatch[]> | null | undefined, what: string): ValueMatcher[] {
  return (list ?? []).map((h) => {
    const values = (h.values ?? []) as string[];
    if (values.length === 0 && !h.regexp) throw new Error(`both of values and regexp are empty for key: ${h.key}`);
    return {
      key: what === "header" ? String(h.key).toLowerCase() : String(h.key),
      values,
      re: h.regexp ? new RegExp(h.regexp) : null,
    };
  });
}

function hostMatcher(value: string, isRegexp: boolean): HostMatcher {
  if (isRegexp) return { re: new RegExp(value) };
  const stars = value.split("*").length - 1;
  if (stars === 1 && value.startsWith("*")) return { suffix: value.slice(1) };
  if (stars === 1 && value.endsWith("*")) return { prefix: value.slice(0, -1) };
  return { exact: value };
}

/** Compiles a RadixTree pattern (`/users/{id:[0-9]+}/*`) into a matcher returning its captures. */
function compilePattern(pattern: string): (p: string) => Record<string, string> | null {
  const names: string[] = [];
  let re = "^";
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i];
    if (c === "{") {
      const end = pattern.indexOf("}", i);
      if (end < 0) throw new Error(`invalid path pattern ${pattern}`);
      const inner = pattern.slice(i + 1, end);
      const colon = inner.indexOf(":");
      const name = colon < 0 ? inner : inner.slice(0, colon);
      if (names.includes(name)) throw new Error(`duplicated param name ${name} in ${pattern}`);
      names.push(name);
      re += colon < 0 ? "([^/]+)" : `(${inner.slice(colon + 1)})`;
      i = end + 1;
    } else if (c === "*") {
      if (i !== pattern.length - 1) throw new Error(`catch-all must be the last element in ${pattern}`);
      names.push("EG_WILDCARD");
      re += "(.*)";
      i++;
    } else {
      re += c.replace(/[.+?^$()[\]\\|]/g, "\\$&");
      i++;
    }
  }
  const rx = new RegExp(re + "$");
  return (p) => {
    const m = rx.exec(p);
    if (!m) return null;
    const out: Record<string, string> = {};
    for (let k = 0; k < names.length; k++) out[names[k]] = m[k + 1];
    return out;
  };
}

/** Specificity of a RadixTree pattern: static before regexp before param before catch-all. */
function patternRank(p: string): number {
  if (p.includes("*")) return 3;
  if (/\{[^}]*:/.test(p)) return 1;
  if (p.includes("{")) return 2;
  return 0;
}

function compilePath(spec: Stored<PathSpec>, radix: boolean): RoutePath {
  for (const k of ["path", "pathPrefix"] as const) {
    if (spec[k] && !String(spec[k]).startsWith("/")) throw new Error(`${k} must start with /`);
  }
  if (spec.rewriteTarget && !spec.path && !spec.pathPrefix && !spec.pathRegexp) {
    throw new Error("rewriteTarget is specified but path is empty");
  }
  if (!spec.backend && !spec.backendPool) throw new Error("backend or backendPool is required");
  const methods = (spec.methods ?? []) as string[];
  for (const m of methods) if (!METHODS.has(m)) throw new Error(`invalid method ${m}`);
  const headers = valueMatchers(spec.headers, "header");
  const queries = valueMatchers(spec.queries, "query");
  const ipFilter = ipFilterOf(spec.ipFilter);
  const path = String(spec.path ?? "");
  return {
    path,
    pathPrefix: radix ? "" : String(spec.pathPrefix ?? ""),
    pathRe: !radix && spec.pathRegexp ? new RegExp(spec.pathRegexp) : null,
    pattern: radix && path !== "" && /[{*]/.test(path) ? compilePattern(path) : null,
    rewriteTarget: String(spec.rewriteTarget ?? ""),
    methods: methods.length > 0 ? new Set(methods) : null,
    headers,
    queries,
    matchAllHeader: spec.matchAllHeader === true,
    matchAllQuery: spec.matchAllQuery === true,
    ipFilter,
    backend: String(spec.backend ?? ""),
    clientMaxBodySize: Number(spec.clientMaxBodySize ?? 0),
    setHeaders: Object.entries((spec.setHeaders ?? {}) as Record<string, string>),
    fast: methods.length === 0 && headers.length === 0 && queries.length === 0 && ipFilter === null,
  };
}

const enum Miss {
  Ip = 1,
  HeaderOrQuery = 2,
  Method = 4,
}

function matchValues(list: ValueMatcher[], all: boolean, get: (k: string) => string): boolean {
  const one = (m: ValueMatcher) => {
    const v = get(m.key);
    if (all && m.values.length > 0 && m.re !== null) return m.values.includes(v) && m.re.test(v);
    return m.values.includes(v) || (m.re !== null && m.re.test(v));
  };
  return all ? list.every(one) : list.some(one);
}

/** An HTTPServer's router. */
export class Router {
  #rules: RouteRule[];
  #radix: boolean;

  constructor(rules: Stored<RuleSpec[]>, routerKind: string) {
    this.#radix = routerKind === "RadixTree";
    this.#rules = (rules ?? []).map((r) => {
      const hosts: HostMatcher[] = [];
      if (r.host) hosts.push(hostMatcher(String(r.host), false));
      if (r.hostRegexp) hosts.push(hostMatcher(String(r.hostRegexp), true));
      for (const h of r.hosts ?? []) hosts.push(hostMatcher(String(h.value), h.isRegexp === true));
      const paths = (r.paths ?? []).map((p) => compilePath(p, this.#radix));
      let statics: Map<string, RoutePath[]> | null = null;
      if (this.#radix) {
        statics = new Map();
        for (const p of paths) {
          if (p.pattern === null) {
            const l = statics.get(p.path) ?? [];
            l.push(p);
            statics.set(p.path, l);
          }
        }
        paths.sort((a, b) => patternRank(a.path) - patternRank(b.path));
      }
      return { hosts, ipFilter: ipFilterOf(r.ipFilter), paths, statics };
    });
  }

  /** Backend pipeline names this router references. */
  backends(): string[] {
    return this.#rules.flatMap((r) => r.paths.map((p) => p.backend)).filter((b) => b !== "");
  }

  /** Searches a route for the request. */
  search(req: GwRequest): RouteResult {
    let miss = 0;
    const host = req.hostname;
    const path = req.path;
    for (const rule of this.#rules) {
      if (rule.hosts.length > 0 && !rule.hosts.some((h) => matchHost(h, host))) continue;
      if (rule.ipFilter !== null && !rule.ipFilter.allow(req.realIp)) {
        miss |= Miss.Ip;
        continue;
      }
      if (this.#radix) {
        const statics = rule.statics!.get(path);
        if (statics !== undefined) {
          for (const p of statics) {
            const m = this.#check(p, req);
            if (m === 0) return { path: p, rewritten: p.rewriteTarget || null, captures: null };
            miss |= m;
          }
        }
        for (const p of rule.paths) {
          if (p.pattern === null) continue;
          const caps = p.pattern(path);
          if (caps === null) continue;
          const m = this.#check(p, req);
          if (m === 0) {
            const rewritten = p.rewriteTarget
              ? p.rewriteTarget.replace(/\{([^}]+)\}/g, (_s, k) => caps[k] ?? "")
              : null;
            return { path: p, rewritten, captures: caps };
          }
          miss |= m;
        }
        continue;
      }
      for (const p of rule.paths) {
        let kind = 0; // 0 none set, 1 exact, 2 prefix, 3 regexp
        if (p.path === "" && p.pathPrefix === "" && p.pathRe === null) kind = 4;
        else if (p.path !== "" && p.path === path) kind = 1;
        else if (p.pathPrefix !== "" && path.startsWith(p.pathPrefix)) kind = 2;
        else if (p.pathRe !== null && p.pathRe.test(path)) kind = 3;
        if (kind === 0) continue;
        const m = this.#check(p, req);
        if (m !== 0) {
          miss |= m;
          continue;
        }
        let rewritten: string | null = null;
        if (p.rewriteTarget !== "") {
          if (kind === 1) rewritten = p.rewriteTarget;
          else if (kind === 2) rewritten = p.rewriteTarget + path.slice(p.pathPrefix.length);
          else if (kind === 3) {
            const g = new RegExp(p.pathRe!.source, "g");
            rewritten = path.replace(g, p.rewriteTarget.replace(/\$\{(\w+)\}/g, "$<$1>"));
          }
        }
        return { path: p, rewritten, captures: null };
      }
    }
    if (miss & Miss.Ip) return 403;
    if (miss & Miss.HeaderOrQuery) return 400;
    if (miss & Miss.Method) return 405;
    return 404;
  }

  /** 0 when the path's conditions pass, else the miss flag. */
  #check(p: RoutePath, req: GwRequest): number {
    if (p.fast) return 0;
    if (p.methods !== null ? !p.methods.has(req.method) : !METHODS.has(req.method)) return Miss.Method;
    if (p.headers.length > 0 && !matchValues(p.headers, p.matchAllHeader, (k) => req.headers.get(k))) {
      return Miss.HeaderOrQuery;
    }
    if (p.queries.length > 0 && !matchValues(p.queries, p.matchAllQuery, (k) => req.queryParam(k))) {
      return Miss.HeaderOrQuery;
    }
    if (p.ipFilter !== null && !p.ipFilter.allow(req.realIp)) return Miss.Ip;
    return 0;
  }
}

function matchHost(h: HostMatcher, host: string): boolean {
  if (h.exact !== undefined) return h.exact === host;
  if (h.suffix !== undefined) return host.endsWith(h.suffix);
  if (h.prefix !== undefined) return host.startsWith(h.prefix);
  return h.re!.test(host);
}
