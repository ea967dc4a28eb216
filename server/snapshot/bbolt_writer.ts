/**
 * Writes a complete bbolt database file (the format of etcd's backend, go.etcd.io/bbolt) in one pass from an
 * in-memory description of its buckets. There is no reader: the output is meant for `etcdctl snapshot status` /
 * `snapshot restore` and for etcd itself to open.
 *
 * File layout (page size 4096, little-endian like bbolt on every supported platform):
 *   page 0, 1   meta pages (identical apart from the transaction id, so either one is a valid fallback)
 *   page 2      freelist page, empty (nothing is free in a freshly written file)
 *   page 3..    bucket pages, children before parents; the root bucket's top page comes last
 *
 * Every bucket is a B+tree: leaf pages filled up to the page size (a single element larger than a page gets a page
 * of its own with overflow pages after it), and branch pages above them until one page remains. Small buckets
 * without sub-buckets are stored inline in their parent's leaf element, as bbolt does. The output is deterministic.
 */

/** bbolt's page size for the files we write. */
export const PAGE_SIZE = 4096;

const MAGIC = 0xed0cdaed;
const VERSION = 2;
const PAGE_HEADER = 16;
const LEAF_ELEMENT = 16;
const BRANCH_ELEMENT = 16;
const BUCKET_HEADER = 16;
const META_SIZE = 64;

const BRANCH_PAGE = 0x01;
const LEAF_PAGE = 0x02;
const META_PAGE = 0x04;
const FREELIST_PAGE = 0x10;
const BUCKET_LEAF_FLAG = 0x01;

/** A bucket: key/value pairs and sub-buckets, keyed by byte strings that must be unique within the bucket. */
export interface BoltBucket {
  /** plain key/value pairs */
  entries?: Iterable<[Uint8Array, Uint8Array]>;
  /** nested buckets by name */
  buckets?: Iterable<[Uint8Array, BoltBucket]>;
  /** the bucket's sequence number (NextSequence); 0 unless set */
  sequence?: bigint;
}

/** Options of `writeBbolt`. */
export interface BoltWriteOptions {
  /** transaction id recorded in meta page 0 (meta page 1 gets txid - 1); must be even and >= 2. Default 2. */
  txid?: number;
}

/** Bytewise comparison of two keys, as bbolt orders them. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i] - b[i];
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

interface LeafInode {
  flags: number;
  key: Uint8Array;
  value: Uint8Array;
}

interface BranchInode {
  key: Uint8Array;
  pgid: number;
}

/** A leaf or branch page to write once the file size is known. */
type PageJob = { id: number; overflow: number; leaf: LeafInode[] } | {
  id: number;
  overflow: number;
  branch: BranchInode[];
};

/** Hands out page ids in order and remembers what goes on each page; the bytes are written in one buffer at the end. */
class PageSink {
  jobs: PageJob[] = [];
  next = 0;

  /** Reserves `n` contiguous pages, returns the first id. */
  alloc(n: number): number {
    const id = this.next;
    this.next += n;
    return id;
  }
}

function writeHeader(dv: DataView, off: number, id: number, flags: number, count: number, overflow: number): void {
  dv.setBigUint64(off, BigInt(id), true);
  dv.setUint16(off + 8, flags, true);
  dv.setUint16(off + 10, count, true);
  dv.setUint32(off + 12, overflow, true);
}

function leafElemSize(n: LeafInode): number {
  return LEAF_ELEMENT + n.key.length + n.value.length;
}

/** Writes leaf elements (headers, then each key followed by its value) into `buf` at `off` (a page header). */
function fillLeaf(buf: Uint8Array, dv: DataView, off: number, id: number, overflow: number, inodes: LeafInode[]) {
  writeHeader(dv, off, id, LEAF_PAGE, inodes.length, overflow);
  let data = off + PAGE_HEADER + inodes.length * LEAF_ELEMENT;
  for (let i = 0; i < inodes.length; i++) {
    const n = inodes[i];
    const el = off + PAGE_HEADER + i * LEAF_ELEMENT;
    dv.setUint32(el, n.flags, true);
    dv.setUint32(el + 4, data - el, true);
    dv.setUint32(el + 8, n.key.length, true);
    dv.setUint32(el + 12, n.value.length, true);
    buf.set(n.key, data);
    data += n.key.length;
    buf.set(n.value, data);
    data += n.value.length;
  }
}

