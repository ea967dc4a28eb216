/**
 * The management side of the traffic gateway against a running member: `egctl create httpproxy` generates the objects
 * Easegress v2.11 generates (names, paths, pathPrefix for `*` rules, one rule per host run, TLS maps keyed by file),
 * `describe` shows one status entry per member (status keys written into the store here, as every member's status
 * sync would), `apply -f` of multi-document files, and the API's refusals: an invalid spec answers 400 with
 * Easegress's message and stores nothing; a kind that needs a system outside the cluster is refused as not supported.
 */
import assert from "node:assert/strict";
import {
  apiGet,
  egctl,
  egctlOk,
  matchTemplate,
  memberPorts,
  memberTest,
  primaryArgs,
  startMember,
  waitFor,
} from "./easegress_harness.ts";
import { selfCert } from "../server/etcd/autotls.ts";
import { egctl as runEgctl } from "../cli/egctl.ts";

const T = (n: number) => "\t".repeat(n);
const line = (...cells: [string, number][]) => cells.map(([c, n]) => c + T(n)).join("") + "\n";

/** A stored object without the fields that change from run to run. */
function stable(json: string): unknown {
  const o = JSON.parse(json);
  delete o.createdAt;
  return o;
}

/** egctl run in this process, its output captured. */
async function egctlHere(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "", stderr = "";
  const code = await runEgctl(args, {
    stdout: (x) => void (stdout += x),
    stderr: (x) => void (stderr += x),
    readStdin: () => Promise.resolve(""),
    readFile: (p) => Deno.readTextFile(p),
    env: {},
    isTTY: false,
  });
  return { code, stdout, stderr };
}

