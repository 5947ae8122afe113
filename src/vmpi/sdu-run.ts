/**
 * sdu-run.ts — the PortSduBatch (port.ts) the VMPI ports hand to batch handlers: offsets and
 * lengths into the port's receive buffer, reused for every batch (no allocation per SDU or per
 * batch); a view per SDU only for whoever asks for it (sdu(i)), from the buffer's reused views
 * (sdu-views.ts), as the one-SDU handlers get theirs.
 */
import { SduList } from '../sys/sdu-list.js';
import type { PortSduBatch } from './port.js';
import { SduViews } from './sdu-views.js';

export class SduRun extends SduList implements PortSduBatch {
  readonly buffer: Uint8Array;
  private readonly views: SduViews;

  /** Room for `capacity` SDUs per batch, over `buffer`. */
  constructor(buffer: Uint8Array, capacity: number) {
    super(capacity);
    this.buffer = buffer;
    this.views = new SduViews(buffer);
  }

  sdu(i: number): Uint8Array {
    const at = this.offsets[i]!;
    return this.views.view(at, at + this.lengths[i]!);
  }
}
