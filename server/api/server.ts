/**
 * The admin HTTP API of a member (Easegress `pkg/api`) on --api-addr, every entry under /apis/v1 and /apis/v2:
 * health, member status and purge, object kinds and API resources, objects CRUD (JSON or YAML bodies), object status,
 * custom data kinds (none yet). Every response carries X-Config-Version; errors are `{"code","message"}`; cluster
 * (store) failures answer 503. Writes hold the cluster mutex /config/lock and bump /config/version.
 *
 * Who may use it (stricter than Easegress where Easegress is unsafe): HTTPS with --tls (and client certificates
 * verified against `client-ca-file`), HTTP Basic on every endpoint when `basic-auth` is configured (compared in
 * constant time), no CORS headers at all (a web page open on the host cannot read answers), request bodies only as
 * JSON or YAML by Content-Type (a cross-origin "simple" POST cannot create objects), at most {@link MAX_BODY_BYTES}
 * of body (413), and only the `chunked` transfer coding.
 */
import http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import { createHash, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import { type Cluster, layout } from "../easegress/cluster.ts";
import {
  Category,
  goJsonStringify,
  newSpec,
  objectAPIResources,
  objectKinds,
  OWNER_LABEL,
  OWNER_USER_API,
  type Spec,
  templateKind,
  TRAFFIC_KINDS,
} from "../easegress/objects.ts";
import { DEFAULT_SPEC_VERSION, defaultSpecOf } from "../easegress/objects.ts";
import { toGoYaml } from "../easegress/goyaml.ts";
import { memberState, readLiveMembership, unrecordedPrimaries } from "../easegress/liveness.ts";
import { addPrimary, findPrimary, MembershipError, parseNewPrimary } from "../easegress/primaries.ts";
import { parse as parseYaml } from "yaml";
import { filterResults, runnableFilterKinds } from "../easegress/specs/filters.ts";
import { rfc3339 } from "../easegress/gotime.ts";
import { goDuration } from "../util/progress.ts";
import { type Options, splitHostPort } from "../easegress/options.ts";
import type { EgLogger } from "../easegress/log.ts";
import { isOpsPath, opsHandler } from "../dashboard/routes.ts";

/**
 * Largest request body, like the default `clientMaxBodySize` of an Easegress HTTPServer (4 MiB; Easegress's admin API
 * itself reads bodies without a limit). An object is stored as one etcd value, which cannot exceed the request limit
 * of the store anyway. A larger body gets 413 and its connection is closed, without buffering it: a 300 MB POST no
 * longer takes the member's memory with it.
 */
export const MAX_BODY_BYTES = 4 << 20;

/**
 * Media types a body may be sent as. Anything else (text/plain, form encodings: what a web page may POST
 * cross-origin without a preflight) gets 415. A body without Content-Type is taken only from a client that sent no
 * Origin, i.e. not from a browser: Easegress's own egctl sends none.
 */
const BODY_TYPES = new Set([
  "application/json",
  "application/yaml",
  "application/x-yaml",
  "text/yaml",
  "text/x-yaml",
  "text/vnd.yaml",
]);

/** The realm of the Basic challenge (Easegress's). */
const BASIC_REALM = "easegress-basic-auth";

/** A handler's failure with an HTTP status (HandleAPIError). */
class APIError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** A store failure (ClusterPanic ⇒ 503). */
class ClusterError extends Error {}

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  body: () => Promise<string>;
}

interface Entry {
  path: string;
  method: string;
  handler: (c: Ctx) => Promise<void> | void;
}

/** A running admin API. */
export interface ApiServer {
  address: string;
  close(): Promise<void>;
}

async function cluster<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof APIError || err instanceof MembershipError) throw err;
    throw new ClusterError((err as Error).message);
  }
}

function apiError(res: http.ServerResponse, status: number, message: string): void {
  if (res.writableEnded) return; // answered already (a body refused while the handler was waiting)
  if (!res.headersSent) {
    res.statusCode = status;
    // Go writes no Content-Type; net/http sniffs the JSON text as text/plain
    res.setHeader("Content-Type", "text/plain; charset=utf-8");
  }
  res.end(goJsonStringify({ code: status, message }));
}

