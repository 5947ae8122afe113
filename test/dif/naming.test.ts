/**
 * RINA application names (src/dif/naming.ts): the "apn/api/aen/aei" string form both ways, the
 * canonical form, and each rule's typed NamingError.
 */
import t from 'tap';
import { MAX_NAME_COMPONENT_BYTES, NamingError, appNameEquals, appNameKey, formatAppName, parseAppName, toAppName, validateAppName, type AppName } from '../../src/dif/naming.js';

t.test('parse the four components', async (t) => {
  t.same(parseAppName('rina.apps.echo/1/mgmt/2'), { processName: 'rina.apps.echo', processInstance: '1', entityName: 'mgmt', entityInstance: '2' });
  t.same(parseAppName('echo'), { processName: 'echo' });
  t.same(parseAppName('echo/1'), { processName: 'echo', processInstance: '1' });
  t.same(parseAppName('echo//data'), { processName: 'echo', entityName: 'data' }, 'empty components are left out');
  t.same(parseAppName('echo/1//'), { processName: 'echo', processInstance: '1' });
  t.same(parseAppName('échø server/ü'), { processName: 'échø server', processInstance: 'ü' }, 'non-ASCII and inner spaces are fine');
  t.ok(Object.isFrozen(parseAppName('a')));
});

t.test('format is canonical: trailing empty components dropped', async (t) => {
  t.equal(formatAppName({ processName: 'a', processInstance: '1', entityName: 'e', entityInstance: '2' }), 'a/1/e/2');
  t.equal(formatAppName({ processName: 'a' }), 'a');
  t.equal(formatAppName({ processName: 'a', entityName: 'e' }), 'a//e');
  t.equal(formatAppName({ processName: 'a', processInstance: '', entityInstance: '3' }), 'a///3');
  for (const s of ['a', 'a/1', 'a//e', 'a/1/e/2', 'a///x']) t.equal(formatAppName(parseAppName(s)), s, `round trip ${s}`);
  t.equal(appNameKey('a/1//'), 'a/1');
  t.ok(appNameEquals('a/1', { processName: 'a', processInstance: '1' }));
  t.notOk(appNameEquals('a/1', 'a/2'));
  t.notOk(appNameEquals('a//1', 'a/1'), 'position matters');
});

t.test('typed errors for malformed names', async (t) => {
  const cases: Array<[string, string]> = [
    ['', 'empty_process_name'],
    ['/1', 'empty_process_name'],
    ['a/b/c/d/e', 'too_many_components'],
    ['a\u0000b', 'bad_character'],
    ['a/\n', 'bad_character'],
    ['a\u007f', 'bad_character'],
    ['a\ufffd', 'bad_character'],
    [' a', 'surrounding_space'],
    ['a/1 ', 'surrounding_space'],
    ['x'.repeat(MAX_NAME_COMPONENT_BYTES + 1), 'too_long'],
    ['é'.repeat(128), 'too_long'],
  ];
  for (const [text, code] of cases) {
    t.throws(() => parseAppName(text), { name: 'NamingError', code }, `${JSON.stringify(text).slice(0, 30)} → ${code}`);
  }
  t.doesNotThrow(() => parseAppName('x'.repeat(MAX_NAME_COMPONENT_BYTES)), 'exactly the limit is fine');
  t.throws(() => parseAppName(42 as unknown as string), { code: 'not_a_string' });
  t.throws(() => validateAppName({ processName: 'a', entityName: 'x/y' }), { code: 'bad_character' }, "'/' inside a component");
  t.throws(() => validateAppName({ processInstance: '1' } as unknown as AppName), { code: 'empty_process_name' });
  t.throws(() => validateAppName({ processName: 5 } as unknown as AppName), { code: 'not_a_string' });
  t.throws(() => validateAppName(null as unknown as AppName), NamingError);
  t.throws(() => formatAppName({ processName: '' }), { code: 'empty_process_name' });
});

t.test('toAppName accepts both forms and normalizes', async (t) => {
  t.same(toAppName('a/1'), { processName: 'a', processInstance: '1' });
  const n = toAppName({ processName: 'a', processInstance: '', entityName: 'e' });
  t.same(n, { processName: 'a', entityName: 'e' });
  t.notOk('processInstance' in n, 'empty components are removed, not kept as ""');
});
