/**
 * hostile-seq-format.ts — the SDU format of the hostile-sequence harness's well-behaved sender:
 * le32 sequence number, then bytes `(seq * 7 + k) & 0xff`. Written by the sender (hostile-seq.ts),
 * checked by the server child (hostile-seq-server.ts).
 */

/** Fill `out` (the SDU, without the VMPI frame header) for sequence number `seq`. */
export function writeSdu(out: Uint8Array, seq: number): void {
  new DataView(out.buffer, out.byteOffset, 4).setUint32(0, seq >>> 0, true);
  const base = (seq * 7) & 0xff;
  for (let k = 4; k < out.length; k++) out[k] = (base + k) & 0xff;
}

/** Null when `sdu` is sequence number `expect` intact, else what is wrong. */
export function checkSdu(sdu: Uint8Array, expect: number): string | null {
  if (sdu.length < 4) return `SDU of ${sdu.length} bytes, expected >= 4`;
  const seq = new DataView(sdu.buffer, sdu.byteOffset, 4).getUint32(0, true);
  if (seq !== expect >>> 0) return `SDU with sequence ${seq}, expected ${expect}`;
  const base = (seq * 7) & 0xff;
  for (let k = 4; k < sdu.length; k++) if (sdu[k] !== ((base + k) & 0xff)) return `SDU ${seq}: byte ${k} is ${sdu[k]}, expected ${(base + k) & 0xff}`;
  return null;
}
