/**
 * flow-alloc.ts — the normal DIF's flow allocator, message side (not the data path): allocation
 * requests to a named application anywhere in the DIF, their answers, and flow deletion.
 *
 * Owns: M_CREATE / M_CREATE_R / M_DELETE / M_DELETE_R of object class "flow" (value FlowRequest),
 * named `/fa/flows/<requester address>-<requester CEP-id>`; retransmission of every request on a
 * timeout (management PDUs travel unreliably) and idempotent answers to retransmitted ones (a
 * duplicate M_CREATE gets the same M_CREATE_R; one for a flow already deleted gets a refusal,
 * never a second flow); negative answers with reasons (not in the directory, refused by the
 * application, no answer from it, no CEP-id, too many flows, unreachable); CEP-ids from a
 * CepAllocator (quarantined after use, IRATI #491); bounds on flows and remembered answers.
 *
 * Max SDU. The request carries the requester's max SDU; `maxSduOpen` says its application left it
 * open (what was offered is only what the requester's route carries). The responder's decision
 * may then lower it (FlowDecision.maxSdu: what its route back carries) and the answer carries the
 * agreed value, which the requester takes if it is smaller; an explicit max SDU is never changed.
 */
import { type AppName } from '../naming.js';
import { CdapError, replyTo, type CdapMessage, type CdapReply, type CdapRequest } from './cdap.js';
import { decodeFlowRequest, encodeFlowRequest, type FlowRequest } from './cdap-objects.js';
import { CepError, type CepAllocator } from './cep-alloc.js';
import type { Clock, TimerHandle } from './clock.js';

export const FLOW_CLASS = 'flow';
export const FLOW_NAME_PREFIX = '/fa/flows/';

export type FlowAllocErrorCode = 'ERR_FA_NO_SUCH_APP' | 'ERR_FA_REJECTED' | 'ERR_FA_TIMEOUT' | 'ERR_FA_NO_CEP' | 'ERR_FA_TOO_MANY' | 'ERR_FA_UNREACHABLE' | 'ERR_FA_NO_ADDRESS';

export class FlowAllocError extends Error {
  override name = 'FlowAllocError';
  constructor(
    readonly code: FlowAllocErrorCode,
    message: string,
    /** ERR_FA_REJECTED: the reason the other end gave. */
    readonly peerReason?: string,
  ) {
    super(message);
  }
}

export interface FlowInfo {
  /** `/fa/flows/<requester address>-<requester CEP>`: the same at both ends. */
  readonly name: string;
  readonly initiator: boolean;
  readonly srcApp: AppName;
  readonly dstApp: AppName;
  readonly localAddr: number;
  readonly remoteAddr: number;
  readonly localCep: number;
  readonly remoteCep: number;
  readonly localPort: number;
  readonly remotePort: number;
  readonly qosCube: number;
  /** First EFCP sequence number of this end's PDUs and of the other end's (0 if not given). */
  readonly localInitSeq: number;
  readonly remoteInitSeq: number;
  /** The flow's agreed max SDU: as the requester asked it, or the responder's lower answer to an open request (0: the DIF's maximum). */
  readonly maxSdu: number;
}

/** A responder's decision; `maxSdu` (accept): the agreed max SDU, if it lowered an open request's. */
export type FlowDecision = { readonly accept: true; readonly port: number; readonly initSeq?: number; readonly maxSdu?: number } | { readonly accept: false; readonly reason: string };

/**
 * The max SDU a requester takes from the answer `ans` to its request for `asked` (0: the DIF's
 * maximum): the answer's if the request was open and the answer is smaller, else what it asked.
 */
export function agreedMaxSdu(asked: number, open: boolean, ans: number | undefined): number {
  if (!open || ans === undefined || ans <= 0) return asked;
  return asked === 0 || ans < asked ? ans : asked;
}

