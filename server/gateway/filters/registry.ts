/** Filter kinds by name. Adding a kind: its file under filters/ and one line here. */
import type { FilterKind } from "./filter.ts";
import { corsAdaptorKind } from "./corsadaptor.ts";
import { dataBuilderKind } from "./databuilder.ts";
import { fallbackKind } from "./fallback.ts";
import { headerToJsonKind } from "./headertojson.ts";
import { mockKind } from "./mock.ts";
import { proxyKind } from "./proxy/proxy.ts";
import { rateLimiterKind } from "./ratelimiter.ts";
import { redirectorKind } from "./redirector.ts";
import { requestAdaptorKind } from "./requestadaptor.ts";
import { requestBuilderKind } from "./requestbuilder.ts";
import { responseAdaptorKind } from "./responseadaptor.ts";
import { responseBuilderKind } from "./responsebuilder.ts";
import { resultBuilderKind } from "./resultbuilder.ts";
import { validatorKind } from "./validator.ts";
import { webSocketProxyKind } from "./websocketproxy.ts";

const KINDS = new Map<string, FilterKind>(
  [
    proxyKind,
    mockKind,
    requestAdaptorKind,
    responseAdaptorKind,
    rateLimiterKind,
    corsAdaptorKind,
    validatorKind,
    redirectorKind,
    fallbackKind,
    headerToJsonKind,
    webSocketProxyKind,
    requestBuilderKind,
    responseBuilderKind,
    dataBuilderKind,
    resultBuilderKind,
  ].map((k) => [k.kind, k]),
);

/** The kind of that name, or undefined when this build does not run it. */
export function filterKind(kind: string): FilterKind | undefined {
  return KINDS.get(kind);
}

/** Names of every kind that runs. */
export function filterKinds(): string[] {
  return [...KINDS.keys()];
}
