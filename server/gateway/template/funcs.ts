/**
 * The functions a template can call, as Easegress registers them: Go's builtins (and/or are in exec.ts), the
 * slim-sprig map, and Easegress's extras (addf…divf, log, mergeObject, jsonEscape, urlQueryEscape/Unescape, host,
 * port, header, username, panic). Parameter kinds follow the Go signatures so that wrong types fail as in Go.
 */
import { createHash } from "node:crypto";
import type { FuncMap, GoFunc } from "./exec.ts";
import { truth } from "./exec.ts";
import {
  formatValue,
  goJson,
  goKind,
  goQuote,
  goType,
  isMap,
  isStruct,
  JsonNumber,
  sprint,
  sprintf,
  sprintln,
} from "./gofmt.ts";

type Obj = Record<string, unknown>;

const f = (sig: string, fn: (...a: never[]) => unknown): GoFunc => ({ sig, fn });

/** Go's evalArgs for print-like builtins: one string as is, otherwise fmt.Sprint. */
function argsText(args: unknown[]): string {
  return args.length === 1 && typeof args[0] === "string" ? args[0] : sprint(args);
}

/** sprig strval: strings as is, []byte as text, everything else %v. */
export function strval(v: unknown): string {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return new TextDecoder().decode(v);
  if (v instanceof Error) return v.message;
  return formatValue(v, false);
}

/** A json.Number as the number it writes, other values as they are. */
function numeric(v: unknown): unknown {
  return v instanceof JsonNumber ? Number(v.text) : v;
}

/** cast.ToInt64: numbers truncated, numeric strings parsed, bools 0/1, anything else 0. */
export function toInt(v: unknown): number {
  if (v instanceof JsonNumber) return /^-?\d+$/.test(v.text) ? Number(v.text) : 0;
  if (typeof v === "number") return Number.isFinite(v) ? Math.trunc(v) : 0;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "string") {
    const s = v.trim();
    if (/^[+-]?\d+$/.test(s)) return Number(s);
    if (/^[+-]?0[xX][0-9a-fA-F]+$/.test(s)) return parseInt(s, 16);
    return 0;
  }
  return 0;
}

/** cast.ToFloat64: numbers, numeric strings, bools 0/1, anything else 0. */
export function toFloat(v: unknown): number {
  v = numeric(v);
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "string") {
    const n = Number(v.trim());
    return v.trim() !== "" && Number.isFinite(n) ? n : 0;
  }
  return 0;
}

/** Easegress's float arithmetic operand: a number or a numeric string, else an error. */
function floatOperand(v: unknown): number {
  v = numeric(v);
  if (typeof v === "number") return v;
  if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
  throw new Error(`unsupported type ${goType(v)}`);
}

/** sprig empty: nil, zero numbers, false, empty strings, slices and maps. */
export function empty(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (isStruct(v) || v instanceof Date) return false;
  return !truth(v);
}

function mapKeys(m: unknown): string[] {
  if (m instanceof Map) return [...m.keys()].map(String);
  return isMap(m) ? Object.keys(m) : [];
}

function asList(v: unknown, fn: string): unknown[] {
  if (Array.isArray(v)) return v;
  if (v instanceof Uint8Array) return Array.from(v);
  throw new Error(`Cannot ${fn} on type ${goType(v)}`);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isMap(a) && isMap(b)) {
    const ka = mapKeys(a), kb = mapKeys(b);
    const get = (m: unknown, k: string) => (m instanceof Map ? m.get(k) : (m as Obj)[k]);
    return ka.length === kb.length && ka.every((k) => kb.includes(k) && deepEqual(get(a, k), get(b, k)));
  }
  return false;
}

/** Go's basic-kind comparison for eq/ne/lt/…: numbers with numbers, strings with strings, bools with bools. */
function basicKind(v: unknown): string {
  if (typeof v === "number") return "number";
  if (typeof v === "string" || v instanceof JsonNumber) return "string";
  if (typeof v === "boolean") return "bool";
  if (v === null || v === undefined) return "nil";
  return "complex";
}

