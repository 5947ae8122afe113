/**
 * normal.ts — the normal DIF's IPC process as `vmpi serve` and `vmpi guest` run it, built from
 * the configuration's `normal` section (config.ts) over the shim IPC processes they already have.
 *
 * Owns: the defaults that make a DIF name enough: on the host an enroller named `<dif>.host` that
 * listens on every device's shim DIF; in a guest a member named `<dif>.vm<VMPI-id>` (the VMPI-id
 * of its first device: unique among the host's VMs) that enrolls through that device's shim DIF
 * to `<dif>.host`, retrying until the host answers and again whenever the link comes back. Logs
 * enrollment and its failures. Every normal IPC process listens on all its lower DIFs (it takes
 * adjacencies there once enrolled, and new members with `acceptEnrollment`), and `neighbours`
 * name further members by their lower DIF.
 */
import type { IpcProcess } from '../dif/api.js';
import { NormalIpcp } from '../dif/normal/ipcp.js';
import type { Logger } from '../sys/log.js';
import type { NormalConfig } from './config.js';

export type NormalSide = 'host' | 'guest';

export interface NormalFactoryOptions {
  logger: Logger;
  /** Member: wait between enrollment attempts (default 1000 ms). */
  retryMs?: number;
}

/** The keepalive settings of `cfg` (absent: NormalIpcp's defaults). */
function keepalives(cfg: NormalConfig): { keepaliveMs?: number; keepaliveMisses?: number } {
  return { ...(cfg.keepaliveMs !== undefined ? { keepaliveMs: cfg.keepaliveMs } : {}), ...(cfg.keepaliveMisses !== undefined ? { keepaliveMisses: cfg.keepaliveMisses } : {}) };
}

/** The enroller IPC process name a DIF's members enroll to by default. */
export function defaultEnrollerName(dif: string): string {
  return `${dif}.host`;
}

/**
 * The normal IPC process for `cfg` over `lower` (the shim IPC processes): the host's enroller
 * over all of them, or a guest's member enrolling through the first. Throws a DifError for a bad
 * name or an empty `lower`.
 */
export function createNormalIpcp(cfg: NormalConfig, side: NormalSide, lower: readonly IpcProcess[], opts: NormalFactoryOptions): NormalIpcp {
  const log = opts.logger.child({ component: 'normal', dif: cfg.dif });
  if (lower.length === 0) throw new Error(`normal DIF ${cfg.dif}: no shim DIF to run over (no VMPI device)`);
  const neighbours = (cfg.neighbours ?? []).map((n, i) => {
    const via = lower.find((l) => l.difName === n.dif);
    if (!via) throw new Error(`normal.neighbours[${i}].dif: no lower DIF ${JSON.stringify(n.dif)} here (there are ${lower.map((l) => JSON.stringify(l.difName)).join(', ')})`);
    return { lower: via, name: n.name };
  });
  let ipcp: NormalIpcp;
  if (side === 'host') {
    ipcp = new NormalIpcp({ difName: cfg.dif, name: cfg.name ?? defaultEnrollerName(cfg.dif), role: 'enroller', lower: [...lower], neighbours, maxPduSize: cfg.maxPduSize, retryMs: opts.retryMs, ...keepalives(cfg) });
  } else {
    const via = lower[0]!;
    ipcp = new NormalIpcp({
      difName: cfg.dif,
      name: cfg.name ?? `${cfg.dif}.vm${via.address}`,
      role: 'member',
      enroll: { lower: via, enrollerName: cfg.enroller ?? defaultEnrollerName(cfg.dif) },
      lower: [...lower],
      acceptEnrollment: cfg.acceptEnrollment,
      neighbours,
      maxPduSize: cfg.maxPduSize,
      retryMs: opts.retryMs,
      ...keepalives(cfg),
    });
    let failures = 0;
    ipcp.on('enrolled', (address) => {
      failures = 0;
      log.info({ address, via: via.difName }, 'normal DIF: enrolled');
    });
    ipcp.on('enrollFailed', (err) => {
      // The first failure and then every 60th: the member retries every second until the host answers.
      if (failures++ % 60 === 0) log.warn({ err: err.message, via: via.difName, attempts: failures }, 'normal DIF: enrollment failed; retrying');
    });
  }
  log.info({ name: ipcp.name.processName, role: ipcp.role, lower: lower.map((l) => l.difName) }, 'normal DIF: IPC process started');
  return ipcp;
}
