/**
 * Specification tests for the etcd backend snapshot writer (server/snapshot/): the bytes must be a valid bbolt
 * database in etcd 3.4's layout. Checked with the system's etcdctl (`snapshot status` runs bbolt's own Check()) and
 * by restoring into a data directory that the real etcd 3.4 (/usr/bin/etcd) then serves.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pbRoot } from "../proto/mod.ts";
import { Lessor } from "../server/lease/lessor.ts";
import { toBKey } from "../server/mvcc/keys.ts";
import { MvccStore } from "../server/mvcc/store.ts";
import { compareBytes, fnv64a, PAGE_SIZE, writeBbolt } from "../server/snapshot/bbolt_writer.ts";
import {
  encodeEtcdSnapshot,
  encodeKeyValue,
  encodeLease,
  etcdSnapshotInput,
  revisionKey,
  type SnapshotSource,
} from "../server/snapshot/etcd_backend.ts";
import { etcdctl, etcdctlOk, parseJson } from "./lib/etcdctl.ts";
import { freePorts } from "./lib/ports.ts";
import { spawnProcess } from "./lib/process.ts";
import { startServer } from "./lib/server.ts";

const ETCD = Deno.env.get("ETCD_REFERENCE") ?? "/usr/bin/etcd";
const enc = new TextEncoder();
const b = (s: string) => Buffer.from(s, "utf8");

// ---------------------------------------------------------------------------------------------------------------
// A server state built through the real store and lessor, so histories are consistent by construction.

class State implements SnapshotSource {
  store = new MvccStore();
  lessor = new Lessor(1);
  applier = { alarms: [] as Array<{ memberID: string; alarm: number }> };
  appliedIndex = 0;
  term = 2;

  /** One revision with several changes. */
  txn(ops: Array<{ put?: Buffer; value?: Buffer; lease?: string; del?: Buffer }>): void {
    const t = this.store.write();
    for (const op of ops) {
      if (op.put) {
        const k = toBKey(op.put);
        const { prev } = t.put(k, op.value ?? Buffer.alloc(0), op.lease ?? "0");
        if (prev) this.lessor.detach(prev.lease, k);
        this.lessor.attach(op.lease ?? "0", k);
      } else if (op.del) {
        for (const prev of t.deleteRange(toBKey(op.del), "")) this.lessor.detach(prev.lease, toBKey(prev.key));
      }
    }
    t.end();
    this.appliedIndex++;
  }

  put(key: Buffer | string, value: Buffer | string, lease = "0"): void {
    this.txn([{
      put: typeof key === "string" ? b(key) : key,
      value: typeof value === "string" ? b(value) : value,
      lease,
    }]);
  }

  del(key: string): void {
    this.txn([{ del: b(key) }]);
  }

  grant(id: string, ttl: number): void {
    this.lessor.grant(id, ttl);
    this.appliedIndex++;
  }

  compact(rev: number): void {
    this.store.compact(rev);
    this.appliedIndex++;
  }

  snapshot(): Uint8Array {
    return encodeEtcdSnapshot(etcdSnapshotInput(this));
  }
}

