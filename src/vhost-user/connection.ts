/**
 * connection.ts — one vhost-user front-end connection: the composition of its parts.
 *
 * Owns: the lifetime of one front-end (QEMU) connection and the glue between its endpoint
 * (endpoint.ts: framing, queued replies), the dispatcher (dispatch.ts, with the request registry
 * in requests.ts) and its rings and memory (rings.ts). The negotiated state lives in `this.state`
 * (state.ts), never in closures.
 *
 * Failure containment: a bad request is answered with a failed REPLY_ACK when the front-end asked
 * for one, otherwise the connection is closed; either way one log line says what was wrong. A
 * queue the driver corrupts is marked broken and reported on its error eventfd; other queues and
 * other connections carry on. Every callback the event loop makes into a connection (its socket
 * watcher, kick watchers, the device's deferred work through `ReadyQueue.defer`) runs guarded:
 * whatever it throws closes this connection with a log line ('internal_error'), never the
 * process; `close()` itself releases everything even when the device or a listener throws.
 */
import { EventEmitter } from 'node:events';
import { errText } from '../sys/fd.js';
import type { Logger } from '../sys/log.js';
import type { VhostUserDevice } from './device.js';
import { dispatch, type DispatchHost } from './dispatch.js';
import { Endpoint, type DisconnectCause } from './endpoint.js';
import { ConnectionError } from './errors.js';
import type { Mapper } from './memory.js';
import type { Message } from './messages.js';
import { Rings, closeVringFds, nativeMapper } from './rings.js';
import { initialState, stateToJSON, type ConnectionState, type ConnectionStateJSON } from './state.js';

export { nativeMapper };
export type { DisconnectCause };

export interface ConnectionOptions {
  /** How region fds are inspected, mapped and closed (tests pass their own). */
  mapper?: Mapper;
  /**
   * Accept memory fds that could shrink under their mapping (no F_SEAL_SHRINK: memory-backend-file,
   * -shm, memfd with seal=off). Only for trusted front-ends: one that truncates its memory file
   * crashes the server (SIGBUS). Default false.
   */
  allowUnsealedMemory?: boolean;
  /** Bytes of guest memory this front-end may have mapped at once (default 4 TiB; memory.ts). */
  maxMappedBytes?: number;
  /** Bytes of replies that may wait for a front-end that does not read them (endpoint.ts). */
  outputBudget?: number;
  /** Requests handled per event-loop turn before other connections get a turn (endpoint.ts). */
  messagesPerTurn?: number;
  /**
   * Resume a front-end another process served (restart): `fd` is its socket, this state (with
   * this process's fds in it) what was negotiated; memory is mapped and the rings run again at
   * once, without the front-end doing anything. When that fails, the connection closes (with
   * every fd it was given) and the constructor throws ConnectionError 'resume_failed'.
   */
  resume?: ConnectionState;
  /** Called after each request changed the state, before its reply goes out (dispatch.ts commit). */
  commit?: (conn: Connection, received: readonly number[]) => void;
}

export interface ConnectionEvents {
  close: [reason: string, cause: DisconnectCause];
  /** A request was refused with a failed REPLY_ACK; the connection stays up. */
  rejected: [request: string, message: string];
}

let nextConnectionId = 1;

/**
 * Requests one connection may have rejected (failed REPLY_ACK) before it is closed as a protocol
 * error. QEMU has at most a few refused (unsealed memory, a bad fd); a front-end looping on
 * refused requests would otherwise cost the server a log line and a reply each, for ever.
 */
export const MAX_REJECTED_REQUESTS = 64;

export class Connection extends EventEmitter<ConnectionEvents> {
  readonly id = nextConnectionId++;
  readonly state: ConnectionState;
  readonly log: Logger;
  readonly rings: Rings;
  private readonly endpoint: Endpoint;
  private readonly host: DispatchHost;
  private closed = false;
  private rejectedCount = 0;

