/**
 * Stable 64-bit member and cluster IDs, derived as etcd derives them: a member's ID from its sorted peer URLs and the
 * cluster token, the cluster's ID from its sorted member IDs. IDs are decimal strings (uint64).
 */
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";

function first8(data: Uint8Array): bigint {
  return Buffer.from(createHash("sha1").update(data).digest()).readBigUInt64BE(0);
}

/** A member's ID from its peer URLs and the cluster token. */
export function memberIdOf(peerUrls: string[], token: string): string {
  const b = [...peerUrls].sort().join("") + token;
  return first8(new TextEncoder().encode(b)).toString();
}

/** The cluster's ID from its members' IDs. */
export function clusterIdOf(memberIds: string[]): string {
  const ids = memberIds.map((x) => BigInt(x)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const b = Buffer.alloc(8 * ids.length);
  ids.forEach((id, i) => b.writeBigUInt64BE(id, 8 * i));
  return first8(b).toString();
}

/** An ID in etcd's hex notation (as etcdctl prints it). */
export function hexId(id: string): string {
  return BigInt(id).toString(16);
}
