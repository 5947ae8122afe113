/**
 * util.ts — small helpers shared by the fuzz targets (printing inputs, byte mutations).
 */
import fc from 'fast-check';

/** Bytes as printable text (UTF-8 when it is, else hex) for failure reports and corpus files. */
export function hex(b: Uint8Array): string {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(b);
  const printable = /^[\x20-\x7e\n\t]*$/.test(text);
  return printable ? `text:${JSON.stringify(text)}` : `hex:${Buffer.from(b).toString('hex')}`;
}

/** Parse what `hex` printed. */
export function unhex(s: string): Uint8Array {
  if (s.startsWith('text:')) return new TextEncoder().encode(JSON.parse(s.slice(5)) as string);
  if (s.startsWith('hex:')) return new Uint8Array(Buffer.from(s.slice(4), 'hex'));
  throw new Error(`not a printed byte string: ${s.slice(0, 20)}`);
}

export type Mutation = { kind: 'flip'; at: number; bit: number } | { kind: 'set'; at: number; value: number } | { kind: 'cut'; at: number } | { kind: 'insert'; at: number; bytes: Uint8Array };

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }),
);

/** Apply mutations to a copy of `b`. */
export function mutate(b: Uint8Array, ms: readonly Mutation[]): Uint8Array {
  let out = Uint8Array.from(b);
  for (const m of ms) {
    const at = out.length === 0 ? 0 : m.at % (out.length + (m.kind === 'insert' ? 1 : 0));
    switch (m.kind) {
      case 'flip':
        if (out.length) out[at] = out[at]! ^ (1 << m.bit);
        break;
      case 'set':
        if (out.length) out[at] = m.value;
        break;
      case 'cut':
        out = out.slice(0, at);
        break;
      case 'insert': {
        const n = new Uint8Array(out.length + m.bytes.length);
        n.set(out.subarray(0, at));
        n.set(m.bytes, at);
        n.set(out.subarray(at), at + m.bytes.length);
        out = n;
        break;
      }
    }
  }
  return out;
}
