/**
 * The single executable's entry point. Subcommands:
 *   etcd     a drop-in etcd server that takes etcd's own flags
 * (the Easegress `server` and `egctl` subcommands come next)
 */
import { FlagError, parseEtcdFlags } from "./server/etcd/flags.ts";
import { startEtcd } from "./server/etcd/server.ts";
import { stderrLogger } from "./server/etcd/log.ts";

const USAGE = `usage: easegress <command> [flags]

commands:
  etcd [etcd flags]   run a drop-in etcd v3 server (see --help of etcd for the flags)
`;

async function runEtcd(args: string[]): Promise<void> {
  let cfg;
  try {
    cfg = parseEtcdFlags(args);
  } catch (err) {
    if (err instanceof FlagError) {
      console.error(`etcd: ${err.message}`);
      Deno.exit(1);
    }
    throw err;
  }
  let server;
  try {
    server = await startEtcd(cfg, stderrLogger);
  } catch (err) {
    stderrLogger.error("etcdmain", err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    stderrLogger.info("etcdmain", "received signal, shutting down");
    await server.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", shutdown);
  Deno.addSignalListener("SIGINT", shutdown);
}

if (import.meta.main) {
  const [cmd, ...rest] = Deno.args;
  switch (cmd) {
    case "etcd":
      await runEtcd(rest);
      break;
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
