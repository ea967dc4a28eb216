/**
 * `deno task trace-put`: where the time of one put goes in a 3-member cluster of ours on loopback.
 *
 *   deno run -A scripts/trace_put.ts [--puts N] [--warmup N] [--json FILE]
 *
 * Starts three members (tests/lib/cluster.ts) with EG_TRACE_PUT_PREFIX set (server/trace/put_trace.ts), serves
 * `--warmup` untraced puts (default 2000: V8 compiles the hot path only after a few thousand calls), then sends
 * `--puts` traced puts (default 200) one at a time to the leader, and fetches every member's trace ring from
 * `GET /debug/trace-put`. For each put it lines up the hand-offs:
 *
 *   client sends → leader bytes in → Put handler → proposal → Ready → frame out to F → F frame in → F fsync →
 *   F ack out → leader ack in → commit → apply → reply → client has the response
 *
 * where F is the follower whose acknowledgement arrived first (the one that made the majority); the leader's own
 * fsync runs in parallel with the followers' and is shown beside the chain. It prints the put with the median total
 * time hop by hop and, for every hop, the median and p90 over all puts.
 *
 * Clock: every process stamps `performance.timeOrigin + performance.now()` (ms): CLOCK_MONOTONIC since the process
 * started plus the wall clock at its start, one time line for all processes of the host while the wall clock is not
 * stepped between their starts (two Deno processes ping-ponging over a pipe agree within ±0.05 ms). The tool checks
 * it with the trace itself: a frame arrives after it was sent, in both directions, which bounds each follower's
 * offset from the leader (ClockBound).
 */
import { Buffer } from "node:buffer";
import { Cluster } from "../tests/lib/cluster.ts";
import type { TraceDump, TraceEvent } from "../server/trace/put_trace.ts";

/** The chain of hand-offs, in causal order; `leader fsync` is off the chain (parallel to the followers'). */
export const HOPS = [
  "client sends",
  "leader bytes in",
  "leader Put handler",
  "leader proposal",
  "leader Ready",
  "leader frame out",
  "follower frame in",
  "follower fsync",
  "follower ack out",
  "leader ack in",
  "leader commit",
  "leader apply",
  "leader reply",
  "client response",
] as const;

/** One traced put: the shared-clock time (ms) of every hop, and the leader's own fsync. */
export interface PutTimeline {
  key: string;
  index: number;
  /** the follower whose ack made the majority */
  follower: string;
  at: Record<(typeof HOPS)[number], number>;
  leaderFsync: number;
}

/**
 * What causality says of a follower's clock against the leader's: its offset (ms, follower − leader) lies within
 * (lo, hi), since a frame arrives after it was sent: lo = max(ack out − ack in), hi = min(frame in − frame out).
 */
export interface ClockBound {
  follower: string;
  lo: number;
  hi: number;
}

const now = () => performance.timeOrigin + performance.now();

function parseArgs(argv: string[]) {
  const o = { puts: 200, warmup: 2000, json: undefined as string | undefined };
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].includes("=") ? argv[i].split("=", 2) : [argv[i], undefined];
    const val = () => inline ?? argv[++i];
    if (k === "--puts") o.puts = Math.max(1, Number(val()));
    else if (k === "--warmup") o.warmup = Math.max(0, Number(val()));
    else if (k === "--json") o.json = val();
    else throw new Error(`unknown argument ${argv[i]}; usage: trace_put.ts [--puts N] [--warmup N] [--json FILE]`);
  }
  return o;
}

async function fetchDump(clientUrl: string): Promise<TraceDump> {
  const r = await fetch(`${clientUrl}/debug/trace-put`);
  if (!r.ok) throw new Error(`${clientUrl}/debug/trace-put: HTTP ${r.status} (is EG_TRACE_PUT_PREFIX set?)`);
  return await r.json();
}

