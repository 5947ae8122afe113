/**
 * flow-handover.ts — how the IPC daemon hands a new flow to its application: the fd the
 * application gets and the FlowLink the daemon keeps (bridge.ts). The flow's own data file when
 * the IPC process has one (the guest's shim DIF: SDUs then never cross the daemon, a
 * DirectFlowLink), else a new SOCK_SEQPACKET socketpair, sized for the flow's max SDU, with a
 * FlowBridge on the daemon's end. Also the FlowInfo that describes the flow in the answer.
 */
import { DifError, type Flow } from '../api.js';
import { formatAppName } from '../naming.js';
import { native } from '../../sys/native.js';
import type { Logger } from '../../sys/log.js';
import { errText, safeClose } from '../../sys/fd.js';
import { DirectFlowLink, FlowBridge, type BridgeHooks, type FlowLink } from './bridge.js';
import { sizeFlowSocket } from './record.js';
import type { IpcDaemonStats } from './daemon-limits.js';
import type { FlowDatapath, FlowInfo } from './protocol.js';

export interface FlowHandover {
  link: FlowLink;
  datapath: FlowDatapath;
  /** The fd for the application (the caller sends it, then it is closed with the send). */
  theirFd: number;
}

/**
 * Make the flow's data path. No fd to be had (EMFILE): counted in stats.flowFdFailures and a
 * DifError 'no_resources'; whatever fails, the flow is deallocated and nothing stays open.
 */
export function openFlowLink(flow: Flow, hooks: BridgeHooks, stats: IpcDaemonStats, log: Logger): FlowHandover {
  let theirs = -1;
  try {
    const dataFd = flow.takeDataFd?.() ?? null;
    if (dataFd !== null) {
      theirs = dataFd;
      return { link: new DirectFlowLink(flow, hooks), datapath: 'vmpi_file', theirFd: dataFd };
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
      link = new FlowBridge(flow, mine, hooks, log);
    } catch (e) {
      safeClose(mine);
      throw e;
    }
    return { link, datapath: 'socket', theirFd: other };
  } catch (e) {
    if (theirs >= 0) safeClose(theirs);
    try {
      flow.deallocate(e instanceof DifError && e.code === 'no_resources' ? 'IPC daemon: no file descriptor for the flow' : `IPC daemon: ${errText(e)}`);
    } catch {
      // the flow is gone either way
    }
    throw e;
  }
}

/** The flow as the `result` of an allocate/accept describes it (handle: the session's). */
export function flowInfo(handle: number, flow: Flow, datapath: FlowDatapath): FlowInfo {
  return {
    flow: handle,
    portId: flow.portId,
    dif: flow.difName,
    localApp: formatAppName(flow.localApp),
    remoteApp: formatAppName(flow.remoteApp),
    qos: { reliable: flow.qos.reliable, inOrder: flow.qos.inOrder, maxSdu: flow.qos.maxSdu },
    datapath,
  };
}

/**
 * A flow a previous process of this daemon handed over, resumed (snapshot.ts): the daemon's end
 * of its socketpair came back from the fd store (`fd`, taken), the Flow from its restored IPC
 * process. The application's end never left the application.
 */
export function resumeFlowLink(flow: Flow, fd: number, hooks: BridgeHooks, log: Logger): FlowLink {
  try {
    return new FlowBridge(flow, fd, hooks, log);
  } catch (e) {
    safeClose(fd);
    throw e;
  }
}