export interface FlowAllocatorOptions {
  readonly clock: Clock;
  /** This member's address (0 while not enrolled). */
  readonly localAddress: () => number;
  /** The directory: which member hosts `app`. */
  readonly lookup: (app: AppName) => number | undefined;
  /** Send a management message to the member at `addr` (routed by the RMT). */
  readonly send: (addr: number, msg: CdapMessage) => void;
  /** A request for a local application: accept with its port, or refuse with a reason. */
  readonly onRequest: (req: FlowRequest) => FlowDecision | Promise<FlowDecision>;
  /** The other end deleted the flow, or it was lost. */
  readonly onDeleted?: (flow: FlowInfo, reason: string) => void;
  /**
   * A flow exists at this end, called synchronously before the requester's promise settles and
   * before the responder's answer is sent: the data path (EFCP, CEP binding) is set up here, so
   * no data PDU of the other end can arrive before it.
   */
  readonly onEstablished?: (flow: FlowInfo) => void;
  readonly ceps: CepAllocator;
  readonly timeoutMs?: number;
  readonly retries?: number;
  /** How long the local application may take to accept (default 10 s). */
  readonly acceptTimeoutMs?: number;
  /** How long a requester keeps retransmitting M_CREATE (default acceptTimeoutMs + 5 s, so a slow
   *  application's answer still arrives; the responder ignores duplicates while it waits). */
  readonly allocateTimeoutMs?: number;
  readonly maxFlows?: number;
}

interface Outgoing {
  readonly msg: CdapRequest;
  readonly dst: number;
  /** Keep retransmitting until then, even past `retries`. */
  readonly deadline: number | undefined;
  attempts: number;
  timer: TimerHandle | undefined;
  /** The reply; undefined after the last retry, or with `lost` when the member went away. */
  readonly done: (reply: CdapReply | undefined, lost?: string) => void;
}

interface Incoming {
  state: 'pending' | 'answered';
  reply: CdapReply | undefined;
  /** When an answered entry may be forgotten (quarantine of the requester's CEP). */
  until: number;
  timer: TimerHandle | undefined;
}

export class FlowAllocator {
  readonly stats = { requests: 0, allocated: 0, refused: 0, timeouts: 0, retransmissions: 0, duplicates: 0, deleted: 0, deleteTimeouts: 0, badMessages: 0, ignored: 0, hookErrors: 0 };
  private readonly flowsByName = new Map<string, FlowInfo>();
  private readonly outgoing = new Map<number, Outgoing>();
  private readonly incoming = new Map<string, Incoming>();
  private readonly incomingFifo: string[] = [];
  private nextInvoke = 1;

  constructor(private readonly opts: FlowAllocatorOptions) {}

  private get maxFlows(): number {
    return this.opts.maxFlows ?? 4096;
  }

  flows(): FlowInfo[] {
    return [...this.flowsByName.values()];
  }

