/**
 * The gateway's template engine as specifications: Go `text/template` constructs and output formats (what Go prints
 * for the same template and data), the slim-sprig functions and Easegress's extras, the errors Go gives, the template
 * data of a request context, and the four builder filters run directly on a context.
 */
import assert from "node:assert/strict";
import { Context, GwRequest, GwResponse } from "../server/gateway/context.ts";
import { HeaderList } from "../server/gateway/http1.ts";
import { templateData } from "../server/gateway/template/data.ts";
import { Template } from "../server/gateway/template/exec.ts";
import { FUNCS } from "../server/gateway/template/funcs.ts";
import { TemplateError } from "../server/gateway/template/parse.ts";
import { filterKind } from "../server/gateway/filters/registry.ts";
import type { FilterEnv } from "../server/gateway/filters/filter.ts";

const DATA = {
  a: { b: "x", n: 3, l: [1, 2, "z"], f: 1.5, t: true },
  m: { z: 1, a: 2 },
  nilv: null,
  s: "hello world",
  list: ["b", "a", "c"],
  json: '{"hello":"world","mega":"ease"}',
};

function render(src: string, data: unknown = DATA, left = "", right = ""): string {
  return new Template("t", src, FUNCS, left, right).execute(data);
}

/** Each [template, what Go's text/template + sprig prints]. */
function table(name: string, cases: [string, string][]): void {
  Deno.test(`template: ${name}`, () => {
    for (const [src, want] of cases) assert.equal(render(src), want, src);
  });
}

function throwsLike(src: string, re: RegExp, data: unknown = DATA): void {
  assert.throws(() => render(src, data), (e: unknown) => e instanceof TemplateError && re.test(e.message), src);
}

table("fields, missing keys and Go's printing of values", [
  ["{{.a.b}}", "x"],
  ["{{.missing}}", "<no value>"],
  ["{{.missing.deeper}}", "<no value>"],
  // an action prints a nil interface as <no value>; print (fmt.Sprint) as <nil>
  ["{{.nilv}} {{print .nilv}} {{.a.l}}", "<no value> <nil> [1 2 z]"],
  ["{{.a}}", "map[b:x f:1.5 l:[1 2 z] n:3 t:true]"],
  ["{{.m}}", "map[a:2 z:1]"],
  ["{{.list}}", "[b a c]"],
  ["{{.a.f}} {{.a.t}} {{.a.n}}", "1.5 true 3"],
  [
    "{{.}}",
    "map[a:map[b:x f:1.5 l:[1 2 z] n:3 t:true] json:" + DATA.json +
    " list:[b a c] m:map[a:2 z:1] nilv:<nil> s:hello world]",
  ],
  [
    "{{1.5}} {{0x10}} {{'a'}} {{-7}} {{1_000}} {{true}} {{\"q\\tx\"}} {{`raw\\n`}}",
    "1.5 16 97 -7 1000 true q\tx raw\\n",
  ],
]);

table("pipelines, parentheses, variables", [
  ['{{.a.b | upper | printf "%s-%d" 5}}', "%!s(int=5)-%!d(string=X)"],
  ['{{.a.b | printf "%s-%s" "y"}}', "y-x"],
  ['{{(dict "k" .a.b).k}}', "x"],
  ["{{$x := 1}}{{$x = 2}}{{$x}}", "2"],
  ["{{$x := .a}}{{$x.b}}{{$.s}}", "xhello world"],
  ["{{with $y := .a.b}}{{$y}}{{end}}", "x"],
  ["{{.a.l | len}}", "3"],
  ['{{"x" | eq "x"}}', "true"],
]);

