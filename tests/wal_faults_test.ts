/**
 * The WAL fault table (issue 10): damage a log the way a crash or a bad disk does, and check what start-up makes of
 * it. A torn write — sectors of the last batch that never reached the disk because its fdatasync had not returned —
 * is repaired with a log line and loses nothing that was acknowledged; any other damage refuses to open, naming the
 * file and the offset of the damaged record, until the user asks for the repair (`forceRepair`).
 *
 * The log is written by a real writer process (tests/fixtures/wal_writer.ts) that is SIGKILLed mid-stream; the test
 * then appends batches of its own: synced ones (acknowledged) and, for the torn cases, a last batch of several pages
 * whose fdatasync is taken not to have returned (its entries are not acknowledged).
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
  flip,
  lastSegment,
  nextPage,
  PAGE,
  REC_BATCH,
  recordAt,
  records,
  zero,
} from "./lib/wal_files.ts";

/** The state every case starts from: a SIGKILLed writer's log plus `synced` batches appended and synced here. */
interface Base {
  dir: string;
  acked: Set<number>;
  lastIndex: number;
}

async function prepareBase(): Promise<Base> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "wal-faults-"));
  const acked = await writeUntilKilled(dir, 8, 150);
  const { wal, contents } = await Wal.open(dir, { log: () => {} });
  let next = contents.entries.length > 0 ? contents.entries.slice(contents.entries.length - 1)[0].index + 1 : 1;
  // 40 synced batches of 3 entries (about 20 KB): pages of acknowledged records at the end of the last segment
  for (let b = 0; b < 40; b++) {
    const batch: Entry[] = [];
    for (let i = 0; i < 3; i++) batch.push({ index: next++, term: 1, type: 0, data: dataFor(next - 1) });
    wal.append(batch, { term: 1, vote: "1", commit: next - 1 });
    wal.sync();
    for (const e of batch) acked.add(e.index);
  }
  wal.close();
  await crashLeftovers(dir);
  return { dir, acked, lastIndex: next - 1 };
}

type Outcome = { repairAt: number } | { refuseAt: number };

interface Case {
  fault: string;
  /** damages the log in `dir` (the base copied); returns the outcome start-up must reach */
  apply(base: Base, dir: string, file: string): Promise<Outcome>;
}

const CASES: Case[] = [
  {
    fault: "zeroed first page of the last batch (its later pages written)",
    async apply(_base, dir, file) {
      const { start } = await appendUnsyncedBatch(dir);
      await zero(file, start, nextPage(start));
      return { repairAt: start };
    },
  },
  {
    fault: "zeroed middle page of the last batch",
    async apply(_base, dir, file) {
      const { start } = await appendUnsyncedBatch(dir);
      const page = nextPage(start);
      const recs = records(await fs.readFile(file));
      await zero(file, page, page + PAGE);
      return { repairAt: recordAt(recs, page).off };
    },
  },
  {
    fault: "zeroed page of synced batches that later batches follow",
    async apply(_base, _dir, file) {
      const recs = records(await fs.readFile(file));
      const page = nextPage(recs[recs.length - 1].end - 3 * PAGE);
      assert.ok(page > 0 && recs.some((r) => r.off > page + PAGE && r.type === REC_BATCH));
      await zero(file, page, page + PAGE);
      return { refuseAt: recordAt(recs, page).off };
    },
  },
  {
    fault: "flipped byte in the last synced record (zeros after it)",
    async apply(_base, _dir, file) {
      const recs = records(await fs.readFile(file));
      const last = recs[recs.length - 1];
      await flip(file, last.off + 30);
      return { refuseAt: last.off };
    },
  },
  {
    fault: "flipped length of the last synced record (it then claims zeros after it)",
    async apply(_base, _dir, file) {
      const recs = records(await fs.readFile(file));
      const last = recs[recs.length - 1];
      await flip(file, last.off + 1); // +16 KiB: the record now ends in the zeros, which hold whole zero sectors
      return { refuseAt: last.off };
    },
  },
  {
    fault: "flipped byte in an earlier record",
    async apply(_base, _dir, file) {
      const recs = records(await fs.readFile(file));
      const earlier = recs[Math.floor(recs.length / 2)];
      await flip(file, earlier.off + 12);
      return { refuseAt: earlier.off };
    },
  },
  {
    fault: "truncated header: the file ends inside a record header of the last batch",
    async apply(_base, dir, file) {
      const { start } = await appendUnsyncedBatch(dir);
      const third = records(await fs.readFile(file)).filter((r) => r.off >= start)[2];
      await fs.truncate(file, third.off + 5);
      return { repairAt: third.off };
    },
  },
  {
    fault: "zero tail: the last batch's final sectors never written",
    async apply(_base, dir, file) {
      const { end } = await appendUnsyncedBatch(dir);
      const from = end - 1024; // two sectors: the end of the last record
      const recs = records(await fs.readFile(file));
      await zero(file, from, end);
      return { repairAt: recordAt(recs, from).off };
    },
  },
  {
    fault: "none: preallocated zeros after the last record, as SIGKILL leaves them",
    apply: () => Promise.resolve({ repairAt: -1 }),
  },
];

/** Every acknowledged entry is in the log with its data. */
function assertAcked(base: Base, entries: Entry[], label: string): void {
  const byIndex = new Map(entries.map((e) => [e.index, e]));
  for (const i of base.acked) {
    const e = byIndex.get(i);
    assert.ok(e, `${label}: acknowledged entry ${i} lost`);
    assert.deepEqual(e.data, dataFor(i), `${label}: data of entry ${i}`);
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
          const expected = await c.apply(base, dir, file);
          const logs: string[] = [];
          const opened: Awaited<ReturnType<typeof Wal.open>> | Error = await Wal.open(dir, {
            log: (m) => logs.push(m),
          }).then((r) => r, (e: Error) => e);
          if ("repairAt" in expected) {
            if (opened instanceof Error) assert.fail(`${c.fault}: expected a repair, got ${opened}`);
            const entries = opened.contents.entries.slice();
            opened.wal.close();
            assertAcked(base, entries, c.fault);
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
            const kept = [...base.acked].filter((i) => i <= entries.length);
            assertAcked({ ...base, acked: new Set(kept) }, entries, `${c.fault} (forced repair)`);
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
