/**
 * keeper-worker.ts — a stand-in worker for test/restart/keeper.test.ts, run by a real keeper
 * (src/ops/restart/keeper.ts): it appends one JSON line per start to $KW_OUT saying what came
 * back (LISTEN_PID, names, the eventfd's counter, the memfd's bytes), stores an eventfd and a
 * memfd on its first start through the real sd_notify code, then does what $KW_CONTROL (a file)
 * says: "ok" → READY=1 and wait for SIGTERM; "crash" → exit 1 before READY; "usage" → exit 2;
 * "slow" → wait without READY (a start still going on).
 */
import { appendFileSync, readFileSync, readSync, writeSync } from 'node:fs';
import { native } from '../../src/sys/native.js';
import { sdNotify } from '../../src/ops/notify.js';
import { inheritedFds } from '../../src/ops/restart/fd-store.js';

const got = inheritedFds();
const evt = got.get('evt')?.[0];
const mem = got.get('mem')?.[0];
let memText: string | null = null;
if (mem !== undefined) {
  const b = Buffer.alloc(5);
  readSync(mem, b, 0, 5, 0);
  memText = b.toString();
}
appendFileSync(
  process.env.KW_OUT!,
  JSON.stringify({ pid: process.pid, listenPid: Number(process.env.LISTEN_PID), names: process.env.LISTEN_FDNAMES, evt: evt === undefined ? null : native.eventfdRead(evt), mem: memText }) + '\n',
);
if (evt !== undefined) {
  native.eventfdWrite(evt, 7); // the next worker must read 7 again
} else {
  const e = native.eventfd(0);
  native.eventfdWrite(e, 7);
  sdNotify({ FDSTORE: '1', FDNAME: 'evt' }, { fds: [e] });
  const m = native.memfdCreate('kw', 4096);
  writeSync(m, Buffer.from('hello'), 0, 5, 0);
  sdNotify({ FDSTORE: '1', FDNAME: 'mem' }, { fds: [m] });
}
const control = readFileSync(process.env.KW_CONTROL!, 'utf8').trim();
if (control === 'crash') process.exit(1);
if (control === 'usage') process.exit(2);
if (control !== 'slow') sdNotify({ READY: '1' });
process.on('SIGTERM', () => process.exit(0));
setInterval(() => {}, 1 << 30);
