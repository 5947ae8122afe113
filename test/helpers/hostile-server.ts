/**
 * hostile-server.ts — vhost-user servers in a child process, for the hostile front-end tests
 * (test/vhost-user-hostile.test.ts): a server that crashes, aborts or blocks its event loop then
 * shows as this process dying or not answering, and the tap runner lives to say so.
 *
 * `node --import tsx hostile-server.ts '<json ServerChildConfig>'` starts one VhostUserServer per
 * entry, each on `<dir>/<name>.sock`, with a loopback device (test/frontend/loopback-device.ts) or
 * a VMPI device (src/vmpi/device.ts); `inject` makes chosen device callbacks or server listeners
 * throw plain Errors (see Inject). Prints `READY` once listening, then one line per event:
 * `DISCONNECT <json>`, `SDUS <name> <n>` every 100 SDUs a VMPI device hands its channel-1 handler.
 * Exits 0 on stdin end (after closing every server).
 */
import { join } from 'node:path';
import type { ReadyQueue, VhostUserDevice } from '../../src/vhost-user/device.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { VmpiDevice } from '../../src/vmpi/device.js';
import { LoopbackDevice } from '../frontend/loopback-device.js';

/**
 * Where to throw. Device methods throw once the device is armed, i.e. from its first kick that
 * finds buffers on (the handshake runs clean); 'kicked' throws from that kick. 'defer' makes the first kick
 * schedule ReadyQueue.defer work that throws. 'connectionListener' / 'closeListener' add
 * listeners to the server's / each connection's events that throw. 'sduHandler' (VMPI device):
 * the channel-1 handler throws at the 300th SDU, i.e. in the device's deferred batch (its first
 * batch takes 256).
 */
export type Inject = 'kicked' | 'queueStopped' | 'reset' | 'defer' | 'connectionListener' | 'closeListener' | 'sduHandler';

export interface ServerChildEntry {
  name: string;
  device?: 'loopback' | 'vmpi';
  inject?: Inject[];
  allowUnsealedMemory?: boolean;
}

export interface ServerChildConfig {
  dir: string;
  servers: ServerChildEntry[];
}

class Injected extends Error {
  override name = 'InjectedError';
}

/** A loopback device whose chosen callbacks throw once it is armed. */
class ThrowingLoopback extends LoopbackDevice {
  private armed = false;
  constructor(private readonly injected: Set<Inject>) {
    super({ name: 'hostile-loopback' });
  }
  override kicked(index: number): void {
    // Armed by the first kick that finds buffers: the handshake's kicks find none.
    const first = !this.armed;
    if (!this.armed && (this.queues[index]?.vq.pending() ?? 0) === 0) return super.kicked(index);
    this.armed = true;
    if (this.injected.has('kicked')) throw new Injected(`injected: kicked(${index})`);
    if (first && this.injected.has('defer')) {
      const q: ReadyQueue | null = this.queues[index] ?? null;
      q?.defer(() => {
        throw new Injected(`injected: deferred work of queue ${index}`);
      });
    }
    super.kicked(index);
  }
  override queueStopped(index: number): void {
    super.queueStopped(index);
    if (this.armed && this.injected.has('queueStopped')) throw new Injected(`injected: queueStopped(${index})`);
  }
  override reset(reason: string): void {
    super.reset(reason);
    if (this.armed && this.injected.has('reset')) throw new Injected(`injected: reset(${reason})`);
  }
}

function makeDevice(e: ServerChildEntry, inject: Set<Inject>): VhostUserDevice {
  if (e.device !== 'vmpi') return new ThrowingLoopback(inject);
  const d = new VmpiDevice({ vmpiId: 7 });
  let n = 0;
  d.bind(1, () => {
    n++;
    if (n % 100 === 0) console.log(`SDUS ${e.name} ${n}`);
    if (n === 300 && inject.has('sduHandler')) throw new Injected('injected: SDU handler');
  });
  return d;
}

const config = JSON.parse(process.argv[2]!) as ServerChildConfig;
const servers: VhostUserServer[] = [];
for (const e of config.servers) {
  const inject = new Set(e.inject ?? []);
  const server = new VhostUserServer({
    path: join(config.dir, `${e.name}.sock`),
    createDevice: () => makeDevice(e, inject),
    allowUnsealedMemory: e.allowUnsealedMemory,
  });
  server.on('disconnect', (_conn, reason, cause) => console.log(`DISCONNECT ${JSON.stringify({ server: e.name, reason, cause })}`));
  if (inject.has('connectionListener')) {
    server.on('connection', () => {
      throw new Injected("injected: 'connection' listener");
    });
  }
  if (inject.has('closeListener')) {
    server.on('connection', (conn) =>
      conn.on('close', () => {
        throw new Injected("injected: 'close' listener");
      }),
    );
  }
  server.listen();
  servers.push(server);
}
console.log('READY');
process.stdin.resume();
process.stdin.on('end', () => {
  for (const s of servers) s.close();
  process.exit(0);
});
