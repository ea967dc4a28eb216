/**
 * Primaries added and removed while the cluster runs (ours: Easegress only bootstraps primaries from
 * --initial-cluster). A primary is added as a Raft learner, so the quorum does not change while it catches up; the
 * new member, started with `--state-flag existing`, promotes itself to a voter once the leader counts it in sync.
 * A primary is removed only when the voters left would still make a quorum of members that heartbeat, and after
 * leadership has moved away from it (a leader that commits its own removal can leave a 2-member cluster leaderless).
 */
import type { Cluster } from "./cluster.ts";
import { layout } from "./cluster.ts";
import type { Member } from "../etcdclient/client.ts";
import { hexId } from "../etcd/ids.ts";
import { isOffline } from "./liveness.ts";
import { validateName } from "./options.ts";
import type { EgLogger } from "./log.ts";

/** A refused membership change, with the HTTP status the admin API answers it with. */
export class MembershipError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** What the admin API is asked to add. */
export interface NewPrimary {
  name: string;
  peerURLs: string[];
}

/** A primary just added: what its operator needs to start it. */
export interface AddedPrimary {
  name: string;
  /** member ID, hexadecimal */
  id: string;
  peerURLs: string[];
  isLearner: boolean;
  clusterName: string;
  /** `--initial-cluster` for the new member: every voter by its first peer URL, then the new member */
  initialCluster: string;
  /** the flags to start it with, besides its own listen/advertise URLs and api-addr */
  flags: string[];
}

/** Checks the request's fields (400 on bad input). */
export function parseNewPrimary(body: unknown): NewPrimary {
  const o = (body ?? {}) as Record<string, unknown>;
  const name = typeof o.name === "string" ? o.name : "";
  try {
    validateName(name);
  } catch {
    throw new MembershipError(400, `invalid member name ${JSON.stringify(name)}: want 1 to 253 of A-Z a-z 0-9 - _ . ~`);
  }
  const urls = o.peerURLs;
  if (!Array.isArray(urls) || urls.length === 0 || urls.some((u) => typeof u !== "string")) {
    throw new MembershipError(400, `invalid peerURLs ${JSON.stringify(urls ?? null)}: want a list of URLs`);
  }
  return { name, peerURLs: urls as string[] };
}

/** Adds a primary as a learner (409 when the name is taken or a learner is already catching up). */
export async function addPrimary(cls: Cluster, req: NewPrimary): Promise<AddedPrimary> {
  const members = await cls.client.memberList();
  const records = await cls.getPrefix(layout.statusMemberPrefix);
  if (members.some((m) => m.name === req.name) || records.has(layout.statusMemberKey(req.name))) {
    throw new MembershipError(409, `member ${req.name} already exists`);
  }
  const pending = members.find((m) => m.isLearner);
  if (pending) {
    throw new MembershipError(
      409,
      `member ${displayName(pending)} is still a learner catching up: wait for its promotion, or remove it ` +
        `(egctl delete member ${displayName(pending)})`,
    );
  }
  let added: Member;
  try {
    added = await cls.client.memberAdd(req.peerURLs, true);
  } catch (err) {
    const msg = (err as Error).message;
    if (/Peer URLs already exists|member ID already exist/.test(msg)) throw new MembershipError(409, msg);
    if (/member URLs are invalid/.test(msg)) {
      throw new MembershipError(400, `${msg}: want http(s)://host:port URLs, got ${req.peerURLs.join(",")}`);
    }
    throw err;
  }
  const voters = members.filter((m) => !m.isLearner && m.name !== "" && m.peerURLs.length > 0)
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const initialCluster = [...voters.map((m) => `${m.name}=${m.peerURLs[0]}`), `${req.name}=${req.peerURLs[0]}`]
    .join(",");
  return {
    name: req.name,
    id: hexId(added.id),
    peerURLs: req.peerURLs,
    isLearner: true,
    clusterName: cls.opt.ClusterName,
    initialCluster,
    flags: [
      "--name",
      req.name,
      "--cluster-name",
      cls.opt.ClusterName,
      "--cluster-role",
      "primary",
      "--state-flag",
      "existing",
      "--initial-advertise-peer-urls",
      req.peerURLs.join(","),
      "--initial-cluster",
      initialCluster,
    ],
  };
}

/** A member's name, or its hexadecimal ID while it has not started (and so not published its name). */
function displayName(m: Member): string {
  return m.name || hexId(m.id);
}

