/**
 * The Proxy pool's memoryCache (Easegress `proxies/memorycache.go`): responses kept for a fixed expiration, keyed by
 * scheme + host + path + method (the query is ignored), for the listed methods and status codes only.
 */
import type { GwRequest } from "../../context.ts";
import type { HeaderList } from "../../http1.ts";
import { parseGoDuration } from "../../../easegress/gotime.ts";

import type { MemoryCacheSpec, Stored } from "../../../easegress/specs/mod.ts";

/** Entries beyond this count evict the oldest: bounds the memory a cache of many distinct paths can take. */
const MAX_ENTRIES = 10_000;

interface Entry {
  status: number;
  headers: HeaderList;
  body: Uint8Array;
  expires: number;
}

export class MemoryCache {
  #expirationMs: number;
  #maxEntryBytes: number;
  #codes: Set<number>;
  #methods: Set<string>;
  #entries = new Map<string, Entry>();

  constructor(spec: Stored<MemoryCacheSpec>) {
    if (!spec.expiration) throw new Error("memoryCache: expiration is required");
    this.#expirationMs = parseGoDuration(String(spec.expiration));
    this.#maxEntryBytes = Number(spec.maxEntryBytes ?? 0);
    if (!(this.#maxEntryBytes >= 1)) throw new Error("memoryCache: maxEntryBytes must be >= 1");
    this.#codes = new Set((spec.codes ?? []).map(Number));
    this.#methods = new Set(spec.methods ?? []);
  }

  #key(req: GwRequest): string {
    return req.scheme + req.host + req.path + req.method;
  }

  load(req: GwRequest): Entry | undefined {
    if (!this.#methods.has(req.method)) return undefined;
    if (req.headers.get("cache-control").includes("no-cache")) return undefined;
    const key = this.#key(req);
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.expires < Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }

  store(req: GwRequest, status: number, headers: HeaderList, body: Uint8Array): void {
    if (!this.#methods.has(req.method) || !this.#codes.has(status) || body.length > this.#maxEntryBytes) return;
    const acao = headers.get("access-control-allow-origin");
    if (acao !== "" && acao !== "*") return;
    const reqCc = req.headers.get("cache-control");
    if (reqCc.includes("no-store") || reqCc.includes("no-cache")) return;
    const cc = headers.get("cache-control");
    if (cc.includes("no-store") || cc.includes("no-cache") || cc.includes("must-revalidate")) return;
    if (this.#entries.size >= MAX_ENTRIES) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(this.#key(req), {
      status,
      headers: headers.clone(),
      body,
      expires: Date.now() + this.#expirationMs,
    });
  }
}
