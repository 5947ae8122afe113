/**
 * run.ts — how `vmpi serve` runs with restarts: which holder keeps the fds, the keeper or the
 * worker role, the upgrade check, and the hand-over.
 *
 * Owns the decisions the CLI wires (src/cli/serve.ts):
 * - mode (`--restart`, or $VMPI_RESTART): `auto` (default) is `systemd` when $NOTIFY_SOCKET is
 *   set (a Type=notify unit: its fd store holds the fds; FileDescriptorStoreMax= must be set),
 *   else `keeper` (this process becomes the keeper, keeper.ts, and runs the worker as a child);
 *   a keeper's child has $VMPI_RESTART_ROLE=worker. `off`: nothing survives the process.
 * - signals in the worker: SIGTERM/SIGINT under the keeper or with `off` is a clean shutdown
 *   (connections closed, socket files removed); under systemd it is a hand-over (systemd cannot
 *   say whether it stops or restarts the unit; on a stop it closes the fd store, which the VMs
 *   see as the back-end going away). SIGHUP is an upgrade: the code on disk now is asked to
 *   read the state (`vmpi serve --check-restart-state-fd N`); only if it can does this worker
 *   hand over and exit with EXIT_RESTART (75) to be started again (the keeper does at once;
 *   systemd does with Restart=on-failure). If it cannot, this worker keeps serving and says why.
 */
import { spawn } from 'node:child_process';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import type { Logger } from '../../sys/log.js';
import { errText } from '../../sys/fd.js';
import { native } from '../../sys/native.js';
import { StateError } from '../../vhost-user/state.js';
import { parseDocument } from './document.js';
import { NotifyFdHolder } from './fd-store.js';

export { inheritedFds } from './fd-store.js';
import { EXIT_STATE_REFUSED, Keeper } from './keeper.js';
import { StateFile } from './state-file.js';
import { Restarter } from './worker.js';

export { EXIT_RESTART, EXIT_STATE_REFUSED } from './keeper.js';

export type RestartMode = 'keeper' | 'systemd' | 'off';
export const RESTART_MODES = ['auto', 'keeper', 'systemd', 'off'] as const;

export class RestartModeError extends Error {
  override name = 'RestartModeError';
  readonly code = 'bad_restart_mode';
}

/** The mode asked for (flag, else $VMPI_RESTART, else auto), resolved. */
export function restartMode(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): RestartMode {
  const asked = flag ?? env.VMPI_RESTART ?? 'auto';
  if (!(RESTART_MODES as readonly string[]).includes(asked)) throw new RestartModeError(`--restart ${asked}: use one of ${RESTART_MODES.join(', ')}`);
  if (asked !== 'auto') return asked as RestartMode;
  if (env.VMPI_RESTART_ROLE === 'worker') return 'keeper';
  return env.NOTIFY_SOCKET ? 'systemd' : 'keeper';
}

/** True when this process should become the keeper (and not serve itself). */
export function isKeeperParent(mode: RestartMode, env: NodeJS.ProcessEnv = process.env): boolean {
  return mode === 'keeper' && env.VMPI_RESTART_ROLE !== 'worker';
}

/** Run the keeper until it ends; the exit status for the process. */
export function runKeeper(log: Logger): Promise<number> {
  return new Keeper({ log }).run();
}

/**
 * The restart state of a serving worker: what the fd holder gave back (`inherited`, read with
 * inheritedFds() before the LISTEN_* variables are cleared), read and checked.
 * Returns an exit status instead when the state is of another version (refused, touching
 * nothing). A malformed state is logged and the worker starts afresh.
 */
export function openRestarter(mode: RestartMode, inherited: Map<string, number[]>, log: Logger, version: string, env: NodeJS.ProcessEnv = process.env): Restarter | undefined | number {
  if (mode === 'off') return undefined;
  if (env.VMPI_RESTART_ROLE === 'worker') {
    // Die with the keeper: a worker nobody holds the fds for could not be restarted.
    native.setParentDeathSignal(9);
    if (process.ppid === 1) return 1;
  }
  const holder = new NotifyFdHolder(mode === 'systemd' ? 'systemd' : 'keeper', env);
  try {
    return new Restarter(holder, inherited, log, version);
  } catch (e) {
    if (e instanceof StateError && e.code === 'state_version') {
      log.error({ err: e.message }, 'refusing to start: the restart state is of another version; the VMs keep their devices as they are');
      return EXIT_STATE_REFUSED;
    }
    if (e instanceof StateError) {
      log.error({ err: e.message }, 'the restart state is unusable; starting afresh (the VMs must reconnect their devices)');
      const fresh = new Map([...inherited].filter(([name]) => name !== 'vmpi-state'));
      return new Restarter(holder, fresh, log, version);
    }
    throw e;
  }
}

/** `vmpi serve --check-restart-state-fd N`: can this code resume that state? 0 yes, 3 no. */
export async function checkRestartState(fd: number): Promise<number> {
  try {
    const text = StateFile.open(fd).read()?.text;
    if (text !== undefined) parseDocument(text);
    await import('../serve.js'); // the datapath of this code loads
    process.stdout.write('ok: this vmpi can resume the restart state\n');
    return 0;
  } catch (e) {
    process.stdout.write(`refused: ${errText(e)}\n`);
    return EXIT_STATE_REFUSED;
  }
}

/** Ask the code on disk now whether it can resume `stateFd`. Resolves with its answer. */
export function upgradeCheck(stateFd: number, log: Logger, timeoutMs = 60_000): Promise<{ ok: boolean; said: string }> {
  return new Promise((resolve) => {
    const command = [...process.execArgv, process.argv[1]!, 'serve', '--check-restart-state-fd', '3'];
    let said = '';
    const child = spawn(process.execPath, command, { stdio: ['ignore', 'pipe', 'pipe', stateFd], env: { ...process.env, VMPI_RESTART_ROLE: 'check' } });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout?.on('data', (b: Buffer) => (said = (said + b.toString()).slice(-2000)));
    child.stderr?.on('data', (b: Buffer) => (said = (said + b.toString()).slice(-2000)));
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ ok: false, said: errText(e) });
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const ok = code === 0;
      if (!ok) log.warn({ code, signal, said: said.trim() }, 'upgrade check failed');
      resolve({ ok, said: said.trim() || (signal ? `killed by ${signal}` : `exit status ${String(code)}`) });
    });
  });
}

/** Write this process's pid to `path` (--pid-file), for `kill -HUP $(cat path)`. */
export function writePidFile(path: string): void {
  writeFileSync(path, `${process.pid}\n`, { mode: 0o644 });
}

/** Remove `path` if it still holds this process's pid. */
export function removePidFile(path: string): void {
  try {
    if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
  } catch {
    // gone already
  }
}
