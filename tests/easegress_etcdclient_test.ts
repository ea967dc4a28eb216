/**
 * The member layer's etcd client against this project's etcd server (and, with ETCD_SERVER=/usr/bin/etcd, the real
 * one): KV, guarded transactions, leases (grant, time-to-live, keep-alive-once, revoke deleting attached keys),
 * member discovery, failover past a dead endpoint, and a prefix watch that resumes after the server restarts without
 * losing or repeating events.
 */
import assert from "node:assert/strict";
import { endpointTarget, EtcdClient, prefixEnd, type WatchEvent } from "../server/etcdclient/client.ts";
import { startServer } from "./lib/server.ts";
import { freePorts } from "./lib/ports.ts";
import { waitFor } from "./easegress_harness.ts";

Deno.test("etcdclient helpers", () => {
  assert.equal(endpointTarget("http://127.0.0.1:2380"), "127.0.0.1:2380");
  assert.equal(endpointTarget("http://localhost"), "localhost:80");
  assert.equal(endpointTarget("127.0.0.1:1"), "127.0.0.1:1");
  assert.equal(prefixEnd("/a/").toString(), "/a0");
  assert.deepEqual([...prefixEnd("a\u00ff")], [0x61, 0xc3, 0xc0]); // UTF-8 bytes: the last one is incremented
});

Deno.test({
  name: "etcdclient: kv, txn, leases, discovery, failover, watch resume across a restart",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const [cp, pp, dead] = await freePorts(3);
    const dataDir = await Deno.makeTempDir({ prefix: "egclient-" });
    let srv = await startServer({ clientPort: cp, peerPort: pp, dataDir, name: "c1" });
    let client: EtcdClient | undefined;
    try {
      // a dead endpoint first: the client moves on; MemberList replaces the list with the client URLs
      client = await EtcdClient.connect({
        endpoints: [`http://127.0.0.1:${dead}`, `http://127.0.0.1:${pp}`],
        requestTimeoutMs: 5000,
      });
      assert.deepEqual(client.endpoints, [`127.0.0.1:${cp}`]);
      const members = await client.memberList();
      assert.equal(members.length, 1);
      assert.equal(members[0].name, "c1");

      assert.equal(await client.get("/x"), undefined);
      await client.put("/x/a", "1");
      await client.put("/x/b", "2");
      assert.equal((await client.get("/x/a"))?.value, "1");
      assert.deepEqual((await client.getPrefix("/x/")).map((kv) => [kv.key, kv.value]), [["/x/a", "1"], ["/x/b", "2"]]);
      assert.equal(await client.putAndDelete({ "/x/c": "3", "/x/a": null }, undefined, { "/x/c": 0 }), true);
      assert.equal(await client.putAndDelete({ "/x/c": "4" }, undefined, { "/x/c": 0 }), false);
      assert.deepEqual((await client.getPrefix("/x/")).map((kv) => kv.key), ["/x/b", "/x/c"]);
      assert.equal(await client.deletePrefix("/x/"), 2);

      const lease = await client.leaseGrant(9_000_000_000);
      assert.ok(BigInt(lease) > 0n);
      assert.ok((await client.leaseTimeToLive(lease)) > 8_000_000_000);
      assert.ok((await client.leaseKeepAliveOnce(lease)) > 8_000_000_000);
      await client.put("/leased/k", "v", lease);
      await client.leaseRevoke(lease);
      assert.equal(await client.get("/leased/k"), undefined);
      assert.equal(await client.leaseTimeToLive(lease), -1);
      await assert.rejects(client.leaseKeepAliveOnce(lease), /requested lease not found/);

      // watch from now; events survive a SIGKILL + restart of the server on the same data and ports
      const seen: WatchEvent[] = [];
      const w = client.watch("/w/", { prefix: true }, (evs) => seen.push(...evs));
      await new Promise((r) => setTimeout(r, 300));
      await client.put("/w/1", "a");
      await client.delete("/w/1");
      await waitFor("first events", () => seen.length === 2, 5000);
      await srv.kill();
      srv = await startServer({ clientPort: cp, peerPort: pp, dataDir, name: "c1" });
      await client.put("/w/2", "b");
      await client.put("/w/3", "c");
      await waitFor("events after restart", () => seen.length === 4, 15000);
      assert.deepEqual(seen.map((e) => [e.type, e.kv.key, e.kv.value]), [
        ["put", "/w/1", "a"],
        ["delete", "/w/1", ""],
        ["put", "/w/2", "b"],
        ["put", "/w/3", "c"],
      ]);
      const revs = seen.map((e) => e.kv.modRevision);
      assert.deepEqual(revs, [...revs].sort((a, b) => a - b));
      w.close();
    } finally {
      client?.close();
      await srv.kill();
    }
  },
});
