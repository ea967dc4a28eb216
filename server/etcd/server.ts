/**
 * The etcd-compatible member: opens its storage, serves the etcd v3 gRPC API on every client URL and on the peer
 * URLs (as etcd ≤ 3.5 does) and the Raft service between members on the peer URLs only, expires leases, runs
 * auto-compaction, and logs the readiness lines etcd prints.
 */
import { ClusterService } from "../../proto/mod.ts";
import type { MemberListResponse } from "../../proto/types.ts";
import { hostPort, RaftPeerService } from "../peer/transport.ts";
import { refuseByPolicy, verifiedCertificate } from "../peer/peer_cert.ts";
import { GrpcServer, type ListenerTls } from "../transport/grpc_server.ts";
import { GrpcClient } from "../transport/http2_client.ts";
import { httpEndpoints } from "./http.ts";
import path from "node:path";
import { Node, type NodeConfig } from "../node/node.ts";
import { WalCorruptError } from "../wal/wal.ts";
import { WatchHub } from "../watch/watch_stream.ts";
import { HeaderEncoder } from "../watch/encode.ts";
import { addEtcdServices, type ServiceContext } from "../grpc/services.ts";
import type { Member } from "../membership/members.ts";
import { type EtcdConfig, securityFlags, type TlsFiles } from "./flags.ts";
import tls from "node:tls";
import { clusterIdOf, hexId, memberIdOf } from "./ids.ts";
import { startAutoCompaction } from "./compactor.ts";
import { applyAutoTls } from "./autotls.ts";
import type { Logger } from "./log.ts";
import { AuthGate, DEFAULT_BCRYPT_COST } from "../auth/gate.ts";
import { DEFAULT_SIMPLE_TOKEN_TTL_S, tokenProviderFromFlag } from "../auth/tokens.ts";
import { LeaseExpiry } from "../lease/expiry.ts";

/** The version this server reports (the etcd API level it implements). */
export const SERVER_VERSION = "3.4.23";

/** Who this member is and which members it knows of before it has a log. */
interface Identity {
  clusterId: string;
  memberId: string;
  initialMembers: Member[];
}

/** A new cluster: every ID follows from --initial-cluster and the token, as in etcd. */
function identityFromFlags(cfg: EtcdConfig): Identity {
  const ids = [...cfg.initialCluster].map(([name, urls]) => ({ name, id: memberIdOf(urls, cfg.initialClusterToken) }));
  return {
    memberId: ids.find((m) => m.name === cfg.name)!.id,
    clusterId: clusterIdOf(ids.map((m) => m.id)),
    // the same on every member given the same --initial-cluster: applying the founding entries must not depend on
    // which member applies them (client URLs arrive with each member's published attributes)
    initialMembers: ids.map(({ name, id }) => ({
      ID: id,
      name,
      peerURLs: cfg.initialCluster.get(name)!,
      clientURLs: [],
      isLearner: false,
    })),
  };
}

async function hasWal(dir: string): Promise<boolean> {
  try {
    for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".wal")) return true;
  } catch { /* no dir yet */ }
  return false;
}

/**
 * Asks the other members listed in --initial-cluster (on their peer URLs, which serve the client API too) for the
 * member list, and finds this member by its advertised peer URLs — it must have been added with MemberAdd first.
 */
