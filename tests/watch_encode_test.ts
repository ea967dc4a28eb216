/** The hand-written watch encoding decodes, with protobufjs, to exactly the WatchResponse it stands for. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { pbRoot } from "../proto/mod.ts";
import { encodeEvent, encodeWatchEvents, eventFields, HeaderEncoder, watchEventsHead } from "../server/watch/encode.ts";
import type { StoreEvent } from "../server/mvcc/store.ts";

const WatchResponse = pbRoot.lookupType("etcdserverpb.WatchResponse");
const decode = (b: Uint8Array) =>
  WatchResponse.toObject(WatchResponse.decode(b), { longs: String, defaults: true, bytes: Buffer });

Deno.test("watch responses: header, watch id, events with and without prev_kv, leases, fragments", () => {
  const bin = Buffer.from([0, 1, 127, 128, 255]);
  const put: StoreEvent = {
    type: 0,
    kv: {
      key: bin,
      create_revision: 5,
      mod_revision: 2 ** 40,
      version: 3,
      value: Buffer.from("v"),
      lease: "7587862072459722555",
    },
    prev: { key: bin, create_revision: 5, mod_revision: 6, version: 2, value: Buffer.from("old"), lease: "0" },
  };
  const del: StoreEvent = {
    type: 1,
    kv: { key: Buffer.from("k"), create_revision: 0, mod_revision: 9, version: 0, value: Buffer.alloc(0), lease: "0" },
    prev: null,
  };
  const header = new HeaderEncoder("18446744073709551615", "12087160956821666428").encode(2 ** 40, 7);
  const r = decode(encodeWatchEvents(header, 3, [encodeEvent(put, true), encodeEvent(del, true)], true));
  assert.deepEqual(r.header, {
    cluster_id: "18446744073709551615",
    member_id: "12087160956821666428",
    revision: String(2 ** 40),
    raft_term: "7",
  });
  assert.equal(r.watch_id, "3");
  assert.equal(r.fragment, true);
  assert.equal(r.events.length, 2);
  assert.deepEqual(Buffer.from(r.events[0].kv.key), bin);
  assert.equal(r.events[0].kv.mod_revision, String(2 ** 40));
  assert.equal(r.events[0].kv.lease, "7587862072459722555");
  assert.equal(Buffer.from(r.events[0].prev_kv.value).toString(), "old");
  assert.equal(r.events[1].type, 1);
  assert.equal(r.events[1].kv.mod_revision, "9");
  assert.equal(r.events[1].prev_kv, null);
  const plain = decode(encodeWatchEvents(header, 0, [encodeEvent(put, false)], false));
  assert.equal(plain.watch_id, "0");
  assert.equal(plain.events[0].prev_kv, null);
  assert.equal(decode(encodeWatchEvents(header, -1, [], false)).watch_id, "-1");
});

Deno.test("watch responses in two parts (per-watcher head + shared event fields) equal the one-piece encoding", () => {
  const ev = (i: number): StoreEvent => ({
    type: 0,
    kv: {
      key: Buffer.from(`key${i}`),
      create_revision: i,
      mod_revision: 2 ** 33 + i,
      version: 1,
      value: Buffer.alloc(100 * i, i),
      lease: "0",
    },
    prev: null,
  });
  const header = new HeaderEncoder("14841639068965178418", "10276657743932975437").encode(2 ** 33, 2);
  for (const ids of [0, 1, 127, 128, 300000, -1]) {
    for (const n of [1, 2, 5]) {
      const events = Array.from({ length: n }, (_, i) => encodeEvent(ev(i), false));
      const fields = eventFields(events);
      const head = watchEventsHead(header, ids, fields.length);
      const whole = encodeWatchEvents(header, ids, events, false);
      const framed = new Uint8Array(5 + whole.length);
      new DataView(framed.buffer).setUint32(1, whole.length);
      framed.set(whole, 5);
      assert.deepEqual(Buffer.concat([head, fields]), Buffer.from(framed), `watch id ${ids}, ${n} events`);
    }
  }
  // one event's fields are shared by every watcher that gets it
  const one = [encodeEvent(ev(1), false)];
  assert.equal(eventFields(one), eventFields([one[0]]));
});
