/**
 * The cluster layer of one Easegress member (Easegress `pkg/cluster`): a primary runs the embedded etcd-compatible
 * server and is a voter, a secondary is only a client of the primaries (or of a standalone etcd). Both then hold an
 * etcd client, a member lease published under /leases/<name>, a heartbeat writing the MemberStatus JSON under
 * /status/members/<name> every 5 s, and the admin-write mutex /config/lock.
 *
 * Start-up blocks until the cluster is usable: the first attempt runs synchronously, then it retries every 5 s with
 * Easegress's messages.
 */
import path from "node:path";
import { EtcdClient, type KeyValue } from "../etcdclient/client.ts";
import type { EtcdConfig } from "../etcd/flags.ts";
import { type EtcdServer, startEtcd, WalDamagedError } from "../etcd/server.ts";
import { hexId } from "../etcd/ids.ts";
import type { Logger } from "../etcd/log.ts";
import { type Options, optionsJson, peerUrls, type StoredOptions } from "./options.ts";
import { parseGoDuration, rfc3339 } from "./gotime.ts";
import { HEARTBEAT_INTERVAL_MS } from "./liveness.ts";
import type { EgLogger } from "./log.ts";
import { pathExists } from "../util/files.ts";
import { promoteWhenCaughtUp, removePrimary } from "./primaries.ts";

/** clientv3.MaxLeaseTTL, the member lease's TTL: in effect it never expires. */
export const LEASE_TTL = 9_000_000_000;
const MIN_TTL = 5;
const AUTO_SYNC_INTERVAL_MS = 60_000;
/** How long a removed primary tries to revoke its own lease before it stops anyway (the remover revokes it too). */
const REMOVED_REVOKE_TIMEOUT_MS = 3000;

/** Key layout (`pkg/cluster/layout.go`). */
export const layout = {
  clusterNameKey: "/eg/cluster/name",
  lease: (member: string) => `/leases/${member}`,
  statusMemberPrefix: "/status/members/",
  statusMemberKey: (member: string) => `/status/members/${member}`,
  configObjectPrefix: "/config/objects/",
  configObjectKey: (name: string) => `/config/objects/${name}`,
  configVersion: "/config/version",
  configLockPrefix: "/config/lock/",
  statusObjectsPrefix: "/status/objects/",
  statusObjectPrefix: (ns: string, name: string) => `/status/objects/${ns}/${name}/`,
  customDataKindPrefix: "/custom-data-kinds/",
};

/** `etcd` part of MemberStatus (primaries only). */
export interface EtcdStatus {
  id: string;
  startTime: string;
  state: string;
}

/** What /status/members/<name> holds. */
export interface MemberStatus {
  options: StoredOptions;
  lastHeartbeatTime: string;
  lastDefragTime?: string;
  etcd?: EtcdStatus;
}

/** Raft state of the embedded server as Easegress reports it: Leader, Follower, Candidate or PreCandidate. */
export function etcdRaftState(server: EtcdServer): string {
  return server.node.raftState();
}