/** WriteBody: JSON, or YAML when Accept mentions yaml. */
function writeBody(c: Ctx, body: unknown): void {
  const accept = String(c.req.headers["accept"] ?? "");
  if (accept.includes("yaml")) {
    c.res.setHeader("Content-Type", "text/x-yaml");
    c.res.end(toGoYaml(JSON.parse(JSON.stringify(body))));
    return;
  }
  c.res.setHeader("Content-Type", "application/json");
  c.res.end(goJsonStringify(body));
}

function aboutText(): string {
  return `Copyright © 2017 - ${new Date().getFullYear()} The Easegress Authors. All rights reserved.
Powered by open-source software: Etcd(https://etcd.io), Apache License 2.0.
`;
}

/** Starts the admin API; resolves once it listens. */
/**
 * Writes the request's line to the admin API access log when its response is finished, as Easegress's API logger:
 * `<method> <remote> <path> <code> rx:<request Content-Length>B tx:<bytes sent>B start:<RFC 3339> process:<duration>`.
 */
function logAccess(req: http.IncomingMessage, res: http.ServerResponse, path: string, log: EgLogger): void {
  const start = new Date();
  const t0 = performance.now();
  // read now: Deno's node:http may have detached the socket from the request by 'finish'
  const remote = `${req.socket?.remoteAddress}:${req.socket?.remotePort}`;
  const rx = req.headers["content-length"] !== undefined
    ? Number(req.headers["content-length"])
    : req.headers["transfer-encoding"]
    ? -1
    : 0;
  let tx = 0;
  const count = (chunk: unknown) => {
    if (typeof chunk === "string") tx += Buffer.byteLength(chunk);
    else if (chunk instanceof Uint8Array) tx += chunk.length;
  };
  const write = res.write, end = res.end;
  res.write = function (this: http.ServerResponse, ...args: unknown[]) {
    count(args[0]);
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof res.write;
  res.end = function (this: http.ServerResponse, ...args: unknown[]) {
    if (typeof args[0] !== "function") count(args[0]);
    return (end as (...a: unknown[]) => http.ServerResponse).apply(this, args);
  } as typeof res.end;
  res.on("finish", () => {
    const took = goDuration(performance.now() - t0);
    log.apiAccess(
      `${req.method} ${remote} ${path} ${res.statusCode} rx:${rx}B tx:${tx}B start:${rfc3339(start)} process:${took}`,
    );
  });
}

export async function startApiServer(opt: Options, cls: Cluster, log: EgLogger): Promise<ApiServer> {
  const getVersion = async (): Promise<number> => {
    const v = await cluster(cls.get(layout.configVersion));
    if (v === undefined) return 0;
    if (!/^-?\d+$/.test(v)) throw new Error(`parse version ${v} to int failed`);
    return Number(v);
  };
  const plusOneVersion = async (c: Ctx): Promise<void> => {
    const v = (await getVersion()) + 1;
    await cluster(cls.put(layout.configVersion, String(v)));
    c.res.setHeader("X-Config-Version", String(v));
  };
  const getObject = async (name: string): Promise<Spec | undefined> => {
    const v = await cluster(cls.get(layout.configObjectKey(name)));
    if (v === undefined) return undefined;
    try {
      return newSpec(v, false);
    } catch (err) {
      throw new Error(`bad spec(err: ${(err as Error).message}) from json: ${v}`);
    }
  };
  const listObjects = async (): Promise<Spec[]> => {
    const kvs = await cluster(cls.getPrefix(layout.configObjectPrefix));
    return [...kvs.values()].map((v) => {
      try {
        return newSpec(v, false);
      } catch (err) {
        throw new Error(`bad spec(err: ${(err as Error).message}) from json: ${v}`);
      }
    });
  };
  const putObject = (spec: Spec) => cluster(cls.put(layout.configObjectKey(spec.name), goJsonStringify(spec.json)));
  const readSpec = async (c: Ctx): Promise<Spec> => {
    const text = await c.body();
    let spec: Spec;
    try {
      spec = newSpec(text, true);
    } catch (err) {
      throw new APIError(400, (err as Error).message);
    }
    const name = c.params.name;
    if (name !== undefined && name !== "" && name !== spec.name) {
      throw new APIError(400, "inconsistent name in url and spec ");
    }
    return spec;
  };
  const locked = <T>(fn: () => Promise<T>) => cluster(cls.withLock(fn));
  const namespaces = (c: Ctx): [boolean, string] => {
    const all = (c.query.get("all-namespaces") ?? "").trim();
    const ns = (c.query.get("namespace") ?? "").trim();
    const flag = ["1", "t", "T", "TRUE", "true", "True"].includes(all);
    return [flag, ns];
  };
  /** status entries under a prefix by their key after statusObjectsPrefix: each as the member wrote it (JSON) */
  const statusMap = async (prefix: string): Promise<Record<string, unknown>> => {
    const kvs = await cluster(cls.getPrefix(prefix));
    const out: Record<string, unknown> = {};
    for (const [k, v] of [...kvs].sort(([a], [b]) => (a < b ? -1 : 1))) {
      let m: unknown;
      try {
        m = JSON.parse(v);
      } catch {
        throw new ClusterError(`unmarshal ${v} to json failed`);
      }
      out[k.slice(layout.statusObjectsPrefix.length)] = m;
    }
    return out;
  };

  const entries: Entry[] = [
    {
      path: "",
      method: "GET",
      handler: (c) =>
        writeBody(c, [{ Group: "admin", Entries: entries.map((e) => ({ path: e.path, method: e.method })) }]),
    },
    {
      path: "/status/members",
      method: "GET",
      handler: async (c) => {
        const kvs = await cluster(cls.getPrefix(layout.statusMemberPrefix));
        const members = [...kvs.values()].map((v) => {
          try {
            return JSON.parse(v);
          } catch {
            throw new Error(`unmarshal ${v} to member status failed`);
          }
        });
        // a primary's stored state is what it last said of itself: show its state now (unlike Easegress)
        const primaries = members.filter((m) => typeof m?.etcd === "object" && m.etcd !== null);
        if (primaries.length > 0) { // not with a standalone etcd: its members are no Easegress members
          const live = await readLiveMembership(cls.client);
          const now = Date.now();
          for (const m of primaries) m.etcd.state = memberState(m, live, now);
          members.push(...unrecordedPrimaries(primaries, live)); // a learner added but not started yet, too
        }
        members.sort((a, b) => {
          const x = a?.options?.Name ?? "", y = b?.options?.Name ?? "";
          return x < y ? -1 : x > y ? 1 : 0;
        });
        c.res.setHeader("Content-Type", "text/plain; charset=utf-8");
        c.res.end(goJsonStringify(members));
      },
    },
    {
      path: "/status/members/{member}",
      method: "DELETE",
      handler: async (c) => {
        const name = c.params.member;
        await locked(async () => {
          const lease = await cluster(cls.get(layout.lease(name)));
          if (lease === undefined && !findPrimary(await cluster(cls.client.memberList()), name)) {
            throw new APIError(404, "not found");
          }
          try {
            await cls.purgeMember(name);
          } catch (err) {
            if (err instanceof MembershipError) throw err;
            throw new ClusterError(`purge member ${name} failed: ${(err as Error).message}`);
          }
        });
        c.res.end();
      },
    },
    {
      // ours: a primary added online, as a learner that promotes itself once caught up (see primaries.ts)
      path: "/members",
      method: "POST",
      handler: async (c) => {
        let body: unknown;
        try {
          body = parseYaml(await c.body());
        } catch (err) {
          throw new APIError(400, `bad member request: ${(err as Error).message}`);
        }
        const req = parseNewPrimary(body);
        const added = await locked(() => addPrimary(cls, req));
        c.res.statusCode = 201;
        writeBody(c, added);
      },
    },
    { path: "/object-kinds", method: "GET", handler: (c) => writeBody(c, objectKinds()) },
    { path: "/object-api-resources", method: "GET", handler: (c) => writeBody(c, objectAPIResources()) },
    {
      path: "/objects",
      method: "POST",
      handler: async (c) => {
        const spec = await readSpec(c);
        if (spec.category === Category.SystemController) {
          throw new APIError(409, "can't create system controller object");
        }
        await locked(async () => {
          if (await getObject(spec.name)) throw new APIError(409, `conflict name: ${spec.name}`);
          await putObject(spec);
          await plusOneVersion(c);
        });
        c.res.statusCode = 201;
        c.res.end();
      },
    },
    {
      path: "/objects",
      method: "GET",
      handler: async (c) => {
        const [all, ns] = namespaces(c);
        if (all && ns !== "") {
          throw new APIError(
            400,
            "conflict query params, can't set all-namespaces and namespace at the same time",
          );
        }
        const specs = (await listObjects()).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        if (all) return writeBody(c, { default: specs.map((s) => s.json) });
        if (ns !== "" && ns !== "default") return writeBody(c, []);
        writeBody(c, specs.map((s) => s.json));
      },
    },
    {
      path: "/objects/{name}",
      method: "GET",
      handler: async (c) => {
        const [, ns] = namespaces(c);
        if (ns !== "" && ns !== "default") throw new APIError(404, "not found");
        const spec = await getObject(c.params.name);
        if (!spec) throw new APIError(404, "not found");
        writeBody(c, spec.json);
      },
    },
    {
      path: "/objects-yaml/{kind}/{name}",
      method: "GET",
      handler: (c) => {
        const kind = templateKind(c.params.kind);
        if (!kind) throw new APIError(404, "not found");
        const meta = { name: c.params.name, kind, version: DEFAULT_SPEC_VERSION, createdAt: rfc3339() };
        c.res.setHeader("Content-Type", "text/x-yaml");
        c.res.end(`${toGoYaml(meta, { sortKeys: false })}\n${toGoYaml(defaultSpecOf(kind))}`);
      },
    },
    {
      path: "/objects/{name}",
      method: "PUT",
      handler: async (c) => {
        const spec = await readSpec(c);
        await locked(async () => {
          const existed = await getObject(spec.name);
          if (!existed) throw new APIError(404, "not found");
          if (existed.kind !== spec.kind) throw new APIError(400, `different kinds: ${existed.kind}, ${spec.kind}`);
          const owner = spec.labels?.[OWNER_LABEL] ?? "";
          if (owner !== "" && owner !== OWNER_USER_API) {
            throw new APIError(400, `can't update ${spec.name} owned by ${owner} via API`);
          }
          await putObject(spec);
          await plusOneVersion(c);
        });
        c.res.end();
      },
    },
    {
      path: "/objects/{name}",
      method: "DELETE",
      handler: async (c) => {
        const name = c.params.name;
        await locked(async () => {
          const spec = await getObject(name);
          if (!spec) throw new APIError(404, "not found");
          if (spec.category === Category.SystemController) {
            throw new APIError(400, "can't delete system controller object");
          }
          const owner = spec.labels?.[OWNER_LABEL] ?? "";
          if (owner !== "" && owner !== OWNER_USER_API) {
            throw new APIError(400, `can't delete ${name} owned by ${owner} via API`);
          }
          await cluster(cls.delete(layout.configObjectKey(name)));
          await plusOneVersion(c);
        });
        c.res.end();
      },
    },
    {
      path: "/objects",
      method: "DELETE",
      handler: async (c) => {
        if (c.query.get("all") === "true") {
          await locked(async () => {
            for (const spec of await listObjects()) {
              if (spec.category === Category.SystemController) continue;
              await cluster(cls.delete(layout.configObjectKey(spec.name)));
            }
            await plusOneVersion(c);
          });
        }
        c.res.end();
      },
    },
    {
      path: "/status/objects",
      method: "GET",
      handler: async (c) => writeBody(c, await statusMap(layout.statusObjectsPrefix)),
    },
    {
      path: "/status/objects/{name}",
      method: "GET",
      handler: async (c) => {
        const [, nsq] = namespaces(c);
        const name = c.params.name;
        const spec = nsq === "" || nsq === "default" ? await getObject(name) : undefined;
        if (!spec) throw new APIError(404, "not found");
        const ns = nsq === "" ? "default" : nsq;
        const statusNs = TRAFFIC_KINDS.has(spec.kind) ? `eg-traffic-${ns}` : ns;
        writeBody(c, await statusMap(layout.statusObjectPrefix(statusNs, name)));
      },
    },
    { path: "/healthz", method: "GET", handler: (c) => void c.res.end() },
    {
      path: "/about",
      method: "GET",
      handler: (c) => {
        c.res.setHeader("Content-Type", "text/plain");
        c.res.end(aboutText());
      },
    },
    {
      path: "/customdatakinds",
      method: "GET",
      handler: async (c) => {
        const kvs = await cluster(cls.getPrefix(layout.customDataKindPrefix));
        writeBody(c, [...kvs.values()].map((v) => ({ ...JSON.parse(v), len: 0 })));
      },
    },
    // filter metadata: the kinds this cluster runs, and the results a flow may jump on
    { path: "/metadata/objects/pipeline/filters", method: "GET", handler: (c) => writeBody(c, runnableFilterKinds()) },
    {
      path: "/metadata/objects/pipeline/filters/{kind}/results",
      method: "GET",
      handler: (c) => {
        if (!runnableFilterKinds().includes(c.params.kind)) throw new APIError(404, "not found");
        writeBody(c, filterResults(c.params.kind));
      },
    },
  ];

  const ops = opsHandler(cls);
  const routes = entries.map((e) => {
    const names: string[] = [];
    const re = new RegExp(
      "^" + e.path.replace(/\{(\w+)\}/g, (_m, n) => {
        names.push(n);
        return "([^/]+)";
      }) + "$",
    );
    return { ...e, re, names };
  });

  const deadlines = new ConnectionDeadlines();
  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    deadlines.requestStarted(req, res);
    const refusal = framingError(req);
    if (refusal) {
      closeAfter(req, res);
      apiError(res, refusal.status, refusal.message);
      return;
    }
    // the body is counted from the first byte, whether or not the handler reads it: see BodyReader
    const body = new BodyReader(req, () => {
      closeAfter(req, res);
      apiError(res, 413, TOO_LARGE);
    });
    const url = new URL(req.url ?? "/", "http://x");
    // StripSlashes
    let p = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    if (isOpsPath(p)) { // dashboard and metrics (server/dashboard): answered even while the store is unreachable
      if (opt.BasicAuth && Object.keys(opt.BasicAuth).length > 0 && !basicAuthOk(req, opt.BasicAuth)) {
        res.setHeader("WWW-Authenticate", `Basic realm="easegress-basic-auth"`);
        return apiError(res, 401, "basic auth failed");
      }
      return await ops(p, req, res).catch((err) => apiError(res, 500, (err as Error).message));
    }
    const remote = req.socket?.remoteAddress;
    if (!opt.DisableAccessLog) logAccess(req, res, url.pathname, log);
    try {
      const prefix = p.startsWith("/apis/v2") ? "/apis/v2" : p.startsWith("/apis/v1") ? "/apis/v1" : undefined;
      if (prefix === undefined) {
        res.statusCode = 404;
        res.setHeader("Content-Type", "text/plain; charset=utf-8");
        res.setHeader("X-Content-Type-Options", "nosniff");
        res.end("404 page not found\n");
        return;
      }
      p = p.slice(prefix.length);
      const matched = routes.map((r) => ({ r, m: r.re.exec(p) })).filter((x) => x.m);
      const hit = matched.find((x) => x.r.method === req.method);
      // the config version attacher runs before the recoverer: when the store fails, Go's net/http drops the
      // connection (clients see EOF)
      let version: number;
      try {
        version = await getVersion();
      } catch (err) {
        log.error(`http: panic serving ${remote}: ${(err as Error).message}`);
        req.socket?.destroy();
        return;
      }
      if (res.writableEnded) return;
      res.setHeader("X-Config-Version", String(version));
      if (opt.BasicAuth && Object.keys(opt.BasicAuth).length > 0 && !basicAuthOk(req, opt.BasicAuth)) {
        res.setHeader("WWW-Authenticate", `Basic realm="${BASIC_REALM}"`);
        apiError(res, 401, "basic auth failed");
        return;
      }
      if (!hit) {
        if (matched.length > 0) {
          res.statusCode = 405;
          res.end();
        } else {
          res.statusCode = 404;
          res.setHeader("Content-Type", "text/plain; charset=utf-8");
          res.setHeader("X-Content-Type-Options", "nosniff");
          res.end("404 page not found\n");
        }
        return;
      }
      const params: Record<string, string> = {};
      hit.r.names.forEach((n, i) => (params[n] = decodeURIComponent(hit.m![i + 1])));
      let bodyText: string | undefined;
      const ctx: Ctx = {
        req,
        res,
        params,
        query: url.searchParams,
        body: async () => {
          if (bodyText === undefined) bodyText = await body.text();
          return bodyText;
        },
      };
      await hit.r.handler(ctx);
    } catch (err) {
      // already answered: the body reader's 413 went out while the handler still waited for the body
      if (res.headersSent) return void res.end();
      if (err instanceof BodyError) {
        // the rest of the body is not read: the connection closes after the answer
        closeAfter(req, res);
        apiError(res, err.status, err.message);
      } else if (err instanceof APIError || err instanceof MembershipError) apiError(res, err.status, err.message);
      else if (err instanceof ClusterError) {
        log.error(`recover from ${url.pathname}, err: ${err.message}`);
        apiError(res, 503, err.message);
      } else {
        log.error(`recover from ${url.pathname}, err: ${(err as Error).message}`);
        apiError(res, 500, (err as Error).message);
      }
    }
  };
  // a failure while answering ends that request only: an uncaught rejection here once took the member down
  const serve = (req: http.IncomingMessage, res: http.ServerResponse) =>
    void handle(req, res).catch((err) => {
      log.error(`recover from ${req.url}, err: ${(err as Error).message}`);
      res.destroy();
    });
  const server = opt.TLS ? https.createServer(tlsOptions(opt), serve) : http.createServer(serve);
  deadlines.watch(server, opt.TLS);

  const [host, port] = splitHostPort(opt.APIAddr);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(port), host === "" ? undefined : host, () => resolve());
  });
  server.on("error", (err) => log.error(`api server error: ${err.message}`));
  log.info(opt.TLS ? `api server (https) running in ${opt.APIAddr}` : `api server running in ${opt.APIAddr}`);
  return {
    address: opt.APIAddr,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

/** Server TLS options from --cert-file / --key-file, and client certificates required under `client-ca-file`. */
function tlsOptions(opt: Options): https.ServerOptions {
  const ca = opt.ClientCAFile ? Deno.readTextFileSync(opt.ClientCAFile) : undefined;
  return {
    cert: Deno.readTextFileSync(opt.CertFile),
    key: Deno.readTextFileSync(opt.KeyFile),
    ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}),
    handshakeTimeout: HEAD_TIMEOUT_MS,
  };
}

