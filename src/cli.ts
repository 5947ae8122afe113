#!/usr/bin/env node
/**
 * cli.ts — the `vmpi` command.
 *
 * Owns: argument parsing, turning flags into a VmpiHost, printing QEMU arguments, signals and
 * exit codes (0 ok, 1 runtime failure, 2 usage error). No protocol or datapath logic lives here.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { logger, setLogLevel } from './log.js';
import { CARRIERS, GPIO_CARRIER } from './vmpi/carrier.js';
import { VmpiHost, type DeviceSpec } from './vmpi/host.js';

const EXIT_USAGE = 2;

class UsageError extends Error {}

const HELP: Record<string, string> = {
  main: `vmpi — vhost-user VMPI back-end (RINA shim DIF for hypervisors)

Usage: vmpi <command> [options]

Commands:
  serve       serve VMPI devices to QEMU over vhost-user sockets
  qemu-args   print the QEMU arguments that attach a VM to a device's socket

Options:
  -h, --help     show help (also: vmpi <command> --help)
  -V, --version  print the version
`,
  serve: `Usage: vmpi serve --socket PATH [--vmpi-id N] [--socket PATH [--vmpi-id N]] ...

Serves one VMPI device per --socket. The n-th --vmpi-id belongs to the n-th --socket; devices
without one get the lowest free VMPI-id.

Options:
  --socket PATH       vhost-user socket to create (repeatable)
  --vmpi-id N         VMPI-id of the corresponding device, 1..65535 (repeatable)
  --listen-fd N       serve a device on an inherited listening socket (systemd: 3)
  --max-sdu-log2 N    largest SDU as a power of two (default 16 = 64 KiB)
  --log-level LEVEL   trace|debug|info|warn|error (default info)
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

function parse(command: string, args: string[], options: NonNullable<ParseArgsConfig['options']>): { values: ArgValues } {
  try {
    const { values } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' }, ...options }, strict: true, allowPositionals: false });
    return { values: values as ArgValues };
  } catch (e) {
    throw new UsageError(`vmpi ${command}: ${(e as Error).message}`);
  }
}

function intArg(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) throw new UsageError(`--${name} ${value}: expected an integer ${min}..${max}`);
  return n;
}

async function serve(args: string[]): Promise<number> {
  const { values } = parse('serve', args, {
    socket: { type: 'string', multiple: true },
    'vmpi-id': { type: 'string', multiple: true },
    'listen-fd': { type: 'string' },
    'max-sdu-log2': { type: 'string' },
    'log-level': { type: 'string' },
  });
  if (values.help) return help('serve');
  if (typeof values['log-level'] === 'string') setLogLevel(values['log-level']);
  const sockets = (values.socket as string[] | undefined) ?? [];
  const ids = ((values['vmpi-id'] as string[] | undefined) ?? []).map((v) => intArg('vmpi-id', v, 1, 0xffff));
  const maxSduLog2 = typeof values['max-sdu-log2'] === 'string' ? intArg('max-sdu-log2', values['max-sdu-log2'], 10, 20) : undefined;
  const specs: DeviceSpec[] = sockets.map((socketPath, i) => ({ socketPath, vmpiId: ids[i], maxSduLog2 }));
  if (typeof values['listen-fd'] === 'string') specs.push({ listenFd: intArg('listen-fd', values['listen-fd'], 0, 65535), vmpiId: ids[sockets.length], maxSduLog2 });
  if (specs.length === 0) throw new UsageError('vmpi serve: give at least one --socket PATH (or --listen-fd N)');
  if (ids.length > specs.length) throw new UsageError(`vmpi serve: ${ids.length} --vmpi-id values for ${specs.length} devices`);

  const host = new VmpiHost(logger);
  for (const spec of specs) {
    const d = host.addDevice(spec);
    logger.info({ vmpiId: d.vmpiId, socket: spec.socketPath ?? `fd:${spec.listenFd}` }, 'device configured');
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      logger.info({ signal: sig }, 'shutting down');
      host.close();
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}

function qemuArgs(args: string[]): number {
  const { values } = parse('qemu-args', args, {
    socket: { type: 'string' },
    id: { type: 'string' },
    mem: { type: 'string' },
  });
  if (values.help) return help('qemu-args');
  if (typeof values.socket !== 'string') throw new UsageError('vmpi qemu-args: --socket PATH is required');
  const id = typeof values.id === 'string' ? values.id : 'vmpi0';
  const mem = typeof values.mem === 'string' ? values.mem : '512M';
  const carrier = CARRIERS.get('gpio') ?? GPIO_CARRIER;
  const lines = [
    '-object',
    `memory-backend-memfd,id=mem,size=${mem},share=on`,
    '-machine',
    'q35,memory-backend=mem',
    '-m',
    mem,
    '-chardev',
    `socket,id=${id},path=${values.socket}`,
    '-device',
    `${carrier.qemuDevice},chardev=${id},id=${id}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
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
      case 'qemu-args':
        return qemuArgs(rest);
      default:
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
