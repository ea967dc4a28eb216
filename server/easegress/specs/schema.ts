/**
 * How Easegress turns a spec's JSON into a validated Go struct, declared once per struct and run by one engine:
 *
 * 1. `json.Unmarshal` into the kind's default spec: unknown keys ignored, keys matched case-insensitively, absent
 *    fields keep their defaults, a JSON value of the wrong type fails with encoding/json's message
 *    (`json: cannot unmarshal string into Go struct field Spec.port of type uint16`).
 * 2. `pkg/v.Validate`: the JSON schema that invopop/jsonschema derives from the struct tags (required, minimum,
 *    maximum, enum, pattern, uniqueItems, minItems) checked on the re-marshalled value (santhosh-tekuri/jsonschema
 *    reports its first failing leaf); the custom `format` functions of every field that is set; every `Validate()`
 *    method reached while walking the value. All three are reported together, as the ValidateRecorder's JSON.
 *
 * The decoded value is a plain object with every non-pointer field present (zero when unset); pointers, slices and maps
 * are `undefined` when nil. `marshal` gives what Go's json.Marshal writes (declaration order, omitempty).
 */
import { parseGoDuration } from "../gotime.ts";

/** A decoded JSON object as the engine walks it; each kind's typed view is the `T` of its `StructDef<T>`. */
export type Obj = Record<string, unknown>;

/** The schema URL santhosh-tekuri/jsonschema names in its messages. */
export const SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema";

/** A spec that Easegress would refuse; the message is Easegress's. */
export class SpecError extends Error {}

/** The format functions of `pkg/v/format.go`. */
export type Format =
  | "urlname"
  | "httpmethod"
  | "httpmethod-array"
  | "httpcode"
  | "httpcode-array"
  | "duration"
  | "ipcidr-array"
  | "regexp"
  | "base64"
  | "url";

/** A Go type. `go` is its name in encoding/json messages. */
export type GoType =
  | { t: "bool" }
  | { t: "string" }
  | { t: "int"; go: "int" | "int64" | "int32" | "uint8" | "uint16" | "uint32" | "uint64" }
  | { t: "float" }
  | { t: "array"; items: GoType; go?: string }
  | { t: "map"; values: GoType; go?: string }
  | { t: "struct"; def: StructDef; ptr: boolean }
  | { t: "any" };

/** A struct field with its json and jsonschema tags. */
export interface Field {
  type: GoType;
  omitempty?: boolean;
  required?: boolean;
  minimum?: number;
  maximum?: number;
  enum?: string[];
  pattern?: string;
  format?: Format;
  uniqueItems?: boolean;
  minItems?: number;
  minLength?: number;
  /**
   * the `Validate() error` of a named slice or map type (called with the field's value when it is not nil); a method,
   * so that a check written for its field's type (`(v: HeaderMatch[]) => ...`) fits
   */
  check?(v: unknown): string | undefined;
}

/**
 * A Go struct: its fields by JSON name in declaration order (inline embedded structs flattened). `T` is the typed view
 * of the decoded value that `validate` reads (the engine guarantees the declared fields are present with their types);
 * `StructDef` without it is any struct, as the engine holds them.
 */
export interface StructDef<T extends object = object> {
  /** package-qualified Go name, e.g. `httpserver.Spec` */
  go: string;
  fields: Record<string, Field>;
  /** the DefaultSpec values (only for a kind's root struct) */
  defaults?(): Obj;
  /** its `Validate() error`: the message, or undefined when valid */
  validate?(v: T): string | undefined;
  /** Validate's receiver: a pointer receiver is not called on a struct held by value */
  receiver?: "ptr" | "value";
}

// ---------------------------------------------------------------- field constructors

export const BOOL: GoType = { t: "bool" };
export const STRING: GoType = { t: "string" };
export const INT: GoType = { t: "int", go: "int" };
export const INT64: GoType = { t: "int", go: "int64" };
export const UINT8: GoType = { t: "int", go: "uint8" };
export const UINT16: GoType = { t: "int", go: "uint16" };
export const UINT32: GoType = { t: "int", go: "uint32" };
export const FLOAT: GoType = { t: "float" };
export const ANY: GoType = { t: "any" };
export const arrayOf = (items: GoType, go?: string): GoType => ({ t: "array", items, go });
export const mapOf = (values: GoType, go?: string): GoType => ({ t: "map", values, go });
export const ptr = (def: StructDef): GoType => ({ t: "struct", def, ptr: true });
export const val = (def: StructDef): GoType => ({ t: "struct", def, ptr: false });
export const STRINGS = arrayOf(STRING);
export const STRING_MAP = mapOf(STRING);
/** `map[string]interface{}` */
export const RAW_MAP = mapOf(ANY, "map[string]interface {}");

