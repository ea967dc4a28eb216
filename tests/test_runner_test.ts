/**
 * scripts/test.sh, the runner behind `deno task test`: which Debian packages it installs, how, when it must stop
 * instead, and what it passes to deno test. Each case runs a copy of the script with a PATH of its own: links to
 * everything in /usr/bin except the programs a case hides (so their packages look missing), and stand-ins for apt-get,
 * sudo and deno that record how they were called (the stand-in apt-get "installs" a hidden program by linking it back).
 * The system's packages are never touched. Needs root (the non-root cases run as nobody through setpriv) and the
 * packages of scripts/test_deps.txt, which `deno task test` installs before it runs this.
 */
import assert from "node:assert/strict";

const repo = new URL("../", import.meta.url).pathname;
const NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"];
/** The program each package provides, for the stand-in apt-get. */
const PROVIDES: Record<string, string> = { "etcd-server": "etcd", "etcd-client": "etcdctl", "golang-go": "go" };

function whyNot(): string | null {
  if (Deno.uid() !== 0) return "needs root, to run the script as nobody";
  try {
    Deno.statSync("/usr/bin/setpriv");
  } catch {
    return "needs /usr/bin/setpriv (util-linux)";
  }
  return null;
}
const reason = whyNot();

interface Sandbox {
  dir: string;
  /** What the stand-ins recorded, one call a line. */
  calls(): Promise<string[]>;
  /** The arguments the stand-in deno was started with (null: it was not started), then its RAFT_SIM_SECONDS. */
  deno(): Promise<{ args: string[]; raftSimSeconds: string } | null>;
  run(args: string[], opts?: { asNobody?: boolean; env?: Record<string, string> }): Promise<Result>;
}

interface Result {
  code: number;
  /** stdout and stderr, in that order */
  output: string;
}

async function write(path: string, text: string, mode: number): Promise<void> {
  await Deno.writeTextFile(path, text);
  await Deno.chmod(path, mode);
}

let usrBinFolder: Promise<string> | undefined;

/**
 * A folder of links to the programs of /usr/bin but those of PROVIDES (each sandbox links back the ones it does not
 * hide) and the stand-ins; made once for this file and removed when it ends.
 */
function sharedUsrBin(): Promise<string> {
  usrBinFolder ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "test-sh-usrbin-" });
    await Deno.chmod(dir, 0o755);
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const skip = new Set([...Object.values(PROVIDES), "apt-get", "sudo", "deno"]);
    for await (const e of Deno.readDir("/usr/bin")) {
      if (!skip.has(e.name)) await Deno.symlink(`/usr/bin/${e.name}`, `${dir}/${e.name}`);
    }
    return dir;
  })();
  return usrBinFolder;
}

/** Which sudo the sandbox has: none, one that runs anything without a password, or one that asks for a password. */
type Sudo = "none" | "password-less" | "password";

/** A copy of the runner with its own PATH; `hide` names programs of PROVIDES left out of it. */
async function sandbox(hide: string[], opts: { sudo?: Sudo } = {}): Promise<Sandbox> {
  const dir = await Deno.makeTempDir({ prefix: "test-sh-" });
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/scripts`);
  for (const f of ["test.sh", "test_deps.txt", "test_quick.txt"]) {
    await Deno.copyFile(`${repo}scripts/${f}`, `${dir}/scripts/${f}`);
  }
  await Deno.mkdir(`${dir}/tests`);
  await write(`${dir}/tests/wal_test.ts`, "", 0o644);
  const bin = `${dir}/bin`;
  await Deno.mkdir(bin);
  await Deno.chmod(bin, 0o777); // the stand-in apt-get links programs here, also when run as nobody
  await write(`${dir}/calls`, "", 0o666);
  await write(`${dir}/deno-args`, "", 0o666);
  const usrBin = await sharedUsrBin();
  for (const prog of Object.values(PROVIDES)) {
    if (!hide.includes(prog)) await Deno.symlink(`/usr/bin/${prog}`, `${bin}/${prog}`);
  }
  const links = Object.entries(PROVIDES).map(([pkg, prog]) => `${pkg}) ln -sf /usr/bin/${prog} ${bin}/${prog} ;;`);
  await write(
    `${bin}/apt-get`,
    `#!/bin/bash
