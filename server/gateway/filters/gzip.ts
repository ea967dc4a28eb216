/** gzip (de)compression of a request or response body, as the adaptors do it (Content-Encoding kept in step). */
import { gunzipSync, gzipSync } from "node:zlib";
import type { BodyStream } from "../context.ts";
import type { HeaderList } from "../http1.ts";

/** Compresses unless a Content-Encoding is already set; false on failure. */
export function compressBody(headers: HeaderList, body: Uint8Array, set: (b: Uint8Array) => void): boolean {
  if (headers.get("content-encoding") !== "") return true;
  try {
    set(gzipSync(body));
  } catch {
    return false;
  }
  headers.set("Content-Encoding", "gzip");
  return true;
}

/** Decompresses a gzip body (only when Content-Encoding is gzip); false on failure. */
export function decompressBody(headers: HeaderList, body: Uint8Array, set: (b: Uint8Array) => void): boolean {
  if (headers.get("content-encoding") !== "gzip") return true;
  try {
    set(gunzipSync(body));
  } catch {
    return false;
  }
  headers.del("Content-Encoding");
  return true;
}

/**
 * A streamed body (`clientMaxBodySize: -1`) compressed or decompressed as it is read (same Content-Encoding rules as
 * above); its length becomes unknown. Returns the stream to use.
 */
export function transformStream(headers: HeaderList, stream: BodyStream, mode: "compress" | "decompress"): BodyStream {
  const enc = headers.get("content-encoding");
  if (mode === "compress" ? enc !== "" : enc !== "gzip") return stream;
  const source = new ReadableStream<BufferSource>({
    async pull(ctrl) {
      const b = await stream.read();
      if (b === null) ctrl.close();
      else ctrl.enqueue(b.slice()); // the transform may keep it past the next read
    },
  });
  const codec = mode === "compress" ? new CompressionStream("gzip") : new DecompressionStream("gzip");
  const reader = source.pipeThrough(codec).getReader();
  if (mode === "compress") headers.set("Content-Encoding", "gzip");
  else headers.del("Content-Encoding");
  const out = {
    length: -1,
    consumed: 0,
    async read(): Promise<Uint8Array | null> {
      const r = await reader.read();
      if (r.done) return null;
      out.consumed += r.value.length;
      return r.value;
    },
  };
  return out;
}
