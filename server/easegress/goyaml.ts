/**
 * A YAML emitter shaped like Go's gopkg.in/yaml.v3 (which Easegress and egctl use, directly or through
 * invopop/yaml's JSONToYAML): 4-space indentation, block sequences indented under their key, strings quoted only when
 * they would otherwise read back as another type, multi-line strings as literal blocks. Object keys are written in
 * the order given; `sortKeys` sorts them as yaml.v3 does for Go maps.
 */

type Value = unknown;

const NULLS = new Set(["", "~", "null", "Null", "NULL"]);
const BOOLS = new Set(["true", "True", "TRUE", "false", "False", "FALSE"]);
const OLD_BOOLS = new Set([
  "y",
  "Y",
  "yes",
  "Yes",
  "YES",
  "n",
  "N",
  "no",
  "No",
  "NO",
  "on",
  "On",
  "ON",
  "off",
  "Off",
  "OFF",
]);
const INT_RE = /^[-+]?(0|[1-9][0-9_]*)$|^[-+]?0b[01_]+$|^[-+]?0o?[0-7_]+$|^[-+]?0x[0-9a-fA-F_]+$/;
const FLOAT_RE =
  /^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$/;
const BASE60_RE = /^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$/;
const TIMESTAMP_RE =
  /^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::?[0-9]{2})?))?)?$/;

/** Whether yaml.v3 would resolve this plain scalar to something other than a string. */
function resolvesToNonString(s: string): boolean {
  return NULLS.has(s) || BOOLS.has(s) || INT_RE.test(s) || FLOAT_RE.test(s) || TIMESTAMP_RE.test(s);
}

/** libyaml's analysis: may this string be written as a plain scalar in block context? */
function plainAllowed(s: string): boolean {
  if (s === "") return false;
  if (s.startsWith("---") || s.startsWith("...")) return false;
  if (/^\s|\s$/.test(s)) return false;
  if (/[\x00-\x08\x0b-\x1f\x7f]/.test(s)) return false;
  const first = s[0];
  if (",[]{}#&*!|>'\"%@`".includes(first)) return false;
  if ((first === "-" || first === "?" || first === ":") && (s.length === 1 || s[1] === " ")) return false;
  if (/: |:$/.test(s) || / #/.test(s)) return false;
  return true;
}

function doubleQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\r") out += "\\r";
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0").toUpperCase()}`;
    else out += ch;
  }
  return out + '"';
}

/** A string scalar as yaml.v3 writes it (single line only). */
export function scalarString(s: string): string {
  const canPlain = !resolvesToNonString(s) && !BASE60_RE.test(s) && !OLD_BOOLS.has(s);
  if (!canPlain) return doubleQuote(s);
  if (plainAllowed(s)) return s;
  if (/[\x00-\x1f\x7f]/.test(s) || /^\s|\s$/.test(s) && s.trim() === "") return doubleQuote(s);
  return `'${s.replaceAll("'", "''")}'`;
}

function scalar(v: Value): string | undefined {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") {
    if (Number.isNaN(v)) return ".nan";
    if (!Number.isFinite(v)) return v > 0 ? ".inf" : "-.inf";
    return String(v);
  }
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string") return v.includes("\n") ? undefined : scalarString(v);
  return undefined;
}

function isEmptyCollection(v: Value): string | undefined {
  if (Array.isArray(v) && v.length === 0) return "[]";
  if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0) return "{}";
  return undefined;
}

function literal(s: string, indent: string): string {
  const chomp = s.endsWith("\n") ? (s.endsWith("\n\n") ? "+" : "") : "-";
  const body = s.endsWith("\n") ? s.slice(0, -1) : s;
  const ind = /^\s/.test(body) ? "4" : "";
  return `|${ind}${chomp}\n` + body.split("\n").map((l) => (l === "" ? "" : indent + l)).join("\n") + "\n";
}

const SPACES = "    ";

function emit(v: Value, indent: string, sortKeys: boolean, out: string[]): void {
  if (Array.isArray(v)) {
    for (const item of v) {
      const sc = scalar(item) ?? isEmptyCollection(item);
      if (sc !== undefined) {
        out.push(`${indent}- ${sc}\n`);
      } else if (typeof item === "string") {
        out.push(`${indent}- ${literal(item, indent + SPACES)}`);
      } else {
        // nested block: first line continues after "- "
        const sub: string[] = [];
        emit(item, indent + "  ", sortKeys, sub);
        const text = sub.join("");
        out.push(`${indent}- ${text.slice(indent.length + 2)}`);
      }
    }
    return;
  }
  const obj = v as Record<string, Value>;
  const keys = Object.keys(obj);
  if (sortKeys) keys.sort();
  for (const k of keys) {
    const val = obj[k];
    const key = scalar(k) ?? doubleQuote(k);
    const sc = scalar(val) ?? isEmptyCollection(val);
    if (sc !== undefined) out.push(`${indent}${key}: ${sc}\n`);
    else if (typeof val === "string") out.push(`${indent}${key}: ${literal(val, indent + SPACES)}`);
    else {
      out.push(`${indent}${key}:\n`);
      emit(val, indent + SPACES, sortKeys, out);
    }
  }
}

/** Marshals a JSON-like value to YAML text (ends with a newline). */
export function toGoYaml(v: Value, opts: { sortKeys?: boolean } = {}): string {
  const sortKeys = opts.sortKeys ?? true;
  const sc = scalar(v) ?? isEmptyCollection(v);
  if (sc !== undefined) return sc + "\n";
  if (typeof v === "string") return literal(v, SPACES);
  const out: string[] = [];
  emit(v, "", sortKeys, out);
  return out.join("");
}
