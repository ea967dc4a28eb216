/**
 * A member's durable Raft log: the WAL (entries, hard state, snapshot marks) and the snapshot files beside it, as
 * etcd's server storage wraps its WAL and snapshotter. What the Ready loop writes goes through here; reading the log
 * back happens once, in {@link DiskStorage.open}.
 */
import type { Entry, HardState, Snapshot } from "../raft/types.ts";
import {
  ARRIVING_PACE,
  SERVING_PACE,
  type Snapshot as SnapshotFile,
  type SnapshotReader,
  Snapshotter,
  type SnapshotWriter,
} from "../snap/snapshotter.ts";
import { Wal, type WalContents, type WalOptions } from "../wal/wal.ts";

export type { SnapshotFile };

/** Takes one measurement (a histogram). */
export interface Observer {
  observe(value: number): void;
}

/** Where a member's log lives and how it is opened. */
export interface DiskStorageOptions {
  /** <data-dir>/member/snap */
  snapDir: string;
  /** --wal-dir or <data-dir>/member/wal */
  walDir: string;
  /** written into a new WAL (the member's identity); an existing WAL keeps its own */
  metadata: Uint8Array;
  /** --force-repair-wal: truncate the WAL at a damaged record instead of refusing to start */
  forceRepairWal?: boolean;
  /** the fsync and snapshot-save histograms of /metrics (NodeMetrics), in seconds */
  stats: { walFsync: Observer; snapshotSave: Observer };
  log: (msg: string) => void;
  /** WAL replay progress and summary lines (WalOptions.progress) */
  progress?: WalOptions["progress"];
}

/** What a member recovers from its data dir at start-up. */
export interface Recovered {
  disk: DiskStorage;
  /** the newest snapshot file the WAL records at an index its hard state has committed, if any */
  snapshot: SnapshotFile | null;
  /** the WAL's hard state, metadata and the entries after `snapshot` */
  contents: WalContents;
}

/** The WAL and snapshot files of one member. */
export class DiskStorage {
  #wal: Wal;
  #snap: Snapshotter;
  #stats: DiskStorageOptions["stats"];

  private constructor(wal: Wal, snap: Snapshotter, stats: DiskStorageOptions["stats"]) {
    this.#wal = wal;
    this.#snap = snap;
    this.#stats = stats;
  }

  /** Opens (or creates) the log and picks the snapshot to restore from. */
  static async open(opts: DiskStorageOptions): Promise<Recovered> {
    await Deno.mkdir(opts.snapDir, { recursive: true });
    const snap = new Snapshotter(opts.snapDir, { log: opts.log });
    let chosen: SnapshotFile | null = null;
    const { wal, contents } = await Wal.open(opts.walDir, {
      log: opts.log,
      progress: opts.progress,
      metadata: opts.metadata,
      forceRepair: opts.forceRepairWal,
      // as etcd: the newest snapshot file the WAL records, at an index the WAL's hard state has committed
      chooseSnapshot: async (marks, hs) => {
        chosen = await snap.loadNewest(marks.filter((m) => m.index <= hs.commit));
        return chosen?.index ?? 0;
      },
    });
    return { disk: new DiskStorage(wal, snap, opts.stats), snapshot: chosen as SnapshotFile | null, contents };
  }

  /** Buffers a Ready's entries and hard state for the next {@link sync}. */
  append(entries: Entry[], hardState?: HardState): void {
    this.#wal.append(entries, hardState);
  }

  /** Makes everything appended so far durable (one write, one fdatasync). */
  sync(): void {
    const start = performance.now();
    this.#wal.sync();
    this.#stats.walFsync.observe((performance.now() - start) / 1000);
  }

  /** {@link sync} off the event loop (see Wal.syncAsync). */
  async syncAsync(): Promise<void> {
    const start = performance.now();
    await this.#wal.syncAsync();
    this.#stats.walFsync.observe((performance.now() - start) / 1000);
  }

  /**
   * Begins the file of a leader's snapshot of `size` bytes, written as it arrives; {@link saveLeaderSnapshot} finishes
   * it, or its `abort` deletes it.
   */
  beginLeaderSnapshot(index: number, term: number, size: number): SnapshotWriter {
    return this.#snap.begin(index, term, size);
  }

  /**
   * Writes a snapshot received from the leader (`written`: its file, written while it arrived, is finished and put in
   * place; without one the whole file is written now), then marks it in the WAL; the mark is durable with the Ready's
   * {@link sync}, so a crash before it leaves a file the WAL does not record (ignored at start-up). Returns the ms the
   * file took.
   */
  async saveLeaderSnapshot(s: Snapshot, written?: SnapshotWriter): Promise<number> {
    const start = performance.now();
    if (written) await this.#snap.commit(written);
    else await this.#snap.save({ index: s.metadata.index, term: s.metadata.term, data: s.data }, ARRIVING_PACE);
    const ms = performance.now() - start;
    this.#stats.snapshotSave.observe(ms / 1000);
    this.#wal.markSnapshot({ index: s.metadata.index, term: s.metadata.term });
    return ms;
  }

  /** Writes a snapshot of this member's applied state and makes its WAL mark durable. */
  async saveSnapshot(index: number, term: number, data: Uint8Array): Promise<void> {
    const w = this.beginSnapshot(index, term, data.length);
    w.write(data);
    await this.commitSnapshot(w);
  }

  /**
   * Begins this member's own snapshot file at `index`, of `size` bytes of data handed to the writer as they are
   * encoded, written at the pace of a member that serves (SERVING_PACE); `commitSnapshot` ends it (or `abort` it).
   */
  beginSnapshot(index: number, term: number, size: number): SnapshotWriter {
    return this.#snap.begin(index, term, size, SERVING_PACE);
  }

  /** Puts the file of `beginSnapshot` in place and records the snapshot in the WAL (synced). */
  async commitSnapshot(w: SnapshotWriter): Promise<void> {
    await this.#snap.commit(w);
    this.#stats.snapshotSave.observe((performance.now() - w.begun) / 1000);
    this.#wal.markSnapshot({ index: w.index, term: w.term });
    await this.#wal.syncAsync(); // after the Ready loop's batch being written, if any
  }

  /** The data of the snapshot file of `index` and `term`, to read piece by piece; null when there is no such file. */
  openSnapshot(index: number, term: number): Promise<SnapshotReader | null> {
    return this.#snap.open(index, term);
  }

  /** Deletes the WAL segments that only hold entries below `index` (a snapshot at `index` is durable). */
  async releaseBefore(index: number): Promise<void> {
    await this.#wal.releaseBefore(index);
  }

  /** Syncs what is pending and closes the WAL. */
  close(): void {
    this.#wal.close();
  }
}
