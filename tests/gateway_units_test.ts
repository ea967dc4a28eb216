/**
 * The gateway's pure parts as specifications: routing (Ordered and RadixTree, host wildcards, status priority
 * 403 > 400 > 405 > 404, rewriteTarget), the ipFilter rules, the HTTP/1.1 head parser's refusals, the chunked decoder,
 * the circuit breaker's state machine, and the Proxy's exchange gate (FIFO turns, opened for a slow origin).
 */
import assert from "node:assert/strict";
import { GwRequest } from "../server/gateway/context.ts";
import {
  ChunkedDecoder,
  CONNECTION_TOKENS_CACHED,
  connectionTokens,
  HeaderList,
  HttpParseError,
  MAX_HEADER_COUNT,
  parseRequestHead,
  parseResponseHead,
} from "../server/gateway/http1.ts";
import { Router } from "../server/gateway/httpserver/router.ts";
import { readRid, readSocket } from "../server/gateway/sockread.ts";
import { IpFilter } from "../server/gateway/httpserver/ipfilter.ts";
import { BreakerState, CircuitBreakerPolicy } from "../server/gateway/pipeline/resilience.ts";
import {
  EXCHANGE_GATE_LIMIT,
  EXCHANGE_GATE_MAX_WAIT_MS,
  ExchangeGate,
  Origin,
  OutgoingHead,
  UpstreamError,
  UpstreamFailure,
} from "../server/gateway/filters/proxy/upstream.ts";

function request(method: string, target: string, headers: Record<string, string> = {}, ip = "10.0.0.1"): GwRequest {
  const h = new HeaderList();
  if (!("host" in headers)) h.add("Host", "example.com");
  for (const [k, v] of Object.entries(headers)) h.add(k, v);
  return new GwRequest(method, target, "HTTP/1.1", h, ip, `${ip}:1234`, "http");
}

function backendOf(router: Router, req: GwRequest): string | number {
  const r = router.search(req);
  return typeof r === "number" ? r : r.path.backend + (r.rewritten !== null ? ` -> ${r.rewritten}` : "");
}

Deno.test("router: Ordered matching by host, path, prefix, regexp, and the rewriteTarget forms", () => {
  const router = new Router([
    { host: "*.example.com", paths: [{ path: "/wild", backend: "wildcard" }] },
    { hosts: [{ value: "api.*" }], paths: [{ pathPrefix: "/v1", rewriteTarget: "/v2", backend: "api" }] },
    {
      paths: [
        { path: "/exact", rewriteTarget: "/replaced", backend: "exact" },
        { pathRegexp: "^/users/([0-9]+)$", rewriteTarget: "/u/$1", backend: "regexp" },
        { pathPrefix: "/", backend: "catchall" },
      ],
    },
  ], "");
  assert.equal(backendOf(router, request("GET", "/wild", { host: "a.b.example.com:8080" })), "wildcard");
  // *.example.com does not match example.com itself
  assert.equal(backendOf(router, request("GET", "/wild", { host: "example.com" })), "catchall");
  assert.equal(backendOf(router, request("GET", "/v1/x?q", { host: "api.test" })), "api -> /v2/x");
  assert.equal(backendOf(router, request("GET", "/exact")), "exact -> /replaced");
  assert.equal(backendOf(router, request("GET", "/users/42")), "regexp -> /u/42");
});

