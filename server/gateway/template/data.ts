/**
 * The data a gateway template sees (Easegress builders): `.req` / `.resp` (the DEFAULT request and response, nil if
 * absent), `.requests.<ns>`, `.responses.<ns>`, `.data`, `.namespace`. Requests and responses are Go structs with the
 * exported fields of `http.Request` / `http.Response` (`Method`, `URL`, `Header`, `Host`, `StatusCode`, …) and the
 * builder methods `RawBody`, `Body` (text), `JSONBody`, `YAMLBody`.
 */
import { parse as parseYaml } from "yaml";
import type { Context, GwRequest, GwResponse } from "../context.ts";
import { DEFAULT_NS } from "../context.ts";
import type { HeaderList } from "../http1.ts";
import { STATUS_TEXT } from "../http1.ts";
import type { GoStruct } from "./gofmt.ts";
import { parseJsonNumbers } from "./gofmt.ts";
import { canonicalHeaderKey } from "./funcs.ts";

const decoder = new TextDecoder();

/** http.Header: canonical key → values. */
export function headerMap(h: HeaderList): Record<string, string[]> {
  const m: Record<string, string[]> = {};
  for (let i = 0; i < h.names.length; i++) (m[canonicalHeaderKey(h.names[i])] ??= []).push(h.values[i]);
  return m;
}

/** Body methods shared by requests and responses. */
abstract class Payload {
  abstract get payload(): Uint8Array;
  RawBody(): Uint8Array {
    return this.payload;
  }
  Body(): string {
    return decoder.decode(this.payload);
  }
  /** The body as JSON, numbers as json.Number. */
  JSONBody(): unknown {
    return parseJsonNumbers(this.Body());
  }
  YAMLBody(): unknown {
    return parseYaml(this.Body()) ?? null;
  }
}

/** url.URL */
class UrlView implements GoStruct {
  readonly goType = "*url.URL";
  Scheme: string;
  Opaque = "";
  User = null;
  Host: string;
  Path: string;
  RawPath = "";
  ForceQuery = false;
  RawQuery: string;
  Fragment = "";
  RawFragment = "";

  constructor(r: GwRequest) {
    this.Scheme = "";
    this.Host = "";
    let path = r.path;
    try {
      path = decodeURIComponent(r.path);
      if (path !== r.path && encodeURI(path) !== r.path) this.RawPath = r.path;
    } catch { /* keep the escaped form */ }
    this.Path = path;
    this.RawQuery = r.query;
  }
  goFields(): unknown[] {
    return [this.Scheme, this.Opaque, this.User, this.Host, this.Path, this.RawPath, this.ForceQuery, this.RawQuery];
  }
  String(): string {
    return this.Path + (this.RawQuery ? "?" + this.RawQuery : "");
  }
  /** url.Values: name → values. */
  Query(): Record<string, string[]> {
    const q: Record<string, string[]> = {};
    for (const [k, v] of new URLSearchParams(this.RawQuery)) (q[k] ??= []).push(v);
    return q;
  }
}

/** A request as templates see it (`*http.Request` plus the builder methods). */
export class RequestView extends Payload implements GoStruct {
  readonly goType = "*builder.request";
  #r: GwRequest;
  #ns: string;
  constructor(r: GwRequest, ns: string) {
    super();
    this.#r = r;
    this.#ns = ns;
  }
  /** a streamed body (read once, by Proxy) is Easegress's text instead */
  get payload(): Uint8Array {
    if (this.#r.stream !== null) return new TextEncoder().encode(`the body of request "${this.#ns}" is a stream`);
    return this.#r.body;
  }
  get Method(): string {
    return this.#r.method;
  }
  #url: UrlView | null = null;
  #header: Record<string, string[]> | null = null;
  get URL(): UrlView {
    return (this.#url ??= new UrlView(this.#r));
  }
  get Proto(): string {
    return this.#r.proto;
  }
  get ProtoMajor(): number {
    return Number(/HTTP\/(\d)/.exec(this.#r.proto)?.[1] ?? 1);
  }
  get ProtoMinor(): number {
    return Number(/HTTP\/\d\.(\d)/.exec(this.#r.proto)?.[1] ?? 1);
  }
  get Header(): Record<string, string[]> {
    return (this.#header ??= headerMap(this.#r.headers));
  }
  get ContentLength(): number {
    return this.#r.body.length;
  }
  get Host(): string {
    return this.#r.host;
  }
  get RemoteAddr(): string {
    return this.#r.remoteAddr;
  }
  get RequestURI(): string {
    return this.#r.requestUri;
  }
  get Form(): null {
    return null;
  }
  get PostForm(): null {
    return null;
  }
  get TLS(): null {
    return null;
  }
  /** The basic-auth user name (Easegress's `username`). */
  basicUser(): string {
    const auth = this.#r.headers.get("authorization");
    if (!/^basic /i.test(auth)) return "";
    try {
      const txt = atob(auth.slice(6).trim());
      const c = txt.indexOf(":");
      return c < 0 ? "" : txt.slice(0, c);
    } catch {
      return "";
    }
  }
  goFields(): unknown[] {
    return [this.Method, this.URL, this.Proto, this.ProtoMajor, this.ProtoMinor, this.Header, this.ContentLength];
  }
}

/** A response as templates see it (`*http.Response` plus the builder methods). */
export class ResponseView extends Payload implements GoStruct {
  readonly goType = "*builder.response";
  #r: GwResponse;
  #ns: string;
  constructor(r: GwResponse, ns: string) {
    super();
    this.#r = r;
    this.#ns = ns;
  }
  /** a streamed body (read once, by the server) is Easegress's text instead */
  get payload(): Uint8Array {
    if (this.#r.stream !== null) return new TextEncoder().encode(`the body of response "${this.#ns}" is a stream`);
    return this.#r.body;
  }
  get StatusCode(): number {
    return this.#r.status;
  }
  get Status(): string {
    return `${this.#r.status} ${STATUS_TEXT[this.#r.status] ?? ""}`.trimEnd();
  }
  get Proto(): string {
    return "HTTP/1.1";
  }
  get Header(): Record<string, string[]> {
    return headerMap(this.#r.headers);
  }
  get ContentLength(): number {
    return this.#r.body.length;
  }
  goFields(): unknown[] {
    return [this.Status, this.StatusCode, this.Proto, this.Header, this.ContentLength];
  }
}

/** The template data of a context (views are thin wrappers: building them per render is cheaper than lazy getters). */
export function templateData(ctx: Context): Record<string, unknown> {
  const requests: Record<string, RequestView> = {};
  for (const [ns, r] of ctx.requests()) requests[ns] = new RequestView(r, ns);
  const responses: Record<string, ResponseView> = {};
  for (const [ns, r] of ctx.responses()) responses[ns] = new ResponseView(r, ns);
  return {
    req: requests[DEFAULT_NS] ?? null,
    resp: responses[DEFAULT_NS] ?? null,
    requests,
    responses,
    data: ctx.data,
    namespace: ctx.namespace,
  };
}
