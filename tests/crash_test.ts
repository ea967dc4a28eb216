/**
 * Durability under SIGKILL: a writer keeps 16 puts of distinct keys `crash/<n> = value-<n>` in flight, the server is
 * SIGKILLed at a random moment, restarted on the same data dir and ports, and every acknowledged put must be there
 * with exactly the revision its response header carried. Revisions must stay dense (each put adds exactly +1), and
 * anything once visible after a restart must stay visible. Unacknowledged (in-flight) puts may or may not survive.
 *
 * The kill moments come from a seeded PRNG; the seed is printed, and `CRASH_SEED=<n>` replays it.
 * Run against the real etcd with `ETCD_SERVER=/usr/bin/etcd deno test -A tests/crash_test.ts`.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { grpcRoot } from "../proto/grpc_js.ts";
import { prng } from "./lib/prng.ts";
import { type RunningServer, serverBinary, startServer } from "./lib/server.ts";

const ROUNDS = 5;
const IN_FLIGHT = 16;
const KILL_MIN_MS = 200;
const KILL_MAX_MS = 1500;
const CALL_TIMEOUT_MS = 10_000;

// deno-lint-ignore no-explicit-any
type KVClient = any;

interface WireKV {
  key: Buffer;
  value: Buffer;
  create_revision: string;
  mod_revision: string;
  version: string;
}

function kvClient(endpoint: string): KVClient {
  return new grpcRoot.etcdserverpb.KV(endpoint, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": -1,
  });
}

function call<T>(client: KVClient, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](req, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err: Error | null, resp: T) => {
      if (err) reject(err);
      else resolve(resp);
    });
  });
}

function waitReady(client: KVClient): Promise<void> {
  return new Promise((resolve, reject) => {
    client.waitForReady(Date.now() + CALL_TIMEOUT_MS, (err: Error | null) => err ? reject(err) : resolve());
  });
}

/** Everything the test knows about the keys written so far, across all rounds. */
interface Ledger {
  /** Next key number to write (keys are never reused, so each key is written at most once). */
  next: number;
  /** key number -> revision from the Put response header. */
  acked: Map<number, number>;
  /** Key numbers sent but never acknowledged (in flight when the server died). */
  uncertain: Set<number>;
  /** key number -> mod_revision observed after some restart: committed, so it must stay. */
  seen: Map<number, number>;
}

interface RoundResult {
  acked: number;
  uncertain: number;
  errorsBeforeKill: string[];
}

/** Streams puts with IN_FLIGHT outstanding until the server dies; SIGKILLs it `killAfterMs` after the first put. */
async function writeUntilKilled(server: RunningServer, ledger: Ledger, killAfterMs: number): Promise<RoundResult> {
  const client = kvClient(server.endpoint);
  const result: RoundResult = { acked: 0, uncertain: 0, errorsBeforeKill: [] };
  let killed = false;
  let stop = false;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  try {
    await waitReady(client);
    const killing = new Promise<void>((resolve) => {
      killTimer = setTimeout(() => {
        killed = true;
        server.kill().then(resolve, resolve);
      }, killAfterMs);
    });
    const worker = async () => {
      while (!stop) {
        const n = ledger.next++;
        try {
          const resp = await call<{ header: { revision: string } }>(client, "Put", {
            key: Buffer.from(`crash/${n}`),
            value: Buffer.from(`value-${n}`),
          });
          ledger.acked.set(n, Number(resp.header.revision));
          result.acked++;
        } catch (e) {
          ledger.uncertain.add(n);
          result.uncertain++;
          if (!killed) result.errorsBeforeKill.push(`crash/${n}: ${(e as Error).message}`);
          stop = true;
        }
      }
    };
    const workers = Array.from({ length: IN_FLIGHT }, worker);
    await Promise.all(workers);
    // Workers only stop on an error; if that came before the kill, still kill now so the round ends.
    if (!killed) {
      clearTimeout(killTimer);
      killed = true;
      await server.kill();
    } else {
      await killing;
    }
  } finally {
    clearTimeout(killTimer);
    client.close();
  }
  return result;
}

