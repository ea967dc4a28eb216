/**
 * The WAL fault table (issue 10): damage a log the way a crash or a bad disk does, and check what start-up makes of
 * it. A torn write — sectors of the last batch that never reached the disk because its fdatasync had not returned —
 * is repaired with a log line and loses nothing that was acknowledged; any other damage refuses to open, naming the
 * file and the offset of the damaged record, until the user asks for the repair (`forceRepair`).
 *
 * The log is written by a real writer process (tests/fixtures/wal_writer.ts) that is SIGKILLed mid-stream; the test
 * then appends batches of its own: a filler that makes the next batch begin on a page boundary, synced ones
 * (acknowledged) of a fixed size, and, for the torn cases, a last batch of several pages whose fdatasync is taken not
 * to have returned (its entries are not acknowledged). So where records lie against pages and sectors does not depend
 * on how much the killed writer wrote, and every expected offset is computed from the bytes the fault changes.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type Entry, Wal, WalCorruptError } from "../server/wal/wal.ts";
import { dataFor, writeUntilKilled } from "./fixtures/wal_writer.ts";
import {
  appendUnsyncedBatch,
  crashLeftovers,
  firstChanged,
  flip,
  lastSegment,
  nextPage,
  PAGE,
  REC_BATCH,
  records,
  zero,
} from "./lib/wal_files.ts";

/** A sector: the unit a torn write loses. */
const SECTOR = 512;
/** Bytes of records around an entry's data: batch record, entry header, hard state record. */
const BATCH_RECORD = 24, ENTRY_OVERHEAD = 8 + 18, HARDSTATE_RECORD = 40;

/** Acknowledged entries: index → data. */
type Acked = Map<number, Uint8Array>;

/** The state every case starts from: a SIGKILLed writer's log plus batches appended and synced here. */
interface Base {
  dir: string;
  acked: Acked;
  lastIndex: number;
}

/** Data of `len` bytes, none of them zero, for an entry this test appends. */
function dataOf(index: number, len: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => 1 + (index * 31 + i * 7) % 255);
}

/** Appends and syncs one batch per item of `batches` (each the data lengths of its entries); they are acknowledged. */
async function appendSynced(dir: string, acked: Acked, batches: number[][]): Promise<void> {
  const { wal, contents } = await Wal.open(dir, { log: () => {} });
  const n = contents.entries.length;
  let next = n > 0 ? contents.entries.slice(n - 1)[0].index + 1 : 1;
  contents.entries.release();
  for (const lens of batches) {
    const batch: Entry[] = lens.map((len) => ({ index: next, term: 1, type: 0, data: dataOf(next++, len) }));
    wal.append(batch, { term: 1, vote: "1", commit: next - 1 });
    wal.sync();
    for (const e of batch) acked.set(e.index, e.data);
  }
  wal.close();
  await crashLeftovers(dir);
}

/** The end of the last record of the last segment: where the next batch begins. */
async function logEnd(dir: string): Promise<number> {
  const recs = records(await fs.readFile(await lastSegment(dir)));
  return recs[recs.length - 1].end;
}

/** Appends a synced batch of one entry, sized so that the next batch begins at offset `at` of a page. */
async function alignTo(dir: string, acked: Acked, at = 0): Promise<void> {
  const around = BATCH_RECORD + ENTRY_OVERHEAD + HARDSTATE_RECORD;
  let len = (((at - (await logEnd(dir) + around)) % PAGE) + PAGE) % PAGE;
  if (len < 8) len += PAGE;
  await appendSynced(dir, acked, [[len]]);
  assert.equal(await logEnd(dir) % PAGE, at);
}

async function prepareBase(): Promise<Base> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "wal-faults-"));
  const acked: Acked = new Map([...await writeUntilKilled(dir, 8, 150)].map((i) => [i, dataFor(i)]));
  await alignTo(dir, acked);
  // 40 synced batches of 3 entries (448 bytes each): pages of acknowledged records at the end of the last segment
  await appendSynced(dir, acked, Array.from({ length: 40 }, () => [100, 100, 100]));
  return { dir, acked, lastIndex: Math.max(...acked.keys()) };
}

type Outcome = { repairAt: number } | { refuseAt: number };

interface Case {
  fault: string;
  /**
   * damages the log in `dir` (the base copied), adding what it appends and syncs to `acked`; returns the outcome
   * start-up must reach
   */
  apply(dir: string, file: string, acked: Acked): Promise<Outcome>;
}

