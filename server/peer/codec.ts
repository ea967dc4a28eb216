/** Binary encoding of Raft messages for the peer transport (one frame carries a batch of messages). */
import { BinaryReader, BinaryWriter } from "../util/binary.ts";
import type { Entry, Message, MessageType, Snapshot } from "../raft/types.ts";

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
 * The bytes of an egpb.RaftFrame (`bytes data = 1`, the peer stream's message) carrying `msgs`, exactly as protobuf
 * encodes it, written into a reused buffer: a view, valid until the next call (the stream copies what it sends).
 */
export function encodeFrame(msgs: Message[]): Uint8Array {
  const w = frameWriter;
  w.reset(FRAME_HEAD_SPACE);
  writeMessages(w, msgs);
  let n = w.done().length - FRAME_HEAD_SPACE;
  let h = 0;
  frameHead[h++] = 0x0a; // field 1, length-delimited
  while (n > 0x7f) {
    frameHead[h++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  frameHead[h++] = n;
  const frame = w.withHead(frameHead.subarray(0, h), FRAME_HEAD_SPACE);
  if (w.capacity > FRAME_BUFFER_KEEP) frameWriter = new BinaryWriter();
  return frame;
}

/** The messages of an egpb.RaftFrame's bytes (see {@link encodeFrame}); throws on malformed input. */
export function decodeFrame(frame: Uint8Array): Message[] {
  if (frame.length === 0) return []; // protobuf leaves out an empty field
  if (frame[0] !== 0x0a) throw new Error("raft frame: expected field 1");
  let n = 0, shift = 0, p = 1;
  for (;;) {
    if (p >= frame.length || shift > 28) throw new Error("raft frame: bad length");
    const b = frame[p++];
    n += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
    shift += 7;
  }
  if (p + n !== frame.length) throw new Error("raft frame: length does not match");
  return decodeMessages(frame.subarray(p));
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
