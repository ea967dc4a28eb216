/**
 * Progress lines for long work, in both logger formats: a follower restarted after the leader compacted the entries
 * it misses gets the leader's snapshot (tens of MB, in 1 MiB chunks): the leader logs the send (bytes, total, rate,
 * elapsed), the follower the receive, the replay of its WAL at start (entries, bytes, elapsed) and the leader the
 * follower catching up. Progress lines are throttled to one a second, never one per chunk.
 */
import assert from "node:assert/strict";
import { Cluster, type ClusterMember, sleep } from "./lib/cluster.ts";
import { PROGRESS_LOG_MS } from "../server/util/progress.ts";

/** Entries a leader keeps after a snapshot for slow followers (server/node: CATCH_UP_ENTRIES, as etcd). */
const CATCH_UP_ENTRIES = 5000;

/** One parsed log line: its time (ms since the epoch), message and fields, from a zap or a capnslog line. */
interface Line {
  at: number;
  msg: string;
  fields: Record<string, unknown>;
  zap: boolean;
}

const CAPNSLOG = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [DIWE] \| [^:]+: (.*?)(?: \[(.*)\])?$/;

/** The lines of `text` that carry `msg` (exactly), in order. */
function linesOf(text: string, msg: string): Line[] {
  const out: Line[] = [];
  for (const raw of text.split("\n")) {
    const l = raw.trim();
    if (l.startsWith("{")) {
      let j: Record<string, unknown>;
      try {
        j = JSON.parse(l);
      } catch {
        continue;
      }
      if (j.msg !== msg) continue;
      const { level: _l, ts, logger: _c, msg: _m, ...fields } = j;
      out.push({ at: Date.parse(String(ts).replace(/([+-]\d\d)(\d\d)$/, "$1:$2")), msg, fields, zap: true });
      continue;
    }
    const m = CAPNSLOG.exec(l);
    if (!m || m[2] !== msg) continue;
    const fields: Record<string, unknown> = {};
    for (const kv of (m[3] ?? "").split(", ").filter(Boolean)) {
      const i = kv.indexOf("=");
      fields[kv.slice(0, i)] = kv.slice(i + 1);
    }
    out.push({ at: Date.parse(m[1].replace(" ", "T") + "Z"), msg, fields, zap: false });
  }
  return out;
}

function one(m: ClusterMember, msg: string): Line {
  const found = linesOf(m.currentOutput(), msg);
  assert.equal(found.length, 1, `${m.name}: expected one "${msg}" line, found ${found.length}:\n${m.currentOutput()}`);
  return found[0];
}

const GO_DURATION = /^\d+(\.\d+)?(ns|µs|ms|s)$|^\d+m[\d.]+s$/;