/** The embedded etcd configuration of a primary (`CreateStaticClusterEtcdConfig`). */
export function etcdConfigOf(opt: Options): EtcdConfig {
  const initial = new Map<string, string[]>();
  for (const [name, url] of Object.entries(opt.Cluster.InitialCluster ?? {})) initial.set(name, [url]);
  return {
    name: opt.Name,
    dataDir: opt.AbsDataDir,
    walDir: opt.AbsWALDir,
    listenClientUrls: opt.Cluster.ListenClientURLs ?? [],
    advertiseClientUrls: opt.Cluster.AdvertiseClientURLs ?? [],
    listenPeerUrls: opt.Cluster.ListenPeerURLs ?? [],
    initialAdvertisePeerUrls: opt.Cluster.InitialAdvertisePeerURLs ?? [],
    initialCluster: initial,
    initialClusterToken: opt.ClusterName,
    initialClusterState: opt.Cluster.StateFlag === "existing" ? "existing" : "new",
    snapshotCount: 5000,
    quotaBackendBytes: 8 * 1024 * 1024 * 1024,
    maxRequestBytes: 10 * 1024 * 1024,
    maxTxnOps: 10240,
    strictReconfigCheck: true,
    heartbeatMs: 100,
    electionMs: 1000,
    autoCompactionMode: "revision",
    autoCompactionRetention: "10",
    watchProgressNotifyMs: 10 * 60 * 1000,
    clientTls: null,
    peerTls: null,
    forceRepairWal: opt.ForceRepairWAL,
    ignored: [],
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One member's view of the cluster. */
export class Cluster {
  readonly opt: Options;
  readonly requestTimeoutMs: number;
  #log: EgLogger;
  #etcdLog: Logger;
  #server?: EtcdServer;
  #client?: EtcdClient;
  #lease?: string;
  #timers: ReturnType<typeof setInterval>[] = [];
  #closed = false;
  #leaseBusy?: Promise<void>;

  constructor(opt: Options, log: EgLogger, etcdLog: Logger) {
    this.opt = opt;
    this.#log = log;
    this.#etcdLog = etcdLog;
    this.requestTimeoutMs = parseGoDuration(opt.ClusterRequestTimeout);
  }

  /** cluster.New: resolves once the cluster is usable, retrying every 5 s. */
  static async start(opt: Options, log: EgLogger, etcdLog: Logger): Promise<Cluster> {
    if (peerUrls(opt).length === 0) throw new Error("invalid empty peer urls");
    const c = new Cluster(opt, log, etcdLog);
    let tries = 1;
    try {
      await c.#getReady();
    } catch (err) {
      if (err instanceof FatalClusterError) throw err;
      log.error(`start cluster failed (${tries} retries): ${(err as Error).message}`);
      while (true) {
        await sleep(HEARTBEAT_INTERVAL_MS);
        if (c.#closed) throw new Error("cluster closed");
        tries++;
        try {
          await c.#getReady();
          break;
        } catch (err2) {
          if (err2 instanceof FatalClusterError) throw err2;
          log.error(
            `failed start many times(${tries}), start others if they're not online, otherwise purge this member, ` +
              `clean data directory and rejoin it back.`,
          );
        }
      }
    }
    log.info("cluster is ready");
    const server = c.#server;
    if (server) {
      server.node.onRemoved = () => c.#removed();
      void promoteWhenCaughtUp({
        isLearner: () => server.node.members.get(server.memberId)?.isLearner ?? false,
        promote: () => c.client.memberPromote(server.memberId),
        stopped: () => c.#closed,
      }, log);
    }
    // beat at once, so that a member that has just (re)started is not shown offline for a heartbeat period
    c.syncStatus().catch((err) => log.error(`sync status failed: ${(err as Error).message}`));
    c.#every(
      HEARTBEAT_INTERVAL_MS,
      () => c.syncStatus().catch((err) => log.error(`sync status failed: ${(err as Error).message}`)),
    );
    return c;
  }

  #every(ms: number, fn: () => void): void {
    const t = setInterval(() => {
      if (!this.#closed) fn();
    }, ms);
    this.#timers.push(t);
  }

  async #getReady(): Promise<void> {
    if (this.opt.ClusterRole === "primary" && !this.#server) {
      const cfg = etcdConfigOf(this.opt);
      if (!cfg.initialCluster.has(cfg.name)) {
        throw new FatalClusterError(`couldn't find local name "${cfg.name}" in the initial cluster configuration`);
      }
      const walDir = cfg.walDir || path.join(cfg.dataDir, "member", "wal");
      const isNewCluster = cfg.initialClusterState === "new" && !(await pathExists(walDir));
      this.#log.info(
        `etcd config: advertise-client-urls: [${cfg.advertiseClientUrls.join(" ")}] advertise-peer-urls: [${
          cfg.initialAdvertisePeerUrls.join(" ")
        }] init-cluster: ${
          [...cfg.initialCluster].map(([n, u]) => `${n}=${u.join(",")}`).join(",")
        } cluster-state: ${cfg.initialClusterState} force-new-cluster: ${this.opt.ForceNewCluster}`,
      );
      try {
        this.#server = await startEtcd(cfg, this.#etcdLog);
      } catch (err) {
        // a damaged WAL stays damaged: no point retrying
        if (err instanceof WalDamagedError) throw new FatalClusterError(`start server failed: ${err.message}`);
        throw new Error(`start server failed: ${(err as Error).message}`);
      }
      await this.#getClient();
      if (isNewCluster) await this.#client!.put(layout.clusterNameKey, this.opt.ClusterName);
      this.#log.info("server is ready");
    } else {
      await this.#getClient();
    }
    if (this.opt.ClusterRole === "secondary") await this.#checkClusterName();
    try {
      await this.#initLease();
    } catch (err) {
      throw new Error(`init lease failed: ${(err as Error).message}`);
    }
    if (!this.#timers.length) this.#every(this.requestTimeoutMs, () => this.#keepAliveLease());
  }

  async #getClient(): Promise<EtcdClient> {
    if (this.#client) return this.#client;
    const endpoints = peerUrls(this.opt);
    this.#log.info(`client connect with endpoints: [${endpoints.join(" ")}]`);
    try {
      this.#client = await EtcdClient.connect({
        endpoints,
        requestTimeoutMs: this.requestTimeoutMs,
        maxCallSendMsgSize: this.opt.Cluster.MaxCallSendMsgSize,
        autoSyncIntervalMs: AUTO_SYNC_INTERVAL_MS,
        ...etcdUser(),
      });
    } catch (err) {
      throw new Error(`create client failed: ${(err as Error).message}`);
    }
    this.#log.info("client is ready");
    return this.#client;
  }

  async #checkClusterName(): Promise<void> {
    let value: string | undefined;
    try {
      value = await this.get(layout.clusterNameKey);
    } catch (err) {
      throw new Error(`failed to check cluster name: ${(err as Error).message}`);
    }
    if (value !== undefined) {
      if (value !== this.opt.ClusterName) {
        const msg = `cluster names mismatch, local(${this.opt.ClusterName}) != existed(${value})`;
        this.#log.error(msg);
        throw new FatalClusterError(msg);
      }
    } else if (this.opt.UseStandaloneEtcd) {
      try {
        await this.put(layout.clusterNameKey, this.opt.ClusterName);
      } catch (err) {
        throw new Error(`register cluster name ${this.opt.ClusterName} failed: ${(err as Error).message}`);
      }
    } else {
      throw new Error(`key ${layout.clusterNameKey} not found`);
    }
  }

  async #initLease(): Promise<void> {
    const client = this.client;
    const leaseStr = await this.get(layout.lease(this.opt.Name));
    if (leaseStr !== undefined) {
      if (!/^-?[0-9a-fA-F]+$/.test(leaseStr)) throw new Error(`parse lease ${leaseStr} failed`);
      const id = BigInt("0x" + leaseStr).toString();
      let ttl = -1;
      try {
        ttl = await client.leaseTimeToLive(id);
      } catch { /* grant a new one */ }
      if (ttl >= MIN_TTL) {
        this.#lease = id;
        this.#log.info(`lease is ready(use existed one: ${leaseStr})`);
        return;
      }
    }
    await this.#grantNewLease();
  }

  async #grantNewLease(): Promise<void> {
    const client = this.client;
    const id = await client.leaseGrant(LEASE_TTL);
    try {
      await client.put(layout.lease(this.opt.Name), hexId(id), id);
    } catch (err) {
      await client.leaseRevoke(id).catch(() => {});
      throw new Error(`put lease to ${layout.lease(this.opt.Name)} failed: ${(err as Error).message}`);
    }
    this.#lease = id;
    this.#log.info(`lease is ready (grant new one: ${hexId(id)})`);
  }

  async #keepAliveLease(): Promise<void> {
    if (this.#leaseBusy) return;
    const run = async () => {
      const id = this.#lease;
      try {
        if (!id) throw new Error("lease not ready");
        await this.client.leaseKeepAliveOnce(id);
      } catch (err) {
        this.#log.error(`keep alive for lease ${id ? hexId(id) : "0"} failed: ${(err as Error).message}`);
        if (this.#closed) return; // stopping (or removed): no new lease
        try {
          await this.#grantNewLease();
        } catch (e) {
          this.#log.error(`grant new lease failed: ${(e as Error).message}`);
          return;
        }
        // Unlike Go, move what hung on the old lease over at once: re-publish the status under the new lease and
        // revoke the old one, so that a later purge (which revokes the lease named in /leases/<name>) removes
        // everything of this member.
        await this.syncStatus().catch(() => {});
        if (id) await this.client.leaseRevoke(id).catch(() => {});
      }
    };
    this.#leaseBusy = run().finally(() => (this.#leaseBusy = undefined));
    await this.#leaseBusy;
  }

  /** The etcd client (after start). */
  get client(): EtcdClient {
    if (!this.#client) throw new Error("cluster client is not ready");
    return this.#client;
  }

  /** The member lease ID (decimal). */
  get lease(): string {
    if (!this.#lease) throw new Error("lease is not ready");
    return this.#lease;
  }

  /** The embedded server of a primary. */
  get server(): EtcdServer | undefined {
    return this.#server;
  }

  /** IsLeader(): the embedded server leads the Raft group (always false on secondaries). */
  isLeader(): boolean {
    return this.#server !== undefined && etcdRaftState(this.#server) === "Leader";
  }

  /** This member's MemberStatus right now. */
  memberStatus(): MemberStatus {
    const status: MemberStatus = { options: optionsJson(this.opt), lastHeartbeatTime: "" };
    if (this.opt.ClusterRole === "primary" && this.#server) {
      status.etcd = {
        id: hexId(this.#server.memberId),
        startTime: rfc3339(this.#server.startTime),
        state: etcdRaftState(this.#server),
      };
    }
    status.lastHeartbeatTime = rfc3339(new Date());
    // Go field order: options, lastHeartbeatTime, lastDefragTime (omitted when empty), etcd
    return status.etcd
      ? { options: status.options, lastHeartbeatTime: status.lastHeartbeatTime, etcd: status.etcd }
      : { options: status.options, lastHeartbeatTime: status.lastHeartbeatTime };
  }

  /** syncStatus(): one heartbeat. */
  async syncStatus(): Promise<void> {
    try {
      await this.putUnderLease(layout.statusMemberKey(this.opt.Name), JSON.stringify(this.memberStatus()));
    } catch (err) {
      throw new Error(`put status failed: ${(err as Error).message}`);
    }
  }

  /** Value of a key or undefined. */
  async get(key: string): Promise<string | undefined> {
    return (await this.client.get(key))?.value;
  }

  /** Raw key-value (with revisions). */
  getRaw(key: string): Promise<KeyValue | undefined> {
    return this.client.get(key);
  }

  /** key → value for every key under the prefix. */
  async getPrefix(prefix: string): Promise<Map<string, string>> {
    const kvs = await this.client.getPrefix(prefix);
    return new Map(kvs.map((kv) => [kv.key, kv.value]));
  }

  /** Put. */
  async put(key: string, value: string): Promise<void> {
    await this.client.put(key, value);
  }

  /** Put attached to the member lease. */
  async putUnderLease(key: string, value: string): Promise<void> {
    await this.client.put(key, value, this.lease);
  }

  /** Delete. */
  async delete(key: string): Promise<void> {
    await this.client.delete(key);
  }

  /** Delete every key under a prefix. */
  async deletePrefix(prefix: string): Promise<void> {
    await this.client.deletePrefix(prefix);
  }

  /**
   * PurgeMember: remove the primary of that name (if any) from the Raft membership, refusing when that could lose
   * the quorum (see primaries.ts), and revoke the member's lease, which deletes its status.
   */
  async purgeMember(name: string): Promise<void> {
    const wasPrimary = await removePrimary(this, name);
    const leaseKey = layout.lease(name);
    const leaseStr = await this.get(leaseKey);
    if (leaseStr === undefined) {
      if (wasPrimary) return; // a member added but never started has no lease
      throw new Error(`${leaseKey} not found`);
    }
    if (!/^[0-9a-fA-F]+$/.test(leaseStr)) throw new Error(`strconv.ParseInt: parsing ${JSON.stringify(leaseStr)}`);
    try {
      await this.client.leaseRevoke(BigInt("0x" + leaseStr).toString());
    } catch (err) {
      // a removed primary revokes its own lease as it stops: it may have done so since the read above
      if (!(wasPrimary && /requested lease not found/.test((err as Error).message))) throw err;
    }
  }

  /**
   * The cluster mutex `/config/lock` (concurrency.Mutex on the member session): waits until this member's key is
   * the oldest under the prefix, for at most the request timeout.
   */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const key = `${layout.configLockPrefix}${hexId(this.lease)}`;
    const deadline = Date.now() + this.requestTimeoutMs;
    // one holder per member: serialise local callers first
    const prev = this.#localLock;
    let release!: () => void;
    this.#localLock = new Promise<void>((r) => (release = r));
    await prev;
    try {
      await this.client.putAndDelete({ [key]: "" }, this.lease, { [key]: 0 });
      while (true) {
        const kvs = await this.client.getPrefix(layout.configLockPrefix);
        const mine = kvs.find((kv) => kv.key === key);
        if (!mine) await this.client.putAndDelete({ [key]: "" }, this.lease, { [key]: 0 });
        const older = kvs.filter((kv) => mine && kv.createRevision < mine.createRevision);
        if (mine && older.length === 0) break;
        if (Date.now() > deadline) throw new Error("context deadline exceeded");
        await sleep(50);
      }
      return await fn();
    } finally {
      await this.client.delete(key).catch(() => {});
      release();
    }
  }
  #localLock: Promise<void> = Promise.resolve();

  /** Called once this primary has been removed from the cluster and gave up its lease: the member shuts down. */
  onRemoved: () => void = () => Deno.exit(0);

  /** This primary left the membership: stop beating, revoke its lease (its status goes with it), then shut down. */
  async #removed(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.#log.warn("this member has been removed from the cluster; shutting down");
    await this.#leaseBusy;
    const lease = this.#lease;
    if (lease) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.client.leaseRevoke(lease).catch(() => {}),
        new Promise((r) => (timer = setTimeout(r, REMOVED_REVOKE_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
    }
    this.onRemoved();
  }

  /** Stops heartbeats and the lease keep-alive, closes the client and the embedded server. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.#client?.close();
    if (this.#server) await this.#server.stop();
  }
}

/** A start-up error that must not be retried (Go panics). */
export class FatalClusterError extends Error {}

/**
 * The etcd user the member's client authenticates as when the cluster has etcd auth enabled: EASEGRESS_ETCD_USER
 * holds "name:password" (etcdctl's --user form). Easegress has no such option; this one is ours.
 */
export function etcdUser(env = Deno.env.get("EASEGRESS_ETCD_USER")): { username?: string; password?: string } {
  if (!env) return {};
  const i = env.indexOf(":");
  return i < 0 ? { username: env, password: "" } : { username: env.slice(0, i), password: env.slice(i + 1) };
}
