/**
 * The plain HTTP/1.1 endpoints etcd serves on its client port next to gRPC: /health, /version, /readyz, /livez and a
 * minimal /metrics.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Node } from "../node/node.ts";

/** Builds the HTTP/1.1 handler for a member. */
export function httpEndpoints(node: Node, version: string): (req: IncomingMessage, res: ServerResponse) => void {
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
        res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4" });
        return res.end(
          [
            `etcd_server_has_leader ${node.leader !== "0" ? 1 : 0}`,
            `etcd_server_is_leader ${node.isLeader ? 1 : 0}`,
            `etcd_debugging_mvcc_current_revision ${node.store.currentRev}`,
            `etcd_debugging_mvcc_compact_revision ${node.store.compactRev}`,
            `etcd_mvcc_db_total_size_in_bytes ${node.store.sizeBytes}`,
            `etcd_server_proposals_applied_total ${node.appliedIndex}`,
            `etcd_debugging_mvcc_keys_total ${node.store.keyCount}`,
            "",
          ].join("\n"),
        );
      }
      default:
        res.writeHead(404, { "Content-Type": "text/plain" });
        res.end("404 page not found\n");
    }
  };
}
