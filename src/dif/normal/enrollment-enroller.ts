/**
 * enrollment-enroller.ts — the member side of the normal DIF's enrollment: answers new members on
 * any number of N-1 flows at once, assigns their addresses and hands them the DIF's state; and
 * answers members that are already in the DIF and add an adjacency to this one (they keep their
 * address).
 *
 * Owns: one session per N-1 flow (port), the members this enroller admitted and their addresses
 * (address-pool.ts: a member's address is never handed to another while the member is still known
 * — it stays bound through a lost flow for `addressHoldMs`, and a re-enrolling member gets it
 * back — nor while routing still reaches it), the blocks of addresses delegated to members that
 * enroll others (`wantsPool`), a refusal with a reason when this member has no addresses to give,
 * idempotent answers (a retransmitted request, same invoke id, gets the same reply from a small
 * per-session cache), session timeouts, and the checks on what the enrollee sends (DIF name,
 * data-transfer constants). An M_CONNECT with a new invoke id always starts over: from a member
 * still counted as a neighbour, on the same or another flow, the old state is dropped
 * (IRATI #462 ignored such a connect and left the peers out of sync).
 */
import { appNameEquals, appNameKey, type AppName } from '../naming.js';
import { ABS_SYNTAX, CdapError, replyTo, type CdapConnect, type CdapMessage, type CdapRequest } from './cdap.js';
import { constantsMismatch, decodeEnrollmentInfo, decodeOperationalStatus, encodeEnrollmentInfo, type AddressRange, type DataTransferConstants } from './cdap-objects.js';
import { AddressPool } from './address-pool.js';
import type { Clock, TimerHandle } from './clock.js';
import {
  CHUNK_CLASS,
  CHUNK_NAME_PREFIX,
  DEFAULT_CHUNK_BYTES,
  ENROLLMENT_CLASS,
  MAX_ENROLLMENT_CHUNKS,
  OPSTATUS_CLASS,
  buildChunks,
  chunkBudget,
  type CdapTransport,
  type EnrollmentContent,
  type MemberInfo,
} from './enrollment.js';

export type PortId = number | string;

function isEnrollmentMessage(m: CdapMessage): boolean {
  if (m.op === 'M_CONNECT' || m.op === 'M_CONNECT_R' || m.op === 'M_RELEASE' || m.op === 'M_RELEASE_R') return true;
  return m.objClass === ENROLLMENT_CLASS || m.objClass === CHUNK_CLASS || m.objClass === OPSTATUS_CLASS;
}

export interface EnrollerOptions {
  readonly clock: Clock;
  readonly name: AppName;
  readonly difName: string;
  /** This enroller's own address (never handed out; 0: not a member yet, every connect is refused). setAddress() changes it. */
  readonly address: number;
  readonly constants: DataTransferConstants;
  readonly lowerDifs?: readonly string[];
  /** Addresses handed to new members, first..last inclusive (none: it enrolls no new members, only adjacencies; setPool() gives it one). */
  readonly pool?: AddressRange;
  /** Addresses routing reaches now: never handed out, nor inside a delegated block. */
  readonly used?: () => Iterable<number>;
  /** The DIF's state a new member receives, read at its M_START. */
  readonly content: () => EnrollmentContent;
  readonly onEnrolled?: (member: MemberInfo, port: PortId) => void;
  /** A member's flow is gone (lost, or it re-enrolls on another one). */
  readonly onLost?: (member: MemberInfo, port: PortId, why: string) => void;
  /** Messages on an enrolled member's flow that are not enrollment (directory, routing, …). */
  readonly onOtherMessage?: (port: PortId, msg: CdapMessage) => void;
  /** A silent enrollee's session is dropped after this long (default 30 s). */
  readonly sessionTimeoutMs?: number;
  /** A member whose flow was lost keeps its address this long (default 900 s, the LFDB age). */
  readonly addressHoldMs?: number;
  readonly maxSessions?: number;
  readonly chunkBytes?: number;
}

