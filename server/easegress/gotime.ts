/** Go time and duration formats that Easegress exposes: RFC3339 in local time, `time.ParseDuration`. */

function pad(n: number, w = 2): string {
  return String(n).padStart(w, "0");
}

/** `time.Now().Format(time.RFC3339)`: seconds precision, local offset, `Z` for UTC. */
export function rfc3339(d: Date = new Date()): string {
  const off = -d.getTimezoneOffset();
  const zone = off === 0
    ? "Z"
    : `${off > 0 ? "+" : "-"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${
    pad(d.getSeconds())
  }${zone}`;
}

/** `time.Parse(time.RFC3339, s)`; undefined when it does not parse. */
export function parseRfc3339(s: unknown): Date | undefined {
  if (typeof s !== "string") return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.exec(s);
  if (!m) return undefined;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : new Date(t);
}

const UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  "μs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60000,
  h: 3600000,
};

/** `time.ParseDuration`: milliseconds, or an Error with Go's message. */
export function parseGoDuration(s: string): number {
  const orig = s;
  const bad = () => new Error(`time: invalid duration ${JSON.stringify(orig)}`);
  let neg = false;
  if (s.startsWith("-") || s.startsWith("+")) {
    neg = s[0] === "-";
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") throw bad();
  let total = 0;
  while (s !== "") {
    const m = /^([0-9]*(?:\.[0-9]*)?)([a-zµμ]*)/.exec(s);
    if (!m || m[1] === "" || m[1] === ".") throw bad();
    if (m[2] === "") throw new Error(`time: missing unit in duration ${JSON.stringify(orig)}`);
    const unit = UNITS[m[2]];
    if (unit === undefined) {
      throw new Error(`time: unknown unit ${JSON.stringify(m[2])} in duration ${JSON.stringify(orig)}`);
    }
    total += Number(m[1]) * unit;
    s = s.slice(m[0].length);
  }
  return neg ? -total : total;
}

/** egctl's DurationMostSignificantUnit. */
export function durationMostSignificantUnit(ms: number): string {
  const day = ms / 86400000;
  if (day >= 1) return `${goRound(day)}d`;
  const hour = ms / 3600000;
  if (hour >= 1) return `${goRound(hour)}h`;
  const min = ms / 60000;
  if (min >= 1) return `${goRound(min)}m`;
  const sec = ms / 1000;
  if (sec >= 1) return `${goRound(sec)}s`;
  return "0s";
}

/** fmt's %.0f: round half to even. */
function goRound(x: number): string {
  const f = Math.floor(x);
  const diff = x - f;
  let r = diff > 0.5 ? f + 1 : diff < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
  if (Object.is(r, -0)) r = 0;
  return String(r);
}
