/**
 * document.ts — the restart state document: what a worker persists for the next one.
 *
 * Owns: its format and version, and checking one another process wrote. Each layer's part is
 * that layer's own snapshot (the vhost-user connection state from src/vhost-user/state.ts, the
 * shim DIF's from src/dif/shim-hv/, the IPC daemon's sessions from src/dif/ipc/snapshot.ts, the
 * datagram shims' flow tables from src/dif/shim-datagram/snapshot.ts),
 * stored here as it came; fds appear only as names in the fd
 * store (fd-store.ts), never as numbers. A document of another format version is refused with
 * StateError 'state_version': the worker then does not start, and whoever restarts it (the
 * keeper, or `vmpi serve`'s upgrade check) keeps the running worker.
 */
import { StateError, type ConnectionStateJSON } from '../../vhost-user/state.js';
import { IPC_DAEMON_SNAPSHOT_VERSION } from '../../dif/ipc/snapshot.js';

export const DOCUMENT_FORMAT = 'vmpi-restart';
/** Bump when a change makes old documents unreadable, or new ones unreadable by old code. */
export const DOCUMENT_VERSION = 1;

export interface ConnectionDoc {
  /** Store name of the front-end's socket. */
  socket: string;
  /** The vhost-user layer's state, its fd fields -1 (see `fds`). */
  state: ConnectionStateJSON;
  /** Store name of each fd of the state, by role (state.ts stateFds). */
  fds: Record<string, string>;
}

export interface DeviceDoc {
  vmpiId: number;
  maxSduLog2: number;
  carrier: string;
  /** Store name of the listening socket, or null (not kept). */
  listen: string | null;
  connection: ConnectionDoc | null;
  /** The shim DIF's snapshot of this device's IPC process (its own format), or null. */
  shim: unknown;
  /** The VMPI device's own snapshot (VmpiDeviceSnapshot, checked by its restore()); absent in older documents. */
  vmpi?: unknown;
}

export interface RestartDocument {
  format: typeof DOCUMENT_FORMAT;
  version: number;
  /** The vmpi version that wrote it (for logs). */
  writtenBy: string;
  /** Restarts this server survived before the worker that wrote it. */
  restarts: number;
  /** Connections resumed, and resumes that failed, by every worker so far (metrics stay counters). */
  resumed: number;
  resumeFailures: number;
  /** Wall-clock ms of the write (the resume log says how old the state was). */
  writtenAt: number;
  devices: DeviceDoc[];
  /** Store name of the IPC daemon's listening socket, or null. */
  ipcListen: string | null;
  /** The IPC daemon's sessions (absent in documents of older workers: then none resume). */
  ipc: IpcDoc | null;
  /**
   * The datagram shims' snapshots (src/dif/shim-datagram/snapshot.ts, checked when resumed), by
   * "<type>:<DIF name>" (absent in documents of older workers: then they start without flows).
   * They hold no fds: shim-udp binds its port again, shim-eth opens its interface again.
   */
  shims: Record<string, unknown>;
}

export interface IpcDoc {
  /** The IPC daemon's snapshot (src/dif/ipc/snapshot.ts), checked when it is resumed. */
  state: unknown;
  /** Store name of each fd of the snapshot, by role. */
  fds: Record<string, string>;
}

/** Parse and check a document (from the state memfd). Throws StateError. */
export function parseDocument(text: string): RestartDocument {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new StateError(`the restart state is not JSON (${(e as Error).message})`, 'state_invalid');
  }
  const d = j as Partial<RestartDocument> | null;
  if (typeof d !== 'object' || d === null || d.format !== DOCUMENT_FORMAT) throw new StateError(`the restart state is not a ${DOCUMENT_FORMAT} document`, 'state_invalid');
  if (d.version !== DOCUMENT_VERSION) {
    throw new StateError(
      `the restart state has format version ${String(d.version)} (written by vmpi ${String(d.writtenBy)}); this vmpi reads version ${DOCUMENT_VERSION} only: run the version that wrote it, or stop the server (the VMs lose their VMPI devices) and start this one fresh`,
      'state_version',
    );
  }
  if (!Array.isArray(d.devices)) throw new StateError('the restart state has no device list', 'state_invalid');
  for (const [i, dev] of d.devices.entries()) {
    const ok =
      typeof dev === 'object' &&
      dev !== null &&
      Number.isInteger(dev.vmpiId) &&
      Number.isInteger(dev.maxSduLog2) &&
      typeof dev.carrier === 'string' &&
      (dev.listen === null || typeof dev.listen === 'string') &&
      (dev.connection === null || (typeof dev.connection === 'object' && typeof dev.connection.socket === 'string' && typeof dev.connection.fds === 'object' && dev.connection.fds !== null));
    if (!ok) throw new StateError(`the restart state's devices[${i}] is malformed`, 'state_invalid');
  }
  const ipc = d.ipc as Partial<IpcDoc> | null | undefined;
  const ipcOk = typeof ipc === 'object' && ipc !== null && typeof ipc.state === 'object' && ipc.state !== null && typeof ipc.fds === 'object' && ipc.fds !== null;
  const ipcVersion = ipcOk ? (ipc.state as { version?: unknown }).version : undefined;
  if (ipcOk && ipcVersion !== IPC_DAEMON_SNAPSHOT_VERSION) {
    // Only the version here (an upgrade must not drop the applications' sessions silently); the rest is checked on resume.
    throw new StateError(`the restart state's IPC daemon part has version ${String(ipcVersion)}; this vmpi reads version ${IPC_DAEMON_SNAPSHOT_VERSION} only: run the version that wrote it`, 'state_version');
  }
  return {
    format: DOCUMENT_FORMAT,
    version: DOCUMENT_VERSION,
    writtenBy: String(d.writtenBy),
    restarts: Number.isInteger(d.restarts) ? d.restarts! : 0,
    resumed: Number.isInteger(d.resumed) ? d.resumed! : 0,
    resumeFailures: Number.isInteger(d.resumeFailures) ? d.resumeFailures! : 0,
    writtenAt: typeof d.writtenAt === 'number' ? d.writtenAt : 0,
    devices: d.devices,
    ipcListen: typeof d.ipcListen === 'string' ? d.ipcListen : null,
    ipc: ipcOk ? { state: ipc.state, fds: ipc.fds as Record<string, string> } : null,
    shims: typeof d.shims === 'object' && d.shims !== null && !Array.isArray(d.shims) ? d.shims : {},
  };
}
