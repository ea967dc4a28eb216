/**
 * `deno task bench -- --scale [--members 3] [--only etcd|ours] [--rows load,mixed,...] [--rounds N]`: rows at scale,
 * etcd 3.4.23 and ours one after the other with the same load generator (scripts/bench/loadgen.go).
 *
 * Rows, in groups that each start a fresh server (or cluster) on an empty data dir:
 *   kv     load (1 M keys of 256 B, 16 B keys, txns of 100 puts), mixed (random reads and writes over them, 50/50),
 *          count (count-only range over all keys), scan (range of 10,000 consecutive keys), then restart (1 member:
 *          SIGTERM, start again, time to the first successful read) or follower (3 members: SIGKILL a follower,
 *          30,000 puts so that the leader's log moves past it, restart it: time until it applied the leader's index),
 *          then compact (mixed again, and 2 s in a compaction at the current revision, physical: the compaction of a
 *          million keys' history while the load runs, and how long the compaction itself took)
 *   watch  watch-distinct (10,000 watchers, one key each), watch-hot (10,000 watchers on one prefix), while puts run
 *   lease  leases (100,000 leases with 3 keys each, 10 % kept alive, the rest expire: lateness after grant + TTL)
 *   soak   a soak with --auto-compaction-mode periodic --auto-compaction-retention 10s: paced puts over 10,000 keys,
 *          RSS sampled every second (trend = mean of the last third - mean of the middle third, per minute)
 *
 * Each row reports throughput, p50/p99/p99.9 latency, peak RSS (sampled every 250 ms during the row, summed over
 * the members) and RSS at rest (2 s after the row), and for our server the longest event-loop stall during the row
 * (EG_EVENT_LOOP_STALLS=1: server/metrics/event_loop.ts). With --snapshot-count 10000 on both sides for 3 members.
 * Before the first row of the watch, lease and soak groups, each side's fresh server serves SCALE_WARMUP_PUTS (20,000)
 * unmeasured puts of 16 clients on keys of their own, as bench.ts does before its first row: V8 runs a function
 * unoptimized for its first few thousand calls, and the watch rows (20,000 puts) measured our server cold (3 members,
 * watch-distinct, 2,232-2,972 ev/s cold, 3,433 after the puts). The kv group's first row, the load of the keys, is
 * long enough to be its own warm-up, and no other key may enter its data.
 *
 * Environment: SCALE_KEYS (1000000), SCALE_VALUE_SIZE (256, bytes per value of the kv rows), SCALE_SECONDS (10, per closed-loop row), SCALE_LEASES (100000),
 * SCALE_SOAK_SECONDS (90), SCALE_SOAK_RATE (2000 puts/s), SCALE_WATCHERS (10000), SCALE_WATCH_LAT_PUTS (500, the
 * put→event samples of watch-distinct, at 100 puts/s), SCALE_WARMUP_PUTS (20000), and bench.ts's BENCH_ETCD,
 * BENCH_OURS, BENCH_CACHE.
 */
import type * as Bench from "../bench.ts";
import type { Cluster } from "../bench.ts";
import { printMarkdownTable } from "./table.ts";

/**
 * bench.ts's process and load-generator helpers, handed over by its main (a static import back into bench.ts would
 * wait for bench.ts's own top-level await, which waits for this module).
 */
export type ScaleLib = Pick<
  typeof Bench,
  | "agreedLeader"
  | "buildLoadgen"
  | "fmtNum"
  | "loadAvg"
  | "memberStatus"
  | "readText"
  | "restartMember"
  | "runLoadgen"
  | "ServerProc"
  | "shells"
  | "sleep"
  | "startCluster"
  | "treePids"
>;
let B: ScaleLib;

const env = (k: string) => Deno.env.get(k) || undefined;
const num = (k: string, d: number) => Number(env(k) ?? d);
const KEYS = num("SCALE_KEYS", 1_000_000);
const SECONDS = num("SCALE_SECONDS", 10);
const LEASES = num("SCALE_LEASES", 100_000);
const SOAK_SECONDS = num("SCALE_SOAK_SECONDS", 90);
const SOAK_RATE = num("SCALE_SOAK_RATE", 2000);
const WATCHERS = num("SCALE_WATCHERS", 10_000);
const VALUE_SIZE = num("SCALE_VALUE_SIZE", 256);
const WATCH_LAT_PUTS = num("SCALE_WATCH_LAT_PUTS", 500);
const WARMUP_PUTS = num("SCALE_WARMUP_PUTS", 20_000);
const kvKeys = ["--key-space", String(KEYS), "--key-size", "16", "--val-size", String(VALUE_SIZE)];

