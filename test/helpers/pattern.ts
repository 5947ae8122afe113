/**
 * pattern.ts — the test pattern and CRC-32 that guest-driver/tools/vmpi-perf uses
 * (docs/DEVICE.md, "Test pattern"), so host-side tests generate and verify the same SDUs.
 *
 * SDU number `seq` on channel `ch`, `size` bytes: byte[i] = (i + 7*seq + 13*ch) mod 256, then,
 * if size >= 8, bytes 0..3 = seq (le32) and bytes 4..7 = ch (le32).
 */

export function patternSdu(channel: number, seq: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  const base = (7 * seq + 13 * channel) & 0xff;
  for (let i = 0; i < size; i++) b[i] = (i + base) & 0xff;
  if (size >= 8) {
    const dv = new DataView(b.buffer);
    dv.setUint32(0, seq >>> 0, true);
    dv.setUint32(4, channel >>> 0, true);
  }
  return b;
}

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Running IEEE CRC-32: pass the previous value (0 to start). */
export function crc32(data: Uint8Array, prev = 0): number {
  let c = ~prev >>> 0;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** Parse vmpi-perf's `RESULT k=v ...` / `ERROR ...` lines. */
export function parseResults(output: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const line of output.split(/\r?\n/)) {
    const m = /^(RESULT|ERROR) (.*)$/.exec(line.trim());
    if (!m) continue;
    const rec: Record<string, string> = { kind: m[1]! };
    for (const kv of m[2]!.matchAll(/(\w+)=("([^"]*)"|\S+)/g)) rec[kv[1]!] = kv[3] ?? kv[2]!;
    out.push(rec);
  }
  return out;
}
