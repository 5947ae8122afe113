/**
 * enrollment-enrollee.ts — the joining side of the normal DIF's enrollment, as a state machine over
 * one N-1 flow's CDAP transport and the injected Clock.
 *
 * Owns: the steps connect → start (address) → read chunks → stop → operational status, each a
 * request retransmitted (same invoke id) every `timeoutMs` up to `retries` times; the checks on
 * each reply (result, DIF name, data-transfer constants, chunk numbering and bounds; a member
 * keeping its address gets that address back); and the
 * outcome, an `EnrollmentResult` or an `EnrollmentError` saying which step failed and why.
 * Replies that do not answer the outstanding request (late duplicates) are counted and ignored.
 */
import { randomInt } from 'node:crypto';
import { validateAppName, type AppName } from '../naming.js';
import { ABS_SYNTAX, CdapError, type CdapMessage, type CdapReply, type CdapRequest } from './cdap.js';
import {
  constantsMismatch,
  decodeEnrollmentChunk,
  decodeEnrollmentInfo,
  encodeEnrollmentInfo,
  encodeOperationalStatus,
  MAX_LIST_ITEMS,
  type AddressRange,
  type DataTransferConstants,
  type DirectoryEntry,
  type Neighbour,
} from './cdap-objects.js';
import type { Clock, TimerHandle } from './clock.js';
import {
  CHUNK_CLASS,
  CHUNK_NAME_PREFIX,
  DEFAULT_STEP_RETRIES,
  DEFAULT_STEP_TIMEOUT_MS,
  ENROLLMENT_CLASS,
  ENROLLMENT_NAME,
  EnrollmentError,
  MAX_ENROLLMENT_CHUNKS,
  OPSTATUS_CLASS,
  OPSTATUS_NAME,
  type CdapTransport,
} from './enrollment.js';

export interface EnrolleeOptions {
  readonly clock: Clock;
  readonly transport: CdapTransport;
  /** This IPC process. */
  readonly name: AppName;
  readonly difName: string;
  /** Whom to connect to; default the DIF's name (any enroller of it). */
  readonly enrollerName?: AppName;
  readonly constants: DataTransferConstants;
  readonly lowerDifs?: readonly string[];
  /** An address to ask for (e.g. the one held before a restart); 0 or absent: any. */
  readonly proposedAddress?: number;
  /** Already a member at `proposedAddress` (an added adjacency): keep it; any other answer fails the enrollment. */
  readonly keepAddress?: boolean;
  /** This member enrolls others: ask for a block of addresses (`proposedPool`: the one it held). */
  readonly wantsPool?: boolean;
  readonly proposedPool?: AddressRange;
  readonly timeoutMs?: number;
  readonly retries?: number;
  /** First invoke id; default random, so that a new attempt is never taken for a retransmission. */
  readonly invokeIdBase?: number;
  readonly maxChunks?: number;
  /** Items (directory entries + neighbours + lower-flow records) accepted in total. */
  readonly maxItems?: number;
  /** Once enrolled, messages on this flow go here (directory, routing, …), not to the enrollee. */
  readonly onOtherMessage?: (msg: CdapMessage) => void;
}

export interface EnrollmentResult {
  readonly address: number;
  readonly enroller: AppName;
  readonly constants: DataTransferConstants;
  readonly directory: DirectoryEntry[];
  readonly neighbours: Neighbour[];
  readonly lowerFlows: Uint8Array[];
  /** The block of addresses delegated to this member (asked for with `wantsPool`), if any. */
  readonly pool?: AddressRange;
  /** The enroller reads LFDB updates with link limits (said in its M_START_R). */
  readonly lfdbMaxPdu?: boolean;
}

export type EnrolleeState = 'idle' | 'connect' | 'start' | 'read' | 'stop' | 'operational' | 'enrolled' | 'failed';

export class Enrollee {
  state: EnrolleeState = 'idle';
  readonly stats = { sent: 0, retransmissions: 0, replies: 0, ignored: 0 };
  private nextInvoke: number;
  private outstanding: CdapMessage | undefined;
  private attempts = 0;
  private timer: TimerHandle | undefined;
  private resolve!: (r: EnrollmentResult) => void;
  private reject!: (e: EnrollmentError) => void;
  private address = 0;
  private pool: AddressRange | undefined;
  private peerLimits = false;
  private enroller: AppName;
  private readonly result = { directory: [] as DirectoryEntry[], neighbours: [] as Neighbour[], lowerFlows: [] as Uint8Array[] };
  private chunkTotal = 0;
  private chunkNext = 0;
  private readonly timeoutMs: number;
  private readonly retries: number;

