/**
 * The leader's catch-up lines (server/node/catch_up_log.ts), driven tick by tick with a fake clock: a follower being
 * probed far behind is reported at once, then at most once per PROGRESS_LOG_MS, then "caught up"; a follower that
 * replicates and lags only for a moment is not reported; an unresponsive one gets no progress lines.
 */
import assert from "node:assert/strict";
import { CatchUpLog } from "../server/node/catch_up_log.ts";
import type { ProgressStatus, Status } from "../server/raft/mod.ts";
import { PROGRESS_LOG_MS } from "../server/util/progress.ts";

function status(lastIndex: number, followers: Record<string, Partial<ProgressStatus>>): Status {
  const progress: Record<string, ProgressStatus> = {
    "1": {
      match: lastIndex,
      next: lastIndex + 1,
      state: "replicate",
      recentActive: true,
      isLearner: false,
      inflight: 0,
    },
  };
  for (const [id, p] of Object.entries(followers)) {
    progress[id] = { match: 0, next: 1, state: "replicate", recentActive: true, isLearner: false, inflight: 0, ...p };
  }
  return {
    id: "1",
    term: 2,
    vote: "1",
    commit: lastIndex,
    applied: lastIndex,
    lead: "1",
    role: "leader",
    lastIndex,
    firstIndex: 1,
    leadTransferee: "0",
    voters: Object.keys(progress),
    learners: [],
    progress,
  };
}

Deno.test("catch-up log: behind at once when probed, throttled progress, caught up; blips and dead peers are quiet", () => {
  let now = 0;
  const lines: [string, Record<string, unknown>][] = [];
  const log = new CatchUpLog((msg, fields) => lines.push([msg, fields]), () => now);
  const tick = (st: Status) => {
    log.observe(st);
    now += 100;
  };
  // "2" restarted: probed from match 1000 while the leader is at 20000; "3" replicating, lagging for 300 ms
  tick(status(20000, { "2": { match: 1000, state: "probe" }, "3": { match: 18000 } }));
  tick(status(20000, { "2": { match: 1000, state: "snapshot" }, "3": { match: 18500 } }));
  tick(status(20000, { "2": { match: 1000, state: "snapshot" }, "3": { match: 19500 } }));
  tick(status(20000, { "2": { match: 1000, state: "snapshot" }, "3": { match: 19950 } }));
  assert.deepEqual(lines.map(([m, f]) => [m, f["remote-peer-id"], f.behind]), [
    ["follower is behind, catching up", "2", 19000],
  ]);
  // 3 s of progress at one tick per 100 ms: one line a second, not one per tick
  for (let i = 0; i < 30; i++) tick(status(20000 + i, { "2": { match: 1000 + i * 500, state: "replicate" } }));
  const progress = lines.filter(([m]) => m === "follower catching up: progress");
  assert.ok(progress.length >= 2 && progress.length <= 3 * 1000 / PROGRESS_LOG_MS, `${progress.length} lines`);
  // an unresponsive follower: no progress lines
  const before = lines.length;
  for (let i = 0; i < 20; i++) tick(status(20100, { "2": { match: 16000, recentActive: false } }));
  assert.equal(lines.length, before);
  tick(status(20100, { "2": { match: 20050 } }));
  const [msg, fields] = lines[lines.length - 1];
  assert.equal(msg, "follower caught up");
  assert.equal(fields.entries, 19050);
  assert.match(String(fields.rate), /^\d+ entries\/s$/);
  // no longer leading: forgotten
  log.observe({ ...status(20100, {}), progress: undefined, role: "follower" });
  assert.ok(!lines.some(([, f]) => f["remote-peer-id"] === "3"), "a short lag of a replicating follower was reported");
});

Deno.test("catch-up log: a follower a snapshot catches up between two ticks is reported behind, then caught up", () => {
  let now = 0;
  const lines: string[] = [];
  const log = new CatchUpLog(
    (msg, fields) => lines.push(`${msg} ${fields["remote-peer-id"]} ${fields.behind}`),
    () => now,
  );
  log.observe(status(7000, { "2": { match: 8, state: "snapshot" } }));
  now += 100;
  log.observe(status(7010, { "2": { match: 7000 } }));
  assert.deepEqual(lines, ["follower is behind, catching up 2 6992", "follower caught up 2 10"]);
});
