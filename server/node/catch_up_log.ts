/**
 * The leader's log lines about a follower catching up (after a restart, a partition, a snapshot): when it is found
 * behind, its progress (entries replicated to it, rate, elapsed; at most one line per PROGRESS_LOG_MS), and when it
 * caught up. A follower being probed or sent a snapshot is reported on the first tick that sees it behind (a snapshot
 * may have caught it up by the next one); one that replicates normally and falls behind only for a moment (a burst of
 * writes) is not: its first line is written once it is still behind a progress interval later.
 */
import type { LogFields } from "../etcd/log.ts";
import type { Status } from "../raft/mod.ts";
import { Progress } from "../util/progress.ts";

/** A follower this many entries (or more) behind the leader's last index is catching up. */
export const CATCH_UP_MIN_ENTRIES = 1000;
/** ...and has caught up once it is at most this many entries behind. */
export const CAUGHT_UP_ENTRIES = 100;

interface Follower {
  progress: Progress;
  /** its match index when it was found behind */
  from: number;
  /** whether the "behind" line was written */
  reported: boolean;
}

/** Watches the followers' progress on the leader's clock ({@link observe}). */
export class CatchUpLog {
  #followers = new Map<string, Follower>();

  constructor(readonly log: (msg: string, fields: LogFields) => void, readonly now?: () => number) {}

  /** Looks at the Raft status (on every tick); forgets every follower when this member does not lead. */
  observe(status: Status): void {
    const all = status.progress;
    if (!all) return this.#followers.clear();
    for (const id of this.#followers.keys()) if (!(id in all)) this.#followers.delete(id);
    for (const [id, p] of Object.entries(all)) {
      if (id === status.id) continue;
      const behind = status.lastIndex - p.match;
      const about = (): LogFields => ({
        "remote-peer-id": id,
        match: p.match,
        "last-index": status.lastIndex,
        behind,
        state: p.state,
      });
      const f = this.#followers.get(id);
      if (!f) {
        if (behind >= CATCH_UP_MIN_ENTRIES && p.recentActive) {
          // probed or sent a snapshot: reported now (a snapshot may have caught it up by the next tick)
          const f = { progress: new Progress("entries", this.now), from: p.match, reported: p.state !== "replicate" };
          this.#followers.set(id, f);
          if (f.reported) this.log("follower is behind, catching up", { ...about(), ...f.progress.fields() });
        }
        continue;
      }
      f.progress.done = Math.max(0, p.match - f.from);
      if (behind <= CAUGHT_UP_ENTRIES) {
        if (f.reported) this.log("follower caught up", { ...about(), ...f.progress.fields() });
        this.#followers.delete(id);
      } else if (p.recentActive && (f.progress.due() || (!f.reported && p.state !== "replicate"))) {
        const msg = f.reported ? "follower catching up: progress" : "follower is behind, catching up";
        f.reported = true;
        this.log(msg, { ...about(), ...f.progress.fields() });
      }
    }
  }
}
