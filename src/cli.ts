#!/usr/bin/env node
/**
 * cli.ts — the `vmpi` command.
 *
 * Owns: argument parsing, wiring flags and the config file (src/ops/config.ts) into a running
 * server (src/ops/serve.ts), printing QEMU arguments, signals and exit codes (0 ok, 1 runtime
 * failure or invalid configuration, 2 usage error). No protocol, datapath or ops logic lives here.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { LOG_FORMATS, logger, setLogFormat, setLogLevel, type LogFormat } from './sys/log.js';
import { clearListenEnv, listenFdsFromEnv } from './ops/activation.js';
import { installProcessGuard } from './ops/guard.js';
import { notifyState } from './ops/notify.js';
import {
  CONFIG_SCHEMA,
  ConfigError,
  configWarnings,
  LOG_LEVELS,
  formatListenAddress,
  loadConfigFile,
  validateConfig,
  type NormalConfig,
  mergeServeOptions,
  parseListenAddress,
  type LogLevel,
  type ServeFlags,
  type VmpiConfig,
} from './ops/config.js';
import { CARRIERS, GPIO_CARRIER, MAX_SDU_LOG2, MIN_SDU_LOG2 } from './vmpi/carrier.js';
import { DEFAULT_IPC_SOCKET, defaultIpcSocketPath } from './dif/ipc/protocol.js';
import { DEFAULT_TGEN_APP } from './dif/tgen.js';

const EXIT_INVALID = 1;
const EXIT_USAGE = 2;

class UsageError extends Error {}

const HELP: Record<string, string> = {
  main: `vmpi — vhost-user VMPI back-end (RINA shim DIF for hypervisors)

Usage: vmpi <command> [options]

Commands:
  serve          serve VMPI devices to QEMU over vhost-user sockets
  guest          inside a VM: the shim DIF over /dev/vmpiN and the IPC daemon for applications
  check-config   validate a configuration file
  qemu-args      print the QEMU arguments that attach a VM to a device's socket
  tgen           traffic generator over the IPC API (like rina-tgen): server, client, sweep, plot

Options:
  -h, --help     show help (also: vmpi <command> --help)
  -V, --version  print the version
`,
  serve: `Usage: vmpi serve [--config FILE] [--socket PATH [--vmpi-id N]] ... [options]

Serves one VMPI device per --socket, per device in the config file, and per inherited listening
socket. The n-th --vmpi-id belongs to the n-th --socket (then to the inherited sockets); devices
without one get the lowest free VMPI-id. Flags add to the config file: their devices come after
the file's, and their settings override the file's. SIGTERM or SIGINT: close every device, remove
the socket files, exit 0.

Options:
  --config FILE          YAML (.yaml/.yml) or JSON (.json) configuration (see vmpi check-config)
  --socket PATH          vhost-user socket to create (repeatable; also --socket-path PATH)
  --vmpi-id N            VMPI-id of the corresponding device, 1..65535 (repeatable)
  --listen-fd N          serve a device on an inherited listening socket (also --fd N). Without it, systemd
                         socket activation is automatic: LISTEN_FDS sockets from fd 3 when
                         LISTEN_PID is this process (the .service unit needs NonBlocking=yes)
  --max-sdu-log2 N       largest SDU of the flag devices as a power of two, ${MIN_SDU_LOG2}..${MAX_SDU_LOG2} (default 16 = 64 KiB)
  --metrics-listen ADDR  Prometheus endpoint HOST:PORT (default 127.0.0.1:19464; port 0 = any)
  --no-metrics           no metrics endpoint
  --ipc-socket PATH      IPC daemon socket for applications (default ${DEFAULT_IPC_SOCKET}; when
                         the default cannot be created, serving goes on without it)
  --no-ipc               no IPC daemon
  --log-level LEVEL      ${LOG_LEVELS.join('|')} (default info)
  --log-format FORMAT    json (default), text, or journal (priority prefixes for journald; the
                         default when stderr is the journal, i.e. under systemd)
  --print-capabilities   print the back-end's capabilities as JSON and exit (QEMU's vhost-user
                         back-end conventions; \`vmpi --socket-path PATH\` and \`vmpi --fd N\`
                         serve directly, as such back-ends do)
`,
  'check-config': `Usage: vmpi check-config FILE
       vmpi check-config --schema

Validates a configuration file (YAML or JSON, by extension) and exits 0 when it is valid, 1 when
it is not (every problem is listed on stderr, one per line, with the field path and the bad
value), 2 on a usage error. Owner and group names are looked up on this host.

Options:
  --schema   print the configuration's JSON Schema and exit
`,
  guest: `Usage: vmpi guest [--device /dev/vmpiN]... [--ipc-socket PATH] [--normal-dif NAME | --config FILE] [--log-level LEVEL]

Run inside a VM whose VMPI guest driver is loaded: opens each VMPI device, runs the guest end of
the shim DIF for hypervisors on it (DIF hv.vmpi-<VMPI-id>) and the IPC daemon through which the
VM's applications (vmpi tgen, the client library) register, allocate flows and move SDUs. Each
flow's application gets the driver file of the flow's channel: its SDUs do not pass this daemon.

Options:
  --device PATH       a VMPI character device; repeatable (default: every /dev/vmpiN)
  --normal-dif NAME   also join the normal DIF NAME: enroll through the first device's shim DIF
                      to its enroller on the host (vmpi serve with normal: { dif: NAME })
  --config FILE       take the normal DIF from FILE's normal section (see vmpi check-config)
  --ipc-socket PATH   the IPC daemon's socket (default ${DEFAULT_IPC_SOCKET}, or $VMPI_IPC_SOCKET)
  --log-level LEVEL   fatal, error, warn, info (default), debug, trace
  --log-format FORMAT json (default), text, or journal (the default under systemd)
  -h, --help          show this help

Stops on SIGINT/SIGTERM. Exit codes: 0 stopped, 1 runtime error (no device, socket in use), 2 usage.
`,
  tgen: `Usage: vmpi tgen server [--dif NAME] [--app NAME] [--ipc-socket PATH]
       vmpi tgen client [--dif NAME] [--app NAME] [--src NAME] [--ipc-socket PATH]
                        [--size BYTES] [--duration SECONDS | --count N] [--unreliable]
       vmpi tgen client --sweep [--sizes FROM:TO:STEP|LIST] [--repeats N] [--duration SECONDS]
                        [--csv FILE] [--svg FILE] [--label NAME] [--title TEXT] [...client options]
       vmpi tgen plot --svg FILE [--title TEXT] LABEL=FILE.csv ...

A traffic generator over the IPC API (like rina-tgen). The server registers an application name
in a DIF (through the IPC daemon of vmpi serve) and counts the SDUs and bytes of every flow; the
client allocates a flow to it and sends SDUs of one size as fast as the flow takes them. Goodput
is measured at the server and reported back to the client over the flow. --sweep repeats runs
over SDU sizes and prints, per size, the mean and 95% confidence interval (Student's t); --csv
writes size,mean_mbps,ci95_low,ci95_high,repeats and --svg a plot with error bars and a linear
fit. plot draws several such CSVs (e.g. one per system) in one SVG.

Options:
  --dif NAME          DIF to use (default: the daemon's only DIF)
  --app NAME          the server's application name (default ${DEFAULT_TGEN_APP})
  --src NAME          the client's application name (default rina-tgen-client/<pid>)
  --ipc-socket PATH   IPC daemon socket (default $VMPI_IPC_SOCKET or ${DEFAULT_IPC_SOCKET})
  --size BYTES        SDU size of a single run (default 1000)
  --duration SECONDS  length of one run (default 1)
  --count N           send exactly N SDUs instead (single run)
  --unreliable        ask for an unreliable, unordered flow (default reliable, in order)
  --sweep             run the sweep
  --sizes SPEC        sweep sizes, FROM:TO:STEP inclusive or a comma list (default 0:4000:250)
  --repeats N         runs per size (default 20)
  --csv FILE, --svg FILE, --label NAME (legend; default "vmpi shim-hv"), --title TEXT
`,
  'qemu-args': `Usage: vmpi qemu-args --socket PATH [--id NAME] [--mem SIZE]

Prints the QEMU 10 arguments (one per line) for a VM using the VMPI device on PATH.

Options:
  --socket PATH   the device's vhost-user socket
  --id NAME       chardev/device id (default vmpi0)
  --mem SIZE      guest RAM; vhost-user needs it shared (default 512M)
`,
};

/** The package version, from the package.json above this file (src/ or dist/src/). */
function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'vmpi') return pkg.version;
    } catch {
      // try the next level up
    }
  }
  return 'unknown';
}

type ArgValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

function parse(command: string, args: string[], options: NonNullable<ParseArgsConfig['options']>, allowPositionals = false): { values: ArgValues; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' }, ...options }, strict: true, allowPositionals });
    return { values: values as ArgValues, positionals };
  } catch (e) {
    throw new UsageError(`vmpi ${command}: ${(e as Error).message}`);
  }
}

function intArg(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) throw new UsageError(`--${name} ${value}: expected an integer ${min}..${max}`);
  return n;
}

function str(v: ArgValues[string]): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function strs(v: ArgValues[string]): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

function logFormatArg(v: string | undefined): LogFormat | undefined {
  if (v === undefined) return undefined;
  if (!(LOG_FORMATS as readonly string[]).includes(v)) throw new UsageError(`--log-format ${v}: expected one of ${LOG_FORMATS.join(', ')}`);
  return v as LogFormat;
}

function logLevelArg(v: string | undefined): LogLevel | undefined {
  if (v === undefined) return undefined;
  if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new UsageError(`--log-level ${v}: expected one of ${LOG_LEVELS.join(', ')}`);
  return v as LogLevel;
}

/** Print a ConfigError's problems, one per line, and return the exit code for them. */
function reportInvalid(prefix: string, e: ConfigError): number {
  for (const line of e.message.split('\n')) process.stderr.write(`${prefix}${line}\n`);
  return EXIT_INVALID;
}

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

