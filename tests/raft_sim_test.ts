/**
 * Deterministic simulation of Raft clusters (see tests/sim/sim.ts): a fixed set of seeds, then a time-boxed batch
 * of random seeds. Every run's client history is checked for linearizability, and the members' applied states (the
 * server's apply layer, members with different quotas) are compared at equal applied indexes (replica divergence).
 *
 *   RAFT_SEED=N            replay one seed only (prints its trace tail on failure)
 *   RAFT_SIM_SECONDS=S     time box of the random batch (default 20; 0 skips it)
 *   RAFT_SIM_STEPS=N       steps of the fault phase per run (default 20000)
 *   RAFT_SIM_OUT=DIR       where failing histories are written as JSON (default: a temp dir)
 *
 * A failure prints "seed N". Add every seed that ever failed to REGRESSION_SEEDS with what it caught.
 */
import assert from "node:assert/strict";
import { checkLinearizable, type Op } from "./lib/linearizability.ts";
import { type HistoryOp, runSimulation, type SimResult } from "./sim/sim.ts";
import { SimFailure } from "./sim/sim.ts";

/** Seeds that once failed, with what they caught. They run first, before the plain fixed range. */
const REGRESSION_SEEDS: { seed: number; caught: string }[] = [
  {
    seed: 106,
    caught: "a checker bug, not a core bug: with fast elections after a leader-lost notice, a delayed vote made a " +
      "member leader of term 22 after term 23 had committed entries; leader completeness only binds later terms",
  },
  {
    seed: 4132386228,
    caught: "a simulation bug, not a core bug: settling waited for a moment with no Ready in flight on any member, " +
      "though all had applied the leader's commit index; with heartbeats every tick, 6 members and 12 ms per sync, " +
      "some member was always writing a heartbeat reply, so a settled cluster was reported as never settling",
  },
  {
    seed: 132932078,
    caught: "a member bug (before 549e605's disk model): a snapshot stepped while a Ready was in flight replaced the " +
      "core's membership at once, and a snapshot taken at the older applied index then carried the newer membership " +
      "(node and sim now keep the membership as of the applied index); the seed plays out differently since 549e605",
  },
  {
    seed: 2377425425,
    caught: "a core bug: member 3 installed the leader's snapshot at 57 (no learners) while it still applied entry " +
      "51 (add learner 6) of an earlier Ready; applyConfChange put learner 6 back into the core's membership, and " +
      "its snapshot at 62 carried a learner the others had removed at 53. Conf changes at or below a snapshot " +
      "installed since are now no-ops (found by a random seed in session 10)",
  },
  {
    seed: 3501210634,
    caught: "a checker bug: leader completeness compared a new leader with the terms of the entries applied, not the " +
      "terms they were committed in. Leader 3 of term 9 won late (a delayed vote) after the leader of term 10 had " +
      "committed 144, an entry of term 8, along with 145; Raft does not require it to hold 144. The sim now records " +
      "the term of the leader whose commit index first passed each index (found by a random seed in session 12)",
  },
  {
    seed: 2406148364,
    caught:
      "a simulation bug, not a core bug: after the faults, the operator freed space on a leader whose leadership " +
      "transfer was in progress; its proposals were dropped, yet it waited for them to be applied before trying " +
      "again, and every write stayed refused for want of space. It now tries again when nothing was proposed (found " +
      "by a random seed in session 13's CI; the asynchronous apply had changed how the seed plays out)",
  },
];

/** The fixed range every CI run covers. */
const FIXED_SEEDS = Array.from({ length: 200 }, (_, i) => i + 1);

const STEPS = Number(Deno.env.get("RAFT_SIM_STEPS") ?? 20000);
const LIVENESS_STEPS = 20000;

function toCheckerOps(history: HistoryOp[]): Op[] {
  return history.map((h) => ({
    client: h.client,
    kind: h.op,
    key: h.key,
    value: h.op === "put" ? h.value : undefined,
    result: h.op === "get" ? h.value : undefined,
    invoke: h.invokeStep,
    return: h.returnStep,
    outcome: h.outcome,
  }));
}

async function saveHistory(seed: number, history: HistoryOp[], extra: Record<string, unknown>): Promise<string> {
  const dir = Deno.env.get("RAFT_SIM_OUT") ?? await Deno.makeTempDir({ prefix: "raft-sim-" });
  await Deno.mkdir(dir, { recursive: true });
  const file = `${dir}/raft-sim-seed-${seed}.json`;
  await Deno.writeTextFile(file, JSON.stringify({ seed, ...extra, history }, null, 1));
  return file;
}

