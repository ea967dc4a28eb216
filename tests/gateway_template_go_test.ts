/**
 * The template engine against Go's own text/template (the `go` toolchain on the machine builds
 * tests/fixtures/gotemplate.go, which renders each template on the same data): outputs must be identical, and errors
 * must carry the same line and message (Go's column and `at <…>` context are not reproduced). Functions here are Go's
 * builtins only (slim-sprig is not available offline). Known differences, not in the corpus: JS numbers do not keep
 * Go's int/float64 distinction (Go prints the float 1e6 as 1e+06 and refuses to compare an int with a float), and
 * `range` over an int follows Go 1.22 (this Go, 1.19, refuses it). Ignored when no `go` is installed.
 */
import assert from "node:assert/strict";
import { Template } from "../server/gateway/template/exec.ts";
import { FUNCS } from "../server/gateway/template/funcs.ts";

const DATA = {
  a: { b: "x", n: 3, l: [1, 2, "z"], f: 1.5, t: true },
  m: { z: 1, a: 2 },
  nilv: null,
  s: "hello world",
  list: ["b", "a", "c"],
  json: '{"hello":"world","mega":"ease"}',
};

// deno-fmt-ignore
const srcs: string[] = [
  "{{.a.b}}", "{{.missing}}", "{{.missing.deeper}}", "{{.nilv}}", "{{.a}}", "{{.m}}", "{{.list}}", "{{.a.f}} {{.a.t}} {{.a.n}}", "{{.}}",
  "{{1.5}} {{0x10}} {{'a'}} {{-7}} {{1_000}} {{true}} {{\"q\\tx\"}} {{`raw\\n`}}", "{{1.0}} {{2.50}}",
  '{{.a.b | printf "%s-%d" 5}}', '{{.a.b | printf "%s-%s" "y"}}', "{{$x := 1}}{{$x = 2}}{{$x}}", "{{$x := .a}}{{$x.b}}{{$.s}}",
  "{{with $y := .a.b}}{{$y}}{{end}}", "{{.a.l | len}}", '{{"x" | eq "x"}}',
  "{{if eq .a.n 3}}three{{else if eq .a.n 4}}four{{else}}other{{end}}", "{{if eq .a.n 4}}four{{else if eq .a.n 3}}three{{end}}",
  "{{if .missing}}y{{else}}n{{end}} {{if .nilv}}y{{else}}n{{end}} {{if .list}}y{{end}} {{if 0}}y{{else}}n{{end}}",
  "{{with .a}}{{.b}}{{end}}{{with .missing}}never{{else}}else{{end}}", "{{range $k, $v := .m}}{{$k}}={{$v}};{{end}}", "{{range .m}}{{.}}{{end}}",
  "{{range $i, $e := .list}}{{$i}}:{{$e}} {{end}}", "{{range .none}}x{{else}}none{{end}}",
  "{{range .list}}{{if eq . \"a\"}}{{continue}}{{end}}{{.}}{{end}}", "{{range .list}}{{if eq . \"a\"}}{{break}}{{end}}{{.}}{{end}}",
  "{{range $i, $c := .list}}{{if $i}},{{end}}{{$c}}{{end}}",
  "a  {{- .a.b -}}  \n b", "a {{/* a comment */}} b", "a {{- /* trimmed */ -}} b", '{{define "x"}}[{{.b}}]{{end}}{{template "x" .a}}', '{{block "y" .a}}<{{.n}}>{{end}}',
  '{{and 1 0}} {{or 0 "" "y"}} {{not 1}} {{and 1 2}} {{or 0 ""}}', "{{or .a.b .missing.x}}",
  "{{eq .a.n 3}} {{eq .a.n 1 2 3}} {{ne .a.b \"y\"}} {{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1 2}}",
  "{{eq .nilv nil}}", "{{eq .missing nil}}", "{{eq .nilv .nilv}}", '{{eq .nilv "x"}}', '{{eq .missing "x"}}', '{{eq 1 "1"}}', '{{lt true false}}',
  '{{len "héllo"}} {{len .m}}', '{{index .a.l 2}} {{index .m "a"}} {{index .m "q"}} {{index . "a" "b"}}',
  '{{print 1 2 "a" 3}}|{{println 1 "b"}}', '{{printf "%5.2f|%-4s|%03d|%q|%v|%x|%X|%t|%T|%%" 3.14159 "ab" 7 "q\\n" .a.l 255 "hi" true .m}}',
  '{{printf "%d"}} {{printf "%d" "s"}} {{printf "%s" 1 2}}', '{{printf "%e %g %v" 1234.5 0.000001 1e21}}', '{{printf "%v %v" .nilv .missing}}',
  "{{html \"<a href='x'>&\"}} {{js \"a'b<\\\"=\"}} {{urlquery \"a b&c/é\"}}", "{{html 1 2}}", "{{print .missing}} {{print .nilv}}",
  "{{.nilv.x}}", "{{.a.b.c}}", "{{index .list 5}}", "{{. 1}}", "{{range .s}}{{end}}", '{{template "none"}}', "{{len .nilv}}", "{{len 3}}",
  "{{nope}}", "a\n{{if}}x{{end}}", "{{end}}", "{{if 1}}x", "{{.a", '{{"abc}}', "{{/* x", "{{break}}", "{{1 | 2}}", "{{$u = 1}}", "{{$u}}",
  "{{if 1}}{{$v := 1}}{{end}}{{$v}}", '{{$w := 1}}{{define "d"}}{{$w}}{{end}}', "{{not .missing}} {{and .missing 1}}",
  "{{.a.l}} {{.a.n | print}} {{printf \"%v\" .a}}", "{{$}}", "{{if and .a (eq .a.b \"x\")}}ok{{end}}", "{{(index .a.l 0)}}",
  "{{with .a}}{{$.s}}{{end}}", "{{range $i, $e := .list}}{{$i}}{{else}}e{{end}}", "{{print nil}}", "{{printf \"%s\" nil}}",
  "{{range .list}}{{.x}}{{end}}", "{{.a.b 1}}", "{{with $x := 0}}a{{else}}b{{end}}", "{{- 3 -}}", "x{{ 3 -}} \n y",
  "{{printf \"%08.3f|%+d|%x|%c|%-5d|\" 3.14159 5 \"hi\" 65 42}}", "{{index \"abc\" 1}}", "{{slice .list 1 2}}",
];

