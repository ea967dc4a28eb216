/** File helpers shared by the server's modules. */

/**
 * A file's bytes in one buffer of exactly its size. (Deno.readFile gathers a large file in pieces and then copies
 * them into one buffer, briefly holding about twice its size: tens of MB at start-up for a WAL segment or snapshot.)
 */
export async function readWholeFile(file: string): Promise<Uint8Array<ArrayBuffer>> {
  const fh = await Deno.open(file, { read: true });
  try {
    const buf = new Uint8Array((await fh.stat()).size);
    let off = 0;
    while (off < buf.length) {
      const n = await fh.read(buf.subarray(off));
      if (n === null) break;
      off += n;
    }
    return off === buf.length ? buf : buf.subarray(0, off);
  } finally {
    fh.close();
  }
}

/** Whether a file or directory exists at `path`. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
