/**
 * index.ts — the registry of fuzz targets, in the order `npm run fuzz` runs them.
 */
import type { FuzzTarget } from '../runner.js';
import { configTarget } from './config.js';
import { ipcProtocolTarget } from './ipc-protocol.js';

export const TARGETS: ReadonlyMap<string, () => Promise<FuzzTarget<unknown>>> = new Map<string, () => Promise<FuzzTarget<unknown>>>([
  ['ipc-protocol', async () => ipcProtocolTarget as FuzzTarget<unknown>],
  ['config', async () => configTarget as FuzzTarget<unknown>],
]);
