/** Fallback (kind `Fallback`, result `fallback`): rewrites the existing response with mockCode, headers and body. */
import type { Context } from "../context.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { FallbackSpec } from "../../easegress/specs/mod.ts";

class Fallback implements Filter {
  #code: number;
  #headers: [string, string][];
  #body: Uint8Array;

  constructor(spec: FilterSpec<FallbackSpec>) {
    this.#code = Number(spec.mockCode);
    if (!(this.#code >= 100 && this.#code <= 599)) throw new Error("mockCode is required");
    this.#headers = Object.entries((spec.mockHeaders ?? {}) as Record<string, string>);
    this.#body = new TextEncoder().encode(String(spec.mockBody ?? ""));
  }

  handle(ctx: Context): string {
    const resp = ctx.response;
    if (resp === undefined) return "responseNotFound";
    resp.status = this.#code;
    for (const [k, v] of this.#headers) resp.headers.set(k, v);
    resp.body = this.#body;
    return "fallback";
  }
}

export const fallbackKind: FilterKind<FallbackSpec> = {
  kind: "Fallback",
  results: ["fallback", "responseNotFound"],
  create: (spec) => new Fallback(spec),
};
