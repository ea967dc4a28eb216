/**
 * `deno task trace-put` (scripts/trace_put.ts) traces puts across a 3-member cluster: every hand-off is present and
 * in causal order on the shared clock; without EG_TRACE_PUT_PREFIX a member serves no trace.
 */
import assert from "node:assert/strict";
import { startServer } from "./lib/server.ts";
import type { ClockBound, PutTimeline } from "../scripts/trace_put.ts";

const repo = new URL("../", import.meta.url).pathname;

/** Steps between two processes: the shared clock agrees within about 0.05 ms; allow some more under load. */
const CROSS_PROCESS_SLACK_MS = 0.5;
const crossProcess = new Set(["follower frame in", "leader ack in"]);

Deno.test("trace-put: every hand-off of every traced put is present and in order", async () => {
  const json = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${repo}scripts/trace_put.ts`, "--puts", "30", "--warmup", "200", "--json", json],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    const r: { hops: string[]; puts: PutTimeline[]; incomplete: string[]; clocks: ClockBound[] } = JSON.parse(
      await Deno.readTextFile(json),
    );
    assert.deepEqual(r.incomplete, [], text);
    assert.equal(r.puts.length, 30, text);
    for (const p of r.puts) {
      for (let i = 1; i < r.hops.length; i++) {
        const h = r.hops[i] as keyof PutTimeline["at"], prev = r.hops[i - 1] as keyof PutTimeline["at"];
        const slack = crossProcess.has(h) ? CROSS_PROCESS_SLACK_MS : 0;
        assert(p.at[h] >= p.at[prev] - slack, `${p.key}: ${h} (${p.at[h]}) before ${prev} (${p.at[prev]})\n${text}`);
      }
      // the leader's own copy is on disk after its Ready and before the entry commits
      assert(p.leaderFsync >= p.at["leader Ready"] && p.leaderFsync <= p.at["leader commit"], `${p.key}\n${text}`);
    }
    for (const b of r.clocks) assert(b.lo <= b.hi + CROSS_PROCESS_SLACK_MS, `clock bounds ${JSON.stringify(b)}`);
    assert(text.includes("leader bytes in") && text.includes("follower fsync"), text);
  } finally {
    await Deno.remove(json).catch(() => {});
  }
});

Deno.test("trace-put: a member started without EG_TRACE_PUT_PREFIX serves no trace", async () => {
  const s = await startServer();
  try {
    const r = await fetch(`${s.clientUrl}/debug/trace-put`);
    await r.body?.cancel();
    assert.equal(r.status, 404);
  } finally {
    await s.kill();
    await Deno.remove(s.dataDir, { recursive: true }).catch(() => {});
  }
});