/** An omitempty field. */
export const opt = (type: GoType, more: Omit<Field, "type" | "omitempty"> = {}): Field => ({
  type,
  omitempty: true,
  ...more,
});
/** A field without omitempty. */
export const req = (type: GoType, more: Omit<Field, "type"> = {}): Field => ({ type, ...more });
/** A field holding any JSON value (decoded, stored and checked as it is). */
export const RAW = opt(ANY);

function goTypeName(t: GoType): string {
  switch (t.t) {
    case "bool":
      return "bool";
    case "string":
      return "string";
    case "int":
      return t.go;
    case "float":
      return "float64";
    case "any":
      return "interface {}";
    case "array":
      return t.go ?? `[]${goTypeName(t.items)}`;
    case "map":
      return t.go ?? `map[string]${goTypeName(t.values)}`;
    case "struct":
      return (t.ptr ? "*" : "") + t.def.go;
  }
}

const shortName = (def: StructDef) => def.go.slice(def.go.lastIndexOf(".") + 1);

/** encoding/json's name for a JSON value's type. */
export function jsonKind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "boolean") return "bool";
  return typeof v;
}

const INT_RANGE: Record<string, [number, number]> = {
  int: [-(2 ** 63), 2 ** 63 - 1],
  int64: [-(2 ** 63), 2 ** 63 - 1],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 2 ** 32 - 1],
  uint64: [0, 2 ** 64 - 1],
};

/** The zero value of a Go type, as the decoded representation holds it. */
function zero(t: GoType): unknown {
  switch (t.t) {
    case "bool":
      return false;
    case "string":
      return "";
    case "int":
    case "float":
      return 0;
    case "struct":
      return t.ptr ? undefined : zeroStruct(t.def);
    default:
      return undefined;
  }
}

function zeroStruct(def: StructDef): Obj {
  const o: Obj = {};
  for (const [k, f] of Object.entries(def.fields)) o[k] = zero(f.type);
  return o;
}

// ---------------------------------------------------------------- 1. json.Unmarshal

interface Ctx {
  struct?: StructDef;
  stack: string[];
}

function typeError(ctx: Ctx, what: string, t: GoType): SpecError {
  const into = ctx.struct ? `Go struct field ${shortName(ctx.struct)}.${ctx.stack.join(".")}` : "Go value";
  return new SpecError(`json: cannot unmarshal ${what} into ${into} of type ${goTypeName(t)}`);
}

function decodeValue(raw: unknown, t: GoType, ctx: Ctx, current: unknown): unknown {
  if (raw === null || raw === undefined) {
    // null leaves scalars and struct values alone, makes pointers, slices and maps nil, and an interface{} null
    if (t.t === "any") return null;
    return t.t === "array" || t.t === "map" || (t.t === "struct" && t.ptr) ? undefined : current;
  }
  switch (t.t) {
    case "any":
      return raw;
    case "bool":
      if (typeof raw !== "boolean") throw typeError(ctx, jsonKind(raw), t);
      return raw;
    case "string":
      if (typeof raw !== "string") throw typeError(ctx, jsonKind(raw), t);
      return raw;
    case "float":
      if (typeof raw !== "number") throw typeError(ctx, jsonKind(raw), t);
      return raw;
    case "int": {
      if (typeof raw !== "number") throw typeError(ctx, jsonKind(raw), t);
      const [lo, hi] = INT_RANGE[t.go];
      if (!Number.isInteger(raw) || raw < lo || raw > hi) throw typeError(ctx, `number ${raw}`, t);
      return raw;
    }
    case "array": {
      if (!Array.isArray(raw)) throw typeError(ctx, jsonKind(raw), t);
      return raw.map((x) => decodeValue(x, t.items, ctx, zero(t.items)));
    }
    case "map": {
      if (typeof raw !== "object" || Array.isArray(raw)) throw typeError(ctx, jsonKind(raw), t);
      const out: Obj = {};
      for (const [k, v] of Object.entries(raw as Obj)) {
        out[k] = decodeValue(v, t.values, { struct: ctx.struct, stack: [...ctx.stack, k] }, zero(t.values));
      }
      return out;
    }
    case "struct": {
      if (typeof raw !== "object" || Array.isArray(raw)) throw typeError(ctx, jsonKind(raw), val(t.def));
      const base = (current && typeof current === "object" ? current : zeroStruct(t.def)) as Obj;
      return decodeStruct(raw as Obj, t.def, base, ctx.stack);
    }
  }
}

