#!/usr/bin/python3
"""python3-etcd3 (0.12, Debian) scenarios against an etcd-compatible server.

Usage: /usr/bin/python3 tests/clients/python_client.py <host> <port> <scenario>

Each scenario checks the behaviour of real etcd with assertions and prints a JSON object of what it observed
(revisions relative to the revision read at its start, so scenarios are independent of each other). An assertion
failure or error exits non-zero with the message on stderr. Scenarios: kv, txn, lease, watch, cluster, compact,
binary.
"""
import json
import queue
import sys
import threading
import time

import etcd3
import grpc
from etcd3 import etcdrpc


def eq(actual, expected, what):
    assert actual == expected, f"{what}: expected {expected!r}, got {actual!r}"


def current_revision(c):
    return c.get_response("no-such-key/rev-probe").header.revision


def rpc_error(fn):
    """Runs fn, which must fail with a gRPC error; returns [code name, details]."""
    try:
        fn()
    except grpc.RpcError as e:
        return [e.code().name, e.details()]
    raise AssertionError("expected a gRPC error")


def scenario_kv(c):
    c.delete_prefix("py/k")
    r = current_revision(c)
    eq(c.put("py/kv/a", "hello").header.revision, r + 1, "put revision")
    value, meta = c.get("py/kv/a")
    eq(value, b"hello", "get value")
    eq((meta.key, meta.create_revision, meta.mod_revision, meta.version, meta.lease_id),
       (b"py/kv/a", r + 1, r + 1, 1, 0), "metadata")
    eq(meta.response_header.revision, r + 1, "header revision")
    prev = c.put("py/kv/a", "hello2", prev_kv=True)
    eq((prev.prev_kv.value, prev.prev_kv.version, prev.header.revision), (b"hello", 1, r + 2), "prev_kv")
    c.put("py/kv/c", "3")
    c.put("py/kv/b", "2")
    c.put("py/kw", "outside")
    eq(c.get("py/kv/missing"), (None, None), "missing key")
    listed = [(m.key.decode(), v.decode(), m.version) for v, m in c.get_prefix("py/kv/")]
    eq(listed, [("py/kv/a", "hello2", 2), ("py/kv/b", "2", 1), ("py/kv/c", "3", 1)], "get_prefix")
    desc = [m.key.decode() for _, m in c.get_prefix("py/kv/", sort_order="descend", sort_target="create")]
    eq(desc, ["py/kv/b", "py/kv/c", "py/kv/a"], "get_prefix by create descending")
    keys_only = [(v, m.key.decode()) for v, m in c.get_prefix("py/kv/", keys_only=True)]
    eq(keys_only, [(b"", "py/kv/a"), (b"", "py/kv/b"), (b"", "py/kv/c")], "keys_only")
    ranged = [m.key.decode() for _, m in c.get_range("py/kv/b", "py/kw")]
    eq(ranged, ["py/kv/b", "py/kv/c"], "get_range")
    eq(c.delete("py/kv/b"), True, "delete existing")
    eq(c.delete("py/kv/b"), False, "delete missing")
    resp = c.delete("py/kv/c", prev_kv=True, return_response=True)
    eq((resp.deleted, resp.prev_kvs[0].key, resp.prev_kvs[0].value), (1, b"py/kv/c", b"3"), "delete prev_kv")
    eq(c.put_if_not_exists("py/kv/a", "x"), False, "put_if_not_exists on existing key")
    eq(c.put_if_not_exists("py/kv/new", "x"), True, "put_if_not_exists on new key")
    eq(c.replace("py/kv/a", "wrong", "y"), False, "replace with wrong value")
    eq(c.replace("py/kv/a", "hello2", "y"), True, "replace")
    eq(c.delete_prefix("py/kv/").deleted, 2, "delete_prefix")
    eq(list(c.get_prefix("py/kv/")), [], "prefix empty after delete_prefix")
    eq(c.get("py/kw")[0], b"outside", "key outside the prefix survives")
    return {"revision_delta": current_revision(c) - r}