echo "apt-get $* (DEBIAN_FRONTEND=$DEBIAN_FRONTEND)" >> ${dir}/calls
if [[ $1 == install ]]; then for p in "$@"; do case $p in ${links.join(" ")} esac; done; fi
`,
    0o755,
  );
  if (opts.sudo === "password-less") {
    await write(
      `${bin}/sudo`,
      `#!/bin/bash\necho "sudo $*" >> ${dir}/calls\n[[ $1 == -n ]] && shift\nexec "$@"\n`,
      0o755,
    );
  } else if (opts.sudo === "password") {
    // what sudo -n says and does for a user who must type a password
    await write(
      `${bin}/sudo`,
      `#!/bin/bash\necho "sudo $*" >> ${dir}/calls\necho "sudo: a password is required" >&2\nexit 1\n`,
      0o755,
    );
  }
  await write(
    `${bin}/deno`,
    `#!/bin/bash\nprintf '%s\\n' "RAFT_SIM_SECONDS=$RAFT_SIM_SECONDS" "$@" > ${dir}/deno-args\n`,
    0o755,
  );
  const lines = async (f: string) => (await Deno.readTextFile(`${dir}/${f}`)).split("\n").filter((l) => l !== "");
  return {
    dir,
    calls: () => lines("calls"),
    async deno() {
      const [env, ...args] = await lines("deno-args");
      return env === undefined ? null : { args, raftSimSeconds: env.slice("RAFT_SIM_SECONDS=".length) };
    },
    async run(args, { asNobody = false, env = {} } = {}) {
      const script = [`${dir}/scripts/test.sh`, ...args];
      const out = await new Deno.Command(asNobody ? "/usr/bin/setpriv" : "bash", {
        args: asNobody ? [...NOBODY, "bash", ...script] : script,
        clearEnv: true,
        env: { PATH: `${bin}:${usrBin}`, HOME: dir, ...env },
        cwd: dir,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
    },
  };
}

async function withSandbox(
  hide: string[],
  opts: { sudo?: Sudo },
  fn: (sb: Sandbox) => Promise<void>,
): Promise<void> {
  const sb = await sandbox(hide, opts);
  try {
    await fn(sb);
  } finally {
    await Deno.remove(sb.dir, { recursive: true });
  }
}

const INSTALL_FLAGS = "install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends";
const NONINTERACTIVE = "(DEBIAN_FRONTEND=noninteractive)";

function runnerTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name: `scripts/test.sh: ${name}${reason ? ` (ignored: ${reason})` : ""}`, ignore: reason !== null, fn });
}

runnerTest(
  "not root and no sudo, with packages missing: one line naming them and the command, no test runs",
  () =>
    withSandbox(["etcd", "etcdctl"], {}, async (sb) => {
      const r = await sb.run([], { asNobody: true });
      assert.equal(r.code, 3, r.output);
      const lines = r.output.trim().split("\n");
      assert.equal(lines.length, 1, `expected one line, got:\n${r.output}`);
      assert.match(lines[0], /missing \(etcd-server etcd-client\)/);
      assert.ok(lines[0].includes("run: sudo apt-get install -y etcd-server etcd-client"), lines[0]);
      assert.deepEqual(await sb.calls(), [], "nothing may be installed");
      assert.equal(await sb.deno(), null, "no test may run");
    }),
);

runnerTest(
  "not root, sudo asks for a password: the same one line, sudo is asked nothing but whether it needs one",
  () =>
    withSandbox(["etcd"], { sudo: "password" }, async (sb) => {
      const r = await sb.run([], { asNobody: true });
      assert.equal(r.code, 3, r.output);
      const lines = r.output.trim().split("\n");
      assert.equal(lines.length, 1, `expected one line, got:\n${r.output}`);
      assert.match(lines[0], /missing \(etcd-server\) .* run: sudo apt-get install -y etcd-server /);
      assert.deepEqual(await sb.calls(), ["sudo -n true"]);
      assert.equal(await sb.deno(), null, "no test may run");
    }),
);

runnerTest(
  "as root: installs what is missing, says why, checks again, then runs the suite",
  () =>
    withSandbox(["etcd", "etcdctl"], {}, async (sb) => {
      const r = await sb.run([]);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /^test\.sh: installing 2 Debian package\(s\) the tests need:\n/);
      assert.match(r.output, /\n {2}etcd-server +real etcd 3\.4\.23 \(\/usr\/bin\/etcd\): snapshot_bbolt/);
      assert.match(r.output, /\n {2}etcd-client +etcdctl 3\.4/);
      assert.match(r.output, /\ntest\.sh: installed etcd-server etcd-client\n$/);
      assert.deepEqual(await sb.calls(), [
        "apt-get update -qq (DEBIAN_FRONTEND=)",
        `apt-get ${INSTALL_FLAGS} etcd-server etcd-client ${NONINTERACTIVE}`,
      ]);
      assert.deepEqual((await sb.deno())?.args, ["test", "-A", "--no-check=remote", "tests/"]);
    }),
);

runnerTest(
  "not root with password-less sudo: installs through sudo -n",
  () =>
    withSandbox(["etcd", "etcdctl"], { sudo: "password-less" }, async (sb) => {
      const r = await sb.run([], { asNobody: true });
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /^test\.sh: installing 2 Debian package\(s\) the tests need \(with sudo -n\):\n/);
      assert.deepEqual(await sb.calls(), [
        "sudo -n true",
        "sudo -n apt-get update -qq",
        "apt-get update -qq (DEBIAN_FRONTEND=)",
        `sudo -n env DEBIAN_FRONTEND=noninteractive apt-get ${INSTALL_FLAGS} etcd-server etcd-client`,
        `apt-get ${INSTALL_FLAGS} etcd-server etcd-client ${NONINTERACTIVE}`,
      ]);
      assert.notEqual(await sb.deno(), null);
    }),
);