  constructor(
    fd: number,
    readonly device: VhostUserDevice,
    logger: Logger,
    opts: ConnectionOptions = {},
  ) {
    super();
    this.log = logger.child({ conn: this.id, device: device.name });
    this.state = opts.resume ?? initialState(device.numQueues);
    this.rings = new Rings(this, { mapper: opts.mapper ?? nativeMapper, allowUnsealedMemory: opts.allowUnsealedMemory ?? false, maxMappedBytes: opts.maxMappedBytes });
    this.host = {
      state: this.state,
      device,
      rings: this.rings,
      log: this.log,
      send: (request, payload) => this.endpoint.send(request, payload),
      close: (reason, cause) => this.close(reason, cause),
      rejected: (request, message) => {
        this.emit('rejected', request, message);
        if (++this.rejectedCount > MAX_REJECTED_REQUESTS) {
          this.step('logging', () => this.log.error({ max: MAX_REJECTED_REQUESTS }, 'closing connection: too many rejected requests'));
          this.close(`more than ${MAX_REJECTED_REQUESTS} requests rejected on one connection; fix the front-end (each rejection was logged)`, 'protocol_error');
        }
      },
      commit: opts.commit ? (received) => opts.commit!(this, received) : undefined,
    };
    this.endpoint = new Endpoint(
      fd,
      {
        message: (msg: Message) => dispatch(this.host, msg),
        fail: (reason, cause) => this.endpointFailed(reason, cause),
        guarded: (what, fn) => this.guarded(what, fn),
        isClosed: () => this.closed,
      },
      { outputBudget: opts.outputBudget, messagesPerTurn: opts.messagesPerTurn },
    );
    if (opts.resume) {
      try {
        if (this.state.vrings.length !== device.numQueues) throw new Error(`the saved state has ${this.state.vrings.length} queues, the device ${device.name} has ${device.numQueues}`);
        // The driver negotiated with the dead process: this device must speak what it agreed to
        // (a device feature such as VMPI_F_RX_PACKED changes the rings' format).
        device.featuresAcked(this.state.ackedFeatures);
        this.rings.resume();
      } catch (e) {
        this.close(`cannot resume: ${errText(e)}`, 'internal_error');
        throw new ConnectionError(`cannot resume the front-end connection: ${errText(e)}`, 'resume_failed');
      }
      this.log.info({ queues: this.rings.queueFacts() }, 'front-end connection resumed');
    } else this.log.info('front-end connected');
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The socket's fd (the restart code keeps a copy of it). */
  get socketFd(): number {
    return this.endpoint.fd;
  }

  /** Bytes of replies waiting for the front-end to read them. */
  get queuedReplyBytes(): number {
    return this.endpoint.queuedBytes;
  }

  /** JSON snapshot of the negotiated state (for persistence across restarts, and for debugging). */
  snapshot(): ConnectionStateJSON {
    this.rings.syncIndices();
    return stateToJSON(this.state);
  }

  /**
   * Forget the connection without a word to anyone (restart: the process hands over to another
   * that holds copies of every fd and resumes it): watchers stop, nothing is closed or reset.
   */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.rings.abandon();
    this.endpoint.abandon();
  }

  /**
   * Close the connection, stop every ring and release memory and fds. Idempotent. Never throws:
   * a step that fails (a device callback, a 'close' listener) is logged and the rest still runs.
   */
  close(reason: string, cause: DisconnectCause = 'shutdown'): void {
    if (this.closed) return;
    this.closed = true;
    for (let i = 0; i < this.rings.count; i++) this.step(`stopping queue ${i}`, () => this.rings.stop(i));
    for (const v of this.state.vrings) closeVringFds(v);
    this.step('resetting the device', () => this.device.reset(`disconnected: ${reason}`));
    this.step('unmapping guest memory', () => this.rings.clearMemory());
    this.step('closing the socket', () => this.endpoint.close());
    this.step('logging', () => this.log.info({ reason, cause }, 'front-end disconnected'));
    this.step("a 'close' listener", () => this.emit('close', reason, cause));
  }

  /** The endpoint cannot go on (peer gone, bad stream, replies not read). */
  private endpointFailed(reason: string, cause: DisconnectCause): void {
    if (cause !== 'peer_closed') this.step('logging', () => this.log.error({ reason, cause }, 'closing connection: the request stream cannot go on'));
    this.close(reason, cause);
  }

  /** One step of close(): runs `fn`, logs what it throws. */
  private step(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      try {
        this.log.error({ err: errText(e), stack: (e as Error)?.stack }, `error while closing the connection (${what}); carrying on`);
      } catch {
        // a logger that throws: nothing left to tell
      }
    }
  }

  /**
   * Run a callback the event loop makes into this connection. Anything it throws is this
   * connection's failure: logged, and the connection closed ('internal_error'); never the process's.
   */
  guarded(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.step('logging', () => this.log.error({ in: what, err: errText(e), stack: (e as Error)?.stack }, 'uncaught error in a connection callback; closing the connection'));
      this.close(`internal error in the ${what}: ${errText(e)}`, 'internal_error');
    }
  }
}
