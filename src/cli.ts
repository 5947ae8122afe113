#!/usr/bin/env node
/**
 * cli.ts — the `vmpi` command: picks the subcommand and turns its outcome into an exit code
 * (0 ok, 1 runtime failure or invalid configuration, 2 usage error).
 *
 * Each subcommand lives in src/cli/ (serve.ts, guest.ts, check-config.ts, qemu-args.ts, tgen.ts,
 * inspect.ts, top.ts);
 * src/cli/args.ts has what they share (argument parsing, UsageError), src/cli/help.ts the help
 * texts. They wire flags and the config file (src/ops/config.ts) into src/ops/: no protocol,
 * datapath or ops logic lives in the CLI.
 */
import { EXIT_USAGE, UsageError, version } from './cli/args.js';
import { checkConfig } from './cli/check-config.js';
import { guest } from './cli/guest.js';
import { help } from './cli/help.js';
import { dif, ipcp } from './cli/inspect.js';
import { qemuArgs } from './cli/qemu-args.js';
import { serve } from './cli/serve.js';
import { tgen } from './cli/tgen.js';
import { top } from './cli/top.js';

export { CAPABILITIES } from './cli/serve.js';

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
      case 'ipcp':
        return await ipcp(rest);
      case 'dif':
        return await dif(rest);
      case 'top':
        return await top(rest);
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
