/**
 * egctl against a running member, byte for byte: Go text/tabwriter tables (tabs as padding, tab-terminated cells),
 * `-o json` (json.Indent, no trailing newline), `-o yaml` (yaml.v3: sorted keys, 4-space indentation), `describe`
 * (PrintMapInterface), success and error messages with their exit codes; plus the admin API's raw answers and the
 * output helpers on their own.
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
import { freePorts } from "./lib/ports.ts";
import { jsonIndent, tabwrite } from "../cli/print.ts";
import { toGoYaml } from "../server/easegress/goyaml.ts";

const fixtures = new URL("./fixtures/", import.meta.url).pathname;
const T = (n: number) => "\t".repeat(n);
/** One table line from [cell, tabs] pairs. */
const line = (...cells: [string, number][]) => cells.map(([c, n]) => c + T(n)).join("") + "\n";

Deno.test("egctl output helpers: tabwriter, json.Indent, yaml.v3", () => {
  // cell widths round up to tab stops; short rows end column blocks (api-resources' last rows have 4 cells)
  assert.equal(
    tabwrite([["NAME", "X"], ["a-much-longer-name", "y"], ["m", "z", "extra"]]),
    "NAME\t\t\tX\t\na-much-longer-name\ty\t\nm\t\t\tz\textra\t\n",
  );
  assert.equal(tabwrite([["A", "", "C"], ["", "bb", ""]]), "A\t\tC\t\n\tbb\t\t\n");
  assert.equal(
    jsonIndent(`{"a":[1,{"b":"x,y:{"}],"c":{},"d":[]}`),
    `{
  "a": [
    1,
    {
      "b": "x,y:{"
    }
  ],
  "c": {},
  "d": []
}`,
  );
  assert.equal(
    toGoYaml({ b: [{ x: 1, y: [true] }], a: "2026-01-01T00:00:00Z", c: "", d: "on", e: "a: b" }),
    `a: "2026-01-01T00:00:00Z"\nb:\n    - x: 1\n      "y":\n        - true\nc: ""\nd: "on"\ne: 'a: b'\n`,
  );
});

