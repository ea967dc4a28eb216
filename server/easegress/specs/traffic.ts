/**
 * A stored traffic object (the JSON under /config/objects/<name>) as the data plane runs it: its name and kind, and
 * its typed spec with defaults.
 */
import { type HTTPServerSpec, parseHTTPServerSpec } from "./httpserver.ts";
import { parsePipelineSpec, type PipelineSpec } from "./pipeline.ts";
import { type Obj, SpecError } from "./schema.ts";

/** An HTTPServer or a Pipeline, typed. */
export type TrafficObject =
  | { name: string; kind: "HTTPServer"; spec: HTTPServerSpec }
  | { name: string; kind: "Pipeline"; spec: PipelineSpec };

/**
 * Parses a stored object's JSON (text or decoded); undefined for the kinds that are not traffic objects (system
 * controllers). Throws SpecError for a spec the API would have refused.
 */
export function parseTrafficObject(stored: string | Obj): TrafficObject | undefined {
  let o: Obj;
  try {
    o = typeof stored === "string" ? JSON.parse(stored) : stored;
  } catch (err) {
    throw new SpecError(`bad object JSON: ${(err as Error).message}`);
  }
  if (o === null || typeof o !== "object" || typeof o.name !== "string") {
    throw new SpecError("an object needs a name and a kind");
  }
  if (o.kind === "HTTPServer") return { name: o.name, kind: "HTTPServer", spec: parseHTTPServerSpec(o) };
  if (o.kind === "Pipeline") return { name: o.name, kind: "Pipeline", spec: parsePipelineSpec(o) };
  return undefined;
}

/**
 * A spec as stored and read by the data plane: the JSON that `marshal` wrote (omitempty fields left out, nil pointers,
 * slices and maps as null), or one given by hand (tests): each field may be absent or null, so readers apply the
 * defaults themselves.
 */
export type Stored<T> = T extends readonly (infer U)[] ? Stored<U>[]
  : T extends object ? { [K in keyof T]?: Stored<T[K]> | null }
  : T;
