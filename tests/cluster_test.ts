/**
 * Raft cluster acceptance tests with real processes on loopback (3 members of scripts/etcd, or of the real etcd with
 * ETCD_SERVER=/usr/bin/etcd):
 *
 *   failover      (a) SIGKILL the leader under write load (16 writers, every acknowledged put recorded): a new leader
 *                     serves writes within a few seconds (time from the kill to the first successful write is
 *                     printed), no acknowledged put is lost on the survivors, and the old leader restarted on its data
 *                     dir catches up (its serializable read of the last key matches).
 *                 (c) a history recorded by concurrent get/put/cas clients through (a) is linearizable.
 *                 (b) SIGKILL all three at once while 16 writers put crash/ keys, and start them again: everything
 *                     from before is unchanged, every acknowledged put is there at its acknowledged revision, and all
 *                     members hold the same state.
 *   snapshot      (d) with --snapshot-count 200, a stopped follower misses 2000 keys and then enough further entries
 *                     that the leader no longer holds them in its log: restarted, it catches up through the leader's
 *                     snapshot and serves the same data (same keys, revisions, HashKV).
 *   membership    (e) `etcdctl member add --learner`, start it with --initial-cluster-state existing, it catches up,
 *                     `member promote`, `member remove`; then the same with a member added as a voter.
 *   leases        (f) keep-alives and TTL questions through followers are answered by the leader, also after it died.
 *   timeout       (g) with both followers frozen (SIGSTOP), a put and a linearizable get on the leader fail with
 *                     etcd's error once the request timeout (5 s + 2 election timeouts) has passed, not earlier and not
 *                     only at the client's deadline; the cluster serves again once the followers resume.
 *
 * The PRNG seed of the history workload is printed; CLUSTER_SEED=<n> replays the same operation mix.
 */
import assert from "node:assert/strict";
import { Cluster, type ClusterMember, errorText, EtcdClient, type KeyValue, sleep } from "./lib/cluster.ts";
import { checkAndReport, HistoryWorkload } from "./lib/history.ts";
import { etcdctl, parseJson } from "./lib/etcdctl.ts";
import { serverBinary } from "./lib/server.ts";

const WRITERS = 16;
const PUT_TIMEOUT_MS = 3000;
/** "within a few seconds": election timeout 1 s (randomized up to 2 s) + pre-vote + vote round, on a busy machine */
const MAX_FAILOVER_MS = 6000;

const envSeed = Deno.env.get("CLUSTER_SEED");
const seed = envSeed ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
console.log(`cluster_test: server=${serverBinary} seed=${seed} (replay with CLUSTER_SEED=${seed})`);

/** 16 writers putting distinct keys <prefix><n> = value-<n>; every acknowledged put is recorded with its revision. */
class AckWriters {
  next = 0;
  /** key number → revision of the Put response header */
  readonly acked = new Map<number, number>();
  /** key numbers whose put failed or timed out: may or may not be there */
  readonly uncertain = new Set<number>();
  /** invoke and return times (performance.now()) of every acknowledged put */
  readonly successes: Array<{ invoke: number; ret: number }> = [];
  readonly errors = new Map<string, number>();
  #stopped = false;
  #loops: Promise<void>[] = [];
  #clients: EtcdClient[];

  constructor(endpoints: string[], readonly prefix = "ack/") {
    this.#clients = endpoints.map((e) => new EtcdClient(e));
  }

  start(n = WRITERS): this {
    for (let i = 0; i < n; i++) this.#loops.push(this.#loop(i));
    return this;
  }

