/** Redirector (kind `Redirector`, result `redirected`): regex replacement of the URI or path into a Location. */
import { type Context, GwResponse } from "../context.ts";
import { HeaderList, STATUS_TEXT } from "../http1.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { RedirectorSpec } from "../../easegress/specs/mod.ts";

const CODES = new Set([301, 302, 303, 304, 307, 308]);

class Redirector implements Filter {
  #re: RegExp;
  #replacement: string;
  #pathOnly: boolean;
  #status: number;

  constructor(spec: FilterSpec<RedirectorSpec>) {
    if (!spec.match) throw new Error("match is required");
    if (spec.replacement === undefined) throw new Error("replacement is required");
    this.#re = new RegExp(spec.match, "g");
    this.#replacement = String(spec.replacement).replace(/\$\{(\w+)\}/g, "$<$1>");
    const part = String(spec.matchPart ?? "uri");
    if (!["uri", "path", "full"].includes(part)) throw new Error(`invalid matchPart ${part}`);
    this.#pathOnly = part === "path";
    this.#status = Number(spec.statusCode ?? 301) || 301;
    if (!CODES.has(this.#status)) throw new Error(`invalid statusCode ${this.#status}`);
  }

  handle(ctx: Context): string {
    const req = ctx.request;
    const input = this.#pathOnly ? req.path : req.requestUri;
    const location = input.replace(this.#re, this.#replacement);
    if (location === input) return "";
    const h = new HeaderList();
    h.set("Location", location);
    ctx.response = new GwResponse(this.#status, h, new TextEncoder().encode(STATUS_TEXT[this.#status] ?? ""));
    return "redirected";
  }
}

export const redirectorKind: FilterKind<RedirectorSpec> = {
  kind: "Redirector",
  results: ["redirected"],
  create: (spec) => new Redirector(spec),
};
