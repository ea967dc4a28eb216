/**
 * What members send each other on their Send streams: egpb.RaftFrame, whose field 1 carries a batch of Raft messages
 * in this module's binary encoding, and fields 2 and 3 lease questions for the leader and its answers.
 */
import { Buffer } from "node:buffer";
import { pbRoot } from "../../proto/mod.ts";
import { BinaryReader, BinaryWriter } from "../util/binary.ts";
import type { Entry, Message, MessageType, Snapshot } from "../raft/types.ts";

/** A lease question for the leader (egpb.LeaseQuery): `seq` is the asker's, repeated in the answer. */
export interface LeaseQuery {
  id: string;
  renew: boolean;
  seq: number;
}

/** The leader's answer (egpb.LeaseAnswer); `error` is set when the member asked could not answer. */
export interface LeaseAnswer {
  seq: number;
  ttl: number;
  granted_ttl: number;
  error: string;
}

/** The contents of one frame. */
export interface PeerFrame {
  msgs: Message[];
  queries: LeaseQuery[];
  answers: LeaseAnswer[];
}

const RaftFrame = pbRoot.lookupType("egpb.RaftFrame");

/** egpb.RaftFrame as protobufjs decodes it here (int64 and uint64 as decimal strings, defaults filled). */
interface DecodedFrame {
  data: Uint8Array;
  lease_queries: { id: string; renew: boolean; seq: string }[];
  lease_answers: { ttl: string; granted_ttl: string; seq: string; error: string }[];
}

const TYPES: MessageType[] = [
  "App",
  "AppResp",
  "Vote",
  "VoteResp",
  "PreVote",
  "PreVoteResp",
  "Snap",
  "Heartbeat",
  "HeartbeatResp",
  "Prop",
  "ReadIndex",
  "ReadIndexResp",
  "TransferLeader",
  "TimeoutNow",
];
const CODE = new Map(TYPES.map((t, i) => [t, i]));

function writeEntries(w: BinaryWriter, entries: Entry[]): void {
  w.u32(entries.length);
  for (const e of entries) {
    w.f64(e.index);
    w.f64(e.term);
    w.u8(e.type);
    w.bytes(e.data);
  }
}

function readEntries(r: BinaryReader): Entry[] {
  const n = r.u32();
  const out: Entry[] = new Array(n);
  // views into the frame: MemoryStorage.append copies entry data into its own arenas
  for (let i = 0; i < n; i++) out[i] = { index: r.f64(), term: r.f64(), type: r.u8(), data: r.view() };
  return out;
}

function writeSnapshot(w: BinaryWriter, s: Snapshot | null): void {
  if (!s) return w.u8(0);
  w.u8(1);
  w.f64(s.metadata.index);
  w.f64(s.metadata.term);
  w.str(JSON.stringify(s.metadata.confState));
  w.bytes(s.data);
}

function readSnapshot(r: BinaryReader): Snapshot | null {
  if (r.u8() === 0) return null;
  const index = r.f64(), term = r.f64();
  const confState = JSON.parse(r.str());
  return { metadata: { index, term, confState }, data: r.bytes() };
}

/** Encodes messages into one frame. */
export function encodeMessages(msgs: Message[]): Uint8Array {
  const w = new BinaryWriter();
  writeMessages(w, msgs);
  return w.done();
}

/** Room for an egpb.RaftFrame's head: the tag of field 1 and a length of up to 5 varint bytes. */
const FRAME_HEAD_SPACE = 6;
/** The reused frame buffer is dropped after a batch that grew it beyond this (a large catch-up append). */
const FRAME_BUFFER_KEEP = 256 << 10;
let frameWriter = new BinaryWriter();
const frameHead = new Uint8Array(FRAME_HEAD_SPACE);

/**
 * The bytes of an egpb.RaftFrame carrying `msgs` (and lease questions or answers, if any), exactly as protobuf encodes
 * it. Field 1 is framed by hand into a reused buffer: a view, valid until the next call (the stream copies what it
 * sends). The lease fields, rare next to Raft traffic, go through protobufjs.
 */
