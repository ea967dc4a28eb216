/**
 * Object and filter specs as the data plane consumes them: parse the JSON stored under /config/objects/<name> with
 * `parseHTTPServerSpec` / `parsePipelineSpec` to get typed specs with Easegress's defaults applied (they throw
 * SpecError with Easegress's message on an invalid spec; the admin API refuses those before storing them).
 */
export { SpecError } from "./schema.ts";
export type * from "./common.ts";
export type * from "./httpserver.ts";
export { decodeBase64Pem, parseHTTPServerSpec, x509KeyPairError } from "./httpserver.ts";
export type * from "./filters.ts";
export { FILTER_KINDS, filterResults, parseFilterSpec } from "./filters.ts";
export type * from "./pipeline.ts";
export { END, parsePipelineSpec, parseResiliencePolicy } from "./pipeline.ts";
export type * from "./traffic.ts";
export { parseTrafficObject } from "./traffic.ts";
