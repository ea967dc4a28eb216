import assert from "node:assert/strict";
import { EXPIRED_RETRY_MS, Lessor } from "../server/lease/lessor.ts";
import { LeaseExpiry, MAX_REVOKES_IN_FLIGHT, MAX_REVOKES_PER_TICK } from "../server/lease/expiry.ts";

/** A lessor on a clock the test moves. */
function clocked() {
  let now = 0;
  const lessor = new Lessor(1, () => now);
  return { lessor, advance: (ms: number) => (now += ms), now: () => now };
}

/** A deterministic shuffle of 0..n-1. */
function shuffled(n: number, seed: number): number[] {
  const xs = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

Deno.test("lessor: expired leases come out soonest first, only once they are due, and at most max at a time", () => {
  const { lessor, advance } = clocked();
  for (const i of shuffled(1000, 7)) lessor.grant(String(i + 1), i + 1); // lease n has a TTL of n s
  assert.deepEqual(lessor.expired(), [], "nothing is due before the shortest TTL");
  advance(10_000);
  assert.deepEqual(lessor.expired(), ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
  assert.deepEqual(lessor.expired(), [], "a lease handed out is not handed out again at once");
  for (let i = 1; i <= 10; i++) lessor.revoke(String(i)); // as the log applies the revokes
  advance(90_000);
  assert.deepEqual(lessor.expired(5), ["11", "12", "13", "14", "15"], "at most max");
  assert.deepEqual(lessor.expired(200).length, 85);
  assert.equal(lessor.nextDue(), 101_000);
});

Deno.test("lessor: keep-alives move a lease's expiry in the heap; revoke and clear take it out", () => {
  const { lessor, advance } = clocked();
  for (let i = 1; i <= 100; i++) lessor.grant(String(i), 10);
  advance(5000);
  for (let i = 1; i <= 100; i += 2) lessor.renew(String(i)); // odd leases now expire at 15 s
  for (let i = 2; i <= 20; i += 2) lessor.revoke(String(i)); // revoked leases never expire
  advance(5000);
  const even = Array.from({ length: 40 }, (_, k) => String(22 + 2 * k));
  assert.deepEqual(lessor.expired().sort(), even.sort());
  for (const id of even) lessor.revoke(id);
  assert.equal(lessor.remaining("1"), 5);
  advance(5000);
  assert.equal(lessor.expired().length, 50, "the renewed ones expire TTL after their keep-alive");
  lessor.clear();
  advance(100_000);
  assert.deepEqual(lessor.expired(), []);
  assert.equal(lessor.nextDue(), Infinity);
});

Deno.test("lessor: a lease whose revoke did not land is due again after the retry interval", () => {
  const { lessor, advance } = clocked();
  lessor.grant("1", 2);
  advance(2000);
  assert.deepEqual(lessor.expired(), ["1"]);
  assert.equal(lessor.remaining("1"), 0, "the retry does not move the lease's expiry");
  advance(EXPIRED_RETRY_MS - 1);
  assert.deepEqual(lessor.expired(), []);
  advance(1);
  assert.deepEqual(lessor.expired(), ["1"]);
  lessor.renew("1"); // a keep-alive that still reached the leader wins
  advance(1000);
  assert.deepEqual(lessor.expired(), []);
  lessor.extendAll(); // a new leader restarts every clock
  advance(1999);
  assert.deepEqual(lessor.expired(), []);
  advance(1);
  assert.deepEqual(lessor.expired(), ["1"]);
});

Deno.test("lease expiry: the leader proposes revokes within the per-tick and in-flight caps, followers none", async () => {
  const { lessor, advance } = clocked();
  const n = 3 * MAX_REVOKES_IN_FLIGHT;
  for (let i = 1; i <= n; i++) lessor.grant(String(i), 5);
  let leader = false;
  const pending = new Map<string, () => void>();
  const proposed: string[] = [];
  const expiry = new LeaseExpiry(lessor, () => leader, (id) => {
    proposed.push(id);
    return new Promise<void>((resolve) => pending.set(id, resolve));
  });
  advance(5000);
  assert.equal(expiry.tick(), 0, "a follower proposes nothing");
  leader = true;
  assert.equal(expiry.tick(), MAX_REVOKES_PER_TICK);
  while (expiry.tick() > 0);
  assert.equal(expiry.inFlight, MAX_REVOKES_IN_FLIGHT, "no more than the in-flight cap at once");
  assert.equal(new Set(proposed).size, proposed.length, "no lease proposed twice");
  // the log applies half of them: as many new ones may go
  for (const id of proposed.slice(0, MAX_REVOKES_IN_FLIGHT / 2)) {
    lessor.revoke(id);
    pending.get(id)!();
  }
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(expiry.inFlight, MAX_REVOKES_IN_FLIGHT / 2);
  while (expiry.tick() > 0);
  assert.equal(expiry.inFlight, MAX_REVOKES_IN_FLIGHT);
  // a revoke slower than the retry interval is not proposed a second time
  advance(EXPIRED_RETRY_MS);
  const before = proposed.length;
  expiry.tick();
  assert.equal(new Set(proposed).size, proposed.length, "no lease proposed twice");
  assert.equal(proposed.length, before);
  for (const resolve of pending.values()) resolve();
});

Deno.test("lessor: untilDue says how long the expiry loop may sleep (the next due lease; none: Infinity)", () => {
  const { lessor, advance } = clocked();
  assert.equal(lessor.untilDue(), Infinity);
  lessor.grant("1", 5);
  lessor.grant("2", 3);
  assert.equal(lessor.untilDue(), 3000);
  advance(2500);
  assert.equal(lessor.untilDue(), 500);
  advance(1000);
  assert.equal(lessor.untilDue(), 0, "a lease past its expiry is due now");
  assert.deepEqual(lessor.expired(), ["2"]);
  assert.equal(lessor.untilDue(), 1500, "then the next one");
});

Deno.test("lease expiry loop: a leader revokes a lease once its TTL passed (not before); stop ends the loop", async () => {
  const lessor = new Lessor(1);
  const revoked: string[] = [];
  const expiry = new LeaseExpiry(lessor, () => true, (id) => {
    revoked.push(id);
    lessor.revoke(id);
    return Promise.resolve();
  });
  const t0 = performance.now();
  lessor.grant("7", 1);
  expiry.start();
  while (revoked.length === 0 && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
  expiry.stop();
  assert.deepEqual(revoked, ["7"]);
  assert.ok(performance.now() - t0 >= 1000, "not before its TTL");
});
