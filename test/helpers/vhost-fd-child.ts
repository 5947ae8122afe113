/**
 * vhost-fd-child.ts — run by vhost-user-fd-exhaustion.test.ts under a lowered RLIMIT_NOFILE (see
 * limited-child.ts): one VhostUserServer (loopback device, up to 8 front-ends) on argv[2].
 * Commands: `fill`, `free`, `stats`.
 */
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { LoopbackDevice } from '../frontend/loopback-device.js';
import { fillCommands, say } from './limited-child.js';

const server = new VhostUserServer({ path: process.argv[2]!, createDevice: () => new LoopbackDevice({ name: 'fdx' }), maxConnections: 8 }).listen();
fillCommands((line) => {
  if (line === 'stats') say({ stats: { connections: server.connections.size, acceptErrors: server.acceptErrors } });
});
say({ ready: true });
