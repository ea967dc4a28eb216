/**
 * The Pipeline object spec (Easegress v2.11 `pkg/object/pipeline`) and its resilience policies
 * (`pkg/resilience`): TypeScript types of the parsed spec, defaults, and validation with Easegress's messages.
 *
 * A pipeline is stored with its `filters` and `resilience` entries as the user wrote them (Easegress keeps them as
 * raw maps); `parsePipelineSpec` gives the typed view the data plane runs, every filter and policy with its defaults.
 */
import {
  arrayOf,
  decodeAndValidate,
  FLOAT,
  INT,
  type Obj,
  opt,
  RAW_MAP,
  req,
  SpecError,
  STRING,
  STRING_MAP,
  type StructDef,
  UINT32,
  UINT8,
  val,
} from "./schema.ts";
import { META_FIELDS, type MetaSpec, parseMeta } from "./common.ts";
import { FILTER_KINDS, type FilterSpec, parseFilterSpec } from "./filters.ts";

/** The built-in flow target that ends the pipeline. */
export const END = "END";

/** One node of a flow: a filter (or END), an alias to jump to, the namespace it runs in, its jumps by result. */
export interface FlowNode {
  filter: string;
  alias: string;
  /** "" = DEFAULT */
  namespace: string;
  jumpIf?: Record<string, string>;
}

/** Retry policy: `maxAttempts` tries (the first included), waiting `waitDuration` (× 1.5 each time if exponential). */
export interface RetryPolicy extends MetaSpec {
  kind: "Retry";
  maxAttempts: number;
  waitDuration: string;
  backOffPolicy: "random" | "exponential";
  randomizationFactor: number;
}

/** CircuitBreaker policy (resilience4j-style), with Easegress's defaults. */
export interface CircuitBreakerPolicy extends MetaSpec {
  kind: "CircuitBreaker";
  slidingWindowType: "COUNT_BASED" | "TIME_BASED";
  failureRateThreshold: number;
  slowCallRateThreshold: number;
  slidingWindowSize: number;
  permittedNumberOfCallsInHalfOpenState: number;
  minimumNumberOfCalls: number;
  slowCallDurationThreshold: string;
  /** "" = unlimited */
  maxWaitDurationInHalfOpenState: string;
  waitDurationInOpenState: string;
}

export type ResiliencePolicy = RetryPolicy | CircuitBreakerPolicy;

/** The typed Pipeline spec: the flow (the filters in order when none is given), filters and policies parsed. */
export interface PipelineSpec {
  flow: FlowNode[];
  filters: FilterSpec[];
  resilience: ResiliencePolicy[];
  /** put into context data `PIPELINE` on each request when not empty */
  data?: Record<string, unknown>;
}

const RETRY: StructDef = {
  go: "resilience.RetryPolicy",
  defaults: () => ({ maxAttempts: 3, waitDuration: "500ms", backOffPolicy: "random" }),
  fields: {
    ...META_FIELDS,
    maxAttempts: opt(INT, { minimum: 1 }),
    waitDuration: opt(STRING, { format: "duration" }),
    backOffPolicy: opt(STRING, { enum: ["random", "exponential"] }),
    randomizationFactor: opt(FLOAT, { minimum: 0, maximum: 1 }),
  },
};

const CIRCUIT_BREAKER: StructDef = {
  go: "resilience.CircuitBreakerPolicy",
  defaults: () => ({
    failureRateThreshold: 50,
    slowCallRateThreshold: 100,
    slidingWindowType: "COUNT_BASED",
    slidingWindowSize: 100,
    permittedNumberOfCallsInHalfOpenState: 10,
    minimumNumberOfCalls: 100,
    slowCallDurationThreshold: "1m",
    waitDurationInOpenState: "1m",
  }),
  fields: {
    ...META_FIELDS,
    slidingWindowType: opt(STRING, { enum: ["COUNT_BASED", "TIME_BASED"] }),
    failureRateThreshold: opt(UINT8, { minimum: 1, maximum: 100 }),
    slowCallRateThreshold: opt(UINT8, { minimum: 1, maximum: 100 }),
    slidingWindowSize: opt(UINT32, { minimum: 1 }),
    permittedNumberOfCallsInHalfOpenState: opt(UINT32),
    minimumNumberOfCalls: opt(UINT32),
    slowCallDurationThreshold: opt(STRING, { format: "duration" }),
    maxWaitDurationInHalfOpenState: opt(STRING, { format: "duration" }),
    waitDurationInOpenState: opt(STRING, { format: "duration" }),
  },
};

