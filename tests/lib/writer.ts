/**
 * A steady writer for membership tests: puts `<prefix><seq>` one after another through the npm etcd3 client (a stock
 * client, with its own fail-over between hosts) until stopped, remembering which puts were acknowledged and when.
 */
import { Etcd3 } from "etcd3";

/** How long one put may take before it counts as failed (not acknowledged). */
const PUT_TIMEOUT_MS = 5000;
/** Pause between two puts: a steady trickle, not a benchmark. */
const PAUSE_MS = 20;

/** What the writer saw. */
export interface WriterResult {
  /** sequence numbers whose put was acknowledged */
  acked: number[];
  /** wall-clock time of each acknowledgement, in the order of `acked` */
  ackedAt: number[];
  failed: number;
  firstErrors: string[];
}

/** A running writer. */
export class Writer {
  readonly result: WriterResult = { acked: [], ackedAt: [], failed: 0, firstErrors: [] };
  #client: Etcd3;
  #stopped = false;
  #loop: Promise<void>;

  constructor(hosts: string[], readonly prefix: string) {
    this.#client = new Etcd3({ hosts, dialTimeout: 2000 });
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    for (let seq = 0; !this.#stopped; seq++) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await Promise.race([
          this.#client.put(`${this.prefix}${seq}`).value(String(seq)),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("put timed out")), PUT_TIMEOUT_MS))),
        ]);
        this.result.acked.push(seq);
        this.result.ackedAt.push(Date.now());
      } catch (err) {
        this.result.failed++;
        if (this.result.firstErrors.length < 5) this.result.firstErrors.push((err as Error).message);
      } finally {
        clearTimeout(timer);
      }
      await new Promise((r) => setTimeout(r, PAUSE_MS));
    }
  }

  /** Acknowledged puts after wall-clock time `t`. */
  ackedSince(t: number): number {
    return this.result.ackedAt.filter((at) => at > t).length;
  }

  /** Stops after the put in flight; resolves with what it saw. */
  async stop(): Promise<WriterResult> {
    this.#stopped = true;
    await this.#loop;
    this.#client.close();
    return this.result;
  }
}
