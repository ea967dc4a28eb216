/**
 * A small Prometheus registry: counters, gauges and histograms with label sets resolved once (`labels(...)` returns a
 * child to keep), and the text exposition format 0.0.4. Recording is a number increment (histograms: a short bucket
 * search); all string building happens when `/metrics` is scraped.
 */

/** One series' counter: increase it with `inc`. */
export class CounterChild {
  value = 0;
  /** Adds `n` (default 1); negative amounts are ignored, as a counter never goes down. */
  inc(n = 1): void {
    if (n > 0) this.value += n;
  }
}

/** One series' gauge. */
export class GaugeChild {
  value = 0;
  set(v: number): void {
    this.value = v;
  }
  inc(n = 1): void {
    this.value += n;
  }
}

/** One series' histogram: cumulative counts are computed at scrape time. */
export class HistogramChild {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }
  /** Records one observation (seconds for durations). */
  observe(v: number): void {
    const b = this.bounds;
    let lo = 0, hi = b.length;
    while (lo < hi) { // first bucket whose upper bound is ≥ v
      const mid = (lo + hi) >> 1;
      if (b[mid] >= v) hi = mid;
      else lo = mid + 1;
    }
    if (lo < b.length) this.counts[lo]++;
    this.sum += v;
    this.count++;
  }
}

type Kind = "counter" | "gauge" | "histogram";
type Child = CounterChild | GaugeChild | HistogramChild;

/** A metric family: its name, help, type, label names and the children by label values. */
abstract class Family<C extends Child> {
  readonly children = new Map<string, { values: string[]; child: C }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly kind: Kind,
    readonly labelNames: readonly string[],
  ) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) throw new Error(`bad metric name ${name}`);
  }
  protected abstract create(): C;
  /** The child for these label values (in `labelNames` order); keep it rather than calling this per event. */
  labels(...values: string[]): C {
    if (values.length !== this.labelNames.length) {
      throw new Error(`${this.name}: ${this.labelNames.length} label values expected, got ${values.length}`);
    }
    const key = values.join("\u0000");
    let e = this.children.get(key);
    if (!e) {
      e = { values, child: this.create() };
      this.children.set(key, e);
    }
    return e.child;
  }
  /** Drops the series with these label values (a removed peer). */
  remove(...values: string[]): void {
    this.children.delete(values.join("\u0000"));
  }
}

/** A counter family. */
export class Counter extends Family<CounterChild> {
  protected create(): CounterChild {
    return new CounterChild();
  }
}

/** A gauge family; `collect`, when given, sets the values just before each scrape. */
export class Gauge extends Family<GaugeChild> {
  collect?: (g: Gauge) => void;
  protected create(): GaugeChild {
    return new GaugeChild();
  }
}

/** A histogram family with fixed bucket upper bounds. */
export class Histogram extends Family<HistogramChild> {
  constructor(name: string, help: string, labelNames: readonly string[], readonly buckets: readonly number[]) {
    super(name, help, "histogram", labelNames);
    for (let i = 1; i < buckets.length; i++) {
      if (!(buckets[i] > buckets[i - 1])) throw new Error(`${name}: buckets must increase`);
    }
  }
  protected create(): HistogramChild {
    return new HistogramChild(this.buckets);
  }
}

/** `count` bucket bounds starting at `start`, each `factor` times the previous (Go's prometheus.ExponentialBuckets). */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  const out: number[] = [];
  for (let i = 0, v = start; i < count; i++, v *= factor) out.push(v);
  return out;
}

/** Go's prometheus.DefBuckets. */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A set of metric families rendered together. */
export class Registry {
  readonly #families = new Map<string, Family<Child>>();
  readonly #collectors: Array<() => void> = [];

  #add<F extends Family<Child>>(f: F): F {
    if (this.#families.has(f.name)) throw new Error(`metric ${f.name} registered twice`);
    this.#families.set(f.name, f);
    return f;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, "counter", labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = [], collect?: (g: Gauge) => void): Gauge {
    const g = this.#add(new Gauge(name, help, "gauge", labelNames));
    g.collect = collect;
    return g;
  }

  histogram(name: string, help: string, buckets: readonly number[], labelNames: readonly string[] = []): Histogram {
    return this.#add(new Histogram(name, help, labelNames, buckets));
  }

  /** Runs `fn` before each scrape (to refresh values read from elsewhere). */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  /** The text exposition format (version 0.0.4), families sorted by name. */
  render(): string {
    for (const fn of this.#collectors) fn();
    const out: string[] = [];
    const names = [...this.#families.keys()].sort();
    for (const name of names) {
      const f = this.#families.get(name)!;
      if (f instanceof Gauge && f.collect) f.collect(f);
      out.push(`# HELP ${name} ${escapeHelp(f.help)}`, `# TYPE ${name} ${f.kind}`);
      if (f.labelNames.length === 0 && f.children.size === 0 && f.kind !== "histogram") f.labels(); // 0 when unset
      for (const { values, child } of f.children.values()) {
        const labels = f.labelNames.map((n, i) => `${n}="${escapeValue(values[i])}"`);
        if (child instanceof HistogramChild) {
          let cum = 0;
          for (let i = 0; i < child.bounds.length; i++) {
            cum += child.counts[i];
            out.push(`${name}_bucket${labelText([...labels, `le="${formatNumber(child.bounds[i])}"`])} ${cum}`);
          }
          out.push(`${name}_bucket${labelText([...labels, `le="+Inf"`])} ${child.count}`);
          out.push(`${name}_sum${labelText(labels)} ${formatNumber(child.sum)}`);
          out.push(`${name}_count${labelText(labels)} ${child.count}`);
        } else out.push(`${name}${labelText(labels)} ${formatNumber(child.value)}`);
      }
    }
    out.push("");
    return out.join("\n");
  }
}

/** The Content-Type of {@link Registry.render}'s output. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

function labelText(labels: string[]): string {
  return labels.length === 0 ? "" : `{${labels.join(",")}}`;
}

function formatNumber(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function escapeHelp(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeValue(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}