function hasGo(): boolean {
  try {
    return new Deno.Command("go", { args: ["version"], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

/** `template: t:LINE[:COL]: [executing "t" [at <…>]: ]MESSAGE` → `LINE: MESSAGE` */
function normalize(out: string): string {
  const m = /^ERR template: t:(\d+)(?::\d+)?: (?:executing "t"(?: at <.*?>)?: )?(.*)$/s.exec(out);
  return m ? `ERR ${m[1]}: ${m[2]}` : out;
}

Deno.test({
  name: "template: same output and errors as Go's text/template on a corpus of builtin-only templates",
  ignore: !hasGo(),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.copyFile(new URL("./fixtures/gotemplate.go", import.meta.url), `${dir}/main.go`);
      await Deno.writeTextFile(`${dir}/go.mod`, "module gotemplate\n\ngo 1.19\n");
      const env = { GOCACHE: `${dir}/cache`, GOPATH: `${dir}/gopath`, GOPROXY: "off", GOFLAGS: "-mod=mod", HOME: dir };
      const build = await new Deno.Command("go", { args: ["build", "-o", "gotemplate", "."], cwd: dir, env }).output();
      assert.ok(build.success, new TextDecoder().decode(build.stderr));
      const p = new Deno.Command(`${dir}/gotemplate`, { stdin: "piped", stdout: "piped" }).spawn();
      const w = p.stdin.getWriter();
      await w.write(new TextEncoder().encode(JSON.stringify(srcs)));
      await w.close();
      const go: string[] = JSON.parse(new TextDecoder().decode((await p.output()).stdout));
      const ours = srcs.map((s) => {
        try {
          return new Template("t", s, FUNCS).execute(DATA);
        } catch (e) {
          return "ERR " + (e as Error).message;
        }
      });
      const diffs = srcs.flatMap((s, i) =>
        normalize(ours[i]) === normalize(go[i]) ? [] : [`${s}\n  go:   ${go[i]}\n  ours: ${ours[i]}`]
      );
      assert.deepStrictEqual(diffs, []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
