/**
 * Parsing of Go `text/template` source into a node tree (once, when a filter is created). The lexer follows Go's:
 * actions between the delimiters, `{{- ` / ` -}}` trim the text next to them, `{{/* … * /}}` comments, pipelines of
 * commands separated by `|`, variables declared with `:=` and assigned with `=`.
 */

/** An argument or the head of a command. */
export type Arg =
  | { t: "dot" }
  | { t: "nil" }
  | { t: "const"; v: unknown }
  /** `.a.b` on dot */
  | { t: "field"; names: string[] }
  /** `$x.a.b` */
  | { t: "var"; name: string; names: string[] }
  /** `(pipeline).a.b` */
  | { t: "chain"; node: Arg; names: string[] }
  | { t: "pipe"; pipe: Pipe }
  | { t: "ident"; name: string };

/** One command of a pipeline: its head and arguments. */
export interface Command {
  args: Arg[];
}

/** A pipeline with optional variable declarations (`$x := …`, `$k, $v := …`) or assignment (`$x = …`). */
export interface Pipe {
  decl: string[];
  assign: boolean;
  cmds: Command[];
}

/** A node of the template body. */
export type Node =
  | { t: "text"; s: string }
  | { t: "action"; pipe: Pipe; line: number }
  | { t: "if" | "with"; pipe: Pipe; list: Node[]; else: Node[] | null; line: number }
  | { t: "range"; pipe: Pipe; list: Node[]; else: Node[] | null; line: number }
  | { t: "break" | "continue" }
  | { t: "template"; name: string; pipe: Pipe | null; line: number };

/** A parsed template: its body and the templates it defines (`define` / `block`). */
export interface Parsed {
  root: Node[];
  defs: Map<string, Node[]>;
}

type Tok =
  | { k: "text"; s: string }
  | { k: "open"; line: number }
  | { k: "close" }
  | { k: "ident" | "field" | "var" | "string" | "number" | "char" | "bool" | "nil" | "dot"; s: string }
  | { k: "pipe" | "lparen" | "rparen" | "decl" | "assign" | "comma" | "space" };

/** A template syntax error, with Go's `template: name:line: message` form. */
export class TemplateError extends Error {}

const KEYWORDS = new Set(["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"]);

