/**
 * main.ts — the life of a figure bench process: <ID>_REPLOT (rewrite the outputs of a saved run,
 * measure nothing), the root check, the bench's own preparation (guest images, the private
 * network), the sweep, the table, and cleanup on exit and on signals (senders and guests killed,
 * the namespace removed) so an interrupted run leaves nothing behind.
 */
import { liveGuests } from '../../test/helpers/guest.js';
import { Figure, type FigureSettings, type FigureSpec } from './figure.js';
import type { PrivateNet } from './netns.js';
import { liveSenders, type Series } from './series.js';

export interface FigureBench {
  spec: FigureSpec;
  settings: FigureSettings;
  say: (s: string) => void;
  /** The bench's private network (a PrivateNet, or Fig. 4c's TwoHostNet): removed on exit and on signals. */
  net: Pick<PrivateNet, 'ns' | 'remove'>;
  /** What the bench needs root for, for the error when it is not root. */
  needsRootFor: string;
  /** After the root check, before the sweep (build guest images, create the network …). */
  prepare(): Promise<void> | void;
  makeSeries(key: string): Series;
}

export function runFigureBench(b: FigureBench): void {
  let cleaned = false;
  const cleanupSync = (): void => {
    if (cleaned) return;
    cleaned = true;
    for (const s of liveSenders) s.kill('SIGKILL');
    for (const g of [...liveGuests]) g.kill();
    // Deleting a tap detaches a QEMU that may still be exiting; the namespace goes with the
    // last process in it.
    b.net.remove();
  };
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      b.say(`${sig}: stopping guests, removing ${b.net.ns}`);
      cleanupSync();
      process.exit(130);
    });
  }
  const main = async (): Promise<void> => {
    const fig = new Figure(b.spec, b.settings, b.say);
    const replot = process.env[`${b.spec.id.toUpperCase()}_REPLOT`];
    if (replot) {
      const files = fig.replot(replot);
      fig.printTable();
      console.log(`\nrewritten from ${replot}: ${files.join(', ')}`);
      return;
    }
    const startedAt = Date.now();
    if (process.getuid?.() !== 0) throw new Error(`bench:${b.spec.id} needs root (${b.needsRootFor})`);
    await b.prepare();
    const files = await fig.run((key) => b.makeSeries(key));
    fig.printTable();
    console.log(`\nwritten: ${files.join(', ')}`);
    console.log(`total time ${((Date.now() - startedAt) / 1000).toFixed(0)} s`);
  };
  main()
    .catch((e: unknown) => {
      console.error(e);
      process.exitCode = 1;
    })
    .finally(cleanupSync);
}