table("if / else if / else, with, range, break and continue", [
  ["{{if eq .a.n 3}}three{{else if eq .a.n 4}}four{{else}}other{{end}}", "three"],
  ["{{if eq .a.n 4}}four{{else if eq .a.n 3}}three{{end}}", "three"],
  [
    "{{if .missing}}y{{else}}n{{end}} {{if .nilv}}y{{else}}n{{end}} {{if .list}}y{{end}} {{if 0}}y{{else}}n{{end}}",
    "n n y n",
  ],
  ["{{with .a}}{{.b}}{{end}}{{with .missing}}never{{else}}else{{end}}", "xelse"],
  ["{{range $k, $v := .m}}{{$k}}={{$v}};{{end}}", "a=2;z=1;"],
  ["{{range .m}}{{.}}{{end}}", "21"],
  ["{{range $i, $e := .list}}{{$i}}:{{$e}} {{end}}", "0:b 1:a 2:c "],
  ["{{range .none}}x{{else}}none{{end}}", "none"],
  ['{{range .list}}{{if eq . "a"}}{{continue}}{{end}}{{.}}{{end}}', "bc"],
  ['{{range .list}}{{if eq . "a"}}{{break}}{{end}}{{.}}{{end}}', "b"],
  ["{{range 3}}{{.}}{{end}}", "012"],
  ["{{range $i, $c := .list}}{{if $i}},{{end}}{{$c}}{{end}}", "b,a,c"],
]);

table("white space trimming, comments, templates", [
  ["a  {{- .a.b -}}  \n b", "axb"],
  ["a {{/* a comment */}} b", "a  b"],
  ["a {{- /* trimmed */ -}} b", "ab"],
  ['{{define "x"}}[{{.b}}]{{end}}{{template "x" .a}}', "[x]"],
  ['{{block "y" .a}}<{{.n}}>{{end}}', "<3>"],
]);

Deno.test("template: custom delimiters leave the default ones as text", () => {
  assert.equal(render("[[.a.b]] {{.a.b}}", DATA, "[[", "]]"), "x {{.a.b}}");
  assert.equal(render("<% .a.b -%>  y", DATA, "<%", "%>"), "xy");
});

table("builtins: and/or short-circuit, not, comparisons, len, index", [
  ['{{and 1 0}} {{or 0 "" "y"}} {{not 1}} {{and 1 2}} {{or 0 ""}}', "0 y false 2 "],
  ["{{or .a.b .missing.x}}", "x"],
  [
    '{{eq .a.n 3}} {{eq .a.n 1 2 3}} {{ne .a.b "y"}} {{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1 2}}',
    "true true true true true true false",
  ],
  ["{{eq .nilv nil}} {{eq .missing nil}}", "true true"],
  ['{{len .a.l}} {{len "héllo"}} {{len .m}}', "3 6 2"],
  ['{{index .a.l 2}} {{index .m "a"}} {{index .m "q"}} {{index . "a" "b"}}', "z 2 <no value> x"],
]);

table("builtins: print, printf, println, html, js, urlquery", [
  ['{{print 1 2 "a" 3}}|{{println 1 "b"}}', "1 2a3|1 b\n"],
  [
    '{{printf "%5.2f|%-4s|%03d|%q|%v|%x|%X|%t|%T|%%" 3.14159 "ab" 7 "q\\n" .a.l 255 "hi" true .m}}',
    ' 3.14|ab  |007|"q\\n"|[1 2 z]|ff|6869|true|map[string]interface {}|%',
  ],
  ['{{printf "%d"}} {{printf "%d" "s"}} {{printf "%s" 1 2}}', "%!d(MISSING) %!d(string=s) %!s(int=1)%!(EXTRA int=2)"],
  ['{{printf "%e %g %v" 1234.5 0.000001 1e21}}', "1.234500e+03 1e-06 1e+21"],
  [
    '{{html "<a href=\'x\'>&"}} {{js "a\'b<\\"="}} {{urlquery "a b&c/é"}}',
    "&lt;a href=&#39;x&#39;&gt;&amp; a\\'b\\u003C\\\"\\u003D a+b%26c%2F%C3%A9",
  ],
  ["{{html 1 2}}", "1 2"],
]);