function lex(name: string, src: string, left: string, right: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  let line = 1;
  const fail = (msg: string): never => {
    throw new TemplateError(`template: ${name}:${line}: ${msg}`);
  };
  const countLines = (s: string) => {
    for (let j = 0; j < s.length; j++) if (s.charCodeAt(j) === 10) line++;
  };
  while (i < src.length) {
    const open = src.indexOf(left, i);
    let text = open < 0 ? src.slice(i) : src.slice(i, open);
    if (open < 0) {
      if (text !== "") toks.push({ k: "text", s: text });
      break;
    }
    let p = open + left.length;
    // "{{- " trims the preceding text's trailing white space
    if (src[p] === "-" && isSpace(src[p + 1] ?? "")) {
      text = text.replace(/[ \t\r\n]+$/, "");
      p += 2;
    }
    if (text !== "") toks.push({ k: "text", s: text });
    countLines(src.slice(i, open));
    while (isSpace(src[p] ?? "")) p++;
    const trimAfter = (end: number): number => {
      // returns the index after the right delimiter, trimming the following space when " -}}" was used
      let q = end + right.length;
      if (src[end - 1] === "-" && isSpace(src[end - 2] ?? "")) {
        while (q < src.length && isSpace(src[q])) {
          if (src[q] === "\n") line++;
          q++;
        }
      }
      return q;
    };
    if (src.startsWith("/*", p)) {
      const endC = src.indexOf("*/", p + 2);
      if (endC < 0) fail("unclosed comment");
      let q = endC + 2;
      countLines(src.slice(p, q));
      while (q < src.length && isSpace(src[q]) && !src.startsWith(" -" + right, q)) q++;
      if (src.startsWith(" -" + right, q)) q += 2;
      else if (src.startsWith("-" + right, q)) q++;
      if (!src.startsWith(right, q)) fail("comment ends before closing delimiter");
      i = src[q - 1] === "-" ? trimAfter(q) : q + right.length;
      continue;
    }
    toks.push({ k: "open", line });
    // inside the action
    while (true) {
      if (p >= src.length) fail("unclosed action");
      const c = src[p];
      if (src.startsWith(right, p)) {
        toks.push({ k: "close" });
        i = p + right.length;
        break;
      }
      if (c === "-" && src.startsWith(right, p + 1) && isSpace(src[p - 1])) {
        toks.push({ k: "close" });
        i = trimAfter(p + 1);
        break;
      }
      if (isSpace(c)) {
        if (c === "\n") line++;
        p++;
        if (toks[toks.length - 1].k !== "space") toks.push({ k: "space" });
        continue;
      }
      if (c === "|") toks.push({ k: "pipe" }), p++;
      else if (c === "(") toks.push({ k: "lparen" }), p++;
      else if (c === ")") toks.push({ k: "rparen" }), p++;
      else if (c === ",") toks.push({ k: "comma" }), p++;
      else if (c === ":" && src[p + 1] === "=") toks.push({ k: "decl" }), p += 2;
      else if (c === "=") toks.push({ k: "assign" }), p++;
      else if (c === '"') {
        let q = p + 1;
        while (q < src.length && src[q] !== '"') {
          if (src[q] === "\\") q++;
          if (src[q] === "\n") fail("unterminated quoted string");
          q++;
        }
        if (q >= src.length) fail("unterminated quoted string");
        toks.push({ k: "string", s: unquote(src.slice(p + 1, q), fail) });
        p = q + 1;
      } else if (c === "`") {
        const q = src.indexOf("`", p + 1);
        if (q < 0) fail("unterminated raw quoted string");
        toks.push({ k: "string", s: src.slice(p + 1, q) });
        countLines(src.slice(p, q));
        p = q + 1;
      } else if (c === "'") {
        let q = p + 1;
        while (q < src.length && src[q] !== "'") q += src[q] === "\\" ? 2 : 1;
        const s = unquote(src.slice(p + 1, q), fail);
        if ([...s].length !== 1) fail(`malformed character constant: ${src.slice(p, q + 1)}`);
        toks.push({ k: "char", s: String(s.codePointAt(0)) });
        p = q + 1;
      } else if (c === "$") {
        const m = /^\$[\p{L}_\p{Nd}]*/u.exec(src.slice(p))!;
        toks.push({ k: "var", s: m[0] });
        p += m[0].length;
      } else if (c === ".") {
        const m = /^\.[\p{L}_][\p{L}_\p{Nd}]*/u.exec(src.slice(p));
        if (m) {
          toks.push({ k: "field", s: m[0].slice(1) });
          p += m[0].length;
        } else if (/[0-9]/.test(src[p + 1] ?? "")) {
          const n = /^[0-9.eE+\-_xXa-fA-FpPoObB]+/.exec(src.slice(p))![0];
          toks.push({ k: "number", s: n });
          p += n.length;
        } else {
          toks.push({ k: "dot", s: "." });
          p++;
        }
      } else if (/[0-9+\-]/.test(c)) {
        const m = /^[+\-]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9_]*\.?[0-9_]*([eE][+\-]?[0-9_]+)?)/.exec(
          src.slice(p),
        )!;
        if (m[0] === "" || m[0] === "+" || m[0] === "-") fail(`unexpected "${c}" in command`);
        toks.push({ k: "number", s: m[0] });
        p += m[0].length;
      } else if (/[\p{L}_]/u.test(c)) {
        const m = /^[\p{L}_][\p{L}_\p{Nd}]*/u.exec(src.slice(p))!;
        const w = m[0];
        if (w === "true" || w === "false") toks.push({ k: "bool", s: w });
        else if (w === "nil") toks.push({ k: "nil", s: w });
        else toks.push({ k: "ident", s: w });
        p += w.length;
      } else fail(`unexpected ${JSON.stringify(c)} in command`);
    }
  }
  return toks;
}

function isSpace(c: string): boolean {
  return c === " " || c === "\t" || c === "\r" || c === "\n";
}

function unquote(s: string, fail: (m: string) => never): string {
  if (s.indexOf("\\") < 0) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== "\\") {
      out += c;
      continue;
    }
    const e = s[++i];
    const simple: Record<string, string> = {
      n: "\n",
      t: "\t",
      r: "\r",
      "\\": "\\",
      '"': '"',
      "'": "'",
      a: "\x07",
      b: "\b",
      f: "\f",
      v: "\v",
    };
    if (e in simple) out += simple[e];
    else if (e === "x" || e === "u" || e === "U") {
      const n = e === "x" ? 2 : e === "u" ? 4 : 8;
      const hex = s.slice(i + 1, i + 1 + n);
      if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== n) fail("invalid syntax");
      out += e === "x" ? String.fromCharCode(parseInt(hex, 16)) : String.fromCodePoint(parseInt(hex, 16));
      i += n;
    } else if (/[0-7]/.test(e)) {
      out += String.fromCharCode(parseInt(s.slice(i, i + 3), 8));
      i += 2;
    } else fail("invalid syntax");
  }
  return out;
}

