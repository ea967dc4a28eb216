/** Filter kinds by name. Adding a kind: its file under filters/ and one line here. */
import type { FilterKind } from "./filter.ts";
import { mockKind } from "./mock.ts";
import { proxyKind } from "./proxy/proxy.ts";

const KINDS = new Map<string, FilterKind>([
  [proxyKind.kind, proxyKind],
  [mockKind.kind, mockKind],
]);

/** The kind of that name, or undefined when this build does not run it. */
export function filterKind(kind: string): FilterKind | undefined {
  return KINDS.get(kind);
}

/** Names of every kind that runs. */
export function filterKinds(): string[] {
  return [...KINDS.keys()];
}
