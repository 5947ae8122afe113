/**
 * normal.ts — the normal DIF's IPC process as `vmpi serve` and `vmpi guest` run it, built from
 * the configuration's `normal` section (config.ts) over the shim IPC processes they already have.
 *
 * Owns: the defaults that make a DIF name enough: on the host an enroller named `<dif>.host` that
 * listens on every device's shim DIF; in a guest a member named `<dif>.vm<VMPI-id>` (the VMPI-id
 * of its first device: unique among the host's VMs) that enrolls through that device's shim DIF
 * to `<dif>.host`, retrying until the host answers and again whenever the link comes back. Logs
 * enrollment and its failures.
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
  let ipcp: NormalIpcp;
  if (side === 'host') {
    ipcp = new NormalIpcp({ difName: cfg.dif, name: cfg.name ?? defaultEnrollerName(cfg.dif), role: 'enroller', lower: [...lower], maxPduSize: cfg.maxPduSize, pool: cfg.pool });
  } else {
    const via = lower[0]!;
    ipcp = new NormalIpcp({
      difName: cfg.dif,
      name: cfg.name ?? `${cfg.dif}.vm${via.address}`,
      role: 'member',
      enroll: { lower: via, enrollerName: cfg.enroller ?? defaultEnrollerName(cfg.dif) },
      maxPduSize: cfg.maxPduSize,
      retryMs: opts.retryMs,
      // A member with a pool (serve's `normal.pool`) also enrolls the members behind it (its VMs).
      ...(cfg.pool ? { pool: cfg.pool, lower: [...lower] } : {}),
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