table("sprig: strings", [
  ['{{upper .s}} {{lower "AB"}} {{title .s}} {{trim "  x  "}}', "HELLO WORLD ab Hello World x"],
  ['{{trimAll "$" "$x$"}} {{trimPrefix "he" .s}} {{trimSuffix "ld" .s}}', "x llo world hello wor"],
  [
    '{{replace "o" "0" .s}} {{contains "lo w" .s}} {{hasPrefix "he" .s}} {{hasSuffix "x" .s}}',
    "hell0 w0rld true true false",
  ],
  ['{{quote "a\\"b" 1}} {{squote "a"}} {{cat "a" 1 nil "b"}}', '"a\\"b" "1" \'a\' a 1 b'],
  ['{{indent 2 "a\\nb"}}|{{nindent 2 "a"}}', "  a\n  b|\n  a"],
  [
    '{{split "," "a,b"}} {{splitList "," "a,b"}} {{join "-" (list 1 "x")}} {{join "," .list}}',
    "map[_0:a _1:b] [a b] 1-x b,a,c",
  ],
  [
    '{{trunc 5 .s}} {{substr 0 4 .s}} {{repeat 3 "ab"}} {{toString 12}} {{.s | sha256sum | trunc 8}}',
    "hello hell ababab 12 b94d27b9",
  ],
  [
    '{{regexMatch "^h.*d$" .s}} {{regexReplaceAll "o(.)" .s "[${1}]"}} {{regexFind "w.r" .s}}',
    "true hell[ ]w[r]ld wor",
  ],
  ['{{b64enc "hello"}} {{b64dec "aGVsbG8="}} {{"x" | b64enc | b64dec}}', "aGVsbG8= hello x"],
  ['{{sortAlpha .list}} {{plural "one" "many" 2}}', "[a b c] many"],
]);

table("sprig: defaults, conversions, arithmetic", [
  ['{{default "d" .missing}} {{default "d" ""}} {{default "d" "v"}} {{.missing | default "p"}}', "d d v p"],
  ['{{empty ""}} {{empty .m}} {{empty 0}} {{empty .nilv}} {{empty "x"}}', "true false true true false"],
  ['{{coalesce .missing "" 0 "c"}} {{ternary "y" "n" false}}', "c n"],
  ['{{atoi "42"}} {{atoi "x"}} {{int "7"}} {{int 7.9}} {{float64 "2.5"}} {{int64 true}}', "42 0 7 7 2.5 1"],
  [
    "{{add 1 2 3}} {{sub 5 2}} {{mul 2 3 4}} {{div 7 2}} {{mod 7 2}} {{add1 1}} {{max 1 5 3}} {{min 4 2}}",
    "6 3 24 3 1 2 5 2",
  ],
  ['{{add "2" 1.9}}', "3"],
  ['{{addf 1.5 "2"}} {{subf 5 0.5}} {{mulf 2 "1.25"}} {{divf 1 4}} {{addf 1 2}}', "3.5 4.5 2.5 0.25 3"],
  ["{{ceil 1.2}} {{floor 1.8}} {{round 1.256 2}}", "2 1 1.26"],
]);

