/**
 * cli/guest.ts — `vmpi guest`, inside a VM: options and the optional normal DIF (flag or config
 * file) into src/ops/guest.ts's startGuest, and the guest's metrics (--metrics-listen,
 * --no-metrics, or the file's metrics section, as for serve) into guest-metrics.ts, until
 * SIGINT/SIGTERM, with sd_notify READY/STOPPING.
 */
import { logger, setLogFormat, setLogLevel } from '../sys/log.js';
import { installProcessGuard } from '../ops/guard.js';
import { notifyState } from '../ops/notify.js';
import { ConfigError, DEFAULT_METRICS_LISTEN, loadConfigFile, parseListenAddress, validateConfig, type ListenAddress, type NormalConfig } from '../ops/config.js';
import { defaultIpcSocketPath } from '../dif/ipc/protocol.js';
import { UsageError, logFormatArg, logLevelArg, parse, reportInvalid, signalled, str, strs, version } from './args.js';
import { help } from './help.js';

export async function guest(args: string[]): Promise<number> {
  const { values } = parse('guest', args, {
    device: { type: 'string', multiple: true },
    'ipc-socket': { type: 'string' },
    'normal-dif': { type: 'string' },
    config: { type: 'string' },
    'metrics-listen': { type: 'string' },
    'no-metrics': { type: 'boolean' },
    'log-level': { type: 'string' },
    'log-format': { type: 'string' },
  });
  if (values.help) return help('guest');
  const normalDif = str(values['normal-dif']);
  const guestConfig = str(values.config);
  if (normalDif !== undefined && guestConfig !== undefined) throw new UsageError('vmpi guest: --normal-dif and --config exclude each other (put the DIF in the file\'s normal section)');
  let normal: NormalConfig | undefined;
  let metricsListen: ListenAddress | null = parseListenAddress(DEFAULT_METRICS_LISTEN);
  try {
    if (guestConfig !== undefined) {
      const c = loadConfigFile(guestConfig);
      normal = c.normal;
      metricsListen = c.metrics.enabled ? c.metrics.listen : null;
    } else if (normalDif !== undefined) normal = validateConfig({ normal: { dif: normalDif } }).normal;
  } catch (e) {
    if (e instanceof ConfigError) return reportInvalid('vmpi guest: ', e);
    throw e;
  }
  const listenFlag = str(values['metrics-listen']);
  if (listenFlag !== undefined && values['no-metrics'] === true) throw new UsageError('vmpi guest: --metrics-listen and --no-metrics exclude each other');
  if (listenFlag !== undefined) {
    try {
      metricsListen = parseListenAddress(listenFlag);
    } catch (e) {
      throw new UsageError(`--metrics-listen ${listenFlag}: ${(e as Error).message}`);
    }
  }
  const metricsOn = values['no-metrics'] !== true && (metricsListen !== null || listenFlag !== undefined);
  const level = logLevelArg(str(values['log-level']));
  if (level !== undefined) setLogLevel(level);
  const format = logFormatArg(str(values['log-format']));
  if (format !== undefined) setLogFormat(format);
  const stop = signalled();
  installProcessGuard(logger);
  const { startGuest } = await import('../ops/guest.js');
  const serving = startGuest({ devices: strs(values.device), socketPath: str(values['ipc-socket']) ?? defaultIpcSocketPath(), logger, normal });
  let metrics: Awaited<ReturnType<typeof import('../ops/guest-metrics.js').startGuestMetrics>> | undefined;
  if (metricsOn) {
    const { startGuestMetrics } = await import('../ops/guest-metrics.js');
    try {
      metrics = await startGuestMetrics(serving, { listen: metricsListen, logger, version: version() });
    } catch (e) {
      serving.close();
      throw e;
    }
  }
  const difs = [...serving.ipcps.map((i) => i.difName), ...(serving.normal ? [serving.normal.difName] : [])];
  logger.info({ socket: serving.daemon.socketPath, difs }, 'guest IPC daemon ready');
  notifyState(logger, { READY: '1', STATUS: `IPC daemon on ${serving.daemon.socketPath} for ${difs.join(', ')}` });
  logger.info({ signal: await stop }, 'shutting down');
  notifyState(logger, { STOPPING: '1' });
  await metrics?.close();
  serving.close();
  return 0;
}