function decodeStruct(raw: Obj, def: StructDef, base: Obj, stack: string[]): Obj {
  const out: Obj = { ...base };
  const names = Object.keys(def.fields);
  for (const [key, v] of Object.entries(raw)) {
    const name = names.includes(key) ? key : names.find((n) => n.toLowerCase() === key.toLowerCase());
    if (name === undefined) continue;
    const f = def.fields[name];
    out[name] = decodeValue(v, f.type, { struct: def, stack: [...stack, name] }, out[name]);
  }
  return out;
}

// ---------------------------------------------------------------- json.Marshal

function isZero(t: GoType, v: unknown): boolean {
  if (v === undefined || v === null) return true;
  switch (t.t) {
    case "bool":
      return v === false;
    case "string":
      return v === "";
    case "int":
    case "float":
      return v === 0;
    case "array":
      return (v as unknown[]).length === 0;
    case "map":
      return Object.keys(v as Obj).length === 0;
    default:
      return false;
  }
}

function marshalValue(t: GoType, v: unknown): unknown {
  if (v === undefined) return null;
  switch (t.t) {
    case "array":
      return (v as unknown[]).map((x) => marshalValue(t.items, x));
    case "map":
      return Object.fromEntries(Object.entries(v as Obj).map(([k, x]) => [k, marshalValue(t.values, x)]));
    case "struct":
      return marshal(t.def, v as Obj);
    default:
      return v;
  }
}

/** What Go's json.Marshal writes for a decoded struct (fields in declaration order, omitempty applied). */
export function marshal(def: StructDef, v: Obj): Obj {
  const out: Obj = {};
  for (const [k, f] of Object.entries(def.fields)) {
    const x = v[k];
    if (f.omitempty && (f.type.t === "struct" && !f.type.ptr ? false : isZero(f.type, x))) continue;
    out[k] = marshalValue(f.type, x);
  }
  return out;
}

// ---------------------------------------------------------------- 2a. JSON schema

function schemaType(t: GoType): string | undefined {
  switch (t.t) {
    case "bool":
      return "boolean";
    case "string":
      return "string";
    case "int":
      return "integer";
    case "float":
      return "number";
    case "array":
      return "array";
    case "map":
    case "struct":
      return "object";
    default:
      return undefined;
  }
}

function instanceType(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  if (typeof v === "object") return "object";
  return typeof v;
}

interface SchemaErr {
  instance: string;
  keyword: string;
  message: string;
}

function checkSchema(f: Field, v: unknown, inst: string, kw: string, errs: SchemaErr[]): void {
  const push = (k: string, message: string) => errs.push({ instance: inst, keyword: `${kw}/${k}`, message });
  const want = schemaType(f.type);
  if (want !== undefined) {
    const got = instanceType(v);
    if (!(got === want || (want === "number" && got === "integer"))) {
      push("type", `expected ${want}, but got ${got}`);
      return;
    }
  }
  if (f.enum && !f.enum.includes(v as string)) {
    const list = f.enum.map((e) => JSON.stringify(e));
    push("enum", list.length === 1 ? `value must be ${list[0]}` : `value must be one of ${list.join(", ")}`);
  }
  if (typeof v === "number") {
    if (f.minimum !== undefined && v < f.minimum) push("minimum", `must be >= ${f.minimum} but found ${v}`);
    if (f.maximum !== undefined && v > f.maximum) push("maximum", `must be <= ${f.maximum} but found ${v}`);
  }
  if (typeof v === "string" && f.minLength !== undefined && [...v].length < f.minLength) {
    push("minLength", `length must be >= ${f.minLength}, but got ${[...v].length}`);
  }
  if (typeof v === "string" && f.pattern !== undefined && !new RegExp(f.pattern, "u").test(v)) {
    push("pattern", `does not match pattern '${f.pattern}'`);
  }
  if (Array.isArray(v)) {
    if (f.minItems !== undefined && v.length < f.minItems) {
      push("minItems", `minimum ${f.minItems} items required, but found ${v.length} items`);
    }
    if (f.uniqueItems) {
      const seen = v.map((x) => JSON.stringify(x));
      outer: for (let i = 0; i < seen.length; i++) {
        for (let j = i + 1; j < seen.length; j++) {
          if (seen[i] === seen[j]) {
            push("uniqueItems", `items at index ${i} and ${j} are equal`);
            break outer;
          }
        }
      }
    }
    const t = f.type;
    if (t.t === "array") v.forEach((x, i) => checkSchema({ type: t.items }, x, `${inst}/${i}`, `${kw}/items`, errs));
  }
  if (f.type.t === "map" && v && typeof v === "object") {
    const t = f.type;
    for (const [k, x] of Object.entries(v as Obj)) {
      checkSchema({ type: t.values }, x, `${inst}/${k}`, `${kw}/additionalProperties`, errs);
    }
  }
  if (f.type.t === "struct" && v && typeof v === "object") checkStruct(f.type.def, v as Obj, inst, kw, errs);
}

