/**
 * easegress-server options (in-process): flag defaults, EASEGRESS_* and EG_* environment, the YAML config file and
 * Easegress's precedence between them, legacy role names, the default initial cluster, validation messages, the
 * stored JSON field order and the `-c` YAML dump.
 */
import assert from "node:assert/strict";
import { type Options, optionsJson, parseOptions } from "../server/easegress/options.ts";

const files: Record<string, string> = {};
const parse = (args: string[], env: Record<string, string> = {}) =>
  parseOptions({
    args,
    env,
    cwd: "/work/home",
    hostname: "host1",
    readFile: (p) => {
      if (!(p in files)) throw new Deno.errors.NotFound(p);
      return files[p];
    },
  }).opt;
const err = (args: string[], env: Record<string, string> = {}) => {
  try {
    parse(args, env);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`expected ${args.join(" ")} to fail`);
};

Deno.test("options: defaults as Easegress v2.11", () => {
  const o = parse([]);
  assert.equal(o.Name, "eg-default-name");
  assert.equal(o.ClusterName, "eg-cluster-default-name");
  assert.equal(o.ClusterRole, "primary");
  assert.equal(o.ClusterRequestTimeout, "10s");
  assert.equal(o.APIAddr, "localhost:2381");
  assert.deepEqual(o.Cluster, {
    ListenPeerURLs: ["http://localhost:2380"],
    ListenClientURLs: ["http://localhost:2379"],
    AdvertiseClientURLs: ["http://localhost:2379"],
    InitialAdvertisePeerURLs: ["http://localhost:2380"],
    InitialCluster: { "eg-default-name": "http://localhost:2380" },
    StateFlag: "new",
    PrimaryListenPeerURLs: ["http://localhost:2380"],
    MaxCallSendMsgSize: 10485760,
  });
  assert.equal(o.HomeDir, "./");
  assert.equal(o.DataDir, "data");
  assert.equal(o.AbsHomeDir, "/work/home");
  assert.equal(o.AbsDataDir, "/work/home/data");
  assert.equal(o.AbsWALDir, "");
  assert.equal(o.AbsLogDir, "");
  assert.equal(o.StatusUpdateMaxBatchSize, 20);
  assert.equal(o.Labels, null);
  // the stored JSON uses Go's field names in struct order
  assert.deepEqual(Object.keys(optionsJson(o)), [
    "ShowVersion",
    "ShowHelp",
    "ShowConfig",
    "ConfigFile",
    "ForceNewCluster",
    "SignalUpgrade",
    "Name",
    "Labels",
    "APIAddr",
    "TLS",
    "CertFile",
    "KeyFile",
    "ClientCAFile",
    "Debug",
    "DisableAccessLog",
    "InitialObjectConfigFiles",
    "ObjectsDumpInterval",
    "BasicAuth",
    "UseStandaloneEtcd",
    "ClusterName",
    "ClusterRole",
    "ClusterRequestTimeout",
    "Cluster",
    "HomeDir",
    "DataDir",
    "WALDir",
    "LogDir",
    "CPUProfileFile",
    "MemoryProfileFile",
    "StatusUpdateMaxBatchSize",
    "AbsHomeDir",
    "AbsDataDir",
    "AbsWALDir",
    "AbsLogDir",
  ]);
});

Deno.test("options: tutorial flags, initial-cluster map, secondary, legacy role names", () => {
  const o = parse([
    "--name",
    "machine-1",
    "--cluster-name",
    "cluster-test",
    "--cluster-role=primary",
    "--initial-cluster",
    "machine-1=http://h1:2380,machine-2=http://h2:2380",
    "--initial-cluster",
    "machine-3=http://h3:2380",
    "--labels",
    "a=1,b=2",
  ]);
  assert.deepEqual(o.Cluster.InitialCluster, {
    "machine-1": "http://h1:2380",
    "machine-2": "http://h2:2380",
    "machine-3": "http://h3:2380",
  });
  assert.deepEqual(o.Labels, { a: "1", b: "2" });
  const s = parse([
    "--name",
    "machine-4",
    "--cluster-role",
    "secondary",
    "--primary-listen-peer-urls",
    "http://h1:2380",
    "--state-flag",
    "existing",
  ]);
  assert.equal(s.ClusterRole, "secondary");
  assert.equal(s.Cluster.InitialCluster, null); // no default initial cluster for secondaries
  assert.deepEqual(s.Cluster.PrimaryListenPeerURLs, ["http://h1:2380"]);
  assert.equal(s.Cluster.StateFlag, "existing");
  const r = parseOptions({ args: ["--cluster-role", "reader"], env: {}, cwd: "/", hostname: "h" });
  assert.equal(r.opt.ClusterRole, "secondary");
  assert.deepEqual(r.notices, [
    "Cluster roles writer/reader are deprecated. \nRenamed cluster role 'reader' to 'secondary'. Please use primary/secondary instead. \n",
  ]);
  assert.equal(parse(["--cluster-role", "writer"]).ClusterRole, "primary");
  assert.equal(parse(["--use-standalone-etcd"]).ClusterRole, "secondary");
  // slices: the first set replaces the default, later ones append
  assert.deepEqual(
    parse(["--listen-peer-urls", "http://a:1", "--listen-peer-urls", "http://b:2"]).Cluster
      .ListenPeerURLs,
    ["http://a:1", "http://b:2"],
  );
  assert.equal(parse(["-f", "/nonexistent-but-help", "-h"]).ShowHelp, true);
});

