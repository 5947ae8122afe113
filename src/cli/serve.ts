/**
 * cli/serve.ts — `vmpi serve` (and the vhost-user back-end conventions' `vmpi --socket-path`,
 * `--fd`, `--print-capabilities`): flags and the config file into a ServePlan, then the running
 * server (src/ops/serve.ts) until SIGINT/SIGTERM, with sd_notify READY/STOPPING.
 */
import { logger, setLogFormat, setLogLevel } from '../sys/log.js';
import { clearListenEnv, listenFdsFromEnv } from '../ops/activation.js';
import { installProcessGuard } from '../ops/guard.js';
import { notifyState } from '../ops/notify.js';
import { ConfigError, configWarnings, loadConfigFile, mergeServeOptions, parseListenAddress, type ServeFlags, type VmpiConfig } from '../ops/config.js';
import { MAX_SDU_LOG2, MIN_SDU_LOG2 } from '../vmpi/carrier.js';
import { MAX_CHANNEL } from '../vmpi/port.js';
import { DEFAULT_IPC_SOCKET, defaultIpcSocketPath } from '../dif/ipc/protocol.js';
import { UsageError, intArg, logFormatArg, logLevelArg, parse, reportInvalid, signalled, str, strs, version } from './args.js';
import { help } from './help.js';
import type { RestartMode } from '../ops/restart/run.js';

/**
 * QEMU's "Backend program conventions" (docs/interop/vhost-user.rst): --print-capabilities prints
 * JSON and exits, ignoring every other argument; --socket-path and --fd name the socket (and
 * exclude each other). Here they are spellings of --socket and --listen-fd.
 */
export const CAPABILITIES = {
  // vhost-user.json's VHostUserBackendType has no entry for VMPI (the device rides on QEMU's
  // vhost-user-gpio-pci carrier, but it is not a GPIO device): the type names what it is.
  type: 'vmpi',
  features: ['socket-path', 'fd', 'vmpi-id', 'max-sdu-log2', 'config', 'socket-activation', 'sd-notify', 'ipc-socket', 'metrics-listen'],
} as const;

function conventionArgs(args: string[]): string[] {
  const out: string[] = [];
  let path = false;
  let fd = false;
  for (const [i, a] of args.entries()) {
    if (a === '--') {
      out.push(...args.slice(i)); // positionals: left for the parser to refuse
      break;
    }
    if (a === '--socket-path' || a.startsWith('--socket-path=')) {
      path = true;
      out.push(a.replace('--socket-path', '--socket'));
    } else if (a === '--fd' || a.startsWith('--fd=')) {
      fd = true;
      out.push(a.replace('--fd', '--listen-fd'));
    } else out.push(a);
  }
  if (path && fd) throw new UsageError('vmpi serve: --socket-path and --fd exclude each other (vhost-user back-end conventions)');
  return out;
}

