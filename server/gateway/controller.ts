/**
 * The gateway controller of one member: the only part of the data plane that talks to the store. It re-reads
 * /config/objects/ after every watch event, every RESYNC_MS and after a broken watch (reconnect, compaction), diffs by
 * spec, and creates / updates / deletes the member's HTTPServers and Pipelines. It writes `running_objects.json` in the
 * data dir after each change and, at start-up, serves from that file before the store answers. While the store is
 * unreachable everything keeps running as it is. Every STATUS_MS it publishes each object's status under
 * /status/objects/eg-traffic-default/<object>/<member>.
 */
import path from "node:path";
import { HttpServer, type HttpServerObject } from "./httpserver/server.ts";
import { Pipeline, type PipelineObject } from "./pipeline/pipeline.ts";
import type { StoreView } from "./filters/filter.ts";
import { AccessLog, type LogSink } from "./httpserver/accesslog.ts";

/** A stored traffic object: an HTTPServer or a Pipeline, told apart by `kind`. */
type StoredObject = HttpServerObject | PipelineObject;

/** An object's entry in the statuses: its stored spec and its status (Easegress's `{spec, status}`). */
export interface ObjectStatus {
  spec: StoredObject;
  status: Record<string, unknown>;
}

/** Full re-read of the objects this often, besides watch events (a missed event heals within this time). */
export const RESYNC_MS = 10_000;
/** Status publishing period (Easegress: wall-clock multiples of 5 s). */
export const STATUS_MS = 5_000;
/** The namespace traffic objects report their status in. */
export const STATUS_NAMESPACE = "eg-traffic-default";
/** The dump the member serves from after a restart. */
export const DUMP_FILE = "running_objects.json";

/** What the controller needs from the store (implemented by the member on its etcd client). */
export interface ObjectStore {
  /** name → spec JSON of every object under /config/objects/ */
  list(): Promise<Map<string, string>>;
  /** Calls `onChange` after any change under /config/objects/ and after the watch broke and resumed. */
  watch(onChange: () => void): { close(): void };
  /** Follows the keys under a prefix for filters (see StoreView). */
  watchPrefix: StoreView["watchPrefix"];
  /** Puts (value) and deletes (null) status keys in one transaction under the member lease. */
  writeStatus(ops: Record<string, string | null>): Promise<void>;
}

/** Key of an object's status. */
export function statusKey(object: string, member: string): string {
  return `/status/objects/${STATUS_NAMESPACE}/${object}/${member}`;
}

/** Settings of the controller. */
export interface ControllerOptions {
  member: string;
  /** where running_objects.json lives */
  dataDir: string;
  /** where the access log goes (a rotating file of the log dir), or null for none */
  accessLog: LogSink | null;
  log: { info(msg: string): void; error(msg: string): void };
}

/** Runs a member's traffic objects. */
export class GatewayController {
  #opts: ControllerOptions;
  #specs = new Map<string, string>();
  #pipelines = new Map<string, Pipeline>();
  #servers = new Map<string, HttpServer>();
  /** objects whose spec failed to build: name → error */
  #errors = new Map<string, string>();
  #store: ObjectStore | null = null;
  /** filters' prefix watches asked for before the store was attached (objects started from the dump) */
  #pendingWatches: (() => void)[] = [];
  /** the store as filters see it: a watch asked for before `attach` starts then */
  readonly #storeView: StoreView = {
    watchPrefix: (prefix, onChange) => {
      let inner: { close(): void } | null = null;
      let closed = false;
      const start = () => {
        if (!closed) inner = this.#store!.watchPrefix(prefix, onChange);
      };
      if (this.#store !== null) start();
      else this.#pendingWatches.push(start);
      return {
        close() {
          closed = true;
          inner?.close();
        },
      };
    },
  };
  #watch: { close(): void } | null = null;
  #timers: ReturnType<typeof setInterval>[] = [];
  #syncing: Promise<void> | null = null;
  #again = false;
  #published = new Set<string>();
  #accessLog: AccessLog | null;
  #closed = false;
  readonly lookup = (name: string) => this.#pipelines.get(name);

  constructor(opts: ControllerOptions) {
    this.#opts = opts;
    this.#accessLog = opts.accessLog === null ? null : new AccessLog(opts.accessLog);
  }

