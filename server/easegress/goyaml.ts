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
/** Control characters (other than tab and newline when `allowTabNl`). */
function hasControl(s: string, allowTabNl = false): boolean {
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if ((c < 0x20 && !(allowTabNl && (c === 9 || c === 10))) || c === 0x7f) return true;
  }
  return false;
}

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
  if (hasControl(s, true)) return false;
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
  if (hasControl(s) || (/^\s|\s$/.test(s) && s.trim() === "")) return doubleQuote(s);
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

function literal(s: string, indent: number): string {
  const chomp = s.endsWith("\n") ? (s.endsWith("\n\n") ? "+" : "") : "-";
  const body = s.endsWith("\n") ? s.slice(0, -1) : s;
  const ind = /^\s/.test(body) ? "4" : "";
  const pad = " ".repeat(indent);
  return `|${ind}${chomp}\n` + body.split("\n").map((l) => (l === "" ? "" : pad + l)).join("\n") + "\n";
}

/** yaml.v3's increase_indent outside a sequence item: the next multiple of 4. */
const align = (indent: number) => 4 * Math.floor((indent + 4) / 4);

/**
 * Emits a block collection whose lines start at column `indent`; `first` is what the first line starts with when it
 * continues a `- ` of the parent sequence (the parent already wrote the indentation).
 */
function emit(v: Value, indent: number, sortKeys: boolean, out: string[], continued: boolean): void {
  const pad = (first: boolean) => (first && continued ? "" : " ".repeat(indent));
  if (Array.isArray(v)) {
    v.forEach((item, i) => {
      const lead = `${pad(i === 0)}- `;
      const sc = scalar(item) ?? isEmptyCollection(item);
      if (sc !== undefined) out.push(`${lead}${sc}\n`);
      else if (typeof item === "string") out.push(`${lead}${literal(item, align(indent))}`);
      else {
        out.push(lead);
        emit(item, indent + 2, sortKeys, out, true);
      }
    });
    return;
  }
  const obj = v as Record<string, Value>;
  const keys = Object.keys(obj);
  if (sortKeys) keys.sort();
  keys.forEach((k, i) => {
    const val = obj[k];
    const key = `${pad(i === 0)}${scalar(k) ?? doubleQuote(k)}:`;
    const sc = scalar(val) ?? isEmptyCollection(val);
    if (sc !== undefined) out.push(`${key} ${sc}\n`);
    else if (typeof val === "string") out.push(`${key} ${literal(val, align(indent))}`);
    else {
      out.push(`${key}\n`);
      emit(val, align(indent), sortKeys, out, false);
    }
  });
}

/** Marshals a JSON-like value to YAML text (ends with a newline). */
export function toGoYaml(v: Value, opts: { sortKeys?: boolean } = {}): string {
  const sortKeys = opts.sortKeys ?? true;
  const sc = scalar(v) ?? isEmptyCollection(v);
  if (sc !== undefined) return sc + "\n";
  if (typeof v === "string") return literal(v, 4);
  const out: string[] = [];
  emit(v, 0, sortKeys, out, false);
  return out.join("");
}