/** A history with overwrites, deletes, a re-created key, a multi-change revision, leases and a compaction. */
function historyState(): State {
  const s = new State();
  s.put("a", "1"); // 2
  s.put("b", "2"); // 3
  s.put("a", "3"); // 4
  s.del("b"); // 5
  s.grant("7027763970512153097", 100); // an ID beyond 2^53
  s.put("c", "4", "7027763970512153097"); // 6
  s.txn([{ put: b("x"), value: b("1") }, { put: b("y"), value: b("2") }, { del: b("a") }]); // 7: subs 0, 1, 2
  s.compact(4);
  s.put("z", "9"); // 8
  s.put(Buffer.from([0x00, 0xff, 0x01]), Buffer.from([0xde, 0xad, 0x00, 0xbe, 0xef])); // 9: binary key and value
  s.put("c", "5", "7027763970512153097"); // 10: version 2, same lease
  s.grant("42", 5000); // a lease without keys
  s.put("e", ""); // 11: empty value
  s.put("b", "again"); // 12: re-created after its tombstone
  s.put("x", "11", "42"); // 13: moves to a lease
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers: files as the server streams them, etcdctl snapshot commands, a real etcd on a restored data dir.

async function tempDir(): Promise<string> {
  return await fs.mkdtemp(path.join(os.tmpdir(), "bbolt-snap-test-"));
}

/** Writes `db` followed by its sha256, exactly as Maintenance.Snapshot streams it and `snapshot save` stores it. */
async function writeSnapshotFile(dir: string, db: Uint8Array): Promise<string> {
  const file = path.join(dir, "snapshot.db");
  const sha = createHash("sha256").update(db).digest();
  await fs.writeFile(file, Buffer.concat([db, sha]));
  return file;
}

interface Status {
  hash: number;
  revision: number;
  totalKey: number;
  totalSize: number;
}

async function snapshotStatus(file: string): Promise<Status> {
  // the endpoint is not used by `snapshot status`
  return parseJson(await etcdctlOk("127.0.0.1:1", ["snapshot", "status", file, "-w", "json"]));
}

interface RealEtcd {
  endpoint: string;
  stop(): Promise<void>;
  output(): string;
}

/** `etcdctl snapshot restore` into a fresh data dir, then runs the real etcd on it. */
async function restoreAndStart(file: string, dir: string): Promise<RealEtcd> {
  const [cp, pp] = await freePorts(2);
  const peer = `http://127.0.0.1:${pp}`;
  const client = `http://127.0.0.1:${cp}`;
  const dataDir = path.join(dir, "restored");
  await etcdctlOk("127.0.0.1:1", [
    "snapshot",
    "restore",
    file,
    "--data-dir",
    dataDir,
    "--name",
    "n1",
    "--initial-cluster",
    `n1=${peer}`,
    "--initial-advertise-peer-urls",
    peer,
  ]);
  const etcd = spawnProcess(ETCD, [
    "--name",
    "n1",
    "--data-dir",
    dataDir,
    "--listen-client-urls",
    client,
    "--advertise-client-urls",
    client,
    "--listen-peer-urls",
    peer,
    "--initial-advertise-peer-urls",
    peer,
    "--initial-cluster",
    `n1=${peer}`,
  ], { tag: "etcd on the restored data dir" });
  const endpoint = `127.0.0.1:${cp}`;
  const deadline = Date.now() + 20000;
  while (!etcd.output().includes("ready to serve client requests")) {
    if (etcd.exited() || Date.now() > deadline) {
      await etcd.stop();
      throw new Error(`etcd did not start on the restored data dir:\n${etcd.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { endpoint, stop: etcd.stop, output: etcd.output };
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** A KeyValue as etcdctl -w json prints it (base64 bytes, zero fields omitted), normalized. */
function fromJson(kv: Json) {
  return {
    key: Buffer.from(kv.key ?? "", "base64").toString("hex"),
    value: Buffer.from(kv.value ?? "", "base64").toString("hex"),
    create_revision: Number(kv.create_revision ?? 0),
    mod_revision: Number(kv.mod_revision ?? 0),
    version: Number(kv.version ?? 0),
    lease: BigInt(kv.lease ?? 0).toString(),
  };
}

function fromStore(
  kv: { key: Buffer; value: Buffer; create_revision: number; mod_revision: number; version: number; lease: string },
) {
  return {
    key: kv.key.toString("hex"),
    value: kv.value.toString("hex"),
    create_revision: kv.create_revision,
    mod_revision: kv.mod_revision,
    version: kv.version,
    lease: BigInt(kv.lease).toString(),
  };
}

/** Everything at `rev` (0 = latest) from etcd, as [header revision, kvs]. */
async function getAll(endpoint: string, rev = 0): Promise<[number, ReturnType<typeof fromJson>[]]> {
  const args = ["get", "", "--prefix", "-w", "json"];
  if (rev > 0) args.push(`--rev=${rev}`);
  const r = parseJson(await etcdctlOk(endpoint, args));
  return [Number(r.header.revision), (r.kvs ?? []).map(fromJson)];
}

/** Number of keys every bucket but "key" contributes to `snapshot status`'s totalKey for a State. */
function otherKeys(s: State): number {
  // consistent_index + authRevision + clusterVersion (+ 2 compaction marks) + leases
  return 3 + (s.store.compactRev > 0 ? 2 : 0) + s.lessor.leases.size;
}

function recordCount(s: State): number {
  return [...s.store.dump()].length;
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding units

Deno.test("bbolt snapshot: FNV-64a matches the reference vectors", () => {
  assert.equal(fnv64a(new Uint8Array(0)), 0xcbf29ce484222325n);
  assert.equal(fnv64a(enc.encode("a")), 0xaf63dc4c8601ec8cn);
  assert.equal(fnv64a(enc.encode("foobar")), 0x85944171f73967e8n);
});

Deno.test("bbolt snapshot: revision keys and protobuf records are encoded as etcd writes them", () => {
  assert.equal(Buffer.from(revisionKey(2, 0)).toString("hex"), "00000000000000025f0000000000000000");
  assert.equal(Buffer.from(revisionKey(5, 3, true)).toString("hex"), "00000000000000055f000000000000000374");
  // bytes taken from a bbolt file written by etcd 3.4.23
  const kv = {
    key: b("c"),
    create_revision: 6,
    mod_revision: 6,
    version: 1,
    value: b("4"),
    lease: "7027763970512153097",
  };
  assert.equal(Buffer.from(encodeKeyValue(kv)).toString("hex"), "0a01631006180620012a01343089d4a99d8bc3e8c361");
  const tomb = { key: b("b"), create_revision: 0, mod_revision: 5, version: 0, value: b(""), lease: "0" };
  assert.equal(Buffer.from(encodeKeyValue(tomb)).toString("hex"), "0a0162");
  assert.equal(
    Buffer.from(encodeLease({ id: "7027763970512153097", ttl: 100 })).toString("hex"),
    "0889d4a99d8bc3e8c3611064",
  );
  // and protobufjs reads them back
  const KV = pbRoot.lookupType("mvccpb.KeyValue");
  const big = { ...kv, value: Buffer.alloc(300, 7), mod_revision: 2 ** 40 + 3, version: 9 };
  const back = KV.toObject(KV.decode(encodeKeyValue(big)), { longs: String, defaults: true });
  assert.equal(back.mod_revision, String(2 ** 40 + 3));
  assert.equal(back.lease, "7027763970512153097");
  assert.equal(Buffer.from(back.value).equals(big.value), true);
});

Deno.test("bbolt snapshot: file structure (meta pages, freelist, page ids) and determinism", () => {
  const s = historyState();
  const db = s.snapshot();
  assert.equal(db.length % PAGE_SIZE, 0);
  assert.deepEqual(db, historyState().snapshot(), "same state, same bytes");
  const dv = new DataView(db.buffer, db.byteOffset, db.byteLength);
  const pages = db.length / PAGE_SIZE;
  const txids: bigint[] = [];
  for (const p of [0, 1]) {
    const off = p * PAGE_SIZE;
    assert.equal(dv.getBigUint64(off, true), BigInt(p), "page id");
    assert.equal(dv.getUint16(off + 8, true), 0x04, "meta flag");
    assert.equal(dv.getUint32(off + 16, true), 0xed0cdaed, "magic");
    assert.equal(dv.getUint32(off + 20, true), 2, "version");
    assert.equal(dv.getUint32(off + 24, true), PAGE_SIZE);
    assert.equal(dv.getBigUint64(off + 48, true), 2n, "freelist page");
    assert.equal(dv.getBigUint64(off + 56, true), BigInt(pages), "high water mark");
    txids.push(dv.getBigUint64(off + 64, true));
    assert.equal(dv.getBigUint64(off + 72, true), fnv64a(db.subarray(off + 16, off + 72)), "checksum");
  }
  assert.equal(txids[0] % 2n, 0n);
  assert.equal(txids[1], txids[0] - 1n);
  assert.equal(dv.getUint16(2 * PAGE_SIZE + 8, true), 0x10, "freelist flag");
  assert.equal(dv.getUint16(2 * PAGE_SIZE + 10, true), 0, "nothing free");
  // every page header carries its own id; overflow pages are skipped
  for (let p = 3; p < pages;) {
    assert.equal(dv.getBigUint64(p * PAGE_SIZE, true), BigInt(p));
    p += 1 + dv.getUint32(p * PAGE_SIZE + 12, true);
  }
});

Deno.test("bbolt snapshot: the writer sorts keys bytewise and rejects duplicates", () => {
  assert.ok(compareBytes(Uint8Array.of(1), Uint8Array.of(1, 0)) < 0);
  assert.ok(compareBytes(Uint8Array.of(0xff), Uint8Array.of(1, 0)) > 0);
  assert.throws(
    () =>
      writeBbolt([[enc.encode("b"), {
        entries: [[enc.encode("k"), enc.encode("1")], [enc.encode("k"), enc.encode("2")]],
      }]]),
    /duplicate key/,
  );
});

// ---------------------------------------------------------------------------------------------------------------
// etcdctl snapshot status (bbolt Check() + a walk over every bucket)

Deno.test("bbolt snapshot: etcdctl snapshot status reads the revision and key count", async () => {
  const dir = await tempDir();
  try {
    // empty store
    const empty = new State();
    let st = await snapshotStatus(await writeSnapshotFile(dir, empty.snapshot()));
    assert.equal(st.revision, 0);
    assert.equal(st.totalKey, otherKeys(empty));

    // a few keys
    const few = new State();
    few.put("foo", "bar");
    few.put("foo2", "bar2");
    few.put("foo3", "bar3");
    st = await snapshotStatus(await writeSnapshotFile(dir, few.snapshot()));
    assert.equal(st.revision, 4);
    assert.equal(st.totalKey, 3 + otherKeys(few));

    // tombstones, several versions, compaction, leases, binary keys
    const hist = historyState();
    const db = hist.snapshot();
    st = await snapshotStatus(await writeSnapshotFile(dir, db));
    assert.equal(st.revision, hist.store.currentRev);
    assert.equal(st.totalKey, recordCount(hist) + otherKeys(hist));
    assert.equal(st.totalSize, db.length);

    // a 1 MiB value (overflow pages) next to small ones
    const big = new State();
    big.put("small", "1");
    big.put("huge", Buffer.alloc(1 << 20, 0x61));
    big.put("small2", "2");
    st = await snapshotStatus(await writeSnapshotFile(dir, big.snapshot()));
    assert.equal(st.revision, 4);
    assert.equal(st.totalKey, 3 + otherKeys(big));
  } finally {
    await fs.rm(dir, { recursive: true });
  }
});

Deno.test("bbolt snapshot: etcdctl snapshot status on 20,000 keys with 1 KiB values (branch pages)", async () => {
  const dir = await tempDir();
  try {
    const s = new State();
    const value = Buffer.alloc(1024, 0x62);
    for (let i = 0; i < 20000; i++) s.put(`key/${String(i).padStart(6, "0")}`, value);
    const db = s.snapshot();
    assert.ok(db.length > 20000 * 1024);
    const st = await snapshotStatus(await writeSnapshotFile(dir, db));
    assert.equal(st.revision, 20001);
    assert.equal(st.totalKey, 20000 + otherKeys(s));
  } finally {
    await fs.rm(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// etcdctl snapshot restore + the real etcd 3.4 serving the restored data

Deno.test("bbolt snapshot: restored into real etcd, the history, revisions and leases are served unchanged", async () => {
  const dir = await tempDir();
  const s = historyState();
  const etcd = await restoreAndStart(await writeSnapshotFile(dir, s.snapshot()), dir);
  try {
    // the latest state and every revision since the compaction
    for (let rev = 0; rev <= s.store.currentRev; rev = rev === 0 ? s.store.compactRev : rev + 1) {
      const [hdr, kvs] = await getAll(etcd.endpoint, rev);
      assert.equal(hdr, s.store.currentRev, "header revision");
      const want = s.store.range("", null, { rev }).kvs.map(fromStore);
      assert.deepEqual(kvs, want, `get --rev=${rev}`);
    }
    // below the compaction point
    const old = await etcdctl(etcd.endpoint, ["get", "a", `--rev=${s.store.compactRev - 1}`]);
    assert.notEqual(old.code, 0);
    assert.match(old.stderr, /compacted/);

    // leases: IDs, granted TTLs and attached keys
    const list = parseJson(await etcdctlOk(etcd.endpoint, ["lease", "list", "-w", "json"]));
    const ids = (list.leases ?? []).map((l: Json) => BigInt(l.id ?? l.ID).toString()).sort();
    assert.deepEqual(ids, [...s.lessor.leases.keys()].sort());
    for (const l of s.lessor.leases.values()) {
      const hex = BigInt(l.id).toString(16);
      const ttl = parseJson(await etcdctlOk(etcd.endpoint, ["lease", "timetolive", hex, "--keys", "-w", "json"]));
      assert.equal(Number(ttl["granted-ttl"]), l.ttl, `granted TTL of ${hex}`);
      const keys = (ttl.keys ?? []).map((k: string) => Buffer.from(k, "base64").toString("latin1")).sort();
      assert.deepEqual(keys, [...l.keys].sort(), `keys of ${hex}`);
    }

    // etcd carries on from there: revisions, versions and create revisions continue
    await etcdctlOk(etcd.endpoint, ["put", "c", "6"]);
    const [hdr, kvs] = await getAll(etcd.endpoint);
    assert.equal(hdr, s.store.currentRev + 1);
    const c = kvs.find((kv) => kv.key === b("c").toString("hex"))!;
    const before = s.store.range(toBKey(b("c")), "").kvs[0];
    assert.equal(c.version, before.version + 1);
    assert.equal(c.create_revision, before.create_revision);
    assert.equal(c.mod_revision, s.store.currentRev + 1);
  } finally {
    await etcd.stop();
    await fs.rm(dir, { recursive: true });
  }
});

Deno.test("bbolt snapshot: an empty store (with an alarm) restores into a working etcd", async () => {
  const dir = await tempDir();
  const s = new State();
  s.applier.alarms.push({ memberID: "12345678901234567890", alarm: 1 });
  const etcd = await restoreAndStart(await writeSnapshotFile(dir, s.snapshot()), dir);
  try {
    const [hdr, kvs] = await getAll(etcd.endpoint);
    assert.deepEqual(kvs, []);
    assert.equal(hdr, 1);
    const alarms = await etcdctlOk(etcd.endpoint, ["alarm", "list"]);
    assert.match(alarms, /memberID:12345678901234567890 alarm:NOSPACE/);
    await etcdctlOk(etcd.endpoint, ["alarm", "disarm"]);
    await etcdctlOk(etcd.endpoint, ["put", "k", "v"]);
    assert.equal((await getAll(etcd.endpoint))[0], 2);
  } finally {
    await etcd.stop();
    await fs.rm(dir, { recursive: true });
  }
});

Deno.test("bbolt snapshot: 20,000 keys, a 1 MiB value and binary keys restore into real etcd", async () => {
  const dir = await tempDir();
  const s = new State();
  for (let i = 0; i < 20000; i++) {
    const v = Buffer.alloc(1024, i & 0xff);
    v.writeUInt32BE(i, 0);
    s.put(`key/${String(i).padStart(6, "0")}`, v);
  }
  s.put("huge", Buffer.alloc(1 << 20, 0x68));
  for (let i = 0; i < 256; i += 17) s.put(Buffer.from([i, 0xff - i, 0]), Buffer.from([i]));
  s.del(`key/000007`);
  const etcd = await restoreAndStart(await writeSnapshotFile(dir, s.snapshot()), dir);
  try {
    const [hdr, kvs] = await getAll(etcd.endpoint);
    assert.equal(hdr, s.store.currentRev);
    const want = s.store.range("", null).kvs.map(fromStore);
    assert.equal(kvs.length, want.length);
    assert.deepEqual(kvs, want);
    // etcd writes into the restored B+tree: page splits, deletions that merge pages, compaction
    await etcdctlOk(etcd.endpoint, ["put", "key/010000", "x".repeat(3000)]);
    await etcdctlOk(etcd.endpoint, ["del", "key/005000", "key/015000"]);
    await etcdctlOk(etcd.endpoint, ["compact", String(s.store.currentRev + 2)]);
    const rest = parseJson(await etcdctlOk(etcd.endpoint, ["get", "", "--prefix", "--keys-only", "-w", "json"]));
    assert.equal(rest.kvs.length, want.length - 10000);
    assert.equal(Number(rest.header.revision), s.store.currentRev + 2);
  } finally {
    await etcd.stop();
    await fs.rm(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// The whole path: our server -> etcdctl snapshot save -> status -> restore -> real etcd (etcd's TestCtlV3Snapshot)

Deno.test("bbolt snapshot: etcdctl snapshot save from our server migrates to real etcd", async () => {
  const dir = await tempDir();
  const srv = await startServer();
  let etcd: RealEtcd | null = null;
  try {
    const ep = srv.endpoint;
    await etcdctlOk(ep, ["put", "foo", "bar"]); // 2
    await etcdctlOk(ep, ["put", "foo", "baz"]); // 3
    const lease = (await etcdctlOk(ep, ["lease", "grant", "100"])).split(" ")[1];
    await etcdctlOk(ep, ["put", "leased", "v", `--lease=${lease}`]); // 4
    await etcdctlOk(ep, ["del", "foo"]); // 5
    await etcdctlOk(ep, ["put", "k2", "v2"]); // 6
    await etcdctlOk(ep, ["compact", "3"]);
    const file = path.join(dir, "saved.db");
    await etcdctlOk(ep, ["snapshot", "save", file]);
    const st = await snapshotStatus(file);
    assert.equal(st.revision, 6, "snapshot status revision (the Maintenance.Snapshot handler must stream bbolt)");
    // 4 records (foo@3, leased@4, foo tombstone@5, k2@6) + consistent_index, 2 compaction marks, lease,
    // authRevision, clusterVersion
    assert.equal(st.totalKey, 10);
    const [rev, want] = await getAll(ep);
    const [, wantOld] = await getAll(ep, 4);

    etcd = await restoreAndStart(file, dir);
    assert.deepEqual(await getAll(etcd.endpoint), [rev, want]);
    assert.deepEqual((await getAll(etcd.endpoint, 4))[1], wantOld);
    const leases = await etcdctlOk(etcd.endpoint, ["lease", "list"]);
    assert.match(leases, new RegExp(`^${lease}$`, "m"));
  } finally {
    await etcd?.stop();
    await srv.stop();
    await fs.rm(dir, { recursive: true });
    await fs.rm(srv.dataDir, { recursive: true, force: true });
  }
});

Deno.test("bbolt snapshot: users, roles, bcrypt hashes and enabled auth migrate to real etcd", async () => {
  const dir = await tempDir();
  const srv = await startServer();
  let etcd: RealEtcd | null = null;
  try {
    const ep = srv.endpoint;
    for (
      const args of [
        ["user", "add", "root:rootpw"],
        ["user", "grant-role", "root", "root"],
        ["user", "add", "alice:alicepw"],
        ["role", "add", "app"],
        ["role", "grant-permission", "app", "readwrite", "app/", "--prefix"],
        ["user", "grant-role", "alice", "app"],
        ["auth", "enable"],
      ]
    ) await etcdctlOk(ep, args);
    await etcdctlOk(ep, ["--user", "alice:alicepw", "put", "app/a", "1"]);
    const file = path.join(dir, "saved.db");
    await etcdctlOk(ep, ["--user", "root:rootpw", "snapshot", "save", file]);

    etcd = await restoreAndStart(file, dir);
    const real = etcd.endpoint;
    // real etcd checks our bcrypt hashes and enforces the roles
    assert.equal(await etcdctlOk(real, ["--user", "alice:alicepw", "get", "app/a", "--print-value-only"]), "1\n");
    assert.equal(await etcdctlOk(real, ["--user", "alice:alicepw", "put", "app/b", "2"]), "OK\n");
    const denied = await etcdctl(real, ["--user", "alice:alicepw", "put", "other", "x"]);
    assert.match(denied.stderr, /etcdserver: permission denied/);
    const anonymous = await etcdctl(real, ["put", "other", "x"]);
    assert.match(anonymous.stderr, /etcdserver: user name is empty/);
    // the root role was granted without being added as a role, as etcd allows
    assert.equal(await etcdctlOk(real, ["--user", "root:rootpw", "role", "list"]), "app\n");
  } finally {
    await etcd?.stop();
    await srv.stop();
    await fs.rm(dir, { recursive: true });
    await fs.rm(srv.dataDir, { recursive: true, force: true });
  }
});
