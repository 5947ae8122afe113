/**
 * ipcp-counters.ts — a normal IPC process's counters (its flows', its RMT's, its management
 * plane's) in the shape every IPC process shows the metrics (../core/observe.ts).
 *
 * Mapping: stale = data PDUs for a CEP-id no flow is bound to (the flow is gone or not set up
 * yet; also in the RMT's no_cep); malformed_control = management PDUs that could not be
 * read; RMT drops by reason (no_route, ttl, queue_full, no_cep, no_mgmt, port_down, too_big, malformed).
 */
import type { EfcpTotals, EnrollmentState, IpcpCounters } from '../core/observe.js';
import type { IpcpFlows } from './ipcp-flows.js';
import type { MgmtStats } from './ipcp-mgmt.js';
import type { RmtStats } from './rmt.js';

export interface NormalGauges {
  neighbours: number;
  rmtQueuedPdus: number;
  enrolled: boolean;
  efcp: EfcpTotals;
  enrollment?: { neighbour: string; state: EnrollmentState }[];
  directory?: { entries: number; dropped: Record<string, number> };
  efcpQueuedPdus?: Record<string, number>;
  lingeringFlows?: number;
}

export function normalCounters(flows: IpcpFlows['stats'], rmt: RmtStats, mgmt: MgmtStats, g: NormalGauges): IpcpCounters {
  const malformed = Object.values(rmt.dropMalformed).reduce((a, b) => a + b, 0);
  return {
    allocations: {
      outgoing: {
        allocated: flows.allocSucceeded,
        rejected: flows.allocRejected,
        timeout: flows.allocTimedOut,
        failed: Math.max(0, flows.allocRequested - flows.allocSucceeded - flows.allocRejected - flows.allocTimedOut),
      },
      incoming: { allocated: flows.incomingAccepted, rejected: flows.incomingRejected },
    },
    flowsDeallocated: flows.flowsDeallocated,
    drops: { stale: rmt.dropNoCep, malformed_control: mgmt.mgmtBad },
    rmt: {
      forwarded: rmt.relayed,
      dropped: { no_route: rmt.dropNoRoute, ttl: rmt.dropTtl, queue_full: rmt.dropQueueFull, no_cep: rmt.dropNoCep, no_mgmt: rmt.dropNoMgmt, port_down: rmt.dropPortDown, too_big: rmt.dropTooBig, malformed },
      backpressure: { pauses: rmt.relayPauses, stuck: rmt.stuckEpisodes },
    },
    neighbours: g.neighbours,
    rmtQueuedPdus: g.rmtQueuedPdus,
    enrolled: g.enrolled,
    efcp: g.efcp,
    ...(g.enrollment ? { enrollment: g.enrollment } : {}),
    ...(g.directory ? { directory: g.directory } : {}),
    ...(g.efcpQueuedPdus ? { efcpQueuedPdus: g.efcpQueuedPdus } : {}),
    ...(g.lingeringFlows !== undefined ? { lingeringFlows: g.lingeringFlows } : {}),
  };
}
