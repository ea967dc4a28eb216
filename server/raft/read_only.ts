/**
 * ReadIndex bookkeeping on the leader (Raft thesis §6.4): a read request records the commit index at arrival and
 * becomes servable once a majority of voters acknowledged a heartbeat carrying its context, which proves this
 * member was still the leader after the request arrived.
 */
import type { Message } from "./types.ts";

/** Key for a request context (contexts are compared by content). */
export function ctxKey(ctx: Uint8Array | null): string {
  if (!ctx) return "";
  let s = "";
  for (let i = 0; i < ctx.length; i++) s += String.fromCharCode(ctx[i]);
  return s;
}

export interface ReadIndexStatus {
  /** the request as received (from = requester; a local request has from = the leader itself) */
  req: Message;
  /** commit index when the request arrived */
  index: number;
  acks: Set<string>;
}

/** Pending read requests in arrival order. */
export class ReadOnly {
  #pending = new Map<string, ReadIndexStatus>();
  #queue: string[] = [];

  /** Queues a request; a duplicate context (e.g. a duplicated message) is ignored. Returns false then. */
  add(index: number, req: Message): boolean {
    const key = ctxKey(req.context);
    if (this.#pending.has(key)) return false;
    this.#pending.set(key, { req, index, acks: new Set() });
    this.#queue.push(key);
    return true;
  }

  /** Records that `from` acknowledged a heartbeat with `ctx`; returns the acks so far (undefined if unknown). */
  recvAck(from: string, ctx: Uint8Array | null): Set<string> | undefined {
    const rs = this.#pending.get(ctxKey(ctx));
    if (!rs) return undefined;
    rs.acks.add(from);
    return rs.acks;
  }

  /**
   * Removes and returns every request queued up to and including the one with `ctx` (an ack for a later request
   * also proves leadership for the earlier ones).
   */
  advance(ctx: Uint8Array | null): ReadIndexStatus[] {
    const key = ctxKey(ctx);
    const at = this.#queue.indexOf(key);
    if (at < 0) return [];
    const keys = this.#queue.splice(0, at + 1);
    const out: ReadIndexStatus[] = [];
    for (const k of keys) {
      const rs = this.#pending.get(k);
      if (rs) out.push(rs);
      this.#pending.delete(k);
    }
    return out;
  }

  /** Context of the newest pending request (sent with heartbeats), or null. */
  lastPendingContext(): Uint8Array | null {
    if (this.#queue.length === 0) return null;
    return this.#pending.get(this.#queue[this.#queue.length - 1])!.req.context;
  }

  get size(): number {
    return this.#queue.length;
  }

  reset(): void {
    this.#pending.clear();
    this.#queue = [];
  }
}
