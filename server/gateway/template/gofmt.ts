/**
 * Go's rendering of template values: `fmt.Sprint` / `Sprintf` / `Sprintln` over the JS values a template sees,
 * `encoding/json` marshalling (sorted map keys, HTML escaping) and the kinds of values.
 *
 * Value model: `undefined` is Go's invalid value (a missing map key, printed `<no value>`), `null` is nil (`<nil>`),
 * strings, numbers (integral numbers print as Go ints; others as float64 with %v's shortest form), booleans, arrays
 * (slices), `Uint8Array` ([]byte), plain objects and `Map`s (maps, printed with sorted keys), and `GoStruct`s (the
 * request and response objects, whose exported fields a template reads).
 */

/**
 * Go's json.Number: a JSON number kept as its text (Easegress decodes JSONBody with UseNumber). It is a string kind:
 * it prints and encodes as written, compares with strings, and is refused where a Go string parameter is expected.
 */
export class JsonNumber {
  constructor(readonly text: string) {}
}

/** JSON text → values, numbers as JsonNumber (json.Decoder.UseNumber). */
export function parseJsonNumbers(text: string): unknown {
  // the reviver's context (ES2025 JSON.parse source text access) holds a number's source text
  return JSON.parse(
    text,
    (_k, v, ctx?: { source?: string }) => (typeof v === "number" ? new JsonNumber(ctx?.source ?? String(v)) : v),
  );
}

/** A Go struct value exposed to templates: `goType` names it in errors, `goFields` are printed by %v. */
export interface GoStruct {
  readonly goType: string;
  goFields(): unknown[];
}

export function isStruct(v: unknown): v is GoStruct {
  return typeof v === "object" && v !== null && typeof (v as GoStruct).goFields === "function";
}

