/**
 * vmpi-device-rig.ts — the set-up the host-device tests over a real vhost-user connection share
 * (vmpi-rx-packed, vmpi-tx-packed, vmpi-tx-held-restart): a VmpiDevice served on a socket in a
 * temp dir, this process connected as the guest driver (vmpi-driver.ts), waiting for the device
 * to be up, comparing delivered records, a receiver that pauses the device when its room runs
 * out, a connection handed over as the restart worker does, and a tx queue started again.
 */
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmpiTestDriver, packRecords, type VmpiTestDriverOptions } from './vmpi-driver.js';
import { sleep, until } from '../dif/helpers.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { Req } from '../../src/vhost-user/protocol.js';
import { stateFromJSON, type ConnectionState } from '../../src/vhost-user/state.js';
import { VmpiDevice, type VmpiDeviceOptions } from '../../src/vmpi/device.js';

export const SDU_LOG2 = 12;
export const MAX_SDU = 2 ** SDU_LOG2;

export interface Rec {
  channel: number;
  sdu: Uint8Array;
}

export interface Served {
  device: VmpiDevice;
  path: string;
  server: VhostUserServer;
}

/** A device (max SDU 2^SDU_LOG2 unless `opts` says) served on `<tmp>/<prefix>XXXX/vm.sock`, one connection. */
export function serveDevice(t: Test, prefix: string, opts: Partial<VmpiDeviceOptions> & { vmpiId: number }): Served {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const device = new VmpiDevice({ maxSduLog2: SDU_LOG2, ...opts });
  const path = join(dir, 'vm.sock');
  const server = new VhostUserServer({ path, createDevice: () => device, maxConnections: 1 });
  server.listen();
  t.teardown(() => server.close());
  return { device, path, server };
}

/** This process as the guest driver on `path` (64-entry queues, max SDU MAX_SDU unless `o` says). */
export async function connect(t: Test, path: string, o: VmpiTestDriverOptions = {}): Promise<VmpiTestDriver> {
  const d = await VmpiTestDriver.connect(path, { queueSize: 64, maxSdu: MAX_SDU, ...o });
  t.teardown(() => d.close());
  return d;
}

/** Wait for the device to see both queues (the handshake's last messages are processed). */
export async function up(device: VmpiDevice): Promise<void> {
  await until(() => device.isUp, 'device up', 5000);
}

/** The first index where `got` and `want` differ (channel, bytes, or one of them ended), or -1. */
export function firstMismatch(got: readonly Rec[], want: readonly Rec[]): number {
  for (let i = 0; i < Math.max(got.length, want.length); i++) {
    const g = got[i];
    const w = want[i];
    if (!g || !w || g.channel !== w.channel || Buffer.compare(g.sdu, w.sdu) !== 0) return i;
  }
  return -1;
}

/**
 * A receiver on `channel` with room for `room.n` SDUs: it takes each SDU it is handed (as the echo
 * responder holds the one that did not fit), then pauses the device until it has room again.
 */
export function pausingReceiver(device: VmpiDevice, channel: number, got: Rec[], room: { n: number }): void {
  device.bind(channel, (sdu, ch) => {
    got.push({ channel: ch, sdu: Uint8Array.prototype.slice.call(sdu) });
    if (--room.n <= 0) device.pause();
  });
}

/** Send `sent` as tx chains of `perChain` records each (the ring has room for them all). */
export function sendChains(t: Test, d: VmpiTestDriver, sent: readonly Rec[], perChain: number): void {
  for (let i = 0; i < sent.length; i += perChain) t.ok(d.sendChain(packRecords(sent.slice(i, i + perChain))), `chain ${i / perChain} offered`);
}

/**
 * Wait until `n` records arrived, give the device `settleMs` more, and check that it stopped
 * there (paused mid-chain) with `chains` tx chains still not returned (held while records wait).
 */
export async function pausedAt(t: Test, d: VmpiTestDriver, got: readonly Rec[], n: number, chains: number, settleMs: number): Promise<void> {
  await until(() => got.length === n, `the first ${n}`, 5000);
  await sleep(settleMs);
  d.harvestTx();
  t.equal(got.length, n, `paused after ${n} records, mid-chain`);
  t.equal(d.txOutstanding, chains, 'the held chain is not returned while its records wait (the ring stays full)');
}

/**
 * In one process, as the restart worker does across two: snapshot the connection of `server`,
 * abandon it, and give back what a new server adopts (`server.adopt(fd, saved)`).
 */
export function handOver(server: VhostUserServer): { saved: ConnectionState; fd: number } {
  const [conn] = [...server.connections];
  const saved = stateFromJSON(conn!.snapshot());
  const fd = conn!.socketFd;
  conn!.abandon();
  return { saved, fd };
}

/** What QEMU does on `cont` after GET_VRING_BASE: the tx queue starts again at `base`. */
export async function restartTxQueue(d: VmpiTestDriver, base: number): Promise<void> {
  await d.fe.setVringState(Req.SET_VRING_BASE, 1, base);
  await d.fe.setVringFd(Req.SET_VRING_ERR, 1, d.tx.errFd);
  await d.fe.setVringFd(Req.SET_VRING_CALL, 1, d.tx.callFd);
  await d.fe.setVringFd(Req.SET_VRING_KICK, 1, d.tx.kickFd);
}
