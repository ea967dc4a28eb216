/**
 * What the builder filters share: a template compiled once from the spec (`template`, `leftDelim`, `rightDelim`),
 * rendered on a context's template data and parsed as YAML, as Easegress's builders do.
 */
import { parse as parseYaml } from "yaml";
import type { Context } from "../context.ts";
import type { FilterSpec } from "../filters/filter.ts";
import { templateData } from "./data.ts";
import { Template } from "./exec.ts";
import { FUNCS } from "./funcs.ts";

/** A builder's template. */
export class BuilderTemplate {
  #tmpl: Template;

  /** Compiles the spec's template; throws the Go-style parse error for a bad one. */
  constructor(spec: FilterSpec) {
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