table("sprig: lists, dicts, JSON", [
  [
    '{{list 1 "a" .nilv}} {{first .list}} {{last .list}} {{rest .list}} {{initial .list}} {{reverse .list}}',
    "[1 a <nil>] b c [a c] [b a] [c a b]",
  ],
  [
    '{{append .list "d"}} {{prepend .list "0"}} {{has "a" .list}} {{without .list "a"}} {{uniq (list 1 1 2)}}',
    "[b a c d] [0 b a c] true [b c] [1 2]",
  ],
  ['{{concat .list (list 1)}} {{slice .list 1 2}} {{compact (list "" 1 0 "x")}}', "[b a c 1] [a] [1 x]"],
  [
    '{{$d := dict "k" "v" "n" 1}}{{$d.k}} {{get $d "n"}} {{get $d "none"}} {{hasKey $d "k"}} {{$_ := set $d "z" 2}}{{$d}}',
    "v 1  true map[k:v n:1 z:2]",
  ],
  [
    '{{pick .m "a"}} {{omit .m "a"}} {{keys (dict "a" 1) | sortAlpha}} {{dict "odd"}}',
    "map[a:2] map[z:1] [a] map[odd:]",
  ],
  [
    '{{toJson .m}} {{toJson (dict "x" "<y>&")}} {{toRawJson (dict "x" "<y>&")}} {{toJson .list}} {{toJson .missing}}',
    '{"a":2,"z":1} {"x":"\\u003cy\\u003e\\u0026"} {"x":"<y>&"} ["b","a","c"] null',
  ],
  ["{{toPrettyJson .m}}", '{\n  "a": 2,\n  "z": 1\n}'],
  ['{{(fromJson .json).mega}} {{fromJson "bad"}}', "ease <no value>"],
  ['{{dig "a" "b" "dflt" .}} {{dig "a" "q" "dflt" .}}', "x dflt"],
  [
    '{{typeOf .a.n}} {{typeOf .s}} {{typeOf .list}} {{kindOf .m}} {{kindIs "string" .s}}',
    "int string []interface {} map true",
  ],
]);

table("Easegress extras", [
  [
    '{{mergeObject (fromJson .json) (fromJson "{\\"hello\\":\\"new world\\"}") | toRawJson}}',
    '{"hello":"new world","mega":"ease"}',
  ],
  [
    '{{mergeObject (dict "a" (dict "x" 1 "y" 2)) (dict "a" (dict "y" 3) "b" 4) | toRawJson}}',
    '{"a":{"x":1,"y":3},"b":4}',
  ],
  ['{{jsonEscape "a\\"b\\n"}} {{urlQueryEscape "a b/c"}} {{urlQueryUnescape "a+b%2Fc"}}', 'a\\"b\\n a+b%2Fc a b/c'],
  ['{{host "example.com:8080"}} {{port "example.com:8080"}} {{host "[::1]:80"}}', "example.com 8080 ::1"],
  ['{{log "info" "hi"}}.', "."],
]);

Deno.test("template: date functions use Go layouts", () => {
  const d = new Date(Date.UTC(2024, 0, 2, 15, 4, 5));
  assert.equal(
    render('{{date "2006-01-02T15:04:05Z07:00 Mon Jan _2 03PM" .}}', d),
    "2024-01-02T15:04:05Z Tue Jan  2 03PM",
  );
  assert.equal(render("{{htmlDate .}} {{unixEpoch .}}", d), `2024-01-02 ${d.getTime() / 1000}`);
  assert.match(render('{{now | date "2006"}}'), /^\d{4}$/);
});

Deno.test("template: parse errors name the template and line, as Go's do", () => {
  const bad: [string, RegExp][] = [
    ["{{nope}}", /^template: t:1: function "nope" not defined$/],
    ["a\n{{if}}x{{end}}", /^template: t:2: missing value for if$/],
    ["{{end}}", /unexpected \{\{end\}\}/],
    ["{{if 1}}x", /unexpected EOF/],
    ["{{.a", /unclosed action/],
    ['{{"abc}}', /unterminated quoted string/],
    ["{{/* x", /unclosed comment/],
    ["{{break}}", /\{\{break\}\} outside \{\{range\}\}/],
    ["{{1 | 2}}", /non executable command in pipeline stage 2/],
    ["{{$u}}", /undefined variable "\$u"/],
    ["{{if 1}}{{$v := 1}}{{end}}{{$v}}", /undefined variable "\$v"/],
    ['{{$w := 1}}{{define "d"}}{{$w}}{{end}}', /undefined variable "\$w"/],
  ];
  for (const [src, re] of bad) {
    assert.throws(
      () => new Template("t", src, FUNCS),
      (e: unknown) => e instanceof TemplateError && re.test(e.message),
      src,
    );
  }
});

