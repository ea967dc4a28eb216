/**
 * The gateway's per-object request metrics, served on the admin API's /apis/v2/metrics under Easegress's names and
 * labels (pkg/object/httpserver/metrics.go): httpserver_health, httpserver_total_requests,
 * httpserver_total_response, httpserver_total_error_requests, and the histograms httpserver_requests_duration
 * (milliseconds, as Easegress), httpserver_requests_size_bytes and httpserver_response_size_bytes.
 *
 * The data plane feeds it: per HTTPServer `TRAFFIC.httpServer(name)` once, per route
 * `server.route(routerKind, backend)` once, then `record(...)` per request (increments only).
 */
import {
  type Counter,
  type CounterChild,
  type Gauge,
  type Histogram,
  type HistogramChild,
  Registry,
} from "./registry.ts";

/** Easegress's request-duration buckets, in milliseconds. */
export const DURATION_BUCKETS_MS: readonly number[] = [10, 50, 100, 200, 400, 800, 1000, 2000, 4000, 8000];

/** Easegress's body-size buckets: 10 from 200 B to 400 kB, each the same factor apart. */
export const BODY_SIZE_BUCKETS: readonly number[] = Array.from(
  { length: 10 },
  (_, i) => 200 * Math.pow(400000 / 200, i / 9),
);

/** Who this member is: the labels every series carries. */
export interface MemberLabels {
  clusterName: string;
  clusterRole: string;
  instanceName: string;
}

/** The series of one route (router kind + backend pipeline) of one HTTPServer. */
export class RouteTraffic {
  constructor(
    readonly requests: CounterChild,
    readonly responses: CounterChild,
    readonly errors: CounterChild,
    readonly durationMs: HistogramChild,
    readonly requestBytes: HistogramChild,
    readonly responseBytes: HistogramChild,
  ) {}

  /** Records one finished request: its status, duration in ms and sizes in bytes (a status ≥ 400 is an error). */
  record(status: number, ms: number, reqBytes: number, respBytes: number): void {
    this.requests.value++;
    this.responses.value++;
    if (status >= 400) this.errors.value++;
    this.durationMs.observe(ms);
    this.requestBytes.observe(reqBytes);
    this.responseBytes.observe(respBytes);
  }
}

/** One HTTPServer's handle. */
export class ServerTraffic {
  readonly #routes = new Map<string, RouteTraffic>();
  constructor(readonly name: string, readonly metrics: TrafficMetrics) {}

  /** Whether the server is running (httpserver_health 1) or down (0). */
  setHealthy(up: boolean): void {
    this.metrics.health.labels(...this.metrics.labelsOf(this.name)).set(up ? 1 : 0);
  }

  /** The series of a route; keep it rather than calling this per request. */
  route(routerKind: string, backend: string): RouteTraffic {
    const key = `${routerKind}\u0000${backend}`;
    let r = this.#routes.get(key);
    if (!r) {
      const l = [...this.metrics.labelsOf(this.name), routerKind, backend];
      const m = this.metrics;
      r = new RouteTraffic(
        m.requests.labels(...l),
        m.responses.labels(...l),
        m.errors.labels(...l),
        m.duration.labels(...l),
        m.requestSize.labels(...l),
        m.responseSize.labels(...l),
      );
      this.#routes.set(key, r);
    }
    return r;
  }
}

/** The registry of the gateway's metrics. */
export class TrafficMetrics {
  readonly registry = new Registry();
  member: MemberLabels = { clusterName: "", clusterRole: "", instanceName: "" };
  readonly health: Gauge;
  readonly requests: Counter;
  readonly responses: Counter;
  readonly errors: Counter;
  readonly duration: Histogram;
  readonly requestSize: Histogram;
  readonly responseSize: Histogram;
  readonly #servers = new Map<string, ServerTraffic>();

  constructor() {
    const base = ["clusterName", "clusterRole", "instanceName", "name", "kind"];
    const all = [...base, "routerKind", "backend"];
    const r = this.registry;
    this.health = r.gauge("httpserver_health", "show the status for the http server: 1 for ready, 0 for down", base);
    this.requests = r.counter("httpserver_total_requests", "the total count of http requests", all);
    this.responses = r.counter("httpserver_total_response", "the total count of http responses", all);
    this.errors = r.counter("httpserver_total_error_requests", "the total count of http error requests", all);
    this.duration = r.histogram(
      "httpserver_requests_duration",
      "request processing duration histogram (ms)",
      DURATION_BUCKETS_MS,
      all,
    );
    this.requestSize = r.histogram(
      "httpserver_requests_size_bytes",
      "a histogram of the total size of the request. Includes body",
      BODY_SIZE_BUCKETS,
      all,
    );
    this.responseSize = r.histogram(
      "httpserver_response_size_bytes",
      "a histogram of the total size of the returned response body",
      BODY_SIZE_BUCKETS,
      all,
    );
  }

  /** The common labels of HTTPServer `name`. */
  labelsOf(name: string): string[] {
    const m = this.member;
    return [m.clusterName, m.clusterRole, m.instanceName, name, "HTTPServer"];
  }

  /** The handle of HTTPServer `name` (the same one for the same name). */
  httpServer(name: string): ServerTraffic {
    let s = this.#servers.get(name);
    if (!s) {
      s = new ServerTraffic(name, this);
      this.#servers.set(name, s);
    }
    return s;
  }
}

/** This process's gateway metrics (one Easegress member per process). */
export const TRAFFIC = new TrafficMetrics();
