/**
 * Prometheus's own tools on exposition text: the parser of Debian's python3-prometheus-client and `promtool check
 * metrics` (Debian's prometheus package).
 */

/** One sample as prometheus_client parses it (counters' samples are named <family>_total). */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** What the parser found: the type of each family and every sample. */
export interface ParsedMetrics {
  types: Record<string, string>;
  samples: Sample[];
}

/** Runs `cmd args` with `input` on stdin; its exit code and what it printed on stdout and stderr. */
async function run(cmd: string, args: string[], input: string): Promise<{ code: number; out: string; err: string }> {
  const p = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(input));
  await w.close();
  const o = await p.output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

const PARSE = `
import sys, json, math
from prometheus_client.parser import text_string_to_metric_families
types, samples = {}, []
for f in text_string_to_metric_families(sys.stdin.read()):
    types[f.name] = f.type
    for s in f.samples:
        v = s.value
        samples.append({"name": s.name, "labels": s.labels, "value": v if math.isfinite(v) else str(v)})
print(json.dumps({"types": types, "samples": samples}))
`;

/** Parses exposition text with python3-prometheus-client (run by /usr/bin/python3); throws what it says on failure. */
export async function parseMetrics(text: string): Promise<ParsedMetrics> {
  const r = await run("/usr/bin/python3", ["-c", PARSE], text);
  if (r.code !== 0) throw new Error(`prometheus_client cannot parse the metrics: ${r.err}`);
  return JSON.parse(r.out);
}

/** The value of the one sample called `name` whose labels include `labels`; throws unless exactly one matches. */
export function sampleValue(p: ParsedMetrics, name: string, labels: Record<string, string> = {}): number {
  const hits = p.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0].value;
}

/** `promtool check metrics`: its exit code and complaints (sorted lines). */
export async function promtoolCheck(text: string): Promise<{ code: number; complaints: string[] }> {
  const r = await run("promtool", ["check", "metrics"], text);
  return { code: r.code, complaints: (r.out + r.err).split("\n").filter((l) => l.trim() !== "").sort() };
}
