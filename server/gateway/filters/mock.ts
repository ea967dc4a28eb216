/** The Mock filter (kind `Mock`): the first matching rule answers with its code, headers and body; result `mocked`. */
import { type Context, GwResponse } from "../context.ts";
import { HeaderList } from "../http1.ts";
import { parseGoDuration } from "../../easegress/gotime.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { MockSpec } from "../../easegress/specs/mod.ts";
import { StringMatcher } from "./proxy/pool.ts";

interface Rule {
  path: string;
  pathPrefix: string;
  headers: [string, StringMatcher, boolean][];
  matchAll: boolean;
  code: number;
  headerList: [string, string][];
  body: Uint8Array;
  delayMs: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class Mock implements Filter {
  #rules: Rule[];

  constructor(spec: FilterSpec<MockSpec>) {
    this.#rules = (spec.rules ?? []).map((r) => {
      const code = Number(r.code);
      if (!(code >= 100 && code <= 599)) throw new Error("rules: code must be in 100..599");
      return {
        path: String(r.match?.path ?? ""),
        pathPrefix: String(r.match?.pathPrefix ?? ""),
        headers: Object.entries(r.match?.headers ?? {}).map((
          [k, v],
        ) => [k.toLowerCase(), new StringMatcher(v), v?.empty === true]),
        matchAll: r.match?.matchAllHeaders === true,
        code,
        headerList: Object.entries((r.headers ?? {}) as Record<string, string>),
        body: new TextEncoder().encode(String(r.body ?? "")),
        delayMs: r.delay ? parseGoDuration(String(r.delay)) : 0,
      };
    });
  }

  #matches(rule: Rule, ctx: Context): boolean {
    const req = ctx.request;
    if (rule.path !== "" || rule.pathPrefix !== "") {
      if (!(req.path === rule.path || (rule.pathPrefix !== "" && req.path.startsWith(rule.pathPrefix)))) return false;
    }
    if (rule.headers.length === 0) return true;
    const one = ([k, m, empty]: [string, StringMatcher, boolean]) => {
      const vs = req.headers.getAll(k);
      if (vs.length === 0) return empty;
      if (empty) return false;
      return vs.some((v) => m.match(v));
    };
    return rule.matchAll ? rule.headers.every(one) : rule.headers.some(one);
  }

  handle(ctx: Context): string | Promise<string> {
    for (const rule of this.#rules) {
      if (!this.#matches(rule, ctx)) continue;
      const h = new HeaderList();
      for (const [k, v] of rule.headerList) h.set(k, v);
      ctx.response = new GwResponse(rule.code, h, rule.body);
      if (rule.delayMs > 0) return sleep(rule.delayMs).then(() => "mocked");
      return "mocked";
    }
    return "";
  }
}

export const mockKind: FilterKind<MockSpec> = { kind: "Mock", results: ["mocked"], create: (spec) => new Mock(spec) };
