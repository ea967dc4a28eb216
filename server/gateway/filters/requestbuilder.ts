/**
 * RequestBuilder (kind `RequestBuilder`): puts a request into the active namespace, either the one of
 * `sourceNamespace` (shared, not copied) or one rendered from `template` as YAML
 * `{method, url, headers, body, formData}`. Result `buildErr` when the template fails or renders a bad request.
 */
import type { Context } from "../context.ts";
import { GwRequest } from "../context.ts";
import { HeaderList } from "../http1.ts";
import { asObject, buildErr, renderedHeaders, sourceOrTemplate } from "../template/builder.ts";
import type { BuilderTemplate } from "../template/builder.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { RequestBuilderSpec } from "../../easegress/specs/mod.ts";

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"]);
const encoder = new TextEncoder();

/** A multipart/form-data body from `formData: {name: {value, fileName}}`. */
function multipart(form: Record<string, unknown>, boundary: string): string {
  let body = "";
  for (const [name, f] of Object.entries(form)) {
    const field = asObject(f);
    const file = field.fileName ? `; filename="${String(field.fileName)}"` : "";
    const type = field.fileName ? "Content-Type: application/octet-stream\r\n" : "";
    body += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"${file}\r\n${type}\r\n` +
      `${String(field.value ?? "")}\r\n`;
  }
  return body + `--${boundary}--\r\n`;
}

class RequestBuilder implements Filter {
  #source: string;
  #template: BuilderTemplate | null;
  #name: string;

  constructor(spec: FilterSpec<RequestBuilderSpec>) {
    ({ source: this.#source, template: this.#template } = sourceOrTemplate(spec));
    this.#name = `requestBuilder(${spec.name})`;
  }

  handle(ctx: Context): string {
    if (this.#template === null) {
      const src = ctx.requestIn(this.#source);
      if (src === undefined) return buildErr(ctx, this.#name, `no request in namespace ${this.#source}`);
      ctx.setRequest(ctx.namespace, src);
      return "";
    }
    let spec: Record<string, unknown>;
    try {
      spec = asObject(this.#template.build(ctx));
    } catch (e) {
      return buildErr(ctx, this.#name, (e as Error).message);
    }
    const method = String(spec.method || "GET").toUpperCase();
    if (!METHODS.has(method)) return buildErr(ctx, this.#name, `invalid method ${method}`);
    const url = String(spec.url || "/");
    const headers = new HeaderList();
    for (const [k, v] of renderedHeaders(spec.headers)) headers.add(k, v);
    const abs = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(url);
    if (abs && !headers.has("host")) headers.add("Host", abs[1]);
    const req = new GwRequest(method, url, "HTTP/1.1", headers, "", "", abs ? url.split(":")[0] : "http");
    if (spec.body !== undefined && spec.body !== null && spec.body !== "") {
      req.body = encoder.encode(String(spec.body));
    } else if (spec.formData && typeof spec.formData === "object") {
      const boundary = crypto.randomUUID().replaceAll("-", "");
      req.body = encoder.encode(multipart(asObject(spec.formData), boundary));
      headers.set("Content-Type", `multipart/form-data; boundary=${boundary}`);
    }
    ctx.setRequest(ctx.namespace, req);
    return "";
  }
}

export const requestBuilderKind: FilterKind<RequestBuilderSpec> = {
  kind: "RequestBuilder",
  results: ["buildErr"],
  create: (spec) => new RequestBuilder(spec),
};
