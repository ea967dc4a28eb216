/** The server's log: one line per event on stderr, `<time> <level> | <component>: <message>` (etcd's capnslog shape). */

/** Logging functions by level. */
export interface Logger {
  info(component: string, msg: string): void;
  warn(component: string, msg: string): void;
  error(component: string, msg: string): void;
}

function line(level: string, component: string, msg: string): void {
  const t = new Date().toISOString().replace("T", " ").replace("Z", "");
  console.error(`${t} ${level} | ${component}: ${msg}`);
}

/** A logger writing to stderr. */
export const stderrLogger: Logger = {
  info: (c, m) => line("I", c, m),
  warn: (c, m) => line("W", c, m),
  error: (c, m) => line("E", c, m),
};
