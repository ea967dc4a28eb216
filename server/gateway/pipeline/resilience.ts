/**
 * Resilience policies of a pipeline (Easegress `pkg/resilience`): Retry and CircuitBreaker (resilience4j's state
 * machine with COUNT_BASED or TIME_BASED sliding windows). Only Proxy pools use them.
 */
import { parseGoDuration } from "../../easegress/gotime.ts";
import type {
  CircuitBreakerPolicy as CircuitBreakerSpec,
  ResiliencePolicy as ResilienceSpec,
  RetryPolicy as RetrySpec,
  Stored,
} from "../../easegress/specs/mod.ts";

/** Retry: at most maxAttempts calls, waiting between them (also after the last failure, as Easegress does). */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly waitMs: number;
  readonly exponential: boolean;
  readonly randomization: number;

  constructor(spec: Stored<RetrySpec>) {
    this.maxAttempts = Math.max(1, Number(spec.maxAttempts ?? 3) || 3);
    let wait = 500;
    try {
      if (spec.waitDuration) wait = parseGoDuration(String(spec.waitDuration));
    } catch { /* unparseable: default */ }
    this.waitMs = wait > 0 ? wait : 500;
    const bo = String(spec.backOffPolicy ?? "random");
    if (bo !== "random" && bo !== "exponential") throw new Error(`backOffPolicy must be random or exponential`);
    this.exponential = bo === "exponential";
    this.randomization = Math.min(1, Math.max(0, Number(spec.randomizationFactor ?? 0) || 0));
  }

  /** Wait before attempt `attempt + 1` (attempt counts from 1). */
  waitFor(attempt: number): number {
    let base = this.waitMs;
    if (this.exponential) base *= Math.pow(1.5, attempt - 1);
    if (this.randomization > 0) base *= 1 - this.randomization + Math.random() * 2 * this.randomization;
    return base;
  }
}

export const enum BreakerState {
  Closed = "CLOSED",
  Open = "OPEN",
  HalfOpen = "HALF_OPEN",
}

interface Outcome {
  failed: boolean;
  slow: boolean;
}

/** A sliding window of call outcomes. */
interface Window {
  record(o: Outcome, now: number): void;
  counts(now: number): { total: number; failed: number; slow: number };
}

class CountWindow implements Window {
  #ring: Outcome[] = [];
  #next = 0;
  constructor(readonly size: number) {}
  record(o: Outcome): void {
    if (this.#ring.length < this.size) this.#ring.push(o);
    else this.#ring[this.#next] = o;
    this.#next = (this.#next + 1) % this.size;
  }
  counts(): { total: number; failed: number; slow: number } {
    let failed = 0, slow = 0;
    for (const o of this.#ring) {
      if (o.failed) failed++;
      if (o.slow) slow++;
    }
    return { total: this.#ring.length, failed, slow };
  }
}

class TimeWindow implements Window {
  #buckets: { sec: number; total: number; failed: number; slow: number }[] = [];
  constructor(readonly seconds: number) {}
  record(o: Outcome, now: number): void {
    const sec = Math.floor(now / 1000);
    let b = this.#buckets[this.#buckets.length - 1];
    if (!b || b.sec !== sec) this.#buckets.push(b = { sec, total: 0, failed: 0, slow: 0 });
    b.total++;
    if (o.failed) b.failed++;
    if (o.slow) b.slow++;
  }
  counts(now: number): { total: number; failed: number; slow: number } {
    const from = Math.floor(now / 1000) - this.seconds + 1;
    while (this.#buckets.length > 0 && this.#buckets[0].sec < from) this.#buckets.shift();
    let total = 0, failed = 0, slow = 0;
    for (const b of this.#buckets) {
      total += b.total;
      failed += b.failed;
      slow += b.slow;
    }
    return { total, failed, slow };
  }
}

/** The CircuitBreaker spec with Easegress's defaults. */
export class CircuitBreakerPolicy {
  readonly timeBased: boolean;
  readonly windowSize: number;
  readonly failureRateThreshold: number;
  readonly slowCallRateThreshold: number;
  readonly slowCallMs: number;
  readonly minimumCalls: number;
  readonly permittedHalfOpen: number;
  readonly waitOpenMs: number;
  readonly maxWaitHalfOpenMs: number;

