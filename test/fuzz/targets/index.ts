/**
 * index.ts — the registry of fuzz targets, in the order `npm run fuzz` runs them.
 */
import type { FuzzTarget } from '../runner.js';
import { configTarget } from './config.js';
import { cdapTarget, normalPduTarget } from './normal-pdu.js';
import { ipcProtocolTarget, ipcStreamTarget } from './ipc-protocol.js';
import { shimControlTarget, shimIpcpTarget } from './shim-control.js';
import { vhostUserTarget } from './vhost-user.js';
import { virtqueueTarget } from './virtqueue.js';

export const TARGETS: ReadonlyMap<string, () => Promise<FuzzTarget<unknown>>> = new Map<string, () => Promise<FuzzTarget<unknown>>>([
  ['vhost-user', async () => vhostUserTarget as FuzzTarget<unknown>],
  ['virtqueue', async () => virtqueueTarget as FuzzTarget<unknown>],
  ['shim-control', async () => shimControlTarget as FuzzTarget<unknown>],
  ['shim-ipcp', async () => shimIpcpTarget as FuzzTarget<unknown>],
  ['ipc-protocol', async () => ipcProtocolTarget as FuzzTarget<unknown>],
  ['ipc-stream', async () => ipcStreamTarget as FuzzTarget<unknown>],
  ['config', async () => configTarget as FuzzTarget<unknown>],
  ['normal-pdu', async () => normalPduTarget as FuzzTarget<unknown>],
  ['cdap', async () => cdapTarget as FuzzTarget<unknown>],
]);
