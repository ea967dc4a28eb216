/**
 * easegress-server's logs, as Easegress v2.11 writes them (`pkg/logger`). Without a log dir: the member's log on
 * stdout, the embedded etcd server's on stderr, no access logs. With `--log-dir`, these files in it:
 *
 * - `stdout.log`: the member's log, zap's console shape (`<time>\t<LEVEL>\t<message>`), also copied to stderr;
 * - `etcd_server.log`: the embedded etcd server's log, etcd's zap JSON lines (progress of snapshots, WAL replay …);
 * - `admin_api.log`: one line per admin API request (`GET <remote> <path> <code> rx:<n>B tx:<n>B start:<time>
 *   process:<duration>`), unless `--disable-access`;
 * - `filter_http_access.log`: the traffic access log (server/gateway/httpserver/accesslog.ts), unless
 *   `--disable-access`.
 *
 * Every file rotates itself by size and keeps backups by age and count (`--log-max-size` MB, `--log-max-age` days,
 * `--log-max-backups`; ours: Easegress only reopens its files on SIGHUP, which these do too, for logrotate).
 */
import path from "node:path";
import type { Logger } from "../etcd/log.ts";
import { lineLogger } from "../etcd/zap.ts";
import { LogFile, reopenLogFilesOnHangup, type RotationPolicy } from "../util/logfile.ts";
import type { Options } from "./options.ts";

/** Easegress's file names in the log dir. */
export const LOG_FILES = {
  stdout: "stdout.log",
  etcdServer: "etcd_server.log",
  adminApi: "admin_api.log",
  httpAccess: "filter_http_access.log",
} as const;

/** Levelled logger, and the admin API's access log. */
export interface EgLogger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  /** one admin API request (a no-op without a log dir or with --disable-access) */
  apiAccess(line: string): void;
}

const MB = 1024 * 1024;
const DAY_MS = 24 * 3600 * 1000;

/** The rotation the options ask for. */
export function rotationOf(opt: Options): RotationPolicy {
  return { maxBytes: opt.LogMaxSize * MB, maxAgeMs: opt.LogMaxAge * DAY_MS, maxBackups: opt.LogMaxBackups };
}

/** A rotating file of the log dir, reopened on SIGHUP. */
export function openLogFile(opt: Options, name: string): LogFile {
  reopenLogFilesOnHangup();
  return new LogFile(path.join(opt.AbsLogDir, name), rotationOf(opt));
}

const encoder = new TextEncoder();
const toStdout = (s: string) => Deno.stdout.writeSync(encoder.encode(s));
const toStderr = (s: string) => Deno.stderr.writeSync(encoder.encode(s));

/** The member's logger (and admin API access log). */
export function newLogger(opt: Options): EgLogger {
  const file = opt.AbsLogDir ? openLogFile(opt, LOG_FILES.stdout) : null;
  // Easegress tees the default logger to stderr when it writes to a file
  const out = file
    ? (line: string) => {
      file.write(line);
      toStderr(line);
    }
    : toStdout;
  const api = opt.AbsLogDir && !opt.DisableAccessLog ? openLogFile(opt, LOG_FILES.adminApi) : null;
  const line = (level: string, m: string) => out(`${new Date().toISOString()}\t${level}\t${m}\n`);
  return {
    debug: (m) => opt.Debug && line("DEBUG", m),
    info: (m) => line("INFO", m),
    warn: (m) => line("WARN", m),
    error: (m) => line("ERROR", m),
    apiAccess: (l) => api?.write(l + "\n"),
  };
}

/** The embedded etcd server's logger: zap JSON lines (Easegress runs it with `Logger: "zap"`). */
export function newEtcdLogger(opt: Options): Logger {
  const file = opt.AbsLogDir ? openLogFile(opt, LOG_FILES.etcdServer) : null;
  return lineLogger("zap", "info", [file ? (l) => file.write(l + "\n") : (l) => toStderr(l + "\n")]);
}
