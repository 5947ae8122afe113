/**
 * flow-handover.ts — how the IPC daemon hands a new flow to its application: the fd the
 * application gets and the FlowLink the daemon keeps (bridge.ts). The flow's own data file when
 * the IPC process has one (the guest's shim DIF: SDUs then never cross the daemon, a
 * DirectFlowLink), else a new SOCK_SEQPACKET socketpair, sized for the flow's max SDU, with a
 * FlowBridge on the daemon's end; and, when the application reads rings and the daemon's ring
 * memory allows, a sealed memfd of two shared-memory rings beside it (ring.ts, datapath 'ring':
 * the socket then carries only doorbells and the end of file). Also the FlowInfo that describes
 * the flow in the answer.
 */
import { DifError, type Flow } from '../api.js';
import { formatAppName } from '../naming.js';
import { native } from '../../sys/native.js';
import type { Logger } from '../../sys/log.js';
import { errText, safeClose } from '../../sys/fd.js';
import { DirectFlowLink, FlowBridge, type BridgeHooks, type FlowLink } from './bridge.js';
import { sizeFlowSocket } from './record.js';
import { DEFAULT_MAX_RING_BYTES, type IpcDaemonStats } from './daemon-limits.js';
import { createRing, mapRing, ringBytesFor, ringDataBytesOf, ringFileBytes, RingEnd, RingHold, type RingMap } from './ring.js';
import type { FlowDatapath, FlowInfo } from './protocol.js';

export interface FlowHandover {
  link: FlowLink;
  datapath: FlowDatapath;
  /** The fds for the application (the caller sends them, then they are closed with the send): the flow's, then the ring's. */
  theirFds: number[];
  /** With datapath 'ring': its data bytes per direction. */
  ringBytes?: number;
}

/** How the daemon may set up a flow's data path. */
export interface HandoverOptions {
  /** The application reads rings (its request said `rings: true`). */
  rings?: boolean;
  /** The daemon's ring memory in all at most (bytes of memfd); beyond it new flows get 'socket'. */
  maxRingBytes?: number;
}

/** What the daemon's ring memory accounting gives back when a ring of `size` memfd bytes goes (once). */
function ringAccount(stats: IpcDaemonStats | undefined, size: number): () => void {
  if (stats === undefined) return () => {};
  stats.ringBytes += size;
  stats.ringFlows++;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    stats.ringBytes -= size;
    stats.ringFlows--;
  };
}

/**
 * A new ring for `flow` when wanted and within the cap, its daemon end on the flow's socket
 * `fd`, else null (the flow keeps the socket).
 */
function newRing(flow: Flow, fd: number, stats: IpcDaemonStats, opts: HandoverOptions, log: Logger): { hold: RingHold; bytes: number } | null {
  if (opts.rings !== true) return null;
  const dataBytes = ringBytesFor(flow.qos.maxSdu);
  if (dataBytes === 0) return null;
  const size = ringFileBytes(dataBytes);
  if (stats.ringBytes + size > (opts.maxRingBytes ?? DEFAULT_MAX_RING_BYTES)) {
    stats.ringsRefused++;
    return null;
  }
  let r: { fd: number; map: RingMap };
  try {
    r = createRing(flow.qos.maxSdu);
  } catch (e) {
    log.warn({ err: errText(e) }, 'ipc: could not create a flow ring (memfd/mmap): the flow keeps the socket');
    stats.ringsRefused++;
    return null;
  }
  return { hold: new RingHold(new RingEnd(r.map, fd, 'daemon'), r.fd, ringAccount(stats, size)), bytes: dataBytes };
}

/**
 * Make the flow's data path. No fd to be had (EMFILE): counted in stats.flowFdFailures and a
 * DifError 'no_resources'; whatever fails, the flow is deallocated and nothing stays open.
 */
