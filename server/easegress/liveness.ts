/**
 * Which members are alive and in what Raft state, as operators see them (`egctl get member`, GET
 * /apis/v2/status/members, the dashboard). A member's record (/status/members/<name>) is rewritten by its heartbeat
 * and outlives the member (its lease never expires, as in Easegress), so the Raft state stored in it is only what the
 * member last said: the current state comes from the store's live membership and leader, and a member whose heartbeat
 * is late is Offline.
 */
import type { EtcdClient, Member } from "../etcdclient/client.ts";
import { parseRfc3339 } from "./gotime.ts";

/** Heartbeat period (fixed in Easegress). */
export const HEARTBEAT_INTERVAL_MS = 5000;
/** A member whose last heartbeat is older than this is offline (two heartbeats missed, plus slack). */
export const STALE_HEARTBEAT_MS = 2 * HEARTBEAT_INTERVAL_MS + 2000;
/** The state shown for a member whose heartbeat is older than {@link STALE_HEARTBEAT_MS}. */
export const OFFLINE = "Offline";

/** Milliseconds since `lastHeartbeatTime` (RFC 3339); Infinity when it is not a time. */
export function heartbeatAgeMs(lastHeartbeatTime: unknown, now = Date.now()): number {
  const t = parseRfc3339(lastHeartbeatTime);
  return t ? Math.max(0, now - t.getTime()) : Infinity;
}

/** Whether a member that last beat at `lastHeartbeatTime` is offline (not when that is not a time: unknown). */
export function isOffline(lastHeartbeatTime: unknown, now = Date.now()): boolean {
  const age = heartbeatAgeMs(lastHeartbeatTime, now);
  return Number.isFinite(age) && age > STALE_HEARTBEAT_MS;
}

/** The store's own view of its primaries, as one member's client reads it. */
export interface LiveMembership {
  /** the Raft membership (MemberList); undefined when it could not be read */
  members?: Member[];
  /** decimal member ID of the leader (Status), "0" when none is known */
  leaderId: string;
  raftTerm: number;
  /** why something could not be read */
  errors: string[];
}

/** Reads the membership and the leader through `client`; never rejects (what fails is listed in `errors`). */
export async function readLiveMembership(client: Pick<EtcdClient, "memberList" | "status">): Promise<LiveMembership> {
  const [list, status] = await Promise.allSettled([client.memberList(), client.status()]);
  const live: LiveMembership = { leaderId: "0", raftTerm: 0, errors: [] };
  if (list.status === "fulfilled") live.members = list.value;
  else live.errors.push(String((list.reason as Error)?.message ?? list.reason));
  if (status.status === "fulfilled") {
    live.leaderId = status.value.leader;
    live.raftTerm = status.value.raftTerm;
  } else live.errors.push(String((status.reason as Error)?.message ?? status.reason));
  return live;
}

/** The parts of a member record (MemberStatus) the state depends on. */
export interface HeartbeatRecord {
  lastHeartbeatTime?: unknown;
  /** a primary's hexadecimal member ID and its own last reported Raft state */
  etcd?: { id?: unknown; state?: unknown };
}

/**
 * The state of the member with this record now: for a primary, Removed when it is no longer in the membership, else
 * Offline when its heartbeat is late, else Learner, Leader or Follower from the live store (its stored state when the
 * membership could not be read); for a secondary, Offline or "".
 */
export function memberState(record: HeartbeatRecord, live: LiveMembership, now = Date.now()): string {
  const offline = isOffline(record.lastHeartbeatTime, now);
  if (!record.etcd) return offline ? OFFLINE : "";
  const id = String(record.etcd.id ?? "");
  const m = live.members?.find((x) => BigInt(x.id).toString(16) === id);
  if (live.members && !m) return "Removed";
  if (offline) return OFFLINE;
  if (!m) return String(record.etcd.state ?? "");
  if (m.isLearner) return "Learner";
  return m.id === live.leaderId ? "Leader" : "Follower";
}

/** What {@link unrecordedPrimaries} lists of a primary that has no record yet. */
export interface UnrecordedPrimary {
  options: { Name: string; ClusterRole: "primary" };
  /** no heartbeat yet */
  lastHeartbeatTime: "";
  etcd: { id: string; startTime: ""; state: string };
}

/**
 * The primaries of the live membership that have no record yet, so that they are listed from the moment they are
 * added: a learner added online before it has started (named by its hexadecimal ID, by which it is removed, until
 * it starts and publishes its name), or a voter before its first heartbeat.
 */
export function unrecordedPrimaries(records: HeartbeatRecord[], live: LiveMembership): UnrecordedPrimary[] {
  const recorded = new Set(records.map((r) => String(r.etcd?.id ?? "")));
  return (live.members ?? []).filter((m) => !recorded.has(BigInt(m.id).toString(16))).map((m) => {
    const id = BigInt(m.id).toString(16);
    return {
      options: { Name: m.name || id, ClusterRole: "primary" },
      lastHeartbeatTime: "",
      etcd: { id, startTime: "", state: memberState({ etcd: { id } }, live) },
    };
  });
}
