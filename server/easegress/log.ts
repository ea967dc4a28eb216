/**
 * easegress-server's log: zap console shape (`<time>\t<LEVEL>\t<message>`), on stdout when log-dir is empty, else
 * appended to <log-dir>/stdout.log. The embedded etcd server's own lines go to stderr (or
 * <log-dir>/etcd_server.log) through the etcd Logger interface.
 */
import path from "node:path";
import type { Logger } from "../etcd/log.ts";

/** Levelled logger. */
export interface EgLogger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

function ts(): string {
  return new Date().toISOString();
}

function sink(logDir: string, file: string, fallback: (s: string) => void): (line: string) => void {
  if (!logDir) return fallback;
  const p = path.join(logDir, file);
  const enc = new TextEncoder();
  return (line) => {
    try {
      Deno.writeFileSync(p, enc.encode(line + "\n"), { append: true, create: true });
    } catch {
      fallback(line);
    }
  };
}

/** The member's logger. */
export function newLogger(opts: { logDir: string; debug: boolean }): EgLogger {
  const out = sink(opts.logDir, "stdout.log", (s) => console.log(s));
  return {
    debug: (m) => opts.debug && out(`${ts()}\tDEBUG\t${m}`),
    info: (m) => out(`${ts()}\tINFO\t${m}`),
    warn: (m) => out(`${ts()}\tWARN\t${m}`),
    error: (m) => out(`${ts()}\tERROR\t${m}`),
  };
}

/** The embedded etcd server's logger. */
export function newEtcdLogger(opts: { logDir: string }): Logger {
  const out = sink(opts.logDir, "etcd_server.log", (s) => console.error(s));
  const line = (level: string, c: string, m: string) => out(`${ts()}\t${level}\t${c}: ${m}`);
  return {
    info: (c, m) => line("INFO", c, m),
    warn: (c, m) => line("WARN", c, m),
    error: (c, m) => line("ERROR", c, m),
  };
}