function fillBranch(buf: Uint8Array, dv: DataView, off: number, id: number, overflow: number, inodes: BranchInode[]) {
  writeHeader(dv, off, id, BRANCH_PAGE, inodes.length, overflow);
  let data = off + PAGE_HEADER + inodes.length * BRANCH_ELEMENT;
  for (let i = 0; i < inodes.length; i++) {
    const n = inodes[i];
    const el = off + PAGE_HEADER + i * BRANCH_ELEMENT;
    dv.setUint32(el, data - el, true);
    dv.setUint32(el + 4, n.key.length, true);
    dv.setBigUint64(el + 8, BigInt(n.pgid), true);
    buf.set(n.key, data);
    data += n.key.length;
  }
}

/**
 * Splits elements into page-sized groups: a group is closed when the next element would push it past one page.
 * A group holding a single oversized element spans several pages (overflow).
 */
function* groups<T>(items: T[], size: (x: T) => number): Generator<{ items: T[]; bytes: number }> {
  let cur: T[] = [];
  let bytes = PAGE_HEADER;
  for (const it of items) {
    const s = size(it);
    if (cur.length > 0 && bytes + s > PAGE_SIZE) {
      yield { items: cur, bytes };
      cur = [];
      bytes = PAGE_HEADER;
    }
    cur.push(it);
    bytes += s;
  }
  if (cur.length > 0 || items.length === 0) yield { items: cur, bytes };
}

/** Writes a bucket's tree; returns the id of its top page. */
function writeTree(sink: PageSink, inodes: LeafInode[]): number {
  let level: BranchInode[] = [];
  for (const g of groups(inodes, leafElemSize)) {
    const n = Math.ceil(g.bytes / PAGE_SIZE);
    const id = sink.alloc(n);
    sink.jobs.push({ id, overflow: n - 1, leaf: g.items });
    level.push({ key: g.items.length > 0 ? g.items[0].key : new Uint8Array(0), pgid: id });
  }
  while (level.length > 1) {
    const up: BranchInode[] = [];
    for (const g of groups(level, (b) => BRANCH_ELEMENT + b.key.length)) {
      const n = Math.ceil(g.bytes / PAGE_SIZE);
      const id = sink.alloc(n);
      sink.jobs.push({ id, overflow: n - 1, branch: g.items });
      up.push({ key: g.items[0].key, pgid: id });
    }
    level = up;
  }
  return level[0].pgid;
}

/** Collects a bucket's elements in key order, writing sub-buckets first; rejects duplicate keys. */
function bucketInodes(sink: PageSink, b: BoltBucket): { inodes: LeafInode[]; hasSubBuckets: boolean } {
  const inodes: LeafInode[] = [];
  for (const [key, value] of b.entries ?? []) inodes.push({ flags: 0, key, value });
  let hasSubBuckets = false;
  const subs = [...(b.buckets ?? [])].sort((x, y) => compareBytes(x[0], y[0]));
  for (const [key, child] of subs) {
    hasSubBuckets = true;
    inodes.push({ flags: BUCKET_LEAF_FLAG, key, value: bucketValue(sink, child) });
  }
  inodes.sort((x, y) => compareBytes(x.key, y.key));
  for (let i = 1; i < inodes.length; i++) {
    if (compareBytes(inodes[i - 1].key, inodes[i].key) === 0) {
      throw new Error(`bbolt writer: duplicate key ${Array.from(inodes[i].key, (x) => x.toString(16)).join(" ")}`);
    }
  }
  return { inodes, hasSubBuckets };
}

