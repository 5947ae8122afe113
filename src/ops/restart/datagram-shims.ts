/**
 * datagram-shims.ts — the restart hooks of the datagram shims (shim-udp, shim-eth) for
 * `vmpi serve`: open one resumed from the snapshot the last worker left, or fresh when there is
 * none or it cannot be used (said in one log line), and keep its snapshot in the state document
 * from then on (persisted on each change of its flow table).
 *
 * Neither shim puts an fd in the store: shim-udp binds its configured port again (the snapshot's
 * port when the config says any port), shim-eth opens its interface again. Datagrams that arrive
 * while no worker runs are lost, as the medium may lose them anyway; a flow lives on if the
 * restart is shorter than the peer's keepaliveTimeoutMs (see docs/SHIM-UDP.md).
 */
import type { DatagramResumeOptions } from '../../dif/shim-datagram/ipcp.js';
import { DatagramStateError } from '../../dif/shim-datagram/snapshot.js';
import type { Logger } from '../../sys/log.js';
import type { Restarter } from './worker.js';

/** Anything with a datagram shim's snapshot. */
interface Snapshotting {
  snapshot(): unknown;
}

/**
 * Open a datagram shim (`open` given the restart options) resumed when the last worker left its
 * snapshot under `key`, and attach it to `restart`. A snapshot that cannot be used
 * (DatagramStateError) is logged and the shim opens fresh; any other error is thrown.
 */
export async function openDatagramShim<T extends Snapshotting>(key: string, restart: Restarter | undefined, log: Logger, open: (r: DatagramResumeOptions) => T | Promise<T>): Promise<T> {
  if (!restart) return open({});
  const saved = restart.shimSnapshotOf(key);
  const hooks: DatagramResumeOptions = { onStateChange: restart.shimChanged, keepFlows: restart.ipcKeptFlow };
  let ipcp: T;
  if (saved === undefined) ipcp = await open(hooks);
  else {
    try {
      ipcp = await open({ ...hooks, resume: saved });
    } catch (e) {
      if (!(e instanceof DatagramStateError)) throw e;
      log.error({ shim: key, code: e.code, err: e.message }, 'the saved state of a datagram shim is unusable; it starts without its flows (their peers see them end)');
      ipcp = await open(hooks);
    }
  }
  restart.attachShim(key, () => ipcp.snapshot());
  return ipcp;
}