/** A string-kind value's text (json.Number included). */
function basicValue(v: unknown): unknown {
  return v instanceof JsonNumber ? v.text : v;
}

function eq(a: unknown, ...rest: unknown[]): boolean {
  if (rest.length === 0) throw new Error("missing argument for comparison");
  const ka = basicKind(a);
  a = basicValue(a);
  for (let b of rest) {
    const kb = basicKind(b);
    if (ka === "nil" || kb === "nil") {
      // a nil operand compares unequal to anything but nil, without an error
      if (ka === kb) return true;
      continue;
    }
    if (ka === "complex" || kb === "complex") throw new Error("non-comparable type");
    if (ka !== kb) throw new Error("incompatible types for comparison");
    b = basicValue(b);
    if (a === b) return true;
  }
  return false;
}

function lt(a: unknown, b: unknown): boolean {
  const ka = basicKind(a), kb = basicKind(b);
  if (ka === "nil" || kb === "nil" || ka === "complex" || kb === "complex" || ka === "bool" || kb === "bool") {
    throw new Error("invalid type for comparison");
  }
  if (ka !== kb) throw new Error("incompatible types for comparison");
  return (basicValue(a) as number) < (basicValue(b) as number);
}

function index(item: unknown, ...keys: unknown[]): unknown {
  let v = item;
  for (const k of keys) {
    if (v === null || v === undefined) throw new Error("index of untyped nil");
    if (Array.isArray(v) || v instanceof Uint8Array || typeof v === "string") {
      if (typeof k !== "number" || !Number.isInteger(k)) {
        throw new Error(`cannot index slice/array with type ${goType(k)}`);
      }
      const len = typeof v === "string" ? new TextEncoder().encode(v).length : v.length;
      if (k < 0 || k >= len) throw new Error(`index out of range: ${k}`);
      v = typeof v === "string" ? new TextEncoder().encode(v)[k] : v[k];
    } else if (v instanceof Map) v = v.has(k) ? v.get(k) : null;
    else if (isMap(v)) {
      if (typeof k !== "string") throw new Error(`value has type ${goType(k)}; should be string`);
      v = Object.hasOwn(v, k) ? (v as Obj)[k] : null;
    } else throw new Error(`can't index item of type ${goType(v)}`);
  }
  return v;
}

function len(v: unknown): number {
  if (v instanceof JsonNumber) return v.text.length;
  if (typeof v === "string") return new TextEncoder().encode(v).length;
  if (Array.isArray(v) || v instanceof Uint8Array) return v.length;
  if (isMap(v)) return mapKeys(v).length;
  throw new Error(`len of ${v === null || v === undefined ? "nil pointer" : "type " + goType(v)}`);
}

/** template.HTMLEscapeString */
export function htmlEscape(s: string): string {
  return s.replace(
    /[<>&'"\0]/g,
    (c) =>
      c === "<"
        ? "&lt;"
        : c === ">"
        ? "&gt;"
        : c === "&"
        ? "&amp;"
        : c === "'"
        ? "&#39;"
        : c === '"'
        ? "&#34;"
        : "\uFFFD",
  );
}

/** template.JSEscapeString */
export function jsEscape(s: string): string {
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === "\\") out += "\\\\";
    else if (ch === "'") out += "\\'";
    else if (ch === '"') out += '\\"';
    else if (ch === "<") out += "\\u003C";
    else if (ch === ">") out += "\\u003E";
    else if (ch === "&") out += "\\u0026";
    else if (ch === "=") out += "\\u003D";
    else if (c < 0x20) out += "\\u" + c.toString(16).toUpperCase().padStart(4, "0");
    else out += ch;
  }
  return out;
}

/** url.QueryEscape */
export function queryEscape(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase())
    .replace(/%20/g, "+").replace(/~/g, "%7E");
}

