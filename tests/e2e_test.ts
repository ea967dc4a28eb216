/**
 * etcd 3.4.23's own etcdctl e2e suite (via scripts/e2e.sh) against this project's server, one test per group.
 * Slow (it compiles the Go suite on first use and installs golang-etcd-server-dev if missing), so it only runs
 * with E2E=1 (CI sets it). Environment understood by scripts/e2e.sh (E2E_SERVER, E2E_SKIP, E2E_SKIP_<GROUP>,
 * SHARED_DIR, E2E_LOG_DIR) is passed through.
 */
import assert from "node:assert/strict";

const repo = new URL("../", import.meta.url).pathname;
const enabled = Deno.env.get("E2E") === "1";
/**
 * etcd's e2e groups (see shared/tools/etcd-e2e.sh; `auth` holds every TestCtlV3Auth*, User* and Role* test), plus
 * the client auto-TLS variants of the kv, lease and member tests, which no group lists.
 */
const GROUPS = [
  "kv",
  "watch",
  "lease",
  "maintenance",
  "cluster",
  "auth",
  "^TestCtlV3(Put|Get|Lease[A-Za-z]*|Member(List|Add|Update|Remove))ClientAutoTLS$",
];

for (const group of GROUPS) {
  Deno.test({
    name: enabled ? `e2e: etcd 3.4 etcdctl suite, group ${group}` : `e2e: group ${group} (skipped: set E2E=1 to run)`,
    ignore: !enabled,
    async fn() {
      const { code, stdout, stderr } = await new Deno.Command("bash", {
        args: [`${repo}scripts/e2e.sh`, group],
        cwd: repo,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
      console.log(out.trimEnd());
      const failed = out.split("\n").filter((l) => l.startsWith("--- FAIL"));
      const summary = out.trimEnd().split("\n").at(-1) ?? "";
      assert.equal(code, 0, `scripts/e2e.sh ${group} exited ${code}: ${summary}\n${failed.join("\n")}`);
    },
  });
}
