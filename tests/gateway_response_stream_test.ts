/**
 * Proxy `serverMaxBodySize`: with -1 an upstream's response body goes to the client as it arrives (Easegress's stream
 * payload), never held: a 200 MB body from a raw backend started by the test reaches curl whole (same SHA-256) over
 * HTTP/1.1, HTTP/2 of Deno.serve (one certificate) and HTTP/2 of the node:tls listener (several certificates), while
 * the member's resident memory stays far below the body's size; a chunked body and a body delimited by the upstream's
 * close are relayed; the first bytes reach the client while the upstream still holds back the rest; an upstream that
 * closes mid-body cuts the client's response (a client never takes a short body for a whole one) and the member keeps
 * serving. With a positive value, a body over it (by Content-Length or by its chunks) gives 500, as in the reference.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { memberPorts, memberTest, primaryArgs, startMember, waitFor } from "./easegress_harness.ts";
import { putObject } from "./lib/gateway.ts";
import { freePorts } from "./lib/ports.ts";
import { peakRssDuring, rss } from "./lib/rss.ts";
import { makeTwoLeafDir } from "./lib/certs.ts";

const MB = 1024 * 1024;
/** The big body: far more than the member may grow by. */
const BIG = 200 * MB;
/** How much the member's VmRSS may grow while it relays BIG bytes over HTTP/1.1 (measured: 1–2 MB, for 600 MB too). */
const MAX_RSS_GROWTH = 32 * MB;
/**
 * The same for a chunked or close-delimited upstream body (each chunk a new buffer the collector frees late;
 * measured 40–45 MB for 100 MB and for 400 MB alike) and over HTTP/2 (each DATA a copy: Deno.serve measured 64–75 MB, node:tls's 137–143 MB, the same
 * for 600 MB as for 200 MB: bounded, not proportional to the body).
 */
const MAX_RSS_GROWTH_CHUNKED = 80 * MB;
const MAX_RSS_GROWTH_H2 = 200 * MB;
const BLOCK = 256 * 1024;
const enc = new TextEncoder();

/** The bytes of a body: a fixed pseudo-random block, each copy stamped with its index (order and loss both show). */
const BASE_BLOCK = (() => {
  const words = new Uint32Array(BLOCK / 4);
  let x = 2463534242;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return new Uint8Array(words.buffer);
})();

function* blocks(size: number): Generator<Uint8Array> {
  const b = BASE_BLOCK.slice();
  const view = new DataView(b.buffer);
  for (let i = 0, off = 0; off < size; i++, off += BLOCK) {
    view.setUint32(0, i);
    yield b.subarray(0, Math.min(BLOCK, size - off));
  }
}

function sha256Of(size: number): string {
  const h = createHash("sha256");
  for (const b of blocks(size)) h.update(b);
  return h.digest("hex");
}

async function writeAll(conn: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let off = 0; off < b.length;) off += await conn.write(b.subarray(off));
}

/**
 * A raw HTTP/1.1 backend (keep-alive) answering by path: `/length/<n>` (Content-Length), `/chunked/<n>` (chunks of
 * varying sizes), `/close/<n>` (no length: the body ends with the connection), `/cut-length/<n>` and `/cut-chunked/<n>`
 * (promise n bytes, close after half), `/held` (one chunk, then the rest once `release()` is called).
 */