type SessionState = 'connected' | 'started' | 'stopped' | 'enrolled';
const REPLY_CACHE = 8;

interface Session {
  readonly port: PortId;
  readonly transport: CdapTransport;
  state: SessionState | 'idle';
  connectInvoke: number | undefined;
  memberKey: string | undefined;
  memberName: AppName | undefined;
  chunks: Uint8Array[];
  readonly replies: Map<number, CdapMessage>;
  timer: TimerHandle | undefined;
}

interface Member {
  info: MemberInfo;
  state: 'enrolling' | 'enrolled' | 'lost';
  /** Admitted before (its address stays bound if this enrollment fails). */
  everEnrolled: boolean;
  port: PortId | undefined;
  holdTimer: TimerHandle | undefined;
}

export class Enroller {
  readonly stats = { connects: 0, enrolled: 0, rejected: 0, duplicates: 0, reenrollments: 0, sessionTimeouts: 0, ignored: 0, lost: 0, skippedRecords: 0 };
  private readonly sessions = new Map<PortId, Session>();
  private closed = false;
  private readonly members = new Map<string, Member>();
  private readonly pool: AddressPool;
  private address: number;

  constructor(private readonly opts: EnrollerOptions) {
    this.address = opts.address;
    this.pool = new AddressPool(opts.pool, () => this.address, opts.used);
  }

  /** This enroller's address now (it changes when its IPC process re-enrolls with another). */
  setAddress(address: number): void {
    this.address = address;
  }

  /** The range it assigns from (a block delegated to it at its own enrollment), or none. */
  setPool(range: AddressRange | undefined): void {
    const cur = this.pool.current;
    if (cur?.first === range?.first && cur?.last === range?.last) return;
    this.pool.setRange(range);
  }

  get addressRange(): AddressRange | undefined {
    return this.pool.current;
  }

  /** A new N-1 flow on which a member may enroll. */
  attach(port: PortId, transport: CdapTransport): void {
    this.flowLost(port, 'flow replaced');
    const s: Session = { port, transport, state: 'idle', connectInvoke: undefined, memberKey: undefined, memberName: undefined, chunks: [], replies: new Map(), timer: undefined };
    this.sessions.set(port, s);
    transport.onReceive((m) => {
      if (this.sessions.get(port) === s) this.receive(s, m);
    });
  }

  /** The N-1 flow `port` is gone. Its member keeps its address for addressHoldMs. */
  flowLost(port: PortId, why = 'N-1 flow lost'): void {
    const s = this.sessions.get(port);
    if (!s) return;
    this.sessions.delete(port);
    this.endSession(s, why);
  }

  /**
   * The IPC process closes: every session ends and every timer (session timeouts, the address
   * holds of lost members) is cleared; later calls set none. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sessions.values()) {
      this.opts.clock.clearTimer(s.timer);
      s.timer = undefined;
    }
    this.sessions.clear();
    for (const m of this.members.values()) {
      this.opts.clock.clearTimer(m.holdTimer);
      m.holdTimer = undefined;
    }
  }

  /** The member left the DIF for good (routing says so): its address returns to the pool. */
  forgetMember(name: AppName): void {
    const key = appNameKey(name);
    const m = this.members.get(key);
    if (!m) return;
    if (m.port !== undefined) this.flowLost(m.port, 'member forgotten');
    this.drop(key);
  }

  memberList(): MemberInfo[] {
    return [...this.members.values()].filter((m) => m.state === 'enrolled').map((m) => m.info);
  }

  snapshot(): { pool: AddressRange | undefined; members: { name: string; address: number; state: string; pool?: AddressRange }[]; sessions: { port: PortId; state: string }[]; stats: Enroller['stats'] } {
    return {
      pool: this.pool.current,
      members: [...this.members.entries()].map(([k, m]) => ({ name: k, address: m.info.address, state: m.state, ...(m.info.pool ? { pool: m.info.pool } : {}) })),
      sessions: [...this.sessions.values()].map((s) => ({ port: s.port, state: s.state })),
      stats: { ...this.stats },
    };
  }