  /** Allocate a flow from local `srcApp` (its port `srcPort`) to `dstApp`, wherever it is. */
  allocate(req: { srcApp: AppName; dstApp: AppName; srcPort: number; qosCube: number; initSeq?: number; maxSdu?: number; maxSduOpen?: boolean }): Promise<FlowInfo> {
    const local = this.opts.localAddress();
    if (local === 0) return Promise.reject(new FlowAllocError('ERR_FA_NO_ADDRESS', 'this IPC process is not enrolled in a DIF yet'));
    const dst = this.opts.lookup(req.dstApp);
    if (dst === undefined) return Promise.reject(new FlowAllocError('ERR_FA_NO_SUCH_APP', `${req.dstApp.processName} is not registered in this DIF`));
    if (this.flowsByName.size + this.outgoing.size >= this.maxFlows) return Promise.reject(new FlowAllocError('ERR_FA_TOO_MANY', `${this.maxFlows} flows already; deallocate some first`));
    let cep: number;
    try {
      cep = this.opts.ceps.allocate();
    } catch (e) {
      if (e instanceof CepError) return Promise.reject(new FlowAllocError('ERR_FA_NO_CEP', e.message));
      throw e;
    }
    this.stats.requests++;
    const name = `${FLOW_NAME_PREFIX}${local}-${cep}`;
    const fr: FlowRequest = { srcApp: req.srcApp, dstApp: req.dstApp, srcPort: req.srcPort, dstPort: 0, srcAddr: local, dstAddr: dst, srcCep: cep, dstCep: 0, qosCube: req.qosCube, result: 0, reason: '', srcInitSeq: req.initSeq ?? 0, maxSdu: req.maxSdu ?? 0, maxSduOpen: req.maxSduOpen === true };
    return new Promise<FlowInfo>((resolve, reject) => {
      this.request(dst, { op: 'M_CREATE', invokeId: 0, objClass: FLOW_CLASS, objName: name, value: encodeFlowRequest(fr) }, this.opts.clock.now() + (this.opts.allocateTimeoutMs ?? (this.opts.acceptTimeoutMs ?? 10_000) + 5000), (reply, lost) => {
        const fail = (code: FlowAllocErrorCode, msg: string, peerReason?: string) => {
          this.opts.ceps.release(cep);
          reject(new FlowAllocError(code, msg, peerReason));
        };
        if (lost !== undefined) return fail('ERR_FA_UNREACHABLE', `flow to ${req.dstApp.processName} failed: ${lost}`);
        if (!reply) {
          this.stats.timeouts++;
          // The answer may be what was lost: tell the other end to drop its half, if any.
          this.request(dst, { op: 'M_DELETE', invokeId: 0, objClass: FLOW_CLASS, objName: name }, undefined, () => {});
          return fail('ERR_FA_TIMEOUT', `no answer from member ${dst} for ${req.dstApp.processName}`);
        }
        if (reply.result < 0) {
          this.stats.refused++;
          return fail('ERR_FA_REJECTED', `member ${dst} refused the flow to ${req.dstApp.processName}: ${reply.reason || `result ${reply.result}`}`, reply.reason || `result ${reply.result}`);
        }
        let ans: FlowRequest;
        try {
          ans = decodeFlowRequest(reply.value);
        } catch (e) {
          this.stats.badMessages++;
          return fail('ERR_FA_REJECTED', `bad answer from member ${dst}: ${(e as Error).message}`);
        }
        const flow: FlowInfo = { name, initiator: true, srcApp: req.srcApp, dstApp: req.dstApp, localAddr: local, remoteAddr: dst, localCep: cep, remoteCep: ans.dstCep, localPort: req.srcPort, remotePort: ans.dstPort, qosCube: req.qosCube,
          localInitSeq: req.initSeq ?? 0, remoteInitSeq: ans.dstInitSeq ?? 0, maxSdu: agreedMaxSdu(req.maxSdu ?? 0, req.maxSduOpen === true, ans.maxSdu) };
        this.flowsByName.set(name, flow);
        this.stats.allocated++;
        this.established(flow);
        resolve(flow);
      });
    });
  }

  /** End a local flow: its CEP-id goes to quarantine, the other end is told (retried). */
  deallocate(name: string, reason = 'deallocated'): boolean {
    const f = this.flowsByName.get(name);
    if (!f) return false;
    this.endFlow(f);
    const fr: FlowRequest = { srcApp: f.srcApp, dstApp: f.dstApp, srcPort: 0, dstPort: 0, srcAddr: f.localAddr, dstAddr: f.remoteAddr, srcCep: f.localCep, dstCep: f.remoteCep, qosCube: f.qosCube, result: 0, reason };
    this.request(f.remoteAddr, { op: 'M_DELETE', invokeId: 0, objClass: FLOW_CLASS, objName: name, value: encodeFlowRequest(fr) }, undefined, (r) => {
      if (!r) this.stats.deleteTimeouts++;
    });
    return true;
  }

  /** The member at `addr` is gone or unreachable: its flows end and requests to it fail now. */
  memberLost(addr: number, why = `member ${addr} is unreachable`): void {
    for (const f of [...this.flowsByName.values()]) {
      if (f.remoteAddr !== addr) continue;
      this.endFlow(f);
      this.opts.onDeleted?.(f, why);
    }
    for (const [id, o] of [...this.outgoing]) {
      if (o.dst !== addr) continue;
      this.opts.clock.clearTimer(o.timer);
      this.outgoing.delete(id);
      o.done(undefined, why);
    }
  }

