/**
 * The filter contract. A filter kind is one file exporting a `FilterKind`: its name, the non-empty results it may
 * return (jumpIf keys are checked against them) and a factory from the spec to a running filter. The registry
 * (registry.ts) maps kind → FilterKind; adding a kind touches its file and one registry line.
 */
import type { Context } from "../context.ts";
import type { ResiliencePolicies } from "../pipeline/resilience.ts";

// deno-lint-ignore no-explicit-any
export type FilterSpec = { name: string; kind: string } & Record<string, any>;

/** What a filter gets besides its spec when it is created. */
export interface FilterEnv {
  /** the pipeline's resilience policies by name */
  resilience: ResiliencePolicies;
  /** name of the owning pipeline */
  pipeline: string;
  log: (msg: string) => void;
}

/** A running filter. */
export interface Filter {
  /** Handles a request: "" continues the flow; a non-empty result is looked up in the node's jumpIf. */
  handle(ctx: Context): string | Promise<string>;
  /** Status for /status/objects (null when the kind reports none). */
  status?(): unknown;
  /** Releases timers and connections when the pipeline is replaced or deleted. */
  close?(): void;
}

/** A filter kind. */
export interface FilterKind {
  kind: string;
  results: string[];
  /** Builds a filter; throws an Error with the validation message for a bad spec. */
  create(spec: FilterSpec, env: FilterEnv): Filter;
}