  /** One put of the next key through client `ep`; true if acknowledged. */
  async #put(ep: number, timeoutMs: number): Promise<boolean> {
    const n = this.next++;
    const invoke = performance.now();
    try {
      const r = await this.#clients[ep].put(`${this.prefix}${n}`, `value-${n}`, timeoutMs);
      this.acked.set(n, r.revision);
      this.successes.push({ invoke, ret: performance.now() });
      return true;
    } catch (e) {
      this.uncertain.add(n);
      const t = errorText(e).replace(/\d+/g, "N").slice(0, 100);
      this.errors.set(t, (this.errors.get(t) ?? 0) + 1);
      return false;
    }
  }

  async #loop(i: number): Promise<void> {
    let ep = i % this.#clients.length;
    while (!this.#stopped) {
      if (!(await this.#put(ep, PUT_TIMEOUT_MS))) {
        ep = (ep + 1) % this.#clients.length;
        await sleep(50);
      }
    }
  }

  /**
   * Besides the writers (which block for up to PUT_TIMEOUT_MS on a put lost with the old leader), starts one more
   * put every `everyMs` through the members `eps` in turn, so that the first write the cluster accepts after a
   * failure is seen within `everyMs`.
   */
  probe(eps: number[], everyMs = 100): void {
    let k = 0;
    const tick = () => {
      if (this.#stopped) return;
      this.#loops.push(this.#put(eps[k++ % eps.length], 2000).then(() => {}));
      setTimeout(tick, everyMs);
    };
    tick();
  }

  /** The first put invoked at or after `t` that was acknowledged. */
  firstSuccessAfter(t: number): { invoke: number; ret: number } | undefined {
    let best: { invoke: number; ret: number } | undefined;
    for (const s of this.successes) if (s.invoke >= t && (!best || s.ret < best.ret)) best = s;
    return best;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#loops);
    for (const c of this.#clients) c.close();
  }
}

/** Checks that every acknowledged put of `w` is present with its revision, and nothing that was never sent. */
async function verifyAcked(client: EtcdClient, w: AckWriters, label: string, serializable = false): Promise<number> {
  const { kvs } = await client.range(w.prefix, { serializable, timeoutMs: 10000 });
  const present = new Map<number, KeyValue>();
  for (const kv of kvs) {
    const m = /^(\d+)$/.exec(kv.key.slice(w.prefix.length));
    assert.ok(m, `${label}: unexpected key ${kv.key}`);
    const n = Number(m[1]);
    assert.ok(w.acked.has(n) || w.uncertain.has(n), `${label}: ${kv.key} was never written`);
    assert.equal(kv.value, `value-${n}`, `${label}: value of ${kv.key}`);
    assert.equal(kv.version, 1, `${label}: version of ${kv.key} (written once)`);
    present.set(n, kv);
  }
  const missing: string[] = [];
  for (const [n, rev] of w.acked) {
    const kv = present.get(n);
    if (!kv) missing.push(`${w.prefix}${n}@${rev}`);
    else {assert.equal(
        kv.modRevision,
        rev,
        `${label}: ${w.prefix}${n} acknowledged at revision ${rev}, found ${kv.modRevision}`,
      );}
  }
  assert.deepEqual(missing.slice(0, 20), [], `${label}: ${missing.length} acknowledged puts lost (first 20 shown)`);
  return present.size;
}

/** Polls until `fn` returns true; throws `what` after `timeoutMs`. */
async function until(what: string, timeoutMs: number, fn: () => Promise<boolean>, pollMs = 50): Promise<number> {
  const t0 = performance.now();
  let last = "";
  for (;;) {
    try {
      if (await fn()) return performance.now() - t0;
      last = "condition false";
    } catch (e) {
      last = errorText(e);
    }
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: not reached after ${timeoutMs} ms (${last})`);
    await sleep(pollMs);
  }
}

/** Every key of a member (serializable or linearizable) and the store revision. */
async function fullState(client: EtcdClient, serializable: boolean): Promise<{ kvs: KeyValue[]; revision: number }> {
  return await client.range("", { serializable, timeoutMs: 10000 });
}

Deno.test({
  name: "cluster: leader SIGKILL under load, rejoin, linearizable history, restart of all members",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const c = await Cluster.start({ size: 3 });
    let writers: AckWriters | undefined;
    let workload: HistoryWorkload | undefined;
    try {
      const endpoints = c.members.map((m) => m.endpoint);
      const { leader: oldLeader } = await c.waitLeader();
      const survivors = c.members.filter((m) => m !== oldLeader);

      const a = await t.step(
        "(a) kill -9 the leader under write load; new leader, nothing lost, old leader rejoins",
        async () => {
          writers = new AckWriters(endpoints).start();
          workload = new HistoryWorkload({ endpoints, clients: 6, keys: 3, seed, opTimeoutMs: 2000 }).start();
          await sleep(1500);
          const ackedBefore = writers.acked.size;
          assert.ok(ackedBefore > 0, `no put acknowledged before the kill: ${JSON.stringify([...writers.errors])}`);
          const killAt = performance.now();
          await c.kill(oldLeader);
          writers.probe(survivors.map((m) => c.members.indexOf(m)));
          const elected = await c.waitLeader({ among: survivors, notId: oldLeader.id, timeoutMs: 15000, pollMs: 20 });
          await until(
            "a write acknowledged after the kill",
            15000,
            () => Promise.resolve(!!writers!.firstSuccessAfter(killAt)),
          );
          const first = writers.firstSuccessAfter(killAt)!;
          const failoverMs = first.ret - killAt;
          console.log(
            `  (a) killed leader ${oldLeader.name} with ${ackedBefore} puts acknowledged; new leader ` +
              `${elected.leader.name} (term ${elected.term}) seen ${
                (elected.at - killAt).toFixed(0)
              } ms after the kill; ` +
              `first acknowledged write invoked after the kill returned ${failoverMs.toFixed(0)} ms after it`,
          );
          assert.ok(failoverMs < MAX_FAILOVER_MS, `first write after the kill took ${failoverMs.toFixed(0)} ms`);
          // Keep writing under the new leader, past the timeouts of the puts that were lost with the old one.
          await sleep(PUT_TIMEOUT_MS + 1500);
          await writers.stop();
          const ackedAfter = writers.successes.filter((x) => x.invoke >= killAt).length;
          console.log(
            `  (a) writers: ${writers.acked.size} puts acknowledged (${ackedAfter} invoked after the kill), ` +
              `${writers.uncertain.size} uncertain; ` +
              `errors: ${JSON.stringify(Object.fromEntries(writers.errors))}`,
          );
          for (const m of survivors) {
            const n = await verifyAcked(c.client(m), writers, `survivor ${m.name}`);
            console.log(
              `  (a) survivor ${m.name}: all ${writers.acked.size} acknowledged puts present (${n} ack/ keys)`,
            );
          }
          // The old leader comes back on its data dir and catches up.
          const lastN = [...writers.acked.entries()].reduce((x, y) => (y[1] > x[1] ? y : x))[0];
          const restartAt = performance.now();
          await c.restart(oldLeader);
          const ready = performance.now() - restartAt;
          const oldClient = c.client(oldLeader);
          const caughtUp = await until(`${oldLeader.name} serializable read of ack/${lastN}`, 15000, async () => {
            const r = await oldClient.get(`ack/${lastN}`, { serializable: true, timeoutMs: 1000, waitForReady: true });
            return r.value === `value-${lastN}` && r.modRevision === writers!.acked.get(lastN);
          });
          await verifyAcked(oldClient, writers, `rejoined ${oldLeader.name} (serializable)`, true);
          const st = await c.status(oldLeader);
          assert.notEqual(st.leader, "0", "rejoined member knows no leader");
          console.log(
            `  (a) ${oldLeader.name} restarted (ready after ${
              ready.toFixed(0)
            } ms), serializable read of the last key ` +
              `ack/${lastN} matched ${caughtUp.toFixed(0)} ms later; it follows ${
                c.byId(st.leader)?.name ?? st.leader
              }`,
          );
        },
      );
      if (!a) return;

      const ops = await workload!.stop();
      const same = await c.assertSameState();
      console.log(`  (a) all members hold the same state at applied index ${same.appliedIndex} (Hash ${same.hash})`);
      await t.step("(c) the history recorded through (a) is linearizable", () => {
        const r = checkAndReport("  (c)", ops, workload!.summary());
        assert.ok(ops.length > 200, `only ${ops.length} operations recorded`);
        assert.equal(r.ok, true, r.explanation ?? r.reason ?? "");
      });

      await t.step(
        "(b) SIGKILL all three at once under write load and restart them: same data, same revisions",
        async () => {
          // Every member holds the same state before the kill.
          const leaderClient = c.client((await c.waitLeader()).leader);
          const before = await fullState(leaderClient, false);
          for (const m of c.members) {
            await until(`${m.name} applied revision ${before.revision}`, 10000, async () => {
              return (await c.client(m).get("ack/0", { serializable: true })).revision >= before.revision;
            });
            assert.deepEqual(await fullState(c.client(m), true), before, `${m.name} differs from the leader`);
          }
          // New writers on crash/, killed mid-flight together with the whole cluster.
          const crashWriters = new AckWriters(endpoints, "crash/").start();
          await sleep(1000);
          await Promise.all(c.members.map((m) => m.kill()));
          await crashWriters.stop();
          assert.ok(crashWriters.acked.size > 0, "no crash/ put acknowledged before the kill");
          const t0 = performance.now();
          await Promise.all(c.members.map((m) => c.restart(m, { waitReady: false })));
          await Promise.all(c.members.map((m) => m.waitReady(30000)));
          const { leader } = await c.waitLeader();
          console.log(
            `  (b) SIGKILLed all three with ${crashWriters.acked.size} crash/ puts acknowledged and ` +
              `${crashWriters.uncertain.size} in flight; restarted, leader ${leader.name} agreed ` +
              `${(performance.now() - t0).toFixed(0)} ms after the start`,
          );
          let after: { kvs: KeyValue[]; revision: number } | undefined;
          for (const m of c.members) {
            const mine = await fullState(c.client(m), false);
            // everything from before the kill, unchanged (same values, create/mod revisions, versions)
            const old = mine.kvs.filter((kv) => !kv.key.startsWith("crash/"));
            assert.deepEqual(old, before.kvs, `${m.name}: keys or revisions from before the kill changed`);
            // every acknowledged crash/ put, at its acknowledged revision
            const n = await verifyAcked(c.client(m), crashWriters, `${m.name} after restarting all`);
            await verifyAcked(c.client(m), writers!, `${m.name} after restarting all`);
            assert.ok(mine.revision >= before.revision + crashWriters.acked.size, `${m.name}: store revision`);
            after ??= { ...mine, revision: mine.revision };
            console.log(`  (b) ${m.name}: ${before.kvs.length} keys from before unchanged; ${n} crash/ keys present`);
          }
          // ... and every member converges on the same state.
          for (const m of c.members) {
            await until(`${m.name} applied revision ${after!.revision}`, 10000, async () => {
              return (await c.client(m).get("ack/0", { serializable: true })).revision >= after!.revision;
            });
            const mine = await fullState(c.client(m), true);
            assert.deepEqual(mine.kvs, after!.kvs, `${m.name}: state differs from the others after the restart`);
          }
          await c.assertSameState();
          console.log(
            `  (b) every member holds the same ${after!.kvs.length} keys at revision ${after!.revision} ` +
              `(${writers!.acked.size} + ${crashWriters.acked.size} acknowledged puts checked with their revisions)`,
          );
        },
      );
    } catch (e) {
      console.log(c.logs());
      throw e;
    } finally {
      await writers?.stop().catch(() => {});
      await workload?.stop().catch(() => {});
      await c.destroy();
    }
  },
});

Deno.test({
  name: "cluster: a restarted follower catches up through the leader's snapshot (--snapshot-count 200)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await Cluster.start({ size: 3, snapshotCount: 200 });
    try {
      const { leader } = await c.waitLeader();
      const follower = c.members.find((m) => m !== leader)!;
      const lc = c.client(leader);
      await lc.put("snap/seed", "before", 5000);
      await until(`${follower.name} has snap/seed`, 10000, async () => {
        return (await c.client(follower).get("snap/seed", { serializable: true })).value === "before";
      });
      await c.stop(follower);
      const stoppedAt = (await c.status(leader)).raftIndex;
      // 2000 keys, 64 in flight
      const KEYS = 2000;
      let next = 0;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: 64 }, async () => {
        while (next < KEYS) {
          const n = next++;
          await lc.put(`snap/${String(n).padStart(5, "0")}`, `value-${n}`, 10000);
        }
      }));
      // The leader keeps the last 5000 entries after a snapshot for slow followers (as etcd does), so 2000 entries
      // would still be sent from the log: write more (overwrites of one key) until the entries the follower needs are
      // gone from the leader's log.
      let filler = 0;
      while ((await c.status(leader)).raftIndex - stoppedAt < 5000 + 4 * 200) {
        await Promise.all(Array.from({ length: 64 }, () => lc.put("filler", `f${filler++}`, 10000)));
      }
      const st = await c.status(leader);
      console.log(
        `  (d) ${follower.name} stopped at leader index ${stoppedAt}; wrote ${KEYS} keys + ${filler} overwrites in ` +
          `${(performance.now() - t0).toFixed(0)} ms; leader index now ${st.raftIndex}`,
      );
      const restartAt = performance.now();
      await c.restart(follower);
      const fc = c.client(follower);
      const last = `snap/${String(KEYS - 1).padStart(5, "0")}`;
      await until(`${follower.name} catches up`, 30000, async () => {
        const [f, l] = await Promise.all([
          fc.get("filler", { serializable: true }),
          lc.get("filler", { serializable: true }),
        ]);
        return f.value === l.value && f.modRevision === l.modRevision;
      });
      console.log(
        `  (d) ${follower.name} restarted and caught up in ${(performance.now() - restartAt).toFixed(0)} ms`,
      );
      // ours: "restored state from the leader's snapshot at index N"; etcd: "applied incoming snapshot at index N"
      const snapLine = follower.currentOutput().split("\n")
        .find((l) => /restored state from the leader's snapshot|applied incoming snapshot|restore snapshot/i.test(l));
      assert.ok(snapLine, `${follower.name} did not log a snapshot from the leader:\n${follower.currentOutput()}`);
      console.log(`  (d) ${follower.name} log: ${snapLine.trim().slice(0, 160)}`);
      // Same data on the follower (serializable: its own state) and the leader.
      const want = await lc.range("snap/", { timeoutMs: 10000 });
      const got = await fc.range("snap/", { serializable: true, timeoutMs: 10000 });
      assert.equal(want.kvs.length, KEYS + 1);
      assert.deepEqual(got.kvs, want.kvs, "the follower's snap/ keys differ from the leader's");
      assert.equal((await fc.get(last, { serializable: true })).value, `value-${KEYS - 1}`);
      const rev = want.revision;
      const [hf, hl] = await Promise.all([fc.hashKV(rev), lc.hashKV(rev)]);
      assert.equal(hf.hash, hl.hash, `HashKV at revision ${rev} differs: follower ${hf.hash}, leader ${hl.hash}`);
      console.log(`  (d) ${follower.name} serves the same ${KEYS + 1} keys; HashKV@${rev} = ${hl.hash} on both`);
      // the whole state, history and size count included, after the follower installed the leader's snapshot
      await c.assertSameState();
    } catch (e) {
      console.log(c.logs());
      throw e;
    } finally {
      await c.destroy();
    }
  },
});

/** Runs etcdctl against every running member; throws with its output on failure. */
async function ctl(endpoints: string, args: string[]): Promise<string> {
  const r = await etcdctl(endpoints, args);
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(" ")} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

interface ListedMember {
  ID: string;
  name?: string;
  peerURLs?: string[];
  clientURLs?: string[];
  isLearner?: boolean;
}

async function memberList(endpoints: string): Promise<ListedMember[]> {
  const out = parseJson(await ctl(endpoints, ["member", "list", "-w", "json"]));
  return out.members.map((m: ListedMember) => ({ ...m, ID: BigInt(m.ID).toString(16) }));
}

/**
 * Adds `m` with etcdctl (as a learner or a voter), starts it with --initial-cluster-state existing, waits until it
 * caught up, promotes it if it is a learner, checks it serves, and removes it again.
 */
async function addServeRemove(c: Cluster, m: ClusterMember, learner: boolean, label: string): Promise<void> {
  const eps = c.members.map((x) => x.endpoint).join(",");
  // etcd refuses a member add ("unhealthy cluster") until every voter has been connected for 5 s: retry.
  let out = "";
  await until(`member add ${m.name}`, 20000, async () => {
    const r = await etcdctl(eps, [
      "member",
      "add",
      m.name,
      `--peer-urls=${m.peerUrl}`,
      ...(learner ? ["--learner"] : []),
    ]);
    if (r.code === 0) return !!(out = r.stdout);
    if (/unhealthy cluster/.test(r.stderr)) return false;
    throw new Error(`member add failed: ${r.stdout}${r.stderr}`);
  }, 500);
  const id = /Member\s+([0-9a-f]+)\s+added/.exec(out)?.[1];
  const ic = /ETCD_INITIAL_CLUSTER="([^"]+)"/.exec(out)?.[1];
  assert.ok(id && ic, `unexpected member add output: ${out}`);
  assert.ok(ic.includes(`${m.name}=${m.peerUrl}`), `ETCD_INITIAL_CLUSTER lacks the new member: ${ic}`);
  let listed = (await memberList(eps)).find((x) => x.ID === id);
  assert.ok(listed, `${m.name} (${id}) not in member list after add`);
  assert.equal(!!listed.isLearner, learner, `${m.name} isLearner after add`);

  // Data written before the new member starts must reach it.
  const lc = c.client((await c.waitLeader()).leader);
  for (let i = 0; i < 50; i++) await lc.put(`member/${label}/${i}`, `v${i}`, 5000);
  const lastRev = (await lc.put(`member/${label}/last`, "last", 5000)).revision;

  const t0 = performance.now();
  await m.start({ ...c.startOptions(ic, "existing"), args: c.serverArgs(), timeoutMs: 20000 });
  const mc = new EtcdClient(m.endpoint);
  try {
    const caught = await until(`${m.name} serializable read of the last key`, 20000, async () => {
      const r = await mc.get(`member/${label}/last`, { serializable: true, timeoutMs: 1000, waitForReady: true });
      return r.value === "last" && r.modRevision === lastRev;
    });
    const st = await mc.status(2000, true);
    assert.equal(st.isLearner, learner, `${m.name} Status.isLearner`);
    assert.equal(BigInt(st.memberId).toString(16), id);
    console.log(
      `  (e) ${label}: ${m.name} (${id}) added as ${learner ? "learner" : "voter"}, started, caught up ` +
        `${caught.toFixed(0)} ms after its start (${(performance.now() - t0).toFixed(0)} ms in all)`,
    );
    if (learner) {
      // etcd refuses to promote a learner that is not in sync yet: retry for a while.
      const p0 = performance.now();
      await until(`member promote ${id}`, 15000, async () => {
        const r = await etcdctl(eps, ["member", "promote", id]);
        if (r.code === 0) return true;
        if (!/in sync|not in sync/i.test(r.stderr + r.stdout)) {
          throw new Error(`member promote failed: ${r.stdout}${r.stderr}`);
        }
        return false;
      }, 200);
      listed = (await memberList(eps)).find((x) => x.ID === id);
      assert.equal(!!listed?.isLearner, false, `${m.name} still a learner after promote`);
      await until(`${m.name} Status.isLearner false`, 10000, async () => !(await mc.status(1000)).isLearner);
      console.log(`  (e) ${label}: promoted after ${(performance.now() - p0).toFixed(0)} ms`);
    }
    // As a voter, it serves linearizable reads and writes.
    await until(`write through ${m.name}`, 10000, async () => {
      await mc.put(`member/${label}/via-new`, "x", 2000);
      return (await mc.get(`member/${label}/via-new`, { timeoutMs: 2000 })).value === "x";
    });
    listed = (await memberList(eps)).find((x) => x.ID === id);
    assert.equal(listed?.name, m.name, `${m.name} did not publish its name`);
    assert.deepEqual(listed?.clientURLs, [m.clientUrl], `${m.name} did not publish its client URL`);

    // Like a member add, a remove is refused ("unhealthy cluster") until the member has been connected for 5 s.
    await until(`member remove ${id}`, 20000, async () => {
      const r = await etcdctl(eps, ["member", "remove", id]);
      if (r.code === 0) return true;
      if (/unhealthy cluster/.test(r.stderr)) return false;
      throw new Error(`member remove failed: ${r.stdout}${r.stderr}`);
    }, 500);
    const remaining = await memberList(eps);
    assert.equal(remaining.length, 3, `member list after remove: ${JSON.stringify(remaining)}`);
    assert.ok(!remaining.some((x) => x.ID === id), `${id} still listed after remove`);
    // The removed member shuts itself down; the others go on serving.
    const exited = await Promise.race([m.exited().then(() => true), sleep(15000).then(() => false)]);
    console.log(`  (e) ${label}: removed; the removed process ${exited ? "exited by itself" : "was still running"}`);
    const r = await lc.put(`member/${label}/after-remove`, "y", 5000);
    assert.ok(r.revision > lastRev);
    await c.waitLeader();
  } finally {
    mc.close();
    await m.kill();
  }
}

Deno.test({
  name: "cluster: membership — add a learner, catch up, promote, remove; add a voter, catch up, remove",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const c = await Cluster.start({ size: 3 });
    const extra: ClusterMember[] = [];
    try {
      const m4 = await c.newMember("m4");
      extra.push(m4);
      const ok = await t.step(
        "learner: add, start, catch up, promote, remove",
        () => addServeRemove(c, m4, true, "learner"),
      );
      if (!ok) return;
      const m5 = await c.newMember("m5");
      extra.push(m5);
      const ok2 = await t.step("voter: add, start, catch up, remove", () => addServeRemove(c, m5, false, "voter"));
      if (!ok2) return;
      await t.step(
        "strict reconfiguration check: with a voter down, refused unless it removes the down one",
        async () => {
          const [m1, m2, m3] = c.members;
          await c.memberIds();
          await c.kill(m3);
          // m1 notices at once: its connection to m3 closed
          let r = await etcdctl(m1.endpoint, ["member", "add", "m6", "--peer-urls=http://127.0.0.1:1"]);
          assert.notEqual(r.code, 0, `member add with a voter down succeeded: ${r.stdout}`);
          assert.match(r.stderr, /etcdserver: unhealthy cluster/);
          r = await etcdctl(m1.endpoint, ["member", "remove", BigInt(m2.id).toString(16)]);
          assert.notEqual(r.code, 0, `removing a live voter with another one down succeeded: ${r.stdout}`);
          assert.match(r.stderr, /etcdserver: unhealthy cluster/);
          await ctl(m1.endpoint, ["member", "remove", BigInt(m3.id).toString(16)]);
          assert.equal((await memberList(m1.endpoint)).length, 2);
          await c.assertSameState({ among: [m1, m2] });
          console.log(
            "  (e) strict reconfig: add and remove refused with 'unhealthy cluster'; the down member removed",
          );
        },
      );
    } catch (e) {
      console.log(c.logs());
      for (const m of extra) console.log(`----- ${m.name} -----\n${m.output().slice(-3000)}`);
      throw e;
    } finally {
      await c.destroy(extra);
    }
  },
});

Deno.test({
  name: "cluster: lease keep-alives and TTL questions on followers are answered by the leader, also a new one",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await Cluster.start({ size: 3 });
    try {
      const { leader } = await c.waitLeader();
      const followers = c.members.filter((m) => m !== leader);
      const granted = await ctl(followers[0].endpoint, ["lease", "grant", "30"]);
      const id = /lease ([0-9a-f]+) granted with TTL\(30s\)/.exec(granted)?.[1];
      assert.ok(id, granted);
      // many at once through both followers: each question is matched to its own answer
      const outs = await Promise.all(
        Array.from({ length: 24 }, (_, i) => ctl(followers[i % 2].endpoint, ["lease", "keep-alive", "--once", id])),
      );
      for (const out of outs) assert.match(out, new RegExp(`lease ${id} keepalived with TTL\\(30\\)`));
      assert.match(await ctl(followers[1].endpoint, ["lease", "timetolive", id]), /granted with TTL\(30s\)/);
      // an unknown lease: the leader's answer says so (TTL 0), through a follower as through the leader
      const unknown = await etcdctl(followers[0].endpoint, ["lease", "keep-alive", "--once", "1234abcd"]);
      const direct = await etcdctl(leader.endpoint, ["lease", "keep-alive", "--once", "1234abcd"]);
      assert.equal(unknown.code, direct.code, `${unknown.stdout}${unknown.stderr} vs ${direct.stdout}${direct.stderr}`);
      assert.match(unknown.stdout + unknown.stderr, /expired or revoked|not found/);
      // the leader dies: the survivors elect another, and it answers (it extended every lease when it took over)
      await c.kill(leader);
      const { leader: next } = await c.waitLeader({ among: followers, notId: leader.id });
      const asker = followers.find((m) => m !== next)!;
      await until("a keep-alive through the remaining follower", 10000, async () => {
        const r = await etcdctl(asker.endpoint, ["lease", "keep-alive", "--once", id]);
        return r.code === 0 && r.stdout.includes(`lease ${id} keepalived with TTL(30)`);
      });
    } catch (e) {
      console.log(c.logs());
      throw e;
    } finally {
      await c.destroy();
    }
  },
});

Deno.test({
  name: "cluster: a follower that has not applied a revision yet compacts at it (the apply decides, not its own state)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await Cluster.start({ size: 3, heartbeatMs: 50, electionMs: 500 });
    let frozen: ClusterMember | undefined;
    try {
      const { leader } = await c.waitLeader();
      const follower = c.members.find((m) => m !== leader)!;
      const client = c.client(follower);
      await client.put("k", "0");
      // the follower misses the next puts until it resumes: the compaction reaches it before their entries
      Deno.kill(follower.pid!, "SIGSTOP");
      frozen = follower;
      let rev = 0;
      for (let i = 1; i <= 5; i++) rev = (await c.client(leader).put("k", String(i))).revision;
      const compacted = client.compact(rev, true, 10000);
      await sleep(100); // the request waits in the frozen member's socket
      Deno.kill(follower.pid!, "SIGCONT");
      frozen = undefined;
      assert.equal(await compacted, rev, "answered at the compaction's revision, not refused as a future revision");
      await assert.rejects(client.get("k", { revision: rev - 1, serializable: true }), /compacted/);
      assert.equal((await client.get("k", { serializable: true })).value, "5");
      // a revision beyond every member's is still refused, by the apply
      await assert.rejects(client.compact(rev + 100), /future revision/);
    } catch (e) {
      console.log(c.logs());
      throw e;
    } finally {
      if (frozen) Deno.kill(frozen.pid!, "SIGCONT");
      await c.destroy();
    }
  },
});

Deno.test({
  name: "cluster: a write and a read the cluster cannot commit fail with etcd's error once the request timeout passed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // request timeout = 5 s + 2 election timeouts (as etcd's): 6 s here
    const c = await Cluster.start({ size: 3, heartbeatMs: 50, electionMs: 500 });
    const followers: ClusterMember[] = [];
    try {
      const { leader } = await c.waitLeader();
      const client = c.client(leader);
      await client.put("before", "1");
      followers.push(...c.members.filter((m) => m !== leader));
      // frozen, not dead: their connections stay open, they just never answer
      for (const f of followers) Deno.kill(f.pid!, "SIGSTOP");
      const timed = async (what: string, op: () => Promise<unknown>) => {
        const t0 = performance.now();
        const err = await op().then(() => null, (e) => e);
        const ms = performance.now() - t0;
        assert.ok(err, `${what} succeeded without a quorum`);
        assert.match(errorText(err), /etcdserver: (no leader|request timed out|leader changed)/, `${what}`);
        return ms;
      };
      const [putMs, getMs] = await Promise.all([
        timed("put", () => client.put("stuck", "2", 20000)),
        timed("linearizable get", () => client.get("before", { timeoutMs: 20000 })),
      ]);
      console.log(
        `without a quorum: put failed after ${putMs.toFixed(0)} ms, linearizable get after ${getMs.toFixed(0)}`,
      );
      // the server gave up, not the client (whose deadline is 20 s); the put waited for its whole request timeout
      assert.ok(putMs < 12000, `put failed only after ${putMs} ms`);
      assert.ok(getMs < 12000, `get failed only after ${getMs} ms`);
      assert.ok(putMs > 5500, `put failed after ${putMs} ms, before its timeout`);
      for (const f of followers.splice(0)) Deno.kill(f.pid!, "SIGCONT");
      await c.waitLeader();
      await until("a put once the others are back", 10000, async () => {
        try {
          await client.put("after", "3", 2000);
          return true;
        } catch {
          return false;
        }
      });
      assert.equal((await client.get("before")).value, "1");
    } catch (e) {
      console.log(c.logs());
      throw e;
    } finally {
      for (const f of followers) Deno.kill(f.pid!, "SIGCONT");
      await c.destroy();
    }
  },
});
