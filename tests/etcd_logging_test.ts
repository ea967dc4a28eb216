/**
 * etcd's logging flags: `--logger zap` writes one JSON object per line shaped as the real etcd 3.4's (level, ts in
 * zap's ISO 8601, msg; the messages keep our capnslog wording, which etcd's zap lines do not share), `--log-outputs` sends them to several places, `--log-level` drops the lines below it, and
 * a bad value stops the server with etcd's message.
 */
import assert from "node:assert/strict";
import { startServer } from "./lib/server.ts";
import { zapTime } from "../server/etcd/zap.ts";

/** zap's ISO 8601 time: milliseconds, then Z or the zone offset. */
const ZAP_TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d{4})$/;

function jsonLines(text: string): Record<string, unknown>[] {
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
}

Deno.test("zap time: local time with milliseconds and the zone as etcd writes it", () => {
  assert.match(zapTime(new Date()), ZAP_TS);
  const t = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6));
  const off = -t.getTimezoneOffset();
  if (off === 0) assert.equal(zapTime(t), "2026-01-02T03:04:05.006Z");
});

Deno.test({
  name: "--logger zap --log-outputs stderr,<file>: JSON lines as etcd 3.4 writes them, in both outputs",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "zaplog-" });
    const file = `${dir}/etcd.log`;
    const s = await startServer({ extraArgs: ["--logger", "zap", "--log-outputs", `stderr,${file}`] });
    try {
      // startServer returns at the "published" line; the next line may still be in the pipe
      for (let i = 0; i < 100 && !s.output().includes("ready to serve client requests"); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const lines = jsonLines(s.output());
      assert.ok(lines.length >= 5);
      for (const l of lines) {
        // zap's key order; "logger" (the component) where etcd writes "caller" (a Go file:line we do not have)
        assert.deepEqual(Object.keys(l).slice(0, 4), ["level", "ts", "logger", "msg"]);
        assert.match(String(l.ts), ZAP_TS);
        assert.ok(["info", "warn", "error"].includes(String(l.level)));
        assert.equal(typeof l.msg, "string");
      }
      assert.ok(lines.some((l) => l.msg === "ready to serve client requests"));
      assert.deepEqual(jsonLines(await Deno.readTextFile(file)), lines);
    } finally {
      await s.kill();
    }
    // the real etcd 3.4's lines start with the same keys and time format
    const etcd = await startServer({ binary: "/usr/bin/etcd", extraArgs: ["--logger", "zap"] });
    await etcd.kill();
    const ref = jsonLines(etcd.output());
    assert.ok(ref.length >= 5);
    for (const l of ref) {
      assert.deepEqual(Object.keys(l).slice(0, 4), ["level", "ts", "caller", "msg"]);
      assert.match(String(l.ts), ZAP_TS);
    }
    await Deno.remove(etcd.dataDir, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "--log-level warn drops info lines; --logger with an unknown value stops with etcd's message",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "zaplog-" });
    const bad = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../mod.ts", import.meta.url).pathname, "etcd", "--logger", "json"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(bad.code, 1);
    assert.match(new TextDecoder().decode(bad.stderr), /unknown logger option "json"/);
    const file = `${dir}/warn.log`;
    const s = await startServer({
      extraArgs: ["--logger=zap", "--log-level=warn", `--log-outputs=${file},stderr`],
      waitReady: false, // nothing at info level: no "published" line to wait for
    });
    try {
      // it serves (its /health says so) and its log holds no info line ("published" is one)
      const deadline = Date.now() + 20000;
      for (;;) {
        const ok = await fetch(`${s.clientUrl}/health`).then((r) => r.ok, () => false);
        if (ok) break;
        assert.ok(Date.now() < deadline, `server did not come up:\n${s.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await s.kill();
    }
    const lines = jsonLines(await Deno.readTextFile(file).catch(() => ""));
    assert.ok(lines.every((l) => l.level !== "info"), JSON.stringify(lines));
    await Deno.remove(dir, { recursive: true });
  },
});