/**
 * A request head must be complete this long after the connection (its TLS handshake) or the previous response: trickled
 * headers (slowloris) held an admin connection for good, as Deno's node:http applies no headersTimeout. The same as the
 * etcd client port's HTTP/1.1 head timeout; egctl sends a head in one segment, the dashboard polls every second.
 */
export const HEAD_TIMEOUT_MS = 10_000;
/** A request must be answered (its body read, the response written) within this: Node's default requestTimeout. */
export const REQUEST_TIMEOUT_MS = 300_000;
/** Connections the admin API holds at a time (TLS ones from their TCP connection on); beyond it one is closed at once. */
export const MAX_API_CONNECTIONS = 1000;

/** The head and request deadlines of the admin API's connections, and their count. */
class ConnectionDeadlines {
  readonly #timers = new Map<Socket, ReturnType<typeof setTimeout>>();
  #open = 0;

  /** Counts `server`'s connections and arms the head deadline of each (after its handshake under TLS). */
  watch(server: http.Server | https.Server, secure: boolean): void {
    server.on("connection", (raw: Socket) => {
      if (this.#open >= MAX_API_CONNECTIONS) return void raw.destroy();
      this.#open++;
      raw.once("close", () => this.#open--);
    });
    server.on(secure ? "secureConnection" : "connection", (socket: Socket) => {
      if (socket.destroyed) return;
      this.#arm(socket, HEAD_TIMEOUT_MS);
      socket.once("close", () => {
        clearTimeout(this.#timers.get(socket));
        this.#timers.delete(socket);
      });
    });
    // a failed handshake (no or a foreign client certificate, plain HTTP) ends its own connection
    if (secure) server.on("tlsClientError", (_err: Error, socket?: Socket) => socket?.destroy());
  }

  /** A head arrived: the request deadline runs until the response is done, then the next head's. */
  requestStarted(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket;
    if (!this.#timers.has(socket)) return;
    this.#arm(socket, REQUEST_TIMEOUT_MS);
    res.once("close", () => {
      if (this.#timers.has(socket)) this.#arm(socket, HEAD_TIMEOUT_MS);
    });
  }

  #arm(socket: Socket, ms: number): void {
    clearTimeout(this.#timers.get(socket));
    const timer = setTimeout(() => socket.destroy(), ms);
    Deno.unrefTimer(timer);
    this.#timers.set(socket, timer);
  }
}

/** A request body that is refused (413 too large, 415 wrong type): the connection closes after the answer. */
class BodyError extends APIError {}

/** How long a refused request's connection may linger after the answer (so the client reads it before the close). */
const CLOSE_GRACE_MS = 1000;

/** Closes the connection once the answer went out, without reading the rest of the request body. */
function closeAfter(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.shouldKeepAlive = false;
  res.setHeader("Connection", "close");
  const socket = req.socket; // Deno's node:http detaches it from the request before 'finish'
  res.on("finish", () => {
    socket?.end();
    setTimeout(() => socket?.destroy(), CLOSE_GRACE_MS);
  });
}

/** Why a request's framing is refused before anything else: a transfer coding other than chunked, or a body too large. */
function framingError(req: http.IncomingMessage): { status: number; message: string } | null {
  const te = req.headers["transfer-encoding"];
  if (te !== undefined) {
    const codings = String(te).toLowerCase().split(",").map((c) => c.trim());
    // RFC 9112 §6.3: without chunked as the final coding the body's length is unknown: 400, and close
    if (codings.at(-1) !== "chunked") {
      return { status: 400, message: `bad Transfer-Encoding ${JSON.stringify(String(te))}: chunked must be last` };
    }
    // §6.1: a coding the server does not understand is 501 (as Go's net/http answers)
    if (codings.length > 1) return { status: 501, message: `unsupported transfer encoding: ${JSON.stringify(te)}` };
  }
  const length = Number(req.headers["content-length"] ?? 0);
  if (length > MAX_BODY_BYTES) return { status: 413, message: TOO_LARGE };
  return null;
}

const TOO_LARGE = `request body too large: the limit is ${MAX_BODY_BYTES} bytes`;

/**
 * A request's body, read from its first byte on: Deno's node:http keeps reading a body nobody reads yet (no
 * backpressure), so one that is not counted as it arrives could fill memory while the handler waits on the store.
 * Past {@link MAX_BODY_BYTES} it keeps nothing more and calls `overflow` (which answers 413 and closes).
 */
class BodyReader {
  #chunks: Buffer[] = [];
  #size = 0;
  #overflow = false;
  #complete = false;
  readonly #done: Promise<void>;

  constructor(readonly req: http.IncomingMessage, overflow: () => void) {
    this.#done = new Promise((resolve) => {
      req.on("data", (chunk: Buffer) => {
        if (this.#overflow) return;
        this.#size += chunk.length;
        if (this.#size > MAX_BODY_BYTES) {
          this.#overflow = true;
          this.#chunks = [];
          overflow();
          resolve();
        } else this.#chunks.push(chunk);
      });
      req.on("end", () => {
        this.#complete = true;
        resolve();
      });
      req.on("close", () => resolve());
      req.on("error", () => resolve());
    });
  }

  /** The body as text, if it is JSON or YAML by its Content-Type and complete; else a {@link BodyError}. */
  async text(): Promise<string> {
    const req = this.req;
    const type = String(req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
    if (type === "" ? req.headers.origin !== undefined : !BODY_TYPES.has(type)) {
      throw new BodyError(
        415,
        `unsupported Content-Type ${JSON.stringify(type)}: send the body as application/json or application/yaml`,
      );
    }
    await this.#done;
    if (this.#overflow) throw new BodyError(413, TOO_LARGE);
    if (!this.#complete) throw new BodyError(400, "the request body ended early");
    return Buffer.concat(this.#chunks).toString("utf8");
  }
}

/** Whether the request's Basic credentials match a configured user; the password is compared in constant time. */
function basicAuthOk(req: http.IncomingMessage, creds: Record<string, string>): boolean {
  const h = String(req.headers["authorization"] ?? "");
  if (!/^basic /i.test(h)) return false;
  const dec = Buffer.from(h.slice(6).trim(), "base64").toString();
  const i = dec.indexOf(":");
  if (i < 0) return false;
  const user = dec.slice(0, i);
  // an unknown user costs the same comparison as a wrong password
  const want = Object.hasOwn(creds, user) ? creds[user] : "";
  return sameSecret(dec.slice(i + 1), want) && Object.hasOwn(creds, user);
}

/** Constant-time equality of two secrets (of any lengths: both are hashed first). */
function sameSecret(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}
