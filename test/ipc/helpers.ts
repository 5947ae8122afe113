/**
 * helpers.ts — two IPC daemons, each hosting one shim IPC process for hypervisors, the two joined
 * by an in-memory port pair (test/dif/port-pair.ts): a host daemon and a "guest" daemon on
 * temporary sockets, for the IPC API tests.
 */
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ShimHvIpcp, type ShimHvIpcpOptions } from '../../src/dif/shim-hv/ipcp.js';
import { IpcDaemon, type IpcDaemonOptions } from '../../src/dif/ipc/daemon.js';
import { IpcClient } from '../../src/dif/ipc/client.js';
import { createPortPair, type PortPair, type PortPairOptions } from '../dif/port-pair.js';

export const DIF = 'hv.vmpi-7';

export interface IpcSetup {
  pair: PortPair;
  hostIpcp: ShimHvIpcp;
  guestIpcp: ShimHvIpcp;
  hostDaemon: IpcDaemon;
  guestDaemon: IpcDaemon;
  dir: string;
  /** A client of the host daemon (closed at teardown). */
  hostClient(): Promise<IpcClient>;
  guestClient(): Promise<IpcClient>;
}

export function ipcSetup(t: Test, opts: { pair?: PortPairOptions; ipcp?: Partial<ShimHvIpcpOptions>; daemon?: Partial<IpcDaemonOptions> } = {}): IpcSetup {
  const dir = mkdtempSync(join(tmpdir(), 'vmpi-ipc-'));
  const pair = createPortPair(opts.pair);
  const hostIpcp = new ShimHvIpcp({ port: pair.host, role: 'host', ...opts.ipcp });
  const guestIpcp = new ShimHvIpcp({ port: pair.guest, role: 'guest', ...opts.ipcp });
  const hostDaemon = new IpcDaemon({ ...opts.daemon, socketPath: join(dir, 'host', 'ipc.sock') });
  const guestDaemon = new IpcDaemon({ ...opts.daemon, socketPath: join(dir, 'guest', 'ipc.sock') });
  hostDaemon.addIpcp(hostIpcp);
  guestDaemon.addIpcp(guestIpcp);
  hostDaemon.listen();
  guestDaemon.listen();
  const clients: IpcClient[] = [];
  const client = async (d: IpcDaemon): Promise<IpcClient> => {
    const c = await IpcClient.connect(d.socketPath);
    clients.push(c);
    return c;
  };
  t.teardown(() => {
    for (const c of clients) c.close();
    hostDaemon.close();
    guestDaemon.close();
    hostIpcp.close();
    guestIpcp.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { pair, hostIpcp, guestIpcp, hostDaemon, guestDaemon, dir, hostClient: () => client(hostDaemon), guestClient: () => client(guestDaemon) };
}

export async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

export function pattern(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}
