/**
 * Primaries added and removed online (`egctl create member`, `egctl delete member`) while a stock etcd client writes
 * to the cluster: the new member joins as a learner, catches up and promotes itself to a voter; removing it (while it
 * leads) moves leadership away first; it stops by itself; removals that could lose the quorum are refused; every
 * acknowledged write is on every member afterwards.
 */
import assert from "node:assert/strict";
import {
  egctl,
  egctlOk,
  type Member,
  memberPorts,
  memberTest,
  primaryArgs,
  startMember,
  waitFor,
} from "./easegress_harness.ts";
import { etcdctlOk } from "./lib/etcdctl.ts";
import { Writer } from "./lib/writer.ts";
import { removalRefusal } from "../server/easegress/primaries.ts";

const CLUSTER = "online";
const PREFIX = "/online/w/";

Deno.test("removalRefusal: the voters left must be a majority of themselves online", () => {
  const v = (id: string, online = true) => ({ id, name: `m${id}`, online });
  // 3 voters, all online: any one may go
  assert.equal(removalRefusal([v("1"), v("2"), v("3")], "1"), null);
  // 3 voters, m3 offline: removing m1 leaves m2 and m3 with one online of two
  assert.equal(
    removalRefusal([v("1"), v("2"), v("3", false)], "1"),
    "the 2 primaries left would have 1 online (m3 offline), fewer than the 2 a quorum needs",
  );
  // ...but removing the offline one leaves two online
  assert.equal(removalRefusal([v("1"), v("2"), v("3", false)], "3"), null);
  // 2 voters: removing one leaves the other, a quorum of one when it is online
  assert.equal(removalRefusal([v("1"), v("2")], "1"), null);
  assert.match(removalRefusal([v("1"), v("2", false)], "1")!, /fewer than the 1 a quorum needs/);
  assert.equal(removalRefusal([v("1")], "1"), "it is the last voting member");
  // not a voter (a learner): nothing to refuse
  assert.equal(removalRefusal([v("1"), v("2")], "9"), null);
});

/** The value of `--flag` in printed flags, or undefined. */
function flagValue(flags: string[], flag: string): string | undefined {
  const i = flags.indexOf(flag);
  return i >= 0 ? flags[i + 1] : undefined;
}

/** `egctl get member` rows: name → STATE column. */
async function memberStates(api: string): Promise<Map<string, string>> {
  const out = await egctlOk(["--server", api, "get", "member"]);
  const rows = out.trim().split("\n").slice(1).map((l) => l.split("\t").map((c) => c.trim()).filter((c) => c !== ""));
  // NAME ROLE AGE STATE API-ADDR HEARTBEAT: a secondary has no STATE, but these are all primaries
  return new Map(rows.map((r) => [r[0], r[3]]));
}

/** Every acknowledged sequence number is stored on the member at `endpoint` (a serializable read of its own store). */
async function assertAllOn(endpoint: string, acked: number[], what: string): Promise<void> {
  let missing: number[] = [];
  await waitFor(`${what} holding every acknowledged write`, async () => {
    const out = await etcdctlOk(endpoint, ["get", "--prefix", PREFIX, "--keys-only", "--consistency=s"]);
    const have = new Set(
      out.split("\n").filter((l) => l.startsWith(PREFIX)).map((l) => Number(l.slice(PREFIX.length))),
    );
    missing = acked.filter((s) => !have.has(s));
    return missing.length === 0;
  }, 20000).catch(() => {
    throw new Error(`${what} lacks ${missing.length} acknowledged writes: ${missing.slice(0, 10).join(", ")}`);
  });
}

