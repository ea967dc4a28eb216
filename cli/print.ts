/**
 * egctl's output helpers, byte-compatible with Easegress's Go client: text/tabwriter tables
 * (minwidth 0, tabwidth 8, padding 2, padchar '\t', every cell tab-terminated), json.Indent, the JSON→YAML conversion
 * of `-o yaml`, and PrintMapInterface of `describe`.
 */
import { toGoYaml } from "../server/easegress/goyaml.ts";

/** Go text/tabwriter with egctl's settings; `rows` are the cells of each line. */
export function tabwrite(rows: string[][]): string {
  const TABW = 8, PAD = 2;
  // every cell is terminated by \t and the line by \n: each line is its cells plus one empty trailing cell
  const lines: string[][] = rows.map((r) => [...r, ""]);
  lines.push([""]);
  const widths: number[] = [];
  let out = "";
  const runeLen = (s: string) => [...s].length;
  const pad = (textw: number, cellw: number) => {
    const cw = Math.ceil(cellw / TABW) * TABW;
    const n = cw - textw;
    out += "\t".repeat(Math.ceil(n / TABW));
  };
  const writeLines = (line0: number, line1: number) => {
    for (let i = line0; i < line1; i++) {
      const line = lines[i];
      line.forEach((c, j) => {
        out += c;
        if (j < widths.length) pad(runeLen(c), widths[j]);
      });
      if (i + 1 < lines.length) out += "\n";
    }
  };
  const format = (line0: number, line1: number) => {
    const column = widths.length;
    for (let t = line0; t < line1; t++) {
      if (column >= lines[t].length - 1) continue;
      writeLines(line0, t);
      line0 = t;
      let width = 0;
      for (; t < line1; t++) {
        const line = lines[t];
        if (column >= line.length - 1) break;
        const w = runeLen(line[column]) + PAD;
        if (w > width) width = w;
      }
      widths.push(width);
      format(line0, t);
      widths.pop();
      line0 = t;
      t--; // the outer loop's increment must not skip the line that ended the block
    }
    writeLines(line0, line1);
  };
  format(0, lines.length);
  return out;
}

/** Go's json.Indent(dst, src, "", "  "): re-indents JSON text without reparsing values. */
export function jsonIndent(src: string): string {
  let out = "";
  let depth = 0;
  let inStr = false;
  let needIndent = false;
  const nl = () => "\n" + "  ".repeat(depth);
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (inStr) {
      out += c;
      if (c === "\\") out += src[++i];
      else if (c === '"') inStr = false;
      continue;
    }
    if (c === " " || c === "\t" || c === "\n" || c === "\r") continue;
    if (needIndent && c !== "]" && c !== "}") {
      needIndent = false;
      depth++;
      out += nl();
    }
    switch (c) {
      case '"':
        inStr = true;
        out += c;
        break;
      case "{":
      case "[":
        out += c;
        needIndent = true;
        break;
      case ",":
        out += c + nl();
        break;
      case ":":
        out += ": ";
        break;
      case "}":
      case "]":
        if (needIndent) {
          needIndent = false; // empty object/array stays compact
        } else {
          depth--;
          out += nl();
        }
        out += c;
        break;
      default:
        out += c;
    }
  }
  return out;
}

/** PrintBody for a non-default output format. */
export function formatBody(body: string, format: "json" | "yaml"): string {
  if (body.length === 0) return "";
  if (format === "json") {
    try {
      JSON.parse(body);
      return jsonIndent(body);
    } catch {
      return body;
    }
  }
  return toGoYaml(JSON.parse(body), { sortKeys: true });
}

