/**
 * fdstore-child.ts — the service of systemd-fdstore.test.ts, run by a real systemd as a
 * Type=notify unit with a fd store. It stores fds with our own sdNotify (src/ops/notify.ts) and
 * reports what each start got back, as one JSON line appended to argv[2] (a file in a directory
 * bind-mounted from the host: robust against journal rate limits and ordering).
 *
 * First start (no $LISTEN_FDS): an eventfd with counter 5 ("evt"), a memfd holding MEMFD_TEXT
 * ("mem"), another eventfd ("spare"), one end of a socket pair ("sock-hup") and of another one
 * with FDPOLL=0 ("sock-nopoll"), whose other ends this process keeps (so a kill hangs them up),
 * each stored with FDSTORE=1 + FDNAME; and one more eventfd
 * sent with the raw addon under the invalid name "bad:name" (what systemd does with it is part of
 * the test; our sdNotify refuses that name). Every later start: report the fds by name, add 1 to
 * "evt"'s counter, and remove "spare" from the store (FDSTOREREMOVE=1) if it came back. Then
 * READY=1, and wait to be killed.
 */
import { appendFileSync, readlinkSync, readSync, writeSync } from 'node:fs';
import { native } from '../../src/sys/native.js';
import { NotifyError, notifySocket, sdNotify } from '../../src/ops/notify.js';
import { MEMFD_TEXT, type FdReport, type StartReport } from './fdstore-format.js';


const out = process.argv[2]!;
const report: StartReport = {
  pid: process.pid,
  listenPid: process.env.LISTEN_PID ?? null,
  listenFds: process.env.LISTEN_FDS ?? null,
  listenFdNames: process.env.LISTEN_FDNAMES ?? null,
  fds: [],
  removed: [],
};

function notify(fields: Record<string, string>, fds?: number[]): void {
  if (!sdNotify(fields, fds ? { fds } : {})) throw new Error('no NOTIFY_SOCKET: not run by systemd as Type=notify');
}

const peers: number[] = [];
try {
  const mine = report.listenPid === String(process.pid);
  const n = mine ? Number(report.listenFds ?? '0') : 0;
  if (n === 0) {
    const evt = native.eventfd(5);
    notify({ FDSTORE: '1', FDNAME: 'evt' }, [evt]);
    const mem = native.memfdCreate('vmpi-fdstore-test', 4096);
    writeSync(mem, Buffer.from(MEMFD_TEXT), 0, MEMFD_TEXT.length, 0);
    notify({ FDSTORE: '1', FDNAME: 'mem' }, [mem]);
    notify({ FDSTORE: '1', FDNAME: 'spare' }, [native.eventfd(1)]);
    // Socket ends whose peers only this process holds: a SIGKILL hangs them up.
    const [hup, hupPeer] = native.socketpairSeqpacket();
    notify({ FDSTORE: '1', FDNAME: 'sock-hup' }, [hup]);
    const [nopoll, nopollPeer] = native.socketpairSeqpacket();
    notify({ FDSTORE: '1', FDNAME: 'sock-nopoll', FDPOLL: '0' }, [nopoll]);
    peers.push(hupPeer, nopollPeer);
    try {
      sdNotify({ FDSTORE: '1', FDNAME: 'bad:name' }, { fds: [native.eventfd(2)] });
    } catch (e) {
      const err = e as NotifyError;
      report.refused = { name: err.name, code: err.code, message: err.message };
    }
    const raw = Buffer.from('FDSTORE=1\nFDNAME=bad:name\n');
    native.sendDgramUnix(notifySocket()!, raw, 0, raw.length, [native.eventfd(3)]);
  } else {
    const names = (report.listenFdNames ?? '').split(':');
    for (let i = 0; i < n; i++) {
      const fd = 3 + i;
      const r: FdReport = { name: names[i] ?? '?', fd, kind: readlinkSync(`/proc/self/fd/${fd}`) };
      if (r.kind === 'anon_inode:[eventfd]') {
        r.counter = native.eventfdRead(fd);
        if (r.name === 'evt') native.eventfdWrite(fd, r.counter + 1);
      } else if (r.kind.startsWith('/memfd:')) {
        const buf = Buffer.alloc(MEMFD_TEXT.length);
        r.text = buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
      }
      report.fds.push(r);
    }
    if (names.includes('spare')) {
      notify({ FDSTOREREMOVE: '1', FDNAME: 'spare' });
      report.removed.push('spare');
    }
  }
} catch (e) {
  report.error = (e as Error).stack ?? String(e);
}
// The report first: once READY=1 is processed the test may kill us.
appendFileSync(out, JSON.stringify(report) + '\n');
notify({ READY: '1', STATUS: `started with ${report.listenFds ?? 0} fds` });
// Stay up until the test kills us.
setInterval(() => {}, 1 << 30);
