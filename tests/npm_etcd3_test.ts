/**
 * The npm etcd3 client (1.1.2, @grpc/grpc-js underneath) against the server under test: KV builders, transactions
 * and STM, leases with automatic keepalive, watchers, maintenance status, member list and namespaces.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Etcd3, EtcdLeaseInvalidError, type IKeyValue } from "etcd3";
import { startServer } from "./lib/server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Rejects if `p` does not settle within `ms` (a server that never confirms a watch would hang the test). */
function within<T>(p: Promise<T>, what: string, ms = 10000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

// grpc-js keeps channel timers and sockets that outlive client.close() by a tick.
Deno.test({
  name: "npm etcd3 client compatibility",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const srv = await startServer();
    const client = new Etcd3({
      hosts: srv.clientUrl,
      defaultCallOptions: (ctx) => ctx.isStream ? {} : { deadline: Date.now() + 10000 },
    });
    /** Current store revision, as a number (etcd3 returns 64-bit integers as decimal strings). */
    const rev = async () => Number((await client.get("no-such-key/rev-probe").exec()).header.revision);
    try {
      await t.step("put/get/getAll().prefix(), sorting, buffers, delete", async () => {
        const r = await rev();
        await client.put("n/a").value("1");
        await client.put("n/c").value("3");
        await client.put("n/b").value("2");
        await client.put("n0").value("outside");
        assert.equal(await client.get("n/a").string(), "1");
        assert.equal(await client.get("n/missing").string(), null);
        assert.equal(await client.get("n/missing").exists(), false);
        assert.deepEqual(await client.getAll().prefix("n/").strings(), { "n/a": "1", "n/b": "2", "n/c": "3" });
        assert.deepEqual(await client.getAll().prefix("n/").keys(), ["n/a", "n/b", "n/c"]);
        assert.equal(await client.getAll().prefix("n/").count(), 3);
        assert.deepEqual(await client.getAll().prefix("n/").sort("Key", "Descend").limit(2).keys(), ["n/c", "n/b"]);
        assert.deepEqual(await client.getAll().prefix("n/").sort("Create", "Ascend").keys(), ["n/a", "n/c", "n/b"]);
        const res = await client.get("n/c").exec();
        assert.equal(res.header.revision, String(r + 4));
        assert.equal(res.count, "1");
        assert.equal(res.more, false);
        const kv = res.kvs[0];
        assert.deepEqual(
          [kv.key.toString(), kv.value.toString(), kv.create_revision, kv.mod_revision, kv.version, kv.lease],
          ["n/c", "3", String(r + 2), String(r + 2), "1", "0"],
        );
        assert.equal(await client.get("n/a").revision(r + 1).string(), "1");
        assert.equal(await client.get("n/b").revision(r + 1).string(), null);

        const bin = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x0a]);
        await client.put(Buffer.from([0xff, 0x00])).value(bin);
        assert.deepEqual(await client.get(Buffer.from([0xff, 0x00])).buffer(), bin);
        const prev = await client.put("n/a").value("11").getPrevious();
        assert.equal(prev.value.toString(), "1");
        assert.equal(prev.version, "1");

        assert.equal((await client.delete().key("n/a").exec()).deleted, "1");
        const gone = await client.delete().prefix("n/").getPrevious();
        assert.deepEqual(gone.map((x) => x.key.toString()).sort(), ["n/b", "n/c"]);
        assert.equal((await client.delete().prefix("n/").exec()).deleted, "0");
        assert.equal(await client.get("n0").string(), "outside");
        await client.delete().key(Buffer.from([0xff, 0x00]));
        assert.equal(await rev(), r + 9);
      });

      await t.step("if().then().else() transactions and STM", async () => {
        const r = await rev();
        await client.put("tx/k").value("v1"); // r+1
        const ok = await client.if("tx/k", "Value", "==", "v1")
          .and("tx/k", "Version", "==", 1)
          .and("tx/k", "Create", "==", r + 1)
          .and("tx/k", "Mod", "<", r + 2)
          .then(client.put("tx/k").value("v2"), client.get("tx/k"))
          .else(client.put("tx/other").value("failed"))
          .commit();
        assert.equal(ok.succeeded, true);
        assert.equal(ok.header.revision, String(r + 2));
        assert.equal(ok.responses[1].response_range?.kvs?.[0].value.toString(), "v2");
        const failed = await client.if("tx/k", "Value", "==", "v1")
          .then(client.put("tx/k").value("v3"))
          .else(client.put("tx/other").value("failed"), client.delete().key("tx/k"))
          .commit();
        assert.equal(failed.succeeded, false);
        assert.equal(failed.responses[1].response_delete_range?.deleted, "1");
        assert.equal(await client.get("tx/other").string(), "failed");
        assert.equal(await client.get("tx/k").string(), null);
        assert.equal(await rev(), r + 3);

        // Concurrent read-modify-write through the STM: conflicts are detected and retried.
        await client.put("tx/counter").value(0);
        const incr = () =>
          client.stm({ retries: 20 }).transact(async (tx) => {
            const n = await tx.get("tx/counter").number();
            await tx.put("tx/counter").value((n ?? 0) + 1);
          });
        await Promise.all([incr(), incr(), incr(), incr()]);
        assert.equal(await client.get("tx/counter").number(), 4);
      });

      await t.step("leases: keepalive keeps keys alive, revoke and expiry delete them", async () => {
        const lease = client.lease(2);
        const id = await within(lease.grant(), "lease granted");
        assert.match(id, /^\d+$/);
        let kept = 0;
        lease.on("keepaliveSucceeded", () => kept++);
        await lease.put("ls/kept").value("v");
        const kv = (await client.get("ls/kept").exec()).kvs[0];
        assert.equal(kv.lease, id);

        const unkept = client.lease(2, { autoKeepAlive: false });
        await unkept.put("ls/expiring").value("v");
        const t0 = Date.now();
        // Without keepalives the 2 s lease expires (etcd checks expiry every 500 ms) and takes its key along.
        await until(async () => !(await client.get("ls/expiring").exists()), "unkept lease to expire", 8000);
        assert.ok(Date.now() - t0 >= 1500, `lease expired after ${Date.now() - t0} ms`);
        await assert.rejects(unkept.keepaliveOnce(), EtcdLeaseInvalidError);
        // Meanwhile the kept lease outlived its TTL thanks to the automatic keepalive.
        await until(() => Date.now() - t0 >= 2500, "TTL to pass");
        assert.ok(kept >= 2, `keepalives: ${kept}`);
        assert.equal(await client.get("ls/kept").string(), "v");
        const once = await lease.keepaliveOnce();
        assert.deepEqual([once.ID, once.TTL], [id, "2"]);

        const r = await rev();
        await lease.revoke();
        assert.equal(lease.revoked(), true);
        assert.equal(await client.get("ls/kept").exists(), false);
        assert.equal(await rev(), r + 1);
      });

      await t.step("watchers: put/delete events, prefix with previous KV, start revision", async () => {
        const r = await rev();
        const w = await within(client.watch().key("wt/k").create(), "watch created");
        const events: string[] = [];
        w.on("put", (kv: IKeyValue) => events.push(`put ${kv.key} ${kv.value} ${kv.mod_revision} ${kv.version}`));
        w.on("delete", (kv: IKeyValue) => events.push(`delete ${kv.key} ${kv.mod_revision}`));
        const pw = await within(client.watch().prefix("wt/").withPreviousKV().create(), "watch created");
        const prevs: string[] = [];
        pw.on("put", (kv: IKeyValue, prev?: IKeyValue) => prevs.push(`${kv.key}=${kv.value} prev=${prev?.value}`));
        pw.on("delete", (kv: IKeyValue, prev?: IKeyValue) => prevs.push(`${kv.key} deleted prev=${prev?.value}`));
        try {
          await client.put("wt/k").value("v1"); // r+1
          await client.put("wt/other").value("o"); // r+2
          await client.put("wt/k").value("v2"); // r+3
          await client.delete().key("wt/k"); // r+4
          await until(() => events.length >= 3 && prevs.length >= 4, "watch events");
          assert.deepEqual(events, [
            `put wt/k v1 ${r + 1} 1`,
            `put wt/k v2 ${r + 3} 2`,
            `delete wt/k ${r + 4}`,
          ]);
          assert.deepEqual(prevs, [
            "wt/k=v1 prev=undefined",
            "wt/other=o prev=undefined",
            "wt/k=v2 prev=v1",
            "wt/k deleted prev=v2",
          ]);
        } finally {
          await within(w.cancel(), "watch canceled");
          await within(pw.cancel(), "watch canceled");
        }

        const replay = await within(client.watch().key("wt/k").startRevision(String(r + 3)).create(), "watch created");
        const replayed: string[] = [];
        replay.on("data", (res) => {
          for (const e of res.events) replayed.push(`${e.type} ${e.kv.key} ${e.kv.mod_revision}`);
        });
        try {
          await until(() => replayed.length >= 2, "replayed events");
          assert.deepEqual(replayed, [`Put wt/k ${r + 3}`, `Delete wt/k ${r + 4}`]);
        } finally {
          await within(replay.cancel(), "watch canceled");
        }
      });

      await t.step("maintenance status and cluster member list agree on the leader", async () => {
        const status = await client.maintenance.status();
        const list = await client.cluster.memberList({});
        assert.equal(list.members.length, 1);
        const m = list.members[0];
        assert.equal(status.leader, m.ID);
        assert.equal(status.header.member_id, m.ID);
        assert.equal(list.header.member_id, m.ID);
        assert.equal(list.header.cluster_id, status.header.cluster_id);
        assert.equal(m.name, srv.name);
        assert.deepEqual(m.peerURLs, [srv.peerUrl]);
        assert.deepEqual(m.clientURLs, [srv.clientUrl]);
        assert.match(status.version, /^\d+\.\d+\.\d+/);
        assert.equal(status.header.revision, String(await rev()));
        assert.ok(Number(status.dbSize) > 0 && Number(status.raftTerm) >= 1);
      });

      await t.step("namespaces prefix every key, range, watch and txn", async () => {
        const ns = client.namespace("ns1/");
        await client.put("ns1").value("not in the namespace");
        await client.put("ns2/a").value("other namespace");
        await ns.put("a").value("x");
        await ns.put("b").value("y");
        assert.equal(await client.get("ns1/a").string(), "x");
        assert.equal(await ns.get("a").string(), "x");
        assert.deepEqual(await ns.getAll().strings(), { a: "x", b: "y" });
        const w = await within(ns.watch().key("a").create(), "watch created");
        const seen: string[] = [];
        w.on("put", (kv: IKeyValue) => seen.push(`${kv.key}=${kv.value}`));
        try {
          const res = await ns.if("a", "Value", "==", "x").then(ns.put("a").value("z")).commit();
          assert.equal(res.succeeded, true);
          await until(() => seen.length === 1, "namespaced watch event");
          assert.deepEqual(seen, ["a=z"], "keys in events are relative to the namespace");
        } finally {
          await within(w.cancel(), "watch canceled");
        }
        assert.equal((await ns.delete().all().exec()).deleted, "2");
        assert.equal(await client.get("ns1").string(), "not in the namespace");
        assert.equal(await client.get("ns2/a").string(), "other namespace");
      });
    } finally {
      client.close();
      await srv.stop();
      await Deno.remove(srv.dataDir, { recursive: true }).catch(() => {});
    }
  },
});