  /** A management message from the member at `from`. */
  receive(from: number, m: CdapMessage): void {
    if (m.op === 'M_CONNECT' || m.op === 'M_CONNECT_R' || !('objClass' in m) || m.objClass !== FLOW_CLASS) {
      this.stats.ignored++;
      return;
    }
    if (m.op === 'M_CREATE_R' || m.op === 'M_DELETE_R') {
      const o = this.outgoing.get(m.invokeId);
      if (!o || o.msg.objName !== m.objName || o.dst !== from) {
        this.stats.ignored++;
        return;
      }
      this.opts.clock.clearTimer(o.timer);
      this.outgoing.delete(m.invokeId);
      o.done(m as CdapReply);
      return;
    }
    if (m.op === 'M_CREATE') return this.incomingCreate(from, m as CdapRequest);
    if (m.op === 'M_DELETE') return this.incomingDelete(from, m as CdapRequest);
    this.stats.ignored++;
  }

  snapshot(): { flows: FlowInfo[]; pendingOut: number; remembered: number; stats: FlowAllocator['stats'] } {
    return { flows: this.flows(), pendingOut: this.outgoing.size, remembered: this.incoming.size, stats: { ...this.stats } };
  }

  // ---- internals -------------------------------------------------------------------------

  private established(flow: FlowInfo): void {
    try {
      this.opts.onEstablished?.(flow);
    } catch {
      this.stats.hookErrors++;
    }
  }

  private endFlow(f: FlowInfo): void {
    this.flowsByName.delete(f.name);
    this.opts.ceps.release(f.localCep);
    this.stats.deleted++;
    if (!f.initiator) this.remember(f.name, { state: 'answered', reply: undefined, until: 0, timer: undefined });
  }

  private request(dst: number, msg: CdapRequest, deadline: number | undefined, done: Outgoing['done']): void {
    const id = this.nextInvoke;
    this.nextInvoke = this.nextInvoke >= 0xffffffff ? 1 : this.nextInvoke + 1;
    const o: Outgoing = { msg: { ...msg, invokeId: id }, dst, deadline, attempts: 0, timer: undefined, done };
    this.outgoing.set(id, o);
    this.transmit(id, o);
  }

  private transmit(id: number, o: Outgoing): void {
    o.attempts++;
    o.timer = this.opts.clock.setTimer(this.opts.timeoutMs ?? 1000, () => {
      if (this.outgoing.get(id) !== o) return;
      if (o.attempts > (this.opts.retries ?? 3) && (o.deadline === undefined || this.opts.clock.now() >= o.deadline)) {
        this.outgoing.delete(id);
        o.done(undefined);
        return;
      }
      this.stats.retransmissions++;
      this.transmit(id, o);
    });
    this.opts.send(o.dst, o.msg);
  }

  private refuse(from: number, req: CdapRequest, reason: string): CdapReply {
    const r = replyTo(req, -1, reason);
    this.stats.refused++;
    this.opts.send(from, r);
    return r;
  }

  /** Answers kept for duplicates: at most this many (pending ones included). */
  private get maxRemembered(): number {
    return 2 * this.maxFlows;
  }

  /** Forget answers whose requester's CEP quarantine is over, and the oldest ones beyond the cap. */
  private purgeIncoming(): void {
    const now = this.opts.clock.now();
    while (this.incomingFifo.length) {
      const k = this.incomingFifo[0]!;
      const e = this.incoming.get(k);
      if (e && (e.state === 'pending' || (e.until > now && this.incoming.size < this.maxRemembered))) break;
      this.incomingFifo.shift();
      if (e) this.incoming.delete(k);
    }
  }

  /** Remember the answer for a requester's flow name until its CEP quarantine is over. */
  private remember(name: string, e: Incoming): void {
    this.purgeIncoming();
    e.until = this.opts.clock.now() + this.opts.ceps.quarantineMs;
    if (!this.incoming.has(name)) this.incomingFifo.push(name);
    this.incoming.set(name, e);
  }