type Group = "kv" | "watch" | "lease" | "soak";

interface ScaleRow {
  id: string;
  group: Group;
  label: string;
  /** lower is better (a time): the ratio column is etcd/ours */
  lowerBetter?: boolean;
}

const ROWS: ScaleRow[] = [
  { id: "load", group: "kv", label: `load ${KEYS / 1e6} M keys of ${VALUE_SIZE} B, keys/s (txn of 100)` },
  { id: "mixed", group: "kv", label: "random 50/50 get/put, 64 clients" },
  { id: "count", group: "kv", label: "count all keys, 1 client" },
  { id: "scan", group: "kv", label: "range of 10,000 keys, 4 clients" },
  { id: "restart", group: "kv", label: `restart with ${KEYS / 1e6} M keys, s ↓`, lowerBetter: true },
  { id: "compact", group: "kv", label: "random 50/50 get/put, 64 clients, compaction 2 s in" },
  { id: "watch-distinct", group: "watch", label: `${WATCHERS} watchers, distinct keys, ev/s` },
  { id: "watch-hot", group: "watch", label: `${WATCHERS} watchers, one prefix, ev/s` },
  { id: "leases", group: "lease", label: `${LEASES} leases ×3 keys, set-up req/s` },
  { id: "soak", group: "soak", label: `soak ${SOAK_SECONDS} s, ${SOAK_RATE} puts/s, compaction` },
];

interface Measured {
  ok: boolean;
  reason?: string;
  thr?: number;
  p50?: number;
  p99?: number;
  p999?: number;
  peakKb?: number;
  restKb?: number;
  /** our longest event-loop stall during the row, ms ("≤ x" when only the histogram bucket is known) */
  stall?: string;
  /** the most CPU time our event loop's thread used between two ticks of the monitor during the row, ms */
  busy?: string;
  /** row-specific facts for the notes */
  note?: string;
}

/** VmRSS of a cluster (non-shell processes of every member), KiB. */
function clusterRssKb(c: Cluster): number {
  let kb = 0;
  for (const m of c.members) {
    if (m.proc.done) continue;
    for (const p of B.treePids(m.proc.pid)) {
      if (B.shells.has(B.readText(`/proc/${p}/comm`)?.trim() ?? "")) continue;
      const v = B.readText(`/proc/${p}/status`)?.match(/^VmRSS:\s+(\d+)/m);
      if (v) kb += Number(v[1]);
    }
  }
  return kb;
}

