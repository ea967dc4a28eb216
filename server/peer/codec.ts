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
  return w.done().slice();
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