/** Totals of the fixed seeds' stats: the divergence check must have had something to check. */
const covered: Record<string, number> = {};

/** Runs one seed; returns a failure description or null. */
async function runSeed(seed: number, verbose = false): Promise<string | null> {
  let result: SimResult;
  try {
    result = runSimulation({ seed, steps: STEPS, livenessSteps: LIVENESS_STEPS });
  } catch (err) {
    if (!(err instanceof SimFailure)) throw err;
    const file = await saveHistory(seed, err.history, { error: err.message, params: err.params, trace: err.trace });
    const tail = err.trace.slice(verbose ? -300 : -40).join("\n  ");
    return `seed ${seed}: ${err.message}\n  history: ${file}\n  last events:\n  ${tail}`;
  }
  const lin = checkLinearizable(toCheckerOps(result.history), { timeoutMs: 20_000 });
  if (lin.ok === false) {
    const file = await saveHistory(seed, result.history, { error: lin.reason, params: result.params });
    return `seed ${seed}: history is not linearizable: ${lin.reason}\n  history: ${file}\n${lin.explanation ?? ""}`;
  }
  for (const [k, v] of Object.entries(result.stats)) covered[k] = (covered[k] ?? 0) + v;
  if (verbose) {
    console.log(`seed ${seed}: ok, ${result.steps} steps, linearizable=${lin.ok}`, result.stats, result.params);
  }
  return null;
}

const replay = Deno.env.get("RAFT_SEED");

Deno.test({
  name: "raft sim: replay RAFT_SEED",
  ignore: replay === undefined,
  fn: async () => {
    const failure = await runSeed(Number(replay), true);
    if (failure) console.error(failure);
    assert.equal(failure, null, failure ?? "");
  },
});

Deno.test({
  name: "raft sim: regression + fixed seeds (3 and 5 members)",
  ignore: replay !== undefined,
  fn: async () => {
    const failures: string[] = [];
    const seeds = [...REGRESSION_SEEDS.map((r) => r.seed), ...FIXED_SEEDS];
    for (const seed of seeds) {
      const f = await runSeed(seed);
      if (f) {
        console.error(f);
        failures.push(`seed ${seed}`);
      }
    }
    assert.deepEqual(failures, [], `failing seeds: ${failures.join(", ")}`);
    // the runs hit the quota, raised and refused for want of space, and compared states many times
    for (
      const what of [
        "noSpaceRefused",
        "alarmsRaised",
        "hashChecks",
        "snapshotsSent",
        "adminOps",
        "entriesSkipped",
        "asyncApplies",
      ]
    ) {
      assert.ok(covered[what] > 0, `no ${what} in any fixed seed`);
    }
    console.log(
      `raft sim: fixed seeds compared states ${covered.hashChecks} times; ${covered.alarmsRaised} NOSPACE alarms ` +
        `raised, ${covered.noSpaceRefused} writes refused for want of space, ${covered.entriesSkipped} entries ` +
        `skipped for a leader's snapshot, ${covered.asyncApplies} turns of the apply loop beside the Raft loop`,
    );
  },
});

Deno.test({
  name: "raft sim: time-boxed random seeds",
  ignore: replay !== undefined || Number(Deno.env.get("RAFT_SIM_SECONDS") ?? 20) <= 0,
  fn: async () => {
    const seconds = Number(Deno.env.get("RAFT_SIM_SECONDS") ?? 20);
    const deadline = performance.now() + seconds * 1000;
    const failures: string[] = [];
    let runs = 0;
    while (performance.now() < deadline) {
      const seed = crypto.getRandomValues(new Uint32Array(1))[0];
      runs++;
      const f = await runSeed(seed);
      if (f) {
        console.error(f);
        failures.push(`seed ${seed}`);
      }
    }
    console.log(`raft sim: ${runs} random seeds in ${seconds}s`);
    assert.deepEqual(failures, [], `failing seeds (add them to REGRESSION_SEEDS): ${failures.join(", ")}`);
  },
});

Deno.test("raft sim: a run is reproducible from its seed", () => {
  const a = runSimulation({ seed: 4242, steps: 3000, livenessSteps: 5000 });
  const b = runSimulation({ seed: 4242, steps: 3000, livenessSteps: 5000 });
  assert.deepEqual(a.history, b.history);
  assert.deepEqual(a.stats, b.stats);
});
