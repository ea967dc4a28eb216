/**
 * The access log (`<log-dir>/filter_http_access.log`, Easegress's default format). Lines are batched and appended
 * once per FLUSH_MS, so the request path pays a string concatenation, not a write.
 */
import type { GwRequest } from "../context.ts";

/** Where access log lines go: a file of the log dir that rotates itself (server/util/logfile.ts). */
export interface LogSink {
  /** appends whole lines */
  write(text: string): void;
  close(): void;
}

/** Buffered lines are written this often. */
const FLUSH_MS = 500;
/** ...or as soon as this many characters wait. */
const FLUSH_CHARS = 256 * 1024;
/** The URI is cut at this length (with "..."), as Easegress does. */
const MAX_URI = 512;

export class AccessLog {
  #pending = "";
  #timer?: ReturnType<typeof setInterval>;
  #sink: LogSink;

  constructor(sink: LogSink) {
    this.#sink = sink;
    this.#timer = setInterval(() => this.flush(), FLUSH_MS);
  }

  #timeMs = 0;
  #timeText = "";

  /** The line's timestamp (ISO 8601), formatted once per millisecond. */
  #time(): string {
    const now = Date.now();
    if (now !== this.#timeMs) {
      this.#timeMs = now;
      this.#timeText = new Date(now).toISOString();
    }
    return this.#timeText;
  }

  write(
    req: GwRequest,
    target: string,
    status: number,
    ms: number,
    reqBytes: number,
    respBytes: number,
    tags: string[] | undefined,
  ): void {
    const uri = target.length > MAX_URI ? target.slice(0, MAX_URI) + "..." : target;
    this.#pending +=
      `[${this.#time()}] [${req.remoteAddr} ${req.realIp} ${req.method} ${uri} ${req.proto} ${status}] [${
        ms.toFixed(3)
      }ms rx:${reqBytes}B tx:${respBytes}B] [status code: ${status}${
        tags && tags.length > 0 ? " | " + tags.join(" | ") : ""
      }]\n`;
    if (this.#pending.length > FLUSH_CHARS) this.flush();
  }

  flush(): void {
    if (this.#pending === "") return;
    const text = this.#pending;
    this.#pending = "";
    this.#sink.write(text); // never throws: a full disk must not stop traffic
  }

  close(): void {
    clearInterval(this.#timer);
    this.flush();
    this.#sink.close();
  }
}
