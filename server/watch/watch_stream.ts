/**
 * Watch: one bidirectional stream carries many watchers. Each watcher delivers, in revision order, every event of its
 * key range from its start revision on, never splitting a revision across responses (except with `fragment`), never
 * skipping or repeating one.
 *
 * A watcher is either synced (it receives events as revisions commit) or catching up (it replays from the store's
 * history). A watcher falls back to catching up when its stream's send buffer is full, and returns to synced once
 * it has replayed up to the current revision; that is how slow consumers lose nothing. A watcher whose next
 * revision has been compacted away is canceled with compact_revision set.
 *
 * A watcher is sent runs: the consecutive revisions it has pending go out as one response (at most RUN_REVS
 * revisions and the member's request size limit; a revision larger than that alone goes out whole, or in fragments
 * when the watcher asked for them), and watchers that get the same run share its encoded events.
 */
import { type BKey, inRange, type RangeEnd, rangeEndOf, toBKey } from "../mvcc/keys.ts";
import { type MvccStore, PUT, type StoreEvent } from "../mvcc/store.ts";
import {
  eventField,
  type HeaderEncoder,
  joinFields,
  watchEventsHead,
  type WatchNotice,
  watchNoticeFrame,
} from "./encode.ts";
import { FilterType, type WatchCreateRequest, type WatchRequest } from "../../proto/mod.ts";

/** What a watch stream needs from the transport. */
export interface WatchSink {
  /**
   * Sends one gRPC message given as `head` (starting with the 5-byte gRPC prefix) and `body`; false when the send
   * buffer is full (call `drained` later). `body` may be shared with other streams: it is not modified.
   */
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
  /** what decides the events and responses it gets of a run: watchers with the same selector share them */
  selector: string;
  /** next revision this watcher has to deliver */
  nextRev: number;
  synced: boolean;
  /** whether anything was sent since the last progress notification */
  active: boolean;
}

/** One committed revision, as the hub holds it until every stream has it. */
interface Commit {
  events: StoreEvent[];
  keys: BKey[];
  rev: number;
}

/** The events of one revision one watcher wants, each as its encoded `events` field (`eventField`); `size`: bytes. */
interface RevEvents {
  rev: number;
  events: Uint8Array[];
  size: number;
}

/** One response's worth of events: its header's revision, the encoded `events` fields and the fragment flag. */
interface Chunk {
  rev: number;
  fields: Uint8Array;
  fragment: boolean;
}

/** The commits handed out together, to the streams open when it began, and the chunks watchers share in it. */
interface Round {
  commits: Commit[];
  streams: WatchStream[];
  done: number;
  shared: Map<string, Chunk[]>;
}

const COMPACTED_REASON = "mvcc: required revision has been compacted";
/**
 * Work that grows with the watchers or the history (fan-out, catch-up, incoming requests) yields to the event loop
 * (setTimeout 0) once it has run this long in one turn: a put seen by 10,000 watchers is 10,000 responses, and a few
 * such commits in one turn held the loop for a quarter of a second.
 */
const SLICE_MS = 10;
/** Revisions per response, per fan-out round and per catch-up step (etcd's batches hold up to 1000 revisions). */
const RUN_REVS = 1000;
/** Room kept under the size limit for a response's header, watch ID and fragment flag. */
const HEAD_ROOM = 64;

/** Streams with work of one kind, served in order, at most SLICE_MS per event-loop turn. */
class Slices {
  #queue = new Set<WatchStream>();
  #scheduled = false;

  /** @param step does some of a stream's work until `deadline`; true when the stream has none left */
  constructor(readonly step: (s: WatchStream, deadline: number) => boolean) {}

  get busy(): boolean {
    return this.#queue.size > 0;
  }

  add(s: WatchStream): void {
    this.#queue.add(s);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setTimeout(this.#run, 0);
  }

  delete(s: WatchStream): void {
    this.#queue.delete(s);
  }

  readonly #run = (): void => {
    this.#scheduled = false;
    const deadline = performance.now() + SLICE_MS;
    for (const s of this.#queue) {
      if (this.step(s, deadline)) this.#queue.delete(s);
      else if (performance.now() >= deadline) {
        // out of time: this stream goes last next turn
        this.#queue.delete(s);
        this.#queue.add(s);
        break;
      }
    }
    if (this.#queue.size > 0 && !this.#scheduled) {
      this.#scheduled = true;
      setTimeout(this.#run, 0); // setImmediate chains starve socket reads in Deno
    }
  };
}

