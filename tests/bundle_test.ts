/**
 * The program is one self-contained file: `deno bundle mod.ts` produces a single JS file that starts the server from
 * an empty folder with file access limited to its data dir (so it reads no .proto or other file at run time).
 * This stands in for `deno compile`, whose base runtime cannot be downloaded on machines without internet.
 */
import assert from "node:assert/strict";
import { freePorts } from "./lib/ports.ts";
import { etcdctlOk } from "./lib/etcdctl.ts";

const repo = new URL("../", import.meta.url).pathname;

Deno.test("deno bundle of mod.ts runs the server with access to nothing but its data dir", async () => {
  const work = await Deno.makeTempDir({ prefix: "egbundle-" });
  const bundle = `${work}/easegress.js`;
  const b = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "-o", bundle, `${repo}mod.ts`],
    cwd: repo,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(b.code, 0, new TextDecoder().decode(b.stderr));
  const empty = `${work}/run`;
  const data = `${empty}/data`;
  await Deno.mkdir(data, { recursive: true });
  const [cp, pp] = await freePorts(2);
  const proc = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-sys",
      `--allow-read=${data}`,
      `--allow-write=${data}`,
      bundle,
      "etcd",
      "--data-dir",
      data,
      "--listen-client-urls",
      `http://127.0.0.1:${cp}`,
      "--advertise-client-urls",
      `http://127.0.0.1:${cp}`,
      "--listen-peer-urls",
      `http://127.0.0.1:${pp}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${pp}`,
    ],
    cwd: empty,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const reader = (async () => {
    for await (const c of proc.stderr) log += new TextDecoder().decode(c);
  })();
  try {
    const deadline = Date.now() + 20_000;
    while (!log.includes("published")) {
      assert.ok(Date.now() < deadline, `bundle did not become ready:\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ep = `127.0.0.1:${cp}`;
    assert.equal(await etcdctlOk(ep, ["put", "bundled", "yes"]), "OK\n");
    assert.equal(await etcdctlOk(ep, ["get", "bundled", "--print-value-only"]), "yes\n");
    // /metrics works without read access to /proc (CPU and memory come from the runtime)
    const metrics = await (await fetch(`http://${ep}/metrics`)).text();
    assert.match(metrics, /\netcd_server_has_leader 1\n/);
    assert.match(metrics, /\nprocess_resident_memory_bytes [1-9]/);
    assert.doesNotMatch(log, /PermissionDenied|NotCapable|Requires read access/);
  } finally {
    proc.kill("SIGKILL");
    await proc.status;
    await reader;
    await Deno.remove(work, { recursive: true });
  }
});
