/**
 * Helpers of the gateway tests: backends started by the test (Deno.serve on free ports), objects created through a
 * member's admin API, and raw HTTP/1.1 exchanges over a socket for the malformed-input cases.
 */
import { freePorts } from "./ports.ts";

/** A backend that answers `<name> <method> <path>` (or what `handler` returns) and counts its requests. */
export interface Backend {
  name: string;
  port: number;
  url: string;
  hits: number;
  stop(): Promise<void>;
}

/** Starts a backend on a free port (or on `port`). */
export async function startBackend(
  name: string,
  handler?: (req: Request) => Response | Promise<Response>,
  port?: number,
): Promise<Backend> {
  port ??= (await freePorts(1))[0];
  const b: Backend = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    hits: 0,
    stop: async () => {
      await server.shutdown();
    },
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
    b.hits++;
    if (handler) return await handler(req);
    const u = new URL(req.url);
    const body = await req.text();
    return new Response(`${name} ${req.method} ${u.pathname}${u.search}${body ? " " + body : ""}`);
  });
  return b;
}

/** Creates (POST) or updates (PUT) an object through the admin API; throws unless 201/200. */
export async function putObject(apiAddr: string, yamlOrJson: string, update = false): Promise<void> {
  const name = /^name:\s*(\S+)/m.exec(yamlOrJson)?.[1] ?? JSON.parse(yamlOrJson).name;
  const url = update ? `http://${apiAddr}/apis/v2/objects/${name}` : `http://${apiAddr}/apis/v2/objects`;
  const contentType = yamlOrJson.trimStart().startsWith("{") ? "application/json" : "application/yaml";
  const r = await fetch(url, {
    method: update ? "PUT" : "POST",
    body: yamlOrJson,
    headers: { "content-type": contentType },
  });
  const text = await r.text();
  if (r.status !== 201 && r.status !== 200) throw new Error(`${update ? "PUT" : "POST"} ${name}: ${r.status} ${text}`);
}

/** Deletes an object through the admin API. */
export async function deleteObject(apiAddr: string, name: string): Promise<void> {
  const r = await fetch(`http://${apiAddr}/apis/v2/objects/${name}`, { method: "DELETE" });
  await r.body?.cancel();
  if (r.status !== 200) throw new Error(`DELETE ${name}: ${r.status}`);
}

/** A response seen on a raw socket. */
export interface RawResponse {
  status: number;
  head: string;
  body: string;
  /** the server closed the connection after it */
  closed: boolean;
}

/**
 * Sends raw bytes on a new connection and reads until the server closes it or `waitMs` passes without data;
 * returns every response in the bytes received (Content-Length framed).
 */
export async function rawExchange(port: number, data: string | Uint8Array, waitMs = 1500): Promise<RawResponse[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  try {
    await conn.write(bytes);
  } catch { /* the server may close early */ }
  const chunks: Uint8Array[] = [];
  let closed = false;
  while (true) {
    const buf = new Uint8Array(65536);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), waitMs))),
    ]);
    clearTimeout(timer);
    if (n === "timeout") break;
    if (n === null) {
      closed = true;
      break;
    }
    chunks.push(buf.slice(0, n));
  }
  try {
    conn.close();
  } catch { /* closed */ }
  let text = new TextDecoder("latin1").decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  const out: RawResponse[] = [];
  while (text.startsWith("HTTP/1.1 ")) {
    const he = text.indexOf("\r\n\r\n");
    if (he < 0) break;
    const head = text.slice(0, he);
    const len = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
    out.push({ status: Number(head.slice(9, 12)), head, body: text.slice(he + 4, he + 4 + len), closed: false });
    text = text.slice(he + 4 + len);
  }
  if (out.length > 0) out[out.length - 1].closed = closed;
  return out;
}

/** GET through the gateway: [status, body]. */
export async function get(url: string, init?: RequestInit): Promise<[number, string]> {
  const r = await fetch(url, init);
  return [r.status, await r.text()];
}

/**
 * A Pipeline named `name` whose one Proxy filter has one pool: `pool` is that pool's YAML (e.g. `servers(bs)` plus
 * further fields, one per line), `extra` YAML after the filters, `flow` the flow line.
 */
export const proxyPipeline = (name: string, pool: string, extra = "", flow = "flow: [{filter: proxy}]") => `
name: ${name}
kind: Pipeline
${flow}
filters:
- name: proxy
  kind: Proxy
  pools:
  - ${pool.trim().split("\n").join("\n    ")}
${extra}`;

/** A pool's `servers` line for the backends; `extra` adds fields to a server's map (e.g. `, weight: 2`). */
export const servers = (bs: Backend[], extra: (b: Backend, i: number) => string = () => "") =>
  `servers: [${bs.map((b, i) => `{url: ${b.url}${extra(b, i)}}`).join(", ")}]`;