async function discoverCluster(cfg: EtcdConfig, log: Logger): Promise<Identity> {
  const mine = new Set(cfg.initialAdvertisePeerUrls);
  const peers = [...cfg.initialCluster].filter(([name]) => name !== cfg.name).flatMap(([, urls]) => urls);
  const deadline = Date.now() + 30_000;
  let lastErr = "no other member in --initial-cluster";
  while (Date.now() < deadline) {
    for (const url of peers) {
      try {
        const resp = await memberList(hostPort(url), url.startsWith("https:") ? cfg.peerTls : null);
        const members: Member[] = resp.members;
        const me = members.find((m) => m.peerURLs.some((u) => mine.has(u)));
        if (!me) {
          throw new Error(
            `this member (peer URLs ${[...mine].join(",")}) is not in the cluster's member list: add it with ` +
              "`etcdctl member add` first",
          );
        }
        log.info("etcdserver", `joining cluster ${hexId(resp.header.cluster_id)} as member ${hexId(me.ID)}`);
        return { clusterId: String(resp.header.cluster_id), memberId: me.ID, initialMembers: members };
      } catch (err) {
        lastErr = `${url}: ${(err as Error).message}`;
      }
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`cannot join the existing cluster: ${lastErr}`);
}

/** Asks a member (at its peer URL) for the member list: how a member started with `existing` learns its cluster. */
async function memberList(addr: string, files: TlsFiles | null): Promise<MemberListResponse> {
  const client = new GrpcClient(addr, { tls: tlsClientOptions(files) });
  try {
    const rpc = ClusterService.MemberList;
    // decoded with every field present (CONVERSION's defaults): the shape MemberListResponse names
    return rpc.responseDeserialize(
      await client.unary(rpc.path, rpc.requestSerialize({}), undefined, 2000),
    ) as MemberListResponse;
  } finally {
    client.destroy();
  }
}

/** A running member. */
export interface EtcdServer {
  node: Node;
  /** when this member started */
  startTime: Date;
  memberId: string;
  clusterId: string;
  stop(): Promise<void>;
}

/**
 * Server TLS options from certificate files (null when none are configured). `acceptClient` (peer listeners) refuses
 * a connection once its verified client certificate was seen.
 */
function tlsServerOptions(
  files: TlsFiles | null,
  acceptClient?: (s: tls.TLSSocket) => boolean,
): ListenerTls | undefined {
  if (!files) return undefined;
  return {
    acceptClient,
    cert: Deno.readTextFileSync(files.certFile),
    key: Deno.readTextFileSync(files.keyFile),
    ca: files.trustedCaFile ? Deno.readTextFileSync(files.trustedCaFile) : undefined,
    requestCert: files.clientCertAuth,
    rejectUnauthorized: files.clientCertAuth,
  };
}

/** Client TLS options for dialing peers over https (our certificate and the CA that signs theirs). */
function tlsClientOptions(files: TlsFiles | null): tls.ConnectionOptions | undefined {
  if (!files) return undefined;
  return {
    cert: Deno.readTextFileSync(files.certFile),
    key: Deno.readTextFileSync(files.keyFile),
    ca: files.trustedCaFile ? Deno.readTextFileSync(files.trustedCaFile) : undefined,
    // auto TLS: the other members' certificates are self-signed too (etcd sets InsecureSkipVerify)
    ...(files.selfCert ? { rejectUnauthorized: false } : {}),
  };
}

function splitAddress(addr: string): [string, number] {
  const i = addr.lastIndexOf(":");
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

/** grpc-js bind address for a URL such as http://localhost:2379. */
function bindAddress(u: string): string {
  const x = new URL(u);
  const host = x.hostname.startsWith("[") ? x.hostname : x.hostname;
  return `${host}:${x.port || (x.protocol === "https:" ? "443" : "80")}`;
}

/** Attempts to publish this member's attributes start at most this often. */
const PUBLISH_RETRY_MS = 500;

/** A member's WAL is damaged (not a torn write): start-up refuses, naming the repair flag when it can help. */
export class WalDamagedError extends Error {}

/** Node.open; a damaged WAL becomes a {@link WalDamagedError} that tells how to repair it. */
async function openNode(cfg: NodeConfig): Promise<Node> {
  try {
    return await Node.open(cfg);
  } catch (err) {
    if (!(err instanceof WalCorruptError)) throw err;
    if (!err.repairable) throw new WalDamagedError(err.message);
    throw new WalDamagedError(
      `${err.message}. The log is not cut there on its own: to truncate it at this record (losing what follows; ` +
        `the segment is kept as ${path.basename(err.file)}.broken), start once with --force-repair-wal`,
    );
  }
}

/** A gRPC server with the etcd v3 API and the HTTP/1.1 endpoints (/health, /version, /metrics). */
function etcdApiServer(ctx: ServiceContext, maxRequestBytes: number): GrpcServer {
  // etcd accepts gRPC messages up to the request limit plus 512 KiB of framing
  const server = new GrpcServer({ maxReceiveMessageLength: maxRequestBytes + 512 * 1024 });
  server.setHttp1Handler(httpEndpoints(ctx.node, SERVER_VERSION));
  server.instrument(ctx.node.metrics.grpc);
  addEtcdServices(server, ctx);
  return server;
}

/** Starts a member; resolves once it serves clients. */
export async function startEtcd(flags: EtcdConfig, log: Logger): Promise<EtcdServer> {
  const startTime = new Date();
  // --auto-tls / --peer-auto-tls: self-signed certificates under <data-dir>/fixtures, before anything dials or listens
  const cfg = await applyAutoTls(flags, log);
  for (const f of securityFlags(cfg)) {
    log.warn("embed", `flag --${f} is accepted but TLS/auth are not implemented yet: serving plain gRPC`);
  }
  if ((cfg.peerCert?.allowedCn || cfg.peerCert?.allowedHostname) && !cfg.peerTls?.clientCertAuth) {
    // as in etcd: without verified peer client certificates there is nothing to check
    log.warn(
      "embed",
      "--peer-cert-allowed-cn / --peer-cert-allowed-hostname have no effect without --peer-client-cert-auth",
    );
  }
  // a bad --auth-token (unknown kind, unreadable key file) fails the start, as with etcd
  const tokens = tokenProviderFromFlag(cfg.authToken ?? "simple", cfg.authTokenTtlS ?? DEFAULT_SIMPLE_TOKEN_TTL_S);
  const other = cfg.ignored.filter((f) => !securityFlags(cfg).includes(f));
  if (other.length > 0) log.info("embed", `accepted without effect: ${other.map((f) => `--${f}`).join(" ")}`);
  const memberDir = path.join(cfg.dataDir, "member");
  const walDir = cfg.walDir || path.join(memberDir, "wal");
  let identity: Identity;
  if (cfg.initialClusterState === "existing" && !(await hasWal(walDir))) {
    // joining a running cluster: its members tell us the cluster ID and the ID we were added under
    identity = await discoverCluster(cfg, log);
  } else {
    identity = identityFromFlags(cfg);
  }
  const { clusterId, memberId, initialMembers } = identity;
  const node = await openNode({
    snapDir: path.join(memberDir, "snap"),
    walDir,
    clusterId,
    memberId,
    initialMembers,
    newCluster: cfg.initialClusterState === "new",
    snapshotCount: cfg.snapshotCount,
    minLeaseTTL: Math.ceil((1.5 * cfg.electionMs) / 1000),
    quotaBytes: cfg.quotaBackendBytes,
    maxRequestBytes: cfg.maxRequestBytes,
    heartbeatMs: cfg.heartbeatMs,
    electionMs: cfg.electionMs,
    peerTls: cfg.initialAdvertisePeerUrls.some((u) => u.startsWith("https:"))
      ? tlsClientOptions(cfg.peerTls)
      : undefined,
    peerCert: cfg.peerCert,
    log: (m, f) => log.info("etcdserver", m, f),
    forceRepairWal: cfg.forceRepairWal,
  });
  log.info(
    "etcdserver",
    `starting member ${hexId(node.memberId)} in cluster ${hexId(node.clusterId)} at revision ${node.store.currentRev}`,
  );

  const hub = new WatchHub(
    node.store,
    new HeaderEncoder(node.clusterId, node.memberId),
    () => node.term,
    cfg.maxRequestBytes,
    Math.max(100, cfg.watchProgressNotifyMs), // etcd's minimum is 100 ms
  );
  let leaseSeq = 0n;
  const leasePrefix = (BigInt(node.memberId) & 0xffffn) << 48n;
  const services: ServiceContext = {
    node,
    hub,
    maxTxnOps: cfg.maxTxnOps,
    strictReconfigCheck: cfg.strictReconfigCheck,
    version: SERVER_VERSION,
    quotaBytes: cfg.quotaBackendBytes,
    auth: new AuthGate(node.applier.auth, {
      tokens,
      clientCertAuth: cfg.clientTls?.clientCertAuth ?? false,
      bcryptCost: cfg.bcryptCost ?? DEFAULT_BCRYPT_COST,
    }),
    nextLeaseId: () => {
      // etcd-style IDs: member prefix, then milliseconds and a counter; always a positive int64
      const id = (leasePrefix | ((BigInt(Date.now()) & 0xffffffffffn) << 8n)) + leaseSeq++;
      return (id & 0x7fffffffffffffffn).toString();
    },
    log: (m) => log.info("v3rpc", m),
  };
  // Two servers: the client URLs serve the etcd API; the peer URLs serve it too (as etcd <= 3.5 does) and, only they,
  // the Raft service between members. A Raft message sent to a client URL finds no such service.
  const clientServer = etcdApiServer(services, cfg.maxRequestBytes);
  const peerServer = etcdApiServer(services, cfg.maxRequestBytes);
  peerServer.addService(RaftPeerService, node.transport.service());

  // https URLs get TLS with the side's certificate files (etcd's --cert-file / --peer-cert-file)
  const bound = new Map<string, { server: GrpcServer; url: string }>();
  // --peer-cert-allowed-cn / --peer-cert-allowed-hostname: as etcd's handshake, a peer listener drops the connection
  const peerPolicy = cfg.peerCert ?? {};
  const acceptPeer = (sock: tls.TLSSocket) => {
    const cert = verifiedCertificate(sock);
    const why = cert && refuseByPolicy(cert, peerPolicy);
    if (why) {
      log.warn(
        "embed",
        `rejected connection from ${sock.remoteAddress}:${sock.remotePort}: client certificate authentication failed: ${why}`,
      );
    }
    return !why;
  };
  const bind = async (server: GrpcServer, url: string, files: TlsFiles | null) => {
    const addr = bindAddress(url);
    const other = bound.get(addr);
    if (other?.server === server) return;
    if (other !== undefined) {
      throw new Error(`${url} and ${other.url} are the same address: client and peer URLs must differ`);
    }
    bound.set(addr, { server, url });
    const peer = server === peerServer && (peerPolicy.allowedCn || peerPolicy.allowedHostname);
    const secure = new URL(url).protocol === "https:"
      ? tlsServerOptions(files, peer ? acceptPeer : undefined)
      : undefined;
    if (new URL(url).protocol === "https:" && !secure) {
      log.warn("embed", `${url}: no certificate files given (nor --auto-tls / --peer-auto-tls); serving plaintext`);
    }
    const [host, port] = splitAddress(addr);
    await server.listen(host, port, secure);
  };
  for (const u of cfg.listenClientUrls) await bind(clientServer, u, cfg.clientTls);
  for (const u of cfg.listenPeerUrls) await bind(peerServer, u, cfg.peerTls);
  for (const u of cfg.listenPeerUrls) log.info("embed", `listening for peers on ${u}`);
  for (const u of cfg.listenClientUrls) log.info("embed", `listening for client requests on ${u}`);

  // before the start: a leader's snapshot may replace the state while the replayed log applies (clients may watch)
  node.onRestore = () => hub.resync();
  await node.start();
  let stopped = false;
  node.onRemoved = () => {
    log.warn("etcdserver", "the member has been permanently removed from the cluster; shutting down");
    Deno.exit(0);
  };

  // Only the leader expires leases.
  const expiry = new LeaseExpiry(
    node.lessor,
    () => node.isLeader,
    (id) => node.propose({ op: "lease_revoke", lease_revoke: { ID: id } }),
  );
  expiry.start();
  const stopCompaction = startAutoCompaction(node, cfg.autoCompactionMode, cfg.autoCompactionRetention, log);

  // Like etcd, report ready only once the cluster has a leader and this member has published its attributes.
  while (!stopped) {
    try {
      await node.waitForLeader(60_000);
      break;
    } catch {
      log.warn("etcdserver", "no leader yet; waiting for the other members of the cluster");
    }
  }
  log.info("etcdserver/membership", `set the initial cluster version to 3.4`);
  log.info("etcdserver/api", `enabled capabilities for version 3.4`);
  const publish = async () => {
    for (;;) {
      const tried = performance.now();
      try {
        await node.propose({
          op: "member_attributes",
          member_attributes: { member_id: node.memberId, name: cfg.name, client_urls: cfg.advertiseClientUrls },
        });
        return;
      } catch (err) {
        if (stopped) return;
        log.warn("etcdserver", `failed to publish local member to cluster (${(err as Error).message}); retrying`);
        // as etcd, again at once after a timeout (a follower far behind, catching up by snapshot, times its first
        // attempt out just before it applies it); at most every PUBLISH_RETRY_MS when attempts fail at once
        await new Promise((r) => setTimeout(r, Math.max(0, PUBLISH_RETRY_MS - (performance.now() - tried))));
      }
    }
  };
  await publish();
  log.info(
    "etcdserver",
    `published {Name:${cfg.name} ClientURLs:[${cfg.advertiseClientUrls.join(" ")}]} to cluster ${
      hexId(node.clusterId)
    }`,
  );
  log.info("embed", `ready to serve client requests`);

  return {
    node,
    startTime,
    memberId: node.memberId,
    clusterId: node.clusterId,
    stop: async () => {
      stopped = true;
      expiry.stop();
      stopCompaction();
      // A leader that stops gracefully hands over first, so the cluster does not wait an election timeout.
      const heir = node.isLeader ? node.bestTransferee() : undefined;
      if (heir) {
        try {
          await node.transferLeadership(heir);
          log.info("etcdserver", `leadership transferred to ${hexId(heir)} before stopping`);
        } catch (err) {
          log.warn("etcdserver", `leadership transfer before stopping failed: ${(err as Error).message}`);
        }
      }
      clientServer.forceShutdown();
      peerServer.forceShutdown();
      tokens.close();
      await node.close();
    },
  };
}
