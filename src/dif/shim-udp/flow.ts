/**
 * flow.ts — the shim DIF over UDP's flow and incoming flow request (ipcp.ts hands them out),
 * built on the shared IPC-process core (../core/).
 *
 * Owns: the flow's data path: write() hands the SDU to the IPC process's socket (which refuses
 * while too many bytes wait to be sent, and calls drained() later), and the receive budget
 * (rxQueueLimit SDUs and rxQueueBytes per flow, rxQueueTotalBytes over every flow of the IPC
 * process; a flow nobody reads drops what is over it, counted in rxQueueDrops).
 */
import type { QosSpec } from '../api.js';
import type { AppName } from '../naming.js';
import { RxQueue, rxBudgetExceeded } from '../rx-queue.js';
import { BaseFlow, type FlowEnd } from '../core/flow.js';
import { BaseFlowRequest, type RequestOwner } from '../core/flow-request.js';

/** What a flow needs from its IPC process. */
export interface UdpFlowOwner extends FlowEnd<UdpFlow> {
  readonly rxQueueLimit: number;
  readonly rxQueueBytes: number;
  readonly rxQueueTotalBytes: number;
  readonly rxQueuedBytes: number;
  accountRx(delta: number): void;
  rxBudgetHit(which: 'sdus' | 'flow_bytes' | 'total_bytes'): void;
  /** Send `sdu` on `flow`: false when the socket has too much waiting (the flow is told on drain). */
  sendData(flow: UdpFlow, sdu: Uint8Array): boolean;
}

export class UdpFlow extends BaseFlow {
  private accounted = true;
  protected readonly rx = new RxQueue(this, null, (delta) => {
    if (this.accounted) this.owner.accountRx(delta);
  });

  constructor(
    private readonly owner: UdpFlowOwner,
    portId: number,
    /** This end's flow id (the DATA header's id of the SDUs for this end). */
    readonly localId: number,
    /** The peer's address, "IPv4:port". */
    readonly peer: string,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner as FlowEnd<BaseFlow>, portId, difName, localApp, remoteApp, qos);
  }

  protected transmit(sdu: Uint8Array): boolean {
    return this.owner.sendData(this, sdu);
  }

  /** One SDU from the socket (a view into the datagram; copied when queued). */
  deliver(sdu: Uint8Array): void {
    this.stats.rxSdus++;
    this.stats.rxBytes += sdu.byteLength;
    if (!this.rx.hasConsumer()) {
      const n = sdu.byteLength;
      const o = this.owner;
      const over = rxBudgetExceeded(this.rx, o, n);
      if (over !== null) {
        this.stats.rxQueueDrops++;
        o.rxBudgetHit(over);
        return;
      }
    }
    this.rx.push(Uint8Array.prototype.slice.call(sdu));
  }

  protected released(): void {
    if (this.accounted) {
      this.accounted = false;
      this.owner.accountRx(-this.rx.bytes);
    }
  }
}

export class UdpFlowRequest extends BaseFlowRequest<UdpFlow> {
  constructor(
    owner: RequestOwner<UdpFlowRequest, UdpFlow>,
    /** The local flow id reserved for this request. */
    readonly localId: number,
    difName: string,
    localApp: AppName,
    remoteApp: AppName,
    qos: QosSpec,
  ) {
    super(owner as unknown as RequestOwner<BaseFlowRequest<UdpFlow>, UdpFlow>, difName, localApp, remoteApp, qos);
  }
}