async function serve(argv: string[]): Promise<number> {
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
    'metrics-listen': { type: 'string' },
    'no-metrics': { type: 'boolean' },
    'ipc-socket': { type: 'string' },
    'no-ipc': { type: 'boolean' },
    'log-level': { type: 'string' },
    'log-format': { type: 'string' },
  });
  if (values.help) return help('serve');
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
    // Loaded here, not at the top: --help, --version and check-config do not need the datapath.
    const { startServing } = await import('./ops/serve.js');
    installProcessGuard(logger);
    const serving = await startServing(plan, { logger, version: version(), ipc });
    // Every socket listens now: a VM unit ordered after vmpi.service (Type=notify) may start QEMU.
    const n = serving.host.devices.length;
    notifyState(logger, { READY: '1', STATUS: `serving ${n} VMPI device${n === 1 ? '' : 's'}` });
    logger.info({ signal: await stop }, 'shutting down');
    notifyState(logger, { STOPPING: '1' });
    await serving.close();
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) return reportInvalid('vmpi serve: ', e);
    throw e;
  }
}

function checkConfig(args: string[]): number {
  const { values, positionals } = parse('check-config', args, { schema: { type: 'boolean' } }, true);
  if (values.help) return help('check-config');
  if (values.schema) {
    if (positionals.length > 0) throw new UsageError('vmpi check-config: --schema takes no FILE');
    process.stdout.write(JSON.stringify(CONFIG_SCHEMA, null, 2) + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`vmpi check-config: expected one FILE, got ${positionals.length}; see vmpi check-config --help`);
  const file = positionals[0]!;
  let config: VmpiConfig;
  try {
    config = loadConfigFile(file, { checkHost: true });
  } catch (e) {
    if (e instanceof ConfigError) return reportInvalid('', e);
    throw e;
  }
  const n = config.devices.length;
  if (n === 0) {
    process.stderr.write(`${file}: devices: none: vmpi serve --config ${file} would refuse to start; list devices, or serve it with --socket PATH\n`);
    return EXIT_INVALID;
  }
  for (const w of configWarnings(config.devices.map((d, i) => ({ where: `devices[${i}]`, mode: d.mode })))) process.stderr.write(`${file}: warning: ${w}\n`);
  const ids = config.devices.map((d) => (d.vmpiId === undefined ? 'auto' : String(d.vmpiId)));
  const metrics = config.metrics.enabled ? `metrics on ${formatListenAddress(config.metrics.listen)}` : 'metrics off';
  const normal = config.normal ? `, normal DIF ${config.normal.dif}` : '';
  process.stdout.write(`${file}: ok: ${n} device${n === 1 ? '' : 's'} (VMPI-ids ${ids.join(', ')}), ${metrics}${normal}\n`);
  return 0;
}

function qemuArgs(args: string[]): number {
  const { values } = parse('qemu-args', args, {
    socket: { type: 'string', multiple: true },
    id: { type: 'string', multiple: true },
    mem: { type: 'string', multiple: true },
  });
  if (values.help) return help('qemu-args');
  const one = (name: string, v: string[] | undefined): string | undefined => {
    if (v !== undefined && v.length > 1) throw new UsageError(`vmpi qemu-args: --${name} given ${v.length} times; it describes one device, give it once`);
    return v?.[0];
  };
  const socket = one('socket', values.socket as string[] | undefined);
  if (socket === undefined) throw new UsageError('vmpi qemu-args: --socket PATH is required');
  const id = one('id', values.id as string[] | undefined) ?? 'vmpi0';
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) throw new UsageError(`vmpi qemu-args: --id ${id}: QEMU ids start with a letter and use letters, digits, '.', '_' and '-'`);
  const mem = one('mem', values.mem as string[] | undefined) ?? '512M';
  if (!/^[1-9][0-9]*[KMGT]?$/.test(mem)) throw new UsageError(`vmpi qemu-args: --mem ${mem}: expected a size such as 512M, 8G or 1073741824`);
  // QEMU's option syntax: a comma inside a value is written twice.
  const q = (v: string): string => v.replaceAll(',', ',,');
  const carrier = CARRIERS.get('gpio') ?? GPIO_CARRIER;
  const lines = [
    '-object',
    `memory-backend-memfd,id=mem,size=${mem},share=on`,
    '-machine',
    'q35,memory-backend=mem',
    '-m',
    mem,
    '-chardev',
    `socket,id=${id},path=${q(socket)}`,
    '-device',
    `${carrier.qemuDevice},chardev=${id},id=${id}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** Resolves on the first SIGINT/SIGTERM. */
/**
 * The first SIGINT or SIGTERM from now on (its name). The handlers are installed at once, so a
 * signal that arrives during start-up is kept until the caller is ready for it.
 */
function signalled(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

function numArg(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} ${value}: expected a number ${min}..${max}`);
  return n;
}