runnerTest(
  "a package apt-get did not bring stops the run with its name",
  () =>
    withSandbox(["etcd", "etcdctl"], {}, async (sb) => {
      await Deno.remove(`${sb.dir}/bin/apt-get`);
      await write(`${sb.dir}/bin/apt-get`, `#!/bin/bash\necho "apt-get $*" >> ${sb.dir}/calls\n`, 0o755);
      const r = await sb.run([]);
      assert.equal(r.code, 3, r.output);
      assert.match(r.output, /\ntest\.sh: still missing after apt-get install: etcd-server etcd-client /);
      assert.equal(await sb.deno(), null);
    }),
);

runnerTest(
  "nothing missing: no apt-get, no output, and Go is wanted only with E2E=1",
  () =>
    withSandbox(["go"], {}, async (sb) => {
      const plain = await sb.run([]);
      assert.equal(plain.code, 0, plain.output);
      assert.equal(plain.output, "");
      assert.deepEqual(await sb.calls(), []);
      const e2e = await sb.run([], { env: { E2E: "1" } });
      assert.equal(e2e.code, 0, e2e.output);
      assert.match(e2e.output, /\n {2}golang-go +builds etcd 3\.4\.23's own e2e suite/);
      assert.deepEqual(await sb.calls(), [
        "apt-get update -qq (DEBIAN_FRONTEND=)",
        `apt-get ${INSTALL_FLAGS} golang-go ${NONINTERACTIVE}`,
      ]);
    }),
);

runnerTest(
  "arguments: files replace tests/, the rest go to deno test, a leading -- is dropped",
  () =>
    withSandbox([], {}, async (sb) => {
      const argsOf = async (args: string[]) => {
        const r = await sb.run(args);
        assert.equal(r.code, 0, r.output);
        return (await sb.deno())?.args.slice(3); // after "test -A --no-check=remote"
      };
      assert.deepEqual(await argsOf(["--", "--filter", "wal"]), ["--filter", "wal", "tests/"]);
      assert.deepEqual(await argsOf(["tests/wal_test.ts", "--fail-fast"]), ["--fail-fast", "tests/wal_test.ts"]);
      // a flag's value stays a flag's value even when a file has that name
      assert.deepEqual(await argsOf(["--filter", "tests"]), ["--filter", "tests", "tests/"]);
      assert.deepEqual(await argsOf(["--filter=x", "tests", "--", "arg"]), ["--filter=x", "--", "arg", "tests"]);
    }),
);

runnerTest(
  "--quick: the files of test_quick.txt, no package check, deno may run nothing but deno",
  () =>
    withSandbox(["etcd"], {}, async (sb) => {
      const r = await sb.run(["--quick", "--", "--filter", "raft"]);
      assert.equal(r.code, 0, r.output);
      assert.deepEqual(await sb.calls(), [], "quick installs nothing");
      const deno = await sb.deno();
      assert.ok(deno);
      assert.equal(deno.raftSimSeconds, "5");
      const quick = (await Deno.readTextFile(`${repo}scripts/test_quick.txt`)).split("\n")
        .filter((l) => l !== "" && !l.startsWith("#"));
      const standIn = `${sb.dir}/bin/deno`;
      assert.deepEqual(deno.args, [
        "test",
        "--allow-read",
        "--allow-write",
        "--allow-net",
        "--allow-env",
        "--allow-sys",
        `--allow-run=deno,${standIn},${standIn}`,
        "--no-check=remote",
        "--parallel",
        "--filter",
        "raft",
        ...quick,
      ]);
    }),
);

Deno.test("scripts/test_quick.txt lists existing test files and no file that starts a server or a client program", async () => {
  const quick = (await Deno.readTextFile(`${repo}scripts/test_quick.txt`)).split("\n")
    .filter((l) => l !== "" && !l.startsWith("#"));
  assert.ok(quick.length > 0);
  for (const file of quick) {
    assert.match(file, /^tests\/[a-z0-9_]+_test\.ts$/);
    const text = await Deno.readTextFile(`${repo}${file}`);
    for (const outside of ["./lib/server.ts", "./lib/cluster.ts", "./lib/etcdctl.ts", "scripts/etcd", "python3"]) {
      assert.ok(!text.includes(outside), `${file} uses ${outside}: it is not a quick test`);
    }
  }
});

Deno.test("README's set-up section names every package of scripts/test_deps.txt", async () => {
  const packages = (await Deno.readTextFile(`${repo}scripts/test_deps.txt`)).split("\n")
    .map((l) => l.replace(/#.*/, "").trim().split(/\s+/)[0])
    .filter((p) => p !== "");
  assert.ok(packages.includes("etcd-server"), packages.join(" "));
  const readme = await Deno.readTextFile(`${repo}README.md`);
  const setUp = readme.slice(readme.indexOf("## Set-up on a fresh machine"));
  const section = setUp.slice(0, setUp.indexOf("\n## ", 1));
  const unnamed = packages.filter((p) => !section.includes(`\`${p}\``));
  assert.deepEqual(unnamed, [], "README's list of what `deno task test` installs lacks these");
});
