/**
 * A Pipeline object (Easegress `pkg/object/pipeline`): its filters, its flow (jumpIf, END, alias, namespace) and
 * its resilience policies. `handle` runs the flow exactly as Easegress does: a non-empty result without a jumpIf entry
 * ends the flow; jumps only go forward.
 */
import type { Context } from "../context.ts";
import { DEFAULT_NS } from "../context.ts";
import type { Filter, FilterSpec, StoreView } from "../filters/filter.ts";
import { filterKind } from "../filters/registry.ts";
import { ResiliencePolicies } from "./resilience.ts";
import type { FlowNode as FlowNodeSpec, MetaSpec, PipelineSpec, Stored } from "../../easegress/specs/mod.ts";

/** A Pipeline object as stored: its name, the other meta fields and its spec. */
export type PipelineObject = Stored<MetaSpec & PipelineSpec> & { name: string };

interface FlowNode {
  /** alias or filter name: what jumpIf targets name */
  alias: string;
  /** null for END */
  filter: Filter | null;
  filterName: string;
  namespace: string;
  jumpIf: Map<string, string> | null;
}

/** A running pipeline. */
export class Pipeline {
  readonly name: string;
  readonly spec: PipelineObject;
  #nodes: FlowNode[] = [];
  #filters = new Map<string, Filter>();
  #data: Record<string, unknown> | null;

  /** Builds the pipeline; throws with a validation message on a bad spec. */
  constructor(spec: PipelineObject, log: (msg: string) => void, store: StoreView | null = null) {
    this.name = spec.name;
    this.spec = spec;
    if (!Array.isArray(spec.filters)) throw new Error("filters: required");
    const resilience = new ResiliencePolicies(spec.resilience ?? []);
    const kinds = new Map<string, string[]>();
    try {
      for (const fs of spec.filters as FilterSpec[]) {
        if (!fs || typeof fs.name !== "string" || fs.name === "") throw new Error("filters: filter without name");
        if (fs.name === "END") throw new Error("filters: can't use END as the filter name");
        if (this.#filters.has(fs.name)) throw new Error(`filters: duplicated filter name ${fs.name}`);
        const kind = filterKind(fs.kind);
        if (!kind) throw new Error(`filters: kind ${fs.kind} not supported`);
        this.#filters.set(fs.name, kind.create(fs, { resilience, pipeline: this.name, log, store }));
        kinds.set(fs.name, kind.results);
      }
      const flow: Stored<FlowNodeSpec>[] = Array.isArray(spec.flow) && spec.flow.length > 0
        ? spec.flow
        : (spec.filters as FilterSpec[]).map((f) => ({ filter: f.name }));
      for (let i = 0; i < flow.length; i++) {
        const n = flow[i];
        const name = String(n.filter ?? "");
        if (name !== "END" && !this.#filters.has(name)) throw new Error(`flow: filter ${name} not found`);
        let jumpIf: Map<string, string> | null = null;
        if (n.jumpIf && Object.keys(n.jumpIf).length > 0) {
          jumpIf = new Map();
          const results = kinds.get(name) ?? [];
          const later = new Set(flow.slice(i + 1).map((m) => String(m.alias || m.filter)));
          for (const [r, target] of Object.entries(n.jumpIf as Record<string, string>)) {
            if (r !== "" && !results.includes(r)) {
              throw new Error(`flow: filter ${name}: result ${r} is not in results`);
            }
            if (target !== "END" && !later.has(target)) {
              throw new Error(`flow: filter ${name}: jump target ${target} is not a later node`);
            }
            jumpIf.set(r, target);
          }
        }
        this.#nodes.push({
          alias: String(n.alias || name),
          filter: name === "END" ? null : this.#filters.get(name)!,
          filterName: name,
          namespace: n.namespace || DEFAULT_NS,
          jumpIf,
        });
      }
    } catch (err) {
      this.close();
      throw err;
    }
    this.#data = spec.data && Object.keys(spec.data).length > 0 ? spec.data : null;
  }

  /** Runs the flow; returns the last result. */
  handle(ctx: Context): string | Promise<string> {
    if (this.#data !== null) ctx.data.PIPELINE = this.#data;
    const nodes = this.#nodes;
    // one filter in the DEFAULT namespace and no jumps: its own result (or promise) is the flow's
    if (
      nodes.length === 1 && nodes[0].filter !== null && nodes[0].jumpIf === null && nodes[0].namespace === DEFAULT_NS
    ) {
      return nodes[0].filter.handle(ctx);
    }
    return this.#run(ctx);
  }

  async #run(ctx: Context): Promise<string> {
    let result = "";
    let next = "";
    const nodes = this.#nodes;
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i];
      if (next !== "" && next !== node.alias) continue;
      next = "";
      if (node.filter === null) break;
      ctx.namespace = node.namespace;
      const r = node.filter.handle(ctx);
      result = typeof r === "string" ? r : await r;
      if (node.jumpIf !== null) {
        const j = node.jumpIf.get(result);
        if (j !== undefined) next = j;
        else if (result !== "") break;
      } else if (result !== "") break;
      if (next === "END") break;
    }
    ctx.namespace = DEFAULT_NS;
    return result;
  }

  /** `{health, filters: {name: status}}` */
  status(): { health: string; filters: Record<string, unknown> } {
    const filters: Record<string, unknown> = {};
    for (const [name, f] of this.#filters) filters[name] = f.status?.() ?? null;
    return { health: "", filters };
  }

  close(): void {
    for (const f of this.#filters.values()) f.close?.();
  }
}