/** Samples a cluster's RSS every `ms` while a row runs. */
class RssSampler {
  peak = 0;
  readonly samples: number[] = [];
  #timer: ReturnType<typeof setInterval>;
  constructor(readonly cluster: Cluster, ms: number) {
    this.sample();
    this.#timer = setInterval(() => this.sample(), ms);
  }
  sample() {
    const kb = clusterRssKb(this.cluster);
    this.samples.push(kb);
    if (kb > this.peak) this.peak = kb;
  }
  stop(): number {
    clearInterval(this.#timer);
    this.sample();
    return this.peak;
  }
}

/** Stall histogram and max of every member (ours only; etcd has no such metric). */
interface Stalls {
  max: number;
  /** count of observations above each bound, by bound (seconds) */
  above: Map<number, number>;
  /** of the longest stall: the thread's CPU time and its wait for a CPU, s (Linux schedstat; -1 unknown) */
  maxCpu: number;
  maxWait: number;
  /** most CPU time of the thread between two ticks of the monitor, s (-1 unknown) */
  busy: number;
}

async function scrapeStalls(c: Cluster): Promise<Stalls | undefined> {
  const out: Stalls = { max: 0, above: new Map(), maxCpu: -1, maxWait: -1, busy: -1 };
  let found = false;
  for (const m of c.members) {
    if (m.proc.done) continue;
    let text: string;
    try {
      const r = await fetch(`http://${m.endpoint}/metrics`, { signal: AbortSignal.timeout(5000) });
      text = await r.text();
    } catch {
      continue;
    }
    const mx = text.match(/^eg_event_loop_stall_max_seconds (\S+)/m);
    if (!mx) continue;
    found = true;
    const g = (name: string) => Number(text.match(new RegExp(`^${name} (\\S+)`, "m"))?.[1] ?? -1);
    if (Number(mx[1]) >= out.max) {
      out.maxCpu = g("eg_event_loop_stall_max_cpu_seconds");
      out.maxWait = g("eg_event_loop_stall_max_wait_seconds");
    }
    out.busy = Math.max(out.busy, g("eg_event_loop_busy_max_seconds"));
    out.max = Math.max(out.max, Number(mx[1]));
    const total = Number(text.match(/^eg_event_loop_stall_seconds_count (\S+)/m)?.[1] ?? 0);
    for (const b of text.matchAll(/^eg_event_loop_stall_seconds_bucket\{le="([^"]+)"\} (\S+)/gm)) {
      if (b[1] === "+Inf") continue;
      const bound = Number(b[1]);
      out.above.set(bound, (out.above.get(bound) ?? 0) + total - Number(b[2]));
    }
  }
  return found ? out : undefined;
}

/**
 * The longest stall between two scrapes: exact when it set a new maximum (with the thread's CPU time and wait for a
 * CPU in it, where known: "127 (cpu 31, wait 90)"), else the histogram bucket it fell in.
 */
function stallBetween(a?: Stalls, b?: Stalls): string | undefined {
  if (!b) return undefined;
  const ms = (s: number) => (s * 1000).toFixed(0);
  const exact = () => ms(b.max) + (b.maxCpu >= 0 ? ` (cpu ${ms(b.maxCpu)}, wait ${ms(b.maxWait)})` : "");
  // a restarted server: its whole life (start-up included) is the row's
  if (!a || [...b.above.values()].reduce((x, y) => x + y, 0) < [...a.above.values()].reduce((x, y) => x + y, 0)) {
    return exact();
  }
  if (b.max > a.max) return exact();
  const bounds = [...b.above.keys()].sort((x, y) => x - y);
  let upper: number | undefined;
  for (const bound of bounds) {
    if ((b.above.get(bound) ?? 0) - (a.above.get(bound) ?? 0) === 0) {
      upper = bound;
      break;
    }
  }
  return upper === undefined ? `> ${bounds.at(-1)! * 1000}` : `≤ ${upper * 1000}`;
}

/** The busiest tick between two scrapes: exact when it set a new maximum, else at most the earlier maximum. */
function busyBetween(a?: Stalls, b?: Stalls): string | undefined {
  if (!b || b.busy < 0) return undefined;
  if (!a || a.busy < 0 || b.busy > a.busy) return (b.busy * 1000).toFixed(0);
  return `≤ ${(a.busy * 1000).toFixed(0)}`;
}

type Raw = Record<string, number | string | undefined>;

function fromLoadgen(r: Bench.RowResult): Measured {
  const raw = (r.raw ?? {}) as Raw;
  const m: Measured = {
    ok: r.ok && !r.errors,
    thr: r.rps,
    p50: r.p50,
    p99: r.p99,
    p999: Number(raw.p999_ms ?? 0),
  };
  if (!m.ok) m.reason = r.reason ?? `${r.errors} errors: ${r.firstError}`;
  return m;
}

/** Runs one row against a running cluster. */
async function runRow(row: ScaleRow, loadgen: string, c: Cluster): Promise<Measured> {
  const lg = (args: string[], hardS: number) => B.runLoadgen(loadgen, c, args, hardS * 1000);
  const closed = ["--duration", `${SECONDS}s`, "--warmup", "1s", ...kvKeys];
  switch (row.id) {
    case "load":
      return fromLoadgen(
        await lg(["--op", "load", "--clients", "32", "--batch", "100", "--duration", "900s", ...kvKeys], 1000),
      );
    case "mixed":
      return fromLoadgen(await lg(["--op", "mixed", "--clients", "64", ...closed], SECONDS + 120));
    case "count":
      return fromLoadgen(await lg(["--op", "count", "--clients", "1", ...closed], SECONDS + 120));
    case "scan":
      return fromLoadgen(await lg(["--op", "scan", "--clients", "4", ...closed], SECONDS + 120));
    case "compact": {
      const r = await lg(["--op", "mixed", "--clients", "64", "--compact-after", "2s", ...closed], 900);
      const m = fromLoadgen(r), raw = (r.raw ?? {}) as Raw;
      m.note = `physical compaction at revision ${raw.compact_rev ?? "?"} took ${raw.compact_ms ?? "?"} ms`;
      return m;
    }
    case "restart":
      return c.members.length === 1 ? await restartSingle(loadgen, c) : await restartFollower(loadgen, c);
    case "watch-distinct":
    case "watch-hot": {
      const distinct = row.id === "watch-distinct";
      const r = fromLoadgen(
        await lg([
          "--op",
          "watch",
          ...(distinct ? ["--distinct", "--puts", "20000", "--clients", "16"] : ["--puts", "100", "--clients", "4"]),
          ...["--watchers", String(WATCHERS), "--streams", "100", "--key-space", String(WATCHERS)],
          ...[
            "--lat-puts",
            distinct ? String(WATCH_LAT_PUTS) : "50",
            "--lat-rate",
            distinct ? "100" : "10",
            "--watch-max",
            "120s",
          ],
        ], 400),
      );
      r.note = "p50/p99/p99.9 = put→event at a modest put rate";
      return r;
    }
    case "leases": {
      const r = await lg([
        ...["--op", "leases", "--leases", String(LEASES), "--lease-keys", "3", "--lease-ttl", "20"],
        ...["--keep-frac", "0.1", "--clients", "64", "--duration", "900s", "--expiry-max", "240s"],
      ], 1300);
      const m = fromLoadgen(r);
      const raw = (r.raw ?? {}) as Raw;
      m.note = `expiry lateness after grant + TTL p50/p99/p99.9/max ${raw.late_p50_ms ?? "-"} / ${
        raw.late_p99_ms ?? "-"
      } / ${raw.late_p999_ms ?? "-"} / ${raw.late_max_ms ?? "-"} ms, ${raw.expired ?? 0} expired, ${
        raw.not_expired ?? 0
      } not expired, ${raw.kept_lost ?? 0} of ${raw.kept ?? 0} kept alive lost`;
      return m;
    }
    case "soak":
      return await soak(loadgen, c);
  }
  return { ok: false, reason: `unknown row ${row.id}` };
}

/** SIGTERM the single member, start it again on its data dir: time from the start to the first successful read. */
async function restartSingle(loadgen: string, c: Cluster): Promise<Measured> {
  const m = c.members[0];
  await m.proc.stop();
  m.proc = new B.ServerProc(c.binary, m.args("existing"));
  const r = await B.runLoadgen(loadgen, c, ["--op", "ping", "--ping-wait", "600s"], 700_000);
  const secs = Number((r.raw as Raw | undefined)?.seconds ?? 0);
  if (!r.ok) return { ok: false, reason: r.reason };
  return { ok: true, thr: secs, note: `first read ${secs.toFixed(2)} s after the restart` };
}

/** SIGKILL a follower, write 30,000 puts, restart it: time until it applied the leader's index. */
async function restartFollower(loadgen: string, c: Cluster): Promise<Measured> {
  const st = await B.memberStatus(loadgen, c.endpoints);
  const lead = B.agreedLeader(st);
  const follower = c.members.find((m) => st?.find((s) => s.endpoint === m.endpoint)?.id !== lead);
  if (!lead || !follower) return { ok: false, reason: "no agreed leader" };
  const stamp = (what: string) => console.error(`${new Date().toISOString()} ${what}`);
  stamp(`SIGKILL follower ${follower.name} (pid ${follower.proc.pid})`);
  follower.proc.kill9();
  await follower.proc.status;
  const live = c.members.filter((m) => m !== follower).map((m) => m.endpoint).join(",");
  const w = await B.runLoadgen(loadgen, { endpoints: live, cpu: () => 0 }, [
    ...["--op", "put", "--clients", "32", "--total", "30000", ...kvKeys],
  ], 300_000);
  if (!w.ok) return { ok: false, reason: `puts while the follower was down: ${w.reason}` };
  const t0 = performance.now();
  stamp(`restarting follower ${follower.name}`);
  try {
    await B.restartMember(loadgen, c, follower, 600_000);
    stamp(`follower ${follower.name} (pid ${follower.proc.pid}) applied the leader's index`);
  } catch (e) {
    return { ok: false, reason: String(e) };
  }
  const secs = (performance.now() - t0) / 1000;
  return { ok: true, thr: secs, note: `follower caught up (snapshot) ${secs.toFixed(2)} s after its restart` };
}

/** Paced puts with auto-compaction on, RSS every second: throughput, latency and the RSS trend. */
async function soak(loadgen: string, c: Cluster): Promise<Measured> {
  const samples: number[] = [];
  const t = setInterval(() => samples.push(clusterRssKb(c)), 1000);
  const r = await B.runLoadgen(loadgen, c, [
    ...["--op", "put", "--clients", "16", "--rate", String(SOAK_RATE), "--duration", `${SOAK_SECONDS}s`],
    ...["--key-space", "10000", "--key-size", "16", "--val-size", "256"],
  ], (SOAK_SECONDS + 120) * 1000);
  clearInterval(t);
  const m = fromLoadgen(r);
  const third = Math.floor(samples.length / 3);
  if (third > 1) {
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const mid = avg(samples.slice(third, 2 * third)), last = avg(samples.slice(2 * third));
    const perMin = (last - mid) / 1024 / (third / 60);
    const mb = (kb: number) => (kb / 1024).toFixed(0);
    m.note = `RSS every 1 s (MB): first ${mb(samples[0])}, min ${mb(Math.min(...samples))}, max ${
      mb(Math.max(...samples))
    }, last ${mb(samples.at(-1)!)}; trend ${perMin >= 0 ? "+" : ""}${perMin.toFixed(1)} MB/min (last third vs middle)`;
    const minutes: string[] = [];
    for (let i = 0; i + 60 <= samples.length; i += 60) minutes.push(mb(avg(samples.slice(i, i + 60))));
    if (minutes.length > 1) m.note += `; mean of each minute ${minutes.join(", ")} MB`;
  }
  return m;
}

const GROUP_ARGS: Record<Group, string[]> = {
  kv: [],
  watch: [],
  lease: [],
  soak: ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "10s"],
};

