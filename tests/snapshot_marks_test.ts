/**
 * A member loads only a snapshot its WAL records (issue 10 item 7), as etcd does: a crash between writing a snapshot
 * file and syncing its mark in the WAL leaves a newer file the log knows nothing about. Loading it would skip the
 * entries between the recorded snapshot and that file's index with a state that may not be theirs; the member must
 * ignore it with a log line and rebuild from the newest recorded snapshot plus the WAL.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { Snapshotter } from "../server/snap/snapshotter.ts";
import { Wal } from "../server/wal/wal.ts";
import { etcdctlOk } from "./lib/etcdctl.ts";
import { startServer } from "./lib/server.ts";

const KEYS = 25;

Deno.test({
  name: "snapshot marks: a newer snapshot file the WAL does not record is ignored with a log line; nothing is lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let server = await startServer({ extraArgs: ["--snapshot-count", "10"] });
    const { dataDir } = server;
    const snapDir = path.join(dataDir, "member", "snap");
    const walDir = path.join(dataDir, "member", "wal");
    const ports = {
      clientPort: Number(new URL(server.clientUrl).port),
      peerPort: Number(new URL(server.peerUrl).port),
    };
    try {
      const keys = Array.from({ length: KEYS }, (_, i) => `k${String(i).padStart(2, "0")}`);
      for (const k of keys) await etcdctlOk(server.endpoint, ["put", k, `v-${k}`]);
      await server.kill();

      // the newest recorded snapshot and the log's last index
      const { wal, contents } = await Wal.open(walDir, { log: () => {} });
      const mark = contents.snapshot;
      const lastIndex = contents.entries.length > 0 ? contents.entries.slice(contents.entries.length - 1)[0].index : 0;
      wal.close();
      assert.ok(mark && lastIndex > mark.index, `a snapshot with entries after it (mark ${JSON.stringify(mark)})`);
      const snaps = new Snapshotter(snapDir, { log: () => {} });
      const recorded = await snaps.loadNewest([mark]);
      assert.ok(recorded);
      // a crash after writing a snapshot file at the last index, before its mark reached the WAL; its contents are
      // not that index's state (here: the older snapshot's), which only the missing mark could have vouched for
      await snaps.save({ index: lastIndex, term: mark.term, data: recorded.data });

      server = await startServer({ dataDir, ...ports });
      assert.match(server.output(), /snap: ignoring .*\.snap: the WAL does not record it/);
      assert.match(server.output(), new RegExp(`recovered store from snapshot at index ${mark.index} `));
      const out = await etcdctlOk(server.endpoint, ["get", "k", "--prefix", "--keys-only"]);
      assert.deepEqual(out.split("\n").filter((l) => l), keys, "every acknowledged put is there");
    } finally {
      await server.kill();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
