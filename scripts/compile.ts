/**
 * `deno task compile`: builds the single executable for every supported platform into dist/.
 * `deno compile` downloads the Deno runtime for each target, so this needs internet access; where that is not
 * available, `deno task bundle-check` (run by the tests) proves the program is self-contained instead.
 */
const targets = [
  ["x86_64-unknown-linux-gnu", "easegress-server-linux-amd64"],
  ["aarch64-unknown-linux-gnu", "easegress-server-linux-arm64"],
  ["x86_64-apple-darwin", "easegress-server-darwin-amd64"],
  ["aarch64-apple-darwin", "easegress-server-darwin-arm64"],
  ["x86_64-pc-windows-msvc", "easegress-server-windows-amd64.exe"],
] as const;

const only = Deno.args[0];
let failed = 0;
for (const [target, name] of targets) {
  if (only && !target.includes(only)) continue;
  const args = [
    "compile",
    "-A",
    "--no-check",
    // the V8 flags of `deno task start` (deno.json): those of scripts/etcd (explained there: a full collection once
    // the old generation doubled, TurboFan after 600 calls) with an 8 MiB semi-space, which the gateway's tail needs
    // (server/gateway/README.md, "GC and the tail")
    "--v8-flags=--max-semi-space-size=8,--heap-growing-percent=100,--invocation-count-for-turbofan=600",
    "--target",
    target,
    "--output",
    `dist/${name}`,
    "mod.ts",
  ];
  console.log(`deno ${args.join(" ")}`);
  const { code } = await new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" }).output();
  if (code !== 0) {
    console.error(`compile for ${target} failed (exit ${code})`);
    failed++;
  }
}
Deno.exit(failed === 0 ? 0 : 1);
