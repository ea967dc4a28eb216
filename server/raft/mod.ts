/** The Raft consensus core: a deterministic state machine plus its log storage interface. */
export * from "./types.ts";
export { limitSize, MemoryStorage, RaftLog, type Storage, Unstable } from "./log.ts";
export { Inflights, Progress, type ProgressState, Tracker } from "./progress.ts";
export { ctxKey, ReadOnly } from "./read_only.ts";
export { type ProgressStatus, type RaftConfig, RaftNode, type Status } from "./raft.ts";
