/**
 * The self-rotating log file (server/util/logfile.ts): rotation before a write that would pass the size limit, whole
 * lines only, lumberjack's backup names, backups kept by count and by age, reopening after an outside rename.
 */
import assert from "node:assert/strict";
import { LogFile } from "../server/util/logfile.ts";

const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("log file: rotates by size into timestamped backups, keeps the newest maxBackups, no line split", () => {
  const dir = Deno.makeTempDirSync({ prefix: "logfile-" });
  let t = Date.UTC(2026, 11, 5, 13, 0, 0, 0);
  const f = new LogFile(`${dir}/stdout.log`, { maxBytes: 1000, maxAgeMs: 0, maxBackups: 3 }, () => new Date(t));
  const line = "x".repeat(99) + "\n"; // 100 bytes
  for (let i = 0; i < 55; i++) {
    f.write(line);
    t += 1000;
  }
  f.close();
  const files = names(dir);
  // 55 lines of 100 bytes (line i at 13:00:i), 10 to a file: rotations before lines 10, 20 ... 50, named by their
  // time; the newest 3 backups kept, 5 lines in the current file
  assert.deepEqual(files, [
    "stdout-2026-12-05T13-00-30.000.log",
    "stdout-2026-12-05T13-00-40.000.log",
    "stdout-2026-12-05T13-00-50.000.log",
    "stdout.log",
  ]);
  for (const n of files.slice(0, 3)) assert.equal(Deno.readTextFileSync(`${dir}/${n}`), line.repeat(10));
  assert.equal(Deno.readTextFileSync(`${dir}/stdout.log`), line.repeat(5));
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("log file: backups older than maxAgeMs are deleted (at start and after a rotation); others are not", () => {
  const dir = Deno.makeTempDirSync({ prefix: "logfile-" });
  const now = Date.UTC(2026, 11, 5, 12, 0, 0, 0);
  for (const n of ["admin_api-2026-11-01T00-00-00.000.log", "admin_api-2026-12-04T12-00-00.000.log", "other.log"]) {
    Deno.writeTextFileSync(`${dir}/${n}`, "old\n");
  }
  const day = 24 * 3600 * 1000;
  const f = new LogFile(
    `${dir}/admin_api.log`,
    { maxBytes: 10, maxAgeMs: 30 * day, maxBackups: 0 },
    () => new Date(now),
  );
  assert.deepEqual(names(dir), ["admin_api-2026-12-04T12-00-00.000.log", "admin_api.log", "other.log"]);
  f.write("0123456789\n"); // larger than maxBytes on its own: written whole into the empty file
  f.write("a\n"); // rotates first
  f.close();
  assert.deepEqual(names(dir), [
    "admin_api-2026-12-04T12-00-00.000.log",
    "admin_api-2026-12-05T12-00-00.000.log",
    "admin_api.log",
    "other.log",
  ]);
  assert.equal(Deno.readTextFileSync(`${dir}/admin_api-2026-12-05T12-00-00.000.log`), "0123456789\n");
  // two rotations in the same millisecond get distinct names
  const g = new LogFile(`${dir}/admin_api.log`, { maxBytes: 10, maxAgeMs: 0, maxBackups: 0 }, () => new Date(now));
  g.write("bbbbbbbbbb\n");
  g.close();
  assert.ok(names(dir).includes("admin_api-2026-12-05T12-00-00.000-1.log"), names(dir).join(" "));
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("log file: reopen() after an outside rename starts a new file; the moved one gets nothing more", () => {
  const dir = Deno.makeTempDirSync({ prefix: "logfile-" });
  const f = new LogFile(`${dir}/etcd_server.log`);
  f.write("one\n");
  Deno.renameSync(`${dir}/etcd_server.log`, `${dir}/etcd_server.log.1`);
  f.write("two\n"); // still the moved file, as with any open file
  f.reopen();
  f.write("three\n");
  f.close();
  assert.equal(Deno.readTextFileSync(`${dir}/etcd_server.log.1`), "one\ntwo\n");
  assert.equal(Deno.readTextFileSync(`${dir}/etcd_server.log`), "three\n");
  Deno.removeSync(dir, { recursive: true });
});
