/**
 * Request statistics of an HTTPServer in Easegress's status shape: cumulative counts, sizes, min/max/mean; per 5-second
 * window the latency percentiles and status codes (reset on every read); m1/m5/m15 rates as EWMAs ticked per read.
 */

/** Latency samples kept per window: beyond it every other sample is dropped (the percentiles stay representative). */
const MAX_SAMPLES = 8192;

class Ewma {
  rate = 0;
  #init = false;
  constructor(readonly alpha: number) {}
  tick(count: number, seconds: number): void {
    const instant = count / seconds;
    if (this.#init) this.rate += this.alpha * (instant - this.rate);
    else {
      this.rate = instant;
      this.#init = true;
    }
  }
}

function ewmaSet(intervalS: number): Ewma[] {
  return [1, 5, 15].map((m) => new Ewma(1 - Math.exp(-intervalS / 60 / m)));
}

export class ServerStats {
  count = 0;
  errCount = 0;
  reqSize = 0;
  respSize = 0;
  #sumMs = 0;
  #min = Infinity;
  #max = 0;
  #samples: number[] = [];
  #skip = 0;
  #codes = new Map<number, number>();
  #windowCount = 0;
  #windowErr = 0;
  #lastRead = performance.now();
  #rates = ewmaSet(5);
  #errRates = ewmaSet(5);

  /** Records one finished request. */
  record(status: number, ms: number, reqBytes: number, respBytes: number): void {
    this.count++;
    this.#windowCount++;
    if (status >= 400) {
      this.errCount++;
      this.#windowErr++;
    }
    this.reqSize += reqBytes;
    this.respSize += respBytes;
    this.#sumMs += ms;
    if (ms < this.#min) this.#min = ms;
    if (ms > this.#max) this.#max = ms;
    if (this.#samples.length < MAX_SAMPLES) this.#samples.push(ms);
    else if ((this.#skip++ & 1) === 0) this.#samples[this.#skip % MAX_SAMPLES] = ms;
    this.#codes.set(status, (this.#codes.get(status) ?? 0) + 1);
  }

  /** The status fields; resets the window. */
  read(): Record<string, unknown> {
    const now = performance.now();
    const secs = Math.max(0.001, (now - this.#lastRead) / 1000);
    this.#lastRead = now;
    for (const r of this.#rates) r.tick(this.#windowCount, secs);
    for (const r of this.#errRates) r.tick(this.#windowErr, secs);
    this.#windowCount = this.#windowErr = 0;
    const s = this.#samples.sort((a, b) => a - b);
    const pct = (p: number) => (s.length === 0 ? 0 : round(s[Math.min(s.length - 1, Math.floor(p * s.length))]));
    const codes: Record<string, number> = {};
    for (const [c, n] of this.#codes) codes[c] = n;
    const out = {
      count: this.count,
      m1: this.#rates[0].rate,
      m5: this.#rates[1].rate,
      m15: this.#rates[2].rate,
      errCount: this.errCount,
      m1Err: this.#errRates[0].rate,
      m5Err: this.#errRates[1].rate,
      m15Err: this.#errRates[2].rate,
      m1ErrPercent: this.#rates[2].rate > 0 ? this.#errRates[2].rate / this.#rates[2].rate : 0,
      m5ErrPercent: 0,
      m15ErrPercent: 0,
      min: this.count > 0 ? round(this.#min) : 0,
      max: round(this.#max),
      mean: this.count > 0 ? round(this.#sumMs / this.count) : 0,
      p25: pct(0.25),
      p50: pct(0.5),
      p75: pct(0.75),
      p95: pct(0.95),
      p98: pct(0.98),
      p99: pct(0.99),
      p999: pct(0.999),
      reqSize: this.reqSize,
      respSize: this.respSize,
      codes,
    };
    this.#samples = [];
    this.#codes.clear();
    return out;
  }
}

function round(ms: number): number {
  return Math.round(ms);
}