  private incomingCreate(from: number, req: CdapRequest): void {
    this.purgeIncoming();
    const seen = this.incoming.get(req.objName);
    if (seen) {
      this.stats.duplicates++;
      if (seen.state === 'pending') return; // the answer is on its way
      this.opts.send(from, seen.reply ?? replyTo(req, -1, 'this flow was already deleted'));
      return;
    }
    let fr: FlowRequest;
    try {
      fr = decodeFlowRequest(req.value);
    } catch (e) {
      this.stats.badMessages++;
      this.refuse(from, req, `bad flow request: ${e instanceof CdapError ? e.message : String(e)}`);
      return;
    }
    const local = this.opts.localAddress();
    if (fr.dstAddr !== local || fr.srcAddr !== from || req.objName !== `${FLOW_NAME_PREFIX}${fr.srcAddr}-${fr.srcCep}`) {
      this.refuse(from, req, `flow request names member ${fr.dstAddr} / ${req.objName}; this is member ${local}`);
      return;
    }
    if (this.incoming.size >= this.maxRemembered) {
      this.refuse(from, req, `member ${local} has too many flow requests pending; try again later`);
      return;
    }
    if (this.flowsByName.size + this.outgoing.size >= this.maxFlows) {
      this.remember(req.objName, { state: 'answered', reply: this.refuse(from, req, `member ${local} has ${this.maxFlows} flows already`), until: 0, timer: undefined });
      return;
    }
    const entry: Incoming = { state: 'pending', reply: undefined, until: 0, timer: undefined };
    this.remember(req.objName, entry);
    const finish = (d: FlowDecision) => {
      if (entry.state !== 'pending' || this.incoming.get(req.objName) !== entry) return;
      this.opts.clock.clearTimer(entry.timer);
      entry.state = 'answered';
      entry.until = this.opts.clock.now() + this.opts.ceps.quarantineMs;
      if (!d.accept) {
        entry.reply = this.refuse(from, req, d.reason);
        return;
      }
      let cep: number;
      try {
        cep = this.opts.ceps.allocate();
      } catch (e) {
        entry.reply = this.refuse(from, req, e instanceof CepError ? e.message : String(e));
        return;
      }
      const maxSdu = fr.maxSduOpen === true ? agreedMaxSdu(fr.maxSdu ?? 0, true, d.maxSdu) : (fr.maxSdu ?? 0);
      const flow: FlowInfo = { name: req.objName, initiator: false, srcApp: fr.srcApp, dstApp: fr.dstApp, localAddr: local, remoteAddr: from, localCep: cep, remoteCep: fr.srcCep, localPort: d.port, remotePort: fr.srcPort, qosCube: fr.qosCube,
        localInitSeq: d.initSeq ?? 0, remoteInitSeq: fr.srcInitSeq ?? 0, maxSdu };
      this.flowsByName.set(flow.name, flow);
      this.stats.allocated++;
      this.established(flow);
      entry.reply = replyTo(req, 0, '', encodeFlowRequest({ ...fr, dstPort: d.port, dstCep: cep, dstInitSeq: d.initSeq ?? 0, maxSdu }));
      this.opts.send(from, entry.reply);
    };
    const ms = this.opts.acceptTimeoutMs ?? 10_000;
    entry.timer = this.opts.clock.setTimer(ms, () => finish({ accept: false, reason: `${fr.dstApp.processName} did not answer within ${ms} ms` }));
    let decision: FlowDecision | Promise<FlowDecision>;
    try {
      decision = this.opts.onRequest(fr);
    } catch (e) {
      decision = { accept: false, reason: `the application failed: ${(e as Error).message}` };
    }
    if (decision instanceof Promise) decision.then(finish, (e: unknown) => finish({ accept: false, reason: `the application failed: ${e instanceof Error ? e.message : String(e)}` }));
    else finish(decision);
  }

  private incomingDelete(from: number, req: CdapRequest): void {
    const f = this.flowsByName.get(req.objName);
    let reason = 'deleted by the other end';
    try {
      if (req.value) reason = decodeFlowRequest(req.value).reason || reason;
    } catch {
      this.stats.badMessages++;
    }
    if (f && f.remoteAddr === from) {
      this.endFlow(f);
      this.opts.onDeleted?.(f, reason);
    } else {
      // A request still waiting for the application: it will not be answered with a flow.
      const seen = this.incoming.get(req.objName);
      if (seen?.state === 'pending') {
        this.opts.clock.clearTimer(seen.timer);
        seen.state = 'answered';
        seen.reply = undefined;
        seen.until = this.opts.clock.now() + this.opts.ceps.quarantineMs;
      }
    }
    // Idempotent: a retransmitted M_DELETE (flow already gone) gets success too.
    this.opts.send(from, replyTo(req, 0));
  }
}
