/**
 * Members never diverge (issue 10), checked on real 3-member clusters of our server: members started with different
 * --quota-backend-bytes hit NOSPACE, the operator deletes, compacts, defragments and disarms with etcdctl, a member
 * restarts from its own snapshot file, and a member that was down while leases were granted and NOSPACE raised catches
 * up through the leader's snapshot; after every phase all members must hold the same state at the same applied index
 * (cluster.assertSameState: Maintenance.Hash of the whole applied state with leases, HashKV, alarm lists,
 * Status.dbSize).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Cluster, type ClusterMember, errorText, type EtcdClient } from "./lib/cluster.ts";
import { etcdctlOk } from "./lib/etcdctl.ts";

const NO_SPACE = /database space exceeded/;

/** Puts `key`; returns "ok" or the error text. */
async function tryPut(cl: EtcdClient, key: string, value: string): Promise<string> {
  try {
    await cl.put(key, value, 10000);
    return "ok";
  } catch (e) {
    return errorText(e);
  }
}

/** A txn of puts without compares; returns "ok" or the error text. */
async function tryTxnPuts(cl: EtcdClient, puts: [string, string][]): Promise<string> {
  try {
    await cl.call(cl.kv, "Txn", {
      compare: [],
      success: puts.map(([k, v]) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(v) } })),
      failure: [],
    }, 10000);
    return "ok";
  } catch (e) {
    return errorText(e);
  }
}

