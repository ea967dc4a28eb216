/**
 * A turn of the event loop: timers and I/O run before the promise resolves. (Not setImmediate nor a MessageChannel:
 * in Deno a chain of those starves socket reads; setTimeout(0) is clamped to 4 ms once nested, which leaves work done
 * in slices between such turns about half of the loop's time at 5 ms slices.)
 */
export const nextTurn = (): Promise<void> => new Promise<void>((resolve) => setTimeout(resolve, 0));
