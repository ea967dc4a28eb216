/** Free-port allocation for tests: ports below 32768, checked by binding before use. */
import net from "node:net";

let next = 20100 + Math.floor(Math.random() * 8000);

/** Whether `port` can be bound on 127.0.0.1 right now. */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** Returns `count` distinct free ports in [20100, 32767], avoiding etcd's e2e range 20000-20030. */
export async function freePorts(count: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < count) {
    if (next >= 32767) next = 20100;
    const p = next++;
    if (await portIsFree(p)) out.push(p);
  }
  return out;
}
