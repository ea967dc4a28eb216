/**
 * Watch: one bidirectional stream carries many watchers. Each watcher delivers, in revision order, every event of its
 * key range from its start revision on, never splitting a revision across responses (except with `fragment`), never
 * skipping or repeating one.
 *
 * A watcher is either synced (it receives events as revisions commit) or catching up (it replays from the store's
 * history). A watcher falls back to catching up when its stream's send buffer is full, and returns to synced once
 * it has replayed up to the current revision; that is how slow consumers lose nothing. A watcher whose next
 * revision has been compacted away is canceled with compact_revision set.
 */
import { type BKey, inRange, type RangeEnd, rangeEndOf, toBKey } from "../mvcc/keys.ts";
import { type MvccStore, PUT, type StoreEvent } from "../mvcc/store.ts";
import { encodeEvent, eventFields, type HeaderEncoder, watchEventsHead } from "./encode.ts";
import {
  FilterType,
  type ResponseHeader,
  type WatchCreateRequest,
  type WatchRequest,
  type WatchResponse,
} from "../../proto/mod.ts";

/** What a watch stream needs from the transport. */
export interface WatchSink {
  /** Sends one WatchResponse; returns false when the send buffer is full (call `drained` later). */
  send(resp: WatchResponse): boolean;
  /** Sends one gRPC message given as `head` (starting with the 5-byte gRPC prefix) and `body`; same return value. */
  sendFramed(head: Uint8Array, body: Uint8Array): boolean;
}

interface Watcher {
  id: number;
  key: BKey;
  end: RangeEnd;
  noPut: boolean;
  noDelete: boolean;
  prevKv: boolean;
  fragment: boolean;
  progressNotify: boolean;
  /** next revision this watcher has to deliver */
  nextRev: number;
  synced: boolean;
  /** whether anything was sent since the last progress notification */
  active: boolean;
}

const COMPACTED_REASON = "mvcc: required revision has been compacted";
const NONE: readonly Uint8Array[] = Object.freeze([]);
/**
 * A fan-out yields to the event loop (setTimeout 0) once it has run this long: a put seen by 10,000 watchers is
 * 10,000 responses, and a few such commits in one turn held the loop for a quarter of a second.
 */
const FANOUT_SLICE_MS = 10;
/** Revisions replayed per catch-up step (etcd replays up to 1000 revisions per batch). */
const CATCHUP_REVS = 1000;

/**
 * Shared by all streams of a member: routes committed events to synced watchers.
 *
 * The fan-out runs after the responses of the turn in which the revisions committed: a put's response does not wait
 * for its events to be encoded and queued for a thousand watchers (etcd hands events to watcher goroutines the same
 * way). Watchers see the same events in the same order; `deliveredRev` is how far the fan-out has got.
 */
export class WatchHub {
  #streams = new Set<WatchStream>();
  /** commits not yet fanned out, oldest first */
  #pending: { events: StoreEvent[]; keys: BKey[]; rev: number }[] = [];
  #fanOutScheduled = false;
  /** the streams the oldest pending commit goes to (those open when its fan-out began), and how many have it */
  #fanOutStreams: WatchStream[] | null = null;
  #fanOutDone = 0;

  #headerRev = -1;
  #headerTerm = -1;
  #headerBytes: Uint8Array = new Uint8Array(0);

