/**
 * etcd's --auto-tls / --peer-auto-tls: the self-signed certificate itself (parsed by node:crypto), etcdctl 3.4 over
 * https with --insecure-skip-tls-verify, and a 3-member cluster whose members talk TLS to each other with self-signed
 * peer certificates.
 */
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import tls from "node:tls";
import { selfCert } from "../server/etcd/autotls.ts";
import { parseEtcdFlags } from "../server/etcd/flags.ts";
import { freePorts } from "./lib/ports.ts";
import { startServer } from "./lib/server.ts";
import { etcdctl, etcdctlOk } from "./lib/etcdctl.ts";
import { ClusterMember, EtcdClient, sleep } from "./lib/cluster.ts";

const tlsArgs = ["--insecure-transport=false", "--insecure-skip-tls-verify"];

/** Polls `pred` every 50 ms until it holds or `ms` have passed. */
async function until(ms: number, pred: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred()) && Date.now() < deadline) await sleep(50);
}

/** The DER certificate a TLS listener on 127.0.0.1:`port` presents (not verified). */
async function peerCertificate(port: number): Promise<Uint8Array> {
  const sock = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ALPNProtocols: ["h2"] });
  try {
    await new Promise((resolve, reject) => {
      sock.once("secureConnect", resolve);
      sock.once("error", reject);
    });
    return new Uint8Array(sock.getPeerCertificate().raw);
  } finally {
    sock.destroy();
  }
}

Deno.test("auto TLS: flags", () => {
  const cfg = parseEtcdFlags(["--auto-tls", "--peer-auto-tls=true"]);
  assert.equal(cfg.clientAutoTls, true);
  assert.equal(cfg.peerAutoTls, true);
  assert.deepEqual(cfg.ignored, []);
  assert.equal(parseEtcdFlags([]).clientAutoTls, false);
});

Deno.test("auto TLS: self-signed certificate, reused once written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egautotls-" });
  try {
    const files = await selfCert(`${dir}/fixtures/client`, ["https://127.0.0.1:2379", "https://localhost:2379"]);
    assert.equal(files.certFile, `${dir}/fixtures/client/cert.pem`);
    assert.equal(files.keyFile, `${dir}/fixtures/client/key.pem`);
    const certPem = await Deno.readTextFile(files.certFile);
    const keyPem = await Deno.readTextFile(files.keyFile);
    assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal((await Deno.stat(files.keyFile)).mode! & 0o777, 0o600);

    const cert = new X509Certificate(certPem);
    assert.equal(cert.subject, "O=etcd");
    assert.equal(cert.issuer, "O=etcd");
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    assert.equal(days, 365);
    assert.ok(Math.abs(Date.parse(cert.validFrom) - Date.now()) < 60_000, cert.validFrom);
    const sans = cert.subjectAltName ?? "";
    assert.ok(sans.includes("IP Address:127.0.0.1"), sans);
    assert.ok(sans.includes("DNS:localhost"), sans);
    assert.ok(cert.verify(cert.publicKey), "self-signature does not verify");
    assert.ok(cert.checkPrivateKey(createPrivateKey(keyPem)), "key does not match the certificate");

    const again = await selfCert(`${dir}/fixtures/client`, ["https://10.0.0.1:2379"]);
    assert.deepEqual(again, files);
    assert.equal(await Deno.readTextFile(files.certFile), certPem);
    assert.equal(await Deno.readTextFile(files.keyFile), keyPem);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "auto TLS: etcdctl over https with --insecure-skip-tls-verify",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const [clientPort, peerPort] = await freePorts(2);
    const url = `https://127.0.0.1:${clientPort}`;
    const srv = await startServer({
      clientPort,
      peerPort,
      extraArgs: ["--listen-client-urls", url, "--advertise-client-urls", url, "--auto-tls"],
    });
    try {
      await Deno.stat(`${srv.dataDir}/fixtures/client/cert.pem`);
      assert.equal(await etcdctlOk(url, [...tlsArgs, "put", "foo", "bar"]), "OK\n");
      assert.equal(await etcdctlOk(url, [...tlsArgs, "get", "foo"]), "foo\nbar\n");
      // the certificate is not trusted: without skipping verification etcdctl fails
      const r = await etcdctl(url, ["--insecure-transport=false", "--command-timeout=2s", "get", "foo"]);
      assert.notEqual(r.code, 0, r.stdout);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- server output ---\n${srv.output().slice(-3000)}`);
    } finally {
      await srv.stop();
      await Deno.remove(srv.dataDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "peer auto TLS: a 3-member cluster over https peer URLs elects a leader and replicates",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const base = await Deno.makeTempDir({ prefix: "egautotls-cluster-" });
    const ports = await freePorts(6);
    const members = [0, 1, 2].map((i) =>
      new ClusterMember(`m${i + 1}`, "127.0.0.1", ports[2 * i], ports[2 * i + 1], `${base}/m${i + 1}`)
    );
    const peerUrl = (m: ClusterMember) => m.peerUrl.replace("http:", "https:");
    const initialCluster = members.map((m) => `${m.name}=${peerUrl(m)}`).join(",");
    const clients = members.map((m) => new EtcdClient(m.endpoint));
    const token = `autotls-${crypto.randomUUID().slice(0, 8)}`;
    try {
      await Promise.all(members.map((m) =>
        m.start({
          initialCluster,
          token,
          waitReady: false,
          args: ["--listen-peer-urls", peerUrl(m), "--initial-advertise-peer-urls", peerUrl(m), "--peer-auto-tls"],
        })
      ));
      await Promise.all(members.map((m) => m.waitReady(40000)));
      for (const m of members) await Deno.stat(`${m.dataDir}/fixtures/peer/cert.pem`);

      // every member names the same leader
      let leaders: string[] = [];
      const agreed = () => leaders[0] !== "0" && leaders[0] !== "?" && leaders.every((l) => l === leaders[0]);
      await until(15000, async () => {
        leaders = await Promise.all(clients.map((c) => c.status(2000).then((s) => s.leader, () => "?")));
        return agreed();
      });
      assert.ok(agreed(), `leaders: ${leaders.join(",")}`);

      await clients[0].put("replicated", "over-tls");
      for (const c of clients) {
        let v: string | null = null;
        await until(5000, async () => (v = (await c.get("replicated", { serializable: true })).value) === "over-tls");
        assert.equal(v, "over-tls", c.endpoint);
      }
      // the peer URL speaks TLS with the member's self-signed certificate from <data-dir>/fixtures/peer
      const m = members[1];
      const presented = await peerCertificate(m.peerPort);
      const stored = new X509Certificate(await Deno.readTextFile(`${m.dataDir}/fixtures/peer/cert.pem`)).raw;
      assert.deepEqual(presented, new Uint8Array(stored), "the peer listener does not present fixtures/peer/cert.pem");
    } catch (e) {
      const logs = members.map((m) => `----- ${m.name} -----\n${m.output().slice(-2000)}`).join("\n");
      throw new Error(`${(e as Error).message}\n${logs}`);
    } finally {
      for (const c of clients) c.close();
      await Promise.all(members.map((m) => m.kill().catch(() => {})));
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});
