/**
 * HTTPServer lifecycle and listener settings through one real member process and backends the test starts: `address`
 * binds only that address, `maxConnections` (extra connections wait in the kernel backlog, a live raise lets them in
 * and keeps the open ones), `xForwardedFor`, `hostRegexp` rules, a port change restarting the listener gracefully,
 * the 10 s retry of a port that could not be bound, and deleting the server (listener closed) or its pipeline (503).
 */
import assert from "node:assert/strict";
import { type Member, memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { type Backend, deleteObject, get, putObject, rawExchange, startBackend } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";

const pipeline = (name: string, b: Backend) =>
  `name: ${name}\nkind: Pipeline\nflow: [{filter: proxy}]\nfilters:\n- name: proxy\n  kind: Proxy\n  pools:\n` +
  `  - servers: [{url: ${b.url}}]\n`;

const server = (name: string, port: number, rules: string, extra = "") =>
  `kind: HTTPServer\nname: ${name}\nport: ${port}\n${extra}rules:\n${rules}`;

async function startGateway(procs: Member[], name: string): Promise<Member> {
  const [ports] = await memberPorts(1);
  const m = await startMember(name, primaryArgs(name, ports));
  procs.push(m);
  return m;
}

/** The server's status on member `m` (state, error). */
async function statusOf(m: Member, name: string): Promise<{ state?: string; error?: string } | undefined> {
  const st = await (await fetch(`http://${m.apiAddr}/apis/v2/status/objects/${name}`)).json();
  return st[`eg-traffic-default/${name}/${m.name}`]?.status;
}

/** Whether a TCP connection to host:port is refused. */
async function refused(hostname: string, port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname, port });
    c.close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.ConnectionRefused;
  }
}

/** A keep-alive HTTP/1.1 connection: one request at a time; a response is read whole (Content-Length framed). */
class KeepAlive {
  #buf = "";
  private constructor(readonly conn: Deno.Conn) {}
  static async open(port: number): Promise<KeepAlive> {
    return new KeepAlive(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  /** Sends GET `path`; resolves to [status, body], or null when nothing complete arrives within `waitMs`. */
  async ask(path: string, waitMs = 3000): Promise<[number, string] | null> {
    await this.conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
    const deadline = Date.now() + waitMs;
    while (true) {
      const he = this.#buf.indexOf("\r\n\r\n");
      if (he >= 0) {
        const head = this.#buf.slice(0, he);
        const len = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (this.#buf.length >= he + 4 + len) {
          const body = this.#buf.slice(he + 4, he + 4 + len);
          this.#buf = this.#buf.slice(he + 4 + len);
          return [Number(head.slice(9, 12)), body];
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) return null;
      const b = new Uint8Array(4096);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.conn.read(b),
        new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), left))),
      ]);
      clearTimeout(timer);
      if (n === "timeout") return null;
      if (n === null) throw new Error("connection closed");
      this.#buf += new TextDecoder().decode(b.subarray(0, n));
    }
  }
  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

