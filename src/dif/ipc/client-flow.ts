/**
 * client-flow.ts — a flow on the client side of the IPC API (client.ts): a `Flow` (api.ts) whose
 * SDUs go straight through the per-flow fd the daemon passed, read and written through the
 * FlowFileIo of the data path the daemon announced (flow-file-io.ts): the daemon's
 * SOCK_SEQPACKET end (host), or in a guest the VMPI driver's file of the flow's channel. write()
 * is one system call, false when the fd is full ('drain' follows); reads take SDUs off the fd as
 * they come, up to a bounded read-ahead.
 */
import { EventEmitter } from 'node:events';
import { DifError, type DeallocationCause, type Flow, type FlowEvents, type FlowState, type FlowStats, type QosSpec } from '../api.js';
import { parseAppName, type AppName } from '../naming.js';
import { native } from '../../sys/native.js';
import { FdInterest } from './fd-interest.js';
import { RxQueue } from '../rx-queue.js';
import { checkAllocated, checkSdu, sendSdu, untilNull } from '../flow-io.js';
import { safeClose } from '../../sys/fd.js';
import { FLOW_READ_EMPTY, FLOW_READ_ENDED, flowFileIo, type FlowFileIo, type SduSink } from './flow-file-io.js';
import type { FlowDatapath, FlowInfo } from './protocol.js';

/** What a flow needs of its client (IpcClient): the flow depends on no module above it. */
export interface FlowOwner {
  request(msg: Record<string, unknown>): Promise<unknown>;
  flowClosed(flow: ClientFlow): void;
}

/** SDUs a ClientFlow reads ahead while nobody consumes them; then the fd is left to fill up. */
export const CLIENT_RX_QUEUE_LIMIT = 256;
/** Bytes a ClientFlow reads ahead while nobody consumes them (the first SDU always fits). */
export const CLIENT_RX_QUEUE_BYTES = 4 * 1024 * 1024;

/** A flow of this client: its SDUs cross the fd the daemon passed (see the file comment). */
export class ClientFlow extends EventEmitter<FlowEvents> implements Flow {
  readonly stats: FlowStats = { txSdus: 0, txBytes: 0, txRefused: 0, rxSdus: 0, rxBytes: 0, rxQueueDrops: 0, rxAfterDeallocate: 0 };
  readonly handle: number;
  readonly portId: number;
  readonly difName: string;
  readonly localApp: AppName;
  readonly remoteApp: AppName;
  readonly qos: QosSpec;
  /** 'vmpi_file': the fd is the guest driver's file of the flow's channel (no daemon in between). */
  readonly datapath: FlowDatapath;
  /** Records from the daemon that were malformed: dropped. */
  badRecords = 0;
  private _state: FlowState = 'allocated';
  private _reason: string | null = null;
  private readonly interest: FdInterest;
  private readonly io: FlowFileIo;
  private fdOpen = true;
  /** End of file seen (or we stopped reading): nothing more will come. */
  private eof = false;
  private blocked = false;
  private readonly rx = new RxQueue(this, () => this.resumeReading());

