/**
 * ResponseAdaptor (kind `ResponseAdaptor`): header (del, set, add), body, compress / decompress of the response of
 * the active namespace. Results `responseNotFound`, `compressFailed`, `decompressFailed`; `buildErr` when `template`
 * (YAML with header/body, overriding the static fields) fails.
 */
import type { Context } from "../context.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { ResponseAdaptorSpec } from "../../easegress/specs/mod.ts";
import { HeaderAdaptor } from "./headeradaptor.ts";
import { compressBody, decompressBody, transformStream } from "./gzip.ts";
import { asObject, buildErr, BuilderTemplate } from "../template/builder.ts";

class ResponseAdaptor implements Filter {
  #header: HeaderAdaptor;
  #body: Uint8Array | null;
  #compress: boolean;
  #decompress: boolean;
  #template: BuilderTemplate | null;

  constructor(spec: FilterSpec<ResponseAdaptorSpec>) {
    this.#template = spec.template ? new BuilderTemplate(spec) : null;
    for (const k of ["compress", "decompress"] as const) {
      if (spec[k] && spec[k] !== "gzip") throw new Error(`${k}: only gzip is supported`);
    }
    this.#header = new HeaderAdaptor(spec.header);
    this.#body = spec.body ? new TextEncoder().encode(String(spec.body)) : null;
    this.#compress = !!spec.compress;
    this.#decompress = !!spec.decompress;
  }

  handle(ctx: Context): string {
    const resp = ctx.response;
    if (resp === undefined) return "responseNotFound";
    let header = this.#header, body = this.#body;
    if (this.#template !== null) {
      let t: Record<string, unknown>;
      try {
        t = asObject(this.#template.build(ctx));
      } catch (e) {
        return buildErr(ctx, "responseAdaptor", (e as Error).message);
      }
      if (t.header) header = new HeaderAdaptor(t.header as Record<string, unknown>);
      if (t.body) body = new TextEncoder().encode(String(t.body));
    }
    header.apply(resp.headers);
    if (body !== null) {
      resp.body = body;
      resp.headers.del("Content-Encoding");
    }
    if (resp.stream !== null) {
      // a streamed body is (de)compressed as the client takes it; a failure then breaks the response off
      if (this.#compress) resp.stream = transformStream(resp.headers, resp.stream, "compress");
      if (this.#decompress) resp.stream = transformStream(resp.headers, resp.stream, "decompress");
      return "";
    }
    const setBody = (b: Uint8Array) => (resp.body = b);
    if (this.#compress && !compressBody(resp.headers, resp.body, setBody)) return "compressFailed";
    if (this.#decompress && !decompressBody(resp.headers, resp.body, setBody)) return "decompressFailed";
    return "";
  }
}

export const responseAdaptorKind: FilterKind<ResponseAdaptorSpec> = {
  kind: "ResponseAdaptor",
  results: ["responseNotFound", "compressFailed", "decompressFailed"],
  create: (spec) => new ResponseAdaptor(spec),
};