/** The Raft member called `name`, or the one with that hexadecimal ID that never started (so has no name yet). */
export function findPrimary(members: Member[], name: string): Member | undefined {
  return members.find((m) => m.name === name) ??
    members.find((m) => m.name === "" && hexId(m.id) === name.toLowerCase());
}

/** A voter as the removal check sees it. */
export interface Voter {
  /** member ID, decimal */
  id: string;
  name: string;
  /** whether it heartbeats (or is the member asked) */
  online: boolean;
}

/**
 * Why removing voter `targetId` from `voters` would lose the quorum, or null when it would not: the voters left must
 * still be a majority of themselves online.
 */
export function removalRefusal(voters: Voter[], targetId: string): string | null {
  const rest = voters.filter((v) => v.id !== targetId);
  if (rest.length === voters.length) return null; // not a voter: a learner takes nothing from the quorum
  if (rest.length === 0) return "it is the last voting member";
  const quorum = Math.floor(rest.length / 2) + 1;
  const online = rest.filter((v) => v.online).length;
  if (online >= quorum) return null;
  const offline = rest.filter((v) => !v.online).map((v) => v.name);
  return `the ${rest.length} primaries left would have ${online} online (${offline.join(", ")} offline), ` +
    `fewer than the ${quorum} a quorum needs`;
}

/**
 * Removes primary `name` (or a member that never started, by its hexadecimal ID) from the Raft membership; returns
 * false when no member of that name is in it (a secondary). Refused (409) when the quorum could be lost, or when
 * the member asked is the one to remove (its answer would be lost with it).
 */
export async function removePrimary(cls: Cluster, name: string): Promise<boolean> {
  const members = await cls.client.memberList();
  const target = findPrimary(members, name);
  if (!target) return false;
  const self = cls.server?.memberId;
  if (target.id === self) {
    throw new MembershipError(
      409,
      `member ${name} is the one serving this request: ask another member (egctl --server <its api-addr>)`,
    );
  }
  if (!target.isLearner) {
    const beats = new Map<string, unknown>();
    for (const v of (await cls.getPrefix(layout.statusMemberPrefix)).values()) {
      try {
        const r = JSON.parse(v);
        if (r?.etcd?.id) beats.set(String(r.etcd.id), r.lastHeartbeatTime);
      } catch { /* not a record */ }
    }
    const voters = members.filter((m) => !m.isLearner).map((m) => ({
      id: m.id,
      name: displayName(m),
      online: m.id === self || (beats.has(hexId(m.id)) && !isOffline(beats.get(hexId(m.id)))),
    }));
    const refusal = removalRefusal(voters, target.id);
    if (refusal) throw new MembershipError(409, `cannot remove member ${name}: ${refusal}`);
    if ((await cls.client.status()).leader === target.id) {
      const to = voters.find((v) => v.id !== target.id && v.online)!;
      await cls.client.syncEndpoints(); // the leader's client URL, should it have joined since the last sync
      await cls.client.moveLeader(to.id);
    }
  }
  try {
    await cls.client.memberRemove(target.id);
  } catch (err) {
    const msg = (err as Error).message;
    if (/unhealthy cluster|not enough started members/.test(msg)) {
      throw new MembershipError(409, `cannot remove member ${name}: the cluster refused it (${msg})`);
    }
    throw err;
  }
  return true;
}

/** How often a learner asks to be promoted. */
const PROMOTE_RETRY_MS = 1000;

/**
 * Promotes this member while it is a learner, as soon as the leader counts it in sync; stops once it votes, or when
 * `stopped()` says so. Refusals while it catches up are expected; others are logged once each.
 */
export async function promoteWhenCaughtUp(
  self: { isLearner(): boolean; promote(): Promise<void>; stopped(): boolean },
  log: EgLogger,
): Promise<void> {
  let logged = "";
  let wasLearner = false;
  while (!self.stopped() && self.isLearner()) {
    wasLearner = true;
    try {
      await self.promote();
      break;
    } catch (err) {
      const msg = (err as Error).message;
      if (!/in sync with leader/.test(msg) && msg !== logged) log.warn(`promotion to a voting member: ${msg}`);
      logged = msg;
    }
    await new Promise((r) => setTimeout(r, PROMOTE_RETRY_MS));
  }
  if (wasLearner && !self.stopped()) log.info("promoted from learner to a voting member");
}
