/**
 * The access log (`<log-dir>/filter_http_access.log`, Easegress's default format). Lines are batched and appended
 * once per FLUSH_MS, so the request path pays a string concatenation, not a write.
 */
import type { GwRequest } from "../context.ts";

/** Buffered lines are written this often. */
const FLUSH_MS = 500;
/** ...or as soon as this many characters wait. */
const FLUSH_CHARS = 256 * 1024;
/** The URI is cut at this length (with "..."), as Easegress does. */
const MAX_URI = 512;

export class AccessLog {
  #pending = "";
  #timer?: ReturnType<typeof setInterval>;
  #file: Deno.FsFile | null;
  #encoder = new TextEncoder();

  /** Appends to `path`, or to stdout when path is null. */
  constructor(path: string | null) {
    this.#file = path === null ? null : Deno.openSync(path, { append: true, create: true });
    this.#timer = setInterval(() => this.flush(), FLUSH_MS);
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
    this.#pending += `[${
      new Date().toISOString()
    }] [${req.remoteAddr} ${req.realIp} ${req.method} ${uri} ${req.proto} ${status}] [${
      ms.toFixed(3)
    }ms rx:${reqBytes}B tx:${respBytes}B] [status code: ${status}${
      tags && tags.length > 0 ? " | " + tags.join(" | ") : ""
    }]\n`;
    if (this.#pending.length > FLUSH_CHARS) this.flush();
  }

  flush(): void {
    if (this.#pending === "") return;
    const data = this.#encoder.encode(this.#pending);
    this.#pending = "";
    try {
      if (this.#file) this.#file.writeSync(data);
      else Deno.stdout.writeSync(data);
    } catch { /* a full disk must not stop traffic */ }
  }

  close(): void {
    clearInterval(this.#timer);
    this.flush();
    this.#file?.close();
  }
}