function checkStruct(def: StructDef, v: Obj, inst: string, kw: string, errs: SchemaErr[]): void {
  const missing = Object.entries(def.fields).filter(([k, f]) => f.required && !(k in v)).map(([k]) => `'${k}'`);
  if (missing.length > 0) {
    errs.push({ instance: inst, keyword: `${kw}/required`, message: `missing properties: ${missing.join(", ")}` });
  }
  for (const [k, f] of Object.entries(def.fields)) {
    if (k in v) checkSchema(f, v[k], `${inst}/${k}`, `${kw}/properties/${k}`, errs);
  }
}

// ---------------------------------------------------------------- 2b. formats

const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"];
const URLNAME_RE = /^[\p{L}0-9\-_.~]{1,253}$/u;

/** Whether `s` is a valid Go regexp (RE2); JavaScript's parser stands in for it. */
export function regexpError(s: string): string | undefined {
  try {
    new RegExp(s, "u");
    return undefined;
  } catch (err) {
    return `error parsing regexp: ${(err as Error).message}`;
  }
}

/** Go's base64.StdEncoding.DecodeString error, or undefined. */
export function base64Error(s: string): string | undefined {
  let i = 0;
  for (; i < s.length; i++) if (!/[A-Za-z0-9+/]/.test(s[i])) break;
  const body = i;
  let pad = 0;
  while (i < s.length && s[i] === "=" && pad < 2) i++, pad++;
  if (i < s.length) return `illegal base64 data at input byte ${i}`;
  if ((body + pad) % 4 !== 0 || (pad > 0 && body % 4 < 2) || (pad === 0 && body % 4 === 1)) {
    return `illegal base64 data at input byte ${pad > 0 ? body : body - (body % 4)}`;
  }
  if (pad === 0 && body % 4 !== 0) return `illegal base64 data at input byte ${body}`;
  return undefined;
}

function isIPOrCIDR(s: string): boolean {
  const [ip, bits, ...rest] = s.split("/");
  if (rest.length > 0) return false;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  const isV4 = !!v4 && v4.slice(1).every((o) => Number(o) <= 255 && !(o.length > 1 && o[0] === "0"));
  const isV6 = !isV4 && ip.includes(":") && /^[0-9A-Fa-f:.]+$/.test(ip) && (() => {
    try {
      new URL(`http://[${ip}]/`);
      return true;
    } catch {
      return false;
    }
  })();
  if (!isV4 && !isV6) return false;
  if (bits === undefined) return true;
  return /^\d+$/.test(bits) && Number(bits) <= (isV4 ? 32 : 128);
}

function formatError(format: Format, v: unknown): string | undefined {
  switch (format) {
    case "urlname":
      return URLNAME_RE.test(v as string) ? undefined : `invalid name format: ${v}`;
    case "httpmethod":
      return HTTP_METHODS.includes(v as string) ? undefined : "invalid http method";
    case "httpmethod-array":
      return ((v ?? []) as string[]).every((m) => HTTP_METHODS.includes(m)) ? undefined : "invalid http method";
    case "httpcode":
      return (v as number) < 100 || (v as number) >= 600 ? "invalid http code" : undefined;
    case "httpcode-array":
      return ((v ?? []) as number[]).some((c) => c < 100 || c >= 600) ? "invalid http code" : undefined;
    case "duration":
      try {
        parseGoDuration(v as string);
        return undefined;
      } catch (err) {
        return `invalid duration: ${(err as Error).message}`;
      }
    case "ipcidr-array":
      return ((v ?? []) as string[]).every(isIPOrCIDR) ? undefined : "invalid ip or cidr";
    case "regexp": {
      const e = regexpError(v as string);
      return e === undefined ? undefined : `invalid regular expression: ${e}`;
    }
    case "base64": {
      const e = base64Error(v as string);
      return e === undefined ? undefined : `invalid base64: ${e}`;
    }
    case "url":
      // deno-lint-ignore no-control-regex
      return /[\x00-\x1f\x7f]/.test(v as string)
        ? `invalid url: parse ${JSON.stringify(v)}: net/url: invalid control character in URL`
        : undefined;
  }
}