/** url.QueryUnescape (an error on a bad escape). */
function queryUnescape(s: string): string {
  if (/%(?![0-9a-fA-F]{2})/.test(s)) {
    const m = /%.{0,2}/.exec(s.slice(s.search(/%(?![0-9a-fA-F]{2})/)))![0];
    throw new Error(`invalid URL escape ${goQuote(m)}`);
  }
  return decodeURIComponent(s.replace(/\+/g, " "));
}

/** strings.Title: the first letter of each word upper-cased. */
function title(s: string): string {
  return s.replace(/(^|[^\p{L}\p{N}_'])(\p{L})/gu, (_m, a: string, b: string) => a + b.toUpperCase());
}

/** net.SplitHostPort */
function splitHostPort(hp: string): [string, string] {
  if (hp.startsWith("[")) {
    const m = /^\[([^\]]*)\]:(.*)$/.exec(hp);
    if (!m) throw new Error(`address ${hp}: missing port in address`);
    return [m[1], m[2]];
  }
  const i = hp.lastIndexOf(":");
  if (i < 0) throw new Error(`address ${hp}: missing port in address`);
  if (hp.indexOf(":") !== i) throw new Error(`address ${hp}: too many colons in address`);
  return [hp.slice(0, i), hp.slice(i + 1)];
}

/** mergeObject: deep merge of maps, later values win (maps merged key by key, anything else replaced). */
export function mergeObjects(objs: unknown[]): Obj {
  const out: Obj = {};
  const mergeInto = (dst: Obj, src: unknown) => {
    if (!isMap(src)) return;
    const entries = src instanceof Map ? [...src.entries()] : Object.entries(src);
    for (const [k, v] of entries) {
      const key = String(k);
      if (isMap(v) && isMap(dst[key])) {
        const nested: Obj = {};
        mergeInto(nested, dst[key]);
        mergeInto(nested, v);
        dst[key] = nested;
      } else if (isMap(v)) {
        const nested: Obj = {};
        mergeInto(nested, v);
        dst[key] = nested;
      } else dst[key] = v;
    }
  };
  for (const o of objs) mergeInto(out, o);
  return out;
}

/** Go time layout formatting (2006-01-02 15:04:05 …) in UTC. */
export function goDate(layout: string, d: Date): string {
  const p2 = (n: number) => String(n).padStart(2, "0");
  const months = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
  ];
  const days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
  const h = d.getUTCHours();
  const table: [string, () => string][] = [
    ["January", () => months[d.getUTCMonth()]],
    ["Jan", () => months[d.getUTCMonth()].slice(0, 3)],
    ["Monday", () => days[d.getUTCDay()]],
    ["Mon", () => days[d.getUTCDay()].slice(0, 3)],
    ["MST", () => "UTC"],
    ["2006", () => String(d.getUTCFullYear())],
    ["Z07:00", () => "Z"],
    ["-07:00", () => "+00:00"],
    ["-0700", () => "+0000"],
    [".000000000", () => "." + String(d.getUTCMilliseconds()).padStart(3, "0") + "000000"],
    [".000000", () => "." + String(d.getUTCMilliseconds()).padStart(3, "0") + "000"],
    [".000", () => "." + String(d.getUTCMilliseconds()).padStart(3, "0")],
    ["01", () => p2(d.getUTCMonth() + 1)],
    ["02", () => p2(d.getUTCDate())],
    ["15", () => p2(h)],
    ["03", () => p2(h % 12 === 0 ? 12 : h % 12)],
    ["04", () => p2(d.getUTCMinutes())],
    ["05", () => p2(d.getUTCSeconds())],
    ["06", () => p2(d.getUTCFullYear() % 100)],
    ["PM", () => (h >= 12 ? "PM" : "AM")],
    ["pm", () => (h >= 12 ? "pm" : "am")],
    ["_2", () => String(d.getUTCDate()).padStart(2, " ")],
    ["1", () => String(d.getUTCMonth() + 1)],
    ["2", () => String(d.getUTCDate())],
    ["3", () => String(h % 12 === 0 ? 12 : h % 12)],
    ["4", () => String(d.getUTCMinutes())],
    ["5", () => String(d.getUTCSeconds())],
  ];
  let out = "";
  let i = 0;
  outer: while (i < layout.length) {
    for (const [k, fn] of table) {
      if (layout.startsWith(k, i)) {
        out += fn();
        i += k.length;
        continue outer;
      }
    }
    out += layout[i++];
  }
  return out;
}

function toDate(v: unknown): Date {
  if (v instanceof Date) return v;
  if (typeof v === "number") return new Date(v * 1000);
  return new Date();
}

function regexp(re: string): RegExp {
  // RE2 and JS regexps agree on the common syntax; (?P<name>) is RE2's named group
  return new RegExp(re.replace(/\(\?P</g, "(?<"), "g");
}

/** Go's regexp.ReplaceAllString expansion: $1, ${1}, ${name}. */
function goReplacement(repl: string): string {
  return repl.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a?: string, b?: string) => {
    const n = a ?? b!;
    return /^\d+$/.test(n) ? `$${n}` : `$<${n}>`;
  });
}

