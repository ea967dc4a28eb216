/**
 * etcd 3.4's logging flags: `--logger capnslog` (default: `<time> <L> | <component>: <message>` lines) or
 * `--logger zap` (one JSON object per line, as etcd's zap logger writes them: "level", "ts" in ISO 8601 with
 * milliseconds and zone, "msg", then the fields; we add "logger" with the component and leave out "caller"),
 * `--log-level debug|info|warn|error|dpanic|panic|fatal` and `--log-outputs default|stderr|stdout|<file>,...`.
 */
import type { LogFields, Logger } from "./log.ts";

/** What the logging flags ask for. */
export interface LogOptions {
  logger: "capnslog" | "zap";
  /** lines below this level are dropped */
  level: Level;
  /** "stderr", "stdout" or file paths (appended to) */
  outputs: string[];
}

export type Level = "debug" | "info" | "warn" | "error";

const LEVELS: Record<string, number> = { debug: 0, info: 1, warn: 2, error: 3, dpanic: 3, panic: 3, fatal: 3 };
const FLAGS = new Set(["logger", "log-level", "log-outputs"]);

/** A logging flag with a bad value (etcd's message). */
export class LogFlagError extends Error {}

/** Takes the logging flags out of etcd's arguments; throws LogFlagError on a bad value. */
export function splitLogFlags(args: string[]): { opts: LogOptions; rest: string[] } {
  const opts: LogOptions = { logger: "capnslog", level: "info", outputs: ["stderr"] };
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const m = /^--?([a-z-]+)(?:=(.*))?$/s.exec(args[i]);
    if (!m || !FLAGS.has(m[1])) {
      rest.push(args[i]);
      continue;
    }
    let value = m[2];
    if (value === undefined) {
      if (i + 1 >= args.length) throw new LogFlagError(`flag needs an argument: -${m[1]}`);
      value = args[++i];
    }
    if (m[1] === "logger") {
      if (value !== "capnslog" && value !== "zap") {
        throw new LogFlagError(`unknown logger option ${JSON.stringify(value)}`);
      }
      opts.logger = value;
    } else if (m[1] === "log-level") {
      if (!(value in LEVELS)) throw new LogFlagError(`unknown log level ${JSON.stringify(value)}`);
      opts.level = value === "debug" || value === "info" || value === "warn" ? value : "error";
    } else {
      const outs = value.split(",").map((o) => (o === "default" ? "stderr" : o)).filter((o) => o !== "");
      if (outs.length === 0) throw new LogFlagError("--log-outputs: no output given");
      opts.outputs = outs;
    }
  }
  return { opts, rest };
}

/** `t` as zap's ISO 8601 encoder writes it: local time, milliseconds, zone as Z or ±hhmm. */
export function zapTime(t: Date): string {
  const off = -t.getTimezoneOffset();
  const local = new Date(t.getTime() + off * 60_000).toISOString().slice(0, 23);
  if (off === 0) return `${local}Z`;
  const a = Math.abs(off);
  return `${local}${off < 0 ? "-" : "+"}${String(Math.floor(a / 60)).padStart(2, "0")}${
    String(a % 60).padStart(2, "0")
  }`;
}

/** The writer of one output. */
function writer(out: string): (line: string) => void {
  const enc = new TextEncoder();
  if (out === "stderr") return (l) => Deno.stderr.writeSync(enc.encode(l + "\n"));
  if (out === "stdout") return (l) => Deno.stdout.writeSync(enc.encode(l + "\n"));
  const f = Deno.openSync(out, { append: true, create: true });
  return (l) => {
    const b = enc.encode(l + "\n");
    for (let off = 0; off < b.length;) off += f.writeSync(b.subarray(off));
  };
}

/** A Logger as the options ask for; `now` is for tests. */
export function newLogger(opts: LogOptions, now: () => Date = () => new Date()): Logger {
  return lineLogger(opts.logger, opts.level, opts.outputs.map(writer), now);
}

/** One line of the `format` ("zap": a JSON object; "capnslog": etcd 3.4's text line). */
export function formatLine(
  format: LogOptions["logger"],
  level: Level,
  component: string,
  msg: string,
  fields: LogFields | undefined,
  t: Date,
): string {
  if (format === "zap") return JSON.stringify({ level, ts: zapTime(t), logger: component, msg, ...fields });
  const stamp = t.toISOString().replace("T", " ").replace("Z", "");
  const tail = fields ? ` [${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(", ")}]` : "";
  return `${stamp} ${level[0].toUpperCase()} | ${component}: ${msg}${tail}`;
}

/** A Logger writing `format` lines of at least `level` to each of `outs`. */
export function lineLogger(
  format: LogOptions["logger"],
  level: Level,
  outs: ((line: string) => void)[],
  now: () => Date = () => new Date(),
): Logger {
  const min = LEVELS[level];
  const emit = (level: Level, component: string, msg: string, fields?: LogFields) => {
    if (LEVELS[level] < min) return;
    const line = formatLine(format, level, component, msg, fields, now());
    for (const w of outs) w(line);
  };
  return {
    info: (c, m, f) => emit("info", c, m, f),
    warn: (c, m, f) => emit("warn", c, m, f),
    error: (c, m, f) => emit("error", c, m, f),
  };
}