/** The value of a bucket's element in its parent: the bucket header, followed by the page if inline. */
function bucketValue(sink: PageSink, b: BoltBucket): Uint8Array {
  const { inodes, hasSubBuckets } = bucketInodes(sink, b);
  const seq = b.sequence ?? 0n;
  let pageBytes = PAGE_HEADER;
  for (const n of inodes) pageBytes += leafElemSize(n);
  // bbolt keeps a bucket inline while it has no sub-buckets and fits in a quarter page
  if (!hasSubBuckets && pageBytes <= PAGE_SIZE / 4) {
    const out = new Uint8Array(BUCKET_HEADER + pageBytes);
    const dv = new DataView(out.buffer);
    dv.setBigUint64(0, 0n, true);
    dv.setBigUint64(8, seq, true);
    fillLeaf(out, dv, BUCKET_HEADER, 0, 0, inodes);
    return out;
  }
  const root = writeTree(sink, inodes);
  const out = new Uint8Array(BUCKET_HEADER);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(root), true);
  dv.setBigUint64(8, seq, true);
  return out;
}

/** FNV-1a, 64-bit, over `data` (bbolt's meta checksum). */
export function fnv64a(data: Uint8Array): bigint {
  // two 32-bit halves to stay in fast integer arithmetic; prime 0x100000001b3 = 2^40 + 0x1b3
  let hi = 0xcbf29ce4, lo = 0x84222325;
  for (let i = 0; i < data.length; i++) {
    lo = (lo ^ data[i]) >>> 0;
    // (hi:lo) * 0x1b3 + ((lo << 40) as 64-bit) i.e. hi += lo << 8
    const loMul = lo * 0x1b3;
    const carry = Math.floor(loMul / 0x100000000);
    const newLo = loMul >>> 0;
    hi = (Math.imul(hi, 0x1b3) + carry + ((lo << 8) >>> 0)) >>> 0;
    lo = newLo;
  }
  return (BigInt(hi) << 32n) | BigInt(lo);
}

function writeMeta(
  buf: Uint8Array,
  dv: DataView,
  id: number,
  root: number,
  freelist: number,
  pgid: number,
  txid: number,
) {
  const off = id * PAGE_SIZE;
  writeHeader(dv, off, id, META_PAGE, 0, 0);
  const m = off + PAGE_HEADER;
  dv.setUint32(m, MAGIC, true);
  dv.setUint32(m + 4, VERSION, true);
  dv.setUint32(m + 8, PAGE_SIZE, true);
  dv.setUint32(m + 12, 0, true);
  dv.setBigUint64(m + 16, BigInt(root), true);
  dv.setBigUint64(m + 24, 0n, true);
  dv.setBigUint64(m + 32, BigInt(freelist), true);
  dv.setBigUint64(m + 40, BigInt(pgid), true);
  dv.setBigUint64(m + 48, BigInt(txid), true);
  dv.setBigUint64(m + 56, fnv64a(buf.subarray(m, m + META_SIZE - 8)), true);
}

/**
 * Builds a bbolt file whose root bucket holds `root.buckets` (top-level key/value pairs are not allowed by bbolt and
 * are rejected). Returns the file bytes, a whole number of pages.
 */
export function writeBbolt(root: Iterable<[Uint8Array, BoltBucket]>, opts: BoltWriteOptions = {}): Uint8Array {
  const txid = opts.txid ?? 2;
  if (txid < 2 || txid % 2 !== 0) throw new Error("bbolt writer: txid must be even and >= 2");
  const sink = new PageSink();
  sink.alloc(2); // meta pages 0 and 1
  const free = sink.alloc(1);
  const { inodes } = bucketInodes(sink, { buckets: root });
  const rootPage = writeTree(sink, inodes);
  const pgid = sink.next;
  const out = new Uint8Array(pgid * PAGE_SIZE);
  const dv = new DataView(out.buffer);
  for (const job of sink.jobs) {
    if ("leaf" in job) fillLeaf(out, dv, job.id * PAGE_SIZE, job.id, job.overflow, job.leaf);
    else fillBranch(out, dv, job.id * PAGE_SIZE, job.id, job.overflow, job.branch);
  }
  writeHeader(dv, free * PAGE_SIZE, free, FREELIST_PAGE, 0, 0);
  writeMeta(out, dv, 0, rootPage, free, pgid, txid);
  writeMeta(out, dv, 1, rootPage, free, pgid, txid - 1);
  return out;
}
