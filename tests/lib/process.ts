/** A child process for tests whose stdout and stderr are collected into one text, with kill and graceful stop. */

/** A running process with its collected output. */
export interface Proc {
  /** the process ID (for /proc/<pid>/status readings such as VmRSS) */
  pid: number;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  exited(): boolean;
  status: Promise<Deno.CommandStatus>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM, wait; SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/**
 * Spawns `cmd` with stdin closed and collects its output. Once it ended (kill/stop), its output is appended to the file
 * named by $SERVER_LOG, if set, under a line with `tag` and the arguments.
 */
export function spawnProcess(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; tag: string },
): Proc {
  const proc = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let out = "";
  let exited = false;
  const status = proc.status.then((s) => {
    exited = true;
    return s;
  });
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const c of s) out += dec.decode(c, { stream: true });
  };
  const pumps = Promise.all([pump(proc.stdout), pump(proc.stderr)]);
  const signal = (sig: Deno.Signal) => {
    if (exited) return;
    try {
      proc.kill(sig);
    } catch { /* gone */ }
  };
  const end = async (sig: Deno.Signal) => {
    signal(sig);
    await status;
    await pumps;
    const keep = Deno.env.get("SERVER_LOG");
    if (keep) await Deno.writeTextFile(keep, `=== ${opts.tag} ${args.join(" ")}\n${out}\n`, { append: true });
  };
  return {
    pid: proc.pid,
    output: () => out,
    exited: () => exited,
    status,
    kill: () => end("SIGKILL"),
    stop: async () => {
      const t = setTimeout(() => signal("SIGKILL"), 5000);
      await end("SIGTERM");
      clearTimeout(t);
    },
  };
}
