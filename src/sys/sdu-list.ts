/**
 * sdu-list.ts — many SDUs as offsets and lengths into one buffer: the shape every batch of the
 * data path has (a VMPI port's run of one channel's records, a flow's 'sdus' batch), and the
 * fixed-capacity list both fill without an allocation per SDU or per batch.
 *
 * Owns: the interface (`SduSpans`: vmpi/port.ts's PortSduBatch and dif/api.ts's SduBatch are this
 * shape, so a shim IPC process hands a port's batch to its flow as it is) and the list's storage
 * (`SduList`: offsets, lengths, count, bytes, add, clear). How SDU i becomes a view is the
 * subclass's (vmpi/sdu-run.ts: reused views; dif/sdu-batch.ts: subarray).
 */

/** SDU i is buffer[offset(i), offset(i) + length(i)), in arrival order. */
export interface SduSpans {
  /** SDUs in the batch (≥ 1 when handed over). */
  readonly count: number;
  /** Their bytes, in total. */
  readonly bytes: number;
  /** The bytes the SDUs lie in (valid only during the call that hands the batch over). */
  readonly buffer: Uint8Array;
  /** Where SDU i starts in `buffer`. */
  offset(i: number): number;
  /** SDU i's length. */
  length(i: number): number;
  /** SDU i as a view of `buffer`. */
  sdu(i: number): Uint8Array;
}

/** The storage of a reused batch: room for `capacity` SDUs, filled with add(), emptied with clear(). */
export abstract class SduList implements SduSpans {
  abstract readonly buffer: Uint8Array;
  count = 0;
  bytes = 0;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;

  constructor(readonly capacity: number) {
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
  }

  offset(i: number): number {
    return this.offsets[i]!;
  }

  length(i: number): number {
    return this.lengths[i]!;
  }

  abstract sdu(i: number): Uint8Array;

  /** Start a new batch (over the same buffer). */
  clear(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Add buffer[at, at + len); false when full. */
  add(at: number, len: number): boolean {
    if (this.count === this.capacity) return false;
    this.offsets[this.count] = at;
    this.lengths[this.count] = len;
    this.count++;
    this.bytes += len;
    return true;
  }
}
