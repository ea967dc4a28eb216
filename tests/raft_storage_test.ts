/**
 * MemoryStorage (columns + arena, server/raft/log.ts) against a plain array-of-entries model: random appends (with
 * overlaps that truncate), compactions, snapshots and reads, comparing every answer (including which error is
 * thrown) and the bytes of every entry returned.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { MemoryStorage } from "../server/raft/log.ts";
import { CompactedError, type Entry, type Snapshot, UnavailableError } from "../server/raft/types.ts";
import { Prng } from "./sim/prng.ts";

/** The model: ents[0] is a placeholder carrying the snapshot's index and term (as the storage used to be). */
class Model {
  ents: Entry[] = [{ index: 0, term: 0, type: 0, data: new Uint8Array(0) }];
  snapIndex = 0;

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.ents[0].index;
    if (lo <= offset) throw new CompactedError();
    if (hi > this.last() + 1) throw new UnavailableError();
    if (this.ents.length === 1) throw new UnavailableError();
    const ents = this.ents.slice(lo - offset, hi - offset);
    if (ents.length <= 1) return ents;
    let size = ents[0].data.length + 16, n = 1;
    for (; n < ents.length; n++) {
      size += ents[n].data.length + 16;
      if (size > maxBytes) break;
    }
    return ents.slice(0, n);
  }

  term(i: number): number {
    const offset = this.ents[0].index;
    if (i < offset) throw new CompactedError();
    if (i - offset >= this.ents.length) throw new UnavailableError();
    return this.ents[i - offset].term;
  }

  last(): number {
    return this.ents[0].index + this.ents.length - 1;
  }

  compact(i: number): void {
    const offset = this.ents[0].index;
    if (i <= offset) return;
    const k = i - offset;
    this.ents = [{ index: i, term: this.ents[k].term, type: 0, data: new Uint8Array(0) }, ...this.ents.slice(k + 1)];
  }

  append(entries: Entry[]): void {
    const first = this.ents[0].index + 1;
    if (entries.length === 0 || entries[entries.length - 1].index < first) return;
    if (first > entries[0].index) entries = entries.slice(first - entries[0].index);
    const offset = entries[0].index - this.ents[0].index;
    this.ents.length = Math.min(this.ents.length, offset);
    for (const e of entries) this.ents.push(e);
  }

  applySnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snapIndex) return;
    this.snapIndex = s.metadata.index;
    this.ents = [{ index: s.metadata.index, term: s.metadata.term, type: 0, data: new Uint8Array(0) }];
  }
}

/** What a call returns, or the class of error it throws. */
function outcome<T>(fn: () => T): T | string {
  try {
    return fn();
  } catch (e) {
    if (e instanceof CompactedError) return "compacted";
    if (e instanceof UnavailableError) return "unavailable";
    throw e;
  }
}

const view = (ents: Entry[] | string) =>
  typeof ents === "string" ? ents : ents.map((
    e,
  ) => [e.index, e.term, e.type, Buffer.from(e.data.buffer, e.data.byteOffset, e.data.length).toString("hex")]);

Deno.test("MemoryStorage matches the array model through random appends, compactions, snapshots and reads", () => {
  for (let seed = 1; seed <= 10; seed++) {
    const prng = new Prng(seed);
    const rand = (n: number) => prng.int(n);
    const s = new MemoryStorage();
    const m = new Model();
    let term = 1;
    for (let step = 0; step < 1500; step++) {
      const op = rand(100);
      const last = m.last(), first = m.ents[0].index + 1;
      if (op < 55) {
        // append a batch at a random point in [first - 2, last + 1]
        const at = Math.max(1, first - 2 + rand(last - first + 4));
        if (rand(10) === 0) term++;
        const n = 1 + rand(rand(20) === 0 ? 1500 : 20);
        const batch: Entry[] = [];
        for (let k = 0; k < n; k++) {
          const len = rand(6) === 0 ? 0 : rand(50) === 0 ? 20000 + rand(5000) : rand(400);
          const kind = rand(3);
          // pooled slices, buffers of their own, or views into a larger buffer
          const data = kind === 0
            ? Buffer.alloc(len, (at + k) & 0xff)
            : kind === 1
            ? new Uint8Array(len).fill((at + k) & 0xff)
            : new Uint8Array(len + 64).fill((at + k) & 0xff).subarray(32, 32 + len);
          batch.push({ index: at + k, term, type: rand(10) === 0 ? 1 : 0, data });
        }
        const before = batch.map((e) => Buffer.from(e.data).toString("hex"));
        const mb = batch.map((e) => ({ ...e, data: Uint8Array.from(e.data) }));
        const ok = at <= last + 1;
        if (ok) {
          s.append(batch);
          m.append(mb);
          assert.deepEqual(batch.map((e) => Buffer.from(e.data).toString("hex")), before, "append keeps the bytes");
        } else assert.throws(() => s.append(batch));
      } else if (op < 65) {
        if (last > first) {
          const i = first - 1 + rand(last - first + 2);
          s.compact(i);
          m.compact(i);
        }
      } else if (op < 68) {
        const snap: Snapshot = {
          metadata: { index: last + rand(5), term: term + 1, confState: { voters: ["1"], learners: [] } },
          data: new Uint8Array([1, 2, 3]),
        };
        term++;
        s.applySnapshot(snap);
        m.applySnapshot(snap);
      } else if (op < 70) {
        if (last > m.snapIndex) {
          const i = Math.max(m.snapIndex + 1, first - 1) + rand(last - Math.max(m.snapIndex + 1, first - 1) + 1);
          if (i > m.snapIndex && i <= last) {
            const snap = s.createSnapshot(i, { voters: ["1"], learners: [] }, new Uint8Array([9]));
            m.snapIndex = i;
            assert.equal(snap.metadata.term, m.term(i));
            assert.deepEqual([...s.snapshot().data], [9]);
          }
        }
      } else {
        const lo = first - 2 + rand(last - first + 4);
        const hi = lo + rand(30);
        const max = rand(4) === 0 ? 0 : rand(5000);
        assert.deepEqual(view(outcome(() => s.entries(lo, hi, max))), view(outcome(() => m.entries(lo, hi, max))));
        const i = first - 3 + rand(last - first + 6);
        assert.deepEqual(outcome(() => s.term(i)), outcome(() => m.term(i)));
      }
      assert.equal(s.firstIndex(), m.ents[0].index + 1, `seed ${seed} step ${step}`);
      assert.equal(s.lastIndex(), m.last(), `seed ${seed} step ${step}`);
      assert.equal(s.length, m.ents.length - 1);
    }
  }
});
