/**
 * The filter contract. A filter kind is one file exporting a `FilterKind`: its name, the non-empty results it may
 * return (jumpIf keys are checked against them) and a factory from the spec to a running filter. The registry
 * (registry.ts) maps kind → FilterKind; adding a kind touches its file and one registry line.
 */
import type { Context } from "../context.ts";
import type { ResiliencePolicies } from "../pipeline/resilience.ts";
import type { FilterSpec as KindSpec, Stored } from "../../easegress/specs/mod.ts";

/** A filter's spec as stored (see Stored): its name and kind, and the fields of its kind's spec `S`. */
export type FilterSpec<S extends KindSpec = KindSpec> = Stored<S> & { name: string; kind: string };

/** Read access to the cluster store for filters that keep data there (basicAuth ETCD mode, under /custom-data/). */
export interface StoreView {
  /**
   * Calls `onChange` with every key → value under `prefix` once read, and again after each change (and after the store
   * comes back when it was unreachable); `close()` stops.
   */
  watchPrefix(prefix: string, onChange: (kvs: Map<string, string>) => void): { close(): void };
}

/** What a filter gets besides its spec when it is created. */
export interface FilterEnv {
  /** the store (null where there is none, such as the pipelines of inline backendPools) */
  store: StoreView | null;
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

/** A filter kind; `S` is its spec (server/easegress/specs/filters.ts). */
export interface FilterKind<S extends KindSpec = KindSpec> {
  kind: string;
  results: string[];
  /** Builds a filter; throws an Error with the validation message for a bad spec. */
  create(spec: FilterSpec<S>, env: FilterEnv): Filter;
}