/** Reads every crash/ key and checks the ledger's invariants. Returns the number of keys present. */
async function verify(server: RunningServer, ledger: Ledger, label: string): Promise<number> {
  const client = kvClient(server.endpoint);
  try {
    await waitReady(client);
    const resp = await call<{ header: { revision: string }; kvs: WireKV[]; count: string }>(client, "Range", {
      key: Buffer.from("crash/"),
      range_end: Buffer.from("crash0"),
    });
    const storeRev = Number(resp.header.revision);
    assert.equal(resp.kvs.length, Number(resp.count), `${label}: range returned ${resp.kvs.length} of ${resp.count}`);
    const present = new Map<number, WireKV>();
    for (const kv of resp.kvs) {
      const key = kv.key.toString();
      const m = /^crash\/(\d+)$/.exec(key);
      assert.ok(m, `${label}: unexpected key ${JSON.stringify(key)}`);
      const n = Number(m[1]);
      assert.ok(n < ledger.next, `${label}: key ${key} was never written`);
      assert.ok(ledger.acked.has(n) || ledger.uncertain.has(n), `${label}: key ${key} was never sent`);
      assert.equal(kv.value.toString(), `value-${n}`, `${label}: value of ${key}`);
      assert.equal(kv.version, "1", `${label}: version of ${key} (each key is written once)`);
      assert.equal(kv.create_revision, kv.mod_revision, `${label}: create_revision != mod_revision for ${key}`);
      present.set(n, kv);
    }
    // Every acknowledged put is there, at exactly the acknowledged revision.
    let maxAcked = 1;
    const missing: string[] = [];
    for (const [n, rev] of ledger.acked) {
      maxAcked = Math.max(maxAcked, rev);
      const kv = present.get(n);
      if (!kv) {
        missing.push(`crash/${n}@${rev}`);
        continue;
      }
      assert.equal(
        Number(kv.mod_revision),
        rev,
        `${label}: crash/${n} acknowledged at ${rev}, found ${kv.mod_revision}`,
      );
    }
    assert.deepEqual(
      missing.slice(0, 20),
      [],
      `${label}: ${missing.length} acknowledged puts lost after SIGKILL (first 20 shown)`,
    );
    // Whatever was visible after an earlier restart is committed and must still be there, unchanged.
    for (const [n, rev] of ledger.seen) {
      const kv = present.get(n);
      assert.ok(kv, `${label}: crash/${n} (rev ${rev}) was present after an earlier restart and is now gone`);
      assert.equal(Number(kv.mod_revision), rev, `${label}: crash/${n} moved from rev ${rev} to ${kv.mod_revision}`);
    }
    assert.ok(storeRev >= maxAcked, `${label}: store revision ${storeRev} < highest acknowledged revision ${maxAcked}`);
    // Dense revisions: the store starts at 1 and each put adds exactly 1, so the keys hold revisions 2..storeRev.
    const revs = [...present.values()].map((kv) => Number(kv.mod_revision)).sort((a, b) => a - b);
    for (let i = 0; i < revs.length; i++) {
      if (revs[i] !== i + 2) {
        assert.fail(
          `${label}: revisions not dense: expected rev ${i + 2} at position ${i}, found ${revs[i]} ` +
            `(${revs.length} keys, store revision ${storeRev})`,
        );
      }
    }
    assert.equal(storeRev, revs.length + 1, `${label}: store revision ${storeRev} but ${revs.length} puts present`);
    for (const [n, kv] of present) ledger.seen.set(n, Number(kv.mod_revision));
    return present.size;
  } finally {
    client.close();
  }
}

Deno.test({
  name: "crash: acknowledged puts survive SIGKILL with their exact revisions (5 kill/restart rounds)",
  // grpc-js keeps channel timers and sockets that outlive a test; the servers themselves are killed in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const envSeed = Deno.env.get("CRASH_SEED");
    const seed = envSeed ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
    console.log(`crash_test: server=${serverBinary} seed=${seed} (replay with CRASH_SEED=${seed})`);
    const rand = prng(seed);
    const ledger: Ledger = { next: 0, acked: new Map(), uncertain: new Set(), seen: new Map() };
    let server: RunningServer | undefined = await startServer();
    const dataDir = server.dataDir;
    const [clientPort, peerPort] = [new URL(server.clientUrl).port, new URL(server.peerUrl).port].map(Number);
    try {
      for (let round = 1; round <= ROUNDS; round++) {
        const killAfter = KILL_MIN_MS + Math.floor(rand() * (KILL_MAX_MS - KILL_MIN_MS + 1));
        const ok = await t.step(
          `round ${round}: SIGKILL ${killAfter} ms into the writes, restart, verify`,
          async () => {
            const killedServer = server!;
            try {
              const r = await writeUntilKilled(killedServer, ledger, killAfter);
              server = undefined;
              assert.deepEqual(r.errorsBeforeKill, [], `seed ${seed}: puts failed before the kill`);
              assert.ok(r.acked > 0, `seed ${seed} round ${round}: no put was acknowledged before the kill`);
              server = await startServer({ dataDir, clientPort, peerPort });
              const present = await verify(server, ledger, `seed ${seed} round ${round}`);
              console.log(
                `  round ${round}: killed after ${killAfter} ms; ${r.acked} acked, ${r.uncertain} unacknowledged; ` +
                  `${present} keys present after restart (${ledger.acked.size} acked in total)`,
              );
            } catch (e) {
              const out = (server ?? killedServer).output().slice(-4000);
              console.log(`seed ${seed} round ${round} failed; server output (last 4000 chars):\n${out}`);
              throw e;
            }
          },
        );
        if (!ok) break;
      }
    } finally {
      await server?.kill();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
