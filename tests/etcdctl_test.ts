/**
 * etcdctl 3.4 (Debian's /usr/bin/etcdctl) against the server under test: exact outputs, error strings and revisions
 * as produced with the real etcd 3.4. Run against real etcd with `ETCD_SERVER=/usr/bin/etcd deno test -A <file>`.
 */
import assert from "node:assert/strict";
import { startServer } from "./lib/server.ts";
import { etcdctl, etcdctlOk, etcdctlSpawn, parseJson } from "./lib/etcdctl.ts";

const b64 = (s: string) => btoa(s);
/** etcdctl prints lease IDs as %016x and member IDs as %x (no padding). */
const hex = (id: string | number) => BigInt(id).toString(16).padStart(16, "0");
const memberHex = (id: string | number) => BigInt(id).toString(16);

Deno.test("etcdctl 3.4 client compatibility", async (t) => {
  const srv = await startServer();
  const ep = srv.endpoint;
  const ctl = (...args: string[]) => etcdctlOk(ep, args);
  const json = async (...args: string[]) => parseJson(await etcdctlOk(ep, [...args, "-w", "json"]));
  /** Current store revision (a Range of a missing key does not change it). */
  const rev = async (): Promise<number> => (await json("get", "no-such-key/rev-probe")).header.revision;
  const fails = async (args: string[], code: number, stderr: string, stdin?: string | Uint8Array) => {
    const r = await etcdctl(ep, args, stdin);
    assert.equal(r.code, code, `etcdctl ${args.join(" ")}: ${r.stdout}${r.stderr}`);
    assert.ok(r.stderr.includes(stderr), `expected stderr to include ${JSON.stringify(stderr)}, got:\n${r.stderr}`);
    assert.equal(r.stdout, "");
  };

  try {
    await t.step("put/get: simple output, --prev-kv, binary values from stdin, -w json", async () => {
      const r = await rev();
      assert.equal(await ctl("put", "kv/a", "hello world"), "OK\n");
      assert.equal(await ctl("get", "kv/a"), "kv/a\nhello world\n");
      const bin = new Uint8Array([0x61, 0x00, 0x62, 0xff, 0x63, 0x0a, 0x0a]);
      assert.equal(await etcdctlOk(ep, ["put", "kv/bin"], bin), "OK\n");
      const g = await json("get", "kv/bin");
      assert.deepEqual(g.kvs, [
        { key: b64("kv/bin"), create_revision: r + 2, mod_revision: r + 2, version: 1, value: "YQBi/2MKCg==" },
      ]);
      assert.equal(g.count, 1);
      assert.equal(g.header.revision, r + 2);
      assert.ok(g.header.raft_term >= 1);
      assert.ok(BigInt(g.header.cluster_id) > 0n && BigInt(g.header.member_id) > 0n);
      assert.equal(
        await ctl("get", "kv/bin", "--hex"),
        "\\x6b\\x76\\x2f\\x62\\x69\\x6e\n\\x61\\x00\\x62\\xff\\x63\\x0a\\x0a\n",
      );

      assert.equal(await ctl("put", "kv/a", "second", "--prev-kv"), "OK\nkv/a\nhello world\n");
      assert.deepEqual((await json("get", "kv/a")).kvs, [
        { key: b64("kv/a"), create_revision: r + 1, mod_revision: r + 3, version: 2, value: b64("second") },
      ]);
      assert.equal(await ctl("put", "--", "kv/dash", "-x-"), "OK\n");
      assert.equal(await ctl("get", "kv/dash", "--print-value-only"), "-x-\n");
      assert.equal(await ctl("put", "kv/uni", "héllo ✓\nline 2"), "OK\n");
      assert.equal(await ctl("get", "kv/uni"), "kv/uni\nhéllo ✓\nline 2\n");
      assert.equal(await ctl("put", "kv/empty", ""), "OK\n");
      assert.deepEqual((await json("get", "kv/empty")).kvs, [
        { key: b64("kv/empty"), create_revision: r + 6, mod_revision: r + 6, version: 1 },
      ]);
      // A missing key: only a header (kvs and count are omitted when empty/zero), revision unchanged.
      const none = await json("get", "kv/missing");
      assert.deepEqual(Object.keys(none), ["header"]);
      assert.equal(none.header.revision, r + 6);
      assert.equal(await ctl("get", "kv/missing"), "");
      assert.equal(none.header.member_id, g.header.member_id);
      assert.equal(none.header.cluster_id, g.header.cluster_id);
    });

    await t.step("get: --prefix, --from-key, ranges, --limit, --sort-by/--order, --keys-only, --rev", async () => {
      const r = await rev();
      for (const [k, v] of [["~r/b", "3"], ["~r/a", "2"], ["~r/c", "1"], ["~r/d", "0"], ["~r/a", "22"], ["~s", "9"]]) {
        assert.equal(await ctl("put", k, v), "OK\n");
      }
      // ~r/b r+1, ~r/a r+2 (v1) and r+5 (v2), ~r/c r+3, ~r/d r+4, ~s r+6
      assert.equal(await ctl("get", "~r/", "--prefix"), "~r/a\n22\n~r/b\n3\n~r/c\n1\n~r/d\n0\n");
      assert.equal(await ctl("get", "~r/c", "--from-key", "--keys-only"), "~r/c\n\n~r/d\n\n~s\n\n");
      assert.equal(await ctl("get", "~r/b", "~r/d"), "~r/b\n3\n~r/c\n1\n");
      const lim = await json("get", "~r/", "--prefix", "--limit", "2");
      assert.deepEqual(lim.kvs.map((kv: { key: string }) => atob(kv.key)), ["~r/a", "~r/b"]);
      assert.equal(lim.more, true);
      assert.equal(lim.count, 4);
      assert.equal(await ctl("get", "~r/", "--prefix", "--sort-by=VALUE", "--print-value-only"), "0\n1\n22\n3\n");
      assert.equal(
        await ctl("get", "~r/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--keys-only"),
        "~r/a\n\n~r/d\n\n~r/c\n\n~r/b\n\n",
      );
      assert.equal(await ctl("get", "~r/", "--prefix", "--order=DESCEND", "--print-value-only"), "0\n1\n3\n22\n");
      assert.equal(await ctl("get", "~r/", "--prefix", "--sort-by=CREATE", "--print-value-only"), "3\n22\n1\n0\n");
      assert.equal(
        await ctl("get", "~r/", "--prefix", "--sort-by=KEY", "--order=DESCEND", "--limit", "1"),
        "~r/d\n0\n",
      );
      const top = await json("get", "~r/", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit", "1");
      assert.deepEqual(top.kvs, [
        { key: b64("~r/a"), create_revision: r + 2, mod_revision: r + 5, version: 2, value: b64("22") },
      ]);
      assert.equal(top.more, true);
      assert.equal(top.count, 4);

      // Reads at a past revision.
      assert.equal(await ctl("get", "~r/a", "--rev", String(r + 2)), "~r/a\n2\n");
      assert.equal(await ctl("get", "~r/", "--prefix", "--keys-only", "--rev", String(r + 2)), "~r/a\n\n~r/b\n\n");
      assert.equal(await ctl("get", "~r/a", "--rev", String(r + 1)), "");
      const past = await json("get", "~r/a", "--rev", String(r + 4));
      assert.equal(past.header.revision, r + 6, "the header carries the current revision, not the requested one");
      assert.deepEqual(past.kvs, [
        { key: b64("~r/a"), create_revision: r + 2, mod_revision: r + 2, version: 1, value: b64("2") },
      ]);
    });

    await t.step("del: single key with --prev-kv, --prefix, missing key", async () => {
      const r = await rev();
      for (const k of ["d/1", "d/2", "d/3", "dx"]) await ctl("put", k, "v" + k);
      assert.equal(await ctl("del", "d/1", "--prev-kv"), "1\nd/1\nvd/1\n");
      assert.equal(await rev(), r + 5);
      assert.equal(await ctl("del", "d/", "--prefix"), "2\n");
      assert.equal(await rev(), r + 6, "one delete of two keys is one revision");
      assert.equal(await ctl("del", "d/", "--prefix"), "0\n");
      assert.equal(await ctl("del", "d/none"), "0\n");
      assert.equal(await rev(), r + 6, "deleting nothing does not create a revision");
      assert.equal(await ctl("get", "d/", "--prefix"), "");
      assert.equal(await ctl("get", "dx", "--print-value-only"), "vdx\n");
      const del = await json("del", "dx", "--prev-kv");
      assert.equal(del.header.revision, r + 7);
      assert.equal(del.deleted, 1);
      assert.deepEqual(del.prev_kvs, [
        { key: b64("dx"), create_revision: r + 4, mod_revision: r + 4, version: 1, value: b64("vdx") },
      ]);
      // Re-creating a deleted key starts a new generation: version 1, new create revision.
      await ctl("put", "d/2", "again");
      assert.deepEqual((await json("get", "d/2")).kvs, [
        { key: b64("d/2"), create_revision: r + 8, mod_revision: r + 8, version: 1, value: b64("again") },
      ]);
    });

    await t.step("txn from stdin: compares on value/version/create/mod, success and failure branches", async () => {
      const r = await rev();
      await ctl("put", "t/k1", "v1"); // r+1
      const txn = (script: string, ...flags: string[]) => etcdctlOk(ep, ["txn", ...flags], script);
      assert.equal(
        await txn(
          `value("t/k1") = "v1"\nversion("t/k1") = "1"\ncreate("t/k1") = "${r + 1}"\nmod("t/k1") = "${r + 1}"\n\n` +
            `put t/k1 "new v"\nget t/k1\n\nput t/k2 fail\n\n`,
        ),
        "SUCCESS\n\nOK\n\nt/k1\nnew v\n",
      );
      assert.equal(await rev(), r + 2, "a txn is one revision");
      assert.deepEqual((await json("get", "t/k1")).kvs, [
        { key: b64("t/k1"), create_revision: r + 1, mod_revision: r + 2, version: 2, value: b64("new v") },
      ]);
      // Failure branch, JSON output: inner response headers carry only the revision; "succeeded" is omitted.
      const failed = parseJson(
        await txn(`value("t/k1") = "v1"\n\nput t/k1 x\n\nput t/k2 "fail branch"\nget t/k2\n\n`, "-w", "json"),
      );
      assert.equal(failed.header.revision, r + 3);
      assert.equal(failed.succeeded, undefined);
      assert.deepEqual(failed.responses, [
        { Response: { ResponsePut: { header: { revision: r + 3 } } } },
        {
          Response: {
            ResponseRange: {
              header: { revision: r + 3 },
              kvs: [{
                key: b64("t/k2"),
                create_revision: r + 3,
                mod_revision: r + 3,
                version: 1,
                value: b64("fail branch"),
              }],
              count: 1,
            },
          },
        },
      ]);
      assert.equal(await ctl("get", "t/k1", "--print-value-only"), "new v\n");
      // Greater/less compares; a missing key compares as version/create/mod 0.
      assert.equal(
        await txn(
          `mod("t/k1") > "${r + 1}"\ncreate("t/k1") < "${r + 2}"\nversion("t/missing") = "0"\n\ndel t/k1\n\n\n`,
        ),
        "SUCCESS\n\n1\n",
      );
      assert.equal(await rev(), r + 4);
      // A value compare against a missing key always fails, even "!=".
      assert.equal(await txn(`value("t/missing") != "x"\n\nput t/k3 y\n\n\n`), "FAILURE\n");
      assert.equal(await rev(), r + 4, "a txn that writes nothing does not create a revision");
      const ok = parseJson(await txn(`version("t/missing") = "0"\n\nput t/k3 y\n\n\n`, "-w", "json"));
      assert.equal(ok.succeeded, true);
      assert.equal(ok.header.revision, r + 5);
      assert.deepEqual(ok.responses, [{ Response: { ResponsePut: { header: { revision: r + 5 } } } }]);
      // Interactive mode prints prompts.
      assert.equal(
        await txn(`version("t/k3") = "1"\n\nget t/k3\n\n\n`, "-i"),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nt/k3\ny\n",
      );
    });

    await t.step("compaction: past revisions fail as compacted, future ones as future", async () => {
      const r = await rev();
      for (const v of ["a", "b", "c"]) await ctl("put", "c/k", v); // r+1..r+3
      assert.equal(await ctl("compaction", String(r + 2)), `compacted revision ${r + 2}\n`);
      assert.equal(await rev(), r + 3, "compaction does not create a revision");
      const compacted = "Error: etcdserver: mvcc: required revision has been compacted";
      const future = "Error: etcdserver: mvcc: required revision is a future revision";
      await fails(["get", "c/k", "--rev", String(r + 1)], 1, compacted);
      assert.equal(await ctl("get", "c/k", "--rev", String(r + 2)), "c/k\nb\n");
      assert.equal(await ctl("get", "c/k"), "c/k\nc\n");
      await fails(["get", "c/k", "--rev", String(r + 100)], 1, future);
      await fails(["compaction", String(r + 2)], 1, compacted);
      await fails(["compaction", String(r + 100)], 1, future);
      assert.equal(await ctl("compaction", "--physical", String(r + 3)), `compacted revision ${r + 3}\n`);
      await fails(["get", "c/k", "--rev", String(r + 2)], 1, compacted);
      assert.equal(await ctl("get", "c/k", "--rev", String(r + 3)), "c/k\nc\n");
      const [h] = await json("endpoint", "hashkv");
      assert.equal(h.HashKV.compact_revision, r + 3);
      assert.equal(h.HashKV.header.revision, r + 3);
      // A watch starting below the compaction is canceled by the server.
      const w = await etcdctl(ep, ["watch", "c/k", "--rev", String(r + 1)]);
      assert.equal(w.code, 5);
      assert.equal(w.stdout, "");
      assert.ok(
        w.stderr.includes(
          "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n" +
            "Error: watch is canceled by the server",
        ),
        w.stderr,
      );
    });

    await t.step("watch: live events with --prefix, --rev replay, -w json", async () => {
      const live = etcdctlSpawn(ep, ["watch", "w/", "--prefix"]);
      const js = etcdctlSpawn(ep, ["watch", "w/", "--prefix", "-w", "json"]);
      try {
        // The watch has no "created" output: put a marker key until both watchers report it.
        for (let i = 0;; i++) {
          await ctl("put", "w/sync", `sync${i}`);
          try {
            await live.waitFor((o) => o.endsWith(`PUT\nw/sync\nsync${i}\n`), 300);
            await js.waitFor((o) => o.includes(`"value":"${b64(`sync${i}`)}"`), 300);
            break;
          } catch (e) {
            if (i === 30) throw e;
          }
        }
        const liveStart = live.stdout().length;
        const jsStart = js.stdout().split("\n").filter((l) => l).length;
        const r = await rev();
        await ctl("put", "w/a", "1"); // r+1
        await ctl("put", "w/b", "two words"); // r+2
        await ctl("del", "w/a"); // r+3
        await ctl("put", "wx", "not watched"); // r+4
        await ctl("put", "w/a", "3"); // r+5
        await ctl("put", "w/end", "x"); // r+6
        await live.waitFor((o) => o.endsWith("PUT\nw/end\nx\n"));
        assert.equal(
          live.stdout().slice(liveStart),
          "PUT\nw/a\n1\nPUT\nw/b\ntwo words\nDELETE\nw/a\n\nPUT\nw/a\n3\nPUT\nw/end\nx\n",
        );
        await js.waitFor((o) => o.includes(`"mod_revision":${r + 6}`));
        const responses = js.stdout().split("\n").filter((l) => l).slice(jsStart).map(parseJson);
        for (const resp of responses) {
          assert.equal(resp.Canceled, false);
          assert.equal(resp.Created, false);
          assert.equal(resp.CompactRevision, 0);
          assert.equal(resp.Header.revision, resp.Events.at(-1).kv.mod_revision);
        }
        // PUT is type 0 and omitted; DELETE (1) carries only key and mod_revision.
        assert.deepEqual(responses.flatMap((x) => x.Events), [
          { kv: { key: b64("w/a"), create_revision: r + 1, mod_revision: r + 1, version: 1, value: b64("1") } },
          { kv: { key: b64("w/b"), create_revision: r + 2, mod_revision: r + 2, version: 1, value: b64("two words") } },
          { type: 1, kv: { key: b64("w/a"), mod_revision: r + 3 } },
          { kv: { key: b64("w/a"), create_revision: r + 5, mod_revision: r + 5, version: 1, value: b64("3") } },
          { kv: { key: b64("w/end"), create_revision: r + 6, mod_revision: r + 6, version: 1, value: b64("x") } },
        ]);

        // Replay history from a past revision (inclusive) up to now, then keep watching.
        const replay = etcdctlSpawn(ep, ["watch", "w/", "--prefix", "--rev", String(r + 2), "--prev-kv"]);
        try {
          await replay.waitFor((o) => o.endsWith("PUT\nw/end\nx\n"));
          assert.equal(
            replay.stdout(),
            "PUT\nw/b\ntwo words\nDELETE\nw/a\n1\nw/a\n\nPUT\nw/a\n3\nPUT\nw/end\nx\n", // prev kv first
          );
          await ctl("put", "w/b", "later");
          await replay.waitFor((o) => o.endsWith("PUT\nw/b\ntwo words\nw/b\nlater\n"));
        } finally {
          await replay.stop();
        }
      } finally {
        await Promise.all([live.stop(), js.stop()]);
      }
    });

    await t.step("lease: grant (minimum TTL), keep-alive, timetolive --keys, list, revoke deletes keys", async () => {
      const g = await json("lease", "grant", "60");
      assert.equal(g.TTL, 60);
      assert.equal(g.Error, "");
      const id = hex(g.ID);
      assert.equal(await ctl("put", "l/k1", "v", `--lease=${id}`), "OK\n");
      assert.equal(await ctl("put", "l/k2", "v", `--lease=${id}`), "OK\n");
      assert.equal(BigInt((await json("get", "l/k1")).kvs[0].lease), BigInt(g.ID));
      assert.equal(await ctl("lease", "keep-alive", "--once", id), `lease ${id} keepalived with TTL(60)\n`);

      const ttl = (await ctl("lease", "timetolive", id, "--keys")).match(
        /^lease ([0-9a-f]{16}) granted with TTL\(60s\), remaining\((\d+)s\), attached keys\(\[(.*)\]\)\n$/,
      );
      assert.ok(ttl);
      assert.equal(ttl[1], id);
      assert.ok(+ttl[2] >= 57 && +ttl[2] <= 60, ttl[0]);
      assert.deepEqual(ttl[3].split(" ").sort(), ["l/k1", "l/k2"]);
      const tj = await json("lease", "timetolive", id, "--keys");
      assert.equal(BigInt(tj.id), BigInt(g.ID));
      assert.equal(tj["granted-ttl"], 60);
      assert.deepEqual([...tj.keys].sort(), [b64("l/k1"), b64("l/k2")]);

      const list = await ctl("lease", "list");
      const ids = list.split("\n").slice(1, -1);
      assert.equal(list.split("\n")[0], `found ${ids.length} leases`);
      assert.ok(ids.includes(id), list);
      const lj = await json("lease", "list");
      assert.ok(lj.leases.some((l: { id: string }) => BigInt(l.id) === BigInt(g.ID)));

      // A streaming keep-alive prints one line per renewal.
      const ka = etcdctlSpawn(ep, ["lease", "keep-alive", id]);
      try {
        await ka.waitFor((o) => o.includes("\n"));
        assert.equal(ka.stdout().split("\n")[0], `lease ${id} keepalived with TTL(60)`);
      } finally {
        await ka.stop();
      }

      const r = await rev();
      assert.equal(await ctl("lease", "revoke", id), `lease ${id} revoked\n`);
      assert.equal(await rev(), r + 1, "revoking deletes both keys in one revision");
      assert.equal(await ctl("get", "l/k", "--prefix"), "");
      assert.equal(await ctl("lease", "timetolive", id), `lease ${id} already expired\n`);
      await fails(["lease", "revoke", id], 1, "Error: failed to revoke lease (etcdserver: requested lease not found)");
      await fails(["lease", "keep-alive", "--once", id], 2, "Error: etcdserver: requested lease not found");
      await fails(["put", "l/k3", "v", `--lease=${id}`], 1, "Error: etcdserver: requested lease not found");
      assert.ok(!(await ctl("lease", "list")).includes(id));

      // A 2 s lease (granted only now: on a loaded machine the steps above can take longer than 2 s) expires by
      // itself and takes its key with it.
      const short = (await ctl("lease", "grant", "1")).match(/^lease ([0-9a-f]{16}) granted with TTL\(2s\)\n$/);
      assert.ok(short, "etcd raises a 1 s TTL to its 2 s minimum");
      await ctl("put", "l/short", "x", "--lease", short[1]);
      assert.ok((await ctl("lease", "list")).includes(short[1]));
      const deadline = Date.now() + 8000;
      while (await ctl("get", "l/short") !== "") {
        assert.ok(Date.now() < deadline, "lease with TTL 2 s did not expire");
        await new Promise((res) => setTimeout(res, 200));
      }
      assert.equal(await ctl("lease", "timetolive", short[1]), `lease ${short[1]} already expired\n`);
    });

    await t.step("member list, endpoint status/health/hashkv, alarm list, defrag, snapshot save", async () => {
      const ml = await json("member", "list");
      assert.equal(ml.members.length, 1);
      const m = ml.members[0];
      assert.equal(m.ID, ml.header.member_id);
      assert.equal(m.name, "default");
      assert.deepEqual(m.peerURLs, [srv.peerUrl]);
      assert.deepEqual(m.clientURLs, [srv.clientUrl]);
      assert.equal(m.isLearner, undefined);
      const mid = memberHex(m.ID);
      assert.equal(await ctl("member", "list"), `${mid}, started, default, ${srv.peerUrl}, ${srv.clientUrl}, false\n`);

      const r = await rev();
      const [st] = await json("endpoint", "status");
      assert.equal(st.Endpoint, ep);
      assert.equal(st.Status.leader, m.ID);
      assert.equal(st.Status.header.member_id, m.ID);
      assert.equal(st.Status.header.cluster_id, ml.header.cluster_id);
      assert.equal(st.Status.header.revision, r);
      assert.equal(st.Status.raftTerm, st.Status.header.raft_term);
      assert.match(st.Status.version, /^\d+\.\d+\.\d+/);
      assert.ok(st.Status.dbSize > 0 && st.Status.raftIndex > 0);
      const line = await ctl("endpoint", "status");
      assert.ok(line.startsWith(`${ep}, ${mid}, ${st.Status.version}, `), line);
      assert.match(line, /, true, false, \d+, \d+, \d+, \n$/);

      const health = await etcdctl(ep, ["endpoint", "health"]);
      assert.equal(health.code, 0);
      assert.equal(health.stdout, "");
      assert.match(health.stderr, new RegExp(`^${ep} is healthy: successfully committed proposal: took = `));
      const [hj] = await json("endpoint", "health");
      assert.equal(hj.endpoint, ep);
      assert.equal(hj.health, true);

      const [h1] = await json("endpoint", "hashkv");
      const [h2] = await json("endpoint", "hashkv");
      assert.equal(h1.Endpoint, ep);
      assert.equal(h1.HashKV.header.revision, r);
      assert.equal(h1.HashKV.hash, h2.HashKV.hash, "hash is stable without writes");
      assert.equal(await ctl("endpoint", "hashkv"), `${ep}, ${h1.HashKV.hash}\n`);
      await ctl("put", "hash/k", "v");
      const [h3] = await json("endpoint", "hashkv");
      assert.notEqual(h3.HashKV.hash, h1.HashKV.hash, "a write changes the hash");
      assert.equal(h3.HashKV.header.revision, r + 1);

      assert.equal(await ctl("alarm", "list"), "");
      assert.equal(await ctl("defrag"), `Finished defragmenting etcd member[${ep}]\n`);
      const dir = await Deno.makeTempDir({ prefix: "egsnap-" });
      try {
        const path = `${dir}/snap.db`;
        assert.equal(await ctl("snapshot", "save", path), `Snapshot saved at ${path}\n`);
        assert.ok((await Deno.stat(path)).size > 0);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      assert.equal(await ctl("get", "hash/k", "--print-value-only"), "v\n", "still serving after defrag/snapshot");
    });

    await t.step("a 1.6 MiB put fails as too large and the server keeps serving", async () => {
      const r = await rev();
      const big = new Uint8Array(Math.ceil(1.6 * 1024 * 1024)).fill(0x78);
      await fails(["put", "big/k"], 1, "Error: etcdserver: request is too large", big);
      assert.equal(await rev(), r);
      const ok = new Uint8Array(1_000_000).fill(0x79);
      assert.equal(await etcdctlOk(ep, ["put", "big/k"], ok), "OK\n");
      const g = await json("get", "big/k");
      assert.equal(atob(g.kvs[0].value).length, 1_000_000);
      assert.equal(g.header.revision, r + 1);
    });
  } finally {
    await srv.stop();
    await Deno.remove(srv.dataDir, { recursive: true }).catch(() => {});
  }
});
