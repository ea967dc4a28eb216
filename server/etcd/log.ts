/** The server's log: the interface every layer logs through (see zap.ts for the formats and etcd's logging flags). */
import { newLogger } from "./zap.ts";

/** Logging functions by level. */
export interface Logger {
  info(component: string, msg: string): void;
  warn(component: string, msg: string): void;
  error(component: string, msg: string): void;
}

/** etcd's default log: `<time> <L> | <component>: <message>` lines (capnslog's shape) on stderr. */
export const stderrLogger: Logger = newLogger({ logger: "capnslog", level: "info", outputs: ["stderr"] });
