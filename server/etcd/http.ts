/**
 * The plain HTTP/1.1 endpoints etcd serves on its client port next to gRPC: /health, /version, /readyz, /livez and
 * /metrics (server/metrics); ours: /debug/trace-put while puts are traced (server/trace/put_trace.ts).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Node } from "../node/node.ts";
import { describeServer } from "../metrics/etcd.ts";
import { EXPOSITION_CONTENT_TYPE } from "../metrics/registry.ts";
import { putTrace } from "../trace/put_trace.ts";

/** Builds the HTTP/1.1 handler for a member. */
export function httpEndpoints(node: Node, version: string): (req: IncomingMessage, res: ServerResponse) => void {
  const metrics = describeServer(node, version);
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body));
    };
    switch (path) {
      case "/health": {
        // etcd reports unhealthy while an alarm is raised or there is no leader
        const ok = node.applier.alarms.length === 0 && node.leader !== "0";
        return json(ok ? 200 : 503, { health: ok ? "true" : "false" });
      }
      case "/version":
        return json(200, { etcdserver: version, etcdcluster: "3.4.0" });
      case "/readyz":
      case "/livez":
        res.writeHead(200, { "Content-Type": "text/plain" });
        return res.end("ok");
      case "/metrics": {
        res.writeHead(200, { "Content-Type": EXPOSITION_CONTENT_TYPE });
        return res.end(metrics.render());
      }
      case "/debug/trace-put":
        if (putTrace.on) return json(200, putTrace.dump());
        // falls through: not served unless tracing is on
      default:
        res.writeHead(404, { "Content-Type": "text/plain" });
        res.end("404 page not found\n");
    }
  };
}
