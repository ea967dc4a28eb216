/**
 * The watch fan-out in slices (issue 14: no request stalls the event loop over 100 ms): commits seen by thousands of
 * watchers are handed out a few streams at a time with the event loop running in between, and still every watcher
 * gets every revision once, in order; a progress header never claims a revision some watcher has not been sent; a
 * stream opened during a fan-out gets only the commits after it, a stream closed during one gets nothing more.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { pbRoot } from "../proto/mod.ts";
import { MvccStore } from "../server/mvcc/store.ts";
import { HeaderEncoder } from "../server/watch/encode.ts";
import { WatchHub, type WatchStream } from "../server/watch/watch_stream.ts";

const WatchResponseType = pbRoot.lookupType("etcdserverpb.WatchResponse");
const decode = (b: Uint8Array) => WatchResponseType.toObject(WatchResponseType.decode(b), { longs: Number });

/** A stream whose sink records, per watch ID, the revisions of the responses it was sent, once per response. */
function recordingStream(hub: WatchHub) {
  const revs = new Map<number, number[]>();
  const record = (r: { watch_id?: number; events?: { kv: { mod_revision: number } }[] }) => {
    if (!r.events?.length) return;
    const list = revs.get(r.watch_id ?? 0) ?? [];
    // a revision's events come in one response: a revision sent twice shows up twice
    let prev = -1;
    for (const e of r.events) if (e.kv.mod_revision !== prev) list.push(prev = e.kv.mod_revision);
    revs.set(r.watch_id ?? 0, list);
  };
  const stream: WatchStream = hub.open({
    sendFramed: (head, body) => {
      record(decode(Buffer.concat([head.subarray(5), body])) as never);
      return true;
    },
  });
  return { stream, revs };
}

/** A member's watch hub over a store (header fields fixed, progress notifications off). */
function hubOf(store: MvccStore): WatchHub {
  return new WatchHub(
    store,
    new HeaderEncoder("1", "2"),
    () => 3,
    1 << 20,
    60_000,
  );
}

Deno.test("watch fan-out: 6,000 watchers get every revision once and in order, over several slices", async () => {
  const store = new MvccStore();
  const hub = hubOf(store);
  const STREAMS = 120, PER_STREAM = 50, COMMITS = 12;
  const streams = Array.from({ length: STREAMS }, () => recordingStream(hub));
  for (const { stream } of streams) {
    for (let w = 0; w < PER_STREAM; w++) {
      stream.handle({ create_request: { key: Buffer.from("hot/"), range_end: Buffer.from("hot0") } } as never);
    }
  }
  const first = store.currentRev + 1;
  let late = null as ReturnType<typeof recordingStream> | null;
  let lateFrom = 0;
  let ticks = 0, overclaimed = 0;
  const timer = setInterval(() => {
    ticks++;
    // a progress header may claim `deliveredRev`: every watcher must have been sent every revision up to it
    const claimed = hub.deliveredRev;
    for (const s of streams.slice(0, STREAMS - 1)) {
      for (const list of s.revs.values()) if ((list.at(-1) ?? first - 1) < claimed) overclaimed++;
    }
    if (!late && hub.deliveredRev < store.currentRev) {
      late = recordingStream(hub); // opened while a fan-out is under way
      late.stream.handle({ create_request: { key: Buffer.from("hot/"), range_end: Buffer.from("hot0") } } as never);
      lateFrom = store.currentRev + 1;
      const t = store.write();
      t.put("hot/late", Buffer.from("x"), "0");
      t.end();
    }
  }, 0);
  const closing = streams[STREAMS - 1];
  for (let i = 0; i < COMMITS; i++) {
    const t = store.write();
    t.put(`hot/${i}`, Buffer.from(`v${i}`), "0");
    t.end();
  }
  closing.stream.close(); // before its fan-out: it is sent nothing
  while (hub.deliveredRev < store.currentRev) await new Promise((r) => setTimeout(r, 1));
  clearInterval(timer);

  assert.ok(ticks > 1, `the event loop ran during the fan-out (${ticks} timer ticks)`);
  assert.equal(overclaimed, 0, "deliveredRev never ran ahead of a watcher");
  const all = Array.from({ length: store.currentRev - first + 1 }, (_, i) => first + i);
  for (const s of streams.slice(0, STREAMS - 1)) {
    assert.equal(s.revs.size, PER_STREAM);
    for (const list of s.revs.values()) assert.deepEqual(list, all);
  }
  assert.equal(closing.revs.size, 0, "a closed stream is sent nothing");
  assert.ok(late, "a stream was opened during the fan-out");
  assert.deepEqual([...late!.revs.values()], [all.filter((r) => r >= lateFrom)]);
});