const CASES: Case[] = [
  {
    fault: "zeroed first page of the last batch (its later pages written)",
    async apply(dir, file) {
      const { start } = await appendUnsyncedBatch(dir);
      await zero(file, start, nextPage(start));
      return { repairAt: start };
    },
  },
  {
    fault: "zeroed middle page of the last batch",
    async apply(dir, file) {
      const { start } = await appendUnsyncedBatch(dir);
      const page = nextPage(start);
      const changed = firstChanged(await fs.readFile(file), page, page + PAGE);
      await zero(file, page, page + PAGE);
      return { repairAt: changed.off };
    },
  },
  {
    fault: "zeroed page of synced batches that later batches follow",
    async apply(_dir, file) {
      const buf = await fs.readFile(file);
      const recs = records(buf);
      const page = nextPage(recs[recs.length - 1].end - 3 * PAGE);
      assert.ok(page > 0 && recs.some((r) => r.off > page + PAGE && r.type === REC_BATCH));
      const changed = firstChanged(buf, page, page + PAGE);
      await zero(file, page, page + PAGE);
      return { refuseAt: changed.off };
    },
  },
  {
    fault: "flipped byte in the last synced record (zeros after it)",
    async apply(_dir, file) {
      const recs = records(await fs.readFile(file));
      const last = recs[recs.length - 1];
      await flip(file, last.off + 12); // inside the body of any record (a short entry ends before +30)
      return { refuseAt: last.off };
    },
  },
  {
    // Regression: its last sector piece held only zeros, which once counted as an unwritten sector: it was cut as torn.
    fault: "flipped byte in the last synced record whose last sector holds only zeros it was written with",
    async apply(dir, file, acked) {
      await alignTo(dir, acked);
      // batch record, entry of 430 bytes, hard state at +480: its last 8 bytes (commit's high byte, padding) at +512
      await appendSynced(dir, acked, [[480 - BATCH_RECORD - ENTRY_OVERHEAD]]);
      const buf = await fs.readFile(file);
      const last = records(buf).at(-1)!;
      assert.equal((last.off + 32) % SECTOR, 0);
      assert.ok(buf.subarray(last.off + 32, last.end).every((b) => b === 0));
      await flip(file, last.off + 12);
      return { refuseAt: last.off };
    },
  },
  {
    // Regression: the batch record's last 8 bytes (zeros: the high byte of its length, the count of zero sectors,
    // padding) in the next sector once counted as an unwritten sector: the whole acknowledged batch was cut as torn.
    fault: "flipped byte in the batch record of the last synced batch, its last 8 bytes (zeros) in the next sector",
    async apply(dir, file, acked) {
      await alignTo(dir, acked, PAGE - 16);
      await appendSynced(dir, acked, [[100]]);
      const start = records(await fs.readFile(file)).findLast((r) => r.type === REC_BATCH)!.off;
      assert.equal(start % PAGE, PAGE - 16);
      await flip(file, start + 9);
      return { refuseAt: start };
    },
  },
  {
    fault: "lost sector holding the last batch's batch record but for its header (in the sector before)",
    async apply(dir, file, acked) {
      await alignTo(dir, acked, PAGE - 8);
      const { start } = await appendUnsyncedBatch(dir);
      assert.equal(start % PAGE, PAGE - 8);
      await zero(file, start + 8, start + 8 + SECTOR);
      return { repairAt: start };
    },
  },
  {
    fault: "lost final sector of the last batch, which held only the last 16 bytes of its hard state record",
    async apply(dir, file) {
      const { end } = await appendUnsyncedBatch(dir);
      const from = Math.floor((end - 1) / SECTOR) * SECTOR;
      assert.equal(end - from, 16, "the unsynced batch begins on a sector boundary");
      const changed = firstChanged(await fs.readFile(file), from, end);
      await zero(file, from, end);
      return { repairAt: changed.off };
    },
  },
  {
    fault: "flipped length of the last synced record (it then claims zeros after it)",
    async apply(_dir, file) {
      const recs = records(await fs.readFile(file));
      const last = recs[recs.length - 1];
      await flip(file, last.off + 1); // +16 KiB: the record now ends in the zeros, which hold whole zero sectors
      return { refuseAt: last.off };
    },
  },
  {
    fault: "flipped byte in an earlier record",
    async apply(_dir, file) {
      const recs = records(await fs.readFile(file));
      const earlier = recs[Math.floor(recs.length / 2)];
      await flip(file, earlier.off + 12);
      return { refuseAt: earlier.off };
    },
  },
  {
    fault: "truncated header: the file ends inside a record header of the last batch",
    async apply(dir, file) {
      const { start } = await appendUnsyncedBatch(dir);
      const third = records(await fs.readFile(file)).filter((r) => r.off >= start)[2];
      await fs.truncate(file, third.off + 5);
      return { repairAt: third.off };
    },
  },
  {
    fault: "zero tail: the last batch's final sectors never written",
    async apply(dir, file) {
      const { end } = await appendUnsyncedBatch(dir);
      const from = (Math.floor((end - 1) / SECTOR) - 2) * SECTOR; // its last three sectors
      const changed = firstChanged(await fs.readFile(file), from, end);
      await zero(file, from, end);
      return { repairAt: changed.off };
    },
  },
  {
    fault: "none: preallocated zeros after the last record, as SIGKILL leaves them",
    apply: () => Promise.resolve({ repairAt: -1 }),
  },
];

