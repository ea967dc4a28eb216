/**
 * glibc malloc settings a long-running member sets for itself at start-up (mallopt(3)), the same as the environment
 * variables MALLOC_MMAP_THRESHOLD_ and MALLOC_ARENA_MAX would, which a program cannot set for itself after exec.
 *
 * - A fixed mmap threshold of MMAP_THRESHOLD_BYTES. glibc raises its threshold to the size of every mmapped block
 *   that is freed (up to 32 MiB), after which the large short-lived buffers of a burst (a watch fan-out's output, a
 *   range response) come from the heap arena, whose freed space it keeps: 10,000 watchers on one prefix left 93 MB in
 *   the main arena. With the threshold fixed, each large buffer is its own mapping and goes back to the OS when freed.
 * - At most MALLOC_ARENAS arenas (glibc's default is 8 per core, one per thread that allocates at once): each arena
 *   keeps its own free space.
 *
 * Only where glibc is the C library and the process may load it through FFI (`--allow-ffi`, part of `-A`);
 * elsewhere nothing changes.
 */

/** Allocations from this size on are mapped on their own (glibc's initial threshold, kept instead of raised). */
export const MMAP_THRESHOLD_BYTES = 128 << 10;
/** malloc arenas shared by all threads. */
export const MALLOC_ARENAS = 2;

const M_MMAP_THRESHOLD = -3;
const M_ARENA_MAX = -8;

/** Applies the settings; returns whether they took effect. */
export function tuneMalloc(): boolean {
  if (Deno.build.os !== "linux" || Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return false;
  let lib;
  try {
    // settings given in the environment win
    if (Deno.env.get("MALLOC_MMAP_THRESHOLD_") !== undefined || Deno.env.get("MALLOC_ARENA_MAX") !== undefined) {
      return false;
    }
    lib = Deno.dlopen("libc.so.6", { mallopt: { parameters: ["i32", "i32"], result: "i32" } });
  } catch {
    return false; // no env access, not glibc (musl has no libc.so.6), or FFI unavailable
  }
  try {
    return lib.symbols.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) === 1 &&
      lib.symbols.mallopt(M_ARENA_MAX, MALLOC_ARENAS) === 1;
  } finally {
    lib.close();
  }
}