export function openFlowLink(flow: Flow, hooks: BridgeHooks, stats: IpcDaemonStats, log: Logger, opts: HandoverOptions = {}): FlowHandover {
  let theirs = -1;
  let ring = null as ReturnType<typeof newRing>;
  let ringTheirs = -1;
  try {
    const dataFd = flow.takeDataFd?.() ?? null;
    if (dataFd !== null) {
      theirs = dataFd;
      return { link: new DirectFlowLink(flow, hooks), datapath: 'vmpi_file', theirFds: [dataFd] };
    }
    let pair: [number, number];
    try {
      pair = native.socketpairSeqpacket();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      stats.flowFdFailures++;
      throw new DifError('no_resources', `the IPC daemon could not create the flow's socket (${code ?? errText(e)}): it is out of file descriptors; try again later`, { cause: e });
    }
    const [mine, other] = pair;
    theirs = other;
    try {
      // Both ends: the application's sends and ours must fit a max-SDU record.
      if (!(sizeFlowSocket(mine, flow.qos.maxSdu) && sizeFlowSocket(other, flow.qos.maxSdu))) {
        log.warn({ maxSdu: flow.qos.maxSdu }, "ipc: the flow socket's buffer is below the flow's max SDU (net.core.wmem_max): larger SDUs will be refused");
      }
    } catch (e) {
      log.warn({ err: errText(e) }, "ipc: could not size the flow socket's buffers");
    }
    let link: FlowLink;
    try {
      ring = newRing(flow, mine, stats, opts, log);
      if (ring !== null) ringTheirs = native.dup(ring.hold.memfd);
      link = new FlowBridge(flow, mine, hooks, log, ring?.hold ?? null);
    } catch (e) {
      safeClose(mine);
      throw e;
    }
    if (ring === null) return { link, datapath: 'socket', theirFds: [other] };
    return { link, datapath: 'ring', theirFds: [other, ringTheirs], ringBytes: ring.bytes };
  } catch (e) {
    if (theirs >= 0) safeClose(theirs);
    if (ringTheirs >= 0) safeClose(ringTheirs);
    ring?.hold.dispose();
    try {
      flow.deallocate(e instanceof DifError && e.code === 'no_resources' ? 'IPC daemon: no file descriptor for the flow' : `IPC daemon: ${errText(e)}`);
    } catch {
      // the flow is gone either way
    }
    throw e;
  }
}

/** The flow as the `result` of an allocate/accept describes it (handle: the session's). */
export function flowInfo(handle: number, flow: Flow, datapath: FlowDatapath, ringBytes?: number): FlowInfo {
  const info: FlowInfo = {
    flow: handle,
    portId: flow.portId,
    dif: flow.difName,
    localApp: formatAppName(flow.localApp),
    remoteApp: formatAppName(flow.remoteApp),
    qos: { reliable: flow.qos.reliable, inOrder: flow.qos.inOrder, maxSdu: flow.qos.maxSdu },
    datapath,
  };
  if (datapath === 'ring' && ringBytes !== undefined) info.ring = { bytes: ringBytes };
  return info;
}

/**
 * A flow a previous process of this daemon handed over, resumed (snapshot.ts): the daemon's end
 * of its socketpair came back from the fd store (`fd`, taken), the Flow from its restored IPC
 * process. The application's end never left the application.
 */
export function resumeFlowLink(flow: Flow, fd: number, hooks: BridgeHooks, log: Logger, ringFd?: number, stats?: IpcDaemonStats): FlowLink {
  let map: RingMap | null = null;
  let ring: RingHold | null = null;
  try {
    if (ringFd !== undefined) {
      // The ring's memfd came back too: map it again (checked as an application checks it) and
      // carry on from the indices this daemon's previous process left in it.
      // Its size is the one it was made with (an older daemon's may differ from ringBytesFor's).
      const dataBytes = ringDataBytesOf(ringFd);
      map = mapRing(ringFd, dataBytes, flow.qos.maxSdu);
      const end = new RingEnd(map, fd, 'daemon');
      if (end.broken !== null) throw new Error(end.broken);
      ring = new RingHold(end, ringFd, ringAccount(stats, ringFileBytes(dataBytes)));
    }
    return new FlowBridge(flow, fd, hooks, log, ring);
  } catch (e) {
    // A hold gives back its accounting too; before it is made only the mapping and the fds are held.
    if (ring !== null) ring.dispose();
    else {
      map?.unmap();
      if (ringFd !== undefined) safeClose(ringFd);
    }
    safeClose(fd);
    throw e;
  }
}
