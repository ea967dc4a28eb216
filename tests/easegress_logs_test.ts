/**
 * easegress-server's log dir through a real member: Easegress's files (stdout.log, etcd_server.log in etcd's zap JSON,
 * admin_api.log, filter_http_access.log), rotated by size under real traffic (wrk through an HTTPServer and a Mock
 * pipeline) with lumberjack-named backups kept by count, and every file reopened on SIGHUP (logrotate's way).
 */
import assert from "node:assert/strict";
import { apiGet, memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { get, putObject } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

const MiB = 1 << 20;
const ACCESS_LINE =
  /^\[\S+\] \[127\.0\.0\.1:\d+ 127\.0\.0\.1 GET \/\S+ HTTP\/1\.1 200\] \[[\d.]+ms rx:\d+B tx:\d+B\] \[status code: 200\]$/;
const BACKUP = /^filter_http_access-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}(-\d+)?\.log$/;

/** wrk for `seconds` against `url`: the number of requests it completed. */
async function wrk(url: string, seconds: number): Promise<number> {
  const out = await new Deno.Command("wrk", { args: ["-t1", "-c8", `-d${seconds}s`, url] }).output();
  const text = new TextDecoder().decode(out.stdout);
  const m = /(\d+) requests in/.exec(text);
  assert.ok(m, `wrk: ${text}${new TextDecoder().decode(out.stderr)}`);
  return Number(m[1]);
}

memberTest(
  "log dir: Easegress's files, rotated by size under real traffic, backups by count, reopened on SIGHUP",
  async (
    procs,
  ) => {
    const [ports] = await memberPorts(1);
    const [port] = await freePorts(1);
    const home = await Deno.makeTempDir({ prefix: "eg-logs-" });
    const logDir = `${home}/log`;
    const m = await startMember(
      "eglogs",
      primaryArgs("eglogs", ports, ["--log-dir", "log", "--log-max-size", "1", "--log-max-backups", "2"]),
      { home },
    );
    procs.push(m);
    await putObject(
      m.apiAddr,
      `name: logs-server\nkind: HTTPServer\nport: ${port}\nrules:\n- paths:\n  - pathPrefix: /\n    backend: logs-mock\n`,
    );
    await putObject(
      m.apiAddr,
      `name: logs-mock\nkind: Pipeline\nflow:\n- {filter: mock}\nfilters:\n- {name: mock, kind: Mock, rules: [{code: 200, body: ok}]}\n`,
    );
    // a 400-byte path: about 500 bytes per access log line
    const url = `http://127.0.0.1:${port}/${"p".repeat(400)}`;
    await waitFor("the route", async () => (await get(url).catch(() => [0]))[0] === 200);

    // traffic until at least 4.5 MiB of access log lines were written: 4 rotations at 1 MiB
    let requests = 0;
    while (requests * 500 < 4.5 * MiB) requests += await wrk(url, 3);
    await new Promise((r) => setTimeout(r, 1500)); // the access log is flushed every 500 ms

    const files = [...Deno.readDirSync(logDir)].map((e) => e.name).sort();
    for (const f of ["stdout.log", "etcd_server.log", "admin_api.log", "filter_http_access.log"]) {
      assert.ok(files.includes(f), `${f} missing from ${files.join(" ")}`);
    }
    const backups = files.filter((f) => f.startsWith("filter_http_access-"));
    assert.equal(backups.length, 2, `--log-max-backups 2: ${files.join(" ")}`);
    let lines = 0;
    for (const f of [...backups, "filter_http_access.log"]) {
      if (f !== "filter_http_access.log") assert.match(f, BACKUP);
      const text = await Deno.readTextFile(`${logDir}/${f}`);
      const size = new TextEncoder().encode(text).length;
      assert.ok(size <= MiB, `${f}: ${size} bytes, over --log-max-size 1`);
      // rotated before a write that would not fit: a backup is nearly full (the log is written in batches ≤ 256 KiB)
      if (f !== "filter_http_access.log") assert.ok(size > MiB / 2, `${f}: ${size} bytes`);
      assert.ok(text.endsWith("\n"), `${f} ends inside a line`);
      for (const l of text.slice(0, -1).split("\n")) {
        assert.match(l, ACCESS_LINE, `${f}: a torn or foreign line: ${l.slice(400)}`);
      }
      lines += text.split("\n").length - 1;
    }
    assert.ok(lines < requests, `only the newest lines are kept: ${lines} of ${requests}`);

    // the other files, in their formats
    assert.match(await Deno.readTextFile(`${logDir}/stdout.log`), /\tINFO\tapi server running in /);
    const etcdLines = (await Deno.readTextFile(`${logDir}/etcd_server.log`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert.ok(etcdLines.some((l) => l.level === "info" && typeof l.ts === "string" && /published/.test(l.msg)));
    const api = await Deno.readTextFile(`${logDir}/admin_api.log`);
    assert.match(
      api,
      /^POST 127\.0\.0\.1:\d+ \/apis\/v2\/objects 201 rx:\d+B tx:0B start:\d{4}-\d\d-\d\dT\S+ process:[\d.]+(ns|µs|ms|s)$/m,
    );

    // logrotate's way: the file is moved, then SIGHUP; the member writes to a new file by the old name
    await Deno.rename(`${logDir}/admin_api.log`, `${logDir}/admin_api.log.1`);
    Deno.kill(m.pid, "SIGHUP");
    // the signal is handled asynchronously: a request answered before the reopen is still logged to the moved file
    await waitFor(
      "admin_api.log created again",
      () => Deno.stat(`${logDir}/admin_api.log`).then(() => true, () => false),
    );
    await waitFor("admin_api.log reopened", async () => {
      await apiGet(m.apiAddr, "/healthz");
      return (await Deno.readTextFile(`${logDir}/admin_api.log`).catch(() => "")).includes("/apis/v2/healthz 200");
    });
    assert.ok(!(await Deno.readTextFile(`${logDir}/admin_api.log.1`)).includes("healthz"));
    assert.ok(!m.exited(), "SIGHUP stopped the member");
    console.log(`  ${requests} requests; kept ${lines} access log lines in ${backups.join(", ")} and the current file`);
    await Deno.remove(home, { recursive: true });
  },
);
