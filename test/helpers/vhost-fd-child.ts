/**
 * vhost-fd-child.ts — run by vhost-user-fd-exhaustion.test.ts in a child whose RLIMIT_NOFILE is
 * lowered (prlimit): one VhostUserServer (loopback device, up to 8 front-ends) on argv[2].
 * Commands on stdin: `fill` (open eventfds until EMFILE), `free` (close them), `stats`. Answers
 * are JSON lines on stdout; logs (JSON) on stderr.
 */
import { createInterface } from 'node:readline';
import { native } from '../../src/native.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { LoopbackDevice } from '../frontend/loopback-device.js';

const server = new VhostUserServer({ path: process.argv[2]!, createDevice: () => new LoopbackDevice({ name: 'fdx' }), maxConnections: 8 }).listen();
const filler: number[] = [];
const say = (o: object): void => void process.stdout.write(JSON.stringify(o) + '\n');
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'fill') {
    for (;;) {
      try {
        filler.push(native.eventfd(0));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EMFILE') throw e;
        break;
      }
    }
    say({ filled: filler.length });
  } else if (line === 'free') {
    for (const fd of filler.splice(0)) native.close(fd);
    say({ freed: true });
  } else if (line === 'stats') {
    say({ stats: { connections: server.connections.size, acceptErrors: server.acceptErrors } });
  }
});
say({ ready: true });
