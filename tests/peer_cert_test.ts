/**
 * Peer certificates under --peer-client-cert-auth, against a real 3-member cluster of our server whose members talk
 * over https peer URLs on distinct loopback addresses (127.0.0.2/3/4: Linux routes all of 127/8 to lo), each with its
 * own certificate (CN "etcd-peer", IP SAN = its own address) made by openssl in this test, under
 * --peer-cert-allowed-cn etcd-peer:
 *
 *   cluster     the members elect a leader and a write replicates to every member.
 *   member ID   a peer stream to the leader with follower A's certificate claiming follower B's ID is refused
 *               (PERMISSION_DENIED, a log line) and its Heartbeat of term 1,000,000 changes no term; the same
 *               certificate claiming A's own ID is taken.
 *   CN          a certificate from the same CA, valid for every member's address, but with CN "intruder" gets no
 *               connection to a peer URL (as etcd's handshake refuses it): neither Raft nor the client API served there.
 *   CA          a certificate not signed by --peer-trusted-ca-file does not get past the TLS handshake.
 *
 * The certificate rules themselves (SAN matching, wildcards, IPv6 spellings, no SANs) are checked as plain functions.
 */
import assert from "node:assert/strict";
import { EtcdClient, sleep } from "./lib/cluster.ts";
import { freePorts } from "./lib/ports.ts";
import { type Proc, spawnProcess } from "./lib/process.ts";
import { serverBinary } from "./lib/server.ts";
import { MaintenanceService, RaftService } from "../proto/mod.ts";
import { GrpcClient, type GrpcError, Status } from "../server/transport/http2_client.ts";
import { parseAltNames } from "../server/transport/http2.ts";
import { encodeFrame } from "../server/peer/codec.ts";
import { type Message, message } from "../server/raft/types.ts";
import { certificateNamesHost, refusePeerCertificate } from "../server/peer/peer_cert.ts";
import { FlagError, parseEtcdFlags } from "../server/etcd/flags.ts";

const FORGED_TERM = 1_000_000;
const PEER_CN = "etcd-peer";
const HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

