/**
 * etcd's watch guarantees for a consumer that stops reading: the server's send window fills, the watcher falls back to
 * catching up from history, and once the client reads again it receives every revision exactly once, in order, with
 * each revision's events in one response (ordered, unique, reliable, atomic). Runs against ours, or the real etcd with
 * ETCD_SERVER=/usr/bin/etcd.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { grpcRoot } from "../proto/grpc_js.ts";
import { startServer } from "./lib/server.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

const REVISIONS = 1500;
const KEYS_PER_TXN = 3;
const VALUE = Buffer.alloc(1024, 7);

Deno.test({
  name: "watch: a paused consumer catches up from history without losing, repeating or splitting a revision",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const srv = await startServer();
    const kv = new grpcRoot.etcdserverpb.KV(srv.endpoint, grpc.credentials.createInsecure());
    const watchClient = new grpcRoot.etcdserverpb.Watch(srv.endpoint, grpc.credentials.createInsecure());
    const call = watchClient.Watch();
    try {
      const responses: Obj[] = [];
      let created: (() => void) | null = null;
      const createdP = new Promise<void>((r) => created = r);
      call.on("data", (r: Obj) => {
        if (r.created) created?.();
        else if (r.events?.length) responses.push(r);
      });
      call.on("error", () => {});
      call.write({ create_request: { key: Buffer.from("slow/"), range_end: Buffer.from("slow0") } });
      await createdP;
      call.pause(); // stop reading: flow control backs up to the server

      const txn = (i: number) =>
        new Promise<Obj>((resolve, reject) =>
          kv.Txn({
            success: Array.from({ length: KEYS_PER_TXN }, (_, j) => ({
              request_put: { key: Buffer.from(`slow/${i}/${j}`), value: VALUE },
            })),
          }, (err: Error | null, r: Obj) => err ? reject(err) : resolve(r))
        );
      const revs: number[] = [];
      for (let i = 0; i < REVISIONS; i += 20) {
        const batch = await Promise.all(Array.from({ length: 20 }, (_, j) => txn(i + j)));
        for (const r of batch) revs.push(Number(r.header.revision));
      }
      revs.sort((a, b) => a - b);
      const last = revs[revs.length - 1];
      assert.equal(revs.length, REVISIONS);

      call.resume();
      const deadline = Date.now() + 30_000;
      const lastSeen = () => {
        const r = responses.at(-1);
        return r ? Number(r.events.at(-1).kv.mod_revision) : 0;
      };
      while (lastSeen() < last) {
        assert.ok(Date.now() < deadline, `caught up only to revision ${lastSeen()} of ${last}`);
        await new Promise((r) => setTimeout(r, 20));
      }

      const seen: number[] = [];
      for (const r of responses) {
        // atomic: a response holds whole revisions (KEYS_PER_TXN events each)
        const perRev = new Map<number, number>();
        for (const e of r.events) {
          perRev.set(Number(e.kv.mod_revision), (perRev.get(Number(e.kv.mod_revision)) ?? 0) + 1);
        }
        for (const [rev, n] of perRev) {
          assert.equal(n, KEYS_PER_TXN, `revision ${rev} split across responses`);
          seen.push(rev);
        }
      }
      // ordered, unique and reliable: exactly the acknowledged revisions, ascending
      assert.deepEqual(seen, revs);
    } finally {
      call.cancel();
      kv.close();
      watchClient.close();
      await srv.stop();
    }
  },
});

Deno.test({
  name: "watch: progress_notify sends empty bookmarks to an idle watcher at the configured interval",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const srv = await startServer({ extraArgs: ["--experimental-watch-progress-notify-interval", "200ms"] });
    const kv = new grpcRoot.etcdserverpb.KV(srv.endpoint, grpc.credentials.createInsecure());
    const watchClient = new grpcRoot.etcdserverpb.Watch(srv.endpoint, grpc.credentials.createInsecure());
    const call = watchClient.Watch();
    try {
      const put = () =>
        new Promise<Obj>((resolve, reject) =>
          kv.Put(
            { key: Buffer.from("bookmark"), value: Buffer.from("v") },
            (e: Error | null, r: Obj) => e ? reject(e) : resolve(r),
          )
        );
      const rev = Number((await put()).header.revision);
      const got: Obj[] = [];
      call.on("data", (r: Obj) => got.push(r));
      call.on("error", () => {});
      call.write({
        create_request: { key: Buffer.from("idle/"), range_end: Buffer.from("idle0"), progress_notify: true },
      });
      await new Promise((r) => setTimeout(r, 1500));
      const bookmarks = got.filter((r) => !r.created && !r.canceled && (r.events ?? []).length === 0);
      assert.ok(bookmarks.length >= 2, `expected periodic progress notifications, got ${bookmarks.length}`);
      for (const b of bookmarks) {
        assert.equal(Number(b.watch_id), Number(got[0].watch_id));
        assert.ok(Number(b.header.revision) >= rev, "a bookmark carries the current revision");
      }
    } finally {
      call.cancel();
      kv.close();
      watchClient.close();
      await srv.stop();
    }
  },
});