Deno.test("watch fan-out: watchers of one key, of another and of a range on a stream that backs up get every revision once, in order", async () => {
  const store = new MvccStore();
  const hub = hubOf(store);
  let room = 5; // sends accepted before the stream reports a full buffer
  const got = new Map<number, number[]>();
  const record = (r: { watch_id?: number; events?: { kv: { mod_revision: number } }[] }) => {
    for (const e of r.events ?? []) got.set(r.watch_id ?? 0, [...(got.get(r.watch_id ?? 0) ?? []), e.kv.mod_revision]);
  };
  const stream = hub.open({
    sendFramed: (head, body) => {
      record(decode(Buffer.concat([head.subarray(5), body])) as never);
      return --room > 0;
    },
  });
  const create = (key: string, end?: string) =>
    stream.handle(
      { create_request: { key: Buffer.from(key), range_end: end ? Buffer.from(end) : undefined } } as never,
    );
  create("hot"); // watch 0
  create("quiet"); // watch 1
  create("r/", "r0"); // watch 2: a range
  create("hot"); // watch 3: a second watcher of the same key
  const want = new Map<number, number[]>([[0, []], [1, []], [2, []], [3, []]]);
  const put = (k: string) => {
    const t = store.write();
    t.put(k, Buffer.from("v"), "0");
    t.end();
    return store.currentRev;
  };
  for (let i = 0; i < 40; i++) {
    const rev = put(i % 3 === 0 ? "r/x" : "hot");
    want.get(i % 3 === 0 ? 2 : 0)!.push(rev);
    if (i % 3 !== 0) want.get(3)!.push(rev);
    if (i === 25) want.get(1)!.push(put("quiet"));
    if (i % 10 === 9) await new Promise((r) => setTimeout(r, 1)); // let the fan-out run
  }
  while (hub.deliveredRev < store.currentRev) await new Promise((r) => setTimeout(r, 1));
  room = 1e9;
  stream.drained(); // the buffer has room again: the watchers that fell behind catch up from history (in slices)
  want.get(1)!.push(put("quiet"));
  const deadline = Date.now() + 10_000;
  while (hub.deliveredRev < store.currentRev || JSON.stringify([...got]) !== JSON.stringify([...want])) {
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.deepEqual(got, want);
});

Deno.test("watch requests and catch-up from history run in slices: 3,000 creates at an old revision, each replayed whole", async () => {
  const store = new MvccStore();
  const hub = hubOf(store);
  const first = store.currentRev + 1;
  for (let i = 0; i < 300; i++) {
    const t = store.write();
    t.put(`old/${i % 7}`, Buffer.alloc(100, i), "0");
    t.end();
  }
  const created: number[] = [];
  const revs = new Map<number, number[]>();
  const stream = hub.open({
    sendFramed: (head, body) => {
      const r = decode(Buffer.concat([head.subarray(5), body])) as {
        watch_id?: number;
        created?: boolean;
        events?: { kv: { mod_revision: number } }[];
      };
      if (r.created) created.push(r.watch_id ?? 0);
      for (const e of r.events ?? []) {
        const list = revs.get(r.watch_id ?? 0) ?? [];
        list.push(e.kv.mod_revision);
        revs.set(r.watch_id ?? 0, list);
      }
      return true;
    },
  });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const N = 3000;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    stream.request(
      { create_request: { key: Buffer.from("old/"), range_end: Buffer.from("old0"), start_revision: 1 } } as never,
    );
  }
  const inline = created.length;
  // a put after the requests arrived: every watcher gets it once, after its replay
  const t = store.write();
  t.put("old/new", Buffer.from("x"), "0");
  t.end();
  while ([...revs.values()].filter((l) => l.length === 301).length < N) {
    assert.ok(performance.now() - t0 < 60_000, "not every watcher caught up");
    await new Promise((r) => setTimeout(r, 5));
  }
  clearInterval(timer);
  assert.ok(inline < N, `${inline} of ${N} creates handled as they arrived: the rest wait their turn`);
  assert.ok(ticks > 2, `the event loop ran while requests and replays were handled (${ticks} ticks)`);
  assert.deepEqual(created, Array.from({ length: N }, (_, i) => i), "created answers in order");
  const all = Array.from({ length: 301 }, (_, i) => first + i);
  for (const list of revs.values()) assert.deepEqual(list, all);
});

Deno.test("watch fan-out: a resync in the middle of a fan-out (a restored store) loses and repeats nothing", async () => {
  const store = new MvccStore();
  const hub = hubOf(store);
  const streams = Array.from({ length: 120 }, () => recordingStream(hub));
  for (const { stream } of streams) {
    for (let w = 0; w < 50; w++) {
      stream.handle({ create_request: { key: Buffer.from("r/"), range_end: Buffer.from("r0") } } as never);
    }
  }
  const first = store.currentRev + 1;
  const put = (i: number) => {
    const t = store.write();
    t.put(`r/${i % 9}`, Buffer.from(`${i}`), "0");
    t.end();
  };
  for (let i = 0; i < 30; i++) put(i);
  // let the fan-out start, then resync while it is under way
  while (!streams.some((s) => s.revs.size > 0)) await new Promise((r) => setTimeout(r, 0));
  assert.ok(hub.deliveredRev < store.currentRev, "the resync comes in the middle of a fan-out");
  hub.resync();
  for (let i = 30; i < 60; i++) put(i);
  const all = Array.from({ length: store.currentRev - first + 1 }, (_, i) => first + i);
  const deadline = Date.now() + 20_000;
  const done = () =>
    streams.every((s) => s.revs.size === 50 && [...s.revs.values()].every((l) => l.at(-1) === all.at(-1)));
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  for (const s of streams) {
    assert.equal(s.revs.size, 50);
    for (const list of s.revs.values()) assert.deepEqual(list, all);
  }
});