  get dumpPath(): string {
    return path.join(this.#opts.dataDir, DUMP_FILE);
  }

  /** Starts the objects of running_objects.json (if any); the store is not needed for this. */
  async startFromDump(): Promise<void> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.dumpPath);
    } catch {
      return;
    }
    try {
      const dump = JSON.parse(text) as Record<string, string>;
      this.#opts.log.info(`gateway: serving ${Object.keys(dump).length} objects from ${DUMP_FILE}`);
      await this.apply(new Map(Object.entries(dump)), false);
    } catch (err) {
      this.#opts.log.error(`gateway: ignoring ${this.dumpPath}: ${(err as Error).message}`);
    }
  }

  /** Follows the store from now on. */
  attach(store: ObjectStore): void {
    this.#store = store;
    for (const start of this.#pendingWatches.splice(0)) start();
    this.#watch = store.watch(() => this.resync());
    this.resync();
    this.#timers.push(setInterval(() => this.resync(), RESYNC_MS));
    this.#timers.push(setInterval(() => this.publishStatus().catch(() => {}), STATUS_MS));
  }

  /** Re-reads the objects from the store and applies the difference (coalesces concurrent calls). */
  resync(): Promise<void> {
    if (this.#syncing) {
      this.#again = true;
      return this.#syncing;
    }
    this.#syncing = (async () => {
      do {
        this.#again = false;
        let specs: Map<string, string>;
        try {
          specs = await this.#store!.list();
        } catch (err) {
          this.#opts.log.error(`gateway: reading objects failed (keeps serving): ${(err as Error).message}`);
          return;
        }
        if (this.#closed) return;
        await this.apply(specs, true);
      } while (this.#again && !this.#closed);
    })().finally(() => (this.#syncing = null));
    return this.#syncing;
  }

  /** Applies a full set of object specs (name → JSON): deletes, then creates and updates. */
  async apply(all: Map<string, string>, dump: boolean): Promise<void> {
    const next = new Map<string, string>();
    for (const [name, json] of all) {
      try {
        const kind = JSON.parse(json).kind;
        if (kind === "HTTPServer" || kind === "Pipeline") next.set(name, json);
      } catch { /* not an object we run */ }
    }
    let changed = false;
    for (const name of [...this.#specs.keys()]) {
      if (!next.has(name)) {
        await this.#delete(name);
        changed = true;
      }
    }
    // pipelines first, so that a new server finds its backend at once
    const order = [...next].sort(([, a], [, b]) => kindRank(a) - kindRank(b));
    for (const [name, json] of order) {
      if (this.#specs.get(name) === json) continue;
      await this.#upsert(name, json);
      changed = true;
    }
    if (changed && dump) await this.#dump();
  }

  async #delete(name: string): Promise<void> {
    this.#specs.delete(name);
    this.#errors.delete(name);
    const p = this.#pipelines.get(name);
    if (p) {
      this.#pipelines.delete(name);
      p.close();
    }
    const s = this.#servers.get(name);
    if (s) {
      this.#servers.delete(name);
      await s.close(1000);
    }
    this.#opts.log.info(`gateway: deleted ${name}`);
  }

  async #upsert(name: string, json: string): Promise<void> {
    const spec: StoredObject = JSON.parse(json);
    const log = (m: string) => this.#opts.log.error(m);
    const prevKind = this.#pipelines.has(name) ? "Pipeline" : this.#servers.has(name) ? "HTTPServer" : "";
    if (prevKind !== "" && prevKind !== spec.kind) await this.#delete(name);
    this.#specs.set(name, json);
    this.#errors.delete(name);
    try {
      if (spec.kind === "Pipeline") {
        const p = new Pipeline(spec as PipelineObject, log, this.#storeView);
        const old = this.#pipelines.get(name);
        this.#pipelines.set(name, p);
        old?.close();
      } else {
        const old = this.#servers.get(name);
        const server = spec as HttpServerObject;
        if (old && HttpServer.isLiveChange(old.spec, server)) old.updateLive(server);
        else {
          if (old) {
            this.#servers.delete(name);
            await old.close();
          }
          this.#servers.set(name, new HttpServer(server, this.lookup, log, this.#accessLog));
        }
      }
      this.#opts.log.info(`gateway: ${prevKind ? "updated" : "created"} ${spec.kind} ${name}`);
    } catch (err) {
      this.#errors.set(name, (err as Error).message);
      this.#opts.log.error(`gateway: ${spec.kind} ${name}: ${(err as Error).message}`);
    }
  }

  async #dump(): Promise<void> {
    const out: Record<string, string> = {};
    for (const [n, j] of this.#specs) out[n] = j;
    const tmp = this.dumpPath + ".tmp";
    try {
      await Deno.mkdir(this.#opts.dataDir, { recursive: true });
      await Deno.writeTextFile(tmp, JSON.stringify(out, null, 2));
      await Deno.rename(tmp, this.dumpPath);
    } catch (err) {
      this.#opts.log.error(`gateway: writing ${DUMP_FILE} failed: ${(err as Error).message}`);
    }
  }

  /** Status of every running object in Easegress's shape (`{spec, status}`). */
  statuses(): Map<string, ObjectStatus> {
    const out = new Map<string, ObjectStatus>();
    for (const [name, json] of this.#specs) {
      const spec: StoredObject = JSON.parse(json);
      const err = this.#errors.get(name);
      let status: Record<string, unknown>;
      if (err !== undefined) status = { health: err, state: "failed", error: err };
      else if (spec.kind === "Pipeline") status = this.#pipelines.get(name)?.status() ?? {};
      else status = this.#servers.get(name)?.status() ?? {};
      out.set(name, { spec, status });
    }
    return out;
  }

  /** Writes every object's status (and deletes those of objects gone since the last round). */
  async publishStatus(): Promise<void> {
    if (!this.#store) return;
    const ops: Record<string, string | null> = {};
    const now = Math.floor(Date.now() / 1000);
    const current = new Set<string>();
    for (const [name, st] of this.statuses()) {
      const key = statusKey(name, this.#opts.member);
      current.add(key);
      ops[key] = JSON.stringify({ ...st, timestamp: now });
    }
    for (const k of this.#published) if (!current.has(k)) ops[k] = null;
    if (Object.keys(ops).length === 0) return;
    await this.#store.writeStatus(ops);
    this.#published = current;
  }

  /** Stops everything (listeners close gracefully, at most `graceMs`). */
  async close(graceMs = 1000): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.#watch?.close();
    await Promise.all([...this.#servers.values()].map((s) => s.close(graceMs)));
    for (const p of this.#pipelines.values()) p.close();
    this.#accessLog?.close();
  }
}

function kindRank(json: string): number {
  return json.includes('"kind":"Pipeline"') ? 0 : 1;
}
