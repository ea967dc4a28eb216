/**
 * The admin HTTP API of a member (Easegress `pkg/api`) on --api-addr, every entry under /apis/v1 and /apis/v2:
 * health, member status and purge, object kinds and API resources, objects CRUD (JSON or YAML bodies), object status,
 * custom data kinds (none yet). Every response carries X-Config-Version; errors are `{"code","message"}`; cluster
 * (store) failures answer 503. Writes hold the cluster mutex /config/lock and bump /config/version.
 */
import http from "node:http";
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
import { filterResults, runnableFilterKinds } from "../easegress/specs/filters.ts";
import { rfc3339 } from "../easegress/gotime.ts";
import { type Options, splitHostPort } from "../easegress/options.ts";
import type { EgLogger } from "../easegress/log.ts";
import { isOpsPath, opsHandler } from "../dashboard/routes.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

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
    if (err instanceof APIError) throw err;
    throw new ClusterError((err as Error).message);
  }
}

function apiError(res: http.ServerResponse, status: number, message: string): void {
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
  const statusMap = async (prefix: string): Promise<Obj> => {
    const kvs = await cluster(cls.getPrefix(prefix));
    const out: Obj = {};
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
          if (lease === undefined) throw new APIError(404, "not found");
          try {
            await cls.purgeMember(name);
          } catch (err) {
            throw new ClusterError(`purge member ${name} failed: ${(err as Error).message}`);
          }
        });
        c.res.end();
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

  const server = http.createServer(async (req, res) => {
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
    const started = Date.now();
    res.on("finish", () => {
      if (!opt.DisableAccessLog) {
        log.debug(
          `${req.method} ${req.socket.remoteAddress} ${url.pathname} ${res.statusCode} ${Date.now() - started}ms`,
        );
      }
    });
    // CORS
    res.setHeader("Vary", "Origin");
    if (req.headers.origin) res.setHeader("Access-Control-Allow-Origin", "*");
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
        log.error(`http: panic serving ${req.socket.remoteAddress}: ${(err as Error).message}`);
        req.socket.destroy();
        return;
      }
      res.setHeader("X-Config-Version", String(version));
      if (opt.BasicAuth && Object.keys(opt.BasicAuth).length > 0 && !basicAuthOk(req, opt.BasicAuth)) {
        res.setHeader("WWW-Authenticate", `Basic realm="easegress-basic-auth"`);
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
          if (bodyText === undefined) {
            const chunks: Buffer[] = [];
            for await (const ch of req) chunks.push(ch as Buffer);
            bodyText = Buffer.concat(chunks).toString("utf8");
          }
          return bodyText;
        },
      };
      await hit.r.handler(ctx);
    } catch (err) {
      if (err instanceof APIError) apiError(res, err.status, err.message);
      else if (err instanceof ClusterError) {
        log.error(`recover from ${url.pathname}, err: ${err.message}`);
        apiError(res, 503, err.message);
      } else {
        log.error(`recover from ${url.pathname}, err: ${(err as Error).message}`);
        apiError(res, 500, (err as Error).message);
      }
    }
  });

  const [host, port] = splitHostPort(opt.APIAddr);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(port), host === "" ? undefined : host, () => resolve());
  });
  server.on("error", (err) => log.error(`api server error: ${err.message}`));
  log.info(`api server running in ${opt.APIAddr}`);
  return {
    address: opt.APIAddr,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

function basicAuthOk(req: http.IncomingMessage, creds: Record<string, string>): boolean {
  const h = String(req.headers["authorization"] ?? "");
  if (!h.startsWith("Basic ")) return false;
  const dec = Buffer.from(h.slice(6), "base64").toString();
  const i = dec.indexOf(":");
  if (i < 0) return false;
  const user = dec.slice(0, i), pass = dec.slice(i + 1);
  return Object.hasOwn(creds, user) && creds[user] === pass;
}