const POLICY_KINDS: Record<string, StructDef> = { Retry: RETRY, CircuitBreaker: CIRCUIT_BREAKER };

/** resilience.NewPolicy: a typed policy with defaults, or a SpecError. */
export function parseResiliencePolicy(raw: unknown): ResiliencePolicy {
  const meta = parseMeta(raw);
  const def = POLICY_KINDS[meta.kind];
  if (!def) throw new SpecError(`kind ${meta.kind} not found`);
  return decodeAndValidate<ResiliencePolicy>(def, raw);
}

/** A Pipeline spec as decoded, before its filters and policies are parsed by their kinds. */
interface DecodedPipelineSpec {
  flow?: FlowNode[];
  filters?: Obj[];
  resilience?: Obj[];
  data?: Obj;
}

/** pipeline.Spec.Validate: filters, then flow jumps (forward only), then policies. */
function validatePipeline(s: DecodedPipelineSpec): string | undefined {
  let prefix = "filters";
  try {
    const kinds = new Map<string, string>();
    for (const raw of s.filters ?? []) {
      const f = parseFilterSpec(raw);
      if (f.name === END) throw new SpecError(`can't use ${END}(built-in) for filter name`);
      if (kinds.has(f.name)) throw new SpecError(`duplicated filter name ${f.name}`);
      kinds.set(f.name, f.kind);
    }
    prefix = "flow";
    const flow = s.flow ?? [];
    const targets = new Map<string, number>([[END, 1]]);
    for (let i = flow.length - 1; i >= 0; i--) {
      const n = flow[i];
      if (n.filter === END) continue;
      const kind = kinds.get(n.filter);
      if (kind === undefined) throw new SpecError(`filter ${n.filter} not found`);
      const results = FILTER_KINDS[kind].results;
      for (const [result, target] of Object.entries(n.jumpIf ?? {})) {
        if (result !== "" && !results.includes(result)) {
          throw new SpecError(`filter ${n.filter}: result ${result} is not in [${results.join(" ")}]`);
        }
        const count = targets.get(target) ?? 0;
        if (count === 0) throw new SpecError(`filter ${n.filter}: target filter ${target} not found`);
        if (count > 1) throw new SpecError(`duplicated filter name/alias: ${target}`);
      }
      const alias = n.alias || n.filter;
      targets.set(alias, (targets.get(alias) ?? 0) + 1);
    }
    // Easegress reports policy errors under the "flow" prefix too
    for (const r of s.resilience ?? []) parseResiliencePolicy(r);
  } catch (err) {
    return `${prefix}: ${(err as Error).message}`;
  }
  return undefined;
}

export const PIPELINE: StructDef<DecodedPipelineSpec> = {
  go: "pipeline.Spec",
  fields: {
    flow: opt(arrayOf(val({
      go: "pipeline.FlowNode",
      fields: {
        filter: req(STRING, { required: true, format: "urlname" }),
        alias: opt(STRING),
        namespace: opt(STRING),
        jumpIf: opt(STRING_MAP),
      },
    }))),
    filters: req(arrayOf(RAW_MAP), { required: true }),
    resilience: opt(arrayOf(RAW_MAP)),
    data: opt(RAW_MAP),
  },
  validate: validatePipeline,
};

/** Parses and validates a Pipeline spec into its typed form; throws SpecError with Easegress's message. */
export function parsePipelineSpec(raw: unknown): PipelineSpec {
  const s = decodeAndValidate(PIPELINE, raw);
  const filters = (s.filters ?? []).map(parseFilterSpec);
  const flow: FlowNode[] = s.flow && s.flow.length > 0
    ? s.flow
    : filters.map((f) => ({ filter: f.name, alias: "", namespace: "" }));
  return {
    flow,
    filters,
    resilience: (s.resilience ?? []).map(parseResiliencePolicy),
    data: s.data,
  };
}