memberTest("egctl against a member: every format byte for byte", async (procs, t) => {
  const [p1] = await memberPorts(1);
  const [a4] = await freePorts(1);
  const home = await Deno.makeTempDir({ prefix: "eg-egctl-" });
  const dataDir = "data-directory-with-a-rather-long-name-for-the-cut";
  const m1 = await startMember(
    "machine-1",
    primaryArgs("machine-1", p1, ["--cluster-name", "eg-test", "--labels", "team=gw", "--data-dir", dataDir]),
    { home },
  );
  procs.push(m1);
  const m4 = await startMember("machine-4", [
    "--name",
    "machine-4",
    "--cluster-name",
    "eg-test",
    "--cluster-role",
    "secondary",
    "--api-addr",
    `127.0.0.1:${a4}`,
    "--primary-listen-peer-urls",
    `http://127.0.0.1:${p1.peer}`,
  ]);
  procs.push(m4);
  const s = ["--server", m1.apiAddr];
  await waitFor(
    "heartbeats",
    async () => JSON.parse((await apiGet(m1.apiAddr, "/status/members")).body).length === 2,
  );
  const memberTable = line(["NAME", 2], ["ROLE", 2], ["AGE", 2], ["STATE", 1], ["API-ADDR", 2], ["HEARTBEAT", 1]) +
    line(["machine-1", 1], ["primary", 2], ["{AGE}", 2], ["Leader", 1], [m1.apiAddr, 2], ["{N}s ago", 2]) +
    line(["machine-4", 1], ["secondary", 1], ["unknown", 2], ["", 1], [m4.apiAddr, 2], ["{N}s ago", 2]);
  /** `get all`: the system controllers, then `objectRows` (the user's objects), members and custom data kinds. */
  const getAll = (objectRows = "") =>
    line(["NAME", 4], ["KIND", 4], ["AGE", 2]) +
    line(["RawConfigTrafficController", 1], ["RawConfigTrafficController", 1], ["unknown", 2]) +
    line(["ServiceRegistry", 3], ["ServiceRegistry", 3], ["unknown", 2]) +
    line(["StatusSyncController", 2], ["StatusSyncController", 2], ["unknown", 2]) +
    line(["TrafficController", 2], ["TrafficController", 2], ["unknown", 2]) +
    objectRows +
    "\n" + memberTable + "\n" +
    line(["NAME", 1], ["ID-FIELD", 1], ["JSON-SCHEMA", 1], ["DATA-NUM", 1]) + "\n";

  await t.step("health, all three formats; prefix matching; connection errors", async () => {
    assert.equal(await egctlOk([...s, "health"]), "OK\n");
    assert.equal(await egctlOk([...s, "health", "-o", "json"]), `{\n  "message": "OK"\n}`);
    assert.equal(await egctlOk([...s, "-o", "yaml", "health"]), "message: OK\n");
    assert.equal(await egctlOk([...s, "heal"]), "OK\n");
    const [dead] = await freePorts(1);
    assert.deepEqual(await egctl(["--server", `127.0.0.1:${dead}`, "health"]), {
      code: 1,
      stdout: "",
      stderr:
        `Error: Get "http://127.0.0.1:${dead}/apis/v2/healthz": dial tcp 127.0.0.1:${dead}: connect: connection refused\n`,
    });
    assert.deepEqual(await egctl([...s, "-o", "xml", "get", "member"]), {
      code: 1,
      stdout: "",
      stderr: "Error: unsupported output format: xml, only support (yaml, json and default)\n",
    });
  });

  await t.step("api-resources", async () => {
    const a = "create,apply,delete,get,describe";
    assert.equal(
      await egctlOk([...s, "api-resources"]),
      line(["NAME", 4], ["ALIASES", 5], ["CATEGORY", 2], ["KIND", 5], ["ACTION", 5]) +
        line(["httpserver", 3], ["hs,httpservers", 4], ["TrafficGate", 2], ["HTTPServer", 4], [a, 1]) +
        line(["pipeline", 3], ["pl,pipelines", 4], ["Pipeline", 2], ["Pipeline", 4], [a, 1]) +
        line(
          ["rawconfigtrafficcontroller", 1],
          ["rctc,rawconfigtrafficcontroller", 2],
          ["SystemController", 1],
          ["RawConfigTrafficController", 2],
          [a, 1],
        ) +
        line(["serviceregistry", 3], ["sr,serviceregistry", 3], ["SystemController", 1], ["ServiceRegistry", 4], [
          a,
          1,
        ]) +
        line(
          ["statussynccontroller", 2],
          ["ssc,statussynccontroller", 2],
          ["SystemController", 1],
          ["StatusSyncController", 3],
          [a, 1],
        ) +
        line(["trafficcontroller", 2], ["tc,trafficcontroller", 3], ["SystemController", 1], [
          "TrafficController",
          3,
        ], [a, 1]) +
        line(["customdatakind", 3], ["customdatakinds,cdk", 3], ["CustomDataKind", 2], [a, 1]) +
        line(["customdata", 3], ["customdatas,cd", 4], ["CustomData", 2], [a, 1]) +
        line(["member", 4], ["m,mem,members", 4], ["Member", 3], ["delete,get,describe", 3]),
    );
  });

  await t.step("get member (table, -o json, -o yaml), get all on a fresh cluster", async () => {
    const v = matchTemplate(await egctlOk([...s, "get", "member"]), memberTable);
    assert.ok(v[1] < 10 && v[2] < 10);
    matchTemplate(await egctlOk([...s, "get", "members"]), memberTable);
    const json = await egctlOk([...s, "get", "m", "-o", "json"]);
    assert.ok(json.startsWith(`[\n  {\n    "options": {\n      "ShowVersion": false,\n`), json.slice(0, 80));
    assert.ok(json.endsWith(`\n    "lastHeartbeatTime": "${JSON.parse(json)[1].lastHeartbeatTime}"\n  }\n]`));
    assert.equal(JSON.parse(json).length, 2);
    const yaml = await egctlOk([...s, "get", "member", "-o", "yaml"]);
    matchTemplate(
      yaml.split("  options:\n")[0],
      `- etcd:\n    id: {*}\n    startTime: "{*}"\n    state: Leader\n  lastHeartbeatTime: "{*}"\n`,
    );
    assert.ok(yaml.includes(`\n  options:\n    APIAddr: ${m1.apiAddr}\n    AbsDataDir: `));
    assert.ok(yaml.includes(`\n    Labels:\n        team: gw\n`));
    assert.ok(yaml.includes(`\n- lastHeartbeatTime: "`));
    matchTemplate(await egctlOk([...s, "get", "all"]), getAll());
  });

  await t.step("describe member: primary and secondary", async () => {
    const cut = (x: string) => (x.length < 50 ? x : x.slice(0, 50) + "...");
    const out = await egctlOk([...s, "describe", "member", "machine-1"]);
    matchTemplate(
      out,
      `Name: machine-1
LastHeartbeatTime: "{*}"

Etcd:
=====
  id: {*}
  startTime: "{*}"
  state: Leader

APIAddr: ${m1.apiAddr}
AbsDataDir: ${cut(`${home}/${dataDir}`)}
AbsHomeDir: ${home}
AbsLogDir: ""
AbsWALDir: ""
BasicAuth: null
CPUProfileFile: ""
CertFile: ""
ClientCAFile: ""
Cluster:
========
  AdvertiseClientURLs:
      - http://127.0.0.1:${p1.client}
  InitialAdvertisePeerURLs:
      - http://127.0.0.1:${p1.peer}
  InitialCluster:
      machine-1: http://127.0.0.1:${p1.peer}
  ListenClientURLs:
      - http://127.0.0.1:${p1.client}
  ListenPeerURLs:
      - http://127.0.0.1:${p1.peer}
  MaxCallSendMsgSize: 1.048576e+07
  PrimaryListenPeerURLs:
      - http://localhost:2380
  StateFlag: new
ClusterName: eg-test
ClusterRequestTimeout: 10s
ClusterRole: primary
ConfigFile: ""
DataDir: ${cut(dataDir)}
Debug: false
DisableAccessLog: false
ForceNewCluster: false
HomeDir: ./
InitialObjectConfigFiles: null
KeyFile: ""
Labels: team: gw
LastDefragTime: ""
LogDir: ""
MemoryProfileFile: ""
ObjectsDumpInterval: ""
ShowConfig: false
ShowHelp: false
ShowVersion: false
SignalUpgrade: false
StatusUpdateMaxBatchSize: 20
TLS: false
UseStandaloneEtcd: false
WALDir: ""
`,
    );
    // -v prints long values whole
    assert.ok((await egctlOk([...s, "describe", "member", "machine-1", "-v"])).includes(`DataDir: ${dataDir}\n`));
    const sec = await egctlOk([...s, "describe", "member", "machine-4"]);
    assert.match(sec, /^Name: machine-4\nLastHeartbeatTime: "[^"]+"\n\nEtcd: null\n\nAPIAddr: 127\.0\.0\.1:\d+\n/);
    const both = await egctlOk([...s, "describe", "member"]);
    assert.equal(both.split("\n\n---\n\n").length, 2);
    assert.deepEqual(await egctl([...s, "describe", "member", "nope"]), {
      code: 1,
      stdout: "",
      stderr: "Error: describe Member nope failed, member nope not found\n",
    });
  });

  await t.step("create / get / describe objects", async () => {
    assert.equal(
      await egctlOk([...s, "create", "-f", `${fixtures}eg_hello.yaml`]),
      "create HTTPServer server-demo successfully\ncreate Pipeline pipeline-demo successfully\n",
    );
    assert.deepEqual(await egctl([...s, "create", "-f", `${fixtures}eg_hello.yaml`]), {
      code: 1,
      stdout: "",
      stderr: "Error: create HTTPServer server-demo failed, 409: conflict name: server-demo\n",
    });
    matchTemplate(
      await egctlOk([...s, "get", "httpserver"]),
      line(["NAME", 2], ["KIND", 2], ["AGE", 1]) + line(["server-demo", 1], ["HTTPServer", 1], ["{AGE}", 1]),
    );
    matchTemplate(
      await egctlOk([...s, "get", "pl", "pipeline-demo"]),
      line(["NAME", 2], ["KIND", 2], ["AGE", 1]) + line(["pipeline-demo", 1], ["Pipeline", 1], ["{AGE}", 1]),
    );
    matchTemplate(
      await egctlOk([...s, "get", "hs", "server-demo", "-o", "json"]),
      `{
  "createdAt": "{*}",
  "https": false,
  "keepAlive": true,
  "keepAliveTimeout": "60s",
  "kind": "HTTPServer",
  "labels": {
    "easegress/owner": "user-api"
  },
  "maxConnections": 10240,
  "name": "server-demo",
  "port": 10080,
  "rules": [
    {
      "paths": [
        {
          "backend": "pipeline-demo",
          "pathPrefix": "/pipeline"
        }
      ]
    }
  ],
  "version": "easegress.megaease.com/v2"
}`,
    );
    matchTemplate(
      await egctlOk([...s, "get", "httpservers", "-o", "yaml"]),
      `- createdAt: "{*}"
  https: false
  keepAlive: true
  keepAliveTimeout: 60s
  kind: HTTPServer
  labels:
    easegress/owner: user-api
  maxConnections: 10240
  name: server-demo
  port: 10080
  rules:
    - paths:
        - backend: pipeline-demo
          pathPrefix: /pipeline
  version: easegress.megaease.com/v2
`,
    );
    matchTemplate(
      await egctlOk([...s, "get", "pipeline", "pipeline-demo", "-o", "yaml"]),
      `createdAt: "{*}"
filters:
    - kind: Proxy
      name: proxy
      pools:
        - loadBalance:
            policy: roundRobin
          servers:
            - url: http://127.0.0.1:9095
            - url: http://127.0.0.1:9096
            - url: http://127.0.0.1:9097
flow:
    - filter: proxy
kind: Pipeline
labels:
    easegress/owner: user-api
name: pipeline-demo
version: easegress.megaease.com/v2
`,
    );
    // the status part depends on timing: null until the members' gateways published it (every 5 s), then an entry per
    // member
    const described = await egctlOk([...s, "describe", "httpserver", "server-demo"]);
    const statusAt = described.indexOf("\nAllStatus:") + 1;
    assert.match(
      described.slice(statusAt),
      /^AllStatus: null\n$|^AllStatus:\n=+\n {2}- node: machine-\d\n {4}status:\n/,
    );
    matchTemplate(
      described.slice(0, statusAt),
      `=====================
In Namespace default:
=====================
Name: server-demo
Kind: HTTPServer
Version: easegress.megaease.com/v2

Rules:
======
  - paths:
      - backend: pipeline-demo
        pathPrefix: /pipeline

CreatedAt: "{*}"
Https: false
KeepAlive: true
KeepAliveTimeout: 60s
Labels: easegress/owner: user-api
MaxConnections: 10240
Port: 10080

`,
    );
    matchTemplate(
      await egctlOk([...s, "get", "all"]),
      getAll(
        line(["pipeline-demo", 3], ["Pipeline", 3], ["{AGE}", 2]) +
          line(["server-demo", 3], ["HTTPServer", 3], ["{AGE}", 2]),
      ),
    );
    assert.equal(await egctlOk([...s, "get", "pipeline", "-o", "json"]).then((x) => JSON.parse(x).length), 1);
  });

  await t.step("apply from stdin, delete, and their errors", async () => {
    const hello = (await Deno.readTextFile(`${fixtures}eg_hello.yaml`)).replace("port: 10080", "port: 10081");
    assert.equal(
      await egctlOk([...s, "apply", "-f", "-"], "---\n" + hello + "\n---\n"),
      "update HTTPServer server-demo successfully\nupdate Pipeline pipeline-demo successfully\n",
    );
    assert.equal(JSON.parse(await egctlOk([...s, "get", "hs", "server-demo", "-o", "json"])).port, 10081);
    const bad = await egctl([...s, "apply", "-f", "-"], "kind: HTTPServer\nname: bad\nhttps: false\n");
    assert.equal(bad.code, 1);
    assert.equal(
      bad.stderr,
      `Error: create HTTPServer bad failed, 400: {"jsonschemaErrs":["jsonschema: '/port' does not validate with ` +
        `https://json-schema.org/draft/2020-12/schema#/properties/port/minimum: must be >= 1 but found 0"]}\n`,
    );
    // commands that fail: exit code 1, nothing on stdout, egctl's error text on stderr
    const failures: [string[], string | undefined, string][] = [
      [["create", "-f", "-"], "name: x\nport: 1\n", "Error: kind is empty: name: x\nport: 1\n\n"],
      [["create", "-f", "-"], "name: x\nkind: Nope\n", "Error: create Nope x failed, 400: kind Nope not found\n"],
      [["create"], undefined, "Error: yaml file is required\n"],
      [
        ["create", "-f", "/nonexistent.yaml"],
        undefined,
        "Error: Create a resource from a file or from stdin. failed: open /nonexistent.yaml: no such file or directory\n",
      ],
      [
        ["delete", "httpserver", "nosuch"],
        undefined,
        "Error: delete HTTPServer nosuch failed, no such HTTPServer nosuch\n",
      ],
      [
        ["delete", "tc", "TrafficController"],
        undefined,
        "Error: delete TrafficController TrafficController failed, 400: can't delete system controller object\n",
      ],
      [["delete", "httpserver"], undefined, "Error: invalid arguments\n"],
      [["delete", "foo", "x"], undefined, "Error: invalid resource for foo, unknown resource: foo\n"],
      [["get", "foo"], undefined, "Error: unknown resource: foo\n"],
      [["get"], undefined, "Error: no resource specified\n"],
      [["get", "hs", "nope"], undefined, "Error: get HTTPServer nope failed, 404: not found\n"],
    ];
    for (const [args, stdin, stderr] of failures) {
      assert.deepEqual(await egctl([...s, ...args], stdin), { code: 1, stdout: "", stderr }, args.join(" "));
    }
    assert.equal(
      await egctlOk([...s, "delete", "pipeline", "pipeline-demo"]),
      "delete Pipeline pipeline-demo successfully\n",
    );
    assert.equal(await egctlOk([...s, "delete", "hs", "--all"]), "delete HTTPServer server-demo successfully\n");
    assert.equal(await egctlOk([...s, "get", "pipeline", "-o", "json"]), "null");
    assert.equal(await egctlOk([...s, "get", "hs"]), line(["NAME", 1], ["KIND", 1], ["AGE", 1]));
  });

  await t.step("admin API: status codes, error bodies, X-Config-Version, v1 alias, YAML/JSON bodies", async () => {
    const base = `http://${m1.apiAddr}`;
    const v0 = Number((await apiGet(m1.apiAddr, "/healthz")).headers.get("x-config-version"));
    assert.equal(v0, 6); // 2 creates, 2 updates, 2 deletes
    const post = await fetch(`${base}/apis/v2/objects`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ kind: "Pipeline", name: "pj", filters: [{ name: "m", kind: "Mock", rules: [] }] }),
    });
    assert.equal(post.status, 201);
    assert.equal(await post.text(), "");
    assert.equal(post.headers.get("x-config-version"), "7");
    const dup = await fetch(`${base}/apis/v1/objects/`, {
      method: "POST",
      headers: { "content-type": "application/yaml" },
      body: "kind: Pipeline\nname: pj\nfilters: []\n",
    });
    assert.equal(dup.status, 409);
    assert.equal(await dup.text(), `{"code":409,"message":"conflict name: pj"}`);
    const put = await fetch(`${base}/apis/v2/objects/other`, {
      method: "PUT",
      headers: { "content-type": "text/x-yaml" },
      body: "kind: Pipeline\nname: pj\nfilters: []\n",
    });
    assert.equal(put.status, 400);
    assert.equal(await put.text(), `{"code":400,"message":"inconsistent name in url and spec "}`);
    const kind = await fetch(`${base}/apis/v2/objects/pj`, {
      method: "PUT",
      headers: { "content-type": "application/x-yaml" },
      body: "kind: HTTPServer\nname: pj\nport: 1\nhttps: false\n",
    });
    assert.equal(await kind.text(), `{"code":400,"message":"different kinds: Pipeline, HTTPServer"}`);
    const nf = await apiGet(m1.apiAddr, "/objects/nope");
    assert.deepEqual([nf.status, nf.body], [404, `{"code":404,"message":"not found"}`]);
    const del = await fetch(`${base}/apis/v2/objects/pj`, { method: "DELETE" });
    assert.deepEqual([del.status, await del.text(), del.headers.get("x-config-version")], [200, "", "8"]);
    assert.deepEqual(await (await fetch(`${base}/apis/v2/object-kinds`)).json(), [
      "HTTPServer",
      "Pipeline",
      "RawConfigTrafficController",
      "ServiceRegistry",
      "StatusSyncController",
      "TrafficController",
    ]);
    const cdk = await apiGet(m1.apiAddr, "/customdatakinds");
    assert.deepEqual([cdk.body, cdk.headers.get("content-type")], ["[]", "application/json"]);
    const members = await apiGet(m1.apiAddr, "/status/members");
    assert.equal(members.headers.get("content-type"), "text/plain; charset=utf-8");
    const sys = await fetch(`${base}/apis/v2/objects/TrafficController`, {
      headers: { Accept: "application/yaml" },
    });
    assert.equal(sys.headers.get("content-type"), "text/x-yaml");
    assert.equal(
      await sys.text(),
      "kind: TrafficController\nlabels:\n    easegress/owner: user-api\nname: TrafficController\nversion: easegress.megaease.com/v2\n",
    );
    const purge = await fetch(`${base}/apis/v2/status/members/nobody`, { method: "DELETE" });
    assert.deepEqual([purge.status, await purge.text()], [404, `{"code":404,"message":"not found"}`]);
    const unknown = await fetch(`${base}/apis/v2/nothing-here`);
    assert.deepEqual([unknown.status, await unknown.text()], [404, "404 page not found\n"]);
  });
});

Deno.test("argv[0] rule: the executable named egctl runs egctl, easegress-server runs the server", async () => {
  const dir = await Deno.makeTempDir({ prefix: "eg-argv0-" });
  try {
    const mod = new URL("../mod.ts", import.meta.url).pathname;
    const run = async (name: string, args: string[]) => {
      await Deno.symlink(Deno.execPath(), `${dir}/${name}`);
      const r = await new Deno.Command(`${dir}/${name}`, {
        args: ["run", "-A", "--no-check", mod, ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
    };
    const [dead] = await freePorts(1);
    assert.deepEqual(await run("egctl", ["--server", `127.0.0.1:${dead}`, "health"]), {
      code: 1,
      stdout: "",
      stderr:
        `Error: Get "http://127.0.0.1:${dead}/apis/v2/healthz": dial tcp 127.0.0.1:${dead}: connect: connection refused\n`,
    });
    assert.deepEqual(await run("easegress-server", ["--version"]), {
      code: 0,
      stdout: "Easegress v2.11.0\n",
      stderr: "",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