function rawBackend(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  let releaseHeld: (() => void) | null = null;
  /** connections accepted, and answers broken off by the member closing the connection */
  const state = { connections: 0, brokenOff: 0, release: () => releaseHeld?.() };
  const conns = new Set<Deno.Conn>();
  const answer = async (conn: Deno.Conn, path: string): Promise<boolean> => {
    const [, kind, arg] = path.split("/");
    const n = Number(arg ?? 0);
    const head = (extra: string) =>
      enc.encode(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n${extra}\r\n`);
    switch (kind) {
      case "length":
        await writeAll(conn, head(`Content-Length: ${n}\r\n`));
        for (const b of blocks(n)) await writeAll(conn, b);
        return true;
      case "chunked": {
        await writeAll(conn, head("Transfer-Encoding: chunked\r\n"));
        let i = 0;
        for (const b of blocks(n)) {
          // uneven chunks: 1 byte, the rest of the block split in two
          const parts = [b.subarray(0, 1), b.subarray(1, 1 + (i++ % 7) * 1000), b.subarray(1 + ((i - 1) % 7) * 1000)];
          for (const p of parts) {
            if (p.length === 0) continue;
            await writeAll(conn, enc.encode(p.length.toString(16) + "\r\n"));
            await writeAll(conn, p);
            await writeAll(conn, enc.encode("\r\n"));
          }
        }
        await writeAll(conn, enc.encode("0\r\n\r\n"));
        return true;
      }
      case "close":
        await writeAll(conn, head("Connection: close\r\n"));
        for (const b of blocks(n)) await writeAll(conn, b);
        return false;
      case "cut-length":
      case "cut-chunked": {
        const chunked = kind === "cut-chunked";
        await writeAll(conn, head(chunked ? "Transfer-Encoding: chunked\r\n" : `Content-Length: ${n}\r\n`));
        for (const b of blocks(n / 2)) {
          if (chunked) await writeAll(conn, enc.encode((b.length + 100).toString(16) + "\r\n"));
          await writeAll(conn, b);
        }
        return false;
      }
      case "held": {
        await writeAll(conn, head("Transfer-Encoding: chunked\r\n"));
        await writeAll(conn, enc.encode("5\r\nfirst\r\n"));
        await new Promise<void>((r) => (releaseHeld = r));
        await writeAll(conn, enc.encode("4\r\nlast\r\n0\r\n\r\n"));
        return true;
      }
    }
    await writeAll(conn, enc.encode("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
    return true;
  };
  const serve = async (conn: Deno.Conn) => {
    state.connections++;
    conns.add(conn);
    const buf = new Uint8Array(8192);
    let text = "";
    try {
      while (true) {
        const he = text.indexOf("\r\n\r\n");
        if (he < 0) {
          const n = await conn.read(buf);
          if (n === null) return;
          text += new TextDecoder().decode(buf.subarray(0, n));
          continue;
        }
        const path = text.slice(0, he).split(" ")[1];
        text = text.slice(he + 4);
        if (!(await answer(conn, path))) return;
      }
    } catch {
      state.brokenOff++; // the member went away mid-answer
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  (async () => {
    for await (const conn of listener) serve(conn);
  })().catch(() => {});
  return {
    state,
    close() {
      listener.close();
      for (const c of conns) c.close();
    },
  };
}

/** What curl got: its exit code, the body's length and SHA-256, the HTTP version and status, and the time taken. */
interface Download {
  code: number;
  size: number;
  sha256: string;
  version: string;
  status: number;
  seconds: number;
}

/** Downloads with curl, hashing the body as it arrives (curl writes it to our pipe; nothing is kept). */
async function download(url: string, args: string[] = []): Promise<Download> {
  const child = new Deno.Command("curl", {
    args: ["-sS", "-o", "-", "-w", "%{stderr}%{http_version} %{http_code} %{time_total}", ...args, url],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const hash = createHash("sha256");
  let size = 0;
  const reading = (async () => {
    for await (const b of child.stdout) {
      hash.update(b);
      size += b.length;
    }
  })();
  const [status] = await Promise.all([child.status, reading]);
  const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  const m = /(\S+) (\d+) ([\d.]+)$/.exec(err.trim());
  return {
    code: status.code,
    size,
    sha256: hash.digest("hex"),
    version: m?.[1] ?? "",
    status: Number(m?.[2] ?? 0),
    seconds: Number(m?.[3] ?? 0),
  };
}

memberTest(
  "gateway Proxy serverMaxBodySize: -1 streams response bodies, a positive value limits them",
  async (procs) => {
    const [ports] = await memberPorts(1);
    const [plain, single, multi, backendPort] = await freePorts(4);
    const dir = await makeTwoLeafDir("gw-rstream-");
    const m = await startMember("gwrstream", primaryArgs("gwrstream", ports));
    procs.push(m);
    const backend = rawBackend(backendPort);
    const b64 = async (f: string) => Buffer.from(await Deno.readTextFile(`${dir}/${f}`)).toString("base64");
    try {
      const upstream = `{servers: [{url: "http://127.0.0.1:${backendPort}"}]}`;
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: streamed\nflow: [{filter: proxy}]\nfilters:\n` +
          `- {name: proxy, kind: Proxy, serverMaxBodySize: -1, pools: [${upstream}]}\n`,
      );
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: limited\nflow: [{filter: proxy}]\nfilters:\n` +
          `- {name: proxy, kind: Proxy, serverMaxBodySize: ${MB}, pools: [${upstream}]}\n`,
      );
      // compression of a stream (gzip as it goes), and a builder after it (sees Easegress's stand-in text)
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: gzipped\nflow: [{filter: proxy}]\nfilters:\n` +
          `- {name: proxy, kind: Proxy, serverMaxBodySize: -1, compression: {minLength: 0}, pools: [${upstream}]}\n`,
      );
      await putObject(
        m.apiAddr,
        `kind: Pipeline\nname: built\nflow: [{filter: proxy}, {filter: b}]\nfilters:\n` +
          `- {name: proxy, kind: Proxy, serverMaxBodySize: -1, pools: [${upstream}]}\n` +
          `- name: b\n  kind: ResponseBuilder\n  template: |\n    statusCode: 200\n    body: '{{.responses.DEFAULT.Body}}'\n`,
      );
      const streamedRules = `rules:\n- paths:\n  - {pathPrefix: /s/, rewriteTarget: "/", backend: streamed}\n` +
        `  - {pathPrefix: /l/, rewriteTarget: "/", backend: limited}\n` +
        `  - {pathPrefix: /gz/, rewriteTarget: "/", backend: gzipped}\n` +
        `  - {pathPrefix: /built/, rewriteTarget: "/", backend: built}\n`;
      await putObject(m.apiAddr, `kind: HTTPServer\nname: plain\nport: ${plain}\n${streamedRules}`);
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: single\nport: ${single}\nhttps: true\n` +
          `certBase64: ${await b64("leaf.pem")}\nkeyBase64: ${await b64("leaf.key")}\n${streamedRules}`,
      );
      await putObject(
        m.apiAddr,
        `kind: HTTPServer\nname: multi\nport: ${multi}\nhttps: true\n` +
          `certs: {leaf: ${await b64("leaf.pem")}, other: ${await b64("other.pem")}}\n` +
          `keys: {leaf: ${await b64("leaf.key")}, other: ${await b64("other.key")}}\n${streamedRules}`,
      );
      const tls = ["--cacert", `${dir}/ca.pem`];
      const urls = {
        plain: `http://127.0.0.1:${plain}`,
        single: `https://localhost:${single}`,
        multi: `https://localhost:${multi}`,
      };
      await waitFor("the three servers", async () => {
        for (const [name, u] of Object.entries(urls)) {
          const d = await download(`${u}/s/length/10`, name === "plain" ? [] : ["--http2", ...tls]);
          if (d.status !== 200 || d.size !== 10) return false;
        }
        return true;
      });

      // 200 MB with Content-Length over HTTP/1.1: whole, and the member's memory does not follow the body
      const bigSha = sha256Of(BIG);
      const base = await rss(m.pid);
      {
        const [d, peak] = await peakRssDuring(m.pid, download(`${urls.plain}/s/length/${BIG}`));
        assert.deepEqual([d.code, d.status, d.size, d.sha256], [0, 200, BIG, bigSha]);
        console.log(
          `HTTP/1.1 ${BIG / MB} MB: ${(BIG / MB / d.seconds).toFixed(0)} MB/s, member VmRSS ${
            (base / MB).toFixed(0)
          } MB → ` +
            `peak ${(peak / MB).toFixed(0)} MB`,
        );
        assert.ok(peak - base < MAX_RSS_GROWTH, `VmRSS grew by ${((peak - base) / MB).toFixed(0)} MB`);
      }
      // the same body straight from the backend, for the throughput's reference
      {
        const d = await download(`http://127.0.0.1:${backendPort}/length/${BIG}`);
        assert.equal(d.sha256, bigSha);
        console.log(`backend direct ${BIG / MB} MB: ${(BIG / MB / d.seconds).toFixed(0)} MB/s`);
      }
      // chunked and close-delimited upstream bodies over HTTP/1.1 (the client gets them chunked)
      for (const kind of ["chunked", "close"]) {
        const size = 100 * MB + 12345;
        const [d, peak] = await peakRssDuring(m.pid, download(`${urls.plain}/s/${kind}/${size}`));
        assert.deepEqual([d.code, d.status, d.size, d.sha256], [0, 200, size, sha256Of(size)], kind);
        console.log(`${kind} ${(size / MB).toFixed(0)} MB: member VmRSS peak ${(peak / MB).toFixed(0)} MB`);
        assert.ok(peak - base < MAX_RSS_GROWTH_CHUNKED, `${kind}: VmRSS grew by ${((peak - base) / MB).toFixed(0)} MB`);
      }
      // HTTP/2 of both HTTPS listeners, with a length and chunked
      for (const server of ["single", "multi"] as const) {
        const [d, peak] = await peakRssDuring(
          m.pid,
          download(`${urls[server]}/s/length/${BIG}`, ["--http2", ...tls]),
        );
        assert.deepEqual([d.code, d.version, d.status, d.size, d.sha256], [0, "2", 200, BIG, bigSha], server);
        console.log(
          `HTTP/2 (${server}) ${BIG / MB} MB: ${(BIG / MB / d.seconds).toFixed(0)} MB/s, member VmRSS peak ` +
            `${(peak / MB).toFixed(0)} MB`,
        );
        assert.ok(peak - base < MAX_RSS_GROWTH_H2, `${server}: VmRSS grew by ${((peak - base) / MB).toFixed(0)} MB`);
        const size = 5 * MB + 7;
        const c = await download(`${urls[server]}/s/chunked/${size}`, ["--http2", ...tls]);
        assert.deepEqual([c.code, c.version, c.size, c.sha256], [0, "2", size, sha256Of(size)], `${server} chunked`);
      }
      // HTTP/1.1 over TLS (Deno.serve's and node:tls's)
      for (const server of ["single", "multi"] as const) {
        const size = 5 * MB + 3;
        const d = await download(`${urls[server]}/s/length/${size}`, ["--http1.1", ...tls]);
        assert.deepEqual([d.code, d.version, d.size, d.sha256], [0, "1.1", size, sha256Of(size)], `${server} HTTP/1.1`);
      }

      // streamed, not stored: the first bytes arrive while the upstream still holds the rest back
      for (
        const [server, args] of [["plain", []], ["single", ["--http2", ...tls]], ["multi", [
          "--http2",
          ...tls,
        ]]] as const
      ) {
        const child = new Deno.Command("curl", {
          args: ["-sS", "-N", ...args, `${urls[server]}/s/held`],
          stdout: "piped",
          stderr: "null",
        }).spawn();
        const reader = child.stdout.getReader();
        const first = await reader.read();
        assert.equal(new TextDecoder().decode(first.value), "first", `${server}: the first chunk before the rest`);
        backend.state.release();
        let rest = "";
        while (true) {
          const r = await reader.read();
          if (r.done) break;
          rest += new TextDecoder().decode(r.value);
        }
        assert.equal(rest, "last");
        assert.equal((await child.status).code, 0);
      }

      // an upstream that closes mid-body: the client's response is cut (curl: 18 partial file over HTTP/1.1, 92 stream
      // error over HTTP/2), never a short body presented as whole; the member serves the next request
      for (const kind of ["cut-length", "cut-chunked"]) {
        const p = await download(`${urls.plain}/s/${kind}/${4 * MB}`);
        assert.ok(p.code === 18 || p.code === 56, `${kind}: curl exit ${p.code} (partial)`);
        assert.ok(p.size < 4 * MB);
        for (const server of ["single", "multi"] as const) {
          const h = await download(`${urls[server]}/s/${kind}/${4 * MB}`, ["--http2", ...tls]);
          assert.ok(h.code === 92 || h.code === 18, `${server} ${kind}: curl exit ${h.code} (stream error)`);
        }
        const ok = await download(`${urls.plain}/s/length/1000`);
        assert.deepEqual([ok.code, ok.size], [0, 1000]);
      }

      // a client that goes away mid-body: the member gives the stream up and closes its upstream connection (the
      // backend, blocked writing the rest, sees it closed), and serves on
      {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: plain });
        await writeAll(conn, enc.encode(`GET /s/length/${BIG} HTTP/1.1\r\nHost: a\r\n\r\n`));
        let got = 0;
        const buf = new Uint8Array(65536);
        while (got < MB) got += (await conn.read(buf)) ?? Infinity;
        assert.ok(Number.isFinite(got));
        const before = backend.state.brokenOff;
        conn.close();
        await waitFor("the upstream connection closed", () => backend.state.brokenOff === before + 1, 10_000);
        const ok = await download(`${urls.plain}/s/length/1000`);
        assert.deepEqual([ok.code, ok.size], [0, 1000]);
      }
      // an HTTP/1.0 client gets a body of unknown length delimited by the connection's close (no chunked)
      {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: plain });
        await writeAll(conn, enc.encode("GET /s/chunked/3000 HTTP/1.0\r\nHost: a\r\n\r\n"));
        const parts: Uint8Array[] = [];
        const buf = new Uint8Array(65536);
        while (true) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) break;
          parts.push(buf.slice(0, n));
        }
        conn.close();
        const all = Buffer.concat(parts);
        const he = all.indexOf("\r\n\r\n");
        const head = all.subarray(0, he).toString("latin1").toLowerCase();
        assert.match(head, /^http\/1\.1 200 /);
        assert.doesNotMatch(head, /transfer-encoding|content-length/);
        assert.match(head, /connection: close/);
        assert.equal(createHash("sha256").update(all.subarray(he + 4)).digest("hex"), sha256Of(3000));
      }

      // keep-alive upstream: a body read to its end gives its connection back to the pool
      {
        const before = backend.state.connections;
        for (let i = 0; i < 3; i++) {
          const d = await download(`${urls.plain}/s/length/${MB}`);
          assert.equal(d.size, MB);
        }
        assert.ok(
          backend.state.connections - before <= 1,
          `${backend.state.connections - before} new upstream connections`,
        );
      }

      // filters after a streamed response: gzip as it streams (curl decompresses: the same bytes), a builder's text
      {
        const size = 3 * MB + 5;
        const z = await download(`${urls.plain}/gz/chunked/${size}`, ["--compressed"]);
        assert.deepEqual([z.code, z.status, z.size, z.sha256], [0, 200, size, sha256Of(size)], "gzip");
        const head = await new Deno.Command("curl", {
          args: ["-sS", "-o", "/dev/null", "-D", "-", `${urls.plain}/gz/length/${size}`],
        }).output();
        const h = new TextDecoder().decode(head.stdout).toLowerCase();
        assert.match(h, /content-encoding: gzip/);
        assert.match(h, /transfer-encoding: chunked/, "the compressed length is unknown");
        const b = await new Deno.Command("curl", { args: ["-sS", `${urls.plain}/built/length/${MB}`] }).output();
        assert.equal(new TextDecoder().decode(b.stdout), 'the body of response "DEFAULT" is a stream');
        const after = await download(`${urls.plain}/s/length/1000`);
        assert.deepEqual([after.code, after.size], [0, 1000], "the member serves on after dropping a stream");
      }

      // a positive serverMaxBodySize: within it the body comes whole, beyond it (Content-Length or chunks) 500
      {
        const ok = await download(`${urls.plain}/l/length/${MB}`);
        assert.deepEqual([ok.status, ok.size, ok.sha256], [200, MB, sha256Of(MB)]);
        const okc = await download(`${urls.plain}/l/chunked/${MB}`);
        assert.deepEqual([okc.status, okc.size], [200, MB]);
        for (const kind of ["length", "chunked", "close"]) {
          const over = await download(`${urls.plain}/l/${kind}/${MB + 1}`);
          assert.deepEqual([over.status, over.size], [500, 0], `${kind} over the limit`);
        }
      }
    } finally {
      backend.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