async function tgen(args: string[]): Promise<number> {
  const [mode, ...rest] = args;
  if (mode === undefined || mode === '-h' || mode === '--help' || mode === 'help') return help('tgen');
  const common = { dif: { type: 'string' }, app: { type: 'string' }, 'ipc-socket': { type: 'string' } } as const;
  const out = (line: string): void => void process.stdout.write(line + '\n');
  // Loaded here: --help does not need the addon.
  const cli = await import('./ops/tgen-cli.js');
  if (mode === 'server') {
    const { values } = parse('tgen server', rest, common);
    if (values.help) return help('tgen');
    return cli.tgenServer({ ipcSocket: str(values['ipc-socket']), dif: str(values.dif), app: str(values.app) }, signalled(), out);
  }
  if (mode === 'client') {
    const { values } = parse('tgen client', rest, {
      ...common,
      src: { type: 'string' },
      size: { type: 'string' },
      duration: { type: 'string' },
      count: { type: 'string' },
      unreliable: { type: 'boolean' },
      sweep: { type: 'boolean' },
      sizes: { type: 'string' },
      repeats: { type: 'string' },
      csv: { type: 'string' },
      svg: { type: 'string' },
      label: { type: 'string' },
      title: { type: 'string' },
    });
    if (values.help) return help('tgen');
    const sweep = values.sweep === true;
    for (const k of ['sizes', 'repeats', 'csv', 'svg', 'label', 'title']) if (!sweep && values[k] !== undefined) throw new UsageError(`vmpi tgen client: --${k} needs --sweep`);
    if (sweep && (values.size !== undefined || values.count !== undefined)) throw new UsageError('vmpi tgen client: --size and --count are for single runs, not --sweep');
    if (values.count !== undefined && values.duration !== undefined) throw new UsageError('vmpi tgen client: --count and --duration exclude each other');
    const { parseSizes } = await import('./dif/tgen.js');
    let sizes: number[] = [];
    try {
      sizes = parseSizes(str(values.sizes) ?? '0:4000:250');
    } catch (e) {
      throw new UsageError(`vmpi tgen client: ${(e as Error).message}`);
    }
    return cli.tgenClient(
      {
        ipcSocket: str(values['ipc-socket']),
        dif: str(values.dif),
        app: str(values.app),
        src: str(values.src),
        size: numArg('size', str(values.size), 0, 1 << 30) ?? 1000,
        durationMs: (numArg('duration', str(values.duration), 0.001, 86400) ?? 1) * 1000,
        count: values.count === undefined ? undefined : intArg('count', str(values.count) ?? '', 0, Number.MAX_SAFE_INTEGER),
        reliable: values.unreliable !== true,
        sweep: sweep
          ? {
              sizes,
              repeats: values.repeats === undefined ? 20 : intArg('repeats', str(values.repeats) ?? '', 1, 100000),
              csv: str(values.csv),
              svg: str(values.svg),
              label: str(values.label) ?? 'vmpi shim-hv',
              title: str(values.title),
            }
          : undefined,
      },
      out,
    );
  }
  if (mode === 'plot') {
    const { values, positionals } = parse('tgen plot', rest, { svg: { type: 'string' }, title: { type: 'string' } }, true);
    if (values.help) return help('tgen');
    const svg = str(values.svg);
    if (svg === undefined) throw new UsageError('vmpi tgen plot: --svg FILE is required');
    if (positionals.length === 0) throw new UsageError('vmpi tgen plot: give at least one LABEL=FILE.csv');
    const inputs = positionals.map((p) => {
      const i = p.indexOf('=');
      if (i <= 0 || i === p.length - 1) throw new UsageError(`vmpi tgen plot: ${p}: expected LABEL=FILE.csv`);
      return { label: p.slice(0, i), file: p.slice(i + 1) };
    });
    return cli.tgenPlot(inputs, svg, str(values.title), out);
  }
  throw new UsageError(`vmpi tgen: unknown mode "${mode}"; expected server, client or plot (see vmpi tgen --help)`);
}

