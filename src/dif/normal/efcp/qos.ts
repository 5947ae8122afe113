/**
 * qos.ts — the QoS cubes of the normal DIF's EFCP and the mapping from the IPC API's QosSpec to
 * one of them; the default EFCP parameters (credit, queue bounds, timers) and their validation.
 *
 * Owns: what each cube switches on (flow control, retransmission, ordering), the `qos_id` each
 * carries on the wire, and `resolveParams`, which fills defaults and refuses inconsistent options
 * with ERR_EFCP_CONFIG. docs/NORMAL-DIF-EFCP.md lists the same defaults; they change together.
 */
import type { QosSpec } from '../../api.js';
import { EfcpError } from './errors.js';

export type QosCubeName = 'reliable' | 'flow-control' | 'unreliable';

export interface QosCube {
  /** The PCI qos_id of the cube's PDUs. */
  readonly id: number;
  readonly name: QosCubeName;
  /** DTCP window flow control (the receiver's credit bounds what the sender may send). */
  readonly flowControl: boolean;
  /** DTCP retransmission control (cumulative ACK, RTX timer); implies flowControl here. */
  readonly retransmission: boolean;
  /** SDUs are delivered in sequence order (gaps: waited for, or given up after a bounded wait). */
  readonly inOrder: boolean;
}

export const QOS_CUBES: Readonly<Record<QosCubeName, QosCube>> = Object.freeze({
  reliable: Object.freeze({ id: 1, name: 'reliable', flowControl: true, retransmission: true, inOrder: true }),
  'flow-control': Object.freeze({ id: 2, name: 'flow-control', flowControl: true, retransmission: false, inOrder: true }),
  unreliable: Object.freeze({ id: 3, name: 'unreliable', flowControl: false, retransmission: false, inOrder: false }),
});

/** The cube a PDU's qos_id names, or undefined. */
export function cubeById(id: number): QosCube | undefined {
  for (const c of Object.values(QOS_CUBES)) if (c.id === id) return c;
  return undefined;
}

export interface CubeChoice {
  /**
   * Give flows that asked for neither reliability nor order window flow control anyway (rlite's
   * `force-flow-control` policy; what the paper's Fig. 4b measured): the receiver is never
   * overrun and the writer sees backpressure, at the price of control PDUs.
   */
  forceFlowControl?: boolean;
}

/**
 * reliable → `reliable`; in order but not reliable → `flow-control` (gaps are counted losses,
 * delivery stays in order); neither → `unreliable`, or `flow-control` with forceFlowControl.
 */
export function cubeForQos(spec: Pick<QosSpec, 'reliable' | 'inOrder'>, choice: CubeChoice = {}): QosCube {
  if (spec.reliable) return QOS_CUBES.reliable;
  if (spec.inOrder || choice.forceFlowControl) return QOS_CUBES['flow-control'];
  return QOS_CUBES.unreliable;
}

/**
 * What a flow allocated with `spec` gets: its cube, and its max SDU (QosSpec.maxSdu; 0 there
 * means the DIF's maximum, `difMaxSdu`). Throws ERR_EFCP_CONFIG when the spec asks for more.
 */
export function efcpForQos(spec: QosSpec, difMaxSdu: number, choice: CubeChoice = {}): { cube: QosCube; maxSdu: number } {
  if (!Number.isInteger(spec.maxSdu) || spec.maxSdu < 0) throw new EfcpError('ERR_EFCP_CONFIG', `QoS maxSdu ${spec.maxSdu} is not a byte count`);
  if (spec.maxSdu > difMaxSdu) throw new EfcpError('ERR_EFCP_CONFIG', `QoS maxSdu ${spec.maxSdu} is larger than the DIF's max SDU of ${difMaxSdu} bytes: ask for at most that`);
  return { cube: cubeForQos(spec, choice), maxSdu: spec.maxSdu === 0 ? difMaxSdu : spec.maxSdu };
}

/** EFCP's tunables; every one optional in EfcpConnection's options. */
export interface EfcpParams {
  /** Receive window in PDUs: the sender may have at most this many PDUs beyond our left edge. */
  credit: number;
  /** The peer's credit (our initial send window); both ends are normally configured alike. */
  peerCredit: number;
  /** Largest SDU write() accepts, bytes. */
  maxSdu: number;
  /** Closed-window queue (PDUs waiting for window or for the N-1 flow), in PDUs and bytes. */
  cwqMaxPdus: number;
  cwqMaxBytes: number;
  /** Retransmission queue (sent, not yet acknowledged), in PDUs and bytes. */
  rtxMaxPdus: number;
  rtxMaxBytes: number;
  /** Out-of-order PDUs the receiver holds (PDUs), and all it holds (bytes). */
  reorderMaxPdus: number;
  rxMaxBytes: number;
  /** The peer's rxMaxBytes: the byte window (bytes sent from its left edge on); both ends alike. */
  peerRxMaxBytes: number;
  /** A-timer: how long the receiver may delay a control PDU (0: send at once). */
  aTimerMs: number;
  /** Retransmission timeout before any RTT sample, and its bounds. */
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  /** Retransmissions of one PDU before the flow fails (ERR_EFCP_RTX_EXHAUSTED). */
  maxRetries: number;
  /** Duplicate ACKs that trigger a fast retransmission. */
  dupAckThreshold: number;
  /** Window closed with data waiting this long: the sender asks for a fresh advertisement. */
  stallProbeMs: number;
  /** flow-control cube: how long a gap is waited for before its PDUs count as lost (0: never). */
  gapWaitMs: number;
  /** First sequence number of our data and control PDUs, and of the peer's. */
  initialSeq: number;
  peerInitialSeq: number;
}

