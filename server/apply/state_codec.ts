/**
 * Serializes the whole applied state (MVCC versions and history, leases, alarms, applied index) into one byte blob:
 * the payload of store snapshots on disk and of Maintenance.Snapshot.
 *
 * Layout "EGS3" (little endian; str = u32 length + UTF-8, bytes = u32 length + bytes): u32 magic, f64 appliedIndex,
 * f64 term, str confState JSON, str members JSON, f64 currentRev, f64 compactRev, u32 #leases {str id, f64 ttl},
 * u32 #alarms {str memberID, u32 alarm}, u32 #keys {bytes key} in strictly increasing byte order, u32 #records
 * {u32 key number (its place in the key table), f64 create, f64 mod, f64 version, str lease, bytes value}, str auth
 * state JSON (users with password hashes, roles, enabled, auth revision).
 *
 * The key table makes a restore cheap: the keys arrive sorted, each once, so the key index is built as it is read, with
 * no key → id map and no sort (both were most of the time of a restore of a million keys), and a key that has many
 * records is decoded once. Blobs of the previous layout, "EGS2", are still read: the same fields, but each record
 * (u8 1, bytes key, f64 create, f64 mod, f64 version, str lease, bytes value) names its key, u8 0 ends the records,
 * and the auth state is absent in blobs written before auth existed.
 *
 * The blob is sized exactly in a first pass and written in a second (no growing buffer, nothing to trim), into one
 * buffer or in pieces to a sink (a member's own snapshot file). Encoding moves the values that still live in request
 * buffers (the Raft log's arena chunks) into one buffer of the store's, so that those chunks are freed once the log is
 * compacted; decoding references the values in place, and the store keeps the blob: it must not be modified.
 */
import type { Member, Members } from "../membership/members.ts";
import type { ConfState } from "../raft/types.ts";
import type { Alarm } from "./applier.ts";
import type { Lessor } from "../lease/lessor.ts";
import { toBKey } from "../mvcc/keys.ts";
import { type DumpBounds, MvccStore, RecordCursor } from "../mvcc/store.ts";
import type { AuthState, AuthStore } from "../auth/store.ts";
import { nextTurn } from "../util/next_turn.ts";

const MAGIC = 0x45475333; // "EGS3"
/** the layout before the key table */
const MAGIC_V2 = 0x45475332; // "EGS2"