async function guest(args: string[]): Promise<number> {
  const { values } = parse('guest', args, {
    device: { type: 'string', multiple: true },
    'ipc-socket': { type: 'string' },
    'normal-dif': { type: 'string' },
    config: { type: 'string' },
    'log-level': { type: 'string' },
    'log-format': { type: 'string' },
  });
  if (values.help) return help('guest');
  const normalDif = str(values['normal-dif']);
  const guestConfig = str(values.config);
  if (normalDif !== undefined && guestConfig !== undefined) throw new UsageError('vmpi guest: --normal-dif and --config exclude each other (put the DIF in the file\'s normal section)');
  let normal: NormalConfig | undefined;
  try {
    if (guestConfig !== undefined) normal = loadConfigFile(guestConfig).normal;
    else if (normalDif !== undefined) normal = validateConfig({ normal: { dif: normalDif } }).normal;
  } catch (e) {
    if (e instanceof ConfigError) return reportInvalid('vmpi guest: ', e);
    throw e;
  }
  const level = logLevelArg(str(values['log-level']));
  if (level !== undefined) setLogLevel(level);
  const format = logFormatArg(str(values['log-format']));
  if (format !== undefined) setLogFormat(format);
  const stop = signalled();
  installProcessGuard(logger);
  const { startGuest } = await import('./ops/guest.js');
  const serving = startGuest({ devices: strs(values.device), socketPath: str(values['ipc-socket']) ?? defaultIpcSocketPath(), logger, normal });
  const difs = [...serving.ipcps.map((i) => i.difName), ...(serving.normal ? [serving.normal.difName] : [])];
  logger.info({ socket: serving.daemon.socketPath, difs }, 'guest IPC daemon ready');
  notifyState(logger, { READY: '1', STATUS: `IPC daemon on ${serving.daemon.socketPath} for ${difs.join(', ')}` });
  logger.info({ signal: await stop }, 'shutting down');
  notifyState(logger, { STOPPING: '1' });
  serving.close();
  return 0;
}

function help(topic: string): number {
  process.stdout.write(HELP[topic] ?? HELP.main!);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        return help('main');
      case '-V':
      case '--version':
        process.stdout.write(version() + '\n');
        return 0;
      case 'serve':
        return await serve(rest);
      case '--print-capabilities':
        return await serve([command, ...rest]);
      case 'check-config':
        return checkConfig(rest);
      case 'qemu-args':
        return qemuArgs(rest);
      case 'tgen':
        return await tgen(rest);
      case 'guest':
        return await guest(rest);
      default:
        // The vhost-user back-end conventions put the socket options first: `vmpi --socket-path X`.
        if (/^--(socket-path|fd)(=|$)/.test(command)) return await serve([command, ...rest]);
        throw new UsageError(`vmpi: unknown command "${command}"; see vmpi --help`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(e.message + '\n');
      return EXIT_USAGE;
    }
    process.stderr.write(`vmpi ${command}: ${(e as Error).message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`vmpi: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
