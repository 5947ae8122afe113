/**
 * guest-metrics.ts — the metrics of `vmpi guest`: one prom-client registry with the same
 * conventions as `vmpi serve`'s (metrics.ts' HostMetrics without devices: process and Node.js
 * metrics, the guest's IPC processes and IPC daemon), the guest driver's per-device and
 * per-channel counters read from sysfs at scrape time (guest-driver-stats.ts), served on
 * `GET /metrics` (metrics-http.ts; loopback 127.0.0.1:19464 by default, like serve) and to the
 * host through the VMPI by the `vmpi-metrics` application (guest-metrics-app.ts).
 *
 * Owns: putting these together and their shutdown order (app, then HTTP, then registry).
 */
import type { Logger } from '../sys/log.js';
import type { IpcProcess } from '../dif/api.js';
import type { ListenAddress } from './config.js';
import type { GuestServing } from './guest.js';
import { HostMetrics, startMetricsServer, type MetricsServer } from './metrics.js';
import { registerDriverMetrics } from './guest-driver-stats.js';
import { GuestMetricsApp } from './guest-metrics-app.js';

export interface GuestMetrics {
  readonly metrics: HostMetrics;
  /** The HTTP endpoint, unless `listen` was null. */
  readonly server: MetricsServer | undefined;
  readonly app: GuestMetricsApp;
  close(): Promise<void>;
}

export interface GuestMetricsOptions {
  /** Where to serve GET /metrics; null: only through the VMPI. */
  listen: ListenAddress | null;
  logger: Logger;
  version?: string;
  /** sysfs root (tests pass a fake tree). */
  sysRoot?: string;
  /** Default true: the standard process and Node.js metrics. */
  processMetrics?: boolean;
}

/** Start the guest's metrics for what startGuest started. Rejects with MetricsServerError if `listen` cannot be bound. */
export async function startGuestMetrics(serving: Pick<GuestServing, 'ipcps' | 'normal' | 'daemon'>, opts: GuestMetricsOptions): Promise<GuestMetrics> {
  const metrics = new HostMetrics(null, { version: opts.version, processMetrics: opts.processMetrics });
  for (const ipcp of serving.ipcps) metrics.addIpcp(ipcp);
  if (serving.normal) metrics.addIpcp(serving.normal);
  metrics.addIpcDaemon(serving.daemon);
  registerDriverMetrics(metrics.registry, opts.sysRoot);
  const server = opts.listen ? await startMetricsServer(metrics, opts.listen, opts.logger) : undefined;
  const app = new GuestMetricsApp({ ipcps: serving.ipcps as readonly IpcProcess[], render: () => metrics.metrics(), registry: metrics.registry, logger: opts.logger });
  return {
    metrics,
    server,
    app,
    close: async () => {
      app.close();
      await server?.close();
      metrics.close();
    },
  };
}
