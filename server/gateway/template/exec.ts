/**
 * Execution of a parsed template (Go `text/template` semantics): field chains on maps and structs, pipelines whose
 * previous value is the last argument of the next command, functions with Go's argument checks, if / with / range /
 * break / continue, variables, `and` / `or` short-circuit, `template` calls. Errors read like Go's:
 * `template: NAME:LINE: executing "NAME" at <…>: message`.
 */
import type { Arg, Command, Node, Parsed, Pipe } from "./parse.ts";
import { parse, TemplateError } from "./parse.ts";
import { formatValue, goType, isMap, isStruct, sortedEntries } from "./gofmt.ts";

/** A template function: its Go parameter kinds and its body. */
export interface GoFunc {
  /**
   * One letter per parameter: `a` any (nil when invalid), `s` string, `i` int, `f` float64, `b` bool, `m` map,
   * `l` slice; a trailing `*` makes the last one variadic.
   */
  sig: string;
  fn: (...args: never[]) => unknown;
}

export type FuncMap = Record<string, GoFunc>;

const NO_FINAL = Symbol("no final");
const MAX_DEPTH = 1000;

/** Thrown to end a template with an error (Go's `errorf` in exec). */
class ExecError extends Error {}

/** A compiled template: parse once, execute many times. */
export class Template {
  readonly name: string;
  #parsed: Parsed;
  #funcs: FuncMap;

  constructor(name: string, src: string, funcs: FuncMap, leftDelim = "", rightDelim = "") {
    this.name = name;
    this.#funcs = funcs;
    this.#parsed = parse(name, src, (n) => Object.hasOwn(funcs, n), leftDelim, rightDelim);
  }