/** What a state blob holds besides the store contents. */
export interface StateMeta {
  appliedIndex: number;
  term: number;
  /** Raft membership at appliedIndex */
  confState: ConfState;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Thrown inside a decode that reached the end of what has arrived of the blob (never out of `step`). */
const NOT_ARRIVED = Symbol("not arrived");

/** Work one slice of an incremental encode does before it yields to the event loop. */
export const ENCODE_SLICE_MS = 5;

/** Records encoded between two looks at the clock. */
const RECORDS_PER_CLOCK_CHECK = 512;

/**
 * The pieces an encode to a sink (`toSink`, a member's own snapshot file) is written in: as large as the pieces the
 * file is written in (SERVING_PACE), each reused once the sink wrote it. A new blob of the state's size for each
 * snapshot was most of what a snapshot cost the puts of every member: its first touch, and the V8 collections its size
 * set off (an ArrayBuffer's bytes count towards the heap's limits). 3 members, 10,000 keys (a 12 MB state), a snapshot
 * forced every 2 s per member, put→event at 100 puts/s, 2,000 samples per run: 14-18 samples of 10 ms or more per run
 * with a new blob each time, 5-12 in pieces (and 0 with one blob reused, a temporary change that kept every value where
 * it was).
 */
export const ENCODE_PIECE_BYTES = 1 << 20;

/** Pieces handed to the sink and not yet written, at most, before an encode in slices waits for the sink. */
const PIECES_IN_FLIGHT = 2;

/** Where an encode hands its blob piece by piece, in order (the snapshot file's `SnapshotWriter`). */
export interface BlobSink {
  /** Takes the next bytes of the blob; they must stay unchanged until `written` resolved. */
  write(bytes: Uint8Array): void;
  /** Resolves once every piece handed so far is written. */
  written(): Promise<void>;
}

/**
 * An encode of the state as of its construction, done in slices (`step`) so that a large store does not hold the
 * event loop: what can change cheaply (meta, leases, alarms, members, auth) is captured at once; the records are
 * walked from the store's append-only table, which later writes only extend. A compaction or restore would move
 * the records still to walk, so the store calls back first and the encoder finishes synchronously then.
 * Two walks: the first sizes the blob exactly, the second writes it, into one buffer of that size (`finish`,
 * `inSlices`) or in reused pieces to a sink (`toSink`). The second also moves the values that live in request buffers
 * (the Raft log's arena chunks) into one buffer of the store's own (`MvccStore._moveValue`), sized by the first.
 */
export class StateEncoder {
  #store: MvccStore;
  #head: Uint8Array[];
  /** lease IDs (decimal ASCII) and TTLs */
  #leaseIds: string[] = [];
  #leaseTtls: number[] = [];
  #alarms: { member: Uint8Array; alarm: number }[];
  #meta: StateMeta;
  #currentRev: number;
  #compactRev: number;
  #authJson: Uint8Array;
  /** table length when the encode began: records from here on were written later */
  #upTo: number;
  #bounds: DumpBounds;
  #walk: Generator<number>;
  /** per store key id: -1 not in the dump, -2 in it (found by the sizing walk), else its number in the key table */
  #keyNo: Int32Array;
  #keys = 0;
  #records = 0;
  /** the key table's walk over the store's keys in order, once it began */
  #keyWalk: Generator<number> | null = null;
  #keysWritten = 0;
  #size: number;
  /** the record being sized or written (one holder: the walks allocate nothing per record) */
  #rec = new RecordCursor();
  /** the blob, or the piece of it being written (to a sink) */
  #out: Uint8Array | null = null;
  #view: DataView | null = null;
  #pos = 0;
  /** `toSink`: the sink, once the size is known, and the pieces it wrote, free to fill again */
  #openSink: ((size: number) => BlobSink) | null = null;
  #sink: BlobSink | null = null;
  #spare: Uint8Array[] = [];
  #inFlight = 0;
  /** bytes of the blob handed to the sink */
  #handed = 0;
  /** whether a step may stop for the sink to catch up (not when finishing at once) */
  #mayWait = false;
  /** the bytes of the values to move out of request buffers, and the store's buffer they move into */
  #moveBytes = 0;
  #moveTo: Uint8Array | null = null;
  #movePos = 0;
  /** leases written so far, and whether they and the alarms are all written */
  #leasesDone = 0;
  #leasesWritten = false;
  #keyTableWritten = false;
  #done = false;
  #abandoned = false;
  /** what the store calls before it is restructured */
  #finishNow = () => {
    try {
      this.step(Infinity);
    } catch {
      this.#abandon(); // its own caller sees the failure at its next step
    }
  };