  constructor(
    readonly store: MvccStore,
    readonly header: (rev: number) => ResponseHeader,
    readonly headerEncoder: HeaderEncoder,
    readonly term: () => number,
    /** responses larger than this are split when the watcher asked for fragments */
    readonly maxResponseBytes: number,
    progressIntervalMs: number,
  ) {
    store.onCommit((events, rev) => {
      if (this.#streams.size === 0) return;
      this.#pending.push({ events, keys: events.map((ev) => toBKey(ev.kv.key)), rev });
      if (this.#fanOutScheduled) return;
      this.#fanOutScheduled = true;
      // Responses are written from setImmediate; an immediate queued by an immediate runs after them.
      setImmediate(() => setImmediate(this.#fanOut));
    });
    const t = setInterval(() => {
      for (const s of this.#streams) s.progressTick();
    }, progressIntervalMs);
    Deno.unrefTimer(t);
  }

  /** Every event up to this revision has been handed to the synced watchers. */
  get deliveredRev(): number {
    return this.#pending.length > 0 ? this.#pending[0].rev - 1 : this.store.currentRev;
  }

  /**
   * Hands the pending commits, oldest first, to every stream, in slices of FANOUT_SLICE_MS (a stream at a time):
   * a commit stays pending (and `deliveredRev` below it) until every stream has it. A stream opened meanwhile is
   * left out: its watchers start after the commit. A watcher that caught up from the history meanwhile is past it.
   */
  readonly #fanOut = (): void => {
    this.#fanOutScheduled = false;
    const sliceEnd = performance.now() + FANOUT_SLICE_MS;
    while (this.#pending.length > 0) {
      const c = this.#pending[0];
      const streams = this.#fanOutStreams ??= [...this.#streams];
      while (this.#fanOutDone < streams.length) {
        streams[this.#fanOutDone++].onCommit(c.events, c.keys, c.rev);
        if (performance.now() >= sliceEnd && (this.#fanOutDone < streams.length || this.#pending.length > 1)) {
          this.#fanOutScheduled = true;
          setTimeout(this.#fanOut, 0); // setImmediate chains starve socket reads in Deno
          return;
        }
      }
      this.#pending.shift();
      this.#fanOutStreams = null;
      this.#fanOutDone = 0;
    }
  };

  /** The encoded ResponseHeader at a revision (cached: a commit's responses share it). */
  headerBytes(rev: number): Uint8Array {
    const term = this.term();
    if (rev !== this.#headerRev || term !== this.#headerTerm) {
      this.#headerBytes = this.headerEncoder.encode(rev, term);
      this.#headerRev = rev;
      this.#headerTerm = term;
    }
    return this.#headerBytes;
  }

  /** Opens a stream bound to a transport sink. */
  open(sink: WatchSink): WatchStream {
    const s = new WatchStream(this, sink);
    this.#streams.add(s);
    return s;
  }

  /** @internal */
  _closed(s: WatchStream): void {
    this.#streams.delete(s);
  }

  /** The store was replaced by a snapshot: every watcher catches up from the new history (or is canceled as
   * compacted when its next revision is gone). */
  resync(): void {
    this.#pending = []; // the watchers catch up from the new history instead
    this.#fanOutStreams = null;
    this.#fanOutDone = 0;
    for (const s of this.#streams) s.resync();
  }

  /** Number of watchers over all streams. */
  get watcherCount(): number {
    let n = 0;
    for (const s of this.#streams) n += s.size;
    return n;
  }
}

/** The watchers of one gRPC Watch call. */
export class WatchStream {
  #watchers = new Map<number, Watcher>();
  /**
   * The watchers of one key by key, and those of a range: a commit looks only at the watchers its keys can match
   * (with 10,000 watchers on distinct keys, asking every one of them cost 0.3-0.4 ms per commit).
   */
  #byKey = new Map<BKey, Watcher[]>();
  #ranged = new Set<Watcher>();
  /** the last revision the hub handed to this stream: a synced watcher has everything up to it it wants */
  #fanned = 0;
  #nextId = 0;
  #congested = false;
  #closed = false;

  constructor(readonly hub: WatchHub, readonly sink: WatchSink) {}

  get size(): number {
    return this.#watchers.size;
  }

  /** Handles one WatchRequest from the client. */
  handle(req: WatchRequest): void {
    if (this.#closed) return;
    if (req.create_request) this.#create(req.create_request);
    else if (req.cancel_request) this.#cancel(Number(req.cancel_request.watch_id));
    else if (req.progress_request) this.#progress();
  }

  #create(c: WatchCreateRequest): void {
    const store = this.hub.store;
    let id = Number(c.watch_id ?? 0);
    if (id !== 0 && this.#watchers.has(id)) {
      this.#send({
        header: this.hub.header(store.currentRev),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream",
      });
      return;
    }
    if (id === 0) {
      while (this.#watchers.has(this.#nextId)) this.#nextId++;
      id = this.#nextId++;
    }
    const filters: number[] = c.filters ?? [];
    const start = Number(c.start_revision ?? 0);
    const w: Watcher = {
      id,
      key: toBKey(c.key),
      end: rangeEndOf(c.range_end),
      noPut: filters.includes(FilterType.NOPUT),
      noDelete: filters.includes(FilterType.NODELETE),
      prevKv: !!c.prev_kv,
      fragment: !!c.fragment,
      progressNotify: !!c.progress_notify,
      nextRev: start > 0 ? start : store.currentRev + 1,
      synced: !(start > 0 && start <= store.currentRev),
      active: false,
    };
    this.#add(w);
    this.#send({ header: this.hub.header(store.currentRev), watch_id: id, created: true });
    if (start < 0) w.nextRev = 0;
    if (!w.synced || start < 0) this.#catchUp(w);
  }

  #cancel(id: number): void {
    const w = this.#watchers.get(id);
    if (!w) return;
    this.#remove(w);
    this.#send({ header: this.hub.header(this.hub.store.currentRev), watch_id: id, canceled: true });
  }

  #progress(): void {
    // A progress header promises that every event up to its revision was delivered to every watcher.
    let rev = this.hub.deliveredRev;
    for (const w of this.#watchers.values()) if (!w.synced) rev = Math.min(rev, w.nextRev - 1);
    this.#send({ header: this.hub.header(rev), watch_id: -1 });
  }

  /** Periodic progress notifications to idle synced watchers that asked for them. */
  progressTick(): void {
    if (this.#congested) return;
    const rev = this.hub.deliveredRev;
    for (const w of this.#watchers.values()) {
      if (!w.progressNotify || !w.synced) continue;
      if (!w.active) this.#send({ header: this.hub.header(rev), watch_id: w.id });
      w.active = false;
    }
  }

  /** Called by the hub when a revision commits. */
  onCommit(events: StoreEvent[], keys: BKey[], rev: number): void {
    if (this.#congested) {
      // every synced watcher that still needs this revision resumes from history when the stream drains
      for (const w of this.#watchers.values()) if (w.synced && rev >= this.#next(w)) this.#unsync(w);
    } else {
      for (const w of this.#candidates(keys)) {
        // not synced, or already past it (created after the commit, or caught up from history meanwhile)
        if (!w.synced || rev < this.#next(w)) continue;
        if (this.#congested) {
          this.#unsync(w);
          continue;
        }
        const evs = this.#matching(w, events, keys);
        w.nextRev = rev + 1;
        if (evs.length > 0) this.#deliver(w, evs, rev);
      }
    }
    this.#fanned = rev;
  }

  /** The watchers a commit of these keys may concern: those of the keys, and every range watcher. */
  #candidates(keys: BKey[]): Iterable<Watcher> {
    if (keys.length === 1) {
      const one = this.#byKey.get(keys[0]);
      if (!one) return this.#ranged;
      return this.#ranged.size === 0 ? one : [...one, ...this.#ranged];
    }
    const out = new Set<Watcher>();
    for (const k of keys) for (const w of this.#byKey.get(k) ?? []) out.add(w);
    for (const w of this.#ranged) out.add(w);
    return out;
  }

  /** The next revision a watcher has to deliver: a synced one has been handed every commit up to #fanned. */
  #next(w: Watcher): number {
    return w.synced ? Math.max(w.nextRev, this.#fanned + 1) : w.nextRev;
  }

  /** A watcher falls back to catching up from the store's history, from the first revision it still needs. */
  #unsync(w: Watcher): void {
    w.nextRev = this.#next(w);
    w.synced = false;
  }

  #add(w: Watcher): void {
    this.#watchers.set(w.id, w);
    if (w.end !== "") this.#ranged.add(w);
    else {
      const list = this.#byKey.get(w.key);
      if (list) list.push(w);
      else this.#byKey.set(w.key, [w]);
    }
  }

  #remove(w: Watcher): void {
    this.#watchers.delete(w.id);
    if (w.end !== "") this.#ranged.delete(w);
    else {
      const list = this.#byKey.get(w.key)!;
      const rest = list.filter((x) => x !== w);
      if (rest.length > 0) this.#byKey.set(w.key, rest);
      else this.#byKey.delete(w.key);
    }
  }

  /** The transport's send buffer has room again: let watchers that fell behind catch up. */
  drained(): void {
    this.#congested = false;
    for (const w of [...this.#watchers.values()]) {
      if (this.#congested) return;
      if (!w.synced) this.#catchUp(w);
    }
  }

  /** Moves every watcher to catching up from the store's history. */
  resync(): void {
    for (const w of this.#watchers.values()) if (w.synced) this.#unsync(w);
    this.drained();
  }

  /** Stops all watchers of the stream (client went away). */
  close(): void {
    this.#closed = true;
    this.#watchers.clear();
    this.#byKey.clear();
    this.#ranged.clear();
    this.hub._closed(this);
  }

  #catchUp(w: Watcher): void {
    const store = this.hub.store;
    while (!this.#congested && this.#watchers.get(w.id) === w) {
      if (w.nextRev < store.compactRev || w.nextRev <= 0) {
        this.#remove(w);
        this.#send({
          header: this.hub.header(store.currentRev),
          watch_id: w.id,
          canceled: true,
          compact_revision: store.compactRev,
          cancel_reason: COMPACTED_REASON,
        });
        return;
      }
      const batch = store.eventsSince(w.nextRev, CATCHUP_REVS);
      if (batch.length === 0) {
        w.nextRev = store.currentRev + 1;
        w.synced = true;
        return;
      }
      const last = batch[batch.length - 1].kv.mod_revision;
      const evs = this.#matching(w, batch, batch.map((ev) => toBKey(ev.kv.key)));
      w.nextRev = last + 1;
      if (evs.length > 0) this.#deliver(w, evs, last);
    }
  }

  /** The encoded events of a batch this watcher wants (NONE, not a new array, when it wants none). */
  #matching(w: Watcher, events: StoreEvent[], keys: BKey[]): readonly Uint8Array[] {
    let out: Uint8Array[] | null = null;
    for (let i = 0; i < events.length; i++) {
      const ev = events[i];
      if (ev.type === PUT ? w.noPut : w.noDelete) continue;
      if (!inRange(keys[i], w.key, w.end)) continue;
      (out ??= []).push(encodeEvent(ev, w.prevKv));
    }
    return out ?? NONE;
  }

  #deliver(w: Watcher, events: readonly Uint8Array[], rev: number): void {
    w.active = true;
    const header = this.hub.headerBytes(rev);
    if (!w.fragment) {
      this.#sendEvents(header, w.id, events, false);
      return;
    }
    // with fragment, responses larger than the request limit are split between events
    const limit = this.hub.maxResponseBytes;
    let chunk: Uint8Array[] = [];
    let size = 0;
    for (const e of events) {
      if (chunk.length > 0 && size + e.length > limit) {
        this.#sendEvents(header, w.id, chunk, true);
        chunk = [];
        size = 0;
      }
      chunk.push(e);
      size += e.length;
    }
    this.#sendEvents(header, w.id, chunk, false);
  }

  /** One response with events: a small head of its own plus the event fields other watchers share. */
  #sendEvents(header: Uint8Array, watchId: number, events: readonly Uint8Array[], fragment: boolean): void {
    if (this.#closed) return;
    const fields = eventFields(events);
    if (!this.sink.sendFramed(watchEventsHead(header, watchId, fields.length, fragment), fields)) {
      this.#congested = true;
    }
  }

  #send(resp: WatchResponse): void {
    if (this.#closed) return;
    if (!this.sink.send(resp)) this.#congested = true;
  }
}
