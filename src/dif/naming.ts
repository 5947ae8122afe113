/**
 * naming.ts — RINA application naming: process name + process instance, and optionally entity
 * name + entity instance, written "apn/api/aen/aei" as IRATI and rlite do.
 *
 * Owns: the `AppName` value, its validation, the string form (parse/format) and a canonical key
 * for maps. Only the process name is required; empty components are "not given". The string
 * form drops trailing empty components ("a/1" rather than "a/1//"), so `formatAppName` of a
 * parsed name is canonical and two names are equal exactly when their keys are equal.
 *
 * Rules (checked by `validateAppName` and `parseAppName`, failures are `NamingError`s):
 * - at most 4 components separated by '/'; the process name is non-empty;
 * - a component never contains '/', control characters (C0, DEL, C1) or U+FFFD (what a bad
 *   UTF-8 decode leaves behind), and has no leading or trailing white space;
 * - a component is at most MAX_NAME_COMPONENT_BYTES bytes of UTF-8.
 */
import { CodedError } from '../sys/coded-error.js';

export interface AppName {
  /** Application process name (required, non-empty). */
  readonly processName: string;
  readonly processInstance?: string;
  readonly entityName?: string;
  readonly entityInstance?: string;
}

export const MAX_NAME_COMPONENT_BYTES = 255;
/** Longest string form: 4 components and 3 separators. */
export const MAX_NAME_STRING_BYTES = 4 * MAX_NAME_COMPONENT_BYTES + 3;

export type NamingErrorCode = 'not_a_string' | 'empty_process_name' | 'too_many_components' | 'bad_character' | 'surrounding_space' | 'too_long';

export class NamingError extends CodedError<NamingErrorCode> {
  override name = 'NamingError';
}

const COMPONENTS = ['processName', 'processInstance', 'entityName', 'entityInstance'] as const;
type Component = (typeof COMPONENTS)[number];

const BAD_CHAR = /[\u0000-\u001f\u007f-\u009f/\ufffd]/u;
const encoder = new TextEncoder();

function checkComponent(field: Component, value: unknown): string {
  if (typeof value !== 'string') throw new NamingError('not_a_string', `${field} must be a string, not ${typeof value}`);
  const bad = BAD_CHAR.exec(value);
  if (bad) {
    const code = bad[0].codePointAt(0)!.toString(16).padStart(4, '0');
    throw new NamingError('bad_character', `${field} ${JSON.stringify(value)} contains a forbidden character (U+${code})`);
  }
  if (value !== value.trim()) throw new NamingError('surrounding_space', `${field} ${JSON.stringify(value)} has leading or trailing white space`);
  const bytes = encoder.encode(value).byteLength;
  if (bytes > MAX_NAME_COMPONENT_BYTES) throw new NamingError('too_long', `${field} is ${bytes} bytes of UTF-8; the limit is ${MAX_NAME_COMPONENT_BYTES}`);
  return value;
}

/**
 * Check `name` and return it in normal form: a fresh frozen object whose empty optional
 * components are left out. Throws a NamingError.
 */
export function validateAppName(name: AppName): AppName {
  if (typeof name !== 'object' || name === null) throw new NamingError('not_a_string', 'an application name must be an object or a string');
  const out: { -readonly [K in Component]?: string } = {};
  for (const field of COMPONENTS) {
    const value = name[field];
    if (value === undefined) continue;
    const checked = checkComponent(field, value);
    if (checked !== '') out[field] = checked;
  }
  if (out.processName === undefined) throw new NamingError('empty_process_name', 'the application process name is required');
  return Object.freeze(out as AppName);
}

/** Parse "apn[/api[/aen[/aei]]]". Throws a NamingError. */
export function parseAppName(text: string): AppName {
  if (typeof text !== 'string') throw new NamingError('not_a_string', `an application name must be a string, not ${typeof text}`);
  const parts = text.split('/');
  if (parts.length > COMPONENTS.length) {
    throw new NamingError('too_many_components', `${JSON.stringify(text)} has ${parts.length} components; an application name has at most 4 (apn/api/aen/aei)`);
  }
  const name: { -readonly [K in Component]?: string } = {};
  parts.forEach((part, i) => {
    name[COMPONENTS[i]!] = part;
  });
  return validateAppName(name as AppName);
}

/** The string form, trailing empty components dropped. Validates first (throws a NamingError). */
export function formatAppName(name: AppName): string {
  const n = validateAppName(name);
  const parts = COMPONENTS.map((f) => n[f] ?? '');
  while (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
  return parts.join('/');
}

/** Accept either form; returns the normal form. Throws a NamingError. */
export function toAppName(name: AppName | string): AppName {
  return typeof name === 'string' ? parseAppName(name) : validateAppName(name);
}

/** A canonical string for maps and comparisons (the formatted name). */
export function appNameKey(name: AppName | string): string {
  return formatAppName(toAppName(name));
}

export function appNameEquals(a: AppName | string, b: AppName | string): boolean {
  return appNameKey(a) === appNameKey(b);
}