Deno.test("options: EASEGRESS_* env acts as flags (CLI overrides), EG_* env below flags", () => {
  const o = parse(["--api-addr", "127.0.0.1:9999"], {
    EASEGRESS_NAME: "from-env",
    EASEGRESS_API_ADDR: "127.0.0.1:1111",
    EASEGRESS_INITIAL_CLUSTER: "from-env=http://x:1",
    EASEGRESS_CLUSTER_ROLE: "primary",
    EASEGRESS_DEBUG: "true",
  });
  assert.equal(o.Name, "from-env");
  assert.equal(o.APIAddr, "127.0.0.1:9999");
  assert.deepEqual(o.Cluster.InitialCluster, { "from-env": "http://x:1" });
  assert.equal(o.Debug, true);
  // env + CLI slice values: the CLI appends to what the env set
  assert.deepEqual(
    parse(["--listen-client-urls", "http://b:2"], { EASEGRESS_LISTEN_CLIENT_URLS: "http://a:1" }).Cluster
      .ListenClientURLs,
    ["http://a:1", "http://b:2"],
  );
  assert.equal(parse([], { EG_NAME: "eg-env" }).Name, "eg-env");
  assert.equal(parse(["--name", "cli"], { EG_NAME: "eg-env" }).Name, "cli");
  assert.equal(
    err([], { EASEGRESS_DEBUG: "maybe" }),
    `invalid value "maybe" for EASEGRESS_DEBUG: strconv.ParseBool: parsing "maybe": invalid syntax`,
  );
});

Deno.test("options: config file — top-level keys lose to changed flags, the cluster block wins over flags", () => {
  files["/work/home/eg.yaml"] = `name: primary-1
cluster-name: cluster-test
cluster-role: primary
api-addr: localhost:2381
data-dir: ./data
wal-dir: ""
cpu-profile-file:
memory-profile-file:
log-dir: ./log
debug: false
disable-access-log: true
cluster:
  listen-peer-urls: [http://127.0.0.1:2380]
  listen-client-urls: [http://127.0.0.1:2379]
  advertise-client-urls: [http://127.0.0.1:2379]
  initial-advertise-peer-urls: [http://127.0.0.1:2380]
  initial-cluster:
   - primary-1: http://127.0.0.1:2380
   - primary-2: http://127.0.0.1:2378
   - primary-3: http://127.0.0.1:2376
`;
  const o = parse(["-f", "eg.yaml", "--api-addr", "127.0.0.1:3333", "--listen-peer-urls", "http://cli:1"], {
    EG_CLUSTER_NAME: "from-eg-env",
  });
  assert.equal(o.ConfigFile, "eg.yaml");
  assert.equal(o.Name, "primary-1");
  assert.equal(o.APIAddr, "127.0.0.1:3333"); // changed flag > file
  assert.equal(o.ClusterName, "from-eg-env"); // EG_* env > file
  assert.deepEqual(o.Cluster.ListenPeerURLs, ["http://127.0.0.1:2380"]); // file's cluster block > flag
  assert.deepEqual(o.Cluster.InitialCluster, {
    "primary-1": "http://127.0.0.1:2380",
    "primary-2": "http://127.0.0.1:2378",
    "primary-3": "http://127.0.0.1:2376",
  });
  assert.equal(o.DisableAccessLog, true);
  assert.equal(o.AbsLogDir, "/work/home/log");
  assert.equal(o.AbsDataDir, "/work/home/data");
  assert.equal(o.CPUProfileFile, "");
  files["/work/home/sec.yaml"] = `name: secondary-1
cluster-name: cluster-test
cluster-role: secondary
api-addr: localhost:2382
cluster:
  primary-listen-peer-urls: [http://127.0.0.1:2380]
  initial-cluster: {a: "http://x:1"}
`;
  const s = parse(["--config-file", "sec.yaml"]);
  assert.equal(s.ClusterRole, "secondary");
  assert.deepEqual(s.Cluster.PrimaryListenPeerURLs, ["http://127.0.0.1:2380"]);
  assert.deepEqual(s.Cluster.InitialCluster, { a: "http://x:1" });
  assert.equal(
    err(["-f", "nope.yaml"]),
    "read config file nope.yaml failed: open nope.yaml: no such file or directory",
  );
  files["/work/home/bad.yaml"] = "debug: maybe\n";
  assert.match(err(["-f", "bad.yaml"]), /^yaml file unmarshal failed, please make sure you provide valid yaml file/);
});

