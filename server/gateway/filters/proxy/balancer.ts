/**
 * Server choice of a pool (Easegress `proxies/loadbalance.go`): the policies roundRobin, random, weightedRandom, ipHash,
 * headerHash, cookieHash over the healthy servers, and the sticky-session modes consulted before them.
 */
import { Buffer } from "node:buffer";
import { createHmac, randomBytes } from "node:crypto";
import type { GwRequest, GwResponse } from "../../context.ts";
import { parseGoDuration } from "../../../easegress/gotime.ts";

import type { LoadBalanceSpec, Stored } from "../../../easegress/specs/mod.ts";

/** One upstream server of a pool. */
export interface Server {
  url: string;
  /** scheme://host:port (the origin the connection pool is keyed by) */
  origin: string;
  hostname: string;
  port: number;
  https: boolean;
  /** host:port as written in the URL (the upstream Host for hostname servers) */
  hostPort: string;
  /** path prefix of the URL ("" when none) */
  basePath: string;
  /** the URL host is an IP address */
  isIp: boolean;
  weight: number;
  keepHost: boolean;
  tags: string[];
}

/** 32-bit FNV-1a, as Go's hash/fnv New32a. */
export function fnv32a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i) & 0xff;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

const enum Policy {
  RoundRobin,
  Random,
  WeightedRandom,
  IpHash,
  HeaderHash,
  CookieHash,
}

const enum StickyMode {
  None,
  CookieConsistentHash,
  DurationBased,
  ApplicationBased,
}

const RING_REPLICAS = 50;

/**
 * The ring position of a string: FNV-1a followed by the murmur3 finalizer. FNV-1a alone leaves strings that differ
 * only in their last characters (`url#0`..`url#49`, `u1`..`u19`) close together, so one server could own most of
 * the ring (with 3 servers on random ports, 1 in 4 rings sent 20 such keys all to one server).
 */
function ringHash(s: string): number {
  let h = fnv32a(s);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Picks servers for a pool and sets the sticky-session cookie. */
export class LoadBalancer {
  #policy: Policy;
  #headerKey: string;
  #counter = 0;
  #healthy: Server[];
  #totalWeight = 0;
  #sticky: StickyMode = StickyMode.None;
  #appCookie = "";
  #lbCookie = "EG_SESSION";
  #lbCookieExpireMs = 2 * 3600_000;
  #ring: { hash: number; server: Server }[] = [];

  constructor(spec: Stored<LoadBalanceSpec> | null | undefined, servers: Server[]) {
    const p = String(spec?.policy ?? "roundRobin");
    this.#policy = p === "random"
      ? Policy.Random
      : p === "weightedRandom"
      ? Policy.WeightedRandom
      : p === "ipHash"
      ? Policy.IpHash
      : p === "headerHash"
      ? Policy.HeaderHash
      : p === "cookieHash"
      ? Policy.CookieHash
      : Policy.RoundRobin;
    this.#headerKey = String(spec?.headerHashKey ?? "").toLowerCase();
    if (this.#policy === Policy.HeaderHash && this.#headerKey === "") throw new Error("headerHashKey is required");
    const ss = spec?.stickySession;
    if (ss?.mode) {
      const m = String(ss.mode);
      this.#sticky = m === "CookieConsistentHash"
        ? StickyMode.CookieConsistentHash
        : m === "DurationBased"
        ? StickyMode.DurationBased
        : m === "ApplicationBased"
        ? StickyMode.ApplicationBased
        : (() => {
          throw new Error(`unknown sticky session mode ${m}`);
        })();
      this.#appCookie = String(ss.appCookieName ?? "");
      if (this.#sticky !== StickyMode.DurationBased && this.#appCookie === "") {
        throw new Error("appCookieName is required");
      }
      this.#lbCookie = String(ss.lbCookieName || "EG_SESSION");
      if (ss.lbCookieExpire) this.#lbCookieExpireMs = parseGoDuration(String(ss.lbCookieExpire));
    }
    this.#healthy = servers;
    this.setHealthy(servers);
  }

  /** Replaces the set of healthy servers (health check). */
  setHealthy(servers: Server[]): void {
    this.#healthy = servers;
    this.#totalWeight = servers.reduce((a, s) => a + s.weight, 0);
    if (this.#sticky === StickyMode.CookieConsistentHash) {
      const ring: { hash: number; server: Server }[] = [];
      for (const s of servers) {
        for (let i = 0; i < RING_REPLICAS; i++) ring.push({ hash: ringHash(`${s.url}#${i}`), server: s });
      }
      ring.sort((a, b) => a.hash - b.hash);
      this.#ring = ring;
    }
  }

  get healthy(): Server[] {
    return this.#healthy;
  }

  /** The server for this request, or undefined when no server is healthy. */
  choose(req: GwRequest): Server | undefined {
    const servers = this.#healthy;
    const n = servers.length;
    if (n === 0) return undefined;
    if (this.#sticky !== StickyMode.None) {
      const s = this.#stickyServer(req);
      if (s !== undefined) return s;
    }
    switch (this.#policy) {
      case Policy.RoundRobin:
        return servers[(this.#counter++ >>> 0) % n];
      case Policy.Random:
        return servers[Math.floor(Math.random() * n)];
      case Policy.WeightedRandom: {
        if (this.#totalWeight <= 0) return servers[Math.floor(Math.random() * n)];
        let r = Math.random() * this.#totalWeight;
        for (const s of servers) {
          r -= s.weight;
          if (r < 0) return s;
        }
        return servers[n - 1];
      }
      case Policy.IpHash:
        return servers[fnv32a(req.realIp) % n];
      case Policy.HeaderHash:
        return servers[fnv32a(req.headers.get(this.#headerKey)) % n];
      case Policy.CookieHash:
        return servers[fnv32a(req.headers.get("cookie")) % n];
    }
  }

  #stickyServer(req: GwRequest): Server | undefined {
    if (this.#sticky === StickyMode.CookieConsistentHash) {
      const v = req.cookie(this.#appCookie);
      if (v === "" || this.#ring.length === 0) return undefined;
      const h = ringHash(v);
      let lo = 0, hi = this.#ring.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.#ring[mid].hash < h) lo = mid + 1;
        else hi = mid;
      }
      return this.#ring[lo % this.#ring.length].server;
    }
    const v = req.cookie(this.#lbCookie);
    if (v.length !== 80) return undefined;
    const key = Buffer.from(v.slice(0, 16), "hex");
    const mac = v.slice(16);
    for (const s of this.#healthy) if (sign(key, s.url) === mac) return s;
    return undefined;
  }

  /** Sets the sticky cookie on the response for the server that answered. */
  onResponse(resp: GwResponse, server: Server): void {
    if (this.#sticky !== StickyMode.DurationBased && this.#sticky !== StickyMode.ApplicationBased) return;
    if (this.#sticky === StickyMode.ApplicationBased) {
      const prefix = this.#appCookie + "=";
      if (!resp.headers.getAll("set-cookie").some((c) => c.startsWith(prefix))) return;
    }
    const key = randomBytes(8);
    const value = key.toString("hex") + sign(key, server.url);
    const expires = new Date(Date.now() + this.#lbCookieExpireMs).toUTCString();
    resp.headers.add("Set-Cookie", `${this.#lbCookie}=${value}; Expires=${expires}`);
  }
}

function sign(key: Uint8Array, url: string): string {
  return createHmac("sha256", key).update(url).digest("hex");
}
