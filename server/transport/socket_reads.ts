/**
 * Socket reads into one buffer of our own, reused by every read of the socket, for the HTTP/2 connections of the gRPC
 * server and client on plain TCP: a large message (a snapshot's chunks, a big Range) then arrives in reads of up to
 * READ_BUFFER_BYTES without a new Buffer per read for the collector to reclaim.
 *
 * node:net offers this as the `onread: { buffer, callback }` option of `net.connect` (used by the client); a socket
 * accepted by a server gets it through the same internals that option sets (the socket's kBuffer and kBufferCb
 * fields and the handle's useUserBuffer), when the runtime has them; otherwise the socket keeps its 'data' events.
 *
 * A read's bytes are only valid during the callback: the next read overwrites them. Whoever keeps bytes past the call
 * copies them (the frame reader keeps a partial frame as a copy; stream handlers copy DATA payloads).
 */
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";

/** The size of a socket's read buffer. */
export const READ_BUFFER_BYTES = 64 << 10;

/** Where a socket's reads go: set once the connection that consumes them exists. */
export interface ReadTarget {
  onChunk: ((chunk: Uint8Array) => void) | null;
}

/** The `onread` option for `net.connect`: reads into one buffer of READ_BUFFER_BYTES, handed to `target.onChunk`. */
export function onreadOption(
  target: ReadTarget,
): { buffer: Uint8Array; callback: (n: number, b: Uint8Array) => boolean } {
  return {
    buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
    callback: (n: number, buf: Uint8Array) => {
      if (n > 0) target.onChunk?.(buf.subarray(0, n));
      return true;
    },
  };
}

type SocketInternals = Record<symbol, unknown> & { _handle?: { useUserBuffer?: (b: Uint8Array) => void } | null };

/** The socket's own symbol-keyed field whose description is `name`, if it has one. */
function ownSymbol(socket: object, name: string): symbol | undefined {
  return Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
}

/**
 * Makes an accepted plain-TCP socket read into one buffer of READ_BUFFER_BYTES and hand each read to `onChunk`
 * (instead of emitting 'data'). False when the runtime's socket has no such internals (nothing changed: the socket
 * keeps its 'data' events); a socket already set up this way (by `onreadOption`) also answers false.
 */
export function readIntoOwnBuffer(socket: Socket, onChunk: (chunk: Uint8Array) => void): boolean {
  const s = socket as unknown as SocketInternals;
  const kBuffer = ownSymbol(s, "kBuffer");
  const kBufferCb = ownSymbol(s, "kBufferCb");
  const kBufferGen = ownSymbol(s, "kBufferGen");
  const handle = s._handle;
  if (!kBuffer || !kBufferCb || !kBufferGen || !handle || typeof handle.useUserBuffer !== "function") return false;
  if (s[kBuffer]) return false;
  const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  try {
    handle.useUserBuffer(buffer);
  } catch {
    return false;
  }
  s[kBufferGen] = null; // (a function here would be asked for a new buffer after every read)
  s[kBufferCb] = (n: number, buf: Uint8Array) => {
    if (n > 0) onChunk(buf.subarray(0, n));
    return true;
  };
  s[kBuffer] = buffer;
  return true;
}
