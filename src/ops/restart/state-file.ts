/**
 * state-file.ts — the restart state document, kept in a memfd that outlives the process.
 *
 * Owns: the memfd's layout and its crash safety. The memfd sits in the fd store (fd-store.ts)
 * under STATE_NAME, so a new worker reads it at once, whoever holds it. Two slots: each write
 * goes to the slot the last good write did not use, with a header (magic, generation, length,
 * CRC-32 of the JSON) written in the same call; a write torn by a SIGKILL (a write to tmpfs can
 * be cut short by a fatal signal) fails its CRC and the reader takes the other slot. So a reader
 * always gets the last document whose write completed, or the one before it.
 */
import { fstatSync, readSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { native } from '../../sys/native.js';

const MAGIC = 0x54534d56; // "VMST", little-endian
const HEADER = 16; // magic u32, generation u32, length u32, crc32 u32
/** Bytes per slot; a document must fit in one (the memfd is sparse: unused pages cost nothing). */
export const SLOT_BYTES = 8 * 1024 * 1024;

export class StateFileError extends Error {
  override name = 'StateFileError';
  constructor(
    message: string,
    readonly code: 'too_large' | 'io_error',
  ) {
    super(message);
  }
}

export class StateFile {
  private generation = 0;

  private constructor(readonly fd: number) {}

  /** A new, empty state memfd. */
  static create(): StateFile {
    return new StateFile(native.memfdCreate('vmpi-state', 2 * SLOT_BYTES));
  }

  /** The memfd a previous process left (from the store); read() says what it holds. */
  static open(fd: number): StateFile {
    const f = new StateFile(fd);
    f.generation = f.latest()?.generation ?? 0;
    return f;
  }

  /** The newest complete document, or undefined when none was ever written (or none is whole). */
  read(): { generation: number; text: string } | undefined {
    return this.latest();
  }

  /** Write `text` as the next generation. Throws StateFileError. */
  write(text: string): number {
    const body = Buffer.from(text, 'utf8');
    if (HEADER + body.length > SLOT_BYTES) {
      throw new StateFileError(`the restart state is ${body.length} bytes, over the ${SLOT_BYTES - HEADER}-byte slot; it was not saved (a restart now would resume the previous state)`, 'too_large');
    }
    const gen = (this.generation + 1) >>> 0;
    const buf = Buffer.allocUnsafe(HEADER + body.length);
    buf.writeUInt32LE(MAGIC, 0);
    buf.writeUInt32LE(gen, 4);
    buf.writeUInt32LE(body.length, 8);
    buf.writeUInt32LE(crc32(body), 12);
    body.copy(buf, HEADER);
    try {
      let off = 0;
      while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off, (gen % 2) * SLOT_BYTES + off);
    } catch (e) {
      throw new StateFileError(`cannot write the restart state: ${(e as Error).message}`, 'io_error');
    }
    this.generation = gen;
    return gen;
  }

  private latest(): { generation: number; text: string } | undefined {
    let best: { generation: number; text: string } | undefined;
    let size: number;
    try {
      size = fstatSync(this.fd).size;
    } catch {
      return undefined;
    }
    for (const slot of [0, 1]) {
      const base = slot * SLOT_BYTES;
      if (base + HEADER > size) continue;
      const h = Buffer.alloc(HEADER);
      if (readSync(this.fd, h, 0, HEADER, base) !== HEADER || h.readUInt32LE(0) !== MAGIC) continue;
      const gen = h.readUInt32LE(4);
      const len = h.readUInt32LE(8);
      if (len > SLOT_BYTES - HEADER) continue;
      const body = Buffer.alloc(len);
      if (readSync(this.fd, body, 0, len, base + HEADER) !== len || crc32(body) !== h.readUInt32LE(12)) continue;
      // Generations wrap at 2^32: the newer of two is the one ahead by less than half the range.
      if (!best || ((gen - best.generation) >>> 0) < 0x80000000) best = { generation: gen, text: body.toString('utf8') };
    }
    return best;
  }
}