async function openssl(dir: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

/** A P-256 key and certificate `name`.crt for `cn` with `sans`, signed by ca.crt (or self-signed when `selfSigned`). */
async function makeCert(dir: string, name: string, cn: string, sans: string[], selfSigned = false): Promise<void> {
  const ext = `${dir}/${name}.ext`;
  await Deno.writeTextFile(
    ext,
    `subjectAltName=${sans.join(",")}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n`,
  );
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`];
  if (selfSigned) {
    const subj = ["-subj", `/CN=${cn}`, "-days", "2", "-addext", `subjectAltName=${sans.join(",")}`];
    return await openssl(dir, "req", "-x509", ...key, "-out", `${name}.crt`, ...subj);
  }
  await openssl(dir, "req", ...key, "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
  await openssl(
    dir,
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    `${name}.crt`,
    "-days",
    "2",
    "-extfile",
    ext,
  );
}

interface Member {
  name: string;
  host: string;
  peerPort: number;
  clientPort: number;
  proc: Proc;
  client: EtcdClient;
  id: string;
}

/** Opens a Raft Send stream to `addr` with a client certificate, claiming to be `from`; resolves with how it ended. */
function sendFrame(
  addr: string,
  tlsFiles: { cert: string; key: string; ca: string },
  clusterId: string,
  from: string,
  msgs: Message[],
): Promise<GrpcError | null> {
  const client = new GrpcClient(addr, { tls: tlsFiles });
  const call = client.clientStream(RaftService.Send.path, { "eg-cluster-id": clusterId, "eg-from": from });
  return new Promise<GrpcError | null>((resolve) => {
    let result: GrpcError | null = null;
    call.on("error", (e: GrpcError) => result = e);
    call.on("close", () => resolve(result));
    call.write(encodeFrame(msgs));
    call.end();
  }).finally(() => client.destroy());
}

/** Maintenance.Status through a peer URL (which serves the client API too), with a client certificate. */
async function peerStatus(
  addr: string,
  tlsFiles: { cert: string; key: string; ca: string },
): Promise<{ header: { member_id: string } }> {
  const client = new GrpcClient(addr, { tls: tlsFiles });
  try {
    const rpc = MaintenanceService.Status;
    const resp = rpc.responseDeserialize(await client.unary(rpc.path, rpc.requestSerialize({}), undefined, 3000));
    return resp as { header: { member_id: string } };
  } finally {
    client.destroy();
  }
}

Deno.test("peer certificates: allowed CN, trusted CA, and a certificate speaks only for its own member", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "peer-cert-" });
  const members: Member[] = [];
  try {
    await openssl(
      dir,
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-subj",
      "/CN=peer-test-ca",
      "-days",
      "2",
    );
    for (let i = 0; i < HOSTS.length; i++) await makeCert(dir, `m${i + 1}`, PEER_CN, [`IP:${HOSTS[i]}`]);
    await makeCert(dir, "intruder", "intruder", HOSTS.map((h) => `IP:${h}`));
    await makeCert(dir, "stranger", PEER_CN, HOSTS.map((h) => `IP:${h}`), true);
    const files = (name: string) => ({
      cert: Deno.readTextFileSync(`${dir}/${name}.crt`),
      key: Deno.readTextFileSync(`${dir}/${name}.key`),
      ca: Deno.readTextFileSync(`${dir}/ca.crt`),
    });

    const ports = await freePorts(2 * HOSTS.length);
    const initialCluster = HOSTS.map((h, i) => `m${i + 1}=https://${h}:${ports[2 * i + 1]}`).join(",");
    for (let i = 0; i < HOSTS.length; i++) {
      const name = `m${i + 1}`, host = HOSTS[i], clientPort = ports[2 * i], peerPort = ports[2 * i + 1];
      const peerUrl = `https://${host}:${peerPort}`, clientUrl = `http://127.0.0.1:${clientPort}`;
      const proc = spawnProcess(serverBinary, [
        ...["--name", name, "--data-dir", `${dir}/${name}.etcd`],
        ...["--listen-client-urls", clientUrl, "--advertise-client-urls", clientUrl],
        ...["--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl],
        ...["--initial-cluster", initialCluster, "--initial-cluster-token", "peer-cert-test"],
        ...["--peer-cert-file", `${dir}/${name}.crt`, "--peer-key-file", `${dir}/${name}.key`],
        ...["--peer-trusted-ca-file", `${dir}/ca.crt`, "--peer-client-cert-auth", "--peer-cert-allowed-cn", PEER_CN],
      ], { tag: `peer-cert ${name}` });
      members.push({
        name,
        host,
        peerPort,
        clientPort,
        proc,
        client: new EtcdClient(`127.0.0.1:${clientPort}`),
        id: "",
      });
    }
    const deadline = Date.now() + 40_000;
    while (!members.every((m) => /published/.test(m.proc.output()))) {
      const dead = members.find((m) => m.proc.exited());
      assert.ok(!dead, `${dead?.name} exited:\n${dead?.proc.output().slice(-3000)}`);
      assert.ok(Date.now() < deadline, members.map((m) => `== ${m.name}\n${m.proc.output().slice(-2000)}`).join("\n"));
      await sleep(200);
    }
    const statuses = await Promise.all(members.map((m) => m.client.status(3000, true)));
    statuses.forEach((s, i) => members[i].id = s.memberId);
    const clusterId = statuses[0].clusterId;
    const leaderOf = async () => {
      for (let i = 0; i < 50; i++) {
        const s = await Promise.all(members.map((m) => m.client.status(2000)));
        if (s[0].leader !== "0" && s.every((x) => x.leader === s[0].leader)) {
          return { leader: members.find((m) => m.id === s[0].leader)!, term: s[0].raftTerm };
        }
        await sleep(200);
      }
      throw new Error("no leader agreed on");
    };
    const terms = async () => (await Promise.all(members.map((m) => m.client.status(2000)))).map((s) => s.raftTerm);

    await t.step("the members, each with its own certificate, elect a leader and replicate writes", async () => {
      const { leader } = await leaderOf();
      await leader.client.put("over-tls", "replicated");
      for (const m of members) {
        let value: string | null = null;
        for (let i = 0; i < 50 && value !== "replicated"; i++) {
          value = (await m.client.get("over-tls", { serializable: true })).value;
          if (value !== "replicated") await sleep(100);
        }
        assert.equal(value, "replicated", `on ${m.name}`);
      }
    });

    await t.step("follower A's certificate claiming follower B's ID is refused and changes no term", async () => {
      const { leader, term } = await leaderOf();
      const [a, b] = members.filter((m) => m !== leader);
      const addr = `${leader.host}:${leader.peerPort}`;
      const forged = message({ type: "Heartbeat", from: b.id, to: leader.id, term: FORGED_TERM, commit: 0 });
      const err = await sendFrame(addr, files(a.name), clusterId, b.id, [forged]);
      assert.equal(err?.code, Status.PERMISSION_DENIED, String(err?.message));
      assert.match(err!.details, new RegExp(`names none of the peer URL hosts of member ${b.id} \\(${b.host}\\)`));
      // A's certificate may speak for A (an empty frame: nothing that could disturb the cluster)
      assert.equal(await sendFrame(addr, files(a.name), clusterId, a.id, []), null);
      await sleep(500);
      const after = await terms();
      assert.ok(after.every((x) => x < FORGED_TERM), `terms ${after}`);
      assert.equal((await leaderOf()).term, term);
      assert.match(leader.proc.output(), new RegExp(`refused peer ${b.id}: the sender ${b.id}: its certificate`));
      await leader.client.put("after-forgery", "served");
    });

    await t.step("a certificate from the trusted CA with another common name gets no connection at all", async () => {
      const { leader, term } = await leaderOf();
      const follower = members.find((m) => m !== leader)!;
      const forged = message({ type: "Heartbeat", from: follower.id, to: leader.id, term: FORGED_TERM, commit: 0 });
      const addr = `${leader.host}:${leader.peerPort}`;
      const err = await sendFrame(addr, files("intruder"), clusterId, follower.id, [forged]);
      assert.ok(err, "the call went through");
      assert.equal(err.code, Status.UNAVAILABLE, String(err.message));
      // as etcd's handshake: not the client API on the peer URL either; a member's own certificate gets it
      await assert.rejects(() => peerStatus(addr, files("intruder")));
      assert.equal((await peerStatus(addr, files(follower.name))).header.member_id, leader.id);
      assert.match(
        leader.proc.output(),
        /rejected connection from [\d.]+:\d+: client certificate authentication failed: its certificate's common name "intruder"/,
      );
      await sleep(300);
      assert.equal((await leaderOf()).term, term);
    });

    await t.step("a certificate the peer CA did not sign does not get past the TLS handshake", async () => {
      const { leader, term } = await leaderOf();
      const follower = members.find((m) => m !== leader)!;
      const forged = message({ type: "Heartbeat", from: follower.id, to: leader.id, term: FORGED_TERM, commit: 0 });
      const err = await sendFrame(`${leader.host}:${leader.peerPort}`, files("stranger"), clusterId, follower.id, [
        forged,
      ]);
      assert.ok(err, "the call went through");
      assert.notEqual(err.code, Status.OK);
      assert.notEqual(err.code, Status.PERMISSION_DENIED, "refused by the Raft service, not by TLS");
      await sleep(300);
      assert.equal((await leaderOf()).term, term);
      await leader.client.put("after-stranger", "served");
    });
  } finally {
    for (const m of members) m.client.close();
    await Promise.all(members.map((m) => m.proc.kill()));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("peer certificate rules: SANs against hosts, allowed CN and host name", () => {
  const alt = parseAltNames(
    "DNS:etcd-1.example.com, DNS:*.peers.example.com, IP Address:10.0.0.1, " +
      'IP Address:0:0:0:0:0:0:0:1, URI:spiffe://x, DNS:"odd,name"',
  );
  assert.deepEqual(alt.dns, ["etcd-1.example.com", "*.peers.example.com", "odd,name"]);
  assert.deepEqual(alt.ip, ["10.0.0.1", "0:0:0:0:0:0:0:1"]);
  assert.ok(certificateNamesHost(alt, "ETCD-1.example.com."));
  assert.ok(certificateNamesHost(alt, "a.peers.example.com"));
  assert.ok(!certificateNamesHost(alt, "a.b.peers.example.com"), "a wildcard covers one label");
  assert.ok(!certificateNamesHost(alt, "peers.example.com"));
  assert.ok(certificateNamesHost(alt, "10.0.0.1"));
  assert.ok(certificateNamesHost(alt, "[::1]"));
  assert.ok(!certificateNamesHost(alt, "10.0.0.2"));
  assert.ok(!certificateNamesHost(alt, "etcd-2.example.com"));

  const own = { commonName: "etcd-peer", altNames: alt };
  assert.equal(refusePeerCertificate(own, {}, "1", ["https://10.0.0.1:2380"]), null);
  assert.equal(refusePeerCertificate(own, {}, "1", ["https://x.peers.example.com:2380"]), null);
  assert.match(refusePeerCertificate(own, {}, "2", ["https://10.0.0.2:2380"])!, /names none of the peer URL hosts/);
  assert.equal(refusePeerCertificate(null, { allowedCn: "other" }, "2", []), null, "no certificate: not judged here");
  // without SANs a certificate is tied to no member: only the CN rule applies (etcd binds no IDs at all)
  const bare = { commonName: "etcd-peer", altNames: { dns: [], ip: [] } };
  assert.equal(refusePeerCertificate(bare, { allowedCn: "etcd-peer" }, "2", ["https://10.0.0.2:2380"]), null);
  assert.match(refusePeerCertificate(bare, { allowedCn: "root" }, "2", [])!, /common name "etcd-peer"/);
  assert.equal(
    refusePeerCertificate(own, { allowedHostname: "a.peers.example.com" }, "1", ["https://10.0.0.1:1"]),
    null,
  );
  assert.match(refusePeerCertificate(own, { allowedHostname: "10.9.9.9" }, "1", [])!, /allowed host name "10.9.9.9"/);
});

Deno.test("--peer-cert-allowed-cn and --peer-cert-allowed-hostname take effect, one at a time (as in etcd)", () => {
  assert.deepEqual(parseEtcdFlags(["--peer-cert-allowed-cn", "etcd-peer"]).peerCert, { allowedCn: "etcd-peer" });
  assert.deepEqual(parseEtcdFlags(["--peer-cert-allowed-hostname=m1.example"]).peerCert, {
    allowedHostname: "m1.example",
  });
  assert.deepEqual(parseEtcdFlags([]).peerCert, {});
  // a boolean in etcd: it takes no value from the next argument
  const skip = parseEtcdFlags(["--experimental-peer-skip-client-san-verification", "--name", "x"]);
  assert.equal(skip.name, "x");
  assert.ok(skip.ignored.includes("experimental-peer-skip-client-san-verification"));
  assert.ok(!parseEtcdFlags(["--peer-cert-allowed-cn", "x"]).ignored.includes("peer-cert-allowed-cn"));
  assert.throws(
    () => parseEtcdFlags(["--peer-cert-allowed-cn", "a", "--peer-cert-allowed-hostname", "b"]),
    (e) => e instanceof FlagError && /mutually exclusive/.test(e.message),
  );
});
