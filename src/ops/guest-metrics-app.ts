/**
 * guest-metrics-app.ts — the guest's metrics application: registered as `vmpi-metrics`
 * (metrics-wire.ts METRICS_APP) in the shim DIF of every VMPI device of `vmpi guest`, it answers
 * the host's scrape requests (one per flow) with the guest's Prometheus text, so a VM without a
 * NIC is scraped through its VMPI (the host serves it on /metrics/guest/<vmpi-id>).
 *
 * Owns: accepting the flows (at most `maxFlows` at once, more are rejected), reading the one
 * request within `requestTimeoutMs`, answering within the host's byte budget (an exposition
 * larger than the budget is answered with an error reply, not cut), then waiting for the host
 * to deallocate (or deallocating itself after `requestTimeoutMs`). Registered in-process on
 * the IPC processes (the IPC API of dif/api.ts); the flows use the IPC process's data path, not
 * a driver file: a few SDUs per scrape. Every failure ends that flow only and is counted.
 */
import { Counter, type Registry } from 'prom-client';
import type { FlowRequest, IpcProcess, Registration } from '../dif/api.js';
import { logger as rootLogger, type Logger } from '../sys/log.js';
import { METRICS_APP, MetricsWireError, decodeRequest, encodeReply } from './metrics-wire.js';

export const METRICS_APP_OUTCOMES = ['ok', 'error_reply', 'busy', 'bad_request', 'timeout', 'failed'] as const;
export type MetricsAppOutcome = (typeof METRICS_APP_OUTCOMES)[number];

export interface GuestMetricsAppOptions {
  ipcps: readonly IpcProcess[];
  /** The exposition to send (the guest's registry). */
  render: () => Promise<string>;
  /** Registry for the app's own counter (vmpi_guest_metrics_requests_total). */
  registry?: Registry;
  logger?: Logger;
  /** Flows served at once (default 4). */
  maxFlows?: number;
  /** A flow that brings no request, or is not deallocated after the answer, within this is ended (default 5 s). */
  requestTimeoutMs?: number;
}

export class GuestMetricsApp {
  readonly outcomes: Record<MetricsAppOutcome, number> = { ok: 0, error_reply: 0, busy: 0, bad_request: 0, timeout: 0, failed: 0 };
  private readonly regs: Registration[] = [];
  private active = 0;
  private closed = false;
  private readonly log: Logger;
  private readonly maxFlows: number;
  private readonly requestTimeoutMs: number;

  constructor(private readonly opts: GuestMetricsAppOptions) {
    this.log = (opts.logger ?? rootLogger).child({ component: 'guest-metrics-app' });
    this.maxFlows = opts.maxFlows ?? 4;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    if (opts.registry) {
      const outcomes = this.outcomes;
      const c: Counter<'outcome'> = new Counter({
        name: 'vmpi_guest_metrics_requests_total',
        help: `Scrape requests of the host answered by the guest's ${METRICS_APP} application, by outcome (ok, error_reply: too large for the host's budget, busy, bad_request, timeout, failed)`,
        labelNames: ['outcome'],
        registers: [opts.registry],
        collect: () => {
          c.reset();
          for (const o of METRICS_APP_OUTCOMES) c.inc({ outcome: o }, outcomes[o]);
        },
      });
    }
    for (const ipcp of opts.ipcps) {
      try {
        this.regs.push(ipcp.register(METRICS_APP, (req) => this.onRequest(req)));
      } catch (e) {
        this.log.warn({ dif: ipcp.difName, err: (e as Error).message }, `${METRICS_APP} not registered: the host cannot scrape this guest through ${ipcp.difName}`);
      }
    }
  }

  close(): void {
    this.closed = true;
    for (const r of this.regs) r.unregister();
    this.regs.length = 0;
  }

  private onRequest(req: FlowRequest): void {
    if (this.closed) return;
    if (this.active >= this.maxFlows) {
      this.outcomes.busy++;
      try {
        req.reject(`busy: ${this.maxFlows} metrics flows are being served`);
      } catch {
        // settled meanwhile
      }
      return;
    }
    this.active++;
    this.serve(req)
      .then((o) => this.outcomes[o]++)
      .catch((e: unknown) => {
        this.outcomes.failed++;
        this.log.debug({ err: (e as Error).message }, 'metrics flow failed');
      })
      .finally(() => this.active--);
  }

  private async serve(req: FlowRequest): Promise<MetricsAppOutcome> {
    const flow = req.accept();
    const timer = setTimeout(() => flow.deallocate('metrics request timed out'), this.requestTimeoutMs);
    try {
      const sdu = await flow.read();
      if (sdu === null) return 'timeout';
      let maxBytes: number;
      try {
        maxBytes = decodeRequest(sdu).maxBytes;
      } catch (e) {
        if (e instanceof MetricsWireError) {
          flow.deallocate(e.message);
          return 'bad_request';
        }
        throw e;
      }
      const text = Buffer.from(await this.opts.render(), 'utf8');
      const over = text.byteLength > maxBytes;
      const body = over ? Buffer.from(`the guest's metrics are ${text.byteLength} bytes, over the host's budget of ${maxBytes} (metrics.guestMaxBytes)`, 'utf8') : text;
      for (const part of encodeReply(over ? 'error' : 'ok', body, flow.qos.maxSdu)) await flow.send(part);
      // The host deallocates once it has read the reply; wait for that (bounded by the timer).
      if (flow.state === 'allocated') await new Promise<void>((resolve) => flow.once('deallocated', () => resolve()));
      return over ? 'error_reply' : 'ok';
    } finally {
      clearTimeout(timer);
      flow.deallocate('metrics answered');
    }
  }
}
