/** The server's log: the interface every layer logs through (see zap.ts for the formats and etcd's logging flags). */
import { newLogger } from "./zap.ts";

/**
 * Named values of a line (sizes, rates, durations): keys of zap's JSON object, `[key=value, ...]` after a capnslog
 * message.
 */
export type LogFields = Record<string, string | number | boolean>;

/** Logging functions by level. */
export interface Logger {
  info(component: string, msg: string, fields?: LogFields): void;
  warn(component: string, msg: string, fields?: LogFields): void;
  error(component: string, msg: string, fields?: LogFields): void;
}

/** etcd's default log: `<time> <L> | <component>: <message>` lines (capnslog's shape) on stderr. */
export const stderrLogger: Logger = newLogger({ logger: "capnslog", level: "info", outputs: ["stderr"] });
