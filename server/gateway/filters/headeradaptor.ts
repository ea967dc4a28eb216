/** The `header: {del, set, add}` of the adaptors, applied in that order. */
import type { HeaderList } from "../http1.ts";
import type { HeaderAdaptSpec, Stored } from "../../easegress/specs/mod.ts";

/** A compiled header adaptor. */
export class HeaderAdaptor {
  #del: string[];
  #set: [string, string][];
  #add: [string, string][];

  constructor(spec: Stored<HeaderAdaptSpec> | null | undefined) {
    this.#del = (spec?.del ?? []) as string[];
    this.#set = Object.entries((spec?.set ?? {}) as Record<string, string>);
    this.#add = Object.entries((spec?.add ?? {}) as Record<string, string>);
  }

  get empty(): boolean {
    return this.#del.length === 0 && this.#set.length === 0 && this.#add.length === 0;
  }

  apply(h: HeaderList): void {
    for (const k of this.#del) h.del(k);
    for (const [k, v] of this.#set) h.set(k, v);
    for (const [k, v] of this.#add) h.add(k, v);
  }
}
