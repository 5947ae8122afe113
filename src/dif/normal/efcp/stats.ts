/**
 * stats.ts — the counters of one EFCP connection: plain numeric fields (metrics are wired
 * later), shared by its sender and receiver halves, copied out by snapshot().
 */
export interface EfcpStats {
  // ---- sender
  /** SDUs accepted by write(), and their bytes. */
  txSdus: number;
  txBytes: number;
  /** write() calls refused (queue full: nothing taken; wait for onDrain). */
  txRefused: number;
  /** DT PDUs handed to the N-1 flow the first time. */
  txPdus: number;
  /** Retransmitted DT PDUs (timeouts, fast retransmissions and partial ACKs). */
  retransmissions: number;
  rtxTimeouts: number;
  fastRetransmits: number;
  /** RTT samples taken (Karn: never from an ACK covering a retransmitted PDU). */
  rttSamples: number;
  /** Times the sender found the window closed with data waiting (episodes, not PDUs). */
  windowStalls: number;
  /** Times the retransmission queue was full with data waiting (episodes). */
  rtxQueueStalls: number;
  /** Control PDUs sent because the window stayed closed (asking for a fresh advertisement). */
  windowProbes: number;
  /** flow-control cube: probes sent once the sender went idle (so a lost tail is counted). */
  tailProbes: number;
  /** PDUs the N-1 flow refused (sendPdu returned false). */
  lowerRefused: number;
  /** ACKs for sequence numbers never sent (ignored), window edges too far ahead (clamped). */
  ctrlBogus: number;
  // ---- receiver
  /** DT PDUs received for this connection. */
  rxPdus: number;
  /** SDUs delivered, and their bytes. */
  rxSdus: number;
  rxBytes: number;
  /** DT PDUs dropped as already received (flow-control cube: also those arriving after their gap was given up). */
  duplicates: number;
  /** DT PDUs beyond the right window edge (a sender that ignores the window): dropped. */
  beyondWindow: number;
  /** Out-of-order PDUs dropped because the reordering queue was full (reliable: retransmitted later). */
  reorderDrops: number;
  /** PDUs dropped because the receiver's byte budget was full. */
  rxByteDrops: number;
  /** unreliable cube: SDUs dropped because delivery was paused. */
  rxPausedDrops: number;
  /** unreliable cube: PDUs that arrived after a later one. */
  reordered: number;
  /** flow-control cube: gaps given up (episodes) and the PDUs in them. */
  gaps: number;
  lostPdus: number;
  /** Most PDUs the receiver held at once (reordering + awaiting delivery); never above credit. */
  maxBuffered: number;
  // ---- control
  ctrlSent: number;
  ctrlRcvd: number;
  /** Control PDUs the N-1 flow refused. */
  ctrlRefused: number;
  /** Control sequence numbers skipped by the peer's control PDUs (lost or reordered). */
  ctrlGaps: number;
  /** Control PDUs older than (or the same as) the newest seen: ignored. */
  ctrlStale: number;
  /** Control PDUs sent because the peer's view of our window was stale. */
  readvertisements: number;
  // ---- either
  /** PDUs for another flow (addresses, CEP-ids or qos_id not ours), of an unexpected type, or after close. */
  rxMisdirected: number;
  rxAfterClose: number;
}

export function newStats(): EfcpStats {
  return {
    txSdus: 0, txBytes: 0, txRefused: 0, txPdus: 0, retransmissions: 0, rtxTimeouts: 0, fastRetransmits: 0, rttSamples: 0, windowStalls: 0, rtxQueueStalls: 0, windowProbes: 0, tailProbes: 0, lowerRefused: 0, ctrlBogus: 0,
    rxPdus: 0, rxSdus: 0, rxBytes: 0, duplicates: 0, beyondWindow: 0, reorderDrops: 0, rxByteDrops: 0, rxPausedDrops: 0, reordered: 0, gaps: 0, lostPdus: 0, maxBuffered: 0,
    ctrlSent: 0, ctrlRcvd: 0, ctrlRefused: 0, ctrlGaps: 0, ctrlStale: 0, readvertisements: 0,
    rxMisdirected: 0, rxAfterClose: 0,
  };
}