async function etcdPut(endpoint: string, key: string, value: string): Promise<void> {
  const r = await new Deno.Command("etcdctl", {
    args: ["--endpoints", endpoint, "put", key, value],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
}

memberTest(
  "egctl gateway objects: create httpproxy, describe with member status, apply -f, refusals",
  async (procs, t) => {
    const [p1] = await memberPorts(1);
    const m1 = await startMember("machine-1", primaryArgs("machine-1", p1, ["--cluster-name", "eg-gw"]));
    procs.push(m1);
    const s = ["--server", m1.apiAddr];
    const endpoint = `http://127.0.0.1:${p1.client}`;
    await waitFor("the system controllers", async () => (await apiGet(m1.apiAddr, "/objects")).status === 200);

    await t.step(
      "create httpproxy: one HTTPServer and one Pipeline per rule, as Easegress generates them",
      async () => {
        assert.equal(
          await egctlOk([
            ...s,
            "create",
            "httpproxy",
            "demo",
            "--port",
            "10080",
            "--rule=/pipeline=http://127.0.0.1:9095,http://127.0.0.1:9096",
            "--rule",
            "/prefix*=http://127.0.0.1:9097,",
            "--rule=foo.com/x=http://127.0.0.1:9098",
            "--rule=/y=http://127.0.0.1:9099",
          ]),
          "create HTTPServer demo successfully\ncreate Pipeline demo-0 successfully\n" +
            "create Pipeline demo-1 successfully\ncreate Pipeline demo-2 successfully\n" +
            "create Pipeline demo-3 successfully\n",
        );
        const meta = { labels: { "easegress/owner": "user-api" }, version: "easegress.megaease.com/v2" };
        assert.deepEqual(stable(await egctlOk([...s, "get", "hs", "demo", "-o", "json"])), {
          ...meta,
          name: "demo",
          kind: "HTTPServer",
          https: false,
          keepAlive: true,
          keepAliveTimeout: "60s",
          maxConnections: 10240,
          port: 10080,
          // consecutive rules of one host share a router rule; a host appearing again later starts a new one
          rules: [
            { paths: [{ path: "/pipeline", backend: "demo-0" }, { pathPrefix: "/prefix", backend: "demo-1" }] },
            { host: "foo.com", paths: [{ path: "/x", backend: "demo-2" }] },
            { paths: [{ path: "/y", backend: "demo-3" }] },
          ],
        });
        const proxy = (...urls: string[]) => ({
          ...meta,
          kind: "Pipeline",
          filters: [{
            name: "proxy",
            kind: "Proxy",
            maxIdleConns: 10240,
            maxIdleConnsPerHost: 1024,
            pools: [{ loadBalance: { policy: "roundRobin" }, servers: urls.map((url) => ({ url })) }],
          }],
        });
        assert.deepEqual(stable(await egctlOk([...s, "get", "pl", "demo-0", "-o", "json"])), {
          ...proxy("http://127.0.0.1:9095", "http://127.0.0.1:9096"),
          name: "demo-0",
        });
        assert.deepEqual(stable(await egctlOk([...s, "get", "pl", "demo-1", "-o", "json"])), {
          ...proxy("http://127.0.0.1:9097"),
          name: "demo-1",
        });
        matchTemplate(
          await egctlOk([...s, "get", "pipeline"]),
          line(["NAME", 1], ["KIND", 2], ["AGE", 1]) +
            ["demo-0", "demo-1", "demo-2", "demo-3"].map((n) => line([n, 1], ["Pipeline", 1], ["{AGE}", 1])).join(""),
        );
      },
    );

    await t.step("create httpproxy with TLS: certs and keys keyed by the cert file's path, as base64", async () => {
      const dir = await Deno.makeTempDir({ prefix: "eg-gw-tls-" });
      const { certFile, keyFile } = await selfCert(dir, ["https://127.0.0.1:1"]);
      const b64 = async (f: string) => btoa(String.fromCharCode(...await Deno.readFile(f)));
      assert.equal(
        await egctlOk([
          ...s,
          "create",
          "httpproxy",
          "secure",
          "--port=10443",
          "--rule=/a*=https://127.0.0.1:9443",
          "--tls",
          "--ca-cert-file",
          certFile,
          "--cert-file",
          certFile,
          "--key-file",
          keyFile,
        ]),
        "create HTTPServer secure successfully\ncreate Pipeline secure-0 successfully\n",
      );
      const hs = JSON.parse(await egctlOk([...s, "get", "hs", "secure", "-o", "json"]));
      assert.equal(hs.https, true);
      assert.equal(hs.caCertBase64, await b64(certFile));
      assert.deepEqual(hs.certs, { [certFile]: await b64(certFile) });
      assert.deepEqual(hs.keys, { [certFile]: await b64(keyFile) });
      // a key that does not belong to the certificate: Go's tls.X509KeyPair refuses it, so does the API
      const other = await selfCert(await Deno.makeTempDir({ prefix: "eg-gw-tls2-" }), ["https://127.0.0.1:2"]);
      const bad = await egctl([
        ...s,
        "create",
        "httpproxy",
        "mismatch",
        "--port=10444",
        "--rule=/a=http://127.0.0.1:1",
        "--tls",
        "--cert-file",
        certFile,
        "--key-file",
        other.keyFile,
      ]);
      assert.equal(bad.code, 1);
      assert.equal(
        bad.stderr,
        `Error: create HTTPServer mismatch failed, 400: {"generalErrs":["*httpserver.Spec: generate x509 key pair for ` +
          `${certFile} failed: tls: private key does not match public key "]}\n`,
      );
      assert.equal((await apiGet(m1.apiAddr, "/objects/mismatch")).status, 404);
      await Deno.remove(dir, { recursive: true });
    });

    await t.step("create httpproxy: argument errors, before anything is created", async () => {
      const ok = ["demo2", "--port", "1", "--rule=/a=http://x"];
      const dns = [...ok, "--auto-cert", "--auto-cert-domain-name=a.com"];
      const cases: [string[], string][] = [
        [["demo2", "--rule=/a=http://x"], "port -1 is invalid"],
        [["demo2", "--port", "70000", "--rule=/a=http://x"], "port 70000 is invalid"],
        [
          ["demo2", "--port", "x"],
          `invalid argument "x" for "--port" flag: strconv.ParseInt: parsing "x": invalid syntax`,
        ],
        [ok.slice(1), "create httpproxy requires a name"],
        [ok.slice(0, 3), "rule is required"],
        [
          ["demo2", "--port=1", "--rule=a=b=c"],
          "rule a=b=c should in format 'host/path=endpoint1,endpoint2', invalid format",
        ],
        [["demo2", "--port=1", "--rule=host=http://x"], "rule host=http://x not contain a path"],
        [["demo2", "--port=1", "--rule=/a=,"], "endpoints in rule /a=, is empty"],
        [[...ok, "--cert-file", "c"], "cert files and key files are not matched"],
        [[...ok, "--ca-cert-file", "/nonexistent.pem"], "open /nonexistent.pem: no such file or directory"],
        [
          [...ok, "--auto-cert-domain-name", "a.com", "--dns-provider", "n=x"],
          "auto cert domain name or dns provider is set, but auto cert is not enabled",
        ],
        [
          [...ok, "--auto-cert", "--dns-provider", "n=x"],
          "auto cert domain name is required when provide dns provider",
        ],
        [dns, "auto cert dns provider is required when provide auto cert domain name"],
        [[...dns, "--dns-provider=n"], "dns provider n should in format 'name=secret', invalid format"],
        [
          [...dns, "--dns-provider=n=x"],
          "there is no AutoCertManager and auto-cert-email is not set, please create one or set auto-cert-email",
        ],
        // AutoCertManager needs an ACME service: this cluster refuses the kind
        [
          [...dns, "--tls", "--auto-cert-email=a@b.c", "--dns-provider=name=dnspod"],
          "create AutoCertManager autocertmanager failed, 400: kind AutoCertManager not supported",
        ],
      ];
      // in this process (a real HTTP client of the member all the same): 16 egctl processes take half a minute here
      for (const [args, msg] of cases) {
        assert.deepEqual(await egctlHere([...s, "create", "httpproxy", ...args]), {
          code: 1,
          stdout: "",
          stderr: `Error: ${msg}\n`,
        }, args.join(" "));
      }
      assert.equal((await apiGet(m1.apiAddr, "/objects/demo2")).status, 404);
      const help = await egctlHere([...s, "create", "httpproxy", "-h"]);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /^Create an HTTPServer and one Pipeline per rule/);
      assert.match(help.stdout, /--rule stringArray/);
      assert.deepEqual(await egctl([...s, "get", "hs", "--port", "1"]), {
        code: 1,
        stdout: "",
        stderr: "Error: unknown flag: --port\n",
      });
    });

    await t.step(
      "describe: one status entry per member, from /status/objects/eg-traffic-default/<name>/<member>",
      async () => {
        const status = (count: number) =>
          JSON.stringify({
            spec: {},
            status: { name: "demo", health: "", state: "running", count, codes: { "200": count } },
            timestamp: 1760000000,
          });
        await etcdPut(endpoint, "/status/objects/eg-traffic-default/demo/machine-1", status(3));
        await etcdPut(endpoint, "/status/objects/eg-traffic-default/demo/machine-2", status(5));
        await etcdPut(
          endpoint,
          "/status/objects/eg-traffic-default/demo-0/machine-1",
          JSON.stringify({ spec: {}, status: { health: "", filters: { proxy: null } }, timestamp: 1760000001 }),
        );
        const out = await egctlOk([...s, "describe", "httpserver", "demo"]);
        matchTemplate(
          out,
          `=====================
In Namespace default:
=====================
Name: demo
Kind: HTTPServer
Version: easegress.megaease.com/v2

Rules:
======
  - paths:
      - backend: demo-0
        path: /pipeline
      - backend: demo-1
        pathPrefix: /prefix
  - host: foo.com
    paths:
      - backend: demo-2
        path: /x
  - paths:
      - backend: demo-3
        path: /y

CreatedAt: "{*}"
Https: false
KeepAlive: true
KeepAliveTimeout: 60s
Labels: easegress/owner: user-api
MaxConnections: 10240
Port: 10080

AllStatus:
==========
  - node: machine-1
    status:
      codes:
          "200": 3
      count: 3
      health: ""
      name: demo
      state: running
  - node: machine-2
    status:
      codes:
          "200": 5
      count: 5
      health: ""
      name: demo
      state: running
`,
        );
        const json = JSON.parse(await egctlOk([...s, "describe", "hs", "demo", "-o", "json"]));
        assert.deepEqual(json[0].allStatus.map((x: { node: string }) => x.node), ["machine-1", "machine-2"]);
        const pl = await egctlOk([...s, "describe", "pl", "demo-0"]);
        assert.match(
          pl,
          /\nAllStatus:\n==========\n {2}- node: machine-1\n {4}status:\n {6}filters:\n {10}proxy: null\n/,
        );
        // the status API per object and as a whole
        const one = JSON.parse((await apiGet(m1.apiAddr, "/status/objects/demo")).body);
        assert.deepEqual(Object.keys(one), ["eg-traffic-default/demo/machine-1", "eg-traffic-default/demo/machine-2"]);
      },
    );

    await t.step("apply -f: a multi-document file updates what exists and creates the rest", async () => {
      const file = await Deno.makeTempFile({ suffix: ".yaml" });
      await Deno.writeTextFile(
        file,
        `kind: HTTPServer
name: demo
port: 10081
rules:
- paths:
  - pathPrefix: /
    backend: extra
---
name: extra
kind: Pipeline
flow:
- filter: mock
filters:
- name: mock
  kind: Mock
  rules:
  - match: {pathPrefix: /}
    code: 200
    body: hello
`,
      );
      assert.equal(
        await egctlOk([...s, "apply", "-f", file]),
        "update HTTPServer demo successfully\ncreate Pipeline extra successfully\n",
      );
      const hs = JSON.parse(await egctlOk([...s, "get", "hs", "demo", "-o", "json"]));
      assert.deepEqual([hs.port, hs.rules], [10081, [{ paths: [{ backend: "extra", pathPrefix: "/" }] }]]);
      assert.equal(JSON.parse(await egctlOk([...s, "get", "pl", "extra", "-o", "json"])).filters[0].body, undefined);
      assert.equal(
        JSON.parse(await egctlOk([...s, "get", "pl", "extra", "-o", "json"])).filters[0].rules[0].body,
        "hello",
      );
      await Deno.remove(file);
    });

    await t.step("the API refuses invalid specs with Easegress's message and stores nothing", async () => {
      const post = async (body: string) => {
        const r = await fetch(`http://${m1.apiAddr}/apis/v2/objects`, {
          method: "POST",
          headers: { "content-type": "application/yaml" },
          body,
        });
        return { status: r.status, body: await r.text() };
      };
      const cases: [string, string][] = [
        [
          "kind: HTTPServer\nname: bad1\nport: 80\nrules:\n- paths:\n  - pathPrefix: /x\n",
          `{"generalErrs":["*routers.Path: either backend or backendPool must be specified"]}`,
        ],
        [
          "kind: HTTPServer\nname: bad2\nport: 80\nhttps: true\n",
          `{"generalErrs":["*httpserver.Spec: certBase64/keyBase64, certs/keys are both empty and autocert is disabled when https enabled"]}`,
        ],
        [
          "kind: HTTPServer\nname: bad3\nport: '80'\n",
          "json: cannot unmarshal string into Go struct field Spec.port of type uint16",
        ],
        [
          "kind: Pipeline\nname: bad4\nfilters:\n- name: proxy\n  kind: Proxy\n  pools:\n  - servers: [{url: http://a}]\n    filter: {headers: {X: {exact: a}}}\n",
          `{"generalErrs":["*pipeline.Spec: filters: {\\"generalErrs\\":[\\"*httpproxy.Spec: one and only one mainPool is required\\"]}"]}`,
        ],
        [
          "kind: Pipeline\nname: bad5\nflow: [{filter: m, jumpIf: {oops: END}}]\nfilters: [{name: m, kind: Mock, rules: []}]\n",
          `{"generalErrs":["*pipeline.Spec: flow: filter m: result oops is not in [mocked]"]}`,
        ],
        // kinds that need systems outside the cluster: refused, not stored and ignored
        [
          "kind: Pipeline\nname: bad6\nfilters: [{name: k, kind: Kafka}]\n",
          `{"generalErrs":["*pipeline.Spec: filters: kind Kafka not supported"]}`,
        ],
        [
          "kind: Pipeline\nname: bad7\nfilters: [{name: w, kind: WasmHost}]\n",
          `{"generalErrs":["*pipeline.Spec: filters: kind WasmHost not supported"]}`,
        ],
        ["kind: GRPCServer\nname: bad8\nport: 9000\n", "kind GRPCServer not supported"],
      ];
      const version = (await apiGet(m1.apiAddr, "/objects")).headers.get("x-config-version");
      for (const [body, message] of cases) {
        assert.deepEqual(await post(body), { status: 400, body: JSON.stringify({ code: 400, message }) }, body);
      }
      for (let i = 1; i <= 8; i++) assert.equal((await apiGet(m1.apiAddr, `/objects/bad${i}`)).status, 404);
      assert.equal((await apiGet(m1.apiAddr, "/objects")).headers.get("x-config-version"), version);
      // filter metadata: what a flow may use
      const kinds = JSON.parse((await apiGet(m1.apiAddr, "/metadata/objects/pipeline/filters")).body);
      assert.deepEqual(kinds, [
        "CORSAdaptor",
        "DataBuilder",
        "Fallback",
        "HeaderToJSON",
        "Mock",
        "Proxy",
        "RateLimiter",
        "Redirector",
        "RedirectorV2",
        "RequestAdaptor",
        "RequestBuilder",
        "ResponseAdaptor",
        "ResponseBuilder",
        "ResultBuilder",
        "Validator",
        "WebSocketProxy",
      ]);
      const results = await apiGet(m1.apiAddr, "/metadata/objects/pipeline/filters/Proxy/results");
      assert.deepEqual(JSON.parse(results.body), [
        "internalError",
        "clientError",
        "serverError",
        "failureCode",
        "timeout",
        "shortCircuited",
      ]);
      assert.equal((await apiGet(m1.apiAddr, "/metadata/objects/pipeline/filters/Kafka/results")).status, 404);
      // egctl shows the same message
      const r = await egctl(
        [...s, "create", "-f", "-"],
        "kind: Pipeline\nname: bad9\nfilters: [{name: o, kind: OPAFilter}]\n",
      );
      assert.deepEqual(r, {
        code: 1,
        stdout: "",
        stderr:
          `Error: create Pipeline bad9 failed, 400: {"generalErrs":["*pipeline.Spec: filters: kind OPAFilter not supported"]}\n`,
      });
    });
  },
);
