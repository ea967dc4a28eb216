/**
 * Proxy pool behaviours through one real member process and backends the test starts (issue 12): the loadBalance
 * policies other than roundRobin (random, weightedRandom, ipHash, headerHash, cookieHash), the sticky-session modes
 * CookieConsistentHash and ApplicationBased (DurationBased is in gateway_features_test.ts), the upstream Host with
 * keepHost / setUpstreamHost, and a custom failureCodes list seen by retry and by a jumpIf to Fallback.
 */
import assert from "node:assert/strict";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import {
  type Backend,
  get,
  proxyPipeline as pipeline,
  putObject,
  rawExchange,
  servers,
  startBackend,
} from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";
import { LoadBalancer, type Server } from "../server/gateway/filters/proxy/balancer.ts";
import type { GwRequest } from "../server/gateway/context.ts";

/** The backend names (first word of the body) answering `n` requests built by `init(i)`. */
async function names(url: string, n: number, init: (i: number) => RequestInit = () => ({})): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const [status, body] = await get(url, init(i));
    assert.equal(status, 200, body);
    out.push(body.split(" ")[0]);
  }
  return out;
}

const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());

memberTest("gateway proxy: loadBalance policies, sticky sessions, keepHost/setUpstreamHost, failureCodes", async (
  procs,
) => {
  const [ports] = await memberPorts(1);
  const m = await startMember("gwlb1", primaryArgs("gwlb1", ports));
  procs.push(m);
  const [port] = await freePorts(1);
  const bs = [await startBackend("s1"), await startBackend("s2"), await startBackend("s3")];
  // ApplicationBased: the application sets its own cookie `app` on /app/login only
  const apps: Backend[] = [];
  for (const n of ["a1", "a2", "a3"]) {
    apps.push(
      await startBackend(n, (req) =>
        new Response(`${n} ${new URL(req.url).pathname}`, {
          headers: new URL(req.url).pathname.endsWith("/login") ? { "set-cookie": `app=${n}-session` } : {},
        })),
    );
  }
  const hostEcho = await startBackend("host", (req) => new Response(req.headers.get("host") ?? ""));
  const teapots = [0, 1, 2].map(() => startBackend("teapot", () => new Response("teapot", { status: 418 })));
  const [tea418, teaDefault, teaFallback] = await Promise.all(teapots);
  const err500 = await startBackend("err", () => new Response("err", { status: 500 }));
  const all = [...bs, ...apps, hostEcho, tea418, teaDefault, teaFallback, err500];
  const retry = "resilience:\n- {name: r, kind: Retry, maxAttempts: 3, waitDuration: 10ms}";
  const local = `http://localhost:${hostEcho.port}`;
  try {
    const pipes: [string, string, string?][] = [
      ["random", `${servers(bs)}\nloadBalance: {policy: random}`],
      // weightedRandom: the weights are per server (on all of them)
      [
        "weighted",
        `${servers(bs.slice(0, 2), (_, i) => `, weight: ${i === 0 ? 90 : 10}`)}\nloadBalance: {policy: weightedRandom}`,
      ],
      ["iphash", `${servers(bs)}\nloadBalance: {policy: ipHash}`],
      ["headerhash", `${servers(bs)}\nloadBalance: {policy: headerHash, headerHashKey: X-User}`],
      ["cookiehash", `${servers(bs)}\nloadBalance: {policy: cookieHash}`],
      [
        "consistent",
        `${servers(bs)}\nloadBalance: {policy: roundRobin, stickySession: {mode: CookieConsistentHash, ` +
        `appCookieName: uid}}`,
      ],
      [
        "app",
        `${servers(apps)}\nloadBalance: {policy: roundRobin, stickySession: {mode: ApplicationBased, ` +
        `appCookieName: app, lbCookieName: LB, lbCookieExpire: 1h}}`,
      ],
      ["hostip", `servers: [{url: ${hostEcho.url}}]`],
      ["hostname", `servers: [{url: ${local}}]`],
      ["keephost", `servers: [{url: ${local}, keepHost: true}]`],
      ["sethost", `servers: [{url: ${hostEcho.url}}]\nsetUpstreamHost: true`],
      ["sethostkeep", `servers: [{url: ${hostEcho.url}, keepHost: true}]\nsetUpstreamHost: true`],
      ["fc418", `${servers([tea418])}\nfailureCodes: [418]\nretryPolicy: r`, retry],
      ["fcdefault", `${servers([teaDefault])}\nretryPolicy: r`, retry],
      ["fc418on500", `${servers([err500])}\nfailureCodes: [418]\nretryPolicy: r`, retry],
    ];
    for (const [name, pool, extra] of pipes) await putObject(m.apiAddr, pipeline(name, pool, extra ?? ""));
    // failureCodes and a Fallback: a listed status takes the failureCode branch, an unlisted one does not
    const fbFlow = "flow:\n- {filter: proxy, jumpIf: {failureCode: fb}}\n- {filter: END}\n- {filter: fb}";
    const fb = "- {name: fb, kind: Fallback, mockCode: 200, mockBody: fallback}";
    await putObject(m.apiAddr, pipeline("fbon", `${servers([teaFallback])}\nfailureCodes: [418]`, fb, fbFlow));
    await putObject(m.apiAddr, pipeline("fboff", `${servers([teaFallback])}`, fb, fbFlow));
    const routes = [...pipes.map((p) => p[0]), "fbon", "fboff"];
    await putObject(
      m.apiAddr,
      `kind: HTTPServer\nname: lbsrv\nport: ${port}\nrules:\n- paths:\n` +
        routes.map((p) => `  - {pathPrefix: /${p}/, backend: ${p}}`).join("\n"),
    );
    const base = `http://127.0.0.1:${port}`;
    await waitFor("routes", async () => (await get(`${base}/random/x`).catch(() => [0]))[0] === 200);

    // random: every backend gets a share, and the order is not a round-robin cycle
    const rnd = await names(`${base}/random/x`, 90);
    for (const b of bs) assert.ok((count(rnd).get(b.name) ?? 0) >= 5, `random: ${[...count(rnd)]}`);
    assert.ok(rnd.some((x, i) => i >= 3 && x !== rnd[i - 3]), "random looks like round-robin");

    // weightedRandom 90:10: the light server gets some but far fewer requests
    const wr = count(await names(`${base}/weighted/x`, 200));
    const light = wr.get("s2") ?? 0;
    assert.ok(light >= 1 && light <= 50, `weightedRandom: ${[...wr]}`);
    assert.equal((wr.get("s1") ?? 0) + light, 200);

    // ipHash on the RealIP (X-Real-Ip here): one client IP always on one backend, many IPs spread
    const ipOf = (i: number) => `8.8.${i % 24}.${(i % 24) * 7 + 1}`;
    const ips = await names(`${base}/iphash/x`, 72, (i) => ({ headers: { "x-real-ip": ipOf(i) } }));
    for (let i = 24; i < 72; i++) assert.equal(ips[i], ips[i % 24], `ipHash ${ipOf(i)}`);
    assert.ok(count(ips).size >= 2, "ipHash used one backend for 24 IPs");
    // without the header, the peer (127.0.0.1) decides: always the same backend
    assert.equal(count(await names(`${base}/iphash/x`, 6)).size, 1);

    // headerHash on X-User
    const users = await names(`${base}/headerhash/x`, 60, (i) => ({ headers: { "x-user": `user-${i % 20}` } }));
    for (let i = 20; i < 60; i++) assert.equal(users[i], users[i % 20], `headerHash user-${i % 20}`);
    assert.ok(count(users).size >= 2, "headerHash used one backend for 20 values");
    // a missing header hashes "": still one backend
    assert.equal(count(await names(`${base}/headerhash/x`, 6)).size, 1);

    // cookieHash on the whole Cookie header
    const cookies = await names(`${base}/cookiehash/x`, 60, (i) => ({ headers: { cookie: `k=v${i % 20}; z=1` } }));
    for (let i = 20; i < 60; i++) assert.equal(cookies[i], cookies[i % 20], `cookieHash v${i % 20}`);
    assert.ok(count(cookies).size >= 2, "cookieHash used one backend for 20 cookies");

    // CookieConsistentHash: the `uid` cookie value picks the server, no cookie is set; without it, roundRobin.
    // 60 uids reach all 3 servers (a ring whose points cluster left a server without any in most runs)
    const uids: string[] = [];
    for (let i = 0; i < 120; i++) {
      const r = await fetch(`${base}/consistent/x`, { headers: { cookie: `other=${i}; uid=u${i % 60}` } });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("set-cookie"), null);
      uids.push((await r.text()).split(" ")[0]);
    }
    for (let i = 60; i < 120; i++) assert.equal(uids[i], uids[i % 60], `CookieConsistentHash u${i % 60}`);
    assert.equal(count(uids).size, 3, `CookieConsistentHash over 60 uids: ${[...count(uids)]}`);
    assert.equal(count(await names(`${base}/consistent/x`, 3)).size, 3);

    // ApplicationBased: LB cookie only when the application sets `app`; it pins the server, expiry lbCookieExpire
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${base}/app/page`);
      await r.body?.cancel();
      assert.equal(r.headers.get("set-cookie"), null);
    }
    const login = await fetch(`${base}/app/login`);
    const who = (await login.text()).split(" ")[0];
    const setCookies = login.headers.getSetCookie();
    assert.ok(setCookies.includes(`app=${who}-session`), String(setCookies));
    const lb = setCookies.find((c) => c.startsWith("LB=")) ?? "";
    const lbMatch = /^LB=([0-9a-f]{80}); Expires=(.+)$/.exec(lb);
    assert.ok(lbMatch, `LB cookie: ${setCookies}`);
    const expires = Date.parse(lbMatch[2]);
    assert.ok(Math.abs(expires - (Date.now() + 3600_000)) < 120_000, `Expires ${lbMatch[2]}`);
    const pinned = await names(`${base}/app/page`, 6, () => ({ headers: { cookie: `LB=${lbMatch[1]}` } }));
    assert.deepStrictEqual(pinned, Array(6).fill(who));
    // a forged LB value is ignored (roundRobin again)
    const forged = "0".repeat(80);
    assert.equal(count(await names(`${base}/app/page`, 3, () => ({ headers: { cookie: `LB=${forged}` } }))).size, 3);

    // upstream Host: IP server -> the client's Host; hostname server -> its own; keepHost wins; setUpstreamHost
    const hostOf = async (path: string) => {
      const [r] = await rawExchange(
        port,
        `GET /${path}/x HTTP/1.1\r\nHost: client.example:8080\r\nConnection: close\r\n\r\n`,
        3000,
      );
      assert.equal(r?.status, 200, `${path}: ${r?.head}`);
      return r.body;
    };
    assert.equal(await hostOf("hostip"), "client.example:8080");
    assert.equal(await hostOf("hostname"), `localhost:${hostEcho.port}`);
    assert.equal(await hostOf("keephost"), "client.example:8080");
    assert.equal(await hostOf("sethost"), `127.0.0.1:${hostEcho.port}`);
    assert.equal(await hostOf("sethostkeep"), "client.example:8080");

    // failureCodes [418]: 418 is a failure -> retried (3 attempts), the upstream response is kept
    assert.deepStrictEqual(await get(`${base}/fc418/x`), [418, "teapot"]);
    assert.equal(tea418.hits, 3);
    // default (5xx): 418 is a success -> one attempt
    assert.deepStrictEqual(await get(`${base}/fcdefault/x`), [418, "teapot"]);
    assert.equal(teaDefault.hits, 1);
    // with failureCodes [418], a 500 is not a failure any more -> one attempt
    assert.deepStrictEqual(await get(`${base}/fc418on500/x`), [500, "err"]);
    assert.equal(err500.hits, 1);
    // jumpIf failureCode -> Fallback only when the status is listed
    assert.deepStrictEqual(await get(`${base}/fbon/x`), [200, "fallback"]);
    assert.deepStrictEqual(await get(`${base}/fboff/x`), [418, "teapot"]);
  } finally {
    for (const b of all) await b.stop().catch(() => {});
  }
});

Deno.test("CookieConsistentHash ring: fixed server URLs share the uids (no server left out)", () => {
  // with plain FNV-1a ring points these two sets of ports gave [58, 2, 0] and [10, 50, 0] of 60 uids
  for (const ports of [[8081, 8082, 8083], [10001, 10002, 10003]]) {
    const srv = (p: number): Server => ({
      url: `http://127.0.0.1:${p}`,
      origin: `http://127.0.0.1:${p}`,
      hostname: "127.0.0.1",
      port: p,
      https: false,
      hostPort: `127.0.0.1:${p}`,
      basePath: "",
      isIp: true,
      weight: 0,
      keepHost: false,
      tags: [],
    });
    const lb = new LoadBalancer(
      { policy: "roundRobin", stickySession: { mode: "CookieConsistentHash", appCookieName: "uid" } },
      ports.map(srv),
    );
    const perServer = new Map<number, number>();
    for (let i = 0; i < 60; i++) {
      // only the cookie is read for this mode
      const req = { cookie: (name: string) => name === "uid" ? `u${i}` : "" } as unknown as GwRequest;
      const s = lb.choose(req)!;
      assert.equal(lb.choose(req), s);
      perServer.set(s.port, (perServer.get(s.port) ?? 0) + 1);
    }
    for (const p of ports) assert.ok((perServer.get(p) ?? 0) >= 6, `${ports}: ${[...perServer]}`);
  }
});