  constructor(meta: StateMeta, store: MvccStore, lessor: Lessor, alarms: Alarm[], members: Members, auth?: AuthStore) {
    this.#store = store;
    this.#meta = meta;
    this.#currentRev = store.currentRev;
    this.#compactRev = store.compactRev;
    this.#authJson = utf8.encode(JSON.stringify(auth?.toJSON() ?? null));
    this.#head = [utf8.encode(JSON.stringify(meta.confState)), utf8.encode(JSON.stringify(members.toJSON()))];
    for (const l of lessor.leases.values()) {
      this.#leaseIds.push(l.id);
      this.#leaseTtls.push(l.ttl);
    }
    this.#alarms = alarms.map((a) => ({ member: utf8.encode(a.memberID), alarm: a.alarm }));
    store.settleCompaction(); // the records a compaction drops must not be in the blob
    this.#upTo = store._records();
    this.#bounds = store._dumpBounds();
    this.#walk = store.dumpRecords(this.#bounds);
    this.#keyNo = new Int32Array(store._keyIdLimit()).fill(-1);
    this.#size = 4 + 8 + 8 + 4 + this.#head[0].length + 4 + this.#head[1].length + 8 + 8 + 4 + 4 + 4 + 4 + 4 +
      this.#authJson.length;
    for (const id of this.#leaseIds) this.#size += 4 + id.length + 8;
    for (const a of this.#alarms) this.#size += 4 + a.member.length + 4;
    store._dumpBegin(this.#finishNow);
  }

  /** Encodes for about `ms` (Infinity: to the end); returns whether the blob is complete. */
  step(ms: number): boolean {
    if (this.#done) return true;
    if (this.#abandoned) throw new Error("state snapshot: encode abandoned");
    const stop = performance.now() + ms;
    this.#mayWait = ms !== Infinity;
    const store = this.#store;
    for (;;) {
      if (this.#out && !this.#leasesWritten && !this.#writeLeases(stop)) return false;
      if (this.#out && !this.#keyTableWritten && !this.#writeKeyTable(stop)) return false;
      let n = 0;
      for (let r = this.#walk.next(); !r.done; r = this.#walk.next()) {
        if (this.#out) this.#record(r.value);
        else {
          const rec = this.#rec;
          store._readRecord(r.value, rec);
          if (this.#keyNo[rec.keyId] === -1) {
            this.#keyNo[rec.keyId] = -2;
            this.#keys++;
            this.#size += 4 + store._keyLength(rec.keyId);
          }
          this.#records++;
          // lease IDs are decimal ASCII: one byte per char
          this.#size += 4 + 24 + 4 + rec.lease.length + 4 + rec.len;
          if (!rec.owned) this.#moveBytes += rec.len;
        }
        if (++n === RECORDS_PER_CLOCK_CHECK) {
          n = 0;
          if (this.#pause(stop)) return false;
        }
      }
      if (this.#out) break;
      this.#begin();
      if (this.#pause(stop)) return false;
    }
    this.#end();
    return true;
  }

  /**
   * Encodes the rest in slices of `sliceMs`, yielding to the event loop between them (the state may change
   * meanwhile: the blob is still the state at construction), and returns the blob. Once `signal` is aborted the
   * encode is abandoned at the next slice (rejects with the signal's reason).
   */
  async inSlices(sliceMs = ENCODE_SLICE_MS, signal?: AbortSignal): Promise<Uint8Array> {
    await this.#inSlices(sliceMs, signal);
    return this.result;
  }

  /**
   * Encodes as `inSlices` does, but hands the blob to the sink `open(size)` returns once the sizing walk is done, in
   * pieces of ENCODE_PIECE_BYTES reused once the sink wrote them (the encode waits for the sink when
   * PIECES_IN_FLIGHT are unwritten): no buffer of the blob's size is allocated. Resolves with the blob's size once
   * all of it is handed over (the sink may still be writing the last pieces).
   */
  async toSink(open: (size: number) => BlobSink, sliceMs = ENCODE_SLICE_MS, signal?: AbortSignal): Promise<number> {
    if (this.#out) throw new Error("state snapshot: toSink after the encode began");
    this.#openSink = open;
    await this.#inSlices(sliceMs, signal);
    return this.#size;
  }

  async #inSlices(sliceMs: number, signal?: AbortSignal): Promise<void> {
    try {
      while (!this.step(sliceMs)) {
        if (this.#inFlight >= PIECES_IN_FLIGHT) await this.#sink!.written();
        await nextTurn(); // (written may resolve at once: a turn of the event loop between two slices all the same)
        if (signal?.aborted) throw signal.reason;
      }
    } catch (err) {
      // a failed encode must not hold the store's compaction back
      this.#abandon();
      throw err;
    }
  }

  /** Whether a step stops here: its time is up, or the sink has PIECES_IN_FLIGHT to write. */
  #pause(stop: number): boolean {
    return performance.now() >= stop || (this.#mayWait && this.#inFlight >= PIECES_IN_FLIGHT);
  }

  /**
   * Stops the encode for good: the store no longer waits for it before a restructure. Values it already moved into
   * the (partial) blob stay there, intact.
   */
  #abandon(): void {
    this.#store._dumpEnd(this.#finishNow);
    this.#abandoned = true;
  }

  /** Encodes the rest at once and returns the blob. */
  finish(): Uint8Array {
    this.step(Infinity);
    return this.result;
  }

  /** The blob, once `step` returned true (not of an encode to a sink). */
  get result(): Uint8Array {
    if (!this.#done) throw new Error("state snapshot: encode not finished");
    if (this.#openSink) throw new Error("state snapshot: the blob went to a sink");
    return this.#out!;
  }

  #u32(x: number) {
    if (this.#pos + 4 > this.#out!.length) this.#handOff();
    this.#view!.setUint32(this.#pos, x, true);
    this.#pos += 4;
  }
  #f64(x: number) {
    if (this.#pos + 8 > this.#out!.length) this.#handOff();
    this.#view!.setFloat64(this.#pos, x, true);
    this.#pos += 8;
  }
  #bytes(b: Uint8Array) {
    this.#u32(b.length);
    this.#copy(b);
  }
  /** `b`'s bytes, across pieces if need be */
  #copy(b: Uint8Array) {
    let from = 0;
    for (;;) {
      const n = Math.min(b.length - from, this.#out!.length - this.#pos);
      this.#out!.set(n === b.length ? b : b.subarray(from, from + n), this.#pos);
      this.#pos += n;
      from += n;
      if (from === b.length) return;
      this.#handOff();
    }
  }
  /** a string of chars < 256 (a store key, or ASCII) as its bytes */
  #latin1(s: string) {
    this.#u32(s.length);
    if (this.#pos + s.length > this.#out!.length) this.#handOff();
    const out = this.#out!, pos = this.#pos;
    for (let i = 0; i < s.length; i++) out[pos + i] = s.charCodeAt(i);
    this.#pos += s.length;
  }

  #setOut(out: Uint8Array): void {
    this.#out = out;
    this.#view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    this.#pos = 0;
  }

  /**
   * Hands what the current piece holds to the sink, and goes on in a piece it wrote (or a new one) unless `last`.
   * Writing into one blob of the exact size, there is no room to run out of.
   */
  #handOff(last = false): void {
    const sink = this.#sink;
    if (!sink) throw new Error("state snapshot: the blob is larger than sized");
    const piece = this.#out!;
    if (this.#pos > 0) {
      sink.write(piece.subarray(0, this.#pos));
      this.#handed += this.#pos;
      this.#inFlight++;
      sink.written().then(() => {
        this.#inFlight--;
        this.#spare.push(piece);
      }, () => {}); // the sink reports its failure itself
    } else this.#spare.push(piece);
    if (!last) this.#setOut(this.#spare.pop() ?? new Uint8Array(ENCODE_PIECE_BYTES));
  }

  /**
   * The sizing walk is done: allocate the buffer values move into, and the blob (or open the sink), write what
   * precedes the records, walk again.
   */
  #begin(): void {
    if (this.#moveBytes > 0) {
      this.#moveTo = new Uint8Array(this.#moveBytes);
      this.#store._ownBuffer(this.#moveTo.buffer);
    }
    if (this.#openSink) {
      this.#sink = this.#openSink(this.#size);
      this.#setOut(new Uint8Array(Math.min(ENCODE_PIECE_BYTES, this.#size)));
    } else this.#setOut(new Uint8Array(this.#size));
    this.#u32(MAGIC);
    this.#f64(this.#meta.appliedIndex);
    this.#f64(this.#meta.term);
    this.#bytes(this.#head[0]);
    this.#bytes(this.#head[1]);
    this.#f64(this.#currentRev);
    this.#f64(this.#compactRev);
    this.#u32(this.#leaseIds.length);
    this.#walk = this.#store.dumpRecords(this.#bounds); // the same records: the table below #upTo has not changed
  }

  /**
   * Writes the leases (in slices too: 100,000 of them took tens of ms) and then the alarms, which precede the
   * records; returns false when the clock ran out first.
   */
  #writeLeases(stop: number): boolean {
    const ids = this.#leaseIds, ttls = this.#leaseTtls;
    while (this.#leasesDone < ids.length) {
      this.#latin1(ids[this.#leasesDone]);
      this.#f64(ttls[this.#leasesDone]);
      if (++this.#leasesDone % RECORDS_PER_CLOCK_CHECK === 0 && this.#pause(stop)) return false;
    }
    this.#u32(this.#alarms.length);
    for (const a of this.#alarms) {
      this.#bytes(a.member);
      this.#u32(a.alarm);
    }
    this.#leasesWritten = true;
    return true;
  }

  /**
   * Writes the key table (in slices: a million keys take a few hundred ms): the keys the sizing walk found, in key
   * order, numbered as they are written; then the record count. Returns false when the clock ran out first.
   */
  #writeKeyTable(stop: number): boolean {
    const store = this.#store, keyNo = this.#keyNo;
    if (!this.#keyWalk) {
      this.#u32(this.#keys);
      this.#keyWalk = store._keyIdsInOrder();
    }
    let n = 0;
    for (let r = this.#keyWalk.next(); !r.done; r = this.#keyWalk.next()) {
      // keys created since the encode began (ids past the table, or reused free ids) are not marked
      const kid = r.value;
      if (keyNo[kid] !== -2) continue;
      keyNo[kid] = this.#keysWritten++;
      this.#bytes(store._keyBytes(kid));
      if (++n === RECORDS_PER_CLOCK_CHECK) {
        n = 0;
        if (this.#pause(stop)) return false;
      }
    }
    if (this.#keysWritten !== this.#keys) {
      throw new Error(`state snapshot: key table of ${this.#keysWritten} keys, expected ${this.#keys}`);
    }
    this.#u32(this.#records);
    this.#keyTableWritten = true;
    return true;
  }

  #record(idx: number): void {
    const r = this.#rec;
    this.#store._readRecord(idx, r);
    this.#u32(this.#keyNo[r.keyId]);
    this.#f64(r.create);
    this.#f64(r.mod);
    this.#f64(r.version);
    this.#latin1(r.lease);
    this.#u32(r.len);
    if (r.buf === null) return;
    const value = new Uint8Array(r.buf, r.off, r.len);
    this.#copy(value);
    // (a concurrent encode may have moved it since the sizing walk: then it is owned now)
    const moveTo = this.#moveTo;
    if (!r.owned && moveTo && this.#movePos + r.len <= moveTo.length) {
      moveTo.set(value, this.#movePos);
      this.#store._moveValue(idx, moveTo.buffer, this.#movePos);
      this.#movePos += r.len;
    }
  }

  #end(): void {
    this.#bytes(this.#authJson);
    const size = this.#handed + this.#pos;
    if (size !== this.#size) throw new Error(`state snapshot: encoded ${size} bytes, expected ${this.#size}`);
    if (this.#sink) this.#handOff(true);
    this.#store._dumpEnd(this.#finishNow);
    this.#store._moveDone(this.#upTo);
    this.#done = true;
  }
}

/** Encodes the state machine at once. */
export function encodeState(
  meta: StateMeta,
  store: MvccStore,
  lessor: Lessor,
  alarms: Alarm[],
  members: Members,
  auth?: AuthStore,
): Uint8Array {
  return new StateEncoder(meta, store, lessor, alarms, members, auth).finish();
}

/**
 * A decode of a state blob, done in slices (`step`) so that a large state does not hold the event loop: the records go
 * into a store of its own, beside the live one, which keeps serving meanwhile; `install` then replaces the state
 * machine's contents at once. A blob that turns out truncated or malformed throws before anything was replaced.
 */
export class StateDecoder {
  #meta: StateMeta | null = null;
  #data: Uint8Array;
  #v: DataView;
  #pos = 0;
  /** bytes of the blob that are there to decode: all, unless the decode follows its arrival (`arrived`) */
  #available: number;
  /** where the unit being decoded (the header, a key, a record, the end) began: a step out of data goes back there */
  #unit = 0;
  #waiting = false;
  #members: { members: Member[]; removed: string[] } = { members: [], removed: [] };
  #leaseIds: string[] = [];
  #leaseTtls: number[] = [];
  #alarms: Alarm[] = [];
  /** the auth state (absent in blobs written before auth existed: null) */
  #auth: AuthState | null = null;
  /** the store the records are decoded into */
  #side = new MvccStore();
  /** a blob of the layout before the key table ("EGS2") */
  #v2 = false;
  /** keys in the key table, and of them decoded; records in the blob (-1 until read), and of them decoded */
  #keys = 0;
  #keysRead = 0;
  #records = -1;
  #recordsRead = 0;
  #done = false;

  /**
   * A decode of `data`, of which the first `arrived` bytes are there (default: all of it; the header is then decoded
   * at once, and a blob that does not begin as one throws here). With fewer, the decode follows the blob as it
   * arrives: `arrived` says when more is there, and `step` decodes what is.
   */
  constructor(data: Uint8Array, arrived = data.length) {
    this.#data = data;
    this.#v = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.#available = arrived;
    if (arrived === data.length) this.#header();
  }

  /** The blob's meta (throws until its header is decoded). */
  get meta(): StateMeta {
    if (!this.#meta) throw new Error("state snapshot: header not decoded yet");
    return this.#meta;
  }

  /** The bytes of the blob up to `end` are there (a decode that follows the blob's arrival). */
  arrived(end: number): void {
    this.#available = Math.max(this.#available, Math.min(end, this.#data.length));
  }

  /** Whether the last `step` stopped because the rest of the blob has not arrived yet. */
  get waiting(): boolean {
    return this.#waiting;
  }

  #header(): void {
    this.#unit = this.#pos = 0;
    const magic = this.#u32();
    if (magic !== MAGIC && magic !== MAGIC_V2) throw new Error("state snapshot: bad magic");
    const v2 = magic === MAGIC_V2;
    const meta = { appliedIndex: this.#f64(), term: this.#f64(), confState: JSON.parse(this.#str()) };
    const members = JSON.parse(this.#str());
    const currentRev = this.#f64();
    const compactRev = this.#f64();
    const nLeases = this.#u32();
    const leaseIds: string[] = [], leaseTtls: number[] = [];
    for (let i = 0; i < nLeases; i++) {
      leaseIds.push(this.#str());
      leaseTtls.push(this.#f64());
    }
    const nAlarms = this.#u32();
    const alarms: Alarm[] = [];
    for (let i = 0; i < nAlarms; i++) alarms.push({ memberID: this.#str(), alarm: this.#u32() });
    const keys = v2 ? 0 : this.#u32();
    // all of it read: nothing above is decoded again
    this.#v2 = v2;
    this.#meta = meta;
    this.#members = members;
    this.#leaseIds = leaseIds;
    this.#leaseTtls = leaseTtls;
    this.#alarms = alarms;
    this.#keys = keys;
    this.#side._restoreBegin(currentRev, compactRev);
    // the values stay in the blob, which the store keeps: an encode leaves them there
    this.#side._ownBuffer(this.#data.buffer);
  }

  /**
   * Decodes for about `ms` (Infinity: to the end of what is there); returns whether the whole blob is decoded (false:
   * out of time, or `waiting` for more of the blob).
   */
  step(ms: number): boolean {
    if (this.#done) return true;
    this.#waiting = false;
    const stop = performance.now() + ms;
    try {
      if (!this.#meta) this.#header();
      return this.#v2 ? this.#stepV2(stop) : this.#stepV3(stop);
    } catch (err) {
      if (err !== NOT_ARRIVED) throw err;
      this.#pos = this.#unit;
      this.#waiting = true;
      return false;
    }
  }

  #stepV3(stop: number): boolean {
    const data = this.#data, side = this.#side;
    let n = 0;
    while (this.#keysRead < this.#keys) {
      this.#unit = this.#pos;
      side._restoreKey(this.#view());
      this.#keysRead++;
      if (++n === RECORDS_PER_CLOCK_CHECK) {
        n = 0;
        if (performance.now() >= stop) return false;
      }
    }
    this.#unit = this.#pos;
    if (this.#records < 0) this.#records = this.#u32();
    while (this.#recordsRead < this.#records) {
      this.#unit = this.#pos;
      const kid = this.#u32();
      if (kid >= this.#keys) {
        throw new Error(`state snapshot: record of key ${kid} of ${this.#keys}, at offset ${this.#pos}`);
      }
      const r = this.#recordFields();
      side._restoreRecord(kid, r.create, r.mod, r.version, r.lease, data.buffer, data.byteOffset + this.#pos, r.len);
      this.#pos += r.len;
      this.#recordsRead++;
      if (++n === RECORDS_PER_CLOCK_CHECK) {
        n = 0;
        if (performance.now() >= stop) return false;
      }
    }
    this.#unit = this.#pos;
    this.#auth = JSON.parse(this.#str());
    if (this.#pos !== data.length) throw new Error(`state snapshot: ${data.length - this.#pos} bytes after the end`);
    side._restoreEnd();
    this.#done = true;
    return true;
  }

  /** `step` for a blob of the layout before the key table: each record names its key. */
  #stepV2(stop: number): boolean {
    const data = this.#data, side = this.#side;
    let n = 0;
    for (;;) {
      this.#unit = this.#pos;
      if (this.#u8() !== 1) break;
      const key = toBKey(this.#view());
      const r = this.#recordFields();
      side._restoreAdd(key, r.create, r.mod, r.version, r.lease, data.buffer, data.byteOffset + this.#pos, r.len);
      this.#pos += r.len;
      if (++n === RECORDS_PER_CLOCK_CHECK) {
        n = 0;
        if (performance.now() >= stop) {
          side._restorePause();
          return false;
        }
      }
    }
    if (this.#pos < data.length) this.#auth = JSON.parse(this.#str());
    side._restoreEnd();
    this.#done = true;
    return true;
  }

  /** Decodes the rest (all of it arrived) in slices of `sliceMs`, yielding to the event loop between them. */
  async inSlices(sliceMs = ENCODE_SLICE_MS): Promise<void> {
    while (!this.step(sliceMs)) {
      if (this.#waiting) throw new Error("state snapshot: the rest of the blob has not arrived");
      await nextTurn();
    }
  }

  /**
   * Replaces the contents of the given store, lessor, alarm list, members and auth with the decoded state, at once
   * (decoding what is left first); returns the blob's meta. The decoder is used up.
   */
  install(store: MvccStore, lessor: Lessor, alarms: Alarm[], members: Members, auth?: AuthStore): StateMeta {
    if (!this.step(Infinity)) throw new Error("state snapshot: the rest of the blob has not arrived");
    members.restore(this.#members);
    lessor.clear();
    for (let i = 0; i < this.#leaseIds.length; i++) lessor.restore(this.#leaseIds[i], this.#leaseTtls[i]);
    alarms.length = 0;
    alarms.push(...this.#alarms);
    store._adopt(this.#side);
    if (auth) auth.restore(this.#auth);
    // leases know their keys from the live records
    for (const [k, lease] of store.leasedKeys()) lessor.attach(lease, k);
    return this.meta;
  }

  /** the fields of a record after its key, up to its value (there too, not read): one object, reused */
  #record = { create: 0, mod: 0, version: 0, lease: "0", len: 0 };

  /** Reads a record's revisions, lease and value length; its value follows at `#pos`. */
  #recordFields(): { create: number; mod: number; version: number; lease: string; len: number } {
    const r = this.#record;
    r.create = this.#f64();
    r.mod = this.#f64();
    r.version = this.#f64();
    const lb = this.#view();
    r.lease = lb.length === 1 && lb[0] === 0x30 ? "0" : toBKey(lb);
    r.len = this.#u32();
    this.#need(r.len);
    return r;
  }

  #need(n: number): void {
    if (this.#pos + n <= this.#available) return;
    if (this.#available < this.#data.length) throw NOT_ARRIVED;
    throw new Error(`state snapshot: truncated at offset ${this.#pos}`);
  }
  #u8(): number {
    this.#need(1);
    return this.#data[this.#pos++];
  }
  #u32(): number {
    this.#need(4);
    const x = this.#v.getUint32(this.#pos, true);
    this.#pos += 4;
    return x;
  }
  #f64(): number {
    this.#need(8);
    const x = this.#v.getFloat64(this.#pos, true);
    this.#pos += 8;
    return x;
  }
  /** the next byte string as a view into the blob */
  #view(): Uint8Array {
    const n = this.#u32();
    this.#need(n);
    this.#pos += n;
    return this.#data.subarray(this.#pos - n, this.#pos);
  }
  #str(): string {
    return utf8Decoder.decode(this.#view());
  }
}

/** Decodes a state blob into the given store, lessor, alarm list, members and auth at once; returns its meta. */
export function decodeState(
  data: Uint8Array,
  store: MvccStore,
  lessor: Lessor,
  alarms: Alarm[],
  members: Members,
  auth?: AuthStore,
): StateMeta {
  return new StateDecoder(data).install(store, lessor, alarms, members, auth);
}