/** A map value: a plain object or a Map. */
export function isMap(v: unknown): v is Record<string, unknown> | Map<unknown, unknown> {
  if (v instanceof Map) return true;
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

/** The entries of a map sorted by key, as Go sorts them when printing and ranging. */
export function sortedEntries(m: Record<string, unknown> | Map<unknown, unknown>): [unknown, unknown][] {
  const e: [unknown, unknown][] = m instanceof Map ? [...m.entries()] : Object.entries(m);
  return e.sort((a, b) => compareKeys(a[0], b[0]));
}

function compareKeys(a: unknown, b: unknown): number {
  if (typeof a === "number" && typeof b === "number") return a - b;
  const x = String(a), y = String(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The Go type name of a value, as `%T` and error messages show it. */
export function goType(v: unknown): string {
  if (v === null || v === undefined) return "<nil>";
  switch (typeof v) {
    case "string":
      return "string";
    case "boolean":
      return "bool";
    case "number":
      return Number.isInteger(v) ? "int" : "float64";
    case "function":
      return "func";
  }
  if (v instanceof Uint8Array) return "[]uint8";
  if (v instanceof JsonNumber) return "json.Number";
  if (Array.isArray(v)) return "[]interface {}";
  if (v instanceof Date) return "time.Time";
  if (isStruct(v)) return v.goType;
  return "map[string]interface {}";
}

/** Go's reflect kind name (sprig's kindOf). */
export function goKind(v: unknown): string {
  if (v === null || v === undefined) return "invalid";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float64";
  if (typeof v === "string" || v instanceof JsonNumber) return "string";
  if (typeof v === "boolean") return "bool";
  if (Array.isArray(v) || v instanceof Uint8Array) return "slice";
  if (isStruct(v)) return v.goType.startsWith("*") ? "ptr" : "struct";
  if (v instanceof Date) return "struct";
  return "map";
}

/** strconv.FormatFloat(f, 'g', -1, 64) as %v prints a float64. */
export function formatFloat(f: number): string {
  if (Number.isNaN(f)) return "NaN";
  if (f === Infinity) return "+Inf";
  if (f === -Infinity) return "-Inf";
  if (f === 0) return Object.is(f, -0) ? "-0" : "0";
  const [mant, expS] = f.toExponential().split("e");
  const exp = Number(expS);
  if (exp < -4 || exp >= 21) {
    const e = Math.abs(exp);
    return `${mant}e${exp < 0 ? "-" : "+"}${e < 10 ? "0" + e : e}`;
  }
  return String(f);
}

/** A number as %v prints it (integral → int). */
export function formatNumber(n: number): string {
  if (Number.isInteger(n) && Math.abs(n) < 1e21) return n.toFixed(0);
  return formatFloat(n);
}

/** fmt's %v of one value; `top`: as an action prints it (a nil interface is `<no value>` there too). */
export function formatValue(v: unknown, top = true): string {
  if (v === undefined || v === null) return top ? "<no value>" : "<nil>";
  switch (typeof v) {
    case "string":
      return v;
    case "number":
      return formatNumber(v);
    case "boolean":
      return v ? "true" : "false";
    case "bigint":
      return v.toString();
    case "function":
      return "0x1";
  }
  if (v instanceof Uint8Array) return "[" + Array.from(v).join(" ") + "]";
  if (v instanceof JsonNumber) return v.text;
  if (Array.isArray(v)) return "[" + v.map((x) => formatValue(x, false)).join(" ") + "]";
  if (v instanceof Date) return goTimeString(v);
  if (isStruct(v)) {
    const s = "{" + v.goFields().map((x) => formatValue(x, false)).join(" ") + "}";
    return v.goType.startsWith("*") ? "&" + s : s;
  }
  if (isMap(v)) {
    return "map[" + sortedEntries(v).map(([k, x]) => `${formatValue(k, false)}:${formatValue(x, false)}`).join(" ") +
      "]";
  }
  return String(v);
}

/** fmt.Sprint: operands are separated by a space when neither side is a string. */
export function sprint(args: unknown[]): string {
  let out = "";
  for (let i = 0; i < args.length; i++) {
    const isStr = typeof args[i] === "string";
    if (i > 0 && !isStr && typeof args[i - 1] !== "string") out += " ";
    out += formatValue(args[i], false);
  }
  return out;
}

/** fmt.Sprintln: always a space between operands, and a newline. */
export function sprintln(args: unknown[]): string {
  return args.map((a) => formatValue(a, false)).join(" ") + "\n";
}

/** Go's %q of a string (strconv.Quote). */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (c === 7) out += "\\a";
    else if (c === 8) out += "\\b";
    else if (c === 12) out += "\\f";
    else if (c === 10) out += "\\n";
    else if (c === 13) out += "\\r";
    else if (c === 9) out += "\\t";
    else if (c === 11) out += "\\v";
    else if (c < 0x20 || c === 0x7f) out += "\\x" + c.toString(16).padStart(2, "0");
    else if (c === 0xfffd && ch !== "\ufffd") out += "\\ufffd";
    else out += ch;
  }
  return out + '"';
}

/** fmt.Sprintf with the verbs templates use: %v %s %d %f %g %e %q %t %x %X %c %T %%, width, precision, - + 0. */
export function sprintf(format: string, args: unknown[]): string {
  let out = "";
  let ai = 0;
  for (let i = 0; i < format.length; i++) {
    const c = format[i];
    if (c !== "%") {
      out += c;
      continue;
    }
    const m = /^([-+ #0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])/.exec(format.slice(i + 1));
    if (!m) {
      out += "%!(NOVERB)";
      break;
    }
    i += m[0].length;
    const flags = m[1];
    const verb = m[4];
    if (verb === "%") {
      out += "%";
      continue;
    }
    let width = m[2] === "*" ? Number(args[ai++]) : m[2] !== undefined ? Number(m[2]) : -1;
    const prec = m[3] === "*" ? Number(args[ai++]) : m[3] !== undefined ? Number(m[3]) : (m[0].includes(".") ? 0 : -1);
    if (ai >= args.length) {
      out += `%!${verb}(MISSING)`;
      continue;
    }
    const a = args[ai++];
    let s = formatVerb(verb, a, prec, flags);
    if (flags.includes("-")) width = -width;
    if (width > 0 && [...s].length < width) {
      const pad = width - [...s].length;
      if (flags.includes("0") && /[dfegxX]/.test(verb) && typeof a === "number") {
        const sign = s[0] === "-" || s[0] === "+" ? s[0] : "";
        s = sign + "0".repeat(pad) + s.slice(sign.length);
      } else s = " ".repeat(pad) + s;
    } else if (width < 0 && [...s].length < -width) s += " ".repeat(-width - [...s].length);
    out += s;
  }
  if (ai < args.length) {
    out += "%!(EXTRA " + args.slice(ai).map((a) => `${goType(a)}=${formatValue(a, false)}`).join(", ") + ")";
  }
  return out;
}

function formatVerb(verb: string, a: unknown, prec: number, flags: string): string {
  const bad = () => `%!${verb}(${goType(a)}=${formatValue(a, false)})`;
  if ((a === null || a === undefined) && verb !== "v" && verb !== "T") return `%!${verb}(<nil>)`;
  const plus = (s: string, n: number) => (flags.includes("+") && n >= 0 ? "+" + s : s);
  switch (verb) {
    case "v":
      if (flags.includes("#") && typeof a === "string") return goQuote(a);
      return formatValue(a, false);
    case "T":
      return goType(a);
    case "s":
      if (typeof a === "number" || typeof a === "boolean") return bad();
      return prec >= 0 && typeof a === "string" ? [...a].slice(0, prec).join("") : formatValue(a, false);
    case "q":
      if (typeof a === "string") return goQuote(a);
      if (typeof a === "number" && Number.isInteger(a)) return "'" + String.fromCodePoint(a) + "'";
      return bad();
    case "t":
      return typeof a === "boolean" ? String(a) : bad();
    case "d":
      return typeof a === "number" && Number.isInteger(a) ? plus(a.toFixed(0), a) : bad();
    case "c":
      return typeof a === "number" && Number.isInteger(a) ? String.fromCodePoint(a) : bad();
    case "x":
    case "X": {
      let s: string;
      if (typeof a === "number" && Number.isInteger(a)) s = (a < 0 ? "-" : "") + Math.abs(a).toString(16);
      else if (typeof a === "string") {
        s = Array.from(new TextEncoder().encode(a), (b) => b.toString(16).padStart(2, "0")).join("");
      } else if (a instanceof Uint8Array) s = Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
      else return bad();
      return verb === "X" ? s.toUpperCase() : s;
    }
    case "f":
    case "F":
      return typeof a === "number" ? plus(a.toFixed(prec < 0 ? 6 : prec), a) : bad();
    case "e": {
      if (typeof a !== "number") return bad();
      const [mant, e] = a.toExponential(prec < 0 ? 6 : prec).split("e");
      const n = Math.abs(Number(e));
      return plus(`${mant}e${e[0] === "-" ? "-" : "+"}${n < 10 ? "0" + n : n}`, a);
    }
    case "g":
      if (typeof a !== "number") return bad();
      return plus(prec < 0 ? formatFloat(a) : formatFloat(Number(a.toPrecision(prec || 1))), a);
  }
  return `%!${verb}(${goType(a)}=${formatValue(a, false)})`;
}

/** time.Time.String() in UTC, without the monotonic reading. */
export function goTimeString(d: Date): string {
  const iso = d.toISOString(); // 2006-01-02T15:04:05.000Z
  const ms = d.getUTCMilliseconds();
  const frac = ms === 0 ? "" : "." + String(ms).padStart(3, "0").replace(/0+$/, "");
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${frac} +0000 UTC`;
}

/** Go's json.Marshal: map keys sorted; `html` escapes <, > and & as \u003c… (toJson) or not (toRawJson). */
export function goJson(v: unknown, html: boolean, indent = ""): string {
  const s = jsonValue(v, indent, "");
  return html ? s.replace(/[<>&]/g, (c) => "\\u00" + c.charCodeAt(0).toString(16)) : s;
}

function jsonString(s: string): string {
  return JSON.stringify(s).replace(/[\u2028\u2029]/g, (c) => "\\u" + c.charCodeAt(0).toString(16));
}

function jsonValue(v: unknown, indent: string, cur: string): string {
  if (v === null || v === undefined) return "null";
  switch (typeof v) {
    case "string":
      return jsonString(v);
    case "number":
      if (!Number.isFinite(v)) throw new Error(`json: unsupported value: ${formatFloat(v)}`);
      return Number.isInteger(v) && Math.abs(v) < 1e21 ? v.toFixed(0) : jsonFloat(v);
    case "boolean":
      return String(v);
  }
  if (v instanceof Uint8Array) return jsonString(btoa(String.fromCharCode(...v)));
  if (v instanceof JsonNumber) return v.text;
  if (v instanceof Date) return jsonString(v.toISOString());
  const inner = cur + indent;
  const nl = indent ? "\n" : "";
  const sep = indent ? ": " : ":";
  if (Array.isArray(v)) {
    if (v.length === 0) return "[]";
    return "[" + nl + v.map((x) => inner + jsonValue(x, indent, inner)).join("," + nl) + nl + cur + "]";
  }
  let entries: [unknown, unknown][];
  if (isStruct(v)) {
    const o = (v as { toJSON?: () => unknown }).toJSON?.();
    return jsonValue(o ?? {}, indent, cur);
  } else if (isMap(v)) entries = sortedEntries(v);
  else throw new Error(`json: unsupported type: ${goType(v)}`);
  if (entries.length === 0) return "{}";
  return "{" + nl + entries.map(([k, x]) => inner + jsonString(String(k)) + sep + jsonValue(x, indent, inner)).join(
    "," + nl,
  ) + nl + cur + "}";
}

/** Go encodes floats as %g-like with exponent only for < 1e-6 or >= 1e21. */
function jsonFloat(f: number): string {
  const abs = Math.abs(f);
  if (abs !== 0 && (abs < 1e-6 || abs >= 1e21)) {
    const [mant, e] = f.toExponential().split("e");
    const n = Math.abs(Number(e));
    return `${mant}e${e[0] === "-" ? "-" : "+"}${n < 10 ? "0" + n : n}`;
  }
  return String(f);
}