  /** Renders the template on `data`; throws a TemplateError (Go's message) when execution fails. */
  execute(data: unknown): string {
    const st = new State(this.name, this.#parsed, this.#funcs, data);
    try {
      st.list(this.#parsed.root, data);
    } catch (e) {
      if (e instanceof ExecError) throw new TemplateError(e.message);
      throw e;
    }
    return st.out.join("");
  }
}

/** Go's truth of a value (isTrue): false, 0, nil, the empty string, slice and map are false. */
export function truth(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  switch (typeof v) {
    case "boolean":
      return v;
    case "number":
      return v !== 0;
    case "string":
      return v.length > 0;
  }
  if (Array.isArray(v) || v instanceof Uint8Array) return v.length > 0;
  if (v instanceof Map) return v.size > 0;
  if (isMap(v)) return Object.keys(v).length > 0;
  return true;
}

const BREAK = 1, CONTINUE = 2;

class State {
  out: string[] = [];
  vars: [string, unknown][];
  line = 0;
  at = "";
  depth = 0;

  constructor(readonly name: string, readonly parsed: Parsed, readonly funcs: FuncMap, data: unknown) {
    this.vars = [["$", data]];
  }

  fail(msg: string): never {
    const at = this.at ? ` at <${this.at}>` : "";
    throw new ExecError(`template: ${this.name}:${this.line}: executing "${this.name}"${at}: ${msg}`);
  }

  /** Runs a list; returns BREAK / CONTINUE when one of those ended it. */
  list(nodes: Node[], dot: unknown): number {
    for (const n of nodes) {
      const r = this.node(n, dot);
      if (r !== 0) return r;
    }
    return 0;
  }

  node(n: Node, dot: unknown): number {
    switch (n.t) {
      case "text":
        this.out.push(n.s);
        return 0;
      case "action": {
        this.line = n.line;
        const v = this.pipe(dot, n.pipe);
        if (n.pipe.decl.length === 0) this.out.push(printable(v));
        return 0;
      }
      case "if":
      case "with": {
        this.line = n.line;
        const mark = this.vars.length;
        const v = this.pipe(dot, n.pipe);
        let r = 0;
        if (truth(v)) r = this.scoped(n.list, n.t === "with" ? v : dot);
        else if (n.else) r = this.scoped(n.else, dot);
        this.vars.length = mark;
        return r;
      }
      case "range":
        return this.range(n, dot);
      case "break":
        return BREAK;
      case "continue":
        return CONTINUE;
      case "template": {
        this.line = n.line;
        const body = this.parsed.defs.get(n.name);
        if (body === undefined) this.fail(`template "${n.name}" not defined`);
        if (++this.depth > MAX_DEPTH) this.fail(`exceeded maximum template depth (${MAX_DEPTH})`);
        const newDot = n.pipe ? this.pipe(dot, n.pipe) : undefined;
        const saved = this.vars;
        this.vars = [["$", newDot]];
        this.list(body, newDot);
        this.vars = saved;
        this.depth--;
        return 0;
      }
    }
  }

  scoped(nodes: Node[], dot: unknown): number {
    const mark = this.vars.length;
    const r = this.list(nodes, dot);
    this.vars.length = mark;
    return r;
  }

  range(n: Extract<Node, { t: "range" }>, dot: unknown): number {
    this.line = n.line;
    const mark = this.vars.length;
    const v = this.pipe(dot, { ...n.pipe, decl: [] });
    const decl = n.pipe.decl;
    const iter = (k: unknown, elem: unknown): number => {
      if (decl.length === 1) this.setDecl(decl[0], elem, n.pipe.assign);
      else if (decl.length === 2) {
        this.setDecl(decl[0], k, n.pipe.assign);
        this.setDecl(decl[1], elem, n.pipe.assign);
      }
      const r = this.scoped(n.list, elem);
      return r;
    };
    let ran = false;
    const run = (k: unknown, elem: unknown): boolean => {
      ran = true;
      return iter(k, elem) === BREAK;
    };
    if (v === undefined || v === null) { /* nothing to range over */ }
    else if (Array.isArray(v) || v instanceof Uint8Array) {
      for (let i = 0; i < v.length; i++) if (run(i, v[i])) break;
    } else if (isMap(v)) {
      for (const [k, x] of sortedEntries(v)) if (run(k, x)) break;
    } else if (typeof v === "number" && Number.isInteger(v)) {
      if (decl.length > 1) this.fail("can't use int as iterator with two variables");
      for (let i = 0; i < v; i++) if (run(i, i)) break;
    } else this.fail(`range can't iterate over ${formatValue(v)}`);
    this.vars.length = mark;
    if (!ran && n.else) return this.scoped(n.else, dot);
    return 0;
  }

  setDecl(name: string, v: unknown, assign: boolean): void {
    if (!assign) {
      this.vars.push([name, v]);
      return;
    }
    for (let i = this.vars.length - 1; i >= 0; i--) {
      if (this.vars[i][0] === name) {
        this.vars[i][1] = v;
        return;
      }
    }
    this.fail(`undefined variable: ${name}`);
  }

  pipe(dot: unknown, p: Pipe): unknown {
    let v: unknown = NO_FINAL;
    for (const c of p.cmds) v = this.command(dot, c, v);
    if (v === NO_FINAL) v = undefined;
    for (const name of p.decl) this.setDecl(name, v, p.assign);
    return v;
  }

  command(dot: unknown, cmd: Command, final: unknown): unknown {
    const head = cmd.args[0];
    switch (head.t) {
      case "field":
        this.at = "." + head.names.join(".");
        return this.fieldChain(dot, head.names, cmd.args, final);
      case "chain": {
        const recv = this.arg(dot, head.node);
        this.at = "." + head.names.join(".");
        return this.fieldChain(recv, head.names, cmd.args, final);
      }
      case "var": {
        const v = this.variable(head.name);
        if (head.names.length === 0) {
          this.notAFunction(cmd.args, final, head.name);
          return v;
        }
        this.at = head.name + "." + head.names.join(".");
        return this.fieldChain(v, head.names, cmd.args, final);
      }
      case "ident":
        return this.call(dot, head.name, cmd.args, final);
      case "pipe":
        this.notAFunction(cmd.args, final, "pipeline");
        return this.pipe(dot, head.pipe);
      case "dot":
        this.notAFunction(cmd.args, final, ".");
        return dot;
      case "nil":
        return this.fail("nil is not a command");
      case "const":
        this.notAFunction(cmd.args, final, formatValue(head.v));
        return head.v;
    }
  }

  notAFunction(args: Arg[], final: unknown, what: string): void {
    if (args.length > 1 || final !== NO_FINAL) this.fail(`can't give argument to non-function ${what}`);
  }

  variable(name: string): unknown {
    for (let i = this.vars.length - 1; i >= 0; i--) if (this.vars[i][0] === name) return this.vars[i][1];
    return this.fail(`undefined variable: ${name}`);
  }

  /** Evaluates `.a.b.c` from `recv`; the last name may be a method taking args (and the final value). */
  fieldChain(recv: unknown, names: string[], args: Arg[], final: unknown): unknown {
    let v = recv;
    let ofStruct = false;
    for (let i = 0; i < names.length; i++) {
      const last = i === names.length - 1;
      const next = this.field(v, names[i], last ? args : [], last ? final : NO_FINAL, ofStruct);
      ofStruct = isStruct(v);
      v = next;
    }
    return v;
  }

  /** `ofStruct`: recv is a struct's field (its Go type is concrete); values from maps and slices are interface {}. */
  field(recv: unknown, name: string, args: Arg[], final: unknown, ofStruct: boolean): unknown {
    if (recv === undefined) return undefined;
    const hasArgs = args.length > 1 || final !== NO_FINAL;
    if (recv === null) this.fail(`nil pointer evaluating interface {}.${name}`);
    if (isStruct(recv)) {
      if (!/^\p{Lu}/u.test(name) || !(name in recv)) this.fail(`can't evaluate field ${name} in type ${recv.goType}`);
      const f = (recv as unknown as Record<string, unknown>)[name];
      if (typeof f === "function") {
        const vals = args.slice(1).map((a) => this.arg(recv, a));
        if (final !== NO_FINAL) vals.push(final);
        try {
          return f.apply(recv, vals);
        } catch (e) {
          return this.fail(`error calling ${name}: ${(e as Error).message}`);
        }
      }
      if (hasArgs) this.fail(`${name} has arguments but cannot be invoked as function`);
      return f;
    }
    if (isMap(recv)) {
      if (hasArgs) this.fail(`${name} is not a method but has arguments`);
      if (recv instanceof Map) return recv.has(name) ? recv.get(name) : undefined;
      return Object.hasOwn(recv, name) ? recv[name] : undefined;
    }
    return this.fail(`can't evaluate field ${name} in type ${ofStruct ? goType(recv) : "interface {}"}`);
  }

  arg(dot: unknown, a: Arg): unknown {
    switch (a.t) {
      case "dot":
        return dot;
      case "nil":
        return null;
      case "const":
        return a.v;
      case "field":
        return this.fieldChain(dot, a.names, [a], NO_FINAL);
      case "var": {
        const v = this.variable(a.name);
        return a.names.length ? this.fieldChain(v, a.names, [a], NO_FINAL) : v;
      }
      case "chain":
        return this.fieldChain(this.arg(dot, a.node), a.names, [a], NO_FINAL);
      case "pipe":
        return this.pipe(dot, a.pipe);
      case "ident":
        return this.call(dot, a.name, [a], NO_FINAL);
    }
  }

  call(dot: unknown, name: string, args: Arg[], final: unknown): unknown {
    const at = name;
    if (name === "and" || name === "or") {
      const n = args.length - 1 + (final === NO_FINAL ? 0 : 1);
      if (n < 1) this.fail(`wrong number of args for ${name}: want at least 1 got 0`);
      let v: unknown;
      for (let i = 1; i < args.length; i++) {
        v = this.arg(dot, args[i]);
        if (truth(v) === (name === "or")) return v;
      }
      return final === NO_FINAL ? v : final;
    }
    const f = this.funcs[name];
    if (f === undefined) this.fail(`"${name}" is not a defined function`);
    const vals: unknown[] = [];
    for (let i = 1; i < args.length; i++) vals.push(this.arg(dot, args[i]));
    if (final !== NO_FINAL) vals.push(final);
    this.at = at;
    const conv = this.checkArgs(name, f.sig, vals);
    try {
      return (f.fn as (...a: unknown[]) => unknown)(...conv);
    } catch (e) {
      if (e instanceof ExecError) throw e;
      return this.fail(`error calling ${name}: ${(e as Error).message}`);
    }
  }

  /** Go's argument checks: count, then each value against its parameter kind. */
  checkArgs(name: string, sig: string, vals: unknown[]): unknown[] {
    const variadic = sig.endsWith("*");
    const kinds = variadic ? sig.slice(0, -1) : sig;
    const fixed = variadic ? kinds.length - 1 : kinds.length;
    if (variadic ? vals.length < fixed : vals.length !== fixed) {
      this.fail(`wrong number of args for ${name}: want ${variadic ? "at least " : ""}${fixed} got ${vals.length}`);
    }
    return vals.map((v, i) => this.convert(kinds[Math.min(i, kinds.length - 1)], v));
  }

  convert(kind: string, v: unknown): unknown {
    if (kind === "a") return v === undefined ? null : v;
    const want = KIND_NAMES[kind];
    if (v === undefined) this.fail(`invalid value; expected ${want}`);
    const ok = kind === "s"
      ? typeof v === "string"
      : kind === "i"
      ? typeof v === "number" && Number.isInteger(v)
      : kind === "f"
      ? typeof v === "number"
      : kind === "b"
      ? typeof v === "boolean"
      : kind === "m"
      ? v === null || isMap(v)
      : v === null || Array.isArray(v);
    if (!ok) this.fail(`wrong type for value; expected ${want}; got ${goType(v)}`);
    return v;
  }
}

const KIND_NAMES: Record<string, string> = {
  s: "string",
  i: "int",
  f: "float64",
  b: "bool",
  m: "map[string]interface {}",
  l: "[]interface {}",
};

/** What an action prints for a value. */
function printable(v: unknown): string {
  return formatValue(v, true);
}