function sha(alg: string, s: string): string {
  return createHash(alg).update(s).digest("hex");
}

function b64dec(s: string): string {
  try {
    const bin = atob(s);
    return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
  } catch {
    return "illegal base64 data at input byte 0";
  }
}

function b64enc(s: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(s)));
}

function dict(...kv: unknown[]): Obj {
  const d: Obj = {};
  for (let i = 0; i < kv.length; i += 2) d[strval(kv[i])] = i + 1 < kv.length ? kv[i + 1] : "";
  return d;
}

function mustMap(d: unknown): Obj {
  if (d === null) return {};
  return d as Obj;
}

function fromJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
}

function mustJson(v: unknown, html: boolean, indent = ""): string {
  return goJson(v, html, indent);
}

function safeJson(v: unknown, html: boolean, indent = ""): string {
  try {
    return goJson(v, html, indent);
  } catch {
    return "";
  }
}

function until(start: number, stop: number, step: number): number[] {
  const out: number[] = [];
  if (step === 0 || (stop - start) / step > 1e6) return out;
  if (step > 0) { for (let i = start; i < stop; i += step) out.push(i); }
  else for (let i = start; i > stop; i += step) out.push(i);
  return out;
}

/** The functions available to every gateway template. */
export const FUNCS: FuncMap = {
  // Go builtins (and / or are evaluated lazily by exec.ts; listed here for the parser)
  and: f("a*", () => null),
  or: f("a*", () => null),
  not: f("a", (v: unknown) => !truth(v)),
  len: f("a", len),
  index: f("aa*", index),
  print: f("a*", (...a: unknown[]) => sprint(a)),
  printf: f("sa*", (fmt: string, ...a: unknown[]) => sprintf(fmt, a)),
  println: f("a*", (...a: unknown[]) => sprintln(a)),
  html: f("a*", (...a: unknown[]) => htmlEscape(argsText(a))),
  js: f("a*", (...a: unknown[]) => jsEscape(argsText(a))),
  urlquery: f("a*", (...a: unknown[]) => queryEscape(argsText(a))),
  eq: f("aa*", eq),
  ne: f("aa", (a: unknown, b: unknown) => !eq(a, b)),
  lt: f("aa", lt),
  le: f("aa", (a: unknown, b: unknown) => lt(a, b) || eq(a, b)),
  gt: f("aa", (a: unknown, b: unknown) => !lt(a, b) && !eq(a, b)),
  ge: f("aa", (a: unknown, b: unknown) => !lt(a, b)),

  // slim-sprig: strings
  hello: f("", () => "Hello!"),
  trunc: f("is", (c: number, s: string) => (c >= 0 ? s.slice(0, c) : s.slice(Math.max(0, s.length + c)))),
  trim: f("s", (s: string) => s.trim()),
  upper: f("s", (s: string) => s.toUpperCase()),
  lower: f("s", (s: string) => s.toLowerCase()),
  title: f("s", title),
  substr: f(
    "iis",
    (a: number, b: number, s: string) => (a < 0 ? s.slice(0, b) : b < 0 || b > s.length ? s.slice(a) : s.slice(a, b)),
  ),
  repeat: f("is", (n: number, s: string) => s.repeat(Math.max(0, n))),
  trimall: f("ss", (a: string, b: string) => trimCutset(b, a)),
  trimAll: f("ss", (a: string, b: string) => trimCutset(b, a)),
  trimSuffix: f("ss", (a: string, b: string) => (a !== "" && b.endsWith(a) ? b.slice(0, -a.length) : b)),
  trimPrefix: f("ss", (a: string, b: string) => (b.startsWith(a) ? b.slice(a.length) : b)),
  contains: f("ss", (sub: string, s: string) => s.includes(sub)),
  hasPrefix: f("ss", (p: string, s: string) => s.startsWith(p)),
  hasSuffix: f("ss", (p: string, s: string) => s.endsWith(p)),
  quote: f("a*", (...a: unknown[]) => a.filter((x) => x !== null).map((x) => goQuote(strval(x))).join(" ")),
  squote: f("a*", (...a: unknown[]) => a.filter((x) => x !== null).map((x) => `'${strval(x)}'`).join(" ")),
  cat: f("a*", (...a: unknown[]) => a.filter((x) => x !== null).map(strval).join(" ")),
  indent: f("is", (n: number, s: string) => " ".repeat(n) + s.replaceAll("\n", "\n" + " ".repeat(n))),
  nindent: f("is", (n: number, s: string) => "\n" + " ".repeat(n) + s.replaceAll("\n", "\n" + " ".repeat(n))),
  replace: f("sss", (o: string, n: string, s: string) => s.replaceAll(o, n)),
  plural: f("ssi", (one: string, many: string, n: number) => (n === 1 ? one : many)),
  sha1sum: f("s", (s: string) => sha("sha1", s)),
  sha256sum: f("s", (s: string) => sha("sha256", s)),
  toString: f("a", strval),
  atoi: f("s", (s: string) => (/^[+-]?\d+$/.test(s) ? Number(s) : 0)),
  int64: f("a", toInt),
  int: f("a", toInt),
  float64: f("a", toFloat),
  toDecimal: f("a", (v: unknown) => {
    const n = parseInt(strval(v), 8);
    return Number.isNaN(n) ? 0 : n;
  }),
  seq: f(
    "i*",
    (...a: number[]) =>
      (a.length === 1
        ? until(1, a[0] + 1, 1)
        : a.length === 2
        ? until(a[0], a[1] + (a[1] >= a[0] ? 1 : -1), a[1] >= a[0] ? 1 : -1)
        : until(a[0], a[2] + (a[1] > 0 ? 1 : -1), a[1])).join(" "),
  ),
  split: f("ss", (sep: string, s: string) => {
    const d: Obj = {};
    s.split(sep).forEach((p, i) => (d["_" + i] = p));
    return d;
  }),
  splitList: f("ss", (sep: string, s: string) => s.split(sep)),
  splitn: f("sis", (sep: string, n: number, s: string) => {
    const parts = s.split(sep);
    const out = n > 0 && parts.length > n ? [...parts.slice(0, n - 1), parts.slice(n - 1).join(sep)] : parts;
    const d: Obj = {};
    out.forEach((p, i) => (d["_" + i] = p));
    return d;
  }),
  toStrings: f("a", (v: unknown) => (Array.isArray(v) ? v.map(strval) : [strval(v)])),
  until: f("i", (n: number) => until(0, n, n >= 0 ? 1 : -1)),
  untilStep: f("iii", until),

  // arithmetic (int64; sprig's casts)
  add1: f("a", (a: unknown) => toInt(a) + 1),
  add: f("a*", (...a: unknown[]) => a.reduce<number>((s, x) => s + toInt(x), 0)),
  sub: f("aa", (a: unknown, b: unknown) => toInt(a) - toInt(b)),
  div: f("aa", (a: unknown, b: unknown) => {
    if (toInt(b) === 0) throw new Error("runtime error: integer divide by zero");
    return Math.trunc(toInt(a) / toInt(b));
  }),
  mod: f("aa", (a: unknown, b: unknown) => {
    if (toInt(b) === 0) throw new Error("runtime error: integer divide by zero");
    return toInt(a) % toInt(b);
  }),
  mul: f("aa*", (a: unknown, ...v: unknown[]) => v.reduce<number>((s, x) => s * toInt(x), toInt(a))),
  max: f("aa*", (a: unknown, ...v: unknown[]) => Math.max(toInt(a), ...v.map(toInt))),
  biggest: f("aa*", (a: unknown, ...v: unknown[]) => Math.max(toInt(a), ...v.map(toInt))),
  min: f("aa*", (a: unknown, ...v: unknown[]) => Math.min(toInt(a), ...v.map(toInt))),
  maxf: f("aa*", (a: unknown, ...v: unknown[]) => Math.max(toFloat(a), ...v.map(toFloat))),
  minf: f("aa*", (a: unknown, ...v: unknown[]) => Math.min(toFloat(a), ...v.map(toFloat))),
  ceil: f("a", (a: unknown) => Math.ceil(toFloat(a))),
  floor: f("a", (a: unknown) => Math.floor(toFloat(a))),
  round: f("aia*", (a: unknown, p: number, ...r: unknown[]) => {
    const half = r.length ? toFloat(r[0]) : 0.5;
    const pow = 10 ** p;
    const x = toFloat(a) * pow;
    const d = x - Math.trunc(x);
    return (d >= half ? Math.ceil(x) : Math.floor(x)) / pow;
  }),

  // lists and defaults
  join: f("sa", (sep: string, v: unknown) => (Array.isArray(v) ? v.map(strval) : [strval(v)]).join(sep)),
  sortAlpha: f("a", (v: unknown) => (Array.isArray(v) ? v.map(strval).sort() : [strval(v)])),
  default: f("aa*", (d: unknown, ...given: unknown[]) => (given.length === 0 || empty(given[0]) ? d : given[0])),
  empty: f("a", empty),
  coalesce: f("a*", (...v: unknown[]) => v.find((x) => !empty(x)) ?? null),
  all: f("a*", (...v: unknown[]) => v.every((x) => !empty(x))),
  any: f("a*", (...v: unknown[]) => v.some((x) => !empty(x))),
  compact: f("a", (v: unknown) => asList(v, "compact").filter((x) => !empty(x))),
  fromJson: f("s", fromJson),
  mustFromJson: f("s", (s: string) => JSON.parse(s)),
  toJson: f("a", (v: unknown) => safeJson(v, true)),
  toPrettyJson: f("a", (v: unknown) => safeJson(v, true, "  ")),
  toRawJson: f("a", (v: unknown) => safeJson(v, false)),
  mustToJson: f("a", (v: unknown) => mustJson(v, true)),
  mustToPrettyJson: f("a", (v: unknown) => mustJson(v, true, "  ")),
  mustToRawJson: f("a", (v: unknown) => mustJson(v, false)),
  ternary: f("aab", (t: unknown, fv: unknown, c: boolean) => (c ? t : fv)),
  typeOf: f("a", goType),
  typeIs: f("sa", (t: string, v: unknown) => t === goType(v)),
  kindOf: f("a", goKind),
  kindIs: f("sa", (k: string, v: unknown) => k === goKind(v)),
  deepEqual: f("aa", deepEqual),

  // paths
  base: f("s", (p: string) => (p === "" ? "." : p.replace(/\/+$/, "").split("/").pop() || "/")),
  dir: f("s", (p: string) => {
    const i = p.lastIndexOf("/");
    return i < 0 ? "." : i === 0 ? "/" : p.slice(0, i).replace(/\/+$/, "") || "/";
  }),
  ext: f("s", (p: string) => {
    const m = /\.[^./]*$/.exec(p);
    return m ? m[0] : "";
  }),
  isAbs: f("s", (p: string) => p.startsWith("/")),

  // encoding
  b64enc: f("s", b64enc),
  b64dec: f("s", b64dec),

  // data structures
  tuple: f("a*", (...v: unknown[]) => v),
  list: f("a*", (...v: unknown[]) => v),
  dict: f("a*", dict),
  get: f("ms", (d: Obj | null, k: string) => (d !== null && Object.hasOwn(d, k) ? d[k] : "")),
  set: f("msa", (d: Obj | null, k: string, v: unknown) => {
    const m = mustMap(d);
    m[k] = v;
    return m;
  }),
  unset: f("ms", (d: Obj | null, k: string) => {
    const m = mustMap(d);
    delete m[k];
    return m;
  }),
  hasKey: f("ms", (d: Obj | null, k: string) => d !== null && Object.hasOwn(d, k)),
  pluck: f("sm*", (k: string, ...ds: (Obj | null)[]) => ds.filter((d) => d && Object.hasOwn(d, k)).map((d) => d![k])),
  keys: f("m*", (...ds: (Obj | null)[]) => ds.flatMap((d) => mapKeys(d))),
  pick: f("ms*", (d: Obj | null, ...ks: string[]) => {
    const o: Obj = {};
    for (const k of ks) if (d && Object.hasOwn(d, k)) o[k] = d[k];
    return o;
  }),
  omit: f("ms*", (d: Obj | null, ...ks: string[]) => {
    const o: Obj = {};
    for (const [k, v] of Object.entries(d ?? {})) if (!ks.includes(k)) o[k] = v;
    return o;
  }),
  values: f("m", (d: Obj | null) => Object.values(d ?? {})),
  append: f("aa", (l: unknown, v: unknown) => [...asList(l, "push"), v]),
  push: f("aa", (l: unknown, v: unknown) => [...asList(l, "push"), v]),
  prepend: f("aa", (l: unknown, v: unknown) => [v, ...asList(l, "prepend")]),
  first: f("a", (l: unknown) => (asList(l, "find first").length ? asList(l, "")[0] : null)),
  rest: f("a", (l: unknown) => asList(l, "find rest").slice(1)),
  last: f("a", (l: unknown) => {
    const a = asList(l, "find last");
    return a.length ? a[a.length - 1] : null;
  }),
  initial: f("a", (l: unknown) => asList(l, "find initial").slice(0, -1)),
  reverse: f("a", (l: unknown) => [...asList(l, "find reverse")].reverse()),
  uniq: f("a", (l: unknown) => {
    const out: unknown[] = [];
    for (const x of asList(l, "find uniq")) if (!out.some((y) => deepEqual(x, y))) out.push(x);
    return out;
  }),
  without: f(
    "aa*",
    (l: unknown, ...o: unknown[]) => asList(l, "find without").filter((x) => !o.some((y) => deepEqual(x, y))),
  ),
  has: f("aa", (needle: unknown, l: unknown) => l !== null && asList(l, "find has").some((x) => deepEqual(x, needle))),
  slice: f("aa*", (l: unknown, ...idx: unknown[]) => {
    const a = asList(l, "slice");
    return a.slice(idx.length > 0 ? toInt(idx[0]) : 0, idx.length > 1 ? toInt(idx[1]) : a.length);
  }),
  concat: f("a*", (...ls: unknown[]) => ls.flatMap((l) => asList(l, "concat"))),
  dig: f("a*", (...a: unknown[]) => {
    const d = a[a.length - 1] as Obj;
    const dflt = a[a.length - 2];
    let v: unknown = d;
    for (const k of a.slice(0, -2)) {
      if (!isMap(v) || !Object.hasOwn(v, strval(k))) return dflt;
      v = (v as Obj)[strval(k)];
    }
    return v;
  }),
  chunk: f("ia", (n: number, l: unknown) => {
    const a = asList(l, "chunk");
    const out: unknown[][] = [];
    for (let i = 0; i < a.length; i += n) out.push(a.slice(i, i + n));
    return out;
  }),
  fail: f("s", (msg: string) => {
    throw new Error(msg);
  }),

  // regular expressions
  regexMatch: f("ss", (re: string, s: string) => {
    try {
      return new RegExp(re.replace(/\(\?P</g, "(?<")).test(s);
    } catch {
      return false;
    }
  }),
  mustRegexMatch: f("ss", (re: string, s: string) => new RegExp(re.replace(/\(\?P</g, "(?<")).test(s)),
  regexFindAll: f("ssi", (re: string, s: string, n: number) => {
    const all = s.match(regexp(re)) ?? [];
    return n < 0 ? all : all.slice(0, n);
  }),
  regexFind: f("ss", (re: string, s: string) => new RegExp(re.replace(/\(\?P</g, "(?<")).exec(s)?.[0] ?? ""),
  regexReplaceAll: f("sss", (re: string, s: string, repl: string) => s.replace(regexp(re), goReplacement(repl))),
  regexReplaceAllLiteral: f("sss", (re: string, s: string, repl: string) => s.replace(regexp(re), () => repl)),
  regexSplit: f("ssi", (re: string, s: string, n: number) => {
    const parts = s.split(regexp(re));
    return n < 0 ? parts : parts.slice(0, n);
  }),
  regexQuoteMeta: f("s", (s: string) => s.replace(/[\\.+*?()|[\]{}^$]/g, "\\$&")),

  // dates
  now: f("", () => new Date()),
  date: f("sa", (layout: string, d: unknown) => goDate(layout, toDate(d))),
  htmlDate: f("a", (d: unknown) => goDate("2006-01-02", toDate(d))),
  unixEpoch: f("a", (d: unknown) => String(Math.floor(toDate(d).getTime() / 1000))),

  // Easegress's extras
  addf: f("aa", (a: unknown, b: unknown) => floatOperand(a) + floatOperand(b)),
  subf: f("aa", (a: unknown, b: unknown) => floatOperand(a) - floatOperand(b)),
  mulf: f("aa", (a: unknown, b: unknown) => floatOperand(a) * floatOperand(b)),
  divf: f("aa", (a: unknown, b: unknown) => {
    const d = floatOperand(b);
    if (d === 0) throw new Error("divisor cannot be zero");
    return floatOperand(a) / d;
  }),
  log: f("ss", (level: string, msg: string) => {
    templateLog(level, msg);
    return "";
  }),
  mergeObject: f("a*", (...objs: unknown[]) => mergeObjects(objs)),
  jsonEscape: f("s", (s: string) => JSON.stringify(s).slice(1, -1)),
  urlQueryEscape: f("s", queryEscape),
  urlQueryUnescape: f("s", queryUnescape),
  host: f("s", (hp: string) => splitHostPort(hp)[0]),
  port: f("s", (hp: string) => splitHostPort(hp)[1]),
  header: f("as", (h: unknown, key: string) => {
    const vals = index(h, canonicalHeaderKey(key));
    return Array.isArray(vals) && vals.length ? vals[0] : "";
  }),
  username: f("a", (req: unknown) => {
    const auth = isStruct(req) ? (req as unknown as { basicUser(): string }).basicUser?.() : undefined;
    return auth ?? "";
  }),
  panic: f("a", (v: unknown) => {
    throw new Error(formatValue(v, false));
  }),
};

/** textproto.CanonicalMIMEHeaderKey */
export function canonicalHeaderKey(k: string): string {
  if (!/^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/.test(k)) return k;
  return k.toLowerCase().replace(/(^|-)([a-z])/g, (_m, a: string, b: string) => a + b.toUpperCase());
}

function trimCutset(s: string, cut: string): string {
  let a = 0, b = s.length;
  while (a < b && cut.includes(s[a])) a++;
  while (b > a && cut.includes(s[b - 1])) b--;
  return s.slice(a, b);
}

/** `log level msg`: Easegress writes it to its log at that level. */
function templateLog(level: string, msg: string): void {
  console.log(`template ${level}: ${msg}`);
}