/** The bounds the puts put on each follower's clock offset (see ClockBound). */
export function clockBounds(puts: PutTimeline[]): ClockBound[] {
  const by = new Map<string, ClockBound>();
  for (const p of puts) {
    const b = by.get(p.follower) ?? { follower: p.follower, lo: -Infinity, hi: Infinity };
    b.lo = Math.max(b.lo, p.at["follower ack out"] - p.at["leader ack in"]);
    b.hi = Math.min(b.hi, p.at["follower frame in"] - p.at["leader frame out"]);
    by.set(p.follower, b);
  }
  return [...by.values()];
}

const contains = (e: TraceEvent, index: number) => e.lo <= index && index <= e.hi;

/**
 * Lines up the hand-offs of every traced put from the members' dumps (by member ID) and the client's own send and
 * receive times (by key). Puts with a missing hand-off are left out and counted in `incomplete`.
 */
export function timelines(
  dumps: Map<string, TraceDump>,
  leaderId: string,
  client: Map<string, { sent: number; got: number }>,
): { puts: PutTimeline[]; incomplete: string[] } {
  const leader = dumps.get(leaderId)!;
  const at = (d: TraceDump, e: TraceEvent | undefined) => e ? d.timeOrigin + e.t : NaN;
  const first = (d: TraceDump, pred: (e: TraceEvent) => boolean, after = -Infinity) =>
    d.events.find((e) => d.timeOrigin + e.t >= after && pred(e));
  const byId = new Map<number, Map<string, TraceEvent>>();
  for (const e of leader.events) {
    if (!["bytesIn", "recv", "propose", "reply"].includes(e.stage)) continue;
    let m = byId.get(e.lo);
    if (!m) byId.set(e.lo, m = new Map());
    m.set(e.stage, e);
  }
  const puts: PutTimeline[] = [];
  const incomplete: string[] = [];
  for (const [id, req] of byId) {
    const key = leader.keys[String(id)];
    const c = client.get(key);
    const index = req.get("propose")?.hi ?? 0;
    if (!c || !index) {
      incomplete.push(`${key ?? id}: ${!c ? "not sent by this run" : "no proposal on the leader"}`);
      continue;
    }
    const ready = first(leader, (e) => e.stage === "ready" && contains(e, index));
    // the follower whose ack of the index came first
    let follower = "", ackIn: TraceEvent | undefined;
    for (const e of leader.events) {
      if (e.stage === "ackIn" && e.hi >= index && at(leader, e) >= at(leader, ready)) {
        follower = e.peer!;
        ackIn = e;
        break;
      }
    }
    const f = dumps.get(follower);
    const appOut = first(leader, (e) => e.stage === "appOut" && e.peer === follower && contains(e, index));
    const appIn = f && first(f, (e) => e.stage === "appIn" && e.peer === leaderId && contains(e, index));
    const fFsync = f && first(f, (e) => e.stage === "fsync" && contains(e, index));
    const ackOut = f && first(f, (e) => e.stage === "ackOut" && e.peer === leaderId && e.hi >= index, at(f, fFsync));
    const t: PutTimeline["at"] = {
      "client sends": c.sent,
      "leader bytes in": at(leader, req.get("bytesIn")),
      "leader Put handler": at(leader, req.get("recv")),
      "leader proposal": at(leader, req.get("propose")),
      "leader Ready": at(leader, ready),
      "leader frame out": at(leader, appOut),
      "follower frame in": f ? at(f, appIn) : NaN,
      "follower fsync": f ? at(f, fFsync) : NaN,
      "follower ack out": f ? at(f, ackOut) : NaN,
      "leader ack in": at(leader, ackIn),
      "leader commit": at(leader, first(leader, (e) => e.stage === "commit" && contains(e, index))),
      "leader apply": at(leader, first(leader, (e) => e.stage === "apply" && contains(e, index))),
      "leader reply": at(leader, req.get("reply")),
      "client response": c.got,
    };
    const missing = HOPS.filter((h) => !Number.isFinite(t[h]));
    const leaderFsync = at(leader, first(leader, (e) => e.stage === "fsync" && contains(e, index)));
    if (missing.length > 0 || !Number.isFinite(leaderFsync)) {
      incomplete.push(`${key}: no ${[...missing, ...(Number.isFinite(leaderFsync) ? [] : ["leader fsync"])]}`);
      continue;
    }
    puts.push({ key, index, follower, at: t, leaderFsync });
  }
  return { puts, incomplete };
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;

/** The table: the median put hop by hop, and each hop's median and p90 over all puts. */
export function report(puts: PutTimeline[]): string {
  const total = (p: PutTimeline) => p.at["client response"] - p.at["client sends"];
  const med = [...puts].sort((a, b) => total(a) - total(b))[Math.floor(puts.length / 2)];
  const rows: string[][] = [["hand-off", "median put: at", "+ step", `all ${puts.length}: step p50`, "step p90"]];
  HOPS.forEach((h, i) => {
    const step = (p: PutTimeline) => i === 0 ? 0 : p.at[h] - p.at[HOPS[i - 1]];
    const steps = puts.map(step);
    rows.push([
      h,
      us(med.at[h] - med.at["client sends"]),
      i === 0 ? "" : us(step(med)),
      i === 0 ? "" : us(quantile(steps, 0.5)),
      i === 0 ? "" : us(quantile(steps, 0.9)),
    ]);
  });
  const lf = (p: PutTimeline) => p.leaderFsync - p.at["leader Ready"];
  rows.push([
    "(leader fsync, from Ready)",
    us(med.leaderFsync - med.at["client sends"]),
    us(lf(med)),
    us(quantile(puts.map(lf), 0.5)),
    us(quantile(puts.map(lf), 0.9)),
  ]);
  const totals = puts.map(total);
  rows.push(["total", us(total(med)), "", us(quantile(totals, 0.5)), us(quantile(totals, 0.9))]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ")).join("\n");
}

async function main(): Promise<number> {
  const opts = parseArgs(Deno.args);
  Deno.env.set("EG_TRACE_PUT_PREFIX", "/trace-put/"); // inherited by the members
  const cluster = await Cluster.start({ size: 3 });
  try {
    const { leader } = await cluster.waitLeader();
    const etcd = cluster.client(leader);
    const value = "v".repeat(256);
    for (let i = 0; i < opts.warmup; i++) await etcd.put(`/warm/${i % 1000}`, value);
    const client = new Map<string, { sent: number; got: number }>();
    for (let i = 0; i < opts.puts; i++) {
      const key = `/trace-put/${i}`;
      const sent = now();
      await etcd.call(etcd.kv, "Put", { key: Buffer.from(key), value: Buffer.from(value) }, 5000);
      client.set(key, { sent, got: now() });
    }
    const dumps = new Map<string, TraceDump>();
    for (const m of cluster.members) dumps.set(m.id, await fetchDump(m.clientUrl));
    const { puts, incomplete } = timelines(dumps, leader.id, client);
    const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
    const names = new Map(cluster.members.map((m) => [m.id, m.name]));
    if (puts.length > 0) {
      console.log(report(puts));
      const fs = new Map<string, number>();
      for (const p of puts) fs.set(p.follower, (fs.get(p.follower) ?? 0) + 1);
      console.log(
        `\n${puts.length} puts of 256 B, one at a time, to the leader ${leader.name} after ${opts.warmup} untraced;` +
          ` F = the first follower to ack (${[...fs].map(([id, n]) => `${names.get(id)} ${n}×`).join(", ")}).` +
          ` Clock: performance.timeOrigin + performance.now() in every process; by causality each follower's offset` +
          ` from the leader lies within ` +
          clockBounds(puts).map((b) => `${names.get(b.follower)} (${us(b.lo)}, ${us(b.hi)})`).join(", ") +
          `. Load average ${load}.`,
      );
    }
    if (incomplete.length > 0) console.log(`${incomplete.length} puts incomplete, first: ${incomplete[0]}`);
    if (opts.json) {
      await Deno.writeTextFile(
        opts.json,
        JSON.stringify(
          { leader: leader.name, hops: HOPS, puts, incomplete, clocks: clockBounds(puts), loadavg: load },
          null,
          2,
        ),
      );
    }
    return puts.length > 0 ? 0 : 1;
  } finally {
    await cluster.destroy();
  }
}

if (import.meta.main) Deno.exit(await main());
