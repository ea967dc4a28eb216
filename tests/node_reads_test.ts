/**
 * server/node/reads.ts on its own: ReadIndex rounds with the Raft core replaced by a recorder of the contexts it is
 * asked for, and a clock the test moves. No disk, no network.
 */
import assert from "node:assert/strict";
import { LinearizableReads, READ_RETRY_MS } from "../server/node/reads.ts";

const TIMEOUT_MS = 5000;
const dec = new TextDecoder();

function setup(leader = true) {
  const asked: string[] = [];
  const clock = { now: 1000, leader };
  const reads = new LinearizableReads({
    memberId: "5",
    askReadIndex: (ctx) => asked.push(dec.decode(ctx)),
    hasLeader: () => clock.leader,
    timeoutMs: TIMEOUT_MS,
    now: () => clock.now,
  });
  return { reads, asked, clock };
}

/** Starts a read and reports how it settled so far. */
function track(p: Promise<void>): { state: string } {
  const t = { state: "waiting" };
  p.then(() => t.state = "served", (e) => t.state = `failed: ${e}`);
  return t;
}

const settle = () => new Promise((r) => setTimeout(r, 0));
const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("reads: reads arriving while a round is in flight share the next round", async () => {
  const { reads, asked } = setup();
  const a = track(reads.read());
  const b = track(reads.read());
  const c = track(reads.read());
  assert.equal(asked.length, 1, "the first read starts a round; the others wait for it to end");
  reads.confirmed(enc(asked[0]), 10);
  assert.equal(asked.length, 2, "the confirmed round's end starts the next one for the waiting reads");
  reads.serve(10);
  await settle();
  assert.deepEqual([a.state, b.state, c.state], ["served", "waiting", "waiting"]);
  reads.confirmed(enc(asked[1]), 12);
  reads.serve(12);
  await settle();
  assert.deepEqual([b.state, c.state], ["served", "served"]);
  assert.equal(asked.length, 2, "no round without reads");
});

Deno.test("reads: a confirmed read waits for the applied index to reach the read index", async () => {
  const { reads, asked } = setup();
  const a = track(reads.read());
  reads.confirmed(enc(asked[0]), 20);
  reads.serve(19);
  await settle();
  assert.equal(a.state, "waiting");
  reads.serve(20);
  await settle();
  assert.equal(a.state, "served");
});

Deno.test("reads: no round is asked while no leader is known; one is once it is", async () => {
  const { reads, asked, clock } = setup(false);
  const a = track(reads.read());
  assert.deepEqual(asked, []);
  clock.leader = true;
  reads.startRound();
  assert.equal(asked.length, 1);
  reads.confirmed(enc(asked[0]), 3);
  reads.serve(3);
  await settle();
  assert.equal(a.state, "served");
});

Deno.test("reads: an answer to an unknown or repeated context changes nothing", async () => {
  const { reads, asked } = setup();
  const a = track(reads.read());
  reads.confirmed(enc("5/another-process/1"), 1);
  reads.serve(100);
  await settle();
  assert.equal(a.state, "waiting");
  reads.confirmed(enc(asked[0]), 50);
  reads.confirmed(enc(asked[0]), 1);
  reads.serve(49);
  await settle();
  assert.equal(a.state, "waiting", "the second answer to the same round did not lower its index");
});

Deno.test("reads: a round without an answer is asked again, under a new context, after READ_RETRY_MS", async () => {
  const { reads, asked, clock } = setup();
  const a = track(reads.read());
  clock.now += READ_RETRY_MS - 1;
  reads.retry();
  assert.equal(asked.length, 1);
  clock.now += 1;
  reads.retry();
  assert.equal(asked.length, 2);
  assert.notEqual(asked[1], asked[0]);
  reads.confirmed(enc(asked[0]), 7); // the lost round's late answer no longer counts
  reads.serve(7);
  await settle();
  assert.equal(a.state, "waiting");
  reads.confirmed(enc(asked[1]), 8);
  reads.serve(8);
  await settle();
  assert.equal(a.state, "served");
});

Deno.test("reads: contexts name the member and differ between two instances (process starts)", () => {
  const one = setup(), two = setup();
  void one.reads.read(), two.reads.read();
  const [c1, c2] = [one.asked[0], two.asked[0]];
  assert.match(c1, /^5\/[0-9a-f-]{36}\/1$/);
  assert.match(c2, /^5\/[0-9a-f-]{36}\/1$/);
  assert.notEqual(c1, c2);
});

Deno.test("reads: a read fails at its deadline, and all fail when the member stops", async () => {
  const { reads, clock } = setup(false);
  const early = track(reads.read());
  clock.now += 1000;
  const late = track(reads.read());
  clock.now += TIMEOUT_MS - 1000;
  reads.expire(clock.now, () => "timed out");
  await settle();
  assert.deepEqual([early.state, late.state], ["failed: timed out", "waiting"]);
  reads.rejectAll("stopped");
  await settle();
  assert.equal(late.state, "failed: stopped");
});

Deno.test("reads: a read that timed out is not answered again when its round is confirmed", async () => {
  const { reads, asked, clock } = setup();
  let answers = 0;
  const p = reads.read().then(() => answers++, () => answers++);
  clock.now += TIMEOUT_MS;
  reads.expire(clock.now, () => "timed out");
  reads.confirmed(enc(asked[0]), 1);
  reads.serve(1);
  await p;
  await settle();
  assert.equal(answers, 1);
});