async function runSide(
  name: string,
  binary: string,
  rows: ScaleRow[],
  loadgen: string,
  size: number,
): Promise<Map<string, Measured>> {
  const out = new Map<string, Measured>();
  const groups = [...new Set(rows.map((r) => r.group))];
  for (const g of groups) {
    const extra = [...GROUP_ARGS[g], ...(size > 1 ? ["--snapshot-count", "10000"] : [])];
    let c: Cluster;
    try {
      c = await B.startCluster(binary, `${name}-${g}`, size, loadgen, extra);
    } catch (e) {
      for (const r of rows.filter((r) => r.group === g)) out.set(r.id, { ok: false, reason: String(e) });
      continue;
    }
    try {
      if (g !== "kv" && WARMUP_PUTS > 0) {
        const w = await B.runLoadgen(loadgen, c, [
          ...["--op", "put", "--clients", "16", "--total", String(WARMUP_PUTS), "--warmup", "0s"],
          ...["--key-size", "8", "--val-size", "256", "--key-space", "10000"],
        ]);
        console.error(`[${name}] ${g} warm-up: ${WARMUP_PUTS} puts${w.ok ? "" : ` failed: ${w.reason}`}`);
      }
      for (const row of rows.filter((r) => r.group === g)) {
        const dead = c.dead();
        if (dead) {
          out.set(row.id, { ok: false, reason: c.diedReason(dead) });
          continue;
        }
        const before = await scrapeStalls(c);
        const rss = new RssSampler(c, 250);
        const t0 = Date.now();
        let m: Measured;
        try {
          m = await runRow(row, loadgen, c);
        } catch (e) {
          m = { ok: false, reason: String(e) };
        }
        m.peakKb = rss.stop();
        await B.sleep(2000);
        m.restKb = clusterRssKb(c);
        const after = await scrapeStalls(c);
        m.stall = stallBetween(before, after);
        m.busy = busyBetween(before, after);
        out.set(row.id, m);
        console.error(
          `[${name}] ${row.id} (${((Date.now() - t0) / 1000).toFixed(0)} s): ` +
            (m.ok
              ? `${B.fmtNum(m.thr ?? 0)}, p50/p99/p99.9 ${m.p50}/${m.p99}/${m.p999} ms, RSS peak ${mb(m.peakKb)} rest ${
                mb(m.restKb)
              }` + (m.stall ? `, stall ${m.stall} ms` : "") + (m.busy ? `, busiest tick ${m.busy} ms cpu` : "") +
                (m.note ? `; ${m.note}` : "")
              : `failed: ${m.reason}`),
        );
      }
    } finally {
      await c.stop();
    }
  }
  return out;
}