Deno.test("template: execution errors read like Go's", () => {
  throwsLike("{{.nilv.x}}", /^template: t:1: executing "t" at <\.nilv\.x>: nil pointer evaluating interface \{\}\.x$/);
  throwsLike("{{.a.b.c}}", /can't evaluate field c in type interface \{\}/);
  throwsLike("{{$u = 1}}", /undefined variable: \$u/);
  throwsLike('{{printf "%s" nil}}{{.req.Method.x}}', /can't evaluate field x in type string/, {
    req: templateData(context()).req,
  });
  throwsLike("{{upper 1}}", /at <upper>: wrong type for value; expected string; got int/);
  throwsLike("{{upper .missing}}", /invalid value; expected string/);
  throwsLike("{{upper}}", /wrong number of args for upper: want 1 got 0/);
  throwsLike('{{eq 1 "1"}}', /error calling eq: incompatible types for comparison/);
  throwsLike("{{index .list 5}}", /error calling index: index out of range: 5/);
  throwsLike("{{divf 1 0}}", /error calling divf: divisor cannot be zero/);
  throwsLike("{{div 1 0}}", /error calling div: runtime error: integer divide by zero/);
  throwsLike('{{panic "boom"}}', /error calling panic: boom/);
  throwsLike('{{fail "stop"}}', /error calling fail: stop/);
  throwsLike("{{. 1}}", /can't give argument to non-function \./);
  throwsLike("{{range .s}}{{end}}", /range can't iterate over hello world/);
  throwsLike('{{template "none"}}', /template "none" not defined/);
});

function context(method = "POST", target = "/api/x?q=1", body = '{"n":1}'): Context {
  const h = new HeaderList();
  h.add("Host", "gw.example:8080");
  h.add("content-type", "application/json");
  h.add("X-Multi", "a");
  h.add("x-multi", "b");
  h.add("Authorization", "Basic " + btoa("alice:secret"));
  const req = new GwRequest(method, target, "HTTP/1.1", h, "10.0.0.9", "10.0.0.9:5555", "http");
  req.body = new TextEncoder().encode(body);
  const ctx = new Context(req);
  ctx.data.PIPELINE = { env: "test" };
  return ctx;
}

const ENV: FilterEnv = { resilience: new Map() as never, pipeline: "p", log: () => {}, store: null };

function filter(spec: Record<string, unknown>) {
  const kind = filterKind(String(spec.kind))!;
  return kind.create({ name: "f", ...spec } as never, ENV);
}

Deno.test("template data: .req and .resp expose the Go http.Request / http.Response fields and body methods", () => {
  const ctx = context();
  const resp = new GwResponse(201, new HeaderList(), new TextEncoder().encode("hello: yaml\nn: [1, 2]"));
  resp.headers.add("content-type", "text/plain");
  ctx.response = resp;
  ctx.namespace = "ns1";
  const t = new Template(
    "d",
    "{{.req.Method}} {{.req.URL.Path}} {{.req.URL.RawQuery}} {{.req.Host}} {{.req.RequestURI}} {{.req.RemoteAddr}} " +
      '{{.req.Proto}} {{index .req.Header "X-Multi"}} {{header .req.Header "content-type"}} {{.req.Body}} ' +
      "{{.req.JSONBody.n}} {{username .req}} {{.resp.StatusCode}} {{.resp.Status}} {{.resp.YAMLBody.hello}} " +
      "{{.resp.YAMLBody.n}} {{.responses.DEFAULT.Header}} {{.data.PIPELINE.env}} {{.namespace}} {{.requests.ns1}}",
    FUNCS,
  );
  assert.equal(
    t.execute(templateData(ctx)),
    'POST /api/x q=1 gw.example:8080 /api/x?q=1 10.0.0.9:5555 HTTP/1.1 [a b] application/json {"n":1} 1 alice ' +
      "201 201 Created yaml [1 2] map[Content-Type:[text/plain]] test ns1 <no value>",
  );
  assert.throws(() => t.execute({ req: null }), /nil pointer evaluating interface \{\}\.Method/);
  assert.throws(
    () => new Template("d", "{{.req.Nope}}", FUNCS).execute(templateData(ctx)),
    /can't evaluate field Nope in type \*builder\.request/,
  );
});

Deno.test("template data: JSONBody numbers are json.Number (their text, a string kind), as Easegress decodes them", () => {
  const data = templateData(context("POST", "/", '{"n":1.50,"big":12345678901234567890,"i":7}'));
  const run = (src: string) => new Template("j", src, FUNCS).execute(data);
  assert.equal(
    run("{{.req.JSONBody.n}} {{.req.JSONBody.big}} {{.req.JSONBody}}"),
    "1.50 12345678901234567890 map[big:12345678901234567890 i:7 n:1.50]",
  );
  assert.equal(run("{{.req.JSONBody | toRawJson}}"), '{"big":12345678901234567890,"i":7,"n":1.50}');
  assert.equal(
    run(
      '{{eq .req.JSONBody.n "1.50"}} {{addf .req.JSONBody.n 1}} {{add .req.JSONBody.i 1}} {{typeOf .req.JSONBody.i}}',
    ),
    "true 2.5 8 json.Number",
  );
  assert.equal(run('{{printf "%v|%s|%d" .req.JSONBody.i .req.JSONBody.i .req.JSONBody.i}}'), "7|7|%!d(json.Number=7)");
  assert.throws(() => run("{{eq .req.JSONBody.i 7}}"), /incompatible types for comparison/);
  assert.throws(() => run("{{upper .req.JSONBody.i}}"), /wrong type for value; expected string; got json.Number/);
});

Deno.test("RequestBuilder: sourceNamespace shares the request; template renders method, url, headers, body, formData", async () => {
  const ctx = context();
  ctx.namespace = "copy";
  assert.equal(await filter({ kind: "RequestBuilder", sourceNamespace: "DEFAULT" }).handle(ctx), "");
  assert.equal(ctx.requestIn("copy"), ctx.requestIn("DEFAULT"));

  ctx.namespace = "built";
  const built = filter({
    kind: "RequestBuilder",
    template: "method: {{.req.Method | lower}}\nurl: http://up.example/v2{{.req.URL.Path}}?id={{.req.JSONBody.n}}\n" +
      "headers:\n  X-From: [{{.req.Host}}]\n  X-Two: [a, b]\nbody: '{{.req.Body}}'\n",
  });
  assert.equal(await built.handle(ctx), "");
  const r = ctx.requestIn("built")!;
  assert.equal(r.method, "POST");
  assert.equal(r.path, "/v2/api/x");
  assert.equal(r.query, "id=1");
  assert.equal(r.host, "up.example");
  assert.deepStrictEqual(r.headers.getAll("x-two"), ["a", "b"]);
  assert.equal(r.headers.get("x-from"), "gw.example:8080");
  assert.equal(new TextDecoder().decode(r.body), '{"n":1}');
  assert.equal(r.realIp, "");

  ctx.namespace = "form";
  const form = filter({
    kind: "RequestBuilder",
    template: "url: /upload\nformData:\n  f: {value: content, fileName: a.txt}\n",
  });
  assert.equal(await form.handle(ctx), "");
  const fr = ctx.requestIn("form")!;
  assert.equal(fr.method, "GET");
  const boundary = /boundary=(\w+)/.exec(fr.headers.get("content-type"))![1];
  const text = new TextDecoder().decode(fr.body);
  assert.match(text, new RegExp(`^--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="a.txt"`));
  assert.ok(text.includes("\r\n\r\ncontent\r\n") && text.endsWith(`--${boundary}--\r\n`));

  // a bad method, a failing template and YAML that does not parse give buildErr
  for (const template of ["method: BREW", '{{fail "no"}}', "url: [unclosed"]) {
    assert.equal(await filter({ kind: "RequestBuilder", template }).handle(ctx), "buildErr", template);
  }
  assert.throws(() => filter({ kind: "RequestBuilder" }), /exactly one of sourceNamespace and template/);
  assert.throws(() => filter({ kind: "RequestBuilder", template: "{{nope}}" }), /function "nope" not defined/);
});

Deno.test("ResponseBuilder: statusCode 0 → 200, 200..599 only, headers and body; sourceNamespace copies", async () => {
  const ctx = context();
  ctx.namespace = "up";
  ctx.response = new GwResponse(203, new HeaderList(), new TextEncoder().encode("up-body"));
  ctx.namespace = "DEFAULT";
  assert.equal(await filter({ kind: "ResponseBuilder", sourceNamespace: "up" }).handle(ctx), "");
  assert.equal(ctx.response!.status, 203);
  assert.notEqual(ctx.response, ctx.responseIn("up"));

  const b = filter({
    kind: "ResponseBuilder",
    template: "headers: {X-N: ['{{.req.JSONBody.n}}']}\nbody: got {{.responses.up.Body}}",
  });
  assert.equal(await b.handle(ctx), "");
  assert.equal(ctx.response!.status, 200);
  assert.equal(ctx.response!.headers.get("x-n"), "1");
  assert.equal(new TextDecoder().decode(ctx.response!.body), "got up-body");
  for (const code of [199, 600]) {
    assert.equal(await filter({ kind: "ResponseBuilder", template: `statusCode: ${code}` }).handle(ctx), "buildErr");
  }
});

Deno.test("DataBuilder stores the rendered YAML value; ResultBuilder maps text to results (result9 → unknown)", async () => {
  const ctx = context();
  const d = filter({
    kind: "DataBuilder",
    dataKey: "info",
    template: "name: {{.req.Method}}\nitems: [{{.req.JSONBody.n}}, 2]",
  });
  assert.equal(await d.handle(ctx), "");
  assert.deepStrictEqual(ctx.data.info, { name: "POST", items: [1, 2] });
  assert.throws(() => filter({ kind: "DataBuilder", template: "x" }), /dataKey/);

  const result = async (template: string) => await filter({ kind: "ResultBuilder", template }).handle(ctx);
  assert.equal(await result('{{if eq .data.info.name "POST"}}result1{{end}}'), "result1");
  assert.equal(await result("{{if false}}result1{{end}}"), "");
  assert.equal(await result("result0\n"), "result0");
  assert.equal(await result("result8"), "result8");
  assert.equal(await result("result9"), "unknown");
  assert.equal(await result("elsewhere"), "unknown");
  assert.equal(await result("{{.req.Nope}}"), "buildErr");
  assert.ok(filterKind("ResultBuilder")!.results.includes("result9"));
});

Deno.test("RequestAdaptor and ResponseAdaptor templates override their static fields", async () => {
  const ctx = context();
  const ra = filter({
    kind: "RequestAdaptor",
    header: { set: { "X-Static": "s" } },
    method: "PUT",
    template: 'method: {{.req.JSONBody.n | add 1 | printf "%d" | eq "2" | ternary "PATCH" "GET"}}\n' +
      "path: {addPrefix: /pre}\nheader: {set: {X-Tpl: '{{.req.Method}}'}}",
  });
  assert.equal(await ra.handle(ctx), "");
  const req = ctx.requestIn("DEFAULT")!;
  assert.equal(req.method, "PATCH");
  assert.equal(req.path, "/pre/api/x");
  assert.equal(req.headers.get("x-tpl"), "POST");
  assert.equal(req.headers.get("x-static"), "");

  ctx.response = new GwResponse(200, new HeaderList(), new TextEncoder().encode("old"));
  const rsa = filter({ kind: "ResponseAdaptor", template: "body: 'new {{.resp.Body}}'" });
  assert.equal(await rsa.handle(ctx), "");
  assert.equal(new TextDecoder().decode(ctx.response!.body), "new old");
  assert.equal(await filter({ kind: "ResponseAdaptor", template: "{{panic 1}}" }).handle(ctx), "buildErr");
});
