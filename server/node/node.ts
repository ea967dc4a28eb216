/**
 * The member's write pipeline: proposal → log entry → durable append (group-committed fdatasync) → apply → reply.
 *
 * This is the single-voter form of the replicated log: with one member, an entry is committed as soon as it is on
 * this member's disk. The Raft node of a multi-member cluster keeps the same surface (`propose`, `readIndex`,
 * recovery from snapshot + WAL), so the gRPC layer and the apply layer do not change when replication arrives.
 */
import { Applier } from "../apply/applier.ts";
import { decodeState, encodeState } from "../apply/state_codec.ts";
import { Lessor } from "../lease/lessor.ts";
import { MvccStore } from "../mvcc/store.ts";
import { Snapshotter } from "../snap/snapshotter.ts";
import { type Entry, Wal } from "../wal/wal.ts";
import { decodeInternal, encodeInternal, type InternalRequestShape } from "../../proto/mod.ts";
import { Errors } from "../errors.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

/** Configuration of a member's storage and identity. */
export interface NodeConfig {
  /** where snapshots live: <data-dir>/member/snap */
  snapDir: string;
  /** where the WAL lives: --wal-dir or <data-dir>/member/wal */
  walDir: string;
  clusterId: string;
  memberId: string;
  /** take a snapshot and release old WAL segments every this many applied entries */
  snapshotCount: number;
  minLeaseTTL: number;
  quotaBytes: number;
  /** entries larger than this are refused with "request is too large" */
  maxRequestBytes: number;
  log: (msg: string) => void;
}

interface Pending {
  index: number;
  req: InternalRequestShape;
  resolve: (r: Obj) => void;
  reject: (e: unknown) => void;
}

/** One member's log, state machine and proposal pipeline. */
export class Node {
  readonly store = new MvccStore();
  readonly lessor: Lessor;
  readonly applier: Applier;
  term = 1;
  appliedIndex = 0;
  /** Set when the member is starting up or stopped: proposals are refused. */
  stopped = false;

  #wal!: Wal;
  #snap: Snapshotter;
  #lastIndex = 0;
  #snapIndex = 0;
  #queue: Pending[] = [];
  #flushing = false;
  #snapshotting = false;
  #cfg: NodeConfig;

  private constructor(cfg: NodeConfig) {
    this.#cfg = cfg;
    this.lessor = new Lessor(cfg.minLeaseTTL);
    this.applier = new Applier(this.store, this.lessor, (rev) => this.header(rev), cfg.memberId, cfg.quotaBytes);
    this.#snap = new Snapshotter(cfg.snapDir, { log: cfg.log });
  }