export function encodeFrame(msgs: Message[], queries: LeaseQuery[] = [], answers: LeaseAnswer[] = []): Uint8Array {
  const w = frameWriter;
  w.reset(FRAME_HEAD_SPACE);
  let h = 0;
  if (msgs.length > 0) {
    writeMessages(w, msgs);
    let n = w.done().length - FRAME_HEAD_SPACE;
    frameHead[h++] = 0x0a; // field 1, length-delimited
    while (n > 0x7f) {
      frameHead[h++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    frameHead[h++] = n;
  }
  if (queries.length > 0 || answers.length > 0) {
    w.raw(RaftFrame.encode(RaftFrame.fromObject({ lease_queries: queries, lease_answers: answers })).finish());
  }
  const frame = w.withHead(frameHead.subarray(0, h), FRAME_HEAD_SPACE);
  if (w.capacity > FRAME_BUFFER_KEEP) frameWriter = new BinaryWriter();
  return frame;
}

/** What an egpb.RaftFrame's bytes carry (see {@link encodeFrame}); throws on malformed input. */
export function decodeFrame(frame: Uint8Array): PeerFrame {
  if (frame.length === 0) return { msgs: [], queries: [], answers: [] };
  if (frame[0] === 0x0a) {
    // the common frame: Raft messages only
    let n = 0, shift = 0, p = 1;
    for (;;) {
      if (p >= frame.length || shift > 28) throw new Error("raft frame: bad length");
      const b = frame[p++];
      n += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
      shift += 7;
    }
    if (p + n > frame.length) throw new Error("raft frame: length runs past the end");
    if (p + n === frame.length) return { msgs: decodeMessages(frame.subarray(p)), queries: [], answers: [] };
  }
  const f = RaftFrame.toObject(
    RaftFrame.decode(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength)),
    { longs: String, defaults: true },
  ) as DecodedFrame;
  return {
    msgs: f.data.length > 0 ? decodeMessages(f.data) : [],
    queries: f.lease_queries.map((q) => ({ id: q.id, renew: q.renew, seq: Number(q.seq) })),
    answers: f.lease_answers.map((a) => ({
      seq: Number(a.seq),
      ttl: Number(a.ttl),
      granted_ttl: Number(a.granted_ttl),
      error: a.error,
    })),
  };
}

function writeMessages(w: BinaryWriter, msgs: Message[]): void {
  w.u32(msgs.length);
  for (const m of msgs) {
    w.u8(CODE.get(m.type)!);
    w.str(m.from);
    w.str(m.to);
    w.f64(m.term);
    w.f64(m.logTerm);
    w.f64(m.index);
    w.f64(m.commit);
    w.u8((m.reject ? 1 : 0) | (m.commitOnly ? 2 : 0));
    w.f64(m.rejectHint);
    w.optBytes(m.context);
    writeEntries(w, m.entries);
    writeSnapshot(w, m.snapshot);
  }
}

/** Decodes a frame; throws on malformed input. */
export function decodeMessages(data: Uint8Array): Message[] {
  const r = new BinaryReader(data, "raft frame");
  const n = r.u32();
  const out: Message[] = [];
  for (let i = 0; i < n; i++) {
    const type = TYPES[r.u8()];
    if (!type) throw new Error("raft frame: unknown message type");
    const from = r.str(), to = r.str();
    const term = r.f64(), logTerm = r.f64(), index = r.f64(), commit = r.f64();
    const flags = r.u8();
    out.push({
      type,
      from,
      to,
      term,
      logTerm,
      index,
      commit,
      reject: (flags & 1) !== 0,
      commitOnly: (flags & 2) !== 0,
      rejectHint: r.f64(),
      context: r.optBytes(),
      entries: readEntries(r),
      snapshot: readSnapshot(r),
    });
  }
  if (r.remaining !== 0) throw new Error("raft frame: trailing bytes");
  return out;
}
