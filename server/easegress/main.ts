/**
 * `easegress-server`: options → cluster (blocks until usable) → system controllers in the store → admin API
 * (`cmd/server.go`). SIGTERM/SIGINT close the API, the cluster client and the embedded server, then exit 0.
 */
import path from "node:path";
import { flagUsages, OptionError, type Options, parseOptions } from "./options.ts";
import { Cluster, FatalClusterError, layout } from "./cluster.ts";
import { LOG_FILES, newEtcdLogger, newLogger, openLogFile } from "./log.ts";
import { goJsonStringify, newSpec, SYSTEM_CONTROLLERS, systemControllerSpec } from "./objects.ts";
import { startApiServer } from "../api/server.ts";
import { GatewayController, type ObjectStore } from "../gateway/controller.ts";

/** A failed read of a prefix filters follow is retried this often. */
const PREFIX_RETRY_MS = 5_000;

/** The gateway's view of the store: objects under /config/objects/, status keys under the member lease. */
function gatewayStore(cls: Cluster, log: { info(msg: string): void }): ObjectStore {
  return {
    list: async () => {
      const out = new Map<string, string>();
      for (const [k, v] of await cls.getPrefix(layout.configObjectPrefix)) {
        out.set(k.slice(layout.configObjectPrefix.length), v);
      }
      return out;
    },
    watch: (onChange) =>
      cls.client.watch(layout.configObjectPrefix, { prefix: true }, onChange, (err) => {
        // a broken stream is retried every 200 ms while the store is away: only a compaction is worth a line
        if (/compacted/.test(err.message)) log.info(`gateway: objects watch: ${err.message}; re-reading objects`);
        onChange();
      }),
    watchPrefix: (prefix, onChange) => {
      // every change re-reads the whole prefix (small: credentials), the latest read wins; a failed read is retried
      let closed = false;
      let seq = 0;
      const reload = () => {
        if (closed) return;
        const mine = ++seq;
        cls.getPrefix(prefix).then((kvs) => {
          if (!closed && mine === seq) onChange(kvs);
        }, () => {
          if (!closed && mine === seq) setTimeout(reload, PREFIX_RETRY_MS);
        });
      };
      const w = cls.client.watch(prefix, { prefix: true }, reload, reload);
      reload();
      return {
        close() {
          closed = true;
          w.close();
        },
      };
    },
    writeStatus: async (ops) => {
      await cls.client.putAndDelete(ops, cls.lease);
    },
  };
}

/** The release this implementation follows. */
export const RELEASE = "v2.11.0";

async function initServerDir(opt: Options): Promise<void> {
  for (const d of [opt.AbsHomeDir, opt.AbsDataDir, opt.AbsWALDir, opt.AbsLogDir]) {
    if (d) await Deno.mkdir(d, { recursive: true });
  }
}

/** Writes the four system controllers' specs and the initial objects if their names are absent. */
async function initObjects(cls: Cluster, opt: Options, log: ReturnType<typeof newLogger>): Promise<void> {
  for (const kind of SYSTEM_CONTROLLERS) {
    const spec = systemControllerSpec(kind);
    if ((await cls.get(layout.configObjectKey(spec.name))) === undefined) {
      await cls.put(layout.configObjectKey(spec.name), goJsonStringify(spec.json));
    }
    log.info(`create ${spec.name}`);
  }
  for (const f of opt.InitialObjectConfigFiles ?? []) {
    try {
      const spec = newSpec(await Deno.readTextFile(path.resolve(opt.AbsHomeDir, f)), true);
      if ((await cls.get(layout.configObjectKey(spec.name))) === undefined) {
        await cls.put(layout.configObjectKey(spec.name), goJsonStringify(spec.json));
        log.info(`initial object ${spec.name} created`);
      }
    } catch (err) {
      log.error(`failed to create initial object from ${f}: ${(err as Error).message}`);
    }
  }
}

/** Runs the server until a signal stops it. */
export async function runServer(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseOptions({ args });
  } catch (err) {
    if (err instanceof OptionError) {
      console.error(err.message);
      Deno.exit(1);
    }
    throw err;
  }
  const { opt } = parsed;
  if (opt.ShowVersion) {
    console.log(`Easegress ${RELEASE}`);
    Deno.exit(0);
  }
  if (opt.ShowHelp) {
    console.log(flagUsages());
    Deno.exit(0);
  }
  for (const n of parsed.notices) Deno.stdout.writeSync(new TextEncoder().encode(n));
  if (opt.ShowConfig) Deno.stdout.writeSync(new TextEncoder().encode(parsed.yaml));

  try {
    await initServerDir(opt);
  } catch (err) {
    console.error(`failed to init env: ${(err as Error).message}`);
    Deno.exit(1);
  }
  const log = newLogger(opt);
  const etcdLog = newEtcdLogger(opt);
  log.info(`Easegress release: ${RELEASE}, repo: easegress-ts, commit: unknown`);

  const pidFile = path.join(opt.AbsHomeDir, "easegress.pid");
  if (opt.SignalUpgrade) {
    try {
      const pid = Number((await Deno.readTextFile(pidFile)).trim());
      Deno.kill(pid, "SIGUSR2");
      log.info("graceful upgrade signal sent");
      Deno.exit(0);
    } catch (err) {
      log.error(`failed to read pidfile: ${(err as Error).message}`);
      Deno.exit(1);
    }
  }
  try {
    await Deno.writeTextFile(pidFile, `${Deno.pid}`);
  } catch (err) {
    log.error(`write pidfile failed: ${(err as Error).message}`);
    Deno.exit(1);
  }

  // the data plane serves the objects of its last run before the store answers
  const gateway = new GatewayController({
    member: opt.Name,
    dataDir: opt.AbsDataDir,
    accessLog: opt.DisableAccessLog || !opt.AbsLogDir ? null : openLogFile(opt, LOG_FILES.httpAccess),
    log,
  });
  await gateway.startFromDump();

  let cls: Cluster;
  try {
    cls = await Cluster.start(opt, log, etcdLog);
  } catch (err) {
    if (err instanceof FatalClusterError) {
      console.error(`panic: ${err.message}`);
      Deno.exit(2);
    }
    log.error(`new cluster failed: ${(err as Error).message}`);
    Deno.exit(1);
  }
  try {
    await initObjects(cls, opt, log);
  } catch (err) {
    console.error(`panic: ${(err as Error).message}`);
    Deno.exit(2);
  }
  gateway.attach(gatewayStore(cls, log));
  let api;
  try {
    api = await startApiServer(opt, cls, log);
  } catch (err) {
    log.error(`start api server failed: ${(err as Error).message}`);
    Deno.exit(1);
  }

  let stopping = false;
  const shutdown = async (why = "received signal") => {
    if (stopping) return;
    stopping = true;
    log.info(`${why}, shutting down`);
    await api.close().catch(() => {});
    await gateway.close().catch(() => {});
    await cls.close().catch(() => {});
    log.info("server stopped");
    Deno.exit(0);
  };
  cls.onRemoved = () => shutdown("removed from the cluster"); // a primary: stop as on a signal
  Deno.addSignalListener("SIGTERM", () => shutdown());
  Deno.addSignalListener("SIGINT", () => shutdown());
}
