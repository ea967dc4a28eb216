/** nginx-like variables in `setHeaders` values: `$var`, `${var}`, `${var:default}` (Easegress §1.4.5). */
import type { GwRequest } from "../context.ts";

function variable(name: string, req: GwRequest, captures: Record<string, string> | null): string | undefined {
  switch (name) {
    case "request_method":
      return req.method;
    case "request_uri":
      return req.requestUri;
    case "uri":
      return req.path;
    case "request":
      return `${req.method} ${req.requestUri} ${req.proto}`;
    case "scheme":
      return req.headers.get("x-forwarded-proto") || req.scheme;
    case "query_string":
    case "args":
      return req.query;
    case "host":
    case "hostname":
    case "server_name":
      return req.hostname;
    case "http_host":
      return req.host;
    case "remote_addr":
      return req.realIp;
    case "proxy_add_x_forwarded_for": {
      const xff = req.headers.get("x-forwarded-for");
      return xff === "" ? req.realIp : `${xff}, ${req.realIp}`;
    }
    case "time_iso8601":
      return new Date().toISOString();
    case "msec":
      return (Date.now() / 1000).toFixed(3);
    case "content_type":
      return req.headers.get("content-type");
    case "content_length":
      return req.headers.get("content-length");
    case "server_protocol":
      return req.proto;
    case "request_time":
      return "0.000";
    case "request_length":
      return String(req.body.length);
  }
  if (name.startsWith("http_")) return req.headers.get(name.slice(5).replace(/_/g, "-").toLowerCase());
  if (name.startsWith("arg_")) return req.queryParam(name.slice(4));
  if (name.startsWith("cookie_")) return req.cookie(name.slice(7));
  return captures?.[name];
}

/** Expands the variables of a setHeaders value; unknown ones become "" (or their default). */
export function expandVariables(value: string, req: GwRequest, captures: Record<string, string> | null): string {
  return value.replace(/\$\{([A-Za-z0-9_]+)(?::([^}]*))?\}|\$([A-Za-z0-9_]+)/g, (_m, braced, dflt, bare) => {
    const v = variable(braced ?? bare, req, captures);
    return v === undefined || v === "" ? (dflt ?? "") : v;
  });
}