Deno.test("router: a failed search answers 403 > 400 > 405 > 404 by the flags over all rules", () => {
  const router = new Router([
    { paths: [{ path: "/m", methods: ["POST"], backend: "m" }] },
    { paths: [{ path: "/h", headers: [{ key: "X-Env", values: ["prod"] }], backend: "h" }] },
    { paths: [{ path: "/q", queries: [{ key: "v", regexp: "^[0-9]+$" }], backend: "q" }] },
    { paths: [{ path: "/ip", ipFilter: { allowIPs: ["192.168.0.0/16"] }, backend: "ip" }] },
    // a rule's ipFilter is checked before its paths: it applies to every request for its host
    { host: "blocked.example", ipFilter: { blockIPs: ["10.0.0.1"] }, paths: [{ path: "/blocked", backend: "b" }] },
    {
      paths: [{ path: "/mixed", methods: ["PUT"], backend: "x" }, {
        path: "/mixed",
        headers: [{ key: "A", values: ["1"] }],
        backend: "y",
      }],
    },
  ], "Ordered");
  assert.equal(backendOf(router, request("GET", "/m")), 405);
  assert.equal(backendOf(router, request("POST", "/m")), "m");
  assert.equal(backendOf(router, request("GET", "/h")), 400);
  assert.equal(backendOf(router, request("GET", "/h", { "X-Env": "prod" })), "h");
  assert.equal(backendOf(router, request("GET", "/q?v=abc")), 400);
  assert.equal(backendOf(router, request("GET", "/q?v=12")), "q");
  assert.equal(backendOf(router, request("GET", "/ip")), 403);
  assert.equal(backendOf(router, request("GET", "/ip", {}, "192.168.3.4")), "ip");
  assert.equal(backendOf(router, request("GET", "/blocked", { host: "blocked.example" })), 403);
  assert.equal(backendOf(router, request("GET", "/nothing", { host: "blocked.example" })), 403);
  // a header mismatch (400) outranks a method mismatch (405)
  assert.equal(backendOf(router, request("GET", "/mixed")), 400);
  assert.equal(backendOf(router, request("GET", "/nowhere")), 404);
  // RealIP: the first public X-Forwarded-For entry (trusted as Easegress does), not the socket address
  assert.equal(
    backendOf(router, request("GET", "/ip", { "X-Forwarded-For": "10.1.1.1, 1.2.3.4" }, "192.168.3.4")),
    403,
  );
  // no public entry: X-Real-Ip even when empty, and an unparseable IP gets the default (allowed)
  assert.equal(backendOf(router, request("GET", "/ip", { "X-Forwarded-For": "10.1.1.1" }, "8.8.8.8")), "ip");
});

Deno.test("router: RadixTree patterns (static > regexp > param > catch-all) and captures in rewriteTarget", () => {
  const router = new Router([{
    paths: [
      { path: "/users/*", rewriteTarget: "/all/{EG_WILDCARD}", backend: "wild" },
      { path: "/users/{name}", rewriteTarget: "/by-name/{name}", backend: "param" },
      { path: "/users/{id:[0-9]+}", rewriteTarget: "/by-id/{id}", backend: "regexp" },
      { path: "/users/me", backend: "static" },
      { pathPrefix: "/ignored", backend: "prefix" },
    ],
  }], "RadixTree");
  assert.equal(backendOf(router, request("GET", "/users/me")), "static");
  assert.equal(backendOf(router, request("GET", "/users/42")), "regexp -> /by-id/42");
  assert.equal(backendOf(router, request("GET", "/users/bob")), "param -> /by-name/bob");
  assert.equal(backendOf(router, request("GET", "/users/bob/x")), "wild -> /all/bob/x");
  // the catch-all needs the trailing slash; pathPrefix is ignored by RadixTree
  assert.equal(backendOf(router, request("GET", "/users")), 404);
  assert.equal(backendOf(router, request("GET", "/ignored/x")), 404);
  assert.throws(() => new Router([{ paths: [{ path: "/a/{x}/{x}", backend: "b" }] }], "RadixTree"), /duplicated/);
});

Deno.test("ipFilter: allow list implies deny; in both lists the default wins", () => {
  const f = new IpFilter({ allowIPs: ["10.0.0.0/8", "2001:db8::/32"], blockIPs: ["10.1.0.0/16"] });
  assert.equal(f.allow("10.2.3.4"), true);
  assert.equal(f.allow("10.1.2.3"), true); // in both: !blockByDefault
  assert.equal(f.allow("11.0.0.1"), false); // not in a non-empty allow list
  assert.equal(f.allow("2001:db8::1"), true);
  assert.equal(
    new IpFilter({ blockByDefault: true, allowIPs: ["1.2.3.4"], blockIPs: ["1.2.3.4"] }).allow("1.2.3.4"),
    false,
  );
  assert.equal(new IpFilter({ blockIPs: ["1.2.3.4"] }).allow("1.2.3.4"), false);
  assert.throws(() => new IpFilter({ allowIPs: ["nonsense"] }), /invalid ip/);
});