  // ---- sessions --------------------------------------------------------------------------

  private endSession(s: Session, why: string): void {
    this.opts.clock.clearTimer(s.timer);
    s.timer = undefined;
    s.chunks = [];
    const key = s.memberKey;
    s.memberKey = undefined;
    s.state = 'idle';
    if (key === undefined) return;
    const m = this.members.get(key);
    if (!m || m.port !== s.port) return;
    m.port = undefined;
    if (m.state === 'enrolled') {
      this.stats.lost++;
      this.opts.onLost?.(m.info, s.port, why);
    }
    if (!m.everEnrolled) {
      this.drop(key);
      return;
    }
    m.state = 'lost';
    this.opts.clock.clearTimer(m.holdTimer);
    m.holdTimer = undefined;
    if (this.closed) return;
    m.holdTimer = this.opts.clock.setTimer(this.opts.addressHoldMs ?? 900_000, () => {
      if (this.members.get(key) === m && m.state === 'lost') this.drop(key);
    });
  }

  private drop(key: string): void {
    const m = this.members.get(key);
    if (!m) return;
    this.opts.clock.clearTimer(m.holdTimer);
    this.members.delete(key);
    this.pool.unbind(key, m.info.address);
    this.pool.releaseBlock(key);
  }

  private armSessionTimer(s: Session): void {
    this.opts.clock.clearTimer(s.timer);
    if (this.closed) return;
    s.timer = this.opts.clock.setTimer(this.opts.sessionTimeoutMs ?? 30_000, () => {
      s.timer = undefined;
      if (this.sessions.get(s.port) !== s || s.state === 'enrolled') return;
      this.stats.sessionTimeouts++;
      this.endSession(s, 'enrollment timed out');
    });
  }

  private answer(s: Session, req: CdapMessage, reply: CdapMessage): void {
    s.replies.set(req.invokeId, reply);
    if (s.replies.size > REPLY_CACHE) s.replies.delete(s.replies.keys().next().value!);
    if ('result' in reply && reply.result < 0) this.stats.rejected++;
    s.transport.send(reply);
  }

  private refuse(s: Session, req: CdapRequest, reason: string): void {
    this.answer(s, req, replyTo(req, -1, reason));
  }

  private receive(s: Session, m: CdapMessage): void {
    if (m.op === 'M_CONNECT') return this.connect(s, m);
    if (s.state === 'enrolled' && this.opts.onOtherMessage && !isEnrollmentMessage(m)) return this.opts.onOtherMessage(s.port, m);
    if (m.op === 'M_CONNECT_R' || m.op.endsWith('_R')) {
      this.stats.ignored++;
      return;
    }
    const req = m as CdapRequest;
    const cached = s.replies.get(req.invokeId);
    if (cached && cached.op === `${req.op}_R`) {
      this.stats.duplicates++;
      s.transport.send(cached);
      return;
    }
    if (req.op === 'M_RELEASE') {
      s.transport.send(replyTo(req, 0));
      this.endSession(s, 'the enrollee released the connection');
      return;
    }
    if (s.state === 'idle') return this.refuse(s, req, `${req.op} before M_CONNECT: connect first`);
    if (s.state !== 'enrolled') this.armSessionTimer(s);
    try {
      if (req.op === 'M_START' && req.objClass === ENROLLMENT_CLASS) return this.start(s, req);
      if (req.op === 'M_READ' && req.objClass === CHUNK_CLASS) return this.read(s, req);
      if (req.op === 'M_STOP' && req.objClass === ENROLLMENT_CLASS) {
        if (s.state !== 'started') return this.refuse(s, req, `M_STOP in state ${s.state}; expected after M_START`);
        s.state = 'stopped';
        return this.answer(s, req, replyTo(req, 0));
      }
      if (req.op === 'M_START' && req.objClass === OPSTATUS_CLASS) return this.operational(s, req);
    } catch (e) {
      if (e instanceof CdapError) return this.refuse(s, req, `bad ${req.objClass} value: ${e.message}`);
      throw e;
    }
    this.refuse(s, req, `${req.op} ${req.objClass} is not part of enrollment`);
  }

