/**
 * A log file that rotates itself. When a write would take the file past `maxBytes`, the file is renamed to
 * `<name>-<UTC time>.<ext>` (lumberjack's backup names, e.g. `stdout-2026-12-05T13-20-00.000.log`) and a new one is
 * started; backups older than `maxAgeMs`, and all but the newest `maxBackups`, are then deleted (0: no such limit).
 * `reopen()` closes and reopens the file by name, as Easegress does on SIGHUP, so an external logrotate that moved it
 * away works too ({@link reopenLogFilesOnHangup}).
 *
 * Writes are synchronous and whole lines: a line is never split between two files. A write that fails (full disk,
 * removed directory) goes to stderr instead: logging never stops the server.
 */
import { basename, dirname, extname, join } from "node:path";

/** When to rotate and what to keep; 0 disables a limit. */
export interface RotationPolicy {
  /** rotate before a write that would take the file past this size */
  maxBytes: number;
  /** delete backups whose name's time is older than this */
  maxAgeMs: number;
  /** keep at most this many backups (newest first) */
  maxBackups: number;
}

/** No rotation: the file grows until something outside moves it (then `reopen()`). */
export const NO_ROTATION: RotationPolicy = { maxBytes: 0, maxAgeMs: 0, maxBackups: 0 };

const encoder = new TextEncoder();

/** `t` as a backup name's time: UTC, `-` for `:` (file names), milliseconds. */
function backupStamp(t: Date): string {
  return t.toISOString().slice(0, 23).replaceAll(":", "-");
}

const STAMP_RE = /^(\d{4}-\d\d-\d\dT\d\d)-(\d\d)-(\d\d\.\d{3})$/;

/** A self-rotating append-only log file. */
export class LogFile {
  #file: Deno.FsFile | null = null;
  #size = 0;
  readonly #base: string;
  readonly #ext: string;
  readonly #dir: string;

  constructor(readonly path: string, readonly policy: RotationPolicy = NO_ROTATION, readonly now = () => new Date()) {
    this.#dir = dirname(this.path);
    this.#ext = extname(this.path);
    this.#base = basename(this.path, this.#ext);
    this.#open();
    this.#prune();
  }

  /** Appends `text` (one or more whole lines), rotating first when it would not fit. */
  write(text: string): void {
    const data = encoder.encode(text);
    try {
      if (this.policy.maxBytes > 0 && this.#size > 0 && this.#size + data.length > this.policy.maxBytes) {
        this.rotate();
      }
      if (!this.#file) this.#open();
      for (let off = 0; off < data.length;) off += this.#file!.writeSync(data.subarray(off));
      this.#size += data.length;
    } catch (err) {
      Deno.stderr.writeSync(encoder.encode(`log file ${this.path}: ${(err as Error).message}\n`));
      Deno.stderr.writeSync(data);
      this.#file?.close();
      this.#file = null; // opened again by the next write
    }
  }

  /** Renames the current file to a backup, starts a new one and deletes the backups the policy does not keep. */
  rotate(): void {
    this.#file?.close();
    this.#file = null;
    let backup = join(this.#dir, `${this.#base}-${backupStamp(this.now())}${this.#ext}`);
    for (let i = 1; exists(backup); i++) {
      backup = join(this.#dir, `${this.#base}-${backupStamp(this.now())}-${i}${this.#ext}`);
    }
    Deno.renameSync(this.path, backup);
    this.#open();
    this.#prune();
  }

  /** Closes the file and opens it again by name (after logrotate moved it away: a new file). */
  reopen(): void {
    this.#file?.close();
    this.#file = null;
    this.#open();
  }

  close(): void {
    this.#file?.close();
    this.#file = null;
    openFiles.delete(this);
  }

  /** The backups of this file, newest first. */
  backups(): { name: string; time: number }[] {
    const out: { name: string; time: number }[] = [];
    const prefix = `${this.#base}-`;
    for (const e of Deno.readDirSync(this.#dir)) {
      if (!e.isFile || !e.name.startsWith(prefix) || !e.name.endsWith(this.#ext)) continue;
      const stamp = e.name.slice(prefix.length, e.name.length - this.#ext.length).replace(/-\d+$/, "");
      const m = STAMP_RE.exec(stamp);
      if (!m) continue;
      const time = Date.parse(`${m[1]}:${m[2]}:${m[3]}Z`);
      if (!Number.isNaN(time)) out.push({ name: e.name, time });
    }
    return out.sort((a, b) => b.time - a.time || (a.name < b.name ? 1 : -1));
  }

  #open(): void {
    this.#file = Deno.openSync(this.path, { append: true, create: true, mode: 0o640 });
    this.#size = this.#file.statSync().size;
    openFiles.add(this);
  }

  #prune(): void {
    const { maxAgeMs, maxBackups } = this.policy;
    if (maxAgeMs <= 0 && maxBackups <= 0) return;
    const oldest = this.now().getTime() - maxAgeMs;
    this.backups().forEach((b, i) => {
      if ((maxBackups > 0 && i >= maxBackups) || (maxAgeMs > 0 && b.time < oldest)) {
        try {
          Deno.removeSync(join(this.#dir, b.name));
        } catch { /* removed meanwhile */ }
      }
    });
  }
}

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

const openFiles = new Set<LogFile>();
let hangupListening = false;

/** Reopens every open LogFile on SIGHUP, as Easegress does for logrotate's `postrotate kill -HUP`. */
export function reopenLogFilesOnHangup(): void {
  if (hangupListening || Deno.build.os === "windows") return;
  hangupListening = true;
  Deno.addSignalListener("SIGHUP", () => {
    for (const f of openFiles) f.reopen();
  });
}
