/**
 * observe.ts — what every IPC process shows an operator (ops/metrics.ts): its name and type,
 * its DIF, its flows, and a snapshot of its counters in one DIF-independent shape, so any IPC
 * process type gets metrics without the metrics knowing its class.
 *
 * Counters are cumulative for the life of the IPC process (they never go down); the optional
 * parts are left out by IPC process types that have no such thing (the shim DIF has no relaying
 * RMT and no neighbours; the normal DIF drops nothing for an unread flow, it pauses it).
 *
 * `inspect()` is the operator's look inside (`vmpi dif show`, the IPC daemon's `inspect_dif`):
 * plain JSON data only (numbers, strings, booleans, arrays, plain objects), each type its own.
 */
import type { DeallocationCause, Flow, IpcProcess } from '../api.js';

export type IpcpType = 'shim-hv' | 'shim-udp' | 'shim-eth' | 'normal';

export interface IpcpCounters {
  /** Outgoing: asked by a local application; incoming: asked by the other end. */
  allocations: {
    outgoing: { allocated: number; rejected: number; timeout: number; failed: number };
    incoming: { allocated: number; rejected: number };
  };
  flowsDeallocated: number;
  /** SDUs or PDUs dropped: stale (data for a flow that is gone or not there yet), malformed_control (management/control messages that could not be read). */
  drops: { stale: number; malformed_control: number };
  /** Bytes waiting in the receive queues of the flows, when they are budgeted. */
  rxQueuedBytes?: number;
  /** SDUs dropped because an unread flow reached a receive budget, by budget. */
  rxBudgetDrops?: Record<string, number>;
  /**
   * The relaying part (RMT): PDUs forwarded for other members, PDUs dropped by reason, and its
   * backpressure: times it paused an incoming N-1 port for a full output queue, and episodes of an
   * output queue stuck while ports waited on it (their waiting PDUs then dropped as queue_full).
   */
  rmt?: { forwarded: number; dropped: Record<string, number>; backpressure?: { pauses: number; stuck: number } };
  /** Neighbours enrolled now (members at the other end of a working N-1 flow). */
  neighbours?: number;
  /** PDUs waiting in the RMT's output queues now (all N-1 ports). */
  rmtQueuedPdus?: number;
  /** Whether this IPC process is a member of its DIF now (has an address). */
  enrolled?: boolean;
  /** The flows' error and flow control, summed over every flow the IPC process has had. */
  efcp?: EfcpTotals;
  /** IPC processes over a datagram socket (shim-udp: UDP datagrams; shim-eth: Ethernet frames): datagrams and bytes sent and received, send errors. */
  datagrams?: { txDatagrams: number; txBytes: number; rxDatagrams: number; rxBytes: number; txErrors: number };
  /** Datagrams dropped on arrival, by reason (shim-udp: unknown_peer, malformed, oversize, unknown_flow, stale, ...). */
  datagramDrops?: Record<string, number>;
  /** Names looked up to reach a peer: found, or not (shim-udp's peers table). */
  resolutions?: { resolved: number; unresolved: number };
  /** Enrollment with each neighbour now (normal DIF): the enroller's members, or a member's enroller. */
  enrollment?: { neighbour: string; state: EnrollmentState }[];
  /** The replicated directory (normal DIF): entries held now (tombstones included), and entries refused, by reason. */
  directory?: { entries: number; dropped: Record<string, number> };
  /** PDUs waiting in the flows' EFCP queues now, summed over flows, by queue (rtx, closed_window, reassembly). */
  efcpQueuedPdus?: Record<string, number>;
  /** Flows deallocated by their application whose EFCP still delivers what it holds (normal DIF). */
  lingeringFlows?: number;
}

/** States of an enrollment with a neighbour, as the metrics show them (one series each). */
export const ENROLLMENT_STATES = ['enrolling', 'enrolled', 'lost'] as const;
export type EnrollmentState = (typeof ENROLLMENT_STATES)[number];

/** EFCP counters summed over flows, cumulative (names as in the metrics' `event` label). */
export interface EfcpTotals {
  tx_pdus: number;
  rx_pdus: number;
  retransmissions: number;
  rtx_timeouts: number;
  window_stalls: number;
  lost_pdus: number;
  duplicates: number;
  /** Control PDUs sent and received (credit/ACK pacing: how many per data PDU). */
  ctrl_sent: number;
  ctrl_rcvd: number;
  /** write() calls refused (closed-window queue full) and PDUs the N-1 side refused. */
  tx_refused: number;
  lower_refused: number;
  /**
   * Data PDUs the receivers dropped: out of order with the reordering queue full (reliable:
   * retransmitted later), past the byte budget, beyond the window, and (unreliable cube) while
   * delivery was paused.
   */
  reorder_drops: number;
  rx_byte_drops: number;
  beyond_window: number;
  rx_paused_drops: number;
}

/** An IPC process as the metrics see it. */
export interface ObservableIpcp extends IpcProcess {
  readonly ipcpType: IpcpType;
  /** This IPC process's name (unique in its DIF). */
  readonly ipcpName: string;
  counters(): IpcpCounters;
  /** A plain-data dump of this IPC process's state (neighbours, tables, flows); see the file comment. */
  inspect?(): Record<string, unknown>;
  on(event: 'flowDeallocated', listener: (flow: Flow, reason: string, cause: DeallocationCause) => void): this;
}

/** What an IPC process hosted by the IPC daemon says about itself in a list (`list_ipcps`). */
export interface IpcpDescription {
  dif: string;
  type: IpcpType | 'unknown';
  name: string;
  address: number;
}

/** Describe any IPC process; one that is not an ObservableIpcp is of type 'unknown', named after its DIF. */
export function describeIpcp(ipcp: IpcProcess): IpcpDescription {
  const o = ipcp as Partial<ObservableIpcp>;
  const type = o.ipcpType === 'shim-hv' || o.ipcpType === 'shim-udp' || o.ipcpType === 'shim-eth' || o.ipcpType === 'normal' ? o.ipcpType : 'unknown';
  return { dif: ipcp.difName, type, name: typeof o.ipcpName === 'string' ? o.ipcpName : ipcp.difName, address: ipcp.address };
}
