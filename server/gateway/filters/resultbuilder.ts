/**
 * ResultBuilder (kind `ResultBuilder`): renders `template` into a result for jumpIf. "" continues; `result0` …
 * `result8` are returned as they are; anything else is `unknown`. Easegress checks the rendered text against the
 * first ten entries of its sorted result list (`buildErr`, `result0` … `result8`), so `result9` comes back as
 * `unknown` too, and so does it here.
 */
import { parse as parseYaml } from "yaml";
import type { Context } from "../context.ts";
import { buildErr, BuilderTemplate } from "../template/builder.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { ResultBuilderSpec } from "../../easegress/specs/mod.ts";

const RESULTS = ["buildErr", ...Array.from({ length: 10 }, (_, i) => `result${i}`), "unknown"].sort();
const RETURNED = new Set(RESULTS.slice(0, 10));
const PLAIN = /^(result\d|buildErr|unknown)$/;

class ResultBuilder implements Filter {
  #template: BuilderTemplate;
  #name: string;

  constructor(spec: FilterSpec<ResultBuilderSpec>) {
    if (!spec.template) throw new Error("template must be specified");
    this.#name = spec.name;
    this.#template = new BuilderTemplate(spec);
  }

  handle(ctx: Context): string {
    let result: string;
    try {
      // the usual output ("", "resultN" with white space around) reads back from YAML as itself
      const text = this.#template.render(ctx).trim();
      if (text === "" || PLAIN.test(text)) result = text;
      else {
        const v = parseYaml(text) ?? "";
        result = typeof v === "object" ? JSON.stringify(v) : String(v);
      }
    } catch (e) {
      return buildErr(ctx, `resultBuilder(${this.#name})`, (e as Error).message);
    }
    if (result === "") return "";
    return RETURNED.has(result) ? result : "unknown";
  }
}

export const resultBuilderKind: FilterKind<ResultBuilderSpec> = {
  kind: "ResultBuilder",
  results: RESULTS,
  create: (spec) => new ResultBuilder(spec),
};