Deno.test({
  name: "progress lines: snapshot send and receive, WAL replay and catch-up, throttled, in zap and capnslog lines",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // m1 writes zap JSON lines, m2 and m3 capnslog lines; the stopped follower is picked in the other format than
    // the leader's, so that both formats are read
    const c = await Cluster.start({ size: 3, snapshotCount: 500, memberArgs: [["--logger", "zap"], [], []] });
    try {
      const { leader } = await c.waitLeader();
      const follower = leader === c.members[0] ? c.members[1] : c.members[0];
      const lc = c.client(leader);
      await lc.put("seed", "1", 5000);
      // 4 KiB values under distinct keys: the history (and so the snapshot) grows by about 4 KiB per entry. The
      // snapshot the follower gets may be the leader's newest rather than one taken for it, and a snapshot is due only
      // once the log since the last one is as large (server/node: SNAPSHOT_LOG_SHARE): 24 MiB before the follower
      // stops make every snapshot after them larger than 20 MiB
      const value = "v".repeat(4096);
      let n = 0;
      while (n < 6144) await Promise.all(Array.from({ length: 64 }, () => lc.put(`k/${n++}`, value, 10000)));
      await c.stop(follower);
      const stoppedAt = (await c.status(leader)).raftIndex;
      // past CATCH_UP_ENTRIES + a few snapshot counts, the entries the follower needs are gone from the leader's log
      while ((await c.status(leader)).raftIndex - stoppedAt < CATCH_UP_ENTRIES + 4 * 500) {
        await Promise.all(Array.from({ length: 64 }, () => lc.put(`k/${n++}`, value, 10000)));
      }
      await c.restart(follower);
      const fc = c.client(follower);
      const deadline = Date.now() + 60000;
      while ((await fc.get(`k/${n - 1}`, { serializable: true }).catch(() => ({ value: "" }))).value !== value) {
        if (Date.now() > deadline) throw new Error(`${follower.name} did not catch up`);
        await sleep(100);
      }
      await sleep(2 * PROGRESS_LOG_MS); // the leader's "caught up" line comes on its next ticks

      // the leader: the snapshot sent
      const sending = one(leader, "sending database snapshot");
      const sent = one(leader, "sent database snapshot");
      const total = Number(sending.fields.total);
      assert.ok(total > 20 << 20, `a snapshot of ${total} bytes: expected over 20 MiB of history`);
      assert.equal(String(sent.fields["remote-peer-id"]), follower.id);
      assert.equal(Number(sent.fields.bytes), total);
      assert.equal(Number(sent.fields.percent), 100);
      assert.match(String(sent.fields.rate), /^[\d.]+ (B|kB|MB|GB)\/s$/);
      assert.match(String(sent.fields.took), GO_DURATION);
      // throttled: at most one progress line per PROGRESS_LOG_MS, far fewer than the 1 MiB chunks
      const sendProgress = linesOf(leader.currentOutput(), "sending database snapshot: progress");
      const took = sent.at - sending.at;
      assert.ok(sendProgress.length <= Math.floor(took / PROGRESS_LOG_MS) + 1, `${sendProgress.length} in ${took} ms`);
      assert.ok(sendProgress.length < total / (1 << 20) / 2, `${sendProgress.length} progress lines`);
      for (let i = 1; i < sendProgress.length; i++) {
        assert.ok(sendProgress[i].at - sendProgress[i - 1].at >= PROGRESS_LOG_MS - 5, "progress lines too close");
      }

      // the follower: the snapshot received, and its WAL replayed at start
      const receiving = one(follower, "receiving database snapshot");
      const received = one(follower, "received database snapshot");
      assert.equal(String(receiving.fields["snapshot-index"]), String(sending.fields["snapshot-index"]));
      assert.equal(Number(received.fields.bytes), total);
      assert.match(String(received.fields.rate), /^[\d.]+ (B|kB|MB|GB)\/s$/);
      assert.match(String(received.fields.took), GO_DURATION);
      const recvProgress = linesOf(follower.currentOutput(), "receiving database snapshot: progress");
      assert.ok(recvProgress.length <= Math.floor((received.at - receiving.at) / PROGRESS_LOG_MS) + 1);
      const replayed = one(follower, "replayed WAL");
      assert.ok(Number(replayed.fields.entries) >= 1, JSON.stringify(replayed.fields));
      assert.ok(Number(replayed.fields.bytes) > 0);
      assert.match(String(replayed.fields.took), GO_DURATION);
      assert.notEqual(sent.zap, received.zap, "both logger formats were read");

      // the leader: the follower found behind, then caught up
      const behind = one(leader, "follower is behind, catching up");
      const caughtUp = one(leader, "follower caught up");
      assert.equal(String(behind.fields["remote-peer-id"]), follower.id);
      assert.ok(Number(behind.fields.behind) >= 1000);
      assert.ok(Number(caughtUp.fields.behind) <= 100);
      assert.match(String(caughtUp.fields.rate), /^\d+ entries\/s$/);
      console.log(
        `  leader ${leader.name} (${sent.zap ? "zap" : "capnslog"}): sent ${total} bytes at ${sent.fields.rate} in ` +
          `${sent.fields.took}, ${sendProgress.length} progress line(s); follower ${follower.name} ` +
          `(${received.zap ? "zap" : "capnslog"}): received in ${received.fields.took}, WAL replay ` +
          `${replayed.fields.entries} entries / ${replayed.fields.bytes} bytes in ${replayed.fields.took}; caught up ` +
          `after ${caughtUp.fields.took}`,
      );
    } catch (e) {
      console.log(c.logs());
      throw e;
    } finally {
      await c.destroy();
    }
  },
});
