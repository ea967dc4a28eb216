/**
 * ResponseBuilder (kind `ResponseBuilder`): puts a response into the active namespace, a copy of the one of
 * `sourceNamespace` or one rendered from `template` as YAML `{statusCode, headers, body}` (statusCode 0 means 200;
 * others must be within 200..599). Result `buildErr`.
 */
import type { Context } from "../context.ts";
import { GwResponse } from "../context.ts";
import { HeaderList } from "../http1.ts";
import { asObject, buildErr, renderedHeaders, sourceOrTemplate } from "../template/builder.ts";
import type { BuilderTemplate } from "../template/builder.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { ResponseBuilderSpec } from "../../easegress/specs/mod.ts";

const encoder = new TextEncoder();

class ResponseBuilder implements Filter {
  #source: string;
  #template: BuilderTemplate | null;
  #name: string;

  constructor(spec: FilterSpec<ResponseBuilderSpec>) {
    ({ source: this.#source, template: this.#template } = sourceOrTemplate(spec));
    this.#name = `responseBuilder(${spec.name})`;
  }

  handle(ctx: Context): string {
    if (this.#template === null) {
      const src = ctx.responseIn(this.#source);
      if (src === undefined) return buildErr(ctx, this.#name, `no response in namespace ${this.#source}`);
      const r = new GwResponse(src.status, src.headers.clone(), src.body);
      r.stream = src.stream; // a stream is read once: whichever response is sent reads it
      ctx.response = r;
      return "";
    }
    let spec: Record<string, unknown>;
    try {
      spec = asObject(this.#template.build(ctx));
    } catch (e) {
      return buildErr(ctx, this.#name, (e as Error).message);
    }
    let status = Number(spec.statusCode ?? 0);
    if (status === 0) status = 200;
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      return buildErr(ctx, this.#name, `invalid status code ${spec.statusCode}`);
    }
    const headers = new HeaderList();
    for (const [k, v] of renderedHeaders(spec.headers)) headers.add(k, v);
    const body = spec.body === undefined || spec.body === null ? new Uint8Array(0) : encoder.encode(String(spec.body));
    ctx.response = new GwResponse(status, headers, body);
    return "";
  }
}

export const responseBuilderKind: FilterKind<ResponseBuilderSpec> = {
  kind: "ResponseBuilder",
  results: ["buildErr"],
  create: (spec) => new ResponseBuilder(spec),
};
