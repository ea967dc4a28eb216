/**
 * The cluster as the dashboard shows it, in one JSON document (GET /apis/v2/dashboard/cluster): every member with its
 * role, Raft state, heartbeat age and health; the leader; every object with each member's status and request rates.
 *
 * Members' Raft states and liveness are those `egctl get member` shows (../easegress/liveness.ts): from the store's
 * live membership and leader, so a leader change shows at once, and Offline once a member's heartbeat is late.
 */
import { type Cluster, layout, type MemberStatus } from "../easegress/cluster.ts";
import {
  heartbeatAgeMs,
  memberState,
  readLiveMembership,
  STALE_HEARTBEAT_MS,
  unrecordedPrimaries,
} from "../easegress/liveness.ts";

/** One member as the dashboard shows it. */
export interface MemberView {
  name: string;
  /** "primary" or "secondary" */
  role: string;
  /** a primary's state as `egctl get member` shows it (Leader, Follower, Learner, Offline, Removed), or Unreachable
   * for one this member (a primary) has no connection to; "-" for secondaries */
  raftState: string;
  /** hexadecimal member ID of a primary, "" for secondaries */
  etcdId: string;
  apiAddr: string;
  lastHeartbeat: string;
  heartbeatAgeMs: number;
  healthy: boolean;
}

/** Request counters an object's status holds for one member (0 when the status has none). */
export interface TrafficView {
  count: number;
  errCount: number;
  /** requests/s, 1-minute rate */
  m1: number;
  /** errors/s, 1-minute rate */
  m1Err: number;
}

/** One object with each member's status. */
export interface ObjectView {
  name: string;
  kind: string;
  /** member name → its status document's main fields */
  members: Record<string, { state: string; error: string; traffic: TrafficView }>;
}

/** The whole document. */
export interface ClusterView {
  clusterName: string;
  /** the member that answered */
  self: string;
  /** RFC 3339 time of the answer */
  time: string;
  leader: { id: string; name: string } | null;
  raftTerm: number;
  members: MemberView[];
  objects: ObjectView[];
  /** what could not be read (the store unreachable …); the rest is still filled in as far as it goes */
  errors: string[];
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

/** Reads the view from the store, through this member's client. */
export async function clusterView(cls: Cluster, now = Date.now()): Promise<ClusterView> {
  const view: ClusterView = {
    clusterName: cls.opt.ClusterName,
    self: cls.opt.Name,
    time: new Date(now).toISOString(),
    leader: null,
    raftTerm: 0,
    members: [],
    objects: [],
    errors: [],
  };
  const [records, live, specs, statuses] = await Promise.allSettled([
    cls.getPrefix(layout.statusMemberPrefix),
    readLiveMembership(cls.client),
    cls.getPrefix(layout.configObjectPrefix),
    cls.getPrefix(layout.statusObjectsPrefix),
  ]);
  for (const r of [records, live, specs, statuses]) {
    if (r.status === "rejected") view.errors.push(String((r.reason as Error)?.message ?? r.reason));
  }
  // readLiveMembership never rejects
  const membership = live.status === "fulfilled" ? live.value : { leaderId: "0", raftTerm: 0, errors: [] };
  view.errors.push(...membership.errors);
  view.raftTerm = membership.raftTerm;
  const liveByHex = new Map((membership.members ?? []).map((m) => [BigInt(m.id).toString(16), m]));
  if (membership.leaderId !== "0") {
    const l = membership.members?.find((m) => m.id === membership.leaderId);
    view.leader = { id: BigInt(membership.leaderId).toString(16), name: l?.name ?? "" };
  }
  if (records.status === "fulfilled") {
    const primaries: MemberStatus[] = [];
    for (const v of records.value.values()) {
      let s: MemberStatus;
      try {
        s = JSON.parse(v);
      } catch {
        continue;
      }
      if (s.etcd) primaries.push(s);
      const age = heartbeatAgeMs(s.lastHeartbeatTime, now);
      const role = s.options?.ClusterRole ?? "";
      const etcdId = s.etcd?.id ?? "";
      let raftState = role === "primary" ? memberState(s, membership, now) : "-";
      // a primary's peer connection to the others says at once when one died; the heartbeat takes up to 12 s
      const node = cls.server?.node;
      const peer = liveByHex.get(etcdId);
      const cut = role === "primary" && node !== undefined && peer !== undefined && peer.id !== node.memberId &&
        !node.peerConnected(peer.id);
      if (cut && raftState !== "Leader") raftState = "Unreachable";
      view.members.push({
        name: s.options?.Name ?? "",
        role,
        raftState,
        etcdId,
        apiAddr: s.options?.APIAddr ?? "",
        lastHeartbeat: s.lastHeartbeatTime,
        heartbeatAgeMs: Number.isFinite(age) ? age : -1,
        healthy: age <= STALE_HEARTBEAT_MS && !cut,
      });
    }
    // a learner added but not started yet (not with a standalone etcd, whose members are no Easegress members)
    for (const u of primaries.length > 0 ? unrecordedPrimaries(primaries, membership) : []) {
      view.members.push({
        name: u.options.Name,
        role: "primary",
        raftState: u.etcd.state,
        etcdId: u.etcd.id,
        apiAddr: "",
        lastHeartbeat: "",
        heartbeatAgeMs: -1,
        healthy: false,
      });
    }
  }
  view.members.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (specs.status === "fulfilled") {
    const byName = new Map<string, ObjectView>();
    for (const v of specs.value.values()) {
      try {
        const spec = JSON.parse(v);
        if (typeof spec?.name !== "string") continue;
        byName.set(spec.name, { name: spec.name, kind: String(spec.kind ?? ""), members: {} });
      } catch {
        // a value that is not a spec is not shown
      }
    }
    if (statuses.status === "fulfilled") {
      // /status/objects/<namespace>/<object>/<member>
      for (const [k, v] of statuses.value) {
        const parts = k.slice(layout.statusObjectsPrefix.length).split("/");
        if (parts.length < 3) continue;
        const obj = byName.get(parts[parts.length - 2]);
        if (!obj) continue;
        let doc: Record<string, unknown>;
        try {
          doc = JSON.parse(v);
        } catch {
          continue;
        }
        // as the gateway writes it: {spec, status: {state, error, count, m1, ...}, timestamp}
        const st = (typeof doc?.status === "object" && doc.status !== null ? doc.status : {}) as Record<
          string,
          unknown
        >;
        obj.members[parts[parts.length - 1]] = {
          state: String(st.state ?? ""),
          error: String(st.error ?? ""),
          traffic: { count: num(st.count), errCount: num(st.errCount), m1: num(st.m1), m1Err: num(st.m1Err) },
        };
      }
    }
    view.objects = [...byName.values()].sort((a, b) =>
      a.kind === b.kind ? (a.name < b.name ? -1 : 1) : a.kind < b.kind ? -1 : 1
    );
  }
  return view;
}