// ---------------------------------------------------------------- 2c. the walk (formats + Validate)

interface Recorder {
  jsonschemaErrs: string[];
  formatErrs: string[];
  generalErrs: string[];
  systemErr?: string;
}

function walk(t: GoType, v: unknown, field: string | undefined, fieldDef: Field | undefined, rec: Recorder): void {
  if (v === undefined || v === null) return;
  if (fieldDef?.format && !(fieldDef.omitempty && isZero(t, v))) {
    const e = formatError(fieldDef.format, v);
    if (e !== undefined) rec.formatErrs.push(`${field}: ${e}`);
  }
  if (fieldDef?.check) {
    const e = fieldDef.check(v);
    if (e !== undefined) rec.generalErrs.push(`${field}: ${e}`);
  }
  if (t.t === "struct") {
    const def = t.def;
    const receiver = def.receiver ?? "ptr";
    // pkg/v: a Validate on a pointer receiver is only found through a pointer, one on a value receiver is called on
    // the value that the pointer points to (so it is named by its type, not by the field)
    const called = def.validate && (t.ptr || receiver === "value");
    if (called) {
      const label = t.ptr && receiver === "ptr" ? (field ?? `*${def.go}`) : (t.ptr ? def.go : (field ?? def.go));
      let msg: string | undefined;
      try {
        msg = def.validate!(v as Obj);
      } catch (err) {
        rec.systemErr = `BUG: call Validate for *${def.go} panic: ${(err as Error).message}`;
      }
      if (msg !== undefined) rec.generalErrs.push(`${label}: ${msg}`);
    }
    for (const [k, f] of Object.entries(def.fields)) walk(f.type, (v as Obj)[k], k, f, rec);
  } else if (t.t === "array") {
    for (const x of v as unknown[]) walk(t.items, x, undefined, undefined, rec);
  } else if (t.t === "map") {
    for (const x of Object.values(v as Obj)) walk(t.values, x, undefined, undefined, rec);
  }
}

function recorderText(rec: Recorder): string | undefined {
  const out: Obj = {};
  if (rec.jsonschemaErrs.length > 0) out.jsonschemaErrs = rec.jsonschemaErrs;
  if (rec.formatErrs.length > 0) out.formatErrs = rec.formatErrs;
  if (rec.generalErrs.length > 0) out.generalErrs = rec.generalErrs;
  if (rec.systemErr) out.systemErr = rec.systemErr;
  return Object.keys(out).length === 0 ? undefined : JSON.stringify(out);
}

/** pkg/v.Validate of a decoded root struct (held by pointer): the recorder's JSON, or undefined when valid. */
export function validateStruct(def: StructDef, v: Obj): string | undefined {
  const rec: Recorder = { jsonschemaErrs: [], formatErrs: [], generalErrs: [] };
  const errs: SchemaErr[] = [];
  checkStruct(def, marshal(def, v), "", "", errs);
  if (errs.length > 0) {
    const e = errs[0];
    rec.jsonschemaErrs.push(
      `jsonschema: '${e.instance}' does not validate with ${SCHEMA_URL}#${e.keyword}: ${e.message}`,
    );
  }
  walk(ptr(def), v, undefined, undefined, rec);
  return recorderText(rec);
}

/** json.Unmarshal of `raw` into the struct's defaults (throws SpecError with encoding/json's message). */
export function decodeStructValue(def: StructDef, raw: unknown): Obj {
  if (raw === null || raw === undefined) return { ...zeroStruct(def), ...(def.defaults?.() ?? {}) };
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new SpecError(`json: cannot unmarshal ${jsonKind(raw)} into Go value of type ${def.go}`);
  }
  return decodeStruct(raw as Obj, def, { ...zeroStruct(def), ...(def.defaults?.() ?? {}) }, []);
}

/** Unmarshal + Validate: the decoded value, or a SpecError with the message Easegress gives. */
export function decodeAndValidate<T extends object>(def: StructDef<T>, raw: unknown): T {
  const v = decodeStructValue(def, raw);
  const err = validateStruct(def, v);
  if (err !== undefined) throw new SpecError(err);
  return v as T;
}
