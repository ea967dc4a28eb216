/** gzip (de)compression of a request or response body, as the adaptors do it (Content-Encoding kept in step). */
import { gunzipSync, gzipSync } from "node:zlib";
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