  constructor(private readonly opts: EnrolleeOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS;
    this.retries = opts.retries ?? DEFAULT_STEP_RETRIES;
    this.nextInvoke = (opts.invokeIdBase ?? randomInt(1, 0x7fffffff)) >>> 0;
    this.enroller = validateAppName(opts.enrollerName ?? { processName: opts.difName });
    opts.transport.onReceive((m) => this.receive(m));
  }

  /** Run the enrollment once. Resolves when this IPC process is a member; rejects with an EnrollmentError. */
  enroll(): Promise<EnrollmentResult> {
    if (this.state !== 'idle') return Promise.reject(new EnrollmentError('ERR_ENROLL_STATE', `enrollment already ${this.state}; make a new Enrollee to enroll again`, this.state));
    const p = new Promise<EnrollmentResult>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.state = 'connect';
    this.request({ op: 'M_CONNECT', invokeId: this.invoke(), absSyntax: ABS_SYNTAX, src: this.opts.name, dst: this.enroller });
    return p;
  }

  /** Stop (e.g. the N-1 flow went away): the pending enrollment fails with ERR_ENROLL_ABORTED. */
  abort(reason: string): void {
    this.fail('ERR_ENROLL_ABORTED', `enrollment aborted: ${reason}`);
  }

  snapshot(): { state: EnrolleeState; address: number; enroller: string; stats: Enrollee['stats'] } {
    return { state: this.state, address: this.address, enroller: this.enroller.processName, stats: { ...this.stats } };
  }

  private invoke(): number {
    const id = this.nextInvoke;
    this.nextInvoke = (this.nextInvoke + 1) >>> 0;
    return id;
  }

  private request(msg: CdapMessage): void {
    this.outstanding = msg;
    this.attempts = 0;
    this.transmit();
  }

  private transmit(): void {
    const msg = this.outstanding!;
    this.opts.clock.clearTimer(this.timer);
    this.timer = this.opts.clock.setTimer(this.timeoutMs, () => {
      this.timer = undefined;
      if (this.attempts > this.retries) {
        this.fail('ERR_ENROLL_TIMEOUT', `no answer to ${msg.op} after ${this.attempts} attempts, ${this.timeoutMs} ms apart; is an enroller of ${this.opts.difName} on the other end of the N-1 flow?`);
        return;
      }
      this.stats.retransmissions++;
      this.transmit();
    });
    this.attempts++;
    this.stats.sent++;
    this.opts.transport.send(msg);
  }

  private fail(code: EnrollmentError['code'], message: string, release = false): void {
    if (this.state === 'enrolled' || this.state === 'failed') return;
    const step = this.state;
    this.opts.clock.clearTimer(this.timer);
    this.timer = undefined;
    this.state = 'failed';
    this.outstanding = undefined;
    if (release) this.opts.transport.send({ op: 'M_RELEASE', invokeId: this.invoke(), objClass: '', objName: '' });
    this.reject(new EnrollmentError(code, message, step));
  }

  private receive(m: CdapMessage): void {
    if (this.state === 'enrolled' && this.opts.onOtherMessage) return this.opts.onOtherMessage(m);
    const out = this.outstanding;
    if (m.op === 'M_RELEASE' && out) {
      this.fail('ERR_ENROLL_RELEASED', `the enroller ended the enrollment${m.objName ? `: ${m.objName}` : ''}`);
      return;
    }
    if (!out || m.invokeId !== out.invokeId || m.op !== `${out.op}_R`) {
      this.stats.ignored++;
      return;
    }
    this.stats.replies++;
    this.opts.clock.clearTimer(this.timer);
    this.timer = undefined;
    this.outstanding = undefined;
    try {
      this.step(m);
    } catch (e) {
      if (e instanceof CdapError) this.fail('ERR_ENROLL_BAD_REPLY', `bad ${m.op} from the enroller: ${e.message}`, true);
      else throw e;
    }
  }

  private rejected(m: { result: number; reason: string; op: string }): boolean {
    if (m.result >= 0) return false;
    this.fail('ERR_ENROLL_REJECTED', `the enroller refused ${m.op.replace(/_R$/, '')}: ${m.reason || `result ${m.result}`}`);
    return true;
  }

