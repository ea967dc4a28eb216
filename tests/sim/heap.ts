/** A binary min-heap of events ordered by (time, sequence number): ties keep insertion order. */
export interface Timed {
  time: number;
  seq: number;
}

export class EventHeap<T extends Timed> {
  #a: T[] = [];

  get size(): number {
    return this.#a.length;
  }

  #less(x: T, y: T): boolean {
    return x.time < y.time || (x.time === y.time && x.seq < y.seq);
  }

  push(e: T): void {
    const a = this.#a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  pop(): T | undefined {
    const a = this.#a;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.#less(a[l], a[m])) m = l;
        if (r < a.length && this.#less(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}
