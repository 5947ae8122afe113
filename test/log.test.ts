/**
 * log.test.ts — the log formats (src/sys/log.ts): JSON for shippers, text for people, and journal
 * lines with sd-daemon priority prefixes, chosen by default when $JOURNAL_STREAM says stderr is the
 * journal. The last test runs `vmpi serve` with stderr on a file that JOURNAL_STREAM names, as
 * systemd would, and reads the priorities `journalctl -p` filters on.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { defaultLogFormat, formatLine, stderrIsJournal } from '../src/sys/log.js';

const ROOT = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'vmpi-log-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const line = (o: object): string => JSON.stringify({ time: '2026-12-01T10:00:00.000Z', pid: 7, ...o }) + '\n';

t.test('text and journal lines', async (t) => {
  t.equal(formatLine(line({ level: 30, msg: 'device configured', vmpiId: 3, socket: '/run/vmpi/vm1.sock' }), 'text'), '2026-12-01T10:00:00.000Z INFO device configured vmpiId=3 socket=/run/vmpi/vm1.sock\n');
  t.equal(formatLine(line({ level: 50, msg: 'boom', err: { message: 'bad thing', code: 'EBAD' } }), 'journal'), '<3>boom err="bad thing"\n', 'error → priority 3; an err object shows its message');
  t.equal(formatLine(line({ level: 40, msg: 'careful' }), 'journal'), '<4>careful\n', 'warn → 4');
  t.equal(formatLine(line({ level: 30, msg: 'x' }), 'journal'), '<6>x\n', 'info → 6');
  t.equal(formatLine(line({ level: 20, msg: 'x' }), 'journal'), '<7>x\n', 'debug → 7');
  t.equal(formatLine(line({ level: 60, msg: 'x' }), 'journal'), '<2>x\n', 'fatal → 2');
  t.equal(formatLine(line({ level: 30, msg: 'two\nlines', note: 'a b' }), 'journal'), '<6>two\\nlines note="a b"\n', 'one record stays one journal line');
  t.equal(formatLine('not json', 'text'), 'not json\n', 'anything else passes through');
});

t.test('JOURNAL_STREAM decides the default format', async (t) => {
  const f = join(dir, 'stream');
  writeFileSync(f, '');
  const fd = openSync(f, 'a');
  t.teardown(() => closeSync(fd));
  const st = fstatSync(fd);
  t.ok(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd), 'dev:inode of the fd: the journal');
  t.notOk(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }, fd), 'another inode: not the journal (stderr was redirected)');
  t.notOk(stderrIsJournal({}, fd));
  t.equal(defaultLogFormat({ VMPI_LOG_FORMAT: 'text' }), 'text');
  t.equal(defaultLogFormat({ VMPI_LOG_FORMAT: 'nonsense' }), stderrIsJournal(process.env) ? 'journal' : 'json', 'an unknown format is ignored');
});

t.test('vmpi serve under systemd-like JOURNAL_STREAM writes priority-prefixed lines', async (t) => {
  const errFile = join(dir, 'serve.stderr');
  writeFileSync(errFile, '');
  const fd = openSync(errFile, 'a');
  const st = fstatSync(fd);
  const cfg = join(dir, 'open.yaml');
  writeFileSync(cfg, `devices:\n  - {socket: ${join(dir, 'j1.sock')}, vmpiId: 5, mode: "0777"}\nmetrics: {enabled: false}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, JOURNAL_STREAM: `${st.dev}:${st.ino}`, VMPI_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  delete env.VMPI_LOG_FORMAT;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli.ts'), 'serve', '--config', cfg, '--no-ipc'], { cwd: dir, env, stdio: ['ignore', 'ignore', fd] });
  closeSync(fd);
  const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const end = Date.now() + 20000;
  while (!readFileSync(errFile, 'utf8').includes('device configured') && Date.now() < end && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 15000))]);
  t.equal(code, 0);
  const lines = readFileSync(errFile, 'utf8').trimEnd().split('\n');
  t.ok(lines.length >= 3, `some lines: ${lines.join(' | ')}`);
  t.ok(lines.every((l) => /^<[0-7]>/.test(l)), 'every line has a priority prefix');
  t.ok(lines.some((l) => /^<4>devices\[0\]\.mode: "0777" lets every local user connect/.test(l)), 'the world-writable socket warning at priority 4 (warning)');
  t.ok(lines.some((l) => /^<6>device configured .*vmpiId=5/.test(l)), 'info at priority 6');
  t.notOk(lines.some((l) => l.includes('{"level"')), 'no JSON in the journal');
});
