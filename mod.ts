/**
 * The single executable's entry point. Subcommands:
 *   etcd     a drop-in etcd server that takes etcd's own flags
 *   server   easegress-server: one Easegress cluster member (primary or secondary), with its admin API
 *   egctl    the Easegress admin CLI
 * An executable named `easegress-server` runs `server` and one named `egctl` runs `egctl` (argv[0] rule), so one
 * binary can be installed under both names.
 */
import { FlagError, parseEtcdFlags } from "./server/etcd/flags.ts";
import { startEtcd } from "./server/etcd/server.ts";
import { LogFlagError, newLogger, splitLogFlags } from "./server/etcd/zap.ts";
import { tuneMalloc } from "./server/util/malloc.ts";
import path from "node:path";
import process from "node:process";

const USAGE = `usage: easegress <command> [flags]

commands:
  etcd [etcd flags]   run a drop-in etcd v3 server (see --help of etcd for the flags)
  server [flags]      run an Easegress member (easegress-server; see server --help)
  egctl [command]     the Easegress admin CLI (see egctl --help)
`;

/** The command an executable's own name selects: `egctl` or `easegress-server`, else none. */
function commandOfExecutable(): string | undefined {
  const names = [process.argv0, Deno.execPath()].map((p) => path.basename(p ?? "").replace(/\.exe$/, ""));
  if (names.includes("egctl")) return "egctl";
  if (names.includes("easegress-server")) return "server";
  return undefined;
}

async function runEtcd(args: string[]): Promise<void> {
  let cfg, log;
  try {
    const { opts, rest } = splitLogFlags(args);
    log = newLogger(opts);
    cfg = parseEtcdFlags(rest);
  } catch (err) {
    if (err instanceof FlagError || err instanceof LogFlagError) {
      console.error(`etcd: ${err.message}`);
      Deno.exit(1);
    }
    throw err;
  }
  let server;
  try {
    server = await startEtcd(cfg, log);
  } catch (err) {
    log.error("etcdmain", err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    log.info("etcdmain", "received signal, shutting down");
    await server.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", shutdown);
  Deno.addSignalListener("SIGINT", shutdown);
}

if (import.meta.main) {
  const byName = commandOfExecutable();
  const [cmd, ...rest] = byName ? [byName, ...Deno.args] : Deno.args;
  switch (cmd) {
    case "etcd":
      tuneMalloc();
      await runEtcd(rest);
      break;
    case "server": {
      tuneMalloc();
      const { runServer } = await import("./server/easegress/main.ts");
      await runServer(rest);
      break;
    }
    case "egctl": {
      const { egctl } = await import("./cli/egctl.ts");
      Deno.exit(await egctl(rest));
      break;
    }
    case "-h":
    case "--help":
    case "help":
    case undefined:
      console.log(USAGE);
      break;
    default:
      console.error(`unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
      Deno.exit(1);
  }
}