  constructor(spec: Stored<CircuitBreakerSpec>) {
    const t = String(spec.slidingWindowType ?? "COUNT_BASED").toUpperCase();
    if (t !== "COUNT_BASED" && t !== "TIME_BASED") throw new Error(`invalid slidingWindowType ${t}`);
    this.timeBased = t === "TIME_BASED";
    this.windowSize = Number(spec.slidingWindowSize ?? 100) || 100;
    this.failureRateThreshold = Number(spec.failureRateThreshold ?? 50) || 50;
    this.slowCallRateThreshold = Number(spec.slowCallRateThreshold ?? 100) || 100;
    this.slowCallMs = dur(spec.slowCallDurationThreshold, 60_000);
    this.minimumCalls = Number(spec.minimumNumberOfCalls ?? 100) || 100;
    this.permittedHalfOpen = Number(spec.permittedNumberOfCallsInHalfOpenState ?? 10) || 10;
    this.waitOpenMs = dur(spec.waitDurationInOpenState, 60_000);
    this.maxWaitHalfOpenMs = dur(spec.maxWaitDurationInHalfOpenState, 0);
  }

  /** A breaker with this policy (each pool has its own). */
  newBreaker(): CircuitBreaker {
    return new CircuitBreaker(this);
  }
}

function dur(v: unknown, dflt: number): number {
  if (v === undefined || v === null || v === "") return dflt;
  try {
    return parseGoDuration(String(v));
  } catch {
    return dflt;
  }
}

/** A circuit breaker: `acquire` before a call (false = short-circuited), `record` after it with the same permit. */
export class CircuitBreaker {
  state: BreakerState = BreakerState.Closed;
  #window: Window;
  #stateId = 0;
  #openedAt = 0;
  #halfOpenAt = 0;
  #halfOpenPermits = 0;

  constructor(readonly policy: CircuitBreakerPolicy) {
    this.#window = this.#newWindow(false);
  }

  #newWindow(halfOpen: boolean): Window {
    const p = this.policy;
    if (halfOpen) return new CountWindow(p.permittedHalfOpen);
    return p.timeBased ? new TimeWindow(p.windowSize) : new CountWindow(p.windowSize);
  }

  #transition(to: BreakerState, now: number): void {
    this.state = to;
    this.#stateId++;
    this.#window = this.#newWindow(to === BreakerState.HalfOpen);
    if (to === BreakerState.Open) this.#openedAt = now;
    if (to === BreakerState.HalfOpen) {
      this.#halfOpenAt = now;
      this.#halfOpenPermits = this.policy.permittedHalfOpen;
    }
  }

  /** Returns a permit (the state id) or -1 when the call must be rejected. */
  acquire(now = Date.now()): number {
    if (this.state === BreakerState.Open) {
      if (now - this.#openedAt < this.policy.waitOpenMs) return -1;
      this.#transition(BreakerState.HalfOpen, now);
    }
    if (this.state === BreakerState.HalfOpen) {
      if (this.#halfOpenPermits <= 0) {
        const maxWait = this.policy.maxWaitHalfOpenMs;
        if (maxWait > 0 && now - this.#halfOpenAt >= maxWait) this.#transition(BreakerState.Open, now);
        return -1;
      }
      this.#halfOpenPermits--;
    }
    return this.#stateId;
  }

  /** Records a call's outcome; results of an earlier state are discarded. */
  record(permit: number, failed: boolean, durationMs: number, now = Date.now()): void {
    if (permit !== this.#stateId) return;
    const p = this.policy;
    this.#window.record({ failed, slow: !failed && durationMs >= p.slowCallMs }, now);
    const c = this.#window.counts(now);
    const min = this.state === BreakerState.HalfOpen ? Math.min(p.minimumCalls, p.permittedHalfOpen) : p.minimumCalls;
    if (c.total < min) return;
    if ((c.failed * 100) / c.total >= p.failureRateThreshold || (c.slow * 100) / c.total >= p.slowCallRateThreshold) {
      this.#transition(BreakerState.Open, now);
    } else if (this.state === BreakerState.HalfOpen) {
      this.#transition(BreakerState.Closed, now);
    }
  }
}

/** A pipeline's policies by name. */
export class ResiliencePolicies {
  retry = new Map<string, RetryPolicy>();
  breakers = new Map<string, CircuitBreakerPolicy>();

  constructor(specs: Stored<ResilienceSpec[]> = []) {
    for (const s of specs) {
      if (!s || typeof s.name !== "string") throw new Error("resilience: policy without name");
      if (s.kind === "Retry") this.retry.set(s.name, new RetryPolicy(s));
      else if (s.kind === "CircuitBreaker") this.breakers.set(s.name, new CircuitBreakerPolicy(s));
      else throw new Error(`resilience: unknown kind ${s.kind}`);
    }
  }
}
