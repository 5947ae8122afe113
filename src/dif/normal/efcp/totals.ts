/**
 * totals.ts — EFCP counters summed over many connections (an IPC process's flows, ended ones
 * included), in the shape the metrics show (../../core/observe.ts `EfcpTotals`).
 */
import type { EfcpTotals } from '../../core/observe.js';
import type { EfcpStats } from './stats.js';

export function newEfcpTotals(): EfcpTotals {
  return { tx_pdus: 0, rx_pdus: 0, retransmissions: 0, rtx_timeouts: 0, window_stalls: 0, lost_pdus: 0, duplicates: 0, ctrl_sent: 0, ctrl_rcvd: 0, tx_refused: 0, lower_refused: 0, reorder_drops: 0, rx_byte_drops: 0, beyond_window: 0, rx_paused_drops: 0 };
}

/** Add one EFCP connection's counters into `t` (returns `t`). */
export function addEfcp(t: EfcpTotals, s: Readonly<EfcpStats>): EfcpTotals {
  t.tx_pdus += s.txPdus;
  t.rx_pdus += s.rxPdus;
  t.retransmissions += s.retransmissions;
  t.rtx_timeouts += s.rtxTimeouts;
  t.window_stalls += s.windowStalls;
  t.lost_pdus += s.lostPdus;
  t.duplicates += s.duplicates;
  t.ctrl_sent += s.ctrlSent;
  t.ctrl_rcvd += s.ctrlRcvd;
  t.tx_refused += s.txRefused;
  t.lower_refused += s.lowerRefused;
  t.reorder_drops += s.reorderDrops;
  t.rx_byte_drops += s.rxByteDrops;
  t.beyond_window += s.beyondWindow;
  t.rx_paused_drops += s.rxPausedDrops;
  return t;
}
