/**
 * hostile-seq-server.ts — the server process of the hostile-sequence harness (hostile-seq.ts):
 * one process, one VhostUserServer per device, each serving a real VmpiDevice on
 * `<dir>/<name>.sock`. Every SDU a device hands its channel-1 handler is checked against the
 * well-behaved sender's format (hostile-seq.ts, `writeSdu`): le32 sequence number, then
 * pattern bytes of that sequence; the sequence must go up by one. The attacked device sees junk
 * and only counts it.
 *
 * `node --import tsx hostile-seq-server.ts '<json {dir, names: string[]}>'` prints `READY` once
 * listening. Each `STATS` line on stdin is answered with `STATS <json>` (per device: ok, bad,
 * first bad SDU; connections, disconnects, those that ended with an internal error; the
 * process's RSS). Exits 0 on stdin end.
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { VmpiDevice } from '../../src/vmpi/device.js';
import { checkSdu } from './hostile-seq-format.js';

interface Config {
  dir: string;
  names: string[];
  /** Front-ends one socket serves at once (VhostUserServer's maxConnections; default 1). */
  maxConnections?: Record<string, number>;
}

interface DeviceStats {
  ok: number;
  bad: number;
  firstBad: string | null;
  next: number;
  connections: number;
  disconnects: number;
  /** Connections that ended with cause 'internal_error' (an untyped exception reached the dispatcher or a watcher). */
  internalErrors: number;
  firstInternalError: string | null;
}

const config = JSON.parse(process.argv[2]!) as Config;
const stats: Record<string, DeviceStats> = {};
const servers: VhostUserServer[] = [];
for (const name of config.names) {
  const st: DeviceStats = { ok: 0, bad: 0, firstBad: null, next: 0, connections: 0, disconnects: 0, internalErrors: 0, firstInternalError: null };
  stats[name] = st;
  const server = new VhostUserServer({
    path: join(config.dir, `${name}.sock`),
    maxConnections: config.maxConnections?.[name],
    createDevice: () => {
      const d = new VmpiDevice({ vmpiId: 7 });
      // A new connection of the well-behaved sender starts its sequence again.
      st.next = 0;
      d.bind(1, (sdu) => {
        const why = checkSdu(sdu, st.next);
        if (why === null) {
          st.ok++;
          st.next++;
        } else {
          st.bad++;
          st.firstBad ??= why;
        }
      });
      return d;
    },
  });
  server.on('connection', () => void st.connections++);
  server.on('disconnect', (_conn, reason, cause) => {
    st.disconnects++;
    if (cause === 'internal_error') {
      st.internalErrors++;
      st.firstInternalError ??= reason;
    }
  });
  server.listen();
  servers.push(server);
}
console.log('READY');
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'STATS') console.log(`STATS ${JSON.stringify({ rss: process.memoryUsage.rss(), devices: stats })}`);
});
rl.on('close', () => {
  for (const s of servers) s.close();
  process.exit(0);
});