const mb = (kb?: number) => (kb === undefined ? "-" : (kb / 1024).toFixed(0));

function printTable(rows: ScaleRow[], size: number, etcd?: Map<string, Measured>, ours?: Map<string, Measured>) {
  const lat = (m?: Measured) =>
    m?.ok && m.p50 ? [m.p50, m.p99!, m.p999!].map((x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1))).join(" / ") : "-";
  const thr = (r: ScaleRow, m?: Measured) =>
    !m ? "-" : !m.ok ? "failed" : r.lowerBetter ? m.thr!.toFixed(2) : B.fmtNum(m.thr!);
  const header = [
    "row",
    "etcd",
    "ours",
    "ours/etcd",
    "etcd p50/p99/p99.9 ms",
    "ours p50/p99/p99.9 ms",
    "etcd RSS peak/rest MB",
    "ours RSS peak/rest MB",
    "peak o/e",
    "ours stall ms",
  ];
  const table = [header];
  const notes: string[] = [];
  for (const r of rows) {
    const e = etcd?.get(r.id), o = ours?.get(r.id);
    const ratio = e?.ok && o?.ok && e.thr && o.thr
      ? (r.lowerBetter ? `${(e.thr / o.thr).toFixed(2)} e/o` : (o.thr / e.thr).toFixed(2))
      : "-";
    table.push([
      r.label,
      thr(r, e),
      thr(r, o),
      ratio,
      lat(e),
      lat(o),
      e ? `${mb(e.peakKb)} / ${mb(e.restKb)}` : "-",
      o ? `${mb(o.peakKb)} / ${mb(o.restKb)}` : "-",
      e?.peakKb && o?.peakKb ? (o.peakKb / e.peakKb).toFixed(2) : "-",
      o?.stall ?? "-",
    ]);
    for (const [side, m] of [["etcd", e], ["ours", o]] as const) {
      if (m && !m.ok) notes.push(`[${side} ${r.id}] failed: ${(m.reason ?? "").replace(/\s+/g, " ").slice(0, 300)}`);
      else if (m?.note) notes.push(`[${side} ${r.id}] ${m.note}`);
    }
  }
  printMarkdownTable(table);
  console.log(
    `\n${size} member${size > 1 ? "s (RSS summed)" : ""}; RSS peak = highest 250 ms sample during the row, rest = 2 s` +
      ` after it; each group of rows (kv, watch, lease, soak) on a fresh server; stall = our longest event-loop stall.`,
  );
  if (notes.length) console.log(notes.join("\n"));
}

