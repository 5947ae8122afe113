/**
 * ipcp.ts — the shim IPC process over UDP/IPv4: a shim DIF between hosts in different L2
 * domains (like rlite's shim-udp4 and IRATI's shim-tcp-udp), offering the same IPC API
 * (api.ts) as the other IPC processes, so applications and the normal DIF use it alike.
 *
 * Owns: one UDP socket bound to the configured well-known address, the name → address table
 * (the configuration's `peers`, the hosts file), the configuration, allocateFlow (the requester
 * side up to sending ALLOC_REQ), letting the socket go, the data path (sendData, the send queue bound) and
 * the datagram counters. The flow table, the allocation / release state machine, the keepalive
 * and the shared counters are the datagram shims' (../shim-datagram/ipcp.ts), shared with
 * shim-eth.
 *
 * Design (wire format in wire.ts):
 * - One socket for control and data. rlite opens a UDP socket per flow, so a flow is its
 *   5-tuple and data carries no header; one socket with a 5-byte demultiplexing header (kind +
 *   the receiver's flow id) costs 5 bytes per SDU and saves a file descriptor and a port per
 *   flow, needs no port range in firewalls, and leaves one place where datagrams are checked.
 * - Names: an application is resolved to an address by the `peers` table (exact name, or its
 *   process name alone), else by its process name as a host name of `hostsFile` (at `peerPort`,
 *   the peers' well-known port). A `peers` entry may be "HOST:PORT": the host name is resolved by
 *   DNS (resolve.ts: the system resolver, or `dnsServers`; bounded by `resolveTimeoutMs`, kept
 *   `resolveCacheMs`, asked again after a failed allocation); a failure is the allocation's
 *   error ('timeout', or 'rejected' with peerReason "unresolved: not_found"). Datagrams are accepted only from the
 *   addresses in `peers` and `allow` (others: drop 'unknown_peer'), so a stranger on the
 *   network cannot open flows or spend this IPC process's budgets.
 * - Allocation: the requester picks its flow id, sends ALLOC_REQ (resent every `retryMs`, UDP
 *   may lose it) and waits up to `allocateTimeoutMs`; the responder reserves its own id, asks
 *   the registered application, answers ALLOC_RESP (a duplicate request gets the same answer
 *   while the flow lives). Requests waiting for an application are bounded (`maxPendingRequests`)
 *   and expire after `allocateTimeoutMs`; flows are bounded (`maxFlows`).
 * - Release: DEALLOC to the peer, the flow ends at once (no confirmation: ids are never reused,
 *   so a late datagram of an old flow is recognised and counted as 'stale').
 * - Liveness: every `keepaliveMs` each end sends KEEPALIVE on a flow it sent nothing on in that
 *   period; a flow that heard nothing from its peer for `keepaliveTimeoutMs` ends with cause
 *   'peer' and a reason saying so (so it ends within keepaliveTimeoutMs + keepaliveMs). A
 *   KEEPALIVE or ALLOC_RESP for a flow this end does not know is answered with DEALLOC, so a
 *   restarted peer's flows end at once.
 * - QoS: UDP may lose and reorder; this shim grants unreliable, unordered flows only and refuses
 *   `reliable` or `inOrder` ('invalid_qos'): a normal DIF above provides them. Max SDU = mtu − 5.
 * - Bounds: a datagram above `mtu` is dropped ('oversize'), as is a DATA SDU above its flow's max
 *   SDU; bytes waiting in the socket's send queue are bounded (`txQueueBytes`: write() returns
 *   false, 'drain' follows).
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { closeSync, openSync, readSync } from 'node:fs';
import { isIP } from 'node:net';
import { DifError, type AllocateOptions, type Flow, type IpcProcess, type QosRequest } from '../api.js';
import { appNameKey, formatAppName, type AppName } from '../naming.js';
import { nameArg } from '../core/args.js';
import type { IpcpCounters, ObservableIpcp } from '../core/observe.js';
import { Registrations } from '../core/registrations.js';
import { logger as rootLogger, type Logger } from '../../sys/log.js';
import { DATA_HEADER_BYTES, MAX_UDP_PAYLOAD, WireError, decodeMessage, encodeData, encodeMessage, type WireMessage } from './wire.js';
import { UdpFlow, type UdpFlowRequest } from './flow.js';
import { HostResolveError, HostResolver, parseHostPort } from './resolve.js';
import { DatagramShimIpcp, type DatagramEntry, type DatagramRegistration, type DatagramResumeOptions } from '../shim-datagram/ipcp.js';
import { datagramLimits, datagramRxQueues, intOption, type DatagramLimitOptions } from '../shim-datagram/options.js';
import { CodedError } from '../../sys/coded-error.js';

export const DEFAULT_MTU = 1472;

/** Drop reasons of datagrams (and SDUs) that went nowhere. */
export const UDP_DROP_REASONS = ['unknown_peer', 'malformed', 'oversize', 'unknown_flow', 'stale', 'no_registration', 'limit'] as const;
export type UdpDropReason = (typeof UDP_DROP_REASONS)[number];

