/**
 * The socket read of the gateway's hot path. `Deno.Conn.read` wraps the runtime's read op in an async method that
 * also adds the op's promise to a set and deletes it again (for `unref`), one async frame and two set operations per
 * read; the gateway reads twice per proxied request (the client's request, the upstream's response) and never unrefs a
 * connection. So a TCP or TLS connection of Deno's is read with the runtime's op directly (`Deno[Deno.internal].core`,
 * the same call `read` makes; `close` needs nothing else, the set serves only `unref`, which the gateway never calls);
 * anything else (a connection the runtime does not expose that way, node:tls adapters) goes through its own `read`.
 * The result is the byte count, 0 at EOF. (Measured: see the gateway README's hot-path section.)
 */

interface Core {
  read(rid: number, buf: Uint8Array): Promise<number>;
  internalRidSymbol: symbol;
}

const core = (Deno as unknown as Record<symbol, { core?: Core }>)[
  (Deno as unknown as { internal: symbol }).internal
]?.core;
const fast = typeof core?.read === "function" && typeof core.internalRidSymbol === "symbol";

/** The resource id to read `conn` with directly, or -1 when it must go through `conn.read`. */
export function readRid(conn: Deno.Conn): number {
  if (!fast) return -1;
  const rid = (conn as unknown as Record<symbol, unknown>)[core!.internalRidSymbol];
  return typeof rid === "number" ? rid : -1;
}

const orZero = (n: number | null) => n ?? 0;

/** Reads into `buf` (not empty): the bytes read, 0 at EOF; rejects as `conn.read` does. */
export function readSocket(conn: Deno.Conn, rid: number, buf: Uint8Array): Promise<number> {
  return rid >= 0 ? core!.read(rid, buf) : conn.read(buf).then(orZero);
}