/** Every acknowledged entry is in the log with its data. */
function assertAcked(acked: Acked, entries: Entry[], label: string): void {
  const byIndex = new Map(entries.map((e) => [e.index, e]));
  for (const [i, data] of acked) {
    const e = byIndex.get(i);
    assert.ok(e, `${label}: acknowledged entry ${i} lost`);
    assert.deepEqual(e.data, data, `${label}: data of entry ${i}`);
  }
  entries.forEach((e, k) => assert.equal(e.index, k + 1, `${label}: entries are dense`));
}

Deno.test("wal fault table: torn writes are repaired with a log line and lose nothing acknowledged; other damage refuses with file and offset", async (t) => {
  const base = await prepareBase();
  try {
    for (const c of CASES) {
      await t.step(c.fault, async () => {
        const dir = `${base.dir}-case`;
        await fs.rm(dir, { recursive: true, force: true });
        await fs.cp(base.dir, dir, { recursive: true });
        try {
          const file = await lastSegment(dir);
          const acked = new Map(base.acked);
          const expected = await c.apply(dir, file, acked);
          const logs: string[] = [];
          const opened: Awaited<ReturnType<typeof Wal.open>> | Error = await Wal.open(dir, {
            log: (m) => logs.push(m),
          }).then((r) => r, (e: Error) => e);
          if ("repairAt" in expected) {
            if (opened instanceof Error) assert.fail(`${c.fault}: expected a repair, got ${opened}`);
            const entries = opened.contents.entries.slice();
            opened.wal.close();
            assertAcked(acked, entries, c.fault);
            if (expected.repairAt < 0) {
              assert.deepEqual(logs, []);
            } else {
              assert.equal(logs.length, 1, logs.join("\n"));
              assert.ok(logs[0].startsWith(`wal: repaired a torn write at ${file}:${expected.repairAt} `), logs[0]);
              assert.ok(entries.every((e) => e.index <= base.lastIndex + 6));
            }
            // the repaired log is whole: it opens again without a word
            const again: string[] = [];
            (await Wal.open(dir, { log: (m) => again.push(m) })).wal.close();
            assert.deepEqual(again, []);
          } else {
            assert.ok(opened instanceof WalCorruptError, `${c.fault}: expected a refusal, got ${opened}`);
            assert.equal(opened.file, file);
            assert.equal(opened.offset, expected.refuseAt);
            assert.ok(opened.message.includes(`${file} at offset ${expected.refuseAt}`), opened.message);
            assert.equal(logs.length, 0, logs.join("\n"));
            // the documented repair: only when asked, the log is cut at the damage and the old segment kept
            const repaired = await Wal.open(dir, { log: (m) => logs.push(m), forceRepair: true });
            const entries = repaired.contents.entries.slice();
            repaired.wal.close();
            assert.ok(logs.some((l) => l.includes("repaired by request (--force-repair-wal)")), logs.join("\n"));
            assert.equal((await fs.stat(file)).size, expected.refuseAt);
            assert.ok((await fs.stat(`${file}.broken`)).isFile());
            const kept = new Map([...acked].filter(([i]) => i <= entries.length));
            assertAcked(kept, entries, `${c.fault} (forced repair)`);
          }
        } finally {
          await fs.rm(dir, { recursive: true, force: true });
        }
      });
    }
  } finally {
    await fs.rm(base.dir, { recursive: true, force: true });
  }
});