export async function serve(argv: string[]): Promise<number> {
  if (argv.includes('--print-capabilities')) {
    process.stdout.write(JSON.stringify(CAPABILITIES, null, 2) + '\n');
    return 0;
  }
  const args = conventionArgs(argv);
  const { values } = parse('serve', args, {
    config: { type: 'string' },
    socket: { type: 'string', multiple: true },
    'vmpi-id': { type: 'string', multiple: true },
    'listen-fd': { type: 'string' },
    'max-sdu-log2': { type: 'string' },
    'echo-channel': { type: 'string', multiple: true },
    'metrics-listen': { type: 'string' },
    'no-metrics': { type: 'boolean' },
    'ipc-socket': { type: 'string' },
    'no-ipc': { type: 'boolean' },
    'log-level': { type: 'string' },
    'log-format': { type: 'string' },
    restart: { type: 'string' },
    'check-restart-state-fd': { type: 'string' },
    'pid-file': { type: 'string' },
  });
  if (values.help) return help('serve');
  // Loaded here, not at the top: --help and --version do not need them.
  const restartRun = await import('../ops/restart/run.js');
  const checkFd = str(values['check-restart-state-fd']);
  if (checkFd !== undefined) return restartRun.checkRestartState(intArg('check-restart-state-fd', checkFd, 0, 65535));
  let mode: RestartMode;
  try {
    mode = restartRun.restartMode(str(values.restart));
  } catch (e) {
    throw new UsageError(`vmpi serve: ${(e as Error).message}`);
  }
  const pidFile = str(values['pid-file']);
  if (restartRun.isKeeperParent(mode)) {
    setLogLevel(logLevelArg(str(values['log-level'])) ?? 'info');
    const format = logFormatArg(str(values['log-format']));
    if (format !== undefined) setLogFormat(format);
    // The keeper's pid is the one to signal (SIGHUP: upgrade; SIGTERM: stop).
    if (pidFile !== undefined) restartRun.writePidFile(pidFile);
    try {
      return await restartRun.runKeeper(logger.child({ role: 'keeper' }));
    } finally {
      if (pidFile !== undefined) restartRun.removePidFile(pidFile);
    }
  }
  if (pidFile !== undefined && process.env.VMPI_RESTART_ROLE !== 'worker') restartRun.writePidFile(pidFile);
  const ipcSocket = str(values['ipc-socket']);
  if (values['no-ipc'] === true && ipcSocket !== undefined) throw new UsageError('vmpi serve: --ipc-socket and --no-ipc exclude each other');
  // An explicit socket (flag, or VMPI_IPC_SOCKET as guest and tgen honour it) must work; the
  // default may fail (no /run/vmpi for this user) with a warning.
  const ipcChosen = ipcSocket ?? (defaultIpcSocketPath() !== DEFAULT_IPC_SOCKET ? defaultIpcSocketPath() : undefined);
  const ipc = values['no-ipc'] === true ? null : { socketPath: ipcChosen ?? DEFAULT_IPC_SOCKET, required: ipcChosen !== undefined };

  const metricsListen = str(values['metrics-listen']);
  const flags: ServeFlags = {
    sockets: strs(values.socket),
    vmpiIds: strs(values['vmpi-id']).map((v) => intArg('vmpi-id', v, 1, 0xffff)),
    listenFds: [],
    maxSduLog2: values['max-sdu-log2'] === undefined ? undefined : intArg('max-sdu-log2', str(values['max-sdu-log2']) ?? '', MIN_SDU_LOG2, MAX_SDU_LOG2),
    echoChannels: strs(values['echo-channel']).map((v) => intArg('echo-channel', v, 0, MAX_CHANNEL)),
    logLevel: logLevelArg(str(values['log-level'])),
    logFormat: logFormatArg(str(values['log-format'])),
    noMetrics: values['no-metrics'] === true,
  };
  if (metricsListen !== undefined) {
    try {
      flags.metricsListen = parseListenAddress(metricsListen);
    } catch (e) {
      throw new UsageError(`--metrics-listen ${metricsListen}: ${(e as Error).message}`);
    }
  }
  if (flags.noMetrics && metricsListen !== undefined) throw new UsageError('vmpi serve: --metrics-listen and --no-metrics exclude each other');
  const listenFd = str(values['listen-fd']);
  flags.listenFds = listenFd !== undefined ? [intArg('listen-fd', listenFd, 0, 65535)] : listenFdsFromEnv();
  const inherited = restartRun.inheritedFds();
  clearListenEnv();
  const slots = flags.sockets.length + flags.listenFds.length;
  if (flags.vmpiIds.length > slots) {
    throw new UsageError(`vmpi serve: --vmpi-id given ${flags.vmpiIds.length} times for ${slots} device${slots === 1 ? '' : 's'} (--socket/--listen-fd); give one --vmpi-id per --socket, in the same order`);
  }

  const configFile = str(values.config);
  let config: VmpiConfig | undefined;
  try {
    config = configFile === undefined ? undefined : loadConfigFile(configFile);
    if (!config && flags.sockets.length === 0 && flags.listenFds.length === 0) {
      throw new UsageError('vmpi serve: give at least one --socket PATH, --listen-fd N or --config FILE');
    }
    const plan = mergeServeOptions(config, flags);
    setLogLevel(plan.log.level);
    if (plan.log.format !== undefined) setLogFormat(plan.log.format);
    for (const w of configWarnings(plan.devices)) logger.warn(w);

    // Signals that arrive while starting are honoured once start-up is done.
    const stop = signalled();
    const restart = restartRun.openRestarter(mode, inherited, logger, version());
    if (typeof restart === 'number') return restart;
    // Loaded here, not at the top: --help, --version and check-config do not need the datapath.
    const { startServing } = await import('../ops/serve.js');
    installProcessGuard(logger);
    const serving = await startServing(plan, { logger, version: version(), ipc, restart });
    restart?.started();
    // Every socket listens now: a VM unit ordered after vmpi.service (Type=notify) may start QEMU.
    const n = serving.host.devices.length;
    notifyState(logger, { READY: '1', STATUS: `serving ${n} VMPI device${n === 1 ? '' : 's'}` });
    const handover = (code: number): never => {
      restart!.handover();
      serving.host.abandon();
      notifyState(logger, { STOPPING: '1' });
      logger.flush();
      process.exit(code);
    };
    if (restart) {
      let checking = false;
      process.on('SIGHUP', () => {
        if (checking) return;
        checking = true;
        logger.info('SIGHUP: checking that the code on disk can resume this state (upgrade)');
        void restartRun.upgradeCheck(restart.stateFd, logger).then(({ ok, said }) => {
          checking = false;
          if (!ok) return logger.error({ said }, 'upgrade refused by the new code; this worker keeps serving');
          logger.info({ said }, 'upgrade check passed; handing over to the new code');
          handover(restartRun.EXIT_RESTART);
        });
      });
    }
    const signal = await stop;
    if (restart && mode === 'systemd') {
      logger.info({ signal }, 'handing over (under systemd a stop and a restart look alike: the fd store decides)');
      handover(0);
    }
    logger.info({ signal }, 'shutting down');
    notifyState(logger, { STOPPING: '1' });
    await serving.close();
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) return reportInvalid('vmpi serve: ', e);
    throw e;
  }
}