/** Entry point of `bench.ts --scale`. */
export async function runScaleBench(argv: string[], bench: ScaleLib): Promise<number> {
  B = bench;
  let only: string | undefined, pick: string[] | undefined, size = 1, rounds = 1;
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].includes("=") ? argv[i].split("=", 2) : [argv[i], undefined];
    const val = () => inline ?? argv[++i];
    if (k === "--only") only = val();
    else if (k === "--rows") pick = val().split(",");
    else if (k === "--members") size = Number(val());
    else if (k === "--rounds") rounds = Math.max(1, Number(val()) || 1);
    else {
      console.error(`--scale: unknown argument ${argv[i]} (--only, --rows, --members, --rounds)`);
      return 2;
    }
  }
  if (size !== 1 && size < 3) {
    console.error("--members must be 1 or at least 3");
    return 2;
  }
  const unknown = pick?.filter((p) => !ROWS.some((r) => r.id === p)) ?? [];
  if (unknown.length) {
    console.error(`unknown rows ${unknown.join(",")}; available: ${ROWS.map((r) => r.id).join(",")}`);
    return 2;
  }
  const rows = ROWS.filter((r) => !pick || pick.includes(r.id)).map((r) =>
    r.id === "restart" && size > 1
      ? { ...r, label: `follower restart, ${KEYS / 1e6} M keys, snapshot catch-up, s ↓` }
      : r
  );
  Deno.env.set("EG_EVENT_LOOP_STALLS", "1"); // our server's stall monitor (etcd ignores it)
  const loadgen = await B.buildLoadgen();
  const repo = new URL("../../", import.meta.url).pathname;
  const bins: Record<string, string> = {
    etcd: env("BENCH_ETCD") ?? "/usr/bin/etcd",
    ours: env("BENCH_OURS") ?? `${repo}scripts/etcd`,
  };
  for (let round = 0; round < rounds; round++) {
    const loadBefore = B.loadAvg();
    const t0 = Date.now();
    const res: Record<string, Map<string, Measured>> = {};
    for (const name of round % 2 === 0 ? ["etcd", "ours"] : ["ours", "etcd"]) {
      if (only && only !== name) continue;
      console.error(`[${name}] load average ${B.loadAvg()}`);
      res[name] = await runSide(name, bins[name], rows, loadgen, size);
    }
    console.log(`\nround ${round + 1}/${rounds}, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    printTable(rows, size, res.etcd, res.ours);
    console.log(`load average (1/5/15 min): ${loadBefore} before, ${B.loadAvg()} after.`);
  }
  return 0;
}
