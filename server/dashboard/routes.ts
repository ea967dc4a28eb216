/**
 * The admin API's operator endpoints: the dashboard page (GET / and /dashboard), its data
 * (GET /apis/v2/dashboard/cluster) and the Prometheus metrics (GET /apis/v2/metrics: the gateway's per-object
 * metrics, and on a primary the embedded store's etcd metrics, as Easegress serves its process's whole registry).
 */
import type http from "node:http";
import type { Cluster } from "../easegress/cluster.ts";
import { SERVER_VERSION } from "../etcd/server.ts";
import { describeServer } from "../metrics/etcd.ts";
import { EXPOSITION_CONTENT_TYPE } from "../metrics/registry.ts";
import { TRAFFIC } from "../metrics/traffic.ts";
import { clusterView } from "./view.ts";
import { DASHBOARD_HTML } from "./page.ts";

/** Whether `path` (without trailing slashes) is one of these endpoints. */
export function isOpsPath(path: string): boolean {
  return path === "/" || path === "/dashboard" || path === "/apis/v2/metrics" || path === "/apis/v2/dashboard/cluster";
}

/** The handler of the operator endpoints of member `cls` (see {@link isOpsPath}); GET only. */
export function opsHandler(
  cls: Cluster,
): (path: string, req: http.IncomingMessage, res: http.ServerResponse) => Promise<void> {
  TRAFFIC.member = { clusterName: cls.opt.ClusterName, clusterRole: cls.opt.ClusterRole, instanceName: cls.opt.Name };
  return (path, req, res) => serveOps(cls, path, req, res);
}

async function serveOps(
  cls: Cluster,
  path: string,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { Allow: "GET, HEAD" });
    res.end();
    return;
  }
  res.setHeader("Cache-Control", "no-store");
  if (path === "/" || path === "/dashboard") {
    res.writeHead(200, {
      "Content-Type": "text/html; charset=utf-8",
      // the page runs only its own inline script and talks only to this member
      "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
        "connect-src 'self'; img-src 'self' data:",
      "X-Content-Type-Options": "nosniff",
    });
    res.end(DASHBOARD_HTML);
  } else if (path === "/apis/v2/metrics") {
    let text = TRAFFIC.registry.render();
    if (cls.server) text += describeServer(cls.server.node, SERVER_VERSION).render();
    res.writeHead(200, { "Content-Type": EXPOSITION_CONTENT_TYPE });
    res.end(text);
  } else {
    const view = await clusterView(cls);
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(view));
  }
}