function parse(text: string) {
  const b = new TextEncoder().encode(text);
  return parseRequestHead(b, 0, b.length);
}

function refusal(text: string): number {
  try {
    parse(text);
  } catch (err) {
    assert(err instanceof HttpParseError);
    return err.status;
  }
  return 0;
}

Deno.test("http1: request heads are parsed strictly; every ambiguity is refused", () => {
  const h = parse("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
  assert.equal(h.method, "POST");
  assert.equal(h.target, "/a?b=1");
  assert.equal(h.contentLength, 5);
  assert.equal(h.close, true);
  assert.equal(parse("GET / HTTP/1.0\r\n\r\n").close, true);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
  assert.equal(
    refusal("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
    501,
  );
  // RFC 9112 6.3: chunked not the final coding → 400 (the body's end is unknown); 6.1: a coding we lack → 501
  assert.equal(refusal("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"), 400);
  assert.equal(refusal("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400);
  assert.equal(
    refusal("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n"),
    400,
  );
  assert.equal(refusal("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
  assert.equal(refusal("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  assert.equal(refusal("GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nBad\x7fName: 1\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n"), 400);
});

Deno.test("http1: common header names in any spelling keep it and get their lower-case key", () => {
  const h = parse(
    "POST / HTTP/1.1\r\nhost: x\r\nCONTENT-LENGTH: 2\r\nContent-Type: a\r\ncontent-type: b\r\nContent-type: c\r\n" +
      "Hosts: y\r\nHosz: z\r\nUser-Agent: u\r\nx-forwarded-for: 1\r\n\r\n",
  );
  assert.deepEqual(h.headers.names, [
    "host",
    "CONTENT-LENGTH",
    "Content-Type",
    "content-type",
    "Content-type",
    "Hosts",
    "Hosz",
    "User-Agent",
    "x-forwarded-for",
  ]);
  assert.deepEqual(h.headers.keys, [
    "host",
    "content-length",
    "content-type",
    "content-type",
    "content-type",
    "hosts",
    "hosz",
    "user-agent",
    "x-forwarded-for",
  ]);
  assert.deepEqual(h.headers.values, ["x", "2", "a", "b", "c", "y", "z", "u", "1"]);
  assert.equal(h.contentLength, 2);
  assert.equal(h.headers.getAll("content-type").join(), "a,b,c");
  const rb = new TextEncoder().encode(
    "HTTP/1.1 200 OK\r\nServer: n\r\nDate: d\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
  );
  const r = parseResponseHead(rb, 0, rb.length, "GET");
  assert.deepEqual(r.headers.keys, ["server", "date", "content-length", "connection"]);
  assert.equal(r.contentLength, 3);
  assert.equal(r.close, true);
});

Deno.test("http1: head lines are found without splitting the head, with the same refusals", () => {
  const h = parse("GET /p HTTP/1.1\r\nHost: x:8\r\nX-A:  one \t\r\nx-a: two\r\nEmpty:\r\nC: a:b\r\n\r\n").headers;
  assert.deepEqual(h.names, ["Host", "X-A", "x-a", "Empty", "C"]);
  assert.deepEqual(h.keys, ["host", "x-a", "x-a", "empty", "c"]);
  assert.deepEqual(h.values, ["x:8", "one", "two", "", "a:b"]);
  // a bare LF or CR anywhere, in the request line or a header line, or a head not ending in CRLF CRLF
  assert.equal(refusal("GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
  assert.equal(refusal("GET /\r HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nA: b\nc\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nA: b\r\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\n\n"), 400);
  // a line without a colon (even when a later line has one), or with nothing before it
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\nA: b\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n"), 400);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\nA : b\r\n\r\n"), 400);
  // the header count limit, counted before any header line is parsed
  const many = "GET / HTTP/1.1\r\nHost: x\r\n" + "A: b\r\n".repeat(MAX_HEADER_COUNT) + "\r\n";
  assert.equal(refusal(many), 431);
  assert.equal(refusal("GET / HTTP/1.1\r\nHost: x\r\n" + "A: b\r\n".repeat(MAX_HEADER_COUNT - 1) + "\r\n"), 0);
  // a response head, parsed the same way (one array of line ends serves both parsers)
  const rb = new TextEncoder().encode("HTTP/1.1 204 No Content\r\nServer: s\r\nConnection: close\r\n\r\n");
  const r = parseResponseHead(rb, 0, rb.length, "GET");
  assert.equal(r.status, 204);
  assert.deepEqual(r.headers.values, ["s", "close"]);
  assert.equal(r.close, true);
  assert.equal(parse("GET / HTTP/1.1\r\nHost: y\r\n\r\n").headers.get("host"), "y");
});

Deno.test("http1: the chunked decoder takes bytes in any split and refuses malformed chunks and oversize bodies", () => {
  const body = new TextEncoder().encode("4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n");
  for (let split = 1; split < body.length; split++) {
    const dec = new ChunkedDecoder();
    const buf = new Uint8Array(body.length);
    buf.set(body.subarray(0, split));
    let pos = dec.decode(buf, 0, split, -1);
    buf.set(body.subarray(split), split);
    pos = dec.decode(buf, pos, body.length, -1);
    assert.equal(dec.done, true, `split at ${split}`);
    assert.equal(pos, body.length);
    assert.equal(new TextDecoder().decode(dec.body()), "Wikipedia");
  }
  const bad = (s: string, limit = -1) => {
    const b = new TextEncoder().encode(s);
    try {
      new ChunkedDecoder().decode(b, 0, b.length, limit);
    } catch (err) {
      return (err as HttpParseError).status;
    }
    return 0;
  };
  assert.equal(bad("x\r\n"), 400);
  assert.equal(bad("4\r\nWikiXX"), 400);
  assert.equal(bad("4\nWiki\r\n"), 400);
  assert.equal(bad("ffffffffffffff\r\n"), 400);
  assert.equal(bad("10\r\n", 8), 413);
});

Deno.test("http1: Connection tokens are one frozen list per header value, shared by every message; the cache is bounded", () => {
  const heads = (v: string) => {
    const h = new HeaderList();
    h.add("Content-Length", "3");
    h.add("Connection", v);
    return h;
  };
  assert.equal(connectionTokens(new HeaderList()), undefined);
  const a = connectionTokens(heads("keep-alive"));
  const b = connectionTokens(heads("keep-alive"));
  assert.deepEqual(a, ["keep-alive"]);
  assert.equal(a, b, "the same list for the same value, not a new array per message");
  assert.ok(Object.isFrozen(a));
  assert.throws(() => (a as string[]).push("x"));
  const c = connectionTokens(heads("Keep-Alive, X-Secret ,close"));
  assert.deepEqual(c, ["keep-alive", "x-secret", "close"]);
  assert.equal(connectionTokens(heads("Keep-Alive, X-Secret ,close")), c);
  // a peer sending a new value per message does not grow the cache: beyond the bound each gets a fresh frozen list
  for (let i = 0; i < CONNECTION_TOKENS_CACHED * 4; i++) {
    const t = connectionTokens(heads(`x-${i}`))!;
    assert.deepEqual(t, [`x-${i}`]);
    assert.ok(Object.isFrozen(t));
  }
  const late = `x-${CONNECTION_TOKENS_CACHED * 4 - 1}`;
  assert.notEqual(connectionTokens(heads(late)), connectionTokens(heads(late)), "not cached beyond the bound");
  assert.equal(connectionTokens(heads("keep-alive")), a, "values cached early stay shared");
  // the hop-by-hop fields a Connection header names are dropped from the head
  const h = heads("x-secret");
  h.add("X-Secret", "1");
  h.add("X-Kept", "2");
  h.removeKeys(new Set(["connection"]), connectionTokens(h));
  assert.equal(h.serialize(), "Content-Length: 3\r\nX-Kept: 2\r\n");
});

Deno.test("circuit breaker: opens at the failure rate, rejects while open, half-opens after the wait", () => {
  const p = new CircuitBreakerPolicy({
    slidingWindowSize: 4,
    minimumNumberOfCalls: 4,
    failureRateThreshold: 50,
    waitDurationInOpenState: "1s",
    permittedNumberOfCallsInHalfOpenState: 2,
  });
  const b = p.newBreaker();
  let now = 1000;
  for (const failed of [false, true, false]) b.record(b.acquire(now), failed, 1, now);
  assert.equal(b.state, BreakerState.Closed); // 3 calls: below the minimum
  b.record(b.acquire(now), true, 1, now); // 2 of 4 failed = 50 %
  assert.equal(b.state, BreakerState.Open);
  assert.equal(b.acquire(now + 500), -1);
  now += 1000;
  const p1 = b.acquire(now);
  assert.equal(b.state, BreakerState.HalfOpen);
  const p2 = b.acquire(now);
  assert.equal(b.acquire(now), -1); // only 2 permitted
  b.record(p1, false, 1, now);
  b.record(p2, false, 1, now);
  assert.equal(b.state, BreakerState.Closed);
  // defaults of the reference
  const d = new CircuitBreakerPolicy({});
  assert.deepStrictEqual(
    [d.windowSize, d.minimumCalls, d.failureRateThreshold, d.permittedHalfOpen, d.waitOpenMs, d.slowCallMs],
    [100, 100, 50, 10, 60_000, 60_000],
  );
});

Deno.test("exchange gate: turns beyond the limit are given in arrival order as exchanges end", async () => {
  const gate = new ExchangeGate();
  for (let i = 0; i < EXCHANGE_GATE_LIMIT; i++) assert.equal(gate.enter(), undefined);
  const order: number[] = [];
  const waits = [0, 1, 2].map((i) => gate.enter()!.then(() => order.push(i)));
  // a newcomer while others queue waits behind them even when a turn is free at that moment
  gate.leave();
  const late = gate.enter();
  assert.notEqual(late, undefined);
  gate.leave();
  gate.leave();
  await Promise.all(waits);
  assert.deepEqual(order, [0, 1, 2]);
  gate.leave();
  await late;
  assert.equal(gate.inflight, EXCHANGE_GATE_LIMIT); // the late one holds the turn it got
  gate.close();
});

Deno.test("exchange gate: a slow origin (no turn ends for the longest wait) opens it for everyone queued", async () => {
  const gate = new ExchangeGate();
  for (let i = 0; i < EXCHANGE_GATE_LIMIT; i++) gate.enter();
  const queued = Array.from({ length: 10 }, () => gate.enter()!);
  const t0 = performance.now();
  await Promise.all(queued);
  assert.ok(performance.now() - t0 >= EXCHANGE_GATE_MAX_WAIT_MS - 5);
  assert.equal(gate.inflight, EXCHANGE_GATE_LIMIT + 10);
  assert.equal(gate.limit, EXCHANGE_GATE_LIMIT + 10); // opened for all who were queued
  // exchanges ending with nobody queued narrow it back towards the limit
  for (let i = 0; i < EXCHANGE_GATE_LIMIT + 10; i++) gate.leave();
  assert.equal(gate.inflight, 0);
  assert.ok(gate.limit < EXCHANGE_GATE_LIMIT + 10 && gate.limit >= EXCHANGE_GATE_LIMIT);
  gate.close();
});

Deno.test("exchange gate: the Proxy timeout counts the wait for a turn; a request out of time is never sent", async () => {
  // an upstream that reads requests and never answers: every exchange holds its turn
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  let requests = 0;
  const serving = (async () => {
    for await (const c of listener) {
      conns.push(c);
      (async () => {
        const buf = new Uint8Array(4096);
        while ((await c.read(buf).catch(() => null)) !== null) requests++;
      })();
    }
  })().catch(() => {});
  const origin = new Origin("127.0.0.1", (listener.addr as Deno.NetAddr).port, null, 1024);
  const head = "GET / HTTP/1.1\r\nHost: up\r\n\r\n";
  const empty = new Uint8Array(0);
  try {
    const held = Array.from(
      { length: EXCHANGE_GATE_LIMIT },
      () => origin.roundTrip(head, empty, "GET", -1, 2000).catch((e) => e),
    );
    // its timeout (50 ms) passes while it waits for a turn (the gate opens only after EXCHANGE_GATE_MAX_WAIT_MS)
    const late = await origin.roundTrip(head, empty, "GET", -1, 50).catch((e) => e);
    assert.ok(late instanceof UpstreamError);
    assert.equal(late.failure, UpstreamFailure.Timeout);
    assert.equal(requests, EXCHANGE_GATE_LIMIT, "the request whose time ran out in the queue went upstream");
    for (const r of await Promise.all(held)) assert.equal(r.failure, UpstreamFailure.Timeout);
  } finally {
    origin.close();
    listener.close();
    for (const c of conns) c.close();
    await serving;
  }
});

/** A head written from a variable when the exchange writes it (as the Proxy's heads read the request then). */
class VariableHead extends OutgoingHead {
  constructor(readonly source: { path: string }, shared: boolean) {
    super(shared);
  }
  get length(): number {
    return this.#text().length;
  }
  #text(): string {
    return `GET ${this.source.path} HTTP/1.1\r\nHost: up\r\n\r\n`;
  }
  protected write(dst: Uint8Array): void {
    dst.set(new TextEncoder().encode(this.#text()));
  }
}

Deno.test("upstream heads: a shared head (a mirror's) is sent as it was when its exchange began, also on a retry", async () => {
  // an upstream that answers each request with its request line, and closes its first connection after one answer
  // (which the pool keeps as idle: the next request on it meets a stale connection and is retried on a new one)
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const serving = (async () => {
    for await (const c of listener) {
      conns.push(c);
      const first = conns.length === 1;
      (async () => {
        const buf = new Uint8Array(4096);
        while (true) {
          const n = await c.read(buf).catch(() => null);
          if (n === null) break;
          const line = new TextDecoder().decode(buf.subarray(0, n)).split("\r\n")[0];
          await c.write(new TextEncoder().encode(`HTTP/1.1 200 OK\r\nContent-Length: ${line.length}\r\n\r\n${line}`));
          if (first) {
            c.close();
            break;
          }
        }
      })().catch(() => {});
    }
  })().catch(() => {});
  const origin = new Origin("127.0.0.1", (listener.addr as Deno.NetAddr).port, null, 1024);
  const empty = new Uint8Array(0);
  const send = async (shared: boolean, path: string, changeTo: string) => {
    const source = { path };
    const p = origin.roundTrip(new VariableHead(source, shared), empty, "GET", -1, 2000);
    source.path = changeTo; // the main flow goes on and changes the request while the exchange waits
    const r = await p;
    const line = new TextDecoder().decode(r.body.slice());
    r.release?.();
    return line;
  };
  try {
    // no idle connection: the exchange dials first (a wait), so the shared head is held before
    assert.equal(await send(true, "/dial", "/changed"), "GET /dial HTTP/1.1");
    // that connection is idle now and stale (the upstream closed it): the head written on it is sent again as it was
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await send(true, "/retry", "/changed"), "GET /retry HTTP/1.1");
    assert.equal(conns.length, 2);
    // a head that is not shared is written when its exchange writes (its request cannot change meanwhile)
    const dialing = new Origin("127.0.0.1", (listener.addr as Deno.NetAddr).port, null, 1024);
    const source = { path: "/own" };
    const p = dialing.roundTrip(new VariableHead(source, false), empty, "GET", -1, 2000);
    source.path = "/later";
    const r = await p;
    assert.equal(new TextDecoder().decode(r.body.slice()), "GET /later HTTP/1.1");
    r.release?.();
    dialing.close();
  } finally {
    origin.close();
    listener.close();
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed by the upstream itself */ }
    }
    await serving;
  }
});

Deno.test("socket reads: the runtime's op for Deno's own connections, conn.read otherwise; the byte count, 0 at EOF", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
  const server = await listener.accept();
  try {
    const rid = readRid(server);
    assert.ok(rid >= 0, "Deno 2.9's TCP connections are read with the op directly");
    const buf = new Uint8Array(16);
    for (const r of [rid, -1]) { // the direct op, then the fallback through conn.read
      await client.write(new TextEncoder().encode("abc"));
      assert.equal(await readSocket(server, r, buf), 3);
      assert.equal(new TextDecoder().decode(buf.subarray(0, 3)), "abc");
    }
    client.closeWrite();
    assert.equal(await readSocket(server, rid, buf), 0);
    assert.equal(await readSocket(server, -1, buf), 0);
    // a connection closed under a pending read rejects it, as conn.read does
    const pending = readSocket(client, readRid(client), buf);
    client.close();
    await assert.rejects(pending);
  } finally {
    server.close();
    listener.close();
  }
});