Deno.test("options: validation messages in Easegress's order", () => {
  assert.equal(err(["--cluster-name", ""]), "empty cluster-name");
  assert.equal(err(["--cluster-name", "bad name"]), "invalid constant: bad name");
  assert.equal(err(["--cluster-role", "boss"]), "invalid cluster-role: supported roles are primary/secondary");
  assert.equal(
    err(["--cluster-role", "secondary", "--force-new-cluster"]),
    "secondary got force-new-cluster",
  );
  assert.equal(
    err(["--cluster-role", "secondary", "--primary-listen-peer-urls", ""]),
    "secondary got empty cluster.primary-listen-peer-urls",
  );
  assert.equal(err(["--listen-client-urls", ""]), "empty listen-client-urls");
  assert.match(err(["--listen-peer-urls", "http://h:port"]), /^invalid listen-peer-urls: {2}http:\/\/h:port: parse /);
  assert.equal(
    err(["--cluster-request-timeout", "10"]),
    `invalid cluster-request-timeout: time: missing unit in duration "10"`,
  );
  assert.equal(err(["--api-addr", "localhost"]), "invalid api-addr: address localhost: missing port in address");
  assert.equal(err(["--home-dir", ""]), "empty home-dir");
  assert.equal(err(["--data-dir", ""]), "empty data-dir");
  assert.equal(err(["--tls"]), "empty cert file or key file");
  assert.equal(err(["--name", "a b", "--initial-cluster", "x=http://x:1"]), "invalid constant: a b");
  assert.equal(err(["--nope"]), "unknown flag: --nope");
  assert.equal(err(["--name"]), "flag needs an argument: --name");
  assert.equal(
    err(["--status-update-max-batch-size", "x"]),
    `invalid argument "x" for "--status-update-max-batch-size" flag: strconv.ParseInt: parsing "x": invalid syntax`,
  );
  // empty name: generated from hostname and api-addr
  const o: Options = parse(["--name", "", "--initial-cluster", "x=http://x:1", "--api-addr", "127.0.0.1:2381"]);
  assert.equal(o.Name, "host1-127.0.0.1-2381");
});

Deno.test("options: -c prints the effective config as YAML", () => {
  const r = parseOptions({
    args: ["--name", "m1", "--labels", "k=v", "-c"],
    env: {},
    cwd: "/h",
    hostname: "h",
  });
  assert.equal(
    r.yaml,
    `name: m1
labels:
    k: v
api-addr: localhost:2381
tls: false
cert-file: ""
key-file: ""
client-ca-file: ""
debug: false
disable-access-log: false
initial-object-config-files: null
objects-dump-interval: ""
basic-auth: null
use-standalone-etcd: false
cluster-name: eg-cluster-default-name
cluster-role: primary
cluster-request-timeout: 10s
cluster:
    listen-peer-urls:
        - http://localhost:2380
    listen-client-urls:
        - http://localhost:2379
    advertise-client-urls:
        - http://localhost:2379
    initial-advertise-peer-urls:
        - http://localhost:2380
    initial-cluster:
        m1: http://localhost:2380
    state-flag: new
    primary-listen-peer-urls:
        - http://localhost:2380
    max-call-send-msg-size: 10485760
home-dir: ./
data-dir: data
wal-dir: ""
log-dir: ""
cpu-profile-file: ""
memory-profile-file: ""
status-update-max-batch-size: 20
`,
  );
});
