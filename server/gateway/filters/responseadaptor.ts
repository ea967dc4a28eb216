/**
 * ResponseAdaptor (kind `ResponseAdaptor`): header (del, set, add), body, compress / decompress of the response of
 * the active namespace. Results `responseNotFound`, `compressFailed`, `decompressFailed`. (`template` is refused.)
 */
import type { Context } from "../context.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import { HeaderAdaptor } from "./headeradaptor.ts";
import { compressBody, decompressBody } from "./gzip.ts";

class ResponseAdaptor implements Filter {
  #header: HeaderAdaptor;
  #body: Uint8Array | null;
  #compress: boolean;
  #decompress: boolean;

  constructor(spec: FilterSpec) {
    if (spec.template) throw new Error("ResponseAdaptor template is not supported");
    for (const k of ["compress", "decompress"]) {
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
    this.#header.apply(resp.headers);
    if (this.#body !== null) {
      resp.body = this.#body;
      resp.headers.del("Content-Encoding");
    }
    const setBody = (b: Uint8Array) => (resp.body = b);
    if (this.#compress && !compressBody(resp.headers, resp.body, setBody)) return "compressFailed";
    if (this.#decompress && !decompressBody(resp.headers, resp.body, setBody)) return "decompressFailed";
    return "";
  }
}

export const responseAdaptorKind: FilterKind = {
  kind: "ResponseAdaptor",
  results: ["responseNotFound", "compressFailed", "decompressFailed"],
  create: (spec) => new ResponseAdaptor(spec),
};