/**
 * Shared by all streams of a member: routes committed events to synced watchers.
 *
 * The fan-out runs after the responses of the turn in which the revisions committed: a put's response does not wait
 * for its events to be encoded and queued for a thousand watchers (etcd hands events to watcher goroutines the same
 * way). It hands out the commits pending when it starts as one round (up to RUN_REVS of them): each watcher gets the
 * revisions of the round it wants as one run. Watchers see the same events in the same order; `deliveredRev` is how
 * far the fan-out has got.
 */
export class WatchHub {
  #streams = new Set<WatchStream>();
  /** commits not yet fanned out, oldest first (those of the round under way included) */
  #pending: Commit[] = [];
  #fanOutScheduled = false;
  #round: Round | null = null;

  #headerRev = -1;
  #headerTerm = -1;
  #headerBytes: Uint8Array = new Uint8Array(0);

  /** incoming watch requests and catch-ups from history, each at most SLICE_MS per turn */
  readonly requests = new Slices((s, deadline) => s.runRequests(deadline));
  readonly catchUps = new Slices((s, deadline) => s.runCatchUp(deadline));
  /** until when requests may be handled as they arrive in this turn (0: not started) */
  #inlineUntil = 0;

  constructor(
    readonly store: MvccStore,
    readonly headerEncoder: HeaderEncoder,
    readonly term: () => number,
    /** responses are kept under this size (a revision larger than this alone is split when the watcher asked for fragments) */
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
   * Hands the pending commits, oldest first, to every stream, in rounds of up to RUN_REVS commits and in slices of
   * SLICE_MS (a stream at a time): a round's commits stay pending (and `deliveredRev` below them) until every stream
   * has them. A stream opened meanwhile is left out: its watchers start after the round. A watcher that caught up
   * from the history meanwhile is past it.
   */
  readonly #fanOut = (): void => {
    this.#fanOutScheduled = false;
    const sliceEnd = performance.now() + SLICE_MS;
    while (this.#pending.length > 0) {
      const round = this.#round ??= {
        commits: this.#pending.slice(0, RUN_REVS),
        streams: [...this.#streams],
        done: 0,
        shared: new Map(),
      };
      const streams = round.streams;
      while (round.done < streams.length) {
        streams[round.done++].onRun(round);
        if (
          performance.now() >= sliceEnd &&
          (round.done < streams.length || this.#pending.length > round.commits.length)
        ) {
          this.#fanOutScheduled = true;
          setTimeout(this.#fanOut, 0); // setImmediate chains starve socket reads in Deno
          return;
        }
      }
      this.#pending.splice(0, round.commits.length);
      this.#round = null;
    }
  };

  /**
   * The responses a watcher gets of a round's commits from revision `from` on: computed for the first watcher with
   * its selector, shared by the others (their events are the same bytes; only each one's head differs).
   */
  runChunks(w: Watcher, from: number, round: Round, at: number[] | null): readonly Chunk[] {
    const commits = round.commits;
    let i = 0;
    if (at) { while (i < at.length && commits[at[i]].rev < from) i++; }
    else while (commits[i].rev < from) i++;
    const key = i === 0 ? w.selector : `${i}\u0001${w.selector}`;
    let chunks = round.shared.get(key);
    if (!chunks) {
      const revs: RevEvents[] = [];
      for (const n = at ? at.length : commits.length; i < n; i++) {
        const c = commits[at ? at[i] : i];
        const evs = matching(w, c.events, c.keys, 0, c.events.length);
        if (evs) revs.push(evs);
      }
      chunks = revs.length === 0 ? [] : this.chunks(revs, commits[commits.length - 1].rev, w.fragment);
      round.shared.set(key, chunks);
    }
    return chunks;
  }

  /**
   * Cuts one watcher's revisions into responses of whole revisions, at most RUN_REVS revisions and the size limit
   * each; a revision larger than the limit alone goes in a response of its own, or in fragments when asked for. The
   * last response's header carries `endRev`, a revision the watcher has everything up to.
   */
  chunks(revs: RevEvents[], endRev: number, fragment: boolean): Chunk[] {
    const limit = this.maxResponseBytes - HEAD_ROOM;
    const out: Chunk[] = [];
    let events: Uint8Array[] = [];
    let size = 0, count = 0, last = 0;
    const flush = () => {
      out.push({ rev: last, fields: joinFields(events), fragment: false });
      events = [];
      size = count = 0;
    };
    for (const r of revs) {
      if (count > 0 && (size + r.size > limit || count >= RUN_REVS)) flush();
      if (fragment && r.size > limit) {
        let part: Uint8Array[] = [];
        let partSize = 0;
        for (const e of r.events) {
          const n = e.length;
          if (part.length > 0 && partSize + n > limit) {
            out.push({ rev: r.rev, fields: joinFields(part), fragment: true });
            part = [];
            partSize = 0;
          }
          part.push(e);
          partSize += n;
        }
        out.push({ rev: r.rev, fields: joinFields(part), fragment: false });
        continue;
      }
      for (const e of r.events) events.push(e);
      size += r.size;
      count++;
      last = r.rev;
    }
    if (count > 0) flush();
    out[out.length - 1].rev = Math.max(out[out.length - 1].rev, endRev);
    return out;
  }

  /** The encoded ResponseHeader at a revision (cached: a round's responses share it). */
  headerBytes(rev: number): Uint8Array {
    const term = this.term();
    if (rev !== this.#headerRev || term !== this.#headerTerm) {
      this.#headerBytes = this.headerEncoder.encode(rev, term);
      this.#headerRev = rev;
      this.#headerTerm = term;
    }
    return this.#headerBytes;
  }

  /**
   * Whether a request that just arrived may be handled at once: nothing is queued before it and handling requests
   * has taken less than SLICE_MS of this turn.
   */
  inlineRequest(): boolean {
    if (this.requests.busy) return false;
    const now = performance.now();
    if (this.#inlineUntil === 0) {
      this.#inlineUntil = now + SLICE_MS;
      setTimeout(() => this.#inlineUntil = 0, 0);
      return true;
    }
    return now < this.#inlineUntil;
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
    this.requests.delete(s);
    this.catchUps.delete(s);
  }

  /** The store was replaced by a snapshot: every watcher catches up from the new history (or is canceled as
   * compacted when its next revision is gone). */
  resync(): void {
    this.#pending = []; // the watchers catch up from the new history instead
    this.#round = null;
    for (const s of this.#streams) s.resync();
  }

  /** Number of watchers over all streams. */
  get watcherCount(): number {
    let n = 0;
    for (const s of this.#streams) n += s.size;
    return n;
  }
}

/**
 * The encoded events of one revision (`events[from, to)`, all of `rev`) a watcher wants, or null when it wants
 * none.
 */
function matching(w: Watcher, events: StoreEvent[], keys: BKey[], from: number, to: number): RevEvents | null {
  let out: RevEvents | null = null;
  for (let i = from; i < to; i++) {
    const ev = events[i];
    if (ev.type === PUT ? w.noPut : w.noDelete) continue;
    if (!inRange(keys[i], w.key, w.end)) continue;
    const e = eventField(ev, w.prevKv);
    out ??= { rev: ev.kv.mod_revision, events: [], size: 0 };
    out.events.push(e);
    out.size += e.length;
  }
  return out;
}

/** A request as it arrived: a create's start is fixed then (the current revision when it asked for none). */
interface Queued {
  req: WatchRequest;
  rev: number;
  check?: () => boolean;
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
  /** requests not handled yet, oldest first from `#queueHead` (those before it let go: undefined) */
  #queue: (Queued | undefined)[] = [];
  #queueHead = 0;
  /** watchers catching up from history, served in turn */
  #catchingUp = new Set<Watcher>();

  constructor(readonly hub: WatchHub, readonly sink: WatchSink) {}

  get size(): number {
    return this.#watchers.size;
  }

  /**
   * A WatchRequest from the client: handled now when the hub has time in this turn, else queued (at most SLICE_MS of
   * requests per turn). `check`, called when it is handled, may answer it itself and return false to drop it.
   */
  request(req: WatchRequest, check?: () => boolean): void {
    if (this.#closed) return;
    const rev = this.hub.store.currentRev;
    if (this.#queueHead === this.#queue.length && this.hub.inlineRequest()) {
      if (!check || check()) this.handle(req, rev);
      return;
    }
    this.#queue.push({ req, rev, check });
    this.hub.requests.add(this);
  }

  /** Handles queued requests until `deadline`; true when none are left. */
  runRequests(deadline: number): boolean {
    while (this.#queueHead < this.#queue.length) {
      const q = this.#queue[this.#queueHead]!;
      this.#queue[this.#queueHead++] = undefined;
      if (!q.check || q.check()) this.handle(q.req, q.rev);
      if (performance.now() >= deadline) break;
    }
    if (this.#queueHead < this.#queue.length) return false;
    this.#queue = [];
    this.#queueHead = 0;
    return true;
  }

  /**
   * Handles one WatchRequest now. `rev` is the current revision when it arrived: a create without a start revision
   * starts after it.
   */
  handle(req: WatchRequest, rev = this.hub.store.currentRev): void {
    if (this.#closed) return;
    if (req.create_request) this.#create(req.create_request, rev);
    else if (req.cancel_request) this.#cancel(Number(req.cancel_request.watch_id));
    else if (req.progress_request) this.#progress();
  }

  #create(c: WatchCreateRequest, arrivedAt: number): void {
    const store = this.hub.store;
    let id = Number(c.watch_id ?? 0);
    if (id !== 0 && this.#watchers.has(id)) {
      this.#notice(store.currentRev, {
        watchId: -1,
        created: true,
        canceled: true,
        cancelReason: "mvcc: duplicate watch ID provided on the WatchStream",
      });
      return;
    }
    if (id === 0) {
      while (this.#watchers.has(this.#nextId)) this.#nextId++;
      id = this.#nextId++;
    }
    const filters: number[] = c.filters ?? [];
    const start = Number(c.start_revision ?? 0);
    const key = toBKey(c.key), end = rangeEndOf(c.range_end);
    const w: Watcher = {
      id,
      key,
      end,
      noPut: filters.includes(FilterType.NOPUT),
      noDelete: filters.includes(FilterType.NODELETE),
      prevKv: !!c.prev_kv,
      fragment: !!c.fragment,
      progressNotify: !!c.progress_notify,
      selector: "",
      nextRev: start > 0 ? start : arrivedAt + 1,
      synced: true,
      active: false,
    };
    w.selector = `${+w.noPut}${+w.noDelete}${+w.prevKv}${+w.fragment}${
      end === null ? "*" : `${end.length}:${end}`
    }:${key}`;
    w.synced = w.nextRev > store.currentRev;
    this.#add(w);
    this.#notice(start > 0 ? store.currentRev : arrivedAt, { watchId: id, created: true });
    if (start < 0) w.nextRev = 0;
    if (!w.synced || start < 0) {
      w.synced = false;
      this.#startCatchUp(w);
    }
  }

  #cancel(id: number): void {
    const w = this.#watchers.get(id);
    if (!w) return;
    this.#remove(w);
    this.#notice(this.hub.store.currentRev, { watchId: id, canceled: true });
  }

  #progress(): void {
    // A progress header promises that every event up to its revision was delivered to every watcher.
    let rev = this.hub.deliveredRev;
    for (const w of this.#watchers.values()) if (!w.synced) rev = Math.min(rev, w.nextRev - 1);
    this.#notice(rev, { watchId: -1 });
  }

  /** Periodic progress notifications to idle synced watchers that asked for them. */
  progressTick(): void {
    if (this.#congested) return;
    const rev = this.hub.deliveredRev;
    for (const w of this.#watchers.values()) {
      if (!w.progressNotify || !w.synced) continue;
      if (!w.active) this.#notice(rev, { watchId: w.id });
      w.active = false;
    }
  }

  /**
   * Called by the hub with a round of commits: each synced watcher is sent the run of them it wants. A watcher of one
   * key looks only at the commits of its key (found through `#byKey`), a range watcher at all of them.
   */
  onRun(round: Round): void {
    const commits = round.commits;
    const last = commits[commits.length - 1].rev;
    if (this.#congested) {
      // every synced watcher that still needs these revisions resumes from history when the stream drains
      for (const w of this.#watchers.values()) if (w.synced && last >= this.#next(w)) this.#unsync(w);
    } else {
      if (this.#byKey.size > 0) {
        const hits = new Map<Watcher, number[]>();
        for (let ci = 0; ci < commits.length; ci++) {
          for (const k of commits[ci].keys) {
            const list = this.#byKey.get(k);
            if (!list) continue;
            for (const w of list) {
              const h = hits.get(w);
              if (!h) hits.set(w, [ci]);
              else if (h[h.length - 1] !== ci) h.push(ci);
            }
          }
        }
        for (const [w, at] of hits) this.#sendRun(w, round, last, at);
      }
      for (const w of this.#ranged) this.#sendRun(w, round, last, null);
    }
    this.#fanned = last;
  }

  /** Sends a synced watcher its run of a round (`at`: the indexes of the commits it may want, null for all). */
  #sendRun(w: Watcher, round: Round, last: number, at: number[] | null): void {
    if (!w.synced) return;
    // already past the round (created after it, or caught up from history meanwhile)
    const from = this.#next(w);
    if (last < from) return;
    if (this.#congested) {
      this.#unsync(w);
      return;
    }
    w.nextRev = last + 1;
    const chunks = this.hub.runChunks(w, from, round, at);
    if (chunks.length > 0) this.#sendChunks(w, chunks);
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
    this.#catchingUp.delete(w);
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
    if (this.#closed) return;
    this.#congested = false;
    for (const w of this.#watchers.values()) if (!w.synced) this.#catchingUp.add(w);
    if (this.#catchingUp.size > 0) this.hub.catchUps.add(this);
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
    this.#catchingUp.clear();
    this.#queue = [];
    this.#queueHead = 0;
    this.hub._closed(this);
  }

  #startCatchUp(w: Watcher): void {
    this.#catchingUp.add(w);
    if (!this.#congested) this.hub.catchUps.add(this);
  }

  /**
   * Replays history to the watchers catching up, a step (up to RUN_REVS revisions) of one watcher at a time in turn,
   * until `deadline`; true when none is left or the stream is congested (it resumes when drained).
   */
  runCatchUp(deadline: number): boolean {
    while (this.#catchingUp.size > 0 && !this.#congested) {
      const w: Watcher = this.#catchingUp.values().next().value!;
      this.#catchingUp.delete(w);
      if (this.#catchUpStep(w)) this.#catchingUp.add(w); // not done: its turn comes again
      if (performance.now() >= deadline) break;
    }
    return this.#catchingUp.size === 0 || this.#congested;
  }

  /** One step of a watcher's replay from history; true when it has more to replay. */
  #catchUpStep(w: Watcher): boolean {
    const store = this.hub.store;
    if (this.#watchers.get(w.id) !== w || w.synced) return false;
    if (w.nextRev < store.compactRev || w.nextRev <= 0) {
      this.#remove(w);
      this.#notice(store.currentRev, {
        watchId: w.id,
        canceled: true,
        compactRevision: store.compactRev,
        cancelReason: COMPACTED_REASON,
      });
      return false;
    }
    const batch = store.eventsSince(w.nextRev, RUN_REVS);
    if (batch.length === 0) {
      w.nextRev = store.currentRev + 1;
      w.synced = true;
      return false;
    }
    const keys = batch.map((ev) => toBKey(ev.kv.key));
    const revs: RevEvents[] = [];
    for (let i = 0; i < batch.length;) {
      const rev = batch[i].kv.mod_revision;
      let j = i + 1;
      while (j < batch.length && batch[j].kv.mod_revision === rev) j++;
      const evs = matching(w, batch, keys, i, j);
      if (evs) revs.push(evs);
      i = j;
    }
    const last = batch[batch.length - 1].kv.mod_revision;
    w.nextRev = last + 1;
    if (revs.length > 0) this.#sendChunks(w, this.hub.chunks(revs, last, w.fragment));
    return true;
  }

  /** A watcher's responses with events: a small head of its own each, the events' bytes shared. */
  #sendChunks(w: Watcher, chunks: readonly Chunk[]): void {
    if (this.#closed) return;
    w.active = true;
    for (const c of chunks) {
      const head = watchEventsHead(this.hub.headerBytes(c.rev), w.id, c.fields.length, c.fragment);
      if (!this.sink.sendFramed(head, c.fields)) this.#congested = true;
    }
  }

  /** A response without events, hand-encoded. */
  #notice(rev: number, n: WatchNotice): void {
    if (this.#closed) return;
    const frame = watchNoticeFrame(this.hub.headerBytes(rev), n);
    if (!this.sink.sendFramed(frame.subarray(0, 5), frame.subarray(5))) this.#congested = true;
  }
}