  /** Opens (or creates) the member's storage and replays it into the state machine. */
  static async open(cfg: NodeConfig): Promise<Node> {
    const n = new Node(cfg);
    await Deno.mkdir(cfg.snapDir, { recursive: true });
    const snap = await n.#snap.loadNewest();
    if (snap) {
      const meta = decodeState(snap.data, n.store, n.lessor, n.applier.alarms);
      n.appliedIndex = meta.appliedIndex;
      n.#snapIndex = snap.index;
      n.term = Math.max(n.term, snap.term);
      cfg.log(`recovered store from snapshot at index ${snap.index} (revision ${n.store.currentRev})`);
    }
    const metadata = new TextEncoder().encode(JSON.stringify({ clusterId: cfg.clusterId, memberId: cfg.memberId }));
    const { wal, contents } = await Wal.open(cfg.walDir, {
      log: cfg.log,
      snapshotIndex: snap?.index ?? 0,
      metadata,
    });
    n.#wal = wal;
    if (contents.metadata) {
      // An existing member keeps the identity it was created with, whatever the flags say now.
      const meta = JSON.parse(new TextDecoder().decode(contents.metadata));
      cfg.clusterId = meta.clusterId;
      cfg.memberId = meta.memberId;
      n.applier.memberId = meta.memberId;
    }
    n.term = Math.max(n.term, contents.hardState.term || 1);
    let replayed = 0;
    for (const e of contents.entries) {
      if (e.index <= n.appliedIndex) continue;
      n.#applyEntry(e.index, decodeInternal(e.data));
      replayed++;
    }
    n.#lastIndex = Math.max(n.appliedIndex, contents.entries.at(-1)?.index ?? 0);
    if (contents.hardState.term === 0) {
      wal.append([], { term: n.term, vote: cfg.memberId, commit: n.#lastIndex });
      await wal.sync();
    }
    if (replayed > 0) cfg.log(`replayed ${replayed} WAL entries (applied index ${n.appliedIndex})`);
    n.lessor.extendAll();
    return n;
  }

  /** The ResponseHeader for a response at store revision `rev`. */
  header(rev: number): { cluster_id: string; member_id: string; revision: number; raft_term: string } {
    return { cluster_id: this.#cfg.clusterId, member_id: this.#cfg.memberId, revision: rev, raft_term: `${this.term}` };
  }

  /** This member's ID (decimal uint64). */
  get memberId(): string {
    return this.#cfg.memberId;
  }

  /** The cluster's ID (decimal uint64). */
  get clusterId(): string {
    return this.#cfg.clusterId;
  }

  /** Index of the last entry in the log. */
  get lastIndex(): number {
    return this.#lastIndex;
  }

  /** Appends a request to the log; resolves with its response once it is durable and applied. */
  propose(req: InternalRequestShape): Promise<Obj> {
    if (this.stopped) return Promise.reject(Errors.stopped());
    const data = encodeInternal(req);
    if (data.length > this.#cfg.maxRequestBytes) return Promise.reject(Errors.requestTooLarge());
    const index = ++this.#lastIndex;
    const entry: Entry = { index, term: this.term, type: 0, data };
    this.#wal.append([entry]);
    return new Promise((resolve, reject) => {
      this.#queue.push({ index, req, resolve, reject });
      if (!this.#flushing) {
        this.#flushing = true;
        queueMicrotask(() => this.#flush());
      }
    });
  }

  /** Resolves when a linearizable read may be served from the local state (at once for a single voter). */
  readIndex(): Promise<void> {
    if (this.stopped) return Promise.reject(Errors.stopped());
    return Promise.resolve();
  }

  async #flush(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        await this.#wal.sync();
      } catch (err) {
        // A failed fdatasync leaves the log in an unknown state: stop rather than acknowledge anything.
        this.#cfg.log(`fatal: WAL sync failed: ${err}`);
        for (const p of batch) p.reject(Errors.stopped());
        this.stopped = true;
        Deno.exit(1);
      }
      for (const p of batch) {
        try {
          p.resolve(this.#applyEntry(p.index, p.req));
        } catch (err) {
          p.reject(err);
        }
      }
    }
    this.#flushing = false;
    this.#maybeSnapshot();
  }

  #applyEntry(index: number, req: InternalRequestShape): Obj {
    this.appliedIndex = index;
    try {
      return this.applier.apply(req);
    } catch (err) {
      if (err instanceof Error && err.name !== "EtcdError") this.#cfg.log(`apply of entry ${index} failed: ${err}`);
      throw err;
    }
  }

  #maybeSnapshot(): void {
    if (this.#snapshotting || this.appliedIndex - this.#snapIndex < this.#cfg.snapshotCount) return;
    this.#snapshotting = true;
    this.snapshotNow().catch((err) => this.#cfg.log(`snapshot failed: ${err}`)).finally(() => {
      this.#snapshotting = false;
    });
  }

  /** Encodes the applied state (synchronously, so it is consistent) and saves it; then releases older WAL. */
  async snapshotNow(): Promise<void> {
    const index = this.appliedIndex;
    const data = this.encodeState();
    await this.#snap.save({ index, term: this.term, data });
    this.#wal.markSnapshot({ index, term: this.term });
    await this.#wal.sync();
    this.#snapIndex = index;
    await this.#wal.releaseBefore(index);
    this.#cfg.log(`saved snapshot at index ${index} (${data.length} bytes)`);
  }

  /** The applied state as one blob (for snapshots and Maintenance.Snapshot). */
  encodeState(): Uint8Array {
    return encodeState(
      { appliedIndex: this.appliedIndex, term: this.term },
      this.store,
      this.lessor,
      this.applier.alarms,
    );
  }

  /** Waits for in-flight proposals, then closes the log. */
  async close(): Promise<void> {
    this.stopped = true;
    while (this.#flushing) await new Promise((r) => setTimeout(r, 5));
    await this.#wal.close();
  }
}