  private connect(s: Session, m: CdapConnect): void {
    const reply = (result: number, reason: string): CdapMessage => ({ op: 'M_CONNECT_R', invokeId: m.invokeId, absSyntax: ABS_SYNTAX, src: this.opts.name, dst: m.src, result, reason });
    if (s.connectInvoke === m.invokeId && s.state !== 'idle') {
      this.stats.duplicates++;
      s.transport.send(s.replies.get(m.invokeId) ?? reply(0, ''));
      return;
    }
    this.stats.connects++;
    // A new connect always starts over on this flow (whatever state it was in).
    this.endSession(s, 're-enrolling');
    s.replies.clear();
    s.connectInvoke = m.invokeId;
    if (this.address === 0) return this.answer(s, m, reply(-1, `${this.opts.name.processName} is not a member of ${this.opts.difName} yet; try again later`));
    if (m.absSyntax !== ABS_SYNTAX) return this.answer(s, m, reply(-1, `abstract syntax ${m.absSyntax} is not supported; this enroller speaks ${ABS_SYNTAX}`));
    if (!appNameEquals(m.dst, this.opts.name) && !appNameEquals(m.dst, { processName: this.opts.difName })) {
      return this.answer(s, m, reply(-1, `this is ${this.opts.name.processName} of DIF ${this.opts.difName}, not ${m.dst.processName}`));
    }
    const active = [...this.sessions.values()].filter((x) => x !== s && x.state !== 'idle' && x.state !== 'enrolled').length;
    if (active >= (this.opts.maxSessions ?? 64)) return this.answer(s, m, reply(-1, 'too many enrollments at once; try again later'));
    const key = appNameKey(m.src);
    if (appNameEquals(m.src, this.opts.name)) return this.answer(s, m, reply(-1, 'an IPC process cannot enroll with itself'));
    const member = this.members.get(key);
    if (member?.port !== undefined && member.port !== s.port) {
      // Still counted as a neighbour on another flow: that state is stale (IRATI #462).
      this.stats.reenrollments++;
      this.flowLost(member.port, 're-enrolling on another flow');
    } else if (member?.everEnrolled) this.stats.reenrollments++;
    s.memberKey = key;
    s.memberName = m.src;
    s.state = 'connected';
    this.armSessionTimer(s);
    this.answer(s, m, reply(0, ''));
  }

