/**
 * DataBuilder (kind `DataBuilder`): renders `template` as YAML into any value and stores it in the context data
 * under `dataKey` (read by later templates as `.data.<dataKey>`). Result `buildErr`.
 */
import type { Context } from "../context.ts";
import { buildErr, BuilderTemplate } from "../template/builder.ts";
import type { Filter, FilterKind, FilterSpec } from "./filter.ts";
import type { DataBuilderSpec } from "../../easegress/specs/mod.ts";

class DataBuilder implements Filter {
  #key: string;
  #template: BuilderTemplate;
  #name: string;

  constructor(spec: FilterSpec<DataBuilderSpec>) {
    if (!spec.dataKey) throw new Error("dataKey must be specified");
    if (!spec.template) throw new Error("template must be specified");
    this.#name = spec.name;
    this.#key = String(spec.dataKey);
    this.#template = new BuilderTemplate(spec);
  }

  handle(ctx: Context): string {
    try {
      ctx.data[this.#key] = this.#template.build(ctx);
      return "";
    } catch (e) {
      return buildErr(ctx, `dataBuilder(${this.#name})`, (e as Error).message);
    }
  }
}

export const dataBuilderKind: FilterKind<DataBuilderSpec> = {
  kind: "DataBuilder",
  results: ["buildErr"],
  create: (spec) => new DataBuilder(spec),
};