  private step(m: CdapMessage): void {
    switch (this.state) {
      case 'connect': {
        if (m.op !== 'M_CONNECT_R' || this.rejected(m)) return;
        if (m.absSyntax !== ABS_SYNTAX) return this.fail('ERR_ENROLL_BAD_REPLY', `the enroller speaks abstract syntax ${m.absSyntax}, this end ${ABS_SYNTAX}`, true);
        this.enroller = m.src;
        this.state = 'start';
        const o = this.opts;
        const value = encodeEnrollmentInfo({
          address: o.proposedAddress ?? 0, difName: o.difName, lowerDifs: o.lowerDifs ?? [], constants: o.constants,
          ...(o.keepAddress ? { member: true } : {}), ...(o.wantsPool ? { wantsPool: true } : {}), ...(o.proposedPool ? { pool: o.proposedPool } : {}), lfdbMaxPdu: true,
        });
        return this.request({ op: 'M_START', invokeId: this.invoke(), objClass: ENROLLMENT_CLASS, objName: ENROLLMENT_NAME, value });
      }
      case 'start': {
        const r = m as CdapReply;
        if (this.rejected(r)) return;
        const info = decodeEnrollmentInfo(r.value);
        if (info.difName !== this.opts.difName) return this.fail('ERR_ENROLL_DIF_NAME', `the enroller is in DIF ${JSON.stringify(info.difName)}, not ${JSON.stringify(this.opts.difName)}`, true);
        if (!info.constants) return this.fail('ERR_ENROLL_BAD_REPLY', 'M_START_R carries no data-transfer constants', true);
        const diff = constantsMismatch(this.opts.constants, info.constants);
        if (diff.length) return this.fail('ERR_ENROLL_CONSTANTS', `data-transfer constants differ (ours ≠ the DIF's): ${diff.join(', ')}`, true);
        if (info.address === 0) return this.fail('ERR_ENROLL_BAD_REPLY', 'M_START_R assigns no address', true);
        if (this.opts.keepAddress && info.address !== this.opts.proposedAddress) return this.fail('ERR_ENROLL_BAD_REPLY', `the neighbour assigned address ${info.address}; this member keeps ${this.opts.proposedAddress}`, true);
        this.address = info.address;
        this.pool = info.pool;
        this.peerLimits = info.lfdbMaxPdu === true;
        this.state = 'read';
        return this.readChunk(0);
      }
      case 'read': {
        const r = m as CdapReply;
        if (this.rejected(r)) return;
        const c = decodeEnrollmentChunk(r.value);
        const max = this.opts.maxChunks ?? MAX_ENROLLMENT_CHUNKS;
        if (c.index !== this.chunkNext) return this.fail('ERR_ENROLL_BAD_REPLY', `asked for chunk ${this.chunkNext}, got ${c.index}`, true);
        if (this.chunkNext === 0) {
          if (c.total > max) return this.fail('ERR_ENROLL_BAD_REPLY', `the enroller offers ${c.total} chunks; this end takes at most ${max}`, true);
          this.chunkTotal = c.total;
        } else if (c.total !== this.chunkTotal) return this.fail('ERR_ENROLL_BAD_REPLY', `chunk ${c.index} says ${c.total} chunks, chunk 0 said ${this.chunkTotal}`, true);
        const res = this.result;
        const items = res.directory.length + res.neighbours.length + res.lowerFlows.length + c.directory.length + c.neighbours.length + c.lowerFlows.length;
        if (items > (this.opts.maxItems ?? 16 * MAX_LIST_ITEMS)) return this.fail('ERR_ENROLL_BAD_REPLY', `the DIF's state exceeds ${this.opts.maxItems ?? 16 * MAX_LIST_ITEMS} items`, true);
        res.directory.push(...c.directory);
        res.neighbours.push(...c.neighbours);
        res.lowerFlows.push(...c.lowerFlows);
        this.chunkNext++;
        if (this.chunkNext < this.chunkTotal) return this.readChunk(this.chunkNext);
        this.state = 'stop';
        return this.request({ op: 'M_STOP', invokeId: this.invoke(), objClass: ENROLLMENT_CLASS, objName: ENROLLMENT_NAME });
      }
      case 'stop':
        if (this.rejected(m as CdapReply)) return;
        this.state = 'operational';
        return this.request({ op: 'M_START', invokeId: this.invoke(), objClass: OPSTATUS_CLASS, objName: OPSTATUS_NAME, value: encodeOperationalStatus(true) });
      case 'operational':
        if (this.rejected(m as CdapReply)) return;
        this.state = 'enrolled';
        this.resolve({ address: this.address, enroller: this.enroller, constants: this.opts.constants, ...this.result, ...(this.pool ? { pool: this.pool } : {}), ...(this.peerLimits ? { lfdbMaxPdu: true } : {}) });
        return;
      default:
        this.stats.ignored++;
    }
  }

  private readChunk(i: number): void {
    const req: CdapRequest = { op: 'M_READ', invokeId: this.invoke(), objClass: CHUNK_CLASS, objName: `${CHUNK_NAME_PREFIX}${i}` };
    this.request(req);
  }
}