/** A float64 as yaml.v3 writes it (strconv 'g', shortest). */
function goFloat(n: number): string {
  if (Number.isNaN(n)) return ".nan";
  if (!Number.isFinite(n)) return n > 0 ? ".inf" : "-.inf";
  if (n === 0) return Object.is(n, -0) ? "-0" : "0";
  const [mant, expStr] = n.toExponential().split("e");
  const exp = Number(expStr);
  if (exp < -4 || exp >= 6) return `${mant}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  return String(n);
}

/** Marker for values that go through yaml as typed Go structs (fields in order, numbers as written). */
export class Ordered {
  constructor(readonly value: Record<string, unknown>) {}
}

/**
 * Converts decoded JSON (Go's map[string]interface{}: numbers are float64, map keys sorted) into what the emitter
 * writes: numbers become pre-formatted plain scalars.
 */
function goValue(v: unknown): unknown {
  if (v instanceof Ordered) {
    return Object.fromEntries(Object.entries(v.value).map(([k, x]) => [k, goValue(x)]));
  }
  if (Array.isArray(v)) return v.map(goValue);
  if (typeof v === "number") return new RawScalar(goFloat(v));
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return Object.fromEntries(Object.keys(o).sort().map((k) => [k, goValue(o[k])]));
  }
  return v;
}

class RawScalar {
  constructor(readonly text: string) {}
}

/** yaml.v3 Marshal of a Go value decoded from JSON (map[string]interface{} / float64). */
export function marshalGoValue(v: unknown): string {
  const conv = goValue(v);
  // RawScalar placeholders: emit as numbers via a string sentinel that the emitter leaves plain
  const SENT = "\u0000num:";
  const encode = (x: unknown): unknown => {
    if (x instanceof RawScalar) return SENT + x.text;
    if (Array.isArray(x)) return x.map(encode);
    if (x && typeof x === "object") {
      return Object.fromEntries(Object.entries(x as Record<string, unknown>).map(([k, y]) => [k, encode(y)]));
    }
    return x;
  };
  const text = toGoYaml(encode(conv), { sortKeys: false });
  // the emitter double-quotes strings with control characters: turn the sentinels back into plain numbers
  return text.replace(/"\\x00num:([^"]*)"/g, "$1");
}

/** Upper-cases the first letter. */
export function capitalize(s: string): string {
  return s.length === 0 ? "" : s[0].toUpperCase() + s.slice(1);
}

function lowerFirst(s: string): string {
  return s.length === 0 ? "" : s[0].toLowerCase() + s.slice(1);
}

/** general.PrintMapInterface. */
export function printMapInterface(
  maps: Record<string, unknown>[],
  fronts: string[],
  backs: string[],
  verbose: boolean,
): string {
  let out = "";
  const cutLine = (line: string) => {
    const bytes = new TextEncoder().encode(line);
    if (verbose || bytes.length < 50) return line;
    return new TextDecoder().decode(bytes.slice(0, 50)) + "...";
  };
  const printKV = (k: string, v: unknown) => {
    const lines = marshalGoValue(v).split("\n");
    lines.pop();
    if (lines.length === 1) {
      out += `${capitalize(k)}: ${cutLine(lines[0])}\n`;
      return;
    }
    out += `${capitalize(k)}:\n${"=".repeat(k.length + 1)}\n`;
    for (const l of lines) out += `  ${l}\n`;
  };
  const printFn = (spec0: Record<string, unknown>) => {
    const spec: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(spec0)) spec[lowerFirst(k)] = v;
    const keys = Object.keys(spec).sort();
    let frontFlag = false;
    for (const f of fronts) {
      if (f === "" && frontFlag) out += "\n";
      if (Object.hasOwn(spec, f)) {
        frontFlag = true;
        printKV(f, spec[f]);
      } else frontFlag = false;
    }
    for (const k of keys) {
      if (fronts.includes(k) || backs.includes(k)) continue;
      printKV(k, spec[k]);
    }
    let backFlag = false;
    for (const b of backs) {
      if (Object.hasOwn(spec, b)) {
        if (!backFlag) {
          out += "\n";
          backFlag = true;
        }
        printKV(b, spec[b]);
      }
    }
  };
  maps.forEach((m, i) => {
    printFn(m);
    if (maps.length > 1 && i !== maps.length - 1) out += "\n\n---\n\n";
  });
  return out;
}

/** general.ErrorMsg: `<action> <values> failed, <err>`. */
export const errorMsg = (action: string, err: unknown, ...values: string[]) =>
  new Error(`${action} ${values.join(" ")} failed, ${(err as Error).message}`);

/** general.SuccessMsg: `<action> <values> successfully`. */
export const successMsg = (action: string, ...values: string[]) => `${action} ${values.join(" ")} successfully`;
