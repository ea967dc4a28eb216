/**
 * python3-etcd3 0.12 (Debian's, run with /usr/bin/python3) against the server under test. Each step runs one scenario
 * of tests/clients/python_client.py, which asserts etcd's behaviour itself and prints what it observed as JSON.
 */
import assert from "node:assert/strict";
import { startServer } from "./lib/server.ts";

const script = new URL("./clients/python_client.py", import.meta.url).pathname;

async function scenario(endpoint: string, name: string): Promise<Record<string, unknown>> {
  const [host, port] = endpoint.split(":");
  const out = await new Deno.Command("/usr/bin/python3", {
    args: [script, host, port, name],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `python scenario ${name} failed (exit ${out.code}):\n${stderr}${stdout}`);
  return JSON.parse(stdout);
}

Deno.test("python3-etcd3 client compatibility", async (t) => {
  const srv = await startServer();
  try {
    await t.step("put/get, get_prefix, get_range, delete, put_if_not_exists, replace", async () => {
      assert.equal((await scenario(srv.endpoint, "kv")).revision_delta, 10);
    });
    await t.step("transaction with value/version/create/mod compares", async () => {
      assert.equal((await scenario(srv.endpoint, "txn")).revision_delta, 4);
    });
    await t.step("lease: grant, put with lease, refresh, keys, revoke", async () => {
      const r = await scenario(srv.endpoint, "lease");
      assert.ok(BigInt(r.lease_id as string) > 0n);
    });
    await t.step("watch: prefix callback, iterator with a writer thread, replay with prev_kv", async () => {
      assert.equal((await scenario(srv.endpoint, "watch")).events, 8);
    });
    await t.step("status() finds the leader among members; alarms, defragment, hash", async () => {
      const r = await scenario(srv.endpoint, "cluster");
      assert.equal(r.name, srv.name);
      assert.deepEqual(r.peer_urls, [srv.peerUrl]);
      assert.deepEqual(r.client_urls, [srv.clientUrl]);
      assert.match(r.version as string, /^\d+\.\d+\.\d+/);
    });
    await t.step("compact: old revisions and watches fail as compacted", async () => {
      await scenario(srv.endpoint, "compact");
    });
    await t.step("binary keys and values: all 256 byte values", async () => {
      assert.equal((await scenario(srv.endpoint, "binary")).keys, 258);
    });
  } finally {
    await srv.stop();
    await Deno.remove(srv.dataDir, { recursive: true }).catch(() => {});
  }
});
