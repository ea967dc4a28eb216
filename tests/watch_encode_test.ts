/** The hand-written watch encoding decodes, with protobufjs, to exactly the WatchResponse it stands for. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { pbRoot, type RangeResponse } from "../proto/mod.ts";
import {
  encodeEvent,
  encodeRangeResponse,
  eventField,
  eventFields,
  HeaderEncoder,
  joinFields,
  watchEventsHead,
  type WatchNotice,
  watchNoticeFrame,
} from "../server/watch/encode.ts";
import type { StoreEvent } from "../server/mvcc/store.ts";

const WatchResponse = pbRoot.lookupType("etcdserverpb.WatchResponse");
const decode = (b: Uint8Array) =>
  WatchResponse.toObject(WatchResponse.decode(b), { longs: String, defaults: true, bytes: Buffer });

/** A response as sent (head + shared event fields), checked to be one well-framed gRPC message; returns its body. */
function encodeWatchEvents(header: Uint8Array, watchId: number, events: Uint8Array[], fragment: boolean): Uint8Array {
  const fields = eventFields(events);
  const framed = Buffer.concat([watchEventsHead(header, watchId, fields.length, fragment), fields]);
  assert.equal(framed[0], 0, "not compressed");
  assert.equal(framed.readUInt32BE(1), framed.length - 5, "gRPC length prefix");
  return framed.subarray(5);
}

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

Deno.test("watch responses: watch IDs of every varint size, 1 to 5 events, fragments; one event's fields are shared", () => {
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
  for (const id of [0, 1, 127, 128, 300000, -1]) {
    for (const n of [1, 2, 5]) {
      for (const fragment of [false, true]) {
        const r = decode(
          encodeWatchEvents(header, id, Array.from({ length: n }, (_, i) => encodeEvent(ev(i), false)), fragment),
        );
        const what = `watch id ${id}, ${n} events, fragment ${fragment}`;
        assert.equal(r.watch_id, String(id), what);
        assert.equal(r.fragment, fragment, what);
        assert.equal(r.header.revision, String(2 ** 33), what);
        assert.deepEqual(
          r.events.map((e: { kv: { mod_revision: string } }) => e.kv.mod_revision),
          Array.from({ length: n }, (_, i) => String(2 ** 33 + i)),
          what,
        );
        assert.equal(r.events[n - 1].kv.value.length, 100 * (n - 1), what);
      }
    }
  }
  // an event's field is encoded once and kept on the event (no WeakMap: a full collection would trace an ephemeron
  // per event), the same bytes for every watcher; joined fields are the fields eventFields makes of the events
  const e1 = ev(1), e2 = ev(2);
  assert.equal(e1.field, undefined);
  const f1 = eventField(e1, false);
  assert.equal(e1.field, f1, "kept on the event");
  assert.equal(eventField(e1, false), f1, "shared");
  assert.equal(eventField(e1, true), f1, "no prev: the same flavour");
  assert.equal(joinFields([f1]), f1, "one field alone is its own bytes");
  assert.deepEqual(
    joinFields([f1, eventField(e2, false)]),
    eventFields([encodeEvent(e1, false), encodeEvent(e2, false)]),
  );
  const withPrev: StoreEvent = { ...ev(3), prev: ev(2).kv };
  const fp = eventField(withPrev, true);
  assert.equal(withPrev.fieldPrev, fp);
  assert.notDeepEqual(fp, eventField(withPrev, false));
  assert.deepEqual(fp, eventFields([encodeEvent(withPrev, true)]));
});

Deno.test("watch responses without events (created, canceled, progress) decode as the messages protobufjs encodes", () => {
  const enc = new HeaderEncoder("14841639068965178418", "10276657743932975437");
  const notices: [WatchNotice, Record<string, unknown>][] = [
    [{ watchId: 0, created: true }, { watch_id: 0, created: true }],
    [{ watchId: 300000, created: true }, { watch_id: 300000, created: true }],
    [
      {
        watchId: -1,
        created: true,
        canceled: true,
        cancelReason: "mvcc: duplicate watch ID provided on the WatchStream",
      },
      {
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream",
      },
    ],
    [{ watchId: 7, canceled: true }, { watch_id: 7, canceled: true }],
    [
      {
        watchId: 3,
        canceled: true,
        compactRevision: 2 ** 33,
        cancelReason: "mvcc: required revision has been compacted ü",
      },
      {
        watch_id: 3,
        canceled: true,
        compact_revision: 2 ** 33,
        cancel_reason: "mvcc: required revision has been compacted ü",
      },
    ],
    [{ watchId: -1 }, { watch_id: -1 }],
    [{ watchId: 5 }, { watch_id: 5 }],
  ];
  for (const rev of [0, 1, 2 ** 33]) {
    const header = enc.encode(rev, 9);
    for (const [n, obj] of notices) {
      const frame = watchNoticeFrame(header, n);
      assert.equal(frame[0], 0);
      assert.equal(Buffer.from(frame).readUInt32BE(1), frame.length - 5);
      const want = WatchResponse.encode(WatchResponse.fromObject({
        header: { cluster_id: "14841639068965178418", member_id: "10276657743932975437", revision: rev, raft_term: 9 },
        ...obj,
      })).finish();
      // protobufjs also writes the zeros it was given; decoded, the two are the same message
      assert.deepEqual(decode(frame.subarray(5)), decode(want), JSON.stringify(n));
      assert.ok(frame.length - 5 <= want.length);
    }
  }
});

Deno.test("range responses: header, kvs with and without lease, more, count, empty", () => {
  const RangeResponse = pbRoot.lookupType("etcdserverpb.RangeResponse");
  const decodeRange = (b: Uint8Array) =>
    RangeResponse.toObject(RangeResponse.decode(Buffer.from(b)), { longs: String, defaults: true, bytes: Buffer });
  const viaProtobufjs = (v: RangeResponse) =>
    decodeRange(RangeResponse.encode(RangeResponse.fromObject(v as never)).finish());
  const header = {
    cluster_id: "18446744073709551615",
    member_id: "12087160956821666428",
    revision: 2 ** 40,
    raft_term: "7",
  };
  const kvs = [
    {
      key: Buffer.from([0, 1, 255]),
      create_revision: 5,
      mod_revision: 2 ** 40,
      version: 3,
      value: Buffer.from("v"),
      lease: "7587862072459722555",
    },
    { key: Buffer.from("k"), create_revision: 9, mod_revision: 9, version: 1, value: Buffer.alloc(0), lease: "0" },
    // the first one's lease again after one without (the encoder keeps the last lease's bytes), long key and value
    {
      key: Buffer.alloc(300, 0x6b),
      create_revision: 10,
      mod_revision: 11,
      version: 2,
      value: Buffer.alloc(70_000, 0x76),
      lease: "7587862072459722555",
    },
  ];
  for (
    const res of [
      { header, kvs, more: true, count: 12 },
      { header, kvs: [], more: false, count: 0 },
      { header: { ...header, cluster_id: "0", raft_term: "0" }, kvs: kvs.slice(1), more: false, count: 1 },
    ]
  ) {
    assert.deepEqual(decodeRange(encodeRangeResponse(res)), viaProtobufjs(res));
  }
});
