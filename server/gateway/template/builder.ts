/**
 * What the builder filters share: a template compiled once from the spec (`template`, `leftDelim`, `rightDelim`),
 * rendered on a context's template data and parsed as YAML, as Easegress's builders do.
 */
import { parse as parseYaml } from "yaml";
import type { Context } from "../context.ts";
import type { Stored, TemplateSpec } from "../../easegress/specs/mod.ts";

/** The fields of a builder's spec read here: its name and kind, its template, and RequestBuilder's source. */
export type BuilderSpec = Stored<TemplateSpec & { sourceNamespace: string; protocol: string }> & {
  name: string;
  kind: string;
};
import { templateData } from "./data.ts";
import { Template } from "./exec.ts";
import { FUNCS } from "./funcs.ts";

/** A builder's template. */
export class BuilderTemplate {
  #tmpl: Template;

  /** Compiles the spec's template; throws the Go-style parse error for a bad one. */
  constructor(spec: BuilderSpec) {
    this.#tmpl = new Template(
      spec.name,
      String(spec.template ?? ""),
      FUNCS,
      spec.leftDelim ?? "",
      spec.rightDelim ?? "",
    );
  }

  /** The rendered text; throws on an execution error. */
  render(ctx: Context): string {
    return this.#tmpl.execute(templateData(ctx));
  }

  /** The rendered text parsed as YAML (null when empty); throws on an execution or YAML error. */
  build(ctx: Context): unknown {
    return parseYaml(this.render(ctx)) ?? null;
  }
}

/** The `sourceNamespace | template` choice of RequestBuilder and ResponseBuilder (protocol http only). */
export function sourceOrTemplate(spec: BuilderSpec): { source: string; template: BuilderTemplate | null } {
  const protocol = spec.protocol || "http";
  if (protocol !== "http") throw new Error(`${spec.kind} protocol ${protocol} is not supported`);
  const source = String(spec.sourceNamespace ?? "");
  if ((source === "") === !spec.template) {
    throw new Error("exactly one of sourceNamespace and template must be specified");
  }
  return { source, template: source === "" ? new BuilderTemplate(spec) : null };
}

/** Tags the access log with why a builder failed and returns `buildErr`. */
export function buildErr(ctx: Context, filter: string, msg: string): string {
  ctx.addTag(`${filter}: ${msg}`);
  return "buildErr";
}

/** `headers: map[string][]string` from a rendered spec (a single string is taken as one value). */
export function renderedHeaders(v: unknown): [string, string][] {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return [];
  const out: [string, string][] = [];
  for (const [k, vals] of Object.entries(v)) {
    for (const x of Array.isArray(vals) ? vals : [vals]) out.push([k, x === null ? "" : String(x)]);
  }
  return out;
}

/** A rendered YAML value as a map ({} for anything else). */
export function asObject(v: unknown): Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : {};
}