Deno.test({
  name: "divergence: members with different quotas hit NOSPACE, disarm, delete, compact, defrag, restart alike",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    // m1 has the smallest quota, m2 twice that, m3 the default (2 GiB): only apply-time decisions from the log keep
    // them equal. A snapshot every 20 entries, so that the restarted member comes back through a snapshot file.
    const QUOTA = 12000;
    const c = await Cluster.start({
      size: 3,
      snapshotCount: 20,
      memberArgs: [["--quota-backend-bytes", String(QUOTA)], ["--quota-backend-bytes", String(2 * QUOTA)], []],
    });
    const [m1, m2, m3] = c.members;
    const eps = (ms: ClusterMember[] = c.members) => ms.map((m) => m.endpoint).join(",");
    const value = "v".repeat(1000);
    try {
      await c.waitLeader();

      await t.step("writes through every member until NOSPACE; all members hold the same alarm and state", async () => {
        let refusedBy = "";
        for (let i = 0; i < 60 && !refusedBy; i++) {
          const m = c.members[i % 3];
          const out = await tryPut(c.client(m), `fill/${i}`, value);
          if (out !== "ok") {
            assert.match(out, NO_SPACE);
            refusedBy = m.name;
          }
        }
        assert.ok(refusedBy, "no member refused a write for want of space");
        const st = await c.assertSameState();
        assert.equal(st.alarms.length, 1, `one NOSPACE alarm: ${st.alarms}`);
        assert.match(st.alarms[0], new RegExp(`^${m1.id}:`), "raised by the member with the smallest quota");
        // the member without a quota of its own refuses too: the refusal comes from the replicated alarm list
        assert.match(await tryPut(c.client(m3), "after/alarm", "x"), NO_SPACE);
        assert.match(await tryTxnPuts(c.client(m3), [["after/txn", "x"]]), NO_SPACE);
        await c.assertSameState();
        console.log(`  NOSPACE refused by ${refusedBy}; alarms ${st.alarms}; dbSize ${st.dbSize}; hash ${st.hash}`);
      });

      await t.step("disarm, delete, compact and defrag free the space everywhere", async () => {
        await etcdctlOk(eps(), ["alarm", "disarm"]);
        await etcdctlOk(m2.endpoint, ["del", "--prefix", "fill/"]);
        const rev = (await c.client(m2).get("nothing")).revision;
        await etcdctlOk(m3.endpoint, ["compaction", String(rev)]);
        await etcdctlOk(eps(), ["defrag"]);
        const st = await c.assertSameState();
        assert.deepEqual(st.alarms, []);
        for (const m of c.members) assert.equal(await tryPut(c.client(m), `again/${m.name}`, "small"), "ok");
        await c.assertSameState();
      });

      await t.step(
        "a txn that does not fit is refused whole: nothing of it is stored, the revision stays",
        async () => {
          // near m1's quota: its check before proposing refuses the txn whose second put does not fit. m1's size is read
          // after a linearizable read on m1 (which waits until m1 applied the last put): read while m1 still lagged,
          // it let one put too many through, and the deletes of the next step then took m1 over its quota again
          let i = 0;
          const m1Size = async () => (await c.client(m1).get("sync"), (await c.client(m1).space()).dbSize);
          while ((await m1Size()) + 2 * 1100 < QUOTA) {
            assert.equal(await tryPut(c.client(m2), `near/${i++}`, value), "ok");
          }
          const before = (await c.client(m1).get("t1")).revision;
          const out = await tryTxnPuts(c.client(m1), [["t1", "small"], ["t2", "b".repeat(3000)]]);
          assert.match(out, NO_SPACE);
          const after = await c.client(m1).get("t1");
          assert.equal(after.value, null, "t1 of the refused txn was stored");
          assert.equal(after.revision, before, "the refused txn moved the revision");
          await c.assertSameState();
        },
      );

      await t.step("a member restarted from its snapshot file counts and hashes like the others", async () => {
        await etcdctlOk(eps(), ["alarm", "disarm"]);
        await etcdctlOk(m2.endpoint, ["del", "--prefix", "near/"]);
        // a tombstone at the compaction revision: a restored member counted it twice
        await c.client(m2).put("tomb", "x");
        await etcdctlOk(m2.endpoint, ["del", "tomb"]);
        const rev = (await c.client(m2).get("nothing")).revision;
        await etcdctlOk(m2.endpoint, ["compaction", String(rev)]);
        for (let i = 0; i < 30; i++) await c.client(m2).put(`later/${i % 3}`, `${i}`);
        const before = await c.assertSameState();
        await c.stop(m3);
        await c.restart(m3);
        assert.match(m3.currentOutput(), /recovered store from snapshot/);
        const after = await c.assertSameState();
        assert.equal(after.hash, before.hash);
        assert.equal(after.dbSize, before.dbSize);
        console.log(`  after ${m3.name}'s restart: applied ${after.appliedIndex}, dbSize ${after.dbSize} on all`);
      });

      await t.step(
        "a member down while leases were granted and NOSPACE was raised installs the leader's snapshot: same alarm, leases, size",
        async () => {
          const leases: string[] = [];
          for (let i = 0; i < 2; i++) {
            const id = /lease ([0-9a-f]+) granted/.exec(await etcdctlOk(m2.endpoint, ["lease", "grant", "600"]))![1];
            await etcdctlOk(m2.endpoint, ["put", "--lease", id, `leased/${i}`, "x"]);
            leases.push(id);
          }
          await c.stop(m3);
          const stoppedAt = (await c.status(m1)).raftIndex;
          for (let i = 0; (await tryPut(c.client(m2), `down/${i}`, value)) === "ok"; i++) {
            assert.ok(i < 60, "no NOSPACE while m3 was down");
          }
          // entries that cost no space pass under the alarm; the leader keeps 5000 entries after its snapshot, so
          // write past them: m3 can only catch up through a snapshot, which must carry the alarm and the leases
          const cl = c.client(m1);
          const del = { key: Buffer.from("absent") };
          while ((await c.status(m1)).raftIndex - stoppedAt < 5000 + 4 * 20) {
            await Promise.all(Array.from({ length: 64 }, () => cl.call(cl.kv, "DeleteRange", del, 10000)));
          }
          await c.restart(m3);
          const st = await c.assertSameState({ timeoutMs: 30000 });
          assert.match(m3.currentOutput(), /restored state from the leader's snapshot at index/);
          assert.equal(st.alarms.length, 1, `one NOSPACE alarm after the snapshot: ${st.alarms}`);
          const listed = await etcdctlOk(m3.endpoint, ["lease", "list"]);
          for (const id of leases) assert.ok(listed.includes(id), `${m3.name} lost lease ${id}: ${listed}`);
          // m3, without a quota of its own, refuses like the others: the alarm came with the snapshot
          assert.match(await tryPut(c.client(m3), "after/snapshot", "x"), NO_SPACE);
          await c.assertSameState();
          console.log(`  ${m3.name} caught up by snapshot: alarms ${st.alarms}, dbSize ${st.dbSize}, hash ${st.hash}`);
        },
      );
    } catch (e) {
      console.log(c.logs());
      throw e;
    } finally {
      await c.destroy();
    }
  },
});
