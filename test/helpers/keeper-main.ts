/**
 * keeper-main.ts — a real keeper process (src/ops/restart/keeper.ts) whose worker is
 * test/helpers/keeper-worker.ts, for test/restart/keeper.test.ts. Logs JSON to stderr.
 */
import { Keeper } from '../../src/ops/restart/keeper.js';
import { logger, setLogFormat } from '../../src/sys/log.js';

setLogFormat('json');
const worker = new URL('./keeper-worker.ts', import.meta.url).pathname;
const code = await new Keeper({ log: logger, command: [process.execPath, '--import', import.meta.resolve('tsx'), worker] }).run();
process.exit(code);