/** Go number literal → a JS number (ints and floats alike). */
function parseNumber(s: string): number | null {
  const clean = s.replace(/_/g, "");
  const neg = clean.startsWith("-");
  const body = clean.replace(/^[+\-]/, "");
  let v: number;
  if (/^0[xX]/.test(body)) v = parseInt(body.slice(2), 16);
  else if (/^0[bB]/.test(body)) v = parseInt(body.slice(2), 2);
  else if (/^0[oO]/.test(body)) v = parseInt(body.slice(2), 8);
  else if (/^0[0-7]+$/.test(body)) v = parseInt(body, 8);
  else if (/^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+\-]?[0-9]+)?$/.test(body)) v = Number(body);
  else return null;
  return neg ? -v : v;
}

/** Parses template source with the given delimiters (Go's defaults `{{` and `}}`). */
export function parse(
  name: string,
  src: string,
  isFunc: (name: string) => boolean,
  left = "{{",
  right = "}}",
): Parsed {
  const toks = lex(name, src, left || "{{", right || "}}");
  let pos = 0;
  let line = 1;
  const defs = new Map<string, Node[]>();
  let rangeDepth = 0;
  /** variables in scope, checked at parse time as Go does */
  let vars = ["$"];
  const fail = (msg: string): never => {
    throw new TemplateError(`template: ${name}:${line}: ${msg}`);
  };
  const peek = (): Tok | undefined => toks[pos];
  const skipSpace = () => {
    while (toks[pos]?.k === "space") pos++;
  };
  const next = (): Tok | undefined => {
    skipSpace();
    return toks[pos++];
  };
  const peekNonSpace = (): Tok | undefined => {
    let j = pos;
    while (toks[j]?.k === "space") j++;
    return toks[j];
  };

  /** The keyword after `{{` (if any) without consuming. */
  const actionKeyword = (): string | null => {
    const t = peekNonSpace();
    return t?.k === "ident" && KEYWORDS.has(t.s) ? t.s : null;
  };

  // list parsing: returns nodes and the terminating keyword ("end", "else" or null at EOF)
  const parseList = (stopAt: boolean): { nodes: Node[]; stop: string | null } => {
    const nodes: Node[] = [];
    while (pos < toks.length) {
      const t = toks[pos++];
      if (t.k === "text") {
        nodes.push({ t: "text", s: t.s });
        continue;
      }
      if (t.k !== "open") fail("unexpected token");
      line = (t as { line: number }).line;
      const kw = actionKeyword();
      if (kw === "end" || kw === "else") {
        if (!stopAt) fail(`unexpected {{${kw}}}`);
        next();
        if (kw === "end") expectClose();
        return { nodes, stop: kw };
      }
      nodes.push(parseAction(kw));
    }
    if (stopAt) fail("unexpected EOF");
    return { nodes, stop: null };
  };

  const expectClose = () => {
    const t = next();
    if (t?.k !== "close") fail(`unexpected ${describe(t)} in end`);
  };

  const parseControl = (kind: "if" | "with" | "range", l: number): Node => {
    if (kind === "range") rangeDepth++;
    const mark = vars.length;
    const pipe = parsePipe(kind, true);
    const body = parseList(true);
    let elseList: Node[] | null = null;
    if (body.stop === "else") {
      const t = peekNonSpace();
      if (t?.k === "ident" && (t.s === "if" || t.s === "with") && (kind === t.s || (kind === "if" && t.s === "if"))) {
        // {{else if …}} / {{else with …}}: a nested control that shares our {{end}}
        next();
        elseList = [parseControl(t.s as "if" | "with", line)];
      } else {
        expectClose();
        const e = parseList(true);
        if (e.stop !== "end") fail(`expected end; found {{else}}`);
        elseList = e.nodes;
      }
    }
    if (kind === "range") rangeDepth--;
    vars.length = mark;
    return { t: kind, pipe, list: body.nodes, else: elseList, line: l };
  };

  const parseAction = (kw: string | null): Node => {
    const l = line;
    if (kw === null) return { t: "action", pipe: parsePipe("command", false), line: l };
    next();
    switch (kw) {
      case "if":
      case "with":
      case "range":
        return parseControl(kw, l);
      case "break":
      case "continue":
        if (rangeDepth === 0) fail(`{{${kw}}} outside {{range}}`);
        expectClose();
        return { t: kw };
      case "template": {
        const n = next();
        if (n?.k !== "string") fail(`unexpected ${describe(n)} in template clause`);
        const pipe = peekNonSpace()?.k === "close" ? (next(), null) : parsePipe("template", false);
        return { t: "template", name: (n as { s: string }).s, pipe, line: l };
      }
      case "define":
      case "block": {
        const n = next();
        if (n?.k !== "string") fail(`unexpected ${describe(n)} in ${kw} clause`);
        const dname = (n as { s: string }).s;
        const pipe = kw === "block" ? parsePipe("block", false) : (expectClose(), null);
        const outer = vars;
        vars = ["$"];
        const body = parseList(true);
        vars = outer;
        if (body.stop !== "end") fail(`unexpected {{else}} in ${kw}`);
        defs.set(dname, body.nodes);
        return kw === "block" ? { t: "template", name: dname, pipe, line: l } : { t: "text", s: "" };
      }
    }
    return fail(`unexpected ${kw}`);
  };

  const parsePipe = (context: string, control: boolean): Pipe => {
    const pipe: Pipe = { decl: [], assign: false, cmds: [] };
    // variable declarations: $x := / $x = / $k, $v :=
    const save = pos;
    const v1 = next();
    if (v1?.k === "var") {
      const t2 = next();
      if (t2?.k === "decl" || t2?.k === "assign") {
        pipe.decl.push(v1.s);
        pipe.assign = t2.k === "assign";
      } else if (t2?.k === "comma" && context === "range") {
        const v2 = next();
        if (v2?.k !== "var") fail("range can only initialize variables");
        const t3 = next();
        if (t3?.k !== "decl" && t3?.k !== "assign") fail("range can only initialize variables");
        pipe.decl.push(v1.s, (v2 as { s: string }).s);
        pipe.assign = t3?.k === "assign";
      } else pos = save;
    } else pos = save;
    const endTok = "close";
    while (true) {
      const t = peekNonSpace();
      if (t === undefined) fail("unclosed action");
      if (t!.k === endTok || t!.k === "rparen") {
        if (context !== "paren" && t!.k === "rparen") fail("unexpected right paren");
        if (context === "paren" && t!.k === "close") fail("unclosed left paren");
        next();
        break;
      }
      pipe.cmds.push(parseCommand());
      const after = peekNonSpace();
      if (after?.k === "pipe") next();
    }
    if (pipe.cmds.length === 0) fail(`missing value for ${control ? context : "command"}`);
    if (!pipe.assign) vars.push(...pipe.decl);
    for (let i = 1; i < pipe.cmds.length; i++) {
      const h = pipe.cmds[i].args[0];
      if (h.t !== "ident" && h.t !== "field" && h.t !== "chain" && h.t !== "var") {
        fail(`non executable command in pipeline stage ${i + 1}`);
      }
    }
    return pipe;
  };

  const parseCommand = (): Command => {
    const args: Arg[] = [];
    while (true) {
      skipSpace();
      const t = peek();
      if (t === undefined || t.k === "close" || t.k === "rparen" || t.k === "pipe") break;
      args.push(parseOperand());
      // operands are separated by space
      const n = peek();
      if (n && n.k !== "space" && n.k !== "close" && n.k !== "rparen" && n.k !== "pipe") {
        fail(`unexpected ${describe(n)} in operand`);
      }
    }
    if (args.length === 0) fail("empty command");
    return { args };
  };

  const fieldsAfter = (): string[] => {
    const names: string[] = [];
    while (toks[pos]?.k === "field") names.push((toks[pos++] as { s: string }).s);
    return names;
  };

  const parseOperand = (): Arg => {
    const t = toks[pos++];
    switch (t.k) {
      case "dot":
        return { t: "dot" };
      case "nil":
        return { t: "nil" };
      case "bool":
        return { t: "const", v: t.s === "true" };
      case "string":
        return { t: "const", v: t.s };
      case "char":
        return { t: "const", v: Number(t.s) };
      case "number": {
        const v = parseNumber(t.s);
        if (v === null) fail(`bad number syntax: "${t.s}"`);
        return { t: "const", v };
      }
      case "field":
        return { t: "field", names: [t.s, ...fieldsAfter()] };
      case "var":
        if (!vars.includes(t.s)) fail(`undefined variable "${t.s}"`);
        return { t: "var", name: t.s, names: fieldsAfter() };
      case "ident":
        if (KEYWORDS.has(t.s)) fail(`unexpected <${t.s}> in command`);
        if (!isFunc(t.s)) fail(`function "${t.s}" not defined`);
        return { t: "ident", name: t.s };
      case "lparen": {
        const pipe = parsePipe("paren", false);
        const names = fieldsAfter();
        const node: Arg = { t: "pipe", pipe };
        return names.length ? { t: "chain", node, names } : node;
      }
    }
    return fail(`unexpected ${describe(t)} in operand`);
  };

  const { nodes } = parseList(false);
  return { root: nodes, defs };
}

function describe(t: Tok | undefined): string {
  if (t === undefined) return "EOF";
  if (t.k === "close") return "<close>";
  return "s" in t ? `<${t.s}>` : `<${t.k}>`;
}