def scenario_txn(c):
    c.delete_prefix("py/txn/")
    r = current_revision(c)
    t = c.transactions
    c.put("py/txn/k", "v1")  # r+1
    ok, responses = c.transaction(
        compare=[t.value("py/txn/k") == "v1", t.version("py/txn/k") == 1, t.create("py/txn/k") == r + 1,
                 t.mod("py/txn/k") < r + 2],
        success=[t.put("py/txn/k", "v2"), t.get("py/txn/k")],
        failure=[t.put("py/txn/other", "failed")],
    )
    eq(ok, True, "first txn succeeded")
    eq(responses[0].response_put.header.revision, r + 2, "inner put header revision")
    (value, meta), = responses[1]
    eq((value, meta.version, meta.mod_revision), (b"v2", 2, r + 2), "get inside txn")
    ok, responses = c.transaction(
        compare=[t.value("py/txn/k") == "v1"],
        success=[t.put("py/txn/k", "v3")],
        failure=[t.put("py/txn/other", "failed"), t.delete("py/txn/k"), t.get("py/txn/other")],
    )
    eq(ok, False, "second txn failed")
    eq(responses[1].response_delete_range.deleted, 1, "delete inside txn")
    eq([v for v, _ in responses[2]], [b"failed"], "get inside failure branch")
    eq(current_revision(c), r + 3, "each txn is one revision")
    eq(c.get("py/txn/k"), (None, None), "deleted by the failure branch")
    # A missing key has version 0, but a value compare on it always fails.
    ok, _ = c.transaction(compare=[t.version("py/txn/k") == 0], success=[t.put("py/txn/k", "again")], failure=[])
    eq(ok, True, "version == 0 on a missing key")
    ok, _ = c.transaction(compare=[t.value("py/txn/none") != "x"], success=[t.put("py/txn/k", "no")], failure=[])
    eq(ok, False, "value compare on a missing key")
    eq(current_revision(c), r + 4, "a txn that writes nothing adds no revision")
    err = rpc_error(lambda: c.transaction(compare=[], success=[t.put("py/txn/d", "1"), t.put("py/txn/d", "2")], failure=[]))
    eq(err, ["INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request"], "duplicate key")
    return {"revision_delta": current_revision(c) - r}


def scenario_lease(c):
    short = c.lease(1)
    eq(short.ttl, 2, "a 1 s TTL is raised to etcd's 2 s minimum")
    lease = c.lease(30)
    eq(lease.ttl, 30, "granted TTL")
    assert lease.id > 0, "lease ID"
    r = current_revision(c)
    c.put("py/lease/k1", "v", lease=lease)
    c.put("py/lease/k2", "v", lease=lease.id)
    eq(current_revision(c), r + 2, "puts with lease")
    eq(c.get("py/lease/k1")[1].lease_id, lease.id, "key's lease ID")
    refreshed = list(lease.refresh())
    eq([(x.ID, x.TTL) for x in refreshed], [(lease.id, 30)], "keepalive response")
    assert refreshed[0].header.revision == r + 2, "keepalive header revision"
    remaining = lease.remaining_ttl
    assert 27 <= remaining <= 30, f"remaining TTL {remaining}"
    eq(lease.granted_ttl, 30, "granted_ttl")
    eq(sorted(lease.keys), [b"py/lease/k1", b"py/lease/k2"], "attached keys")
    lease.revoke()
    eq(current_revision(c), r + 3, "revoke deletes both keys in one revision")
    eq(c.get("py/lease/k1"), (None, None), "key gone after revoke")
    eq(c.get("py/lease/k2"), (None, None), "key gone after revoke")
    eq(c.get_lease_info(lease.id).TTL, -1, "TimeToLive of a revoked lease")
    eq([(x.ID, x.TTL) for x in c.refresh_lease(lease.id)], [(lease.id, 0)], "keepalive of an unknown lease")
    err = rpc_error(lambda: c.revoke_lease(lease.id))
    eq(err, ["NOT_FOUND", "etcdserver: requested lease not found"], "revoke twice")
    err = rpc_error(lambda: c.put("py/lease/k3", "v", lease=lease.id))
    eq(err, ["NOT_FOUND", "etcdserver: requested lease not found"], "put with revoked lease")
    short.revoke()
    return {"lease_id": str(lease.id), "remaining": remaining}


def event_tuple(e):
    kind = type(e).__name__
    return [kind, e.key.decode(), e.value.decode(), e.mod_revision, e.version]


def scenario_watch(c):
    seen, cond = [], threading.Condition()

    def callback(resp):
        with cond:
            if not isinstance(resp, Exception):  # the stream ends with an error when the client closes
                seen.append([event_tuple(e) for e in resp.events])
                cond.notify_all()

    def wait_for(pred, what):
        with cond:
            assert cond.wait_for(lambda: pred(), timeout=10), f"timed out waiting for {what}: {seen}"

    c.delete_prefix("py/w")
    r = current_revision(c)
    wid = c.add_watch_prefix_callback("py/w/", callback)
    c.put("py/w/a", "1")  # r+1
    c.put("py/wx", "outside")  # r+2
    c.put("py/w/b", "2")  # r+3
    c.delete("py/w/a")  # r+4
    wait_for(lambda: sum(len(x) for x in seen) >= 3, "3 events")
    c.cancel_watch(wid)
    events = [e for batch in seen for e in batch]
    eq(events, [["PutEvent", "py/w/a", "1", r + 1, 1], ["PutEvent", "py/w/b", "2", r + 3, 1],
                ["DeleteEvent", "py/w/a", "", r + 4, 0]], "callback events")

    # Iterator API, with a thread writing while the main thread consumes.
    it, cancel = c.watch("py/w/it")

    def writer():
        for i in range(3):
            c.put("py/w/it", f"v{i}")
    threading.Thread(target=writer).start()
    got = []
    for e in it:
        got.append(event_tuple(e))
        if len(got) == 3:
            cancel()
    eq([(g[0], g[2], g[4]) for g in got], [("PutEvent", f"v{i}", i + 1) for i in range(3)], "iterator events")
    eq([g[3] for g in got], [r + 5, r + 6, r + 7], "iterator event revisions")

    # Replay from a past revision, with prev_kv.
    replayed = []
    done = threading.Event()

    def replay_cb(resp):
        if isinstance(resp, Exception):
            return
        replayed.extend([event_tuple(e), e.prev_value.decode()] for e in resp.events)
        if len(replayed) >= 2:
            done.set()
    wid = c.add_watch_callback("py/w/a", replay_cb, start_revision=r + 1, prev_kv=True)
    assert done.wait(10), f"replay: {replayed}"
    c.cancel_watch(wid)
    eq(replayed, [[["PutEvent", "py/w/a", "1", r + 1, 1], ""], [["DeleteEvent", "py/w/a", "", r + 4, 0], "1"]],
       "replayed events")
    return {"events": len(events) + len(got) + len(replayed)}