export interface UdpAddress {
  host: string;
  port: number;
}

/** Parse "IPv4:PORT" (port 0..65535; 0 only where `allowZero`). Throws an Error completing "<text> …". */
export function parseUdpAddress(text: string, allowZero = false): UdpAddress {
  const m = /^([0-9.]+):(\d{1,5})$/.exec(text);
  if (!m || isIP(m[1]!) !== 4) throw new Error('is not IPv4:PORT (for example "127.0.0.1:7300")');
  const port = Number(m[2]);
  if (port > 65535 || (port === 0 && !allowZero)) throw new Error(`has port ${port}: use 1..65535`);
  return { host: m[1]!, port };
}

/** A hosts file is read up to this many bytes. */
export const MAX_HOSTS_FILE_BYTES = 1 << 20;

/** The (host name lower-cased, IPv4 address) pairs of a hosts file, in order; other lines are skipped. */
export function parseHosts(text: string): [string, string][] {
  const out: [string, string][] = [];
  for (const line of text.split('\n')) {
    const fields = line.replace(/#.*/, '').trim().split(/\s+/);
    if (fields.length < 2 || isIP(fields[0]!) !== 4) continue;
    for (const name of fields.slice(1)) out.push([name.toLowerCase(), fields[0]!]);
  }
  return out;
}

const addrKey = (host: string, port: number): string => `${host}:${port}`;

export interface ShimUdpOptions extends DatagramResumeOptions, DatagramLimitOptions {
  difName: string;
  /** This IPC process's name (default `<difName>.<bind>`). */
  name?: string;
  /** Local address to bind, "IPv4:PORT" (port 0: any free port, for tests). */
  bind: string;
  /** Application name (or process name) → "IPv4:PORT" or "HOST:PORT" (resolved by DNS, resolve.ts) of the IPC process that hosts it. */
  peers?: Record<string, string>;
  /** DNS servers ("IPv4" or "IPv4:PORT") for the HOST:PORT peers (default: the system's resolver: /etc/hosts, then DNS). */
  dnsServers?: string[];
  /** Most time one resolution of a HOST:PORT peer may take (default 2000 ms). */
  resolveTimeoutMs?: number;
  /** How long a resolved address is kept (default 60000 ms; a failed allocation forgets it at once). */
  resolveCacheMs?: number;
  /** More addresses datagrams are accepted from (peers that only call in). */
  allow?: string[];
  /**
   * A hosts file (`/etc/hosts` format) read once at the start: an application whose name is not
   * in `peers` is looked for by its process name among the file's host names (IPv4 entries
   * only), at `peerPort`; the file's IPv4 addresses at `peerPort` may send datagrams.
   */
  hostsFile?: string;
  /** The well-known port of the peers found in `hostsFile` (default: this IPC process's bind port). */
  peerPort?: number;
  /** Largest datagram sent or accepted (default 1472: IPv4 without fragmentation over 1500-byte Ethernet). */
  mtu?: number;
  txQueueBytes?: number;
  logger?: Logger;
}

export type ShimUdpErrorCode = 'bind_failed' | 'invalid_config';

/** Building the IPC process failed (bad option, the port is taken). */
export class ShimUdpError extends CodedError<ShimUdpErrorCode> {
  override name = 'ShimUdpError';
}

type Entry = DatagramEntry<UdpAddress>;

export class ShimUdpIpcp extends DatagramShimIpcp<UdpAddress, UdpDropReason> implements IpcProcess, ObservableIpcp {
  readonly ipcpType = 'shim-udp' as const;
  readonly difName: string;
  readonly ipcpName: string;
  readonly maxSdu: number;
  readonly mtu: number;
  readonly rxQueueLimit: number;
  readonly rxQueueBytes: number;
  readonly rxQueueTotalBytes: number;
  protected readonly medium = 'UDP, which may lose and reorder';
  readonly stats = {
    txDatagrams: 0, txBytes: 0, rxDatagrams: 0, rxBytes: 0, txErrors: 0,
    resolved: 0, unresolved: 0,
    allocRequested: 0, allocAccepted: 0, allocRejected: 0, allocTimedOut: 0, allocFailed: 0,
    incomingAccepted: 0, incomingRejected: 0, flowsDeallocated: 0, peersLost: 0,
    drops: Object.fromEntries(UDP_DROP_REASONS.map((r) => [r, 0])) as Record<UdpDropReason, number>,
    rxBudgetDrops: { sdus: 0, flow_bytes: 0, total_bytes: 0 },
  };
  private readonly socket: Socket;
  protected readonly log: Logger;
  private local: UdpAddress = { host: '', port: 0 };
  private readonly peers = new Map<string, UdpAddress>();
  private readonly allowed = new Set<string>();
  /** Application name key → host name and port, resolved by DNS (resolve.ts). */
  private readonly hostPeers = new Map<string, { host: string; port: number }>();
  private readonly dns: HostResolver;
  /** Host name → address at the peers' well-known port, from the hosts file. */
  private readonly hosts = new Map<string, UdpAddress>();
  protected readonly registrations: Registrations<(r: UdpFlowRequest) => void, DatagramRegistration>;
  private readonly txQueueBytes: number;
  private txQueued = 0;

  /** Bind the socket and start: resolves once bound. Throws ShimUdpError. */
  static async open(opts: ShimUdpOptions): Promise<ShimUdpIpcp> {
    // A snapshot is checked first: one of another IPC process is refused before anything is bound.
    const snap = opts.resume === undefined ? null : DatagramShimIpcp.checkSnapshot(opts.resume, 'shim-udp', opts.difName);
    const ipcp = new ShimUdpIpcp(opts);
    const bind = parseUdpAddress(opts.bind, true);
    // Resumed: the same port again (the peers know this end by it), also when the config says any port.
    if (snap && bind.port === 0) {
      try {
        bind.port = parseUdpAddress(snap.address).port;
      } catch {
        // resumeFrom refuses it below
      }
    }
    await ipcp.bind(bind);
    ipcp.finishOpen(snap, opts);
    return ipcp;
  }

  private constructor(opts: ShimUdpOptions) {
    const bad = (m: string): ShimUdpError => new ShimUdpError('invalid_config', `shim-udp ${opts.difName}: ${m}`);
    const int = intOption(bad);
    super(0xffffffff, true, 'datagram', datagramLimits(opts, int));
    this.difName = opts.difName;
    this.ipcpName = opts.name ?? `${opts.difName}.${opts.bind}`;
    this.mtu = int('mtu', opts.mtu, DEFAULT_MTU, 64, MAX_UDP_PAYLOAD);
    this.maxSdu = this.mtu - DATA_HEADER_BYTES;
    ({ rxQueueLimit: this.rxQueueLimit, rxQueueBytes: this.rxQueueBytes, rxQueueTotalBytes: this.rxQueueTotalBytes } = datagramRxQueues(opts, int, this.maxSdu));
    this.txQueueBytes = int('txQueueBytes', opts.txQueueBytes, 1 << 20, 2 * this.mtu, 2 ** 31 - 1);
    for (const [name, addr] of Object.entries(opts.peers ?? {})) {
      try {
        this.setPeer(name, addr);
      } catch (e) {
        throw bad(`peers[${JSON.stringify(name)}]: ${JSON.stringify(addr)} ${(e as Error).message}`);
      }
    }
    for (const [i, srv] of (opts.dnsServers ?? []).entries()) {
      const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(srv);
      if (!m || isIP(m[1]!) !== 4 || (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535))) throw bad(`dnsServers[${i}]: ${JSON.stringify(srv)} is not IPv4 or IPv4:PORT`);
    }
    this.dns = new HostResolver({
      servers: opts.dnsServers,
      timeoutMs: int('resolveTimeoutMs', opts.resolveTimeoutMs, 2000, 1, 600_000),
      cacheMs: int('resolveCacheMs', opts.resolveCacheMs, 60_000, 1, 86_400_000),
    });
    for (const addr of opts.allow ?? []) {
      try {
        const a = parseUdpAddress(addr);
        this.allowed.add(addrKey(a.host, a.port));
      } catch (e) {
        throw bad(`allow: ${JSON.stringify(addr)} ${(e as Error).message}`);
      }
    }
    if (opts.hostsFile !== undefined) {
      const port = int('peerPort', opts.peerPort, parseUdpAddress(opts.bind, true).port, 1, 65535);
      let text: string;
      try {
        const fd = openSync(opts.hostsFile, 'r');
        try {
          const buf = Buffer.alloc(MAX_HOSTS_FILE_BYTES);
          text = buf.subarray(0, readSync(fd, buf, 0, buf.byteLength, 0)).toString('utf8');
        } finally {
          closeSync(fd);
        }
      } catch (e) {
        throw bad(`hostsFile ${JSON.stringify(opts.hostsFile)}: ${(e as Error).message}`);
      }
      for (const [host, ip] of parseHosts(text)) {
        if (!this.hosts.has(host)) this.hosts.set(host, { host: ip, port });
        this.allowed.add(addrKey(ip, port));
      }
    }
    this.registrations = new Registrations(this.difName);
    this.log = (opts.logger ?? rootLogger).child({ component: 'shim-udp', dif: this.difName });
    this.socket = createSocket({ type: 'udp4', recvBufferSize: 1 << 21, sendBufferSize: 1 << 21 });
  }

  private bind(a: UdpAddress): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => {
        this.socket.close();
        this.closed = true;
        reject(new ShimUdpError('bind_failed', `shim-udp ${this.difName}: cannot bind UDP ${addrKey(a.host, a.port)}: ${e.message}${(e as NodeJS.ErrnoException).code === 'EADDRINUSE' ? ' (another process uses that port: pick another bind port)' : ''}`, { cause: e }));
      };
      this.socket.once('error', onError);
      this.socket.bind(a.port, a.host, () => {
        this.socket.off('error', onError);
        this.socket.on('error', (e) => this.log.warn({ err: e.message }, 'shim-udp: socket error'));
        this.socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
        const addr = this.socket.address();
        this.local = { host: addr.address, port: addr.port };
        this.keepaliveTimer = setInterval(() => this.keepaliveTick(), this.keepaliveMs);
        this.keepaliveTimer.unref();
        this.log.info({ bind: addrKey(this.local.host, this.local.port), peers: this.peers.size + this.hostPeers.size, maxSdu: this.maxSdu }, 'shim-udp: IPC process started');
        // HOST:PORT peers resolved now, so they may call in before this end calls them.
        for (const hp of this.hostPeers.values()) {
          this.resolveHost(hp).catch((e: unknown) => this.log.warn({ host: hp.host, err: (e as Error).message }, 'shim-udp: a peer host name did not resolve (asked again at its first allocation)'));
        }
        resolve();
      });
    });
  }

  /** The bound address (the port chosen when bind asked for port 0). */
  get localAddress(): string {
    return addrKey(this.local.host, this.local.port);
  }

  /** Add (or change) a name → address entry of the peers table; its address may send datagrams. Throws ShimUdpError. */
  addPeer(name: string, address: string): void {
    try {
      this.setPeer(name, address);
    } catch (e) {
      throw new ShimUdpError('invalid_config', `shim-udp ${this.difName}: peer ${JSON.stringify(name)}: ${JSON.stringify(address)} ${(e as Error).message}`);
    }
    const h = this.hostPeers.get(appNameKey(nameArg(name, 'peer application')));
    if (h) void this.resolveHost(h).catch(() => undefined);
  }

  /** Set peers entry `name` → "IPv4:PORT" or "HOST:PORT"; throws an Error completing "<address> …". */
  private setPeer(name: string, address: string): void {
    const key = appNameKey(nameArg(name, 'peer application'));
    let a: UdpAddress;
    try {
      a = parseUdpAddress(address);
    } catch {
      this.hostPeers.set(key, parseHostPort(address));
      this.peers.delete(key);
      return;
    }
    this.hostPeers.delete(key);
    this.peers.set(key, a);
    this.allowed.add(addrKey(a.host, a.port));
  }

  /** The address of a HOST:PORT peer now (DNS, bounded); it may send datagrams from then on. Throws HostResolveError. */
  private async resolveHost(h: { host: string; port: number }): Promise<UdpAddress> {
    const ip = await this.dns.resolve(h.host);
    this.allowed.add(addrKey(ip, h.port));
    return { host: ip, port: h.port };
  }

  /** The HOST:PORT entry for `app` (its full name, else its process name), if that is how it is given. */
  private hostPeer(app: AppName): { host: string; port: number } | undefined {
    if (this.peers.has(appNameKey(app))) return undefined;
    return this.hostPeers.get(appNameKey(app)) ?? (this.peers.has(appNameKey({ processName: app.processName })) ? undefined : this.hostPeers.get(appNameKey({ processName: app.processName })));
  }

  /** An allocation to a HOST:PORT peer failed (timeout, abort): its address is asked again next time. */
  protected override abandoned(flow: UdpFlow): void {
    const h = this.hostPeer(flow.remoteApp);
    if (h) this.dns.invalidate(h.host);
  }

  /** Accept datagrams from `address` ("IPv4:PORT") too. Throws ShimUdpError. */
  allowAddress(address: string): void {
    try {
      const a = parseUdpAddress(address);
      this.allowed.add(addrKey(a.host, a.port));
    } catch (e) {
      throw new ShimUdpError('invalid_config', `shim-udp ${this.difName}: allow ${JSON.stringify(address)} ${(e as Error).message}`);
    }
  }

  /** This IPC process's address in the DIF: its UDP port. */
  get address(): number {
    return this.local.port;
  }

  // -------------------------------------------------------------------------------------------
  // Allocation, requester side

  /** The address hosting `app`: its full name in the peers table, else its process name alone, else that as a host name of the hosts file. */
  resolve(app: AppName): UdpAddress | undefined {
    const h = this.hostPeer(app);
    if (h) {
      const ip = this.dns.cached(h.host);
      return ip === undefined ? undefined : { host: ip, port: h.port };
    }
    return this.peers.get(appNameKey(app)) ?? this.peers.get(appNameKey({ processName: app.processName })) ?? this.hosts.get(app.processName.toLowerCase());
  }

  async allocateFlow(localApp: AppName | string, remoteApp: AppName | string, qos: QosRequest = {}, opts: AllocateOptions = {}): Promise<Flow> {
    const { src, dst, spec, timeoutMs } = this.allocationArgs(localApp, remoteApp, qos, opts);
    const h = this.hostPeer(dst);
    let peer: UdpAddress | undefined;
    if (h) {
      // A HOST:PORT peer: its address from DNS (kept a while; asked again after a failed allocation).
      try {
        peer = await this.resolveHost(h);
      } catch (e) {
        if (!(e instanceof HostResolveError)) throw e;
        this.stats.unresolved++;
        throw new DifError(e.code === 'timeout' ? 'timeout' : 'rejected', `${formatAppName(dst)}: its peer ${h.host}:${h.port} in ${this.difName}'s peers table: ${e.message}`, { cause: e, peerReason: `unresolved: ${e.code}` });
      }
      this.checkOpen();
      if (opts.signal?.aborted) throw new DifError('aborted', 'allocation aborted while its peer was being resolved');
    } else peer = this.resolve(dst);
    if (!peer) {
      this.stats.unresolved++;
      throw new DifError('rejected', `${formatAppName(dst)} is not in ${this.difName}'s peers table${this.hosts.size > 0 ? ' nor a host name of its hosts file' : ''}: add "${formatAppName(dst)}": "IPv4:PORT" to its peers`, { peerReason: 'unknown application' });
    }
    this.stats.resolved++;
    if (this.entries.size >= this.maxFlows) throw new DifError('limit_exceeded', `${this.difName} has ${this.entries.size} flows and requests, its maxFlows`);
    const id = this.newId();
    const request = encodeMessage({ kind: 'alloc_req', src: id, reliable: false, inOrder: false, maxSdu: spec.maxSdu, difName: this.difName, srcApp: formatAppName(src), dstApp: formatAppName(dst) });
    if (request.byteLength > this.mtu) throw new DifError('invalid_name', `the allocation request (${request.byteLength} bytes) does not fit the MTU of ${this.mtu}: shorten the names`);
    const flow = new UdpFlow(this, this.nextPortId++, id, addrKey(peer.host, peer.port), this.difName, src, dst, spec);
    this.stats.allocRequested++;
    return new Promise<Flow>((resolve, reject) => {
      const entry: Entry = {
        state: 'pending',
        flow,
        peer,
        request,
        resolve,
        reject,
        timer: setTimeout(() => this.giveUp(id, 'timeout', `no answer from ${addrKey(peer.host, peer.port)} within ${timeoutMs} ms (is a shim-udp IPC process of ${this.difName} there?)`), timeoutMs),
        retry: setInterval(() => this.sendTo(peer, request), this.retryMs),
        abort: null,
      };
      this.watchAbort(id, entry, opts.signal);
      this.entries.set(id, entry);
      this.sendTo(peer, request);
    });
  }

  // -------------------------------------------------------------------------------------------
  // Close (close() and detach() are the datagram shims', ../shim-datagram/ipcp.ts)

  /** Let the socket go, once the DEALLOCs just sent have left (bounded). */
  protected shutdown(): void {
    const done = (): void => {
      try {
        this.socket.close();
      } catch {
        // already closed
      }
    };
    if (this.txQueued === 0) done();
    else setTimeout(done, 100).unref();
  }

  // -------------------------------------------------------------------------------------------
  // The socket

  protected peerKey(peer: UdpAddress): string {
    return addrKey(peer.host, peer.port);
  }

  protected parsePeer(text: string): UdpAddress {
    return parseUdpAddress(text);
  }

  protected ownAddress(): string {
    return this.localAddress;
  }

  /** A flow kept by a restore: its peer was accepted then (the peers table or allow may have been added to at run time). */
  protected override admitPeer(peer: UdpAddress): void {
    this.allowed.add(addrKey(peer.host, peer.port));
  }

  protected samePeer(a: UdpAddress, b: UdpAddress): boolean {
    return a.host === b.host && a.port === b.port;
  }

  protected send(to: UdpAddress, m: WireMessage): void {
    this.sendTo(to, encodeMessage(m));
  }

  private sendTo(to: UdpAddress, buf: Buffer): void {
    this.txQueued += buf.byteLength;
    this.stats.txDatagrams++;
    this.stats.txBytes += buf.byteLength;
    try {
      this.socket.send(buf, to.port, to.host, (err) => {
        this.txQueued -= buf.byteLength;
        if (err) this.stats.txErrors++;
        if (this.blocked.size > 0 && this.txQueued <= this.txQueueBytes / 2) {
          const flows = [...this.blocked];
          this.blocked.clear();
          for (const f of flows) f.drained();
        }
      });
    } catch (e) {
      // The socket is closed (close() raced a send): nothing to do.
      this.txQueued -= buf.byteLength;
      this.stats.txErrors++;
      this.log.debug({ err: (e as Error).message }, 'shim-udp: send failed');
    }
  }

  /** @internal UdpFlow.transmit() */
  sendData(flow: UdpFlow, sdu: Uint8Array): boolean {
    const e = this.entries.get(flow.localId);
    if (e?.state !== 'allocated' || e.flow !== flow) throw new DifError('flow_deallocated', `flow ${flow.portId} is gone`);
    if (this.txQueued + DATA_HEADER_BYTES + sdu.byteLength > this.txQueueBytes) {
      this.blocked.add(flow);
      return false;
    }
    e.lastSent = Date.now();
    this.sendTo(e.peer, encodeData(e.remoteId, sdu));
    return true;
  }

  private onDatagram(buf: Buffer, rinfo: RemoteInfo): void {
    if (this.closed) return;
    this.stats.rxDatagrams++;
    this.stats.rxBytes += buf.byteLength;
    const from = addrKey(rinfo.address, rinfo.port);
    try {
      if (!this.allowed.has(from)) return this.drop('unknown_peer', from);
      if (buf.byteLength > this.mtu) return this.drop('oversize', from, `${buf.byteLength} bytes, MTU ${this.mtu}`);
      let m: WireMessage;
      try {
        m = decodeMessage(buf);
      } catch (e) {
        if (e instanceof WireError) return this.drop('malformed', from, e.message);
        throw e;
      }
      this.handle(m, { host: rinfo.address, port: rinfo.port }, from);
    } catch (e) {
      // Contained: one bad datagram never ends the process.
      this.log.error({ err: (e as Error).message, from }, 'shim-udp: fault handling a datagram');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Budgets and observation

  protected datagramCounters(): NonNullable<IpcpCounters['datagrams']> {
    const s = this.stats;
    return { txDatagrams: s.txDatagrams, txBytes: s.txBytes, rxDatagrams: s.rxDatagrams, rxBytes: s.rxBytes, txErrors: s.txErrors };
  }

  inspect(): Record<string, unknown> {
    const flows = this.inspectFlows();
    return {
      difName: this.difName,
      name: this.ipcpName,
      bind: this.localAddress,
      mtu: this.mtu,
      maxSdu: this.maxSdu,
      keepaliveMs: this.keepaliveMs,
      keepaliveTimeoutMs: this.keepaliveTimeoutMs,
      peers: Object.fromEntries([
        ...[...this.peers].map(([k, a]) => [k, addrKey(a.host, a.port)]),
        ...[...this.hostPeers].map(([k, h]) => {
          const ip = this.dns.cached(h.host);
          return [k, `${h.host}:${h.port}${ip === undefined ? '' : ` (${ip})`}`];
        }),
      ]),
      dns: { lookups: this.dns.lookups, failures: this.dns.failures },
      ...(this.hosts.size > 0 ? { hosts: this.hosts.size } : {}),
      registered: [...this.registrations.values()].map((r) => formatAppName(r.appName)),
      flows,
      rxQueuedBytes: this.rxQueuedBytes,
      stats: this.stats,
    };
  }
}
