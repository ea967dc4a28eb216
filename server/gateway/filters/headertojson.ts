/** HeaderToJSON (kind `HeaderToJSON`): request headers merged into the JSON body (an object, or each array element). */
import type { Context } from "../context.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { HeaderToJSONSpec } from "../../easegress/specs/mod.ts";

class HeaderToJson implements Filter {
  #map: [string, string][];

  constructor(spec: FilterSpec<HeaderToJSONSpec>) {
    if (!Array.isArray(spec.headerMap) || spec.headerMap.length === 0) throw new Error("headerMap is required");
    this.#map = spec.headerMap.map((m) => [String(m.header).toLowerCase(), m.json as string]);
  }

  handle(ctx: Context): string {
    const req = ctx.request;
    const add: Record<string, string> = {};
    let any = false;
    for (const [h, key] of this.#map) {
      if (!req.headers.has(h)) continue;
      add[key] = req.headers.get(h);
      any = true;
    }
    if (!any) return "";
    if (req.stream !== null) return "bodyReadErr"; // a stream is not read into memory (as Easegress)
    let out: unknown;
    if (req.body.length === 0) out = add;
    else {
      let v: unknown;
      try {
        v = JSON.parse(new TextDecoder().decode(req.body));
      } catch {
        return "jsonEncodeDecodeErr";
      }
      if (Array.isArray(v)) {
        if (!v.every((e) => e !== null && typeof e === "object" && !Array.isArray(e))) return "jsonEncodeDecodeErr";
        out = v.map((e) => ({ ...e, ...add }));
      } else if (v !== null && typeof v === "object") out = { ...v, ...add };
      else return "jsonEncodeDecodeErr";
    }
    req.body = new TextEncoder().encode(JSON.stringify(out));
    req.stream = null;
    return "";
  }
}

export const headerToJsonKind: FilterKind<HeaderToJSONSpec> = {
  kind: "HeaderToJSON",
  results: ["jsonEncodeDecodeErr", "bodyReadErr"],
  create: (spec) => new HeaderToJson(spec),
};