def scenario_cluster(c):
    status = c.status()
    members = list(c.members)
    eq(len(members), 1, "one member")
    m = members[0]
    assert status.leader is not None, "Status.leader matches a member ID"
    eq(status.leader.id, m.id, "leader")
    header = c.get_response("no-such-key").header
    eq(header.member_id, m.id, "header member_id")
    assert header.cluster_id != 0 and header.raft_term >= 1, f"header {header}"
    eq(status.raft_term, header.raft_term, "raft term")
    assert status.db_size > 0 and status.raft_index > 0, "db size / raft index"
    eq(list(c.list_alarms()), [], "no alarms")
    c.defragment()
    assert c.hash() != 0, "hash"
    return {"member_id": str(m.id), "name": m.name, "peer_urls": list(m.peer_urls), "client_urls": list(m.client_urls),
            "version": status.version}


def scenario_compact(c):
    c.delete("py/compact/k")
    r = current_revision(c)
    for v in "abc":
        c.put("py/compact/k", v)  # r+1..r+3
    c.compact(r + 2)
    eq(current_revision(c), r + 3, "compaction adds no revision")

    def range_at(rev):
        return c.kvstub.Range(etcdrpc.RangeRequest(key=b"py/compact/k", revision=rev), c.timeout)
    compacted = ["OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"]
    future = ["OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision"]
    eq(rpc_error(lambda: range_at(r + 1)), compacted, "range below the compaction")
    eq(range_at(r + 2).kvs[0].value, b"b", "range at the compaction revision")
    eq(rpc_error(lambda: range_at(r + 50)), future, "range at a future revision")
    eq(rpc_error(lambda: c.compact(r + 1)), compacted, "compact again below")
    eq(rpc_error(lambda: c.compact(r + 50)), future, "compact in the future")
    c.compact(r + 3, physical=True)
    # etcd first confirms the watch (created), then cancels it with compact_revision, which python-etcd3 hands to
    # the callback as RevisionCompactedError.
    errors = queue.Queue()
    c.add_watch_callback("py/compact/k", errors.put, start_revision=r + 1)
    err = errors.get(timeout=10)
    assert isinstance(err, etcd3.exceptions.RevisionCompactedError), f"watch below the compaction: {err!r}"
    eq(err.compacted_revision, r + 3, "watch compact_revision")
    return {"compacted": r + 3}


def scenario_binary(c):
    prefix = b"py/bin/"
    for i in range(256):
        c.put(prefix + bytes([i]), bytes([i, 255 - i]))
    all_bytes = bytes(range(256))
    c.put(all_bytes, all_bytes[::-1])
    eq(c.get(all_bytes)[0], all_bytes[::-1], "key made of every byte value")
    for i in (0, 1, 10, 127, 128, 255):
        eq(c.get(prefix + bytes([i]))[0], bytes([i, 255 - i]), f"key byte {i}")
    listed = [(m.key, v) for v, m in c.get_prefix(prefix)]
    eq(listed, [(prefix + bytes([i]), bytes([i, 255 - i])) for i in range(256)], "prefix listing in byte order")
    eq(c.get(b"\xff\xfe")[0], None, "missing binary key")
    c.put(b"\xff", b"\x00")
    eq(c.get(b"\xff")[0], b"\x00", "key 0xff")
    eq(c.delete_prefix(prefix).deleted, 256, "delete_prefix")
    c.delete(all_bytes)
    c.delete(b"\xff")
    return {"keys": 258}


def main():
    host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # python-etcd3's watch thread dies noisily once the channel is closed at exit; keep stderr for real failures.
    default_hook = threading.excepthook
    threading.excepthook = lambda a: None if a.thread.name.startswith("etcd3_watch_") else default_hook(a)
    c = etcd3.client(host, port, timeout=10)
    start = time.monotonic()
    try:
        result = globals()["scenario_" + name](c)
    finally:
        c.close()
    result["seconds"] = round(time.monotonic() - start, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"assertion failed: {e}", file=sys.stderr)
        sys.exit(1)
