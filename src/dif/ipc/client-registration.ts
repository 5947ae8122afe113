/**
 * client-registration.ts — a registered application name on the client side of the IPC API
 * (client.ts): incoming flow requests queue here (bounded) until taken as 'request' events or
 * through `for await`/next().
 */
import { EventEmitter } from 'node:events';
import { formatAppName, type AppName } from '../naming.js';
import { untilNull } from '../flow-io.js';

/** What a registration needs of its client (IpcClient). */
export interface RegistrationOwner {
  request(msg: Record<string, unknown>): Promise<unknown>;
  unregistered(reg: ClientRegistration): void;
}
import type { ClientFlowRequest } from './client-request.js';

/** Incoming requests a registration keeps while nobody takes them; more are rejected. */
const REQUEST_QUEUE_LIMIT = 256;

export interface ClientRegistrationEvents {
  /** An incoming flow request: accept() or reject() it. */
  request: [request: ClientFlowRequest];
  /** The registration ended (unregistered, or the daemon connection closed). */
  end: [reason: string];
}

/** A registered application name; requests come as 'request' events or through `for await`. */
export class ClientRegistration extends EventEmitter<ClientRegistrationEvents> implements AsyncIterable<ClientFlowRequest> {
  private queue: ClientFlowRequest[] = [];
  private waiters: Array<(r: ClientFlowRequest | null) => void> = [];
  private ended: string | null = null;

  constructor(
    private readonly client: RegistrationOwner,
    readonly difName: string,
    readonly appName: AppName,
  ) {
    super();
    (this as unknown as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event === 'request') queueMicrotask(() => this.flush());
    });
  }

  get active(): boolean {
    return this.ended === null;
  }

  /** The next incoming request, or null once the registration ended. */
  next(): Promise<ClientFlowRequest | null> {
    const r = this.shift();
    if (r) return Promise.resolve(r);
    if (this.ended !== null) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  [Symbol.asyncIterator](): AsyncGenerator<ClientFlowRequest, void, undefined> {
    return untilNull(() => this.next());
  }

  /** Unregister (waiting requests are rejected by the IPC process). No-op once ended. */
  async unregister(): Promise<void> {
    if (this.ended !== null) return;
    this.end('unregistered');
    await this.client.request({ op: 'unregister', dif: this.difName, app: formatAppName(this.appName) });
  }

  /** @internal false when the queue is full. */
  deliver(req: ClientFlowRequest): boolean {
    if (this.ended !== null) return false;
    const w = this.waiters.shift();
    if (w) {
      w(req);
      return true;
    }
    if (this.listenerCount('request') > 0) {
      this.emit('request', req);
      return true;
    }
    if (this.queue.length >= REQUEST_QUEUE_LIMIT) return false;
    this.queue.push(req);
    return true;
  }

  /** @internal */
  end(reason: string): void {
    if (this.ended !== null) return;
    this.ended = reason;
    this.client.unregistered(this);
    for (const w of this.waiters) w(null);
    this.waiters = [];
    this.emit('end', reason);
  }

  private shift(): ClientFlowRequest | undefined {
    for (;;) {
      const r = this.queue.shift();
      if (!r || r.state === 'waiting') return r;
    }
  }

  private flush(): void {
    while (this.listenerCount('request') > 0) {
      const r = this.shift();
      if (!r) return;
      this.emit('request', r);
    }
  }
}
