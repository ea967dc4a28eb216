/**
 * RequestAdaptor (kind `RequestAdaptor`): method, path (replace / addPrefix / trimPrefix / regexpReplace), header
 * (del, set, add), body, host, compress / decompress, in that order. Results `decompressFailed`, `compressFailed`;
 * `buildErr` when `template` (YAML with method/path/header/body/host, overriding the static fields) fails.
 * (`sign` is refused as not supported.)
 */
import type { Context } from "../context.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { PathAdaptSpec, RequestAdaptorSpec, Stored } from "../../easegress/specs/mod.ts";
import { HeaderAdaptor } from "./headeradaptor.ts";
import { compressBody, decompressBody, transformStream } from "./gzip.ts";
import { asObject, buildErr, BuilderTemplate } from "../template/builder.ts";

/** What the template renders: the request fields of the spec, overriding them (each read as the spec's is). */
type AdaptedRequest = Stored<Pick<RequestAdaptorSpec, "method" | "path" | "header" | "body" | "host">>;

/** Easegress's pathadaptor: the first non-empty rule applies. */
export function pathAdaptor(spec: Stored<PathAdaptSpec> | null | undefined): ((p: string) => string) | null {
  if (!spec) return null;
  if (spec.replace) return () => String(spec.replace);
  if (spec.addPrefix) return (p) => String(spec.addPrefix) + p;
  if (spec.trimPrefix) {
    return (p) => (p.startsWith(String(spec.trimPrefix)) ? p.slice(String(spec.trimPrefix).length) : p);
  }
  if (spec.regexpReplace?.regexp) {
    const re = new RegExp(spec.regexpReplace.regexp, "g");
    const to = String(spec.regexpReplace.replace ?? "").replace(/\$\{(\w+)\}/g, "$<$1>");
    return (p) => p.replace(re, to);
  }
  return null;
}

class RequestAdaptor implements Filter {
  #method: string;
  #path: ((p: string) => string) | null;
  #header: HeaderAdaptor;
  #body: Uint8Array | null;
  #host: string;
  #compress: boolean;
  #decompress: boolean;
  #template: BuilderTemplate | null;

  constructor(spec: FilterSpec<RequestAdaptorSpec>) {
    this.#template = spec.template ? new BuilderTemplate(spec) : null;
    if (spec.sign) throw new Error("RequestAdaptor sign is not supported");
    for (const k of ["compress", "decompress"] as const) {
      if (spec[k] && spec[k] !== "gzip") throw new Error(`${k}: only gzip is supported`);
    }
    if (spec.compress && spec.decompress) throw new Error("compress and decompress can't be set at the same time");
    if (spec.decompress && spec.body) throw new Error("decompress can't be set with body");
    this.#method = String(spec.method ?? "");
    this.#path = pathAdaptor(spec.path);
    this.#header = new HeaderAdaptor(spec.header);
    this.#body = spec.body ? new TextEncoder().encode(String(spec.body)) : null;
    this.#host = String(spec.host ?? "");
    this.#compress = !!spec.compress;
    this.#decompress = !!spec.decompress;
  }

  handle(ctx: Context): string {
    const req = ctx.request;
    let method = this.#method, path = this.#path, header = this.#header, body = this.#body, host = this.#host;
    if (this.#template !== null) {
      let t: AdaptedRequest;
      try {
        t = asObject(this.#template.build(ctx)) as AdaptedRequest;
      } catch (e) {
        return buildErr(ctx, "requestAdaptor", (e as Error).message);
      }
      if (t.method) method = String(t.method);
      if (t.path) path = pathAdaptor(t.path);
      if (t.header) header = new HeaderAdaptor(t.header);
      if (t.body) body = new TextEncoder().encode(String(t.body));
      if (t.host) host = String(t.host);
    }
    if (method !== "" && method !== req.method) {
      ctx.addTag(`requestAdaptor: method ${req.method} adapted to ${method}`);
      req.method = method;
    }
    if (path !== null) {
      const p = path(req.path);
      if (p !== req.path) {
        ctx.addTag(`requestAdaptor: path ${req.path} adapted to ${p}`);
        req.path = p;
      }
    }
    header.apply(req.headers);
    if (body !== null) {
      req.body = body;
      req.stream = null;
      req.headers.del("Content-Encoding");
    }
    if (host !== "") req.host = host;
    if (req.stream !== null) {
      // a streamed body is (de)compressed as Proxy reads it; a failure then breaks the upstream request
      if (this.#compress) req.stream = transformStream(req.headers, req.stream, "compress");
      if (this.#decompress) req.stream = transformStream(req.headers, req.stream, "decompress");
      return "";
    }
    const setBody = (b: Uint8Array) => (req.body = b);
    if (this.#compress && !compressBody(req.headers, req.body, setBody)) return "compressFailed";
    if (this.#decompress && !decompressBody(req.headers, req.body, setBody)) return "decompressFailed";
    return "";
  }
}

export const requestAdaptorKind: FilterKind<RequestAdaptorSpec> = {
  kind: "RequestAdaptor",
  results: ["decompressFailed", "compressFailed"],
  create: (spec) => new RequestAdaptor(spec),
};
