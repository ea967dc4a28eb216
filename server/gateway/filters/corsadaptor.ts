/**
 * CORSAdaptor (kind `CORSAdaptor`, results `preflighted`, `rejected`), following rs/cors: no Origin → nothing; a
 * preflight (OPTIONS + Access-Control-Request-Method) is answered 204 with the allow headers; an actual request gets
 * Access-Control-Allow-Origin (and Expose-Headers) or is rejected.
 */
import type { Context } from "../context.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { CORSAdaptorSpec } from "../../easegress/specs/mod.ts";

class CorsAdaptor implements Filter {
  #origins: string[];
  #methods: string[];
  #headers: string[];
  #credentials: boolean;
  #exposed: string[];
  #maxAge: number;

  constructor(spec: FilterSpec<CORSAdaptorSpec>) {
    this.#origins = (spec.allowedOrigins ?? []).map((o: string) => o.toLowerCase());
    this.#methods = (spec.allowedMethods ?? ["GET", "POST", "HEAD"]).map((m: string) => m.toUpperCase());
    this.#headers = (spec.allowedHeaders ?? ["accept", "content-type", "x-requested-with"]).map((h: string) =>
      h.toLowerCase()
    );
    this.#credentials = spec.allowCredentials === true;
    this.#exposed = spec.exposedHeaders ?? [];
    this.#maxAge = Number(spec.maxAge ?? 0);
  }

  #originAllowed(origin: string): boolean {
    if (this.#origins.length === 0 || this.#origins.includes("*")) return true;
    const o = origin.toLowerCase();
    return this.#origins.some((p) => {
      const star = p.indexOf("*");
      return star < 0 ? p === o : o.startsWith(p.slice(0, star)) && o.endsWith(p.slice(star + 1));
    });
  }

  #allowOrigin(origin: string): string {
    return (this.#origins.length === 0 || this.#origins.includes("*")) && !this.#credentials ? "*" : origin;
  }

  handle(ctx: Context): string {
    const req = ctx.request;
    const origin = req.headers.get("origin");
    if (origin === "") return "";
    const reqMethod = req.headers.get("access-control-request-method");
    const resp = ctx.outputResponse();
    const h = resp.headers;
    if (req.method === "OPTIONS" && reqMethod !== "") {
      resp.status = 204;
      h.add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
      const reqHeaders = req.headers.get("access-control-request-headers").split(",").map((s) => s.trim().toLowerCase())
        .filter((s) => s !== "");
      const allHeaders = this.#headers.includes("*") || reqHeaders.every((x) => this.#headers.includes(x));
      if (this.#originAllowed(origin) && this.#methods.includes(reqMethod.toUpperCase()) && allHeaders) {
        h.set("Access-Control-Allow-Origin", this.#allowOrigin(origin));
        h.set("Access-Control-Allow-Methods", reqMethod.toUpperCase());
        if (reqHeaders.length > 0) h.set("Access-Control-Allow-Headers", reqHeaders.join(", "));
        if (this.#credentials) h.set("Access-Control-Allow-Credentials", "true");
        if (this.#maxAge > 0) h.set("Access-Control-Max-Age", String(this.#maxAge));
      }
      return "preflighted";
    }
    h.add("Vary", "Origin");
    if (!this.#originAllowed(origin) || !this.#methods.includes(req.method)) return "rejected";
    h.set("Access-Control-Allow-Origin", this.#allowOrigin(origin));
    if (this.#exposed.length > 0) h.set("Access-Control-Expose-Headers", this.#exposed.join(", "));
    if (this.#credentials) h.set("Access-Control-Allow-Credentials", "true");
    return "";
  }
}

export const corsAdaptorKind: FilterKind<CORSAdaptorSpec> = {
  kind: "CORSAdaptor",
  results: ["preflighted", "rejected"],
  create: (spec) => new CorsAdaptor(spec),
};