memberTest(
  "a fourth primary added online (learner, then voter) and removed while writes go on; quorum-losing removals refused",
  async (procs, t) => {
    const ports = await memberPorts(4);
    const names = ["machine-1", "machine-2", "machine-3", "machine-4"];
    const initial = [0, 1, 2].map((i) => `${names[i]}=http://127.0.0.1:${ports[i].peer}`).join(",");
    const api = (i: number) => `127.0.0.1:${ports[i].api}`;
    const clientUrl = (i: number) => `http://127.0.0.1:${ports[i].client}`;
    // the primaries wait for a quorum: start all three together
    const started = await Promise.all(
      [0, 1, 2].map((i) =>
        startMember(
          names[i],
          primaryArgs(names[i], ports[i], ["--cluster-name", CLUSTER, "--initial-cluster", initial]),
        )
      ),
    );
    procs.push(...started);
    await waitFor("three primaries and a leader", async () => {
      const s = await memberStates(api(0));
      return s.size === 3 && [...s.values()].filter((x) => x === "Leader").length === 1;
    }, 30000);

    const writer = new Writer([0, 1, 2].map(clientUrl), PREFIX);
    let fourth: Member | undefined;
    try {
      await waitFor("the writer's first acknowledged put", () => writer.result.acked.length > 0, 15000);

      let flags: string[] = [];
      await t.step("egctl create member: added as a learner, with the flags to start it", async () => {
        const peer = `http://127.0.0.1:${ports[3].peer}`;
        const badUrl = await egctl(["--server", api(1), "create", "member", "machine-9", "--peer-urls", "host:1"]);
        assert.match(
          badUrl.stderr,
          /400: etcdserver: given member URLs are invalid: want http\(s\):\/\/host:port URLs/,
        );
        const out = await egctlOk(["--server", api(0), "create", "member", names[3], "--peer-urls", peer]);
        const lines = out.split("\n");
        assert.equal(lines[0], `create Member ${names[3]} successfully`);
        assert.match(
          lines[1],
          /^Added as a learner \(ID [0-9a-f]+\); it becomes a voting member once it has caught up\.$/,
        );
        flags = lines[3].trim().split(" ");
        assert.equal(flagValue(flags, "--state-flag"), "existing");
        assert.equal(flagValue(flags, "--cluster-role"), "primary");
        assert.equal(flagValue(flags, "--cluster-name"), CLUSTER);
        assert.equal(flagValue(flags, "--initial-cluster"), `${initial},${names[3]}=${peer}`);
        const list = await etcdctlOk(clientUrl(1), ["member", "list"]);
        assert.match(list, new RegExp(`unstarted, , ${peer}, , true`), list);
        // listed at once, before it has started: by its ID (the name is its own to publish), a Learner
        const id = /\(ID ([0-9a-f]+)\)/.exec(lines[1])![1];
        assert.equal((await memberStates(api(2))).get(id), "Learner");
        // one learner at a time, and names are unique
        const again = await egctl([
          "--server",
          api(1),
          "create",
          "member",
          "machine-9",
          "--peer-urls",
          "http://127.0.0.1:1",
        ]);
        assert.equal(again.code, 1);
        assert.match(
          again.stderr,
          /create Member machine-9 failed, 409: member [0-9a-f]+ is still a learner catching up/,
        );
        const dup = await egctl([
          "--server",
          api(1),
          "create",
          "member",
          names[0],
          "--peer-urls",
          "http://127.0.0.1:1",
        ]);
        assert.match(dup.stderr, /409: member machine-1 already exists/);
        const noUrls = await egctl(["--server", api(1), "create", "member", "machine-9"]);
        assert.equal(noUrls.stderr, "Error: --peer-urls is required: the new member's peer URLs\n");
        const bad = await egctl(["--server", api(1), "create", "member", "bad name", "--peer-urls", peer]);
        assert.match(bad.stderr, /400: invalid member name "bad name"/);
      });

      await t.step("the new member started with those flags catches up and promotes itself to a Follower", async () => {
        const before = Date.now();
        const nameVersion = async () =>
          JSON.parse(await etcdctlOk(clientUrl(0), ["get", "/eg/cluster/name", "-w", "json"])).kvs[0].version;
        const foundingVersion = await nameVersion();
        const m = await startMember(names[3], [
          "--api-addr",
          api(3),
          "--listen-client-urls",
          clientUrl(3),
          "--advertise-client-urls",
          clientUrl(3),
          "--listen-peer-urls",
          `http://127.0.0.1:${ports[3].peer}`,
          ...flags,
        ]);
        fourth = m;
        procs.push(m);
        await waitFor(
          `${names[3]} a Follower`,
          async () => (await memberStates(api(1))).get(names[3]) === "Follower",
          30000,
        );
        assert.match(m.output(), /promoted from learner to a voting member/);
        const list = await etcdctlOk(clientUrl(0), ["member", "list"]);
        assert.equal(list.trim().split("\n").length, 4);
        assert.ok(!/, true$/m.test(list), `a learner left:\n${list}`);
        assert.ok(writer.ackedSince(before) > 0, "no write acknowledged while the member joined");
        await assertAllOn(clientUrl(3), [...writer.result.acked], names[3]);
        // the joining member did not found the cluster again: the cluster name was not written by it
        assert.equal(await nameVersion(), foundingVersion);
      });

      await t.step("removed while it leads: leadership moves first, it leaves the member list and stops", async () => {
        // simple format: `endpoint, id (hex), version, size, is leader, ...` (the JSON one has the ID as a number)
        const id4 = (await etcdctlOk(clientUrl(3), ["endpoint", "status"])).split(", ")[1];
        await etcdctlOk([0, 1, 2, 3].map(clientUrl).join(","), ["move-leader", id4]);
        await waitFor(
          `${names[3]} leading`,
          async () => (await memberStates(api(0))).get(names[3]) === "Leader",
          15000,
        );
        const before = Date.now();
        assert.equal(
          await egctlOk(["--server", api(0), "delete", "member", names[3]]),
          `purge Member ${names[3]} successfully\n`,
        );
        const st = await fourth!.status;
        assert.equal(st.code, 0, fourth!.output());
        assert.match(fourth!.output(), /this member has been removed from the cluster; shutting down/);
        await waitFor(
          `${names[3]} gone from egctl get member`,
          async () => !(await memberStates(api(1))).has(names[3]),
        );
        const states = [...(await memberStates(api(1))).values()].sort();
        assert.deepEqual(states, ["Follower", "Follower", "Leader"]);
        const list = await etcdctlOk(clientUrl(0), ["member", "list"]);
        assert.equal(list.trim().split("\n").length, 3, list);
        await waitFor("writes after the removal", () => writer.ackedSince(before + 500) > 10, 15000);
      });

      await t.step("removals that would lose the quorum are refused, with the reason", async () => {
        // asking a member to remove itself is refused too: its answer would be lost
        const self = await egctl(["--server", api(0), "delete", "member", names[0]]);
        assert.match(self.stderr, /409: member machine-1 is the one serving this request/);
        await procs[2].kill();
        await waitFor(
          `${names[2]} Offline`,
          async () => (await memberStates(api(0))).get(names[2]) === "Offline",
          30000,
        );
        const r = await egctl(["--server", api(1), "delete", "member", names[0]]);
        assert.equal(r.code, 1);
        assert.equal(
          r.stderr,
          `Error: purge Member ${names[0]} failed, 409: cannot remove member ${names[0]}: the 2 primaries left would ` +
            `have 1 online (${names[2]} offline), fewer than the 2 a quorum needs\n`,
        );
        // nothing changed: three members, and the two online still take writes
        assert.equal((await etcdctlOk(clientUrl(0), ["member", "list"])).trim().split("\n").length, 3);
        const before = Date.now();
        await waitFor("writes with two of three", () => writer.ackedSince(before) > 10, 20000);
      });
    } finally {
      const result = await writer.stop();
      console.log(
        `    writer: ${result.acked.length} puts acknowledged, ${result.failed} failed` +
          (result.firstErrors.length ? ` (${result.firstErrors.join(" | ")})` : ""),
      );
    }
    for (const i of [0, 1]) await assertAllOn(clientUrl(i), writer.result.acked, names[i]);
  },
);