  constructor(
    private readonly client: FlowOwner,
    info: FlowInfo,
    private readonly fd: number,
  ) {
    super();
    this.handle = info.flow;
    this.portId = info.portId;
    this.difName = info.dif;
    this.localApp = parseAppName(info.localApp);
    this.remoteApp = parseAppName(info.remoteApp);
    this.qos = Object.freeze({ ...info.qos });
    this.datapath = info.datapath ?? 'socket';
    this.io = flowFileIo(this.datapath, fd);
    this.interest = new FdInterest(fd, native.UV_READABLE, (ev) => {
      try {
        this.onEvents(ev);
      } catch (e) {
        // A fault on this flow's fd ends this flow, not the application's other flows.
        this.daemonGone(`internal error on the flow's fd: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  get state(): FlowState {
    return this._state;
  }

  get deallocationReason(): string | null {
    return this._reason;
  }

  write(sdu: Uint8Array): boolean {
    checkAllocated(this);
    checkSdu(this, sdu);
    if (this.blocked) {
      this.stats.txRefused++;
      return false;
    }
    const r = this.io.write(this.fd, sdu);
    if (r === 'sent') {
      this.stats.txSdus++;
      this.stats.txBytes += sdu.byteLength;
      return true;
    }
    if (r === 'closed') throw new DifError('flow_deallocated', `flow ${this.portId}: the IPC daemon closed it`);
    if (r === 'too_large') {
      throw new DifError('sdu_too_large', `flow ${this.portId}: an SDU of ${sdu.byteLength} bytes does not fit the flow socket's buffer (the host's net.core.wmem_max is below the flow's max SDU of ${this.qos.maxSdu}): send smaller SDUs or raise it`);
    }
    this.stats.txRefused++;
    this.blocked = true;
    this.interest.want(native.UV_WRITABLE, true);
    return false;
  }

  send(sdu: Uint8Array): Promise<void> {
    return sendSdu(this, sdu);
  }

  read(): Promise<Uint8Array | null> {
    return this.rx.read();
  }

  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return untilNull(() => this.read());
  }

  /** End the flow at both ends (idempotent). SDUs already written are passed on first. */
  deallocate(reason = 'deallocated by the application'): void {
    if (this._state !== 'allocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.eof = true;
    this.stopFd(false);
    // Close our end only once the daemon has taken what we wrote (it answers after that).
    this.client.request({ op: 'deallocate', flow: this.handle, reason }).then(
      () => this.closeFd(),
      () => this.closeFd(),
    );
    this.emit('deallocated', reason, 'local');
    this.checkEnd();
  }

  // --- called by the client --------------------------------------------------------------------

  /** @internal The daemon says the flow ended; what is still in the fd can be read. */
  daemonDeallocated(reason: string, cause: DeallocationCause): void {
    if (this._state !== 'allocated') return;
    this._state = 'deallocated';
    this._reason = reason;
    this.blocked = false;
    this.interest.want(native.UV_WRITABLE, false);
    if (this.eof) this.closeFd();
    this.emit('deallocated', reason, cause);
    this.checkEnd();
  }

  /** @internal The daemon connection is gone. */
  daemonGone(reason: string): void {
    this.eof = true;
    this.stopFd(true);
    if (this._state === 'allocated') {
      this._state = 'deallocated';
      this._reason = reason;
      this.emit('deallocated', reason, 'closed');
    }
    this.checkEnd();
  }

  // ---------------------------------------------------------------------------------------------

  private onEvents(ev: number): void {
    if (!this.fdOpen) return;
    if (ev < 0) {
      this.eof = true;
      this.stopFd(true);
      this.checkEnd();
      return;
    }
    if (ev & native.UV_WRITABLE) {
      this.interest.want(native.UV_WRITABLE, false);
      if (this.blocked) {
        this.blocked = false;
        if (this._state === 'allocated') this.emit('drain');
      }
    }
    if (ev & native.UV_READABLE) this.readSome();
  }

  private readSome(): void {
    for (let i = 0; i < 64 && this.fdOpen && !this.eof; i++) {
      if (!this.rx.hasConsumer() && (this.rx.length >= CLIENT_RX_QUEUE_LIMIT || this.rx.bytes >= CLIENT_RX_QUEUE_BYTES)) {
        // Leave the rest in the socket: the daemon sees it full and stops taking from the flow.
        this.interest.want(native.UV_READABLE, false);
        break;
      }
      const n = this.io.read(this.fd, this.qos.maxSdu, this.sink);
      if (n === FLOW_READ_EMPTY) break;
      if (n === FLOW_READ_ENDED) {
        this.eof = true;
        this.stopFd(this._state === 'deallocated');
        break;
      }
    }
    this.checkEnd();
  }

  /** Where reads put SDUs (made once: no closure per read). */
  private readonly sink: SduSink = {
    sdu: (sdu) => {
      this.stats.rxSdus++;
      this.stats.rxBytes += sdu.byteLength;
      this.rx.push(sdu.slice());
    },
    bad: () => {
      this.badRecords++;
    },
  };

  private resumeReading(): void {
    if (!this.eof && this.fdOpen && this.rx.length < CLIENT_RX_QUEUE_LIMIT && this.rx.bytes < CLIENT_RX_QUEUE_BYTES) this.interest.want(native.UV_READABLE, true);
  }

  /**
   * Reads end once nothing more can come and the reason is known (the daemon says why before it
   * closes its end, so this waits for that message at most).
   */
  private checkEnd(): void {
    if (this.eof && this._state === 'deallocated') this.rx.end();
  }

  /** Stop watching the fd; close it too when `close`. */
  private stopFd(close: boolean): void {
    if (this.fdOpen) {
      this.interest.set(0);
    }
    if (close) this.closeFd();
  }

  private closeFd(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    this.interest.close();
    safeClose(this.fd);
    this.client.flowClosed(this);
  }
}
