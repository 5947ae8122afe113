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
import { IpcClient, type IpcClientOptions } from '../../src/dif/ipc/client.js';
import { FramedConn } from '../../src/dif/ipc/conn.js';
import { native } from '../../src/sys/native.js';
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
  /** A client of the host daemon (`opts`: e.g. `{rings: false}` for the socket data path). */
  hostClient(opts?: IpcClientOptions): Promise<IpcClient>;
  guestClient(opts?: IpcClientOptions): Promise<IpcClient>;
}

/** Every test that sets up daemons fails after this long ('timeout!') instead of hanging: the bound on its request awaits. */
export const TEST_TIMEOUT_MS = 30_000;

export function ipcSetup(t: Test, opts: { pair?: PortPairOptions; ipcp?: Partial<ShimHvIpcpOptions>; daemon?: Partial<IpcDaemonOptions>; timeoutMs?: number } = {}): IpcSetup {
  t.setTimeout(opts.timeoutMs ?? TEST_TIMEOUT_MS);
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
  const client = async (d: IpcDaemon, o?: IpcClientOptions): Promise<IpcClient> => {
    const c = await IpcClient.connect(d.socketPath, o);
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
  return { pair, hostIpcp, guestIpcp, hostDaemon, guestDaemon, dir, hostClient: (o) => client(hostDaemon, o), guestClient: (o) => client(guestDaemon, o) };
}

export async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** `p`, or a rejection saying what did not happen after `ms`. */
export function within<T>(p: Promise<T>, what: string, ms = 3000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** The arguments of the next `event` of `emitter`, or a rejection naming it after `ms`. */
export function nextEvent<A extends unknown[] = unknown[]>(emitter: { once(event: string, fn: (...args: A) => void): unknown }, event: string, what: string, ms = 3000): Promise<A> {
  return within(new Promise<A>((resolve) => emitter.once(event, (...args: A) => resolve(args))), what, ms);
}

export function pattern(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/**
 * A raw session to the daemon at `socketPath` (no client library): `raw(body)` sends one frame
 * of any bytes, `next()` waits (bounded) for the daemon's next message; closed at the end of `t`.
 */
export function rawSession(t: Test, socketPath: string): { fd: number; conn: FramedConn; replies: Record<string, unknown>[]; raw(body: string | Uint8Array): void; next(): Promise<Record<string, unknown>> } {
  const fd = native.connectUnix(socketPath);
  const conn = new FramedConn(fd, 8);
  t.teardown(() => conn.close());
  const replies: Record<string, unknown>[] = [];
  conn.on('message', (m) => replies.push(m));
  return {
    fd,
    conn,
    replies,
    raw(body) {
      const frame = ipcFrame(body);
      t.equal(native.sendMsg(fd, frame, 0, frame.byteLength, null), frame.byteLength);
    },
    async next() {
      await until(() => replies.length > 0, 'a reply');
      return replies.shift()!;
    },
  };
}

/** One IPC frame as the daemon reads it: a u32 big-endian length, then the body. */
export function ipcFrame(body: string | Uint8Array): Buffer {
  const b = Buffer.from(body);
  const frame = Buffer.alloc(4 + b.byteLength);
  frame.writeUInt32BE(b.byteLength, 0);
  b.copy(frame, 4);
  return frame;
}
