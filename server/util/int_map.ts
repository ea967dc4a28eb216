/**
 * A map from integer keys in [0, 2^31) (HTTP/2 stream IDs) to values: open addressing, linear probing, deletion by
 * shifting later entries back. Adding and deleting short-lived keys allocates nothing once the table has grown to the
 * most keys held at once.
 *
 * Why not a Map: V8's Map leaves a hole per delete and copies its table whenever the holes fill it, so a steady flow
 * of short-lived keys (one per request) makes a new table every few requests. Those tables often outlive two
 * scavenges and then die in the old generation: in a heap sampling of 2,000 paced puts/s on one member, the stream
 * table's copies were a sixth of all bytes the major collector freed, and every major collection held the event loop
 * for about 10 ms.
 */

const EMPTY = -1;
const MIN_CAPACITY = 16;

export class IntMap<V> {
  #keys: Int32Array = new Int32Array(MIN_CAPACITY).fill(EMPTY);
  #values: (V | undefined)[] = new Array(MIN_CAPACITY).fill(undefined);
  #shift = 32 - Math.log2(MIN_CAPACITY);
  #size = 0;
  /**
   * Multiply-shift hashing with a random odd multiplier of this table's own: keys with a common stride spread over the
   * table, and a peer that picks its stream IDs cannot aim them at one run of slots without knowing the multiplier.
   */
  readonly #multiplier = (Math.random() * 2 ** 32) | 1;

  /** How many keys are held. */
  get size(): number {
    return this.#size;
  }

  /** The home slot of `key`. */
  #home(key: number): number {
    return Math.imul(key, this.#multiplier) >>> this.#shift;
  }

  #slot(key: number): number {
    const keys = this.#keys, mask = keys.length - 1;
    for (let i = this.#home(key);; i = (i + 1) & mask) {
      const k = keys[i];
      if (k === key) return i;
      if (k === EMPTY) return -1;
    }
  }

  get(key: number): V | undefined {
    const i = this.#slot(key);
    return i < 0 ? undefined : this.#values[i];
  }

  has(key: number): boolean {
    return this.#slot(key) >= 0;
  }

  set(key: number, value: V): this {
    if (!(key >= 0 && key <= 0x7fffffff && Number.isInteger(key))) throw new RangeError(`IntMap key ${key}`);
    if ((this.#size + 1) * 2 > this.#keys.length) this.#grow();
    const keys = this.#keys, mask = keys.length - 1;
    let i = this.#home(key);
    for (; keys[i] !== EMPTY; i = (i + 1) & mask) {
      if (keys[i] === key) {
        this.#values[i] = value;
        return this;
      }
    }
    keys[i] = key;
    this.#values[i] = value;
    this.#size++;
    return this;
  }

  delete(key: number): boolean {
    let i = this.#slot(key);
    if (i < 0) return false;
    const keys = this.#keys, values = this.#values, mask = keys.length - 1;
    // shift back each later entry of the run whose home is not between the hole and it (cyclically)
    for (let j = (i + 1) & mask; keys[j] !== EMPTY; j = (j + 1) & mask) {
      const home = this.#home(keys[j]);
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      keys[i] = keys[j];
      values[i] = values[j];
      i = j;
    }
    keys[i] = EMPTY;
    values[i] = undefined;
    this.#size--;
    return true;
  }

  /** The values, as an array of their own (the map may change while the caller goes through it). */
  values(): V[] {
    const out: V[] = [];
    const keys = this.#keys, values = this.#values;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== EMPTY) out.push(values[i]!);
    return out;
  }

  clear(): void {
    this.#keys.fill(EMPTY);
    this.#values.fill(undefined);
    this.#size = 0;
  }

  #grow(): void {
    const oldKeys = this.#keys, oldValues = this.#values;
    const capacity = oldKeys.length * 2;
    this.#keys = new Int32Array(capacity).fill(EMPTY);
    this.#values = new Array(capacity).fill(undefined);
    this.#shift--;
    this.#size = 0;
    for (let i = 0; i < oldKeys.length; i++) if (oldKeys[i] !== EMPTY) this.set(oldKeys[i], oldValues[i]!);
  }
}
