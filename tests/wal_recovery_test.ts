/**
 * WAL recovery of whole members (issue 10 item 4), on real processes killed with SIGKILL: a torn last batch is
 * repaired at start-up with a log line and every acknowledged put is still there; a damaged synced record makes
 * `mod.ts etcd` and the Easegress `server` refuse to start with the file, the offset and the repair flag; with
 * `--force-repair-wal` they start.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { etcdctlOk } from "./lib/etcdctl.ts";
import { startServer } from "./lib/server.ts";
import { appendUnsyncedBatch, flip, lastSegment, nextPage, records, zero } from "./lib/wal_files.ts";

const KEYS = 20;

async function keys(endpoint: string): Promise<string[]> {
  const out = await etcdctlOk(endpoint, ["get", "k", "--prefix", "--keys-only"]);
  return out.split("\n").filter((l) => l.length > 0);
}

const expectedKeys = (n: number) => Array.from({ length: n }, (_, i) => `k${String(i).padStart(2, "0")}`);

/** Flips a byte in the last record of the WAL's last segment (the last synced one); returns its file and offset. */
async function damageLastSyncedRecord(walDir: string): Promise<{ file: string; off: number }> {
  const file = await lastSegment(walDir);
  const recs = records(await Deno.readFile(file));
  const last = recs[recs.length - 1];
  await flip(file, last.off + 10);
  return { file, off: last.off };
}

Deno.test({
  name:
    "wal recovery (etcd): a torn last batch is repaired with every acknowledged put kept; damage refuses until --force-repair-wal",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let server = await startServer();
    const { dataDir } = server;
    const walDir = path.join(dataDir, "member", "wal");
    const ports = {
      clientPort: Number(new URL(server.clientUrl).port),
      peerPort: Number(new URL(server.peerUrl).port),
    };
    try {
      for (const k of expectedKeys(KEYS)) await etcdctlOk(server.endpoint, ["put", k, `v-${k}`]);
      await server.kill();

      // a crash in the middle of the next batch: its later pages reached the disk, its first page did not
      const { start } = await appendUnsyncedBatch(walDir);
      const file = await lastSegment(walDir);
      await zero(file, start, nextPage(start));
      server = await startServer({ dataDir, ...ports });
      assert.match(server.output(), new RegExp(`wal: repaired a torn write at ${file}:${start} `));
      assert.deepEqual(await keys(server.endpoint), expectedKeys(KEYS), "every acknowledged put is kept");
      await server.kill();

      // a flipped byte in the last synced record, zeros after it: not torn, so the member refuses to start
      const damage = await damageLastSyncedRecord(walDir);
      const refused = await startServer({ dataDir, ...ports }).then(
        (s) => s.kill().then(() => "started"),
        (e: Error) => e.message,
      );
      assert.match(refused, /server exited before it was ready/);
      assert.ok(refused.includes(`wal: corrupt record in ${damage.file} at offset ${damage.off}`), refused);
      assert.ok(refused.includes("--force-repair-wal"), refused);

      // the documented repair: the log is cut at the damage, the member starts and serves what came before it
      server = await startServer({ dataDir, ...ports, extraArgs: ["--force-repair-wal"] });
      assert.match(server.output(), /repaired by request \(--force-repair-wal\)/);
      assert.deepEqual(
        (await keys(server.endpoint)).slice(0, KEYS - 1),
        expectedKeys(KEYS - 1),
        "what came before the damaged record is served",
      );
      await etcdctlOk(server.endpoint, ["put", "after-repair", "1"]);
    } finally {
      await server.kill();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});

memberTest(
  "wal recovery (Easegress server): a damaged WAL stops the start with the repair flag, not a retry loop",
  async (procs) => {
    const [p] = await memberPorts(1);
    const args = primaryArgs("eg-wal", p, ["--cluster-name", "eg-wal"]);
    const m = await startMember("eg-wal", args);
    procs.push(m);
    await m.kill();
    const walDir = path.join(m.home, "data", "member", "wal");
    const damage = await damageLastSyncedRecord(walDir);

    const refused = await startMember("eg-wal", args, { home: m.home, wait: false });
    procs.push(refused);
    await waitFor("the member to give up", () => refused.exited(), 30_000);
    assert.equal((await refused.status).code, 2, refused.output());
    assert.ok(
      refused.output().includes(`wal: corrupt record in ${damage.file} at offset ${damage.off}`),
      refused.output(),
    );
    assert.ok(refused.output().includes("--force-repair-wal"), refused.output());

    const repaired = await startMember("eg-wal", [...args, "--force-repair-wal"], { home: m.home });
    procs.push(repaired);
    assert.match(repaired.output(), /repaired by request \(--force-repair-wal\)/);
  },
);