memberTest(
  "gateway server: address, maxConnections (live), xForwardedFor, hostRegexp, delete server / pipeline",
  async (procs) => {
    const m = await startGateway(procs, "gwl1");
    const [addrPort, limPort, xffPort, hostPort] = await freePorts(4);
    const echo = await startBackend("echo", (req) => new Response(`xff=${req.headers.get("x-forwarded-for")}`));
    const a = await startBackend("a");
    const b = await startBackend("b");
    const conns: KeepAlive[] = [];
    try {
      await putObject(m.apiAddr, pipeline("echo", echo));
      await putObject(m.apiAddr, pipeline("pa", a));
      await putObject(m.apiAddr, pipeline("pb", b));

      // (1) address: served on 127.0.0.2 only; 127.0.0.1 on the same port is refused
      await putObject(
        m.apiAddr,
        server("bound", addrPort, "- paths:\n  - {pathPrefix: /, backend: pa}\n", "address: 127.0.0.2\n"),
      );
      await waitFor("bound", async () => (await get(`http://127.0.0.2:${addrPort}/x`).catch(() => [0]))[0] === 200);
      assert.deepStrictEqual(await get(`http://127.0.0.2:${addrPort}/x`), [200, "a GET /x"]);
      assert(await refused("127.0.0.1", addrPort), "127.0.0.1 must be refused when address is 127.0.0.2");

      // (2) maxConnections 2: two connections served; a third waits (kernel backlog, not refused nor closed)
      const limited = (max: number) =>
        server("limited", limPort, "- paths:\n  - {pathPrefix: /, backend: pa}\n", `maxConnections: ${max}\n`);
      await putObject(m.apiAddr, limited(2));
      await waitFor("limited", async () => !(await refused("127.0.0.1", limPort)));
      for (let i = 0; i < 2; i++) {
        conns.push(await KeepAlive.open(limPort));
        assert.deepStrictEqual(await conns[i].ask(`/c${i}`), [200, `a GET /c${i}`]);
      }
      const third = await KeepAlive.open(limPort); // the kernel completes the handshake
      conns.push(third);
      const waiting = third.ask("/c2", 8000);
      // meanwhile the first two keep being served, and the third gets nothing
      await new Promise((r) => setTimeout(r, 600));
      assert.deepStrictEqual(await conns[0].ask("/again"), [200, "a GET /again"]);
      assert.deepStrictEqual(await conns[1].ask("/again"), [200, "a GET /again"]);
      const early = await Promise.race([waiting, new Promise((r) => setTimeout(() => r("pending"), 300))]);
      assert.equal(early, "pending", "a connection beyond maxConnections must not be served");
      // a live raise to 3: the waiting connection is served, the open ones stay open and served
      await putObject(m.apiAddr, limited(3), true);
      assert.deepStrictEqual(await waiting, [200, "a GET /c2"]);
      assert.deepStrictEqual(await conns[0].ask("/after"), [200, "a GET /after"]);
      assert.deepStrictEqual(await conns[1].ask("/after"), [200, "a GET /after"]);
      // a fourth waits again; closing one of the three lets it in
      const fourth = await KeepAlive.open(limPort);
      conns.push(fourth);
      const waiting4 = fourth.ask("/c3", 8000);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await Promise.race([waiting4, new Promise((r) => setTimeout(() => r("pending"), 100))]), "pending");
      conns[0].close();
      assert.deepStrictEqual(await waiting4, [200, "a GET /c3"]);

      // (3) xForwardedFor: false leaves the header alone; true sets it to the real IP, or appends the real IP
      await putObject(m.apiAddr, server("xff", xffPort, "- paths:\n  - {pathPrefix: /, backend: echo}\n"));
      const xff = `http://127.0.0.1:${xffPort}/`;
      await waitFor("xff", async () => (await get(xff).catch(() => [0]))[0] === 200);
      assert.deepStrictEqual(await get(xff), [200, "xff=null"]);
      assert.deepStrictEqual(await get(xff, { headers: { "x-forwarded-for": "10.0.0.5" } }), [200, "xff=10.0.0.5"]);
      await putObject(
        m.apiAddr,
        server("xff", xffPort, "- paths:\n  - {pathPrefix: /, backend: echo}\n", "xForwardedFor: true\n"),
        true,
      );
      await waitFor("xff live", async () => (await get(xff))[1] === "xff=127.0.0.1", 5000);
      // the real IP comes from X-Real-Ip when XFF has no public IP: appended with a comma, no space
      assert.deepStrictEqual(
        await get(xff, { headers: { "x-forwarded-for": "10.0.0.5", "x-real-ip": "198.51.100.9" } }),
        [200, "xff=10.0.0.5,198.51.100.9"],
      );
      // a public IP in XFF is the real IP: already there, not appended again
      assert.deepStrictEqual(
        await get(xff, { headers: { "x-forwarded-for": "203.0.113.7" } }),
        [200, "xff=203.0.113.7"],
      );

      // (4) hostRegexp (unanchored Go regexp, against Host without its port); other hosts fall to the next rule
      await putObject(
        m.apiAddr,
        server(
          "hosts",
          hostPort,
          "- hostRegexp: '^api[0-9]+\\.example\\.com$'\n  paths:\n  - {pathPrefix: /, backend: pa}\n" +
            "- hostRegexp: 'shop'\n  paths:\n  - {pathPrefix: /, backend: pb}\n",
        ),
      );
      await waitFor("hosts", async () => !(await refused("127.0.0.1", hostPort)));
      const viaHost = async (host: string) => {
        const r = await rawExchange(hostPort, `GET /h HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
        return [r[0]?.status, r[0]?.body];
      };
      await waitFor("hosts routed", async () => (await viaHost("api7.example.com"))[0] === 200);
      assert.deepStrictEqual(await viaHost("api7.example.com"), [200, "a GET /h"]);
      assert.deepStrictEqual(await viaHost("api42.example.com:8080"), [200, "a GET /h"]);
      assert.deepStrictEqual(await viaHost("my-shop.example.org"), [200, "b GET /h"]);
      assert.deepStrictEqual(await viaHost("xapi7.example.com"), [404, ""]);
      assert.deepStrictEqual(await viaHost("api7.example.com.evil"), [404, ""]);

      // (7) deleting the pipeline: 503 with an empty body; deleting the server closes its listener
      await deleteObject(m.apiAddr, "pb");
      await waitFor("pipeline gone", async () => (await viaHost("shop"))[0] === 503, 5000);
      assert.deepStrictEqual(await viaHost("shop"), [503, ""]);
      assert.deepStrictEqual(await viaHost("api1.example.com"), [200, "a GET /h"]);
      await deleteObject(m.apiAddr, "hosts");
      await waitFor("listener closed", () => refused("127.0.0.1", hostPort), 5000);
    } finally {
      for (const c of conns) c.close();
      for (const x of [echo, a, b]) await x.stop();
    }
  },
);

memberTest(
  "gateway server: port change restarts gracefully; an unbindable port is retried every 10 s",
  async (procs) => {
    const m = await startGateway(procs, "gwl2");
    const [oldPort, newPort, busyPort] = await freePorts(3);
    let slowStarted = 0;
    const backend = await startBackend("mv", async (req) => {
      if (new URL(req.url).pathname === "/slow") {
        slowStarted++;
        await new Promise((r) => setTimeout(r, 1000));
        return new Response("slow done");
      }
      return new Response("mv");
    });
    const holder = Deno.listen({ hostname: "0.0.0.0", port: busyPort });
    let holderOpen = true;
    try {
      await putObject(m.apiAddr, pipeline("p", backend));

      // (6) a port in use: state failed with the error ...
      await putObject(m.apiAddr, server("busy", busyPort, "- paths:\n  - {pathPrefix: /, backend: p}\n"));
      await waitFor("failed", async () => {
        const s = await statusOf(m, "busy");
        return s?.state === "failed" && /in use/i.test(s.error ?? "");
      }, 15000);
      // ... then the port is freed: the 10 s retry binds it (checked at the end; the other point runs meanwhile)
      holder.close();
      holderOpen = false;
      const freedAt = Date.now();

      // (5) a port change restarts the listener: an in-flight request on the old one completes, the new port serves,
      // the old one is closed
      const move = (port: number) => server("mover", port, "- paths:\n  - {pathPrefix: /, backend: p}\n");
      await putObject(m.apiAddr, move(oldPort));
      await waitFor("old port", async () => (await get(`http://127.0.0.1:${oldPort}/`).catch(() => [0]))[0] === 200);
      const inFlight = get(`http://127.0.0.1:${oldPort}/slow`);
      await waitFor("slow request at the backend", () => slowStarted === 1, 5000);
      await putObject(m.apiAddr, move(newPort), true);
      await waitFor("new port", async () => (await get(`http://127.0.0.1:${newPort}/`).catch(() => [0]))[0] === 200);
      assert.deepStrictEqual(await inFlight, [200, "slow done"]);
      assert(await refused("127.0.0.1", oldPort), "the old port must stop accepting");
      assert.deepStrictEqual(await get(`http://127.0.0.1:${newPort}/z`), [200, "mv"]);

      // (6) continued: served within ~12 s of freeing the port, state no longer failed
      await waitFor(
        "busy port served after the retry",
        async () => (await get(`http://127.0.0.1:${busyPort}/`).catch(() => [0]))[0] === 200,
        Math.max(1000, 12_000 - (Date.now() - freedAt)),
      );
      await waitFor("running state published", async () => (await statusOf(m, "busy"))?.state === "running", 10000);
    } finally {
      if (holderOpen) holder.close();
      await backend.stop();
    }
  },
);
