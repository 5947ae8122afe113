/**
 * fd-exhaustion-child.ts — run by fd-exhaustion.test.ts in a child process whose RLIMIT_NOFILE is
 * lowered (prlimit): an IPC daemon hosting a shim IPC process (in-memory port pair, the guest end
 * accepting every flow to "srv") and a metrics endpoint. Commands on stdin, one per line:
 *   fill   open eventfds until EMFILE (the process has no fd left)
 *   free   close them again
 *   stats  print the daemon's and the metrics server's stats
 * Every answer is one JSON line on stdout. Logs (JSON) go to stderr.
 */
import { IpcDaemon } from '../../src/dif/ipc/daemon.js';
import { ShimHvIpcp } from '../../src/dif/shim-hv/ipcp.js';
import { HostMetrics, startMetricsServer } from '../../src/ops/metrics.js';
import { VmpiHost } from '../../src/vmpi/host.js';
import { createPortPair } from '../dif/port-pair.js';
import { fillCommands, say } from '../helpers/limited-child.js';

const socketPath = process.argv[2]!;
const pair = createPortPair({ vmpiId: 7 });
const hostIpcp = new ShimHvIpcp({ port: pair.host, role: 'host' });
const guestIpcp = new ShimHvIpcp({ port: pair.guest, role: 'guest' });
guestIpcp.register('srv', (req) => req.accept());
const daemon = new IpcDaemon({ socketPath });
daemon.addIpcp(hostIpcp);
daemon.listen();
const host = new VmpiHost();
const metrics = new HostMetrics(host, { processMetrics: false });
// Optional calls: the same child runs against an older daemon to show what the test catches.
metrics.addIpcDaemon?.(daemon);
const server = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });

process.on('unhandledRejection', (e) => {
  process.stderr.write(`UNHANDLED REJECTION: ${String(e)}\n`);
  process.exit(70);
});

fillCommands((line) => {
  if (line === 'stats') say({ daemon: daemon.stats, metrics: server.stats ?? {}, flows: hostIpcp.flows().length });
});
say({ ready: true, metricsPort: server.address.port });
