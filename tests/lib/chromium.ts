/**
 * Headless Chromium (Debian's `chromium`) with one page, driven over the DevTools protocol: navigate once, then read
 * the live page as often as needed (no reload between looks) and take screenshots of it.
 */
import { freePorts } from "./ports.ts";
import { type Proc, spawnProcess } from "./process.ts";

export const CHROMIUM = "/usr/bin/chromium";

/** One headless Chromium and its page. */
export class Browser {
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(readonly proc: Proc, readonly profile: string, readonly ws: WebSocket) {
    ws.onmessage = (e) => {
      const msg = JSON.parse(String(e.data));
      const p = msg.id !== undefined ? this.#pending.get(msg.id) : undefined;
      if (!p) return; // an event
      this.#pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${msg.error.message} (${msg.error.code})`));
      else p.resolve(msg.result);
    };
  }

  /** Starts Chromium on about:blank (window 1280×720) and connects to its page. */
  static async open(): Promise<Browser> {
    const [port] = await freePorts(1);
    const profile = await Deno.makeTempDir({ prefix: "chromium-profile-" });
    const proc = spawnProcess(CHROMIUM, [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
      "--window-size=1280,720",
      `--remote-debugging-port=${port}`,
      "--remote-debugging-address=127.0.0.1",
      "about:blank",
    ], { tag: "chromium" });
    let wsUrl = "";
    const deadline = Date.now() + 30000;
    while (!wsUrl) {
      if (Date.now() > deadline || proc.exited()) {
        await proc.kill();
        await Deno.remove(profile, { recursive: true }).catch(() => {});
        throw new Error(`chromium did not open its DevTools port:\n${proc.output()}`);
      }
      try {
        const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
          type: string;
          webSocketDebuggerUrl: string;
        }[];
        wsUrl = targets.find((t) => t.type === "page")?.webSocketDebuggerUrl ?? "";
      } catch { /* not listening yet */ }
      if (!wsUrl) await new Promise((r) => setTimeout(r, 200));
    }
    const ws = new WebSocket(wsUrl);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot connect to ${wsUrl}`));
    });
    const b = new Browser(proc, profile, ws);
    await b.send("Page.enable");
    await b.send("Runtime.enable");
    return b;
  }

  /** One DevTools command; its result. */
  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Loads `url` in the page. */
  async navigate(url: string): Promise<void> {
    const r = await this.send<{ errorText?: string }>("Page.navigate", { url });
    if (r.errorText) throw new Error(`${url}: ${r.errorText}`);
  }

  /** The value of JavaScript `expression` in the page (JSON-serialisable values only). */
  async evaluate<T>(expression: string): Promise<T> {
    const r = await this.send<{ result: { value: T }; exceptionDetails?: { text: string } }>("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.text}`);
    return r.result.value;
  }

  /** Writes a PNG of the page as it is now to `path`. */
  async screenshot(path: string): Promise<void> {
    const r = await this.send<{ data: string }>("Page.captureScreenshot", { format: "png" });
    await Deno.writeFile(path, Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0)));
  }

  async close(): Promise<void> {
    this.ws.close();
    await this.proc.kill();
    await Deno.remove(this.profile, { recursive: true }).catch(() => {});
  }
}
