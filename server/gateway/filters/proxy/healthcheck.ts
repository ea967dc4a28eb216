/**
 * Active health check of a pool's servers (Easegress `proxies/healthchecker.go`): every `interval` each server is
 * probed with `Connection: close`; `fails` consecutive failures take it out of selection, `passes` consecutive
 * successes bring it back. Servers start healthy and the first round runs when the pool is created.
 */
import { Buffer } from "node:buffer";
import { parseGoDuration } from "../../../easegress/gotime.ts";
import type { Server } from "./balancer.ts";
import { Origin, type UpstreamTls } from "./upstream.ts";

import type { ProxyHealthCheckSpec, Stored } from "../../../easegress/specs/mod.ts";

/** The largest probe response body read (the body matcher looks at it). */
const PROBE_MAX_BODY = 1 << 20;

interface Probe {
  fails: number;
  passes: number;
  healthy: boolean;
}

/** Probes a pool's servers and reports the healthy set after every change. */
export class HealthChecker {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly fails: number;
  readonly passes: number;
  #spec: Stored<ProxyHealthCheckSpec>;
  #state = new Map<Server, Probe>();
  #timer?: ReturnType<typeof setInterval>;
  #closed = false;
  #codes: [number, number][];

  constructor(
    spec: Stored<ProxyHealthCheckSpec>,
    readonly servers: Server[],
    readonly tls: UpstreamTls | null,
    readonly onChange: (healthy: Server[]) => void,
  ) {
    this.#spec = spec;
    this.intervalMs = spec.interval ? parseGoDuration(String(spec.interval)) : 60_000;
    this.timeoutMs = spec.timeout ? parseGoDuration(String(spec.timeout)) : 3_000;
    this.fails = Math.max(1, Number(spec.fails ?? 1) || 1);
    this.passes = Math.max(1, Number(spec.passes ?? 1) || 1);
    this.#codes = Array.isArray(spec.match?.statusCodes) && spec.match.statusCodes.length > 0
      ? spec.match.statusCodes.map((r: number[]) => [Number(r[0]), Number(r[1] ?? r[0])])
      : [[200, 399]];
    if ((spec.username ? 1 : 0) + (spec.password ? 1 : 0) === 1) {
      throw new Error("both username and password must be set for basic auth");
    }
    for (const s of servers) this.#state.set(s, { fails: 0, passes: 0, healthy: true });
    this.#round();
    this.#timer = setInterval(() => this.#round(), this.intervalMs);
  }

  async #round(): Promise<void> {
    await Promise.all(this.servers.map((s) => this.#probe(s)));
  }

  async #probe(s: Server): Promise<void> {
    const ok = await this.#check(s).catch(() => false);
    if (this.#closed) return;
    const st = this.#state.get(s)!;
    let changed = false;
    if (ok) {
      st.fails = 0;
      st.passes++;
      if (!st.healthy && st.passes >= this.passes) changed = st.healthy = true;
    } else {
      st.passes = 0;
      st.fails++;
      if (st.healthy && st.fails >= this.fails) {
        st.healthy = false;
        changed = true;
      }
    }
    if (changed) this.onChange(this.servers.filter((x) => this.#state.get(x)!.healthy));
  }

  async #check(s: Server): Promise<boolean> {
    const spec = this.#spec;
    const port = spec.port ? Number(spec.port) : s.port;
    const origin = new Origin(s.hostname, port, s.https ? this.tls ?? { insecure: true } : null, 0);
    const uri = String(spec.uri ?? spec.path ?? "") || s.basePath || "/";
    const method = String(spec.method ?? "GET");
    const body = new TextEncoder().encode(String(spec.body ?? ""));
    let host = s.port === port ? s.hostPort : `${s.hostname}:${port}`;
    let head = "";
    for (const [k, v] of Object.entries((spec.headers ?? {}) as Record<string, string>)) {
      if (k.toLowerCase() === "host") host = v;
      else head += `${k}: ${v}\r\n`;
    }
    if (spec.username) {
      head += `Authorization: Basic ${Buffer.from(`${spec.username}:${spec.password}`).toString("base64")}\r\n`;
    }
    if (body.length > 0) head += `Content-Length: ${body.length}\r\n`;
    const text = `${method} ${uri} HTTP/1.1\r\nHost: ${host}\r\n${head}Connection: close\r\n\r\n`;
    const resp = await origin.roundTrip(text, body, method, PROBE_MAX_BODY, this.timeoutMs);
    resp.release?.();
    origin.close();
    if (!this.#codes.some(([a, b]) => resp.status >= a && resp.status <= b)) return false;
    for (const h of spec.match?.headers ?? []) {
      const v = resp.headers.get(String(h.name).toLowerCase());
      if (h.type === "regexp" ? !new RegExp(h.value as string).test(v) : v !== h.value) return false;
    }
    const bm = spec.match?.body;
    if (bm?.value) {
      const text = new TextDecoder().decode(resp.body);
      if (bm.type === "regexp" ? !new RegExp(bm.value).test(text) : !text.includes(bm.value)) return false;
    }
    return true;
  }

  /** Whether a server is currently healthy. */
  isHealthy(s: Server): boolean {
    return this.#state.get(s)?.healthy ?? true;
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
  }
}