export const EFCP_DEFAULTS: Readonly<EfcpParams> = Object.freeze({
  // Many PDUs (small SDUs at a long RTT: the TCG guests of bench:fig4b) and the byte window
  // (peerRxMaxBytes) for large ones: 256 was what 16 MiB held of 64 KiB SDUs, before that.
  credit: 2048,
  peerCredit: 2048,
  maxSdu: 65536,
  cwqMaxPdus: 128,
  cwqMaxBytes: 4 * 1024 * 1024,
  rtxMaxPdus: 512,
  rtxMaxBytes: 16 * 1024 * 1024,
  reorderMaxPdus: 64,
  rxMaxBytes: 16 * 1024 * 1024,
  peerRxMaxBytes: 16 * 1024 * 1024,
  aTimerMs: 20,
  initialRtoMs: 1000,
  minRtoMs: 50,
  maxRtoMs: 8000,
  maxRetries: 8,
  dupAckThreshold: 3,
  stallProbeMs: 250,
  gapWaitMs: 10,
  initialSeq: 0,
  peerInitialSeq: 0,
});

function int(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) throw new EfcpError('ERR_EFCP_CONFIG', `EFCP option ${name}=${v} must be an integer in [${min}, ${max}]`);
}

/** Defaults filled in, every option checked; throws EfcpError ERR_EFCP_CONFIG naming the option. */
export function resolveParams(opts: Partial<EfcpParams>): EfcpParams {
  const p: EfcpParams = { ...EFCP_DEFAULTS };
  for (const k of Object.keys(EFCP_DEFAULTS) as (keyof EfcpParams)[]) if (opts[k] !== undefined) p[k] = opts[k]!;
  // Both ends alike: a receive bound set alone is the peer's too.
  if (opts.peerRxMaxBytes === undefined) p.peerRxMaxBytes = p.rxMaxBytes;
  const big = 2 ** 30;
  int('credit', p.credit, 1, 1 << 20);
  int('peerCredit', p.peerCredit, 1, 1 << 20);
  int('maxSdu', p.maxSdu, 0, big);
  int('cwqMaxPdus', p.cwqMaxPdus, 1, 1 << 20);
  int('cwqMaxBytes', p.cwqMaxBytes, 1, big);
  int('rtxMaxPdus', p.rtxMaxPdus, 1, 1 << 20);
  int('rtxMaxBytes', p.rtxMaxBytes, 1, big);
  int('reorderMaxPdus', p.reorderMaxPdus, 0, 1 << 20);
  int('rxMaxBytes', p.rxMaxBytes, 1, big);
  int('peerRxMaxBytes', p.peerRxMaxBytes, 1, big);
  int('aTimerMs', p.aTimerMs, 0, 60_000);
  int('initialRtoMs', p.initialRtoMs, 1, 600_000);
  int('minRtoMs', p.minRtoMs, 1, 600_000);
  int('maxRtoMs', p.maxRtoMs, p.minRtoMs, 600_000);
  int('maxRetries', p.maxRetries, 0, 1000);
  int('dupAckThreshold', p.dupAckThreshold, 1, 1000);
  int('stallProbeMs', p.stallProbeMs, 1, 600_000);
  int('gapWaitMs', p.gapWaitMs, 0, 600_000);
  int('initialSeq', p.initialSeq, 0, 0xffffffff);
  int('peerInitialSeq', p.peerInitialSeq, 0, 0xffffffff);
  const hdr = 56;
  if (p.cwqMaxBytes < p.maxSdu + hdr) throw new EfcpError('ERR_EFCP_CONFIG', `EFCP option cwqMaxBytes=${p.cwqMaxBytes} cannot hold one PDU of maxSdu=${p.maxSdu}: raise it or lower maxSdu`);
  if (p.rtxMaxBytes < p.maxSdu + hdr) throw new EfcpError('ERR_EFCP_CONFIG', `EFCP option rtxMaxBytes=${p.rtxMaxBytes} cannot hold one PDU of maxSdu=${p.maxSdu}: raise it or lower maxSdu`);
  if (p.rxMaxBytes < p.maxSdu) throw new EfcpError('ERR_EFCP_CONFIG', `EFCP option rxMaxBytes=${p.rxMaxBytes} cannot hold one SDU of maxSdu=${p.maxSdu}: raise it or lower maxSdu`);
  return p;
}