  private start(s: Session, req: CdapRequest): void {
    if (s.state !== 'connected') return this.refuse(s, req, `M_START in state ${s.state}; expected right after M_CONNECT`);
    const info = decodeEnrollmentInfo(req.value);
    if (info.difName !== this.opts.difName) return this.refuse(s, req, `wrong DIF: this enroller is in ${JSON.stringify(this.opts.difName)}, the enrollee asks for ${JSON.stringify(info.difName)}`);
    if (!info.constants) return this.refuse(s, req, 'M_START carries no data-transfer constants');
    const diff = constantsMismatch(info.constants, this.opts.constants);
    if (diff.length) return this.refuse(s, req, `data-transfer constants differ (enrollee ≠ DIF): ${diff.join(', ')}`);
    const key = s.memberKey!;
    const old = this.members.get(key);
    let address: number;
    let block: AddressRange | undefined;
    if (info.member) {
      // Already in the DIF (an added adjacency): its address stays; this end assigns nothing.
      const why = this.claimProblem(key, info.address);
      if (why) return this.refuse(s, req, why);
      address = info.address;
      block = old?.info.pool;
      if (old && old.info.address !== address) this.pool.unbind(key, old.info.address);
    } else {
      const a = this.assign(key, info.address);
      if (a === undefined) {
        const r = this.pool.current;
        return this.refuse(s, req, r ? `address pool ${r.first}..${r.last} is exhausted` : `${this.opts.name.processName} has no addresses to assign in ${this.opts.difName}; enroll through the DIF's enroller or a member that enrolls others (acceptEnrollment)`);
      }
      address = a;
      block = info.wantsPool ? this.pool.delegate(key, info.pool) : undefined;
    }
    const built = buildChunks(this.opts.content(), chunkBudget(s.transport, this.opts.chunkBytes ?? DEFAULT_CHUNK_BYTES), MAX_ENROLLMENT_CHUNKS);
    if (!built) return this.refuse(s, req, `the DIF's state needs more than ${MAX_ENROLLMENT_CHUNKS} chunks`);
    this.stats.skippedRecords += built.skipped;
    s.chunks = built.chunks;
    const name = s.memberName!;
    this.opts.clock.clearTimer(old?.holdTimer);
    this.members.set(key, { info: { name, address, lowerDifs: info.lowerDifs, ...(block ? { pool: block } : {}), ...(info.lfdbMaxPdu ? { lfdbMaxPdu: true } : {}) }, state: old?.state === 'enrolled' ? 'enrolled' : 'enrolling', everEnrolled: old?.everEnrolled ?? false, port: s.port, holdTimer: undefined });
    this.pool.bind(key, address);
    s.state = 'started';
    const value = encodeEnrollmentInfo({ address, difName: this.opts.difName, lowerDifs: this.opts.lowerDifs ?? [], constants: this.opts.constants, ...(block ? { pool: block } : {}), lfdbMaxPdu: true });
    this.answer(s, req, replyTo(req, 0, '', value));
  }

  private read(s: Session, req: CdapRequest): void {
    if (s.state !== 'started') return this.refuse(s, req, `M_READ in state ${s.state}; chunks are read between M_START and M_STOP`);
    const text = req.objName.startsWith(CHUNK_NAME_PREFIX) ? req.objName.slice(CHUNK_NAME_PREFIX.length) : '';
    const i = /^\d{1,6}$/.test(text) ? Number(text) : -1;
    const chunk = s.chunks[i];
    if (!chunk) return this.refuse(s, req, `no chunk ${JSON.stringify(req.objName)} (there are ${s.chunks.length})`);
    this.answer(s, req, replyTo(req, 0, '', chunk));
  }

  private operational(s: Session, req: CdapRequest): void {
    if (s.state !== 'stopped') return this.refuse(s, req, `operational status in state ${s.state}; expected after M_STOP`);
    if (!decodeOperationalStatus(req.value)) return this.refuse(s, req, 'the enrollee is not running');
    const m = this.members.get(s.memberKey!)!;
    m.state = 'enrolled';
    m.everEnrolled = true;
    s.state = 'enrolled';
    s.chunks = [];
    this.opts.clock.clearTimer(s.timer);
    s.timer = undefined;
    this.stats.enrolled++;
    this.answer(s, req, replyTo(req, 0));
    this.opts.onEnrolled?.(m.info, s.port);
  }

  /** The member's address: the one it had, else its proposal if free, else the next free one. */
  private assign(key: string, proposed: number): number | undefined {
    const known = this.members.get(key);
    if (known) return known.info.address;
    if (this.pool.isFree(proposed)) return proposed;
    return this.pool.next();
  }

  /** Why a member may not keep `address` here (an adjacency enrollment), or undefined. */
  private claimProblem(key: string, address: number): string | undefined {
    if (address === 0) return 'an adjacency enrollment must name the address the member has';
    if (address === this.address) return `address ${address} is this member's own (${this.opts.name.processName}); the enrollee must join with another`;
    const holder = this.pool.holder(address);
    if (holder !== undefined && holder !== key) return `address ${address} is held by another member (${holder}) here; the enrollee must join again for an address of its own`;
    return undefined;
  }
}
