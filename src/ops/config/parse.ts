/**
 * config/parse.ts — reading a config file: YAML or JSON by extension, the YAML traps (alias bombs,
 * self-referencing aliases), then validation (schema + config/checks.ts, every problem at once in
 * a ConfigError) into a typed VmpiConfig with defaults filled in and socket paths resolved.
 */
import { readFileSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { LogFormat } from '../../sys/log.js';
import type { IpcLimits } from '../../dif/ipc/daemon.js';
import { DEFAULT_SDU_LOG2 } from '../../vmpi/carrier.js';
import { permissionProblems } from '../socket-perms.js';
import { duplicateNames, duplicateProblems, echoChannelProblems, normalProblems, shimEthProblems, shimUdpProblems } from './checks.js';
import { parseListenAddress } from './listen.js';
import { dedupe, firstLine, formatAjvError, isRecord } from './messages.js';
import { NAME_PATTERN, validateSchema } from './schema.js';
import {
  ConfigError,
  DEFAULT_METRICS_LISTEN,
  type ConfigFormat,
  type DeviceConfig,
  type DifConfig,
  type IpcpConfig,
  type ListenAddress,
  type LogLevel,
  type VmpiConfig,
} from './types.js';

/** Read, parse and validate a config file. Throws ConfigError (listing every problem). */
export function loadConfigFile(file: string, opts: { checkHost?: boolean } = {}): VmpiConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read the file: ${(e as Error).message}`], file);
  }
  return parseConfig(text, { format: formatOf(file), source: file, baseDir: dirname(resolve(file)), checkHost: opts.checkHost });
}

function formatOf(file: string): ConfigFormat {
  const ext = extname(file).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  throw new ConfigError([`unknown config format "${ext || '(no extension)'}": name the file *.yaml, *.yml or *.json`], file);
}

export interface ParseOptions {
  format: ConfigFormat;
  /** Prefix for messages (the file name). */
  source?: string;
  /** Directory relative socket paths are resolved against (default: the working directory). */
  baseDir?: string;
  /** Also check what depends on this host: owner and group names must exist (getent). */
  checkHost?: boolean;
}

/** Parse and validate config text. Throws ConfigError listing every problem. */
export function parseConfig(text: string, opts: ParseOptions): VmpiConfig {
  let raw: unknown;
  if (opts.format === 'json') {
    try {
      raw = JSON.parse(text);
    } catch (e) {
      // JSON.parse quotes the text around the error, newlines included: keep the problem one line.
      throw new ConfigError([`invalid JSON: ${(e as Error).message.replace(/\r?\n/g, '\\n')}`], opts.source);
    }
  } else {
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) {
      throw new ConfigError(
        doc.errors.map((e) => `invalid YAML${e.linePos ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : ''}: ${firstLine(e.message)}`),
        opts.source,
      );
    }
    try {
      raw = doc.toJS({ maxAliasCount: MAX_YAML_ALIASES });
    } catch (e) {
      // yaml throws a plain ReferenceError when aliases expand too much (an "alias bomb").
      throw new ConfigError([`invalid YAML: ${firstLine((e as Error).message)} (more than ${MAX_YAML_ALIASES} alias expansions); write the values out instead of nesting aliases`], opts.source);
    }
    const loop = selfReference(raw, '');
    if (loop !== undefined) {
      throw new ConfigError([`${loop || '(top level)'}: contains itself through a YAML alias (*name inside its own &name); write the value out instead`], opts.source);
    }
  }
  if (raw === null || raw === undefined) raw = {};
  return validateConfig(raw, opts);
}

/** Alias expansions allowed in a YAML file (yaml's own default): a config needs few, if any. */
const MAX_YAML_ALIASES = 100;

/**
 * The path of the first value that contains itself (a YAML alias inside its own anchor makes a
 * cyclic object, which no check or message could print), or undefined.
 */
function selfReference(v: unknown, path: string, open = new Set<object>()): string | undefined {
  if (typeof v !== 'object' || v === null || ArrayBuffer.isView(v)) return undefined;
  if (open.has(v)) return path;
  open.add(v);
  const entries: [string, unknown][] =
    Array.isArray(v) || v instanceof Set ? [...v].map((x, i) => [`${path}[${i}]`, x]) : v instanceof Map ? [...v].map(([k, x]) => [`${path}.${String(k)}`, x]) : Object.entries(v).map(([k, x]) => [path ? `${path}.${k}` : k, x]);
  for (const [p, x] of entries) {
    const found = selfReference(x, p, open);
    if (found !== undefined) return found;
  }
  open.delete(v);
  return undefined;
}

/** Validate an already-parsed object (schema + semantic checks). Throws ConfigError. */
export function validateConfig(raw: unknown, opts: Omit<ParseOptions, 'format'> & { format?: ConfigFormat } = {}): VmpiConfig {
  const problems: string[] = [];
  const schema = validateSchema(raw);
  if (!schema.ok) problems.push(...dedupe(schema.errors.map((e) => formatAjvError(e, opts.format ?? 'yaml'))));
  // The semantic checks run even when the schema failed, on whatever parts are well-typed, so one
  // run lists every problem.
  const data = isRecord(raw) ? raw : {};
  const baseDir = opts.baseDir ?? process.cwd();
  const rawDevices = Array.isArray(data.devices) ? data.devices : [];
  problems.push(
    ...duplicateProblems(
      rawDevices.map((d: unknown, i) => {
        const r = isRecord(d) ? d : {};
        return {
          where: `devices[${i}]`,
          vmpiId: Number.isInteger(r.vmpiId) ? (r.vmpiId as number) : undefined,
          socket: typeof r.socket === 'string' && r.socket !== '' ? resolve(baseDir, r.socket) : undefined,
        };
      }),
    ),
  );
  rawDevices.forEach((d: unknown, i) => problems.push(...echoChannelProblems(`devices[${i}].echoChannels`, isRecord(d) ? d.echoChannels : undefined)));
  const m = isRecord(data.metrics) ? data.metrics : {};
  let listen: ListenAddress | undefined;
  if (typeof m.listen === 'string') {
    try {
      listen = parseListenAddress(m.listen);
    } catch (e) {
      problems.push(`metrics.listen: ${JSON.stringify(m.listen)} ${(e as Error).message}`);
    }
  }
  problems.push(...duplicateNames('difs', data.difs), ...duplicateNames('ipcps', data.ipcps));
  const normal = normalProblems(data, problems);
  const shimUdp = shimUdpProblems(data, problems);
  const shimEth = shimEthProblems(data, problems);
  if (opts.checkHost) {
    problems.push(
      ...permissionProblems(
        rawDevices.map((d: unknown, i) => {
          const r = isRecord(d) ? d : {};
          const id = (v: unknown) => ((typeof v === 'string' && new RegExp(NAME_PATTERN).test(v)) || (typeof v === 'number' && Number.isInteger(v) && v >= 0) ? v : undefined);
          return { where: `devices[${i}]`, owner: id(r.owner), group: id(r.group) };
        }),
      ),
    );
  }
  if (problems.length > 0) throw new ConfigError(problems, opts.source);

  // Valid: the casts below are what the schema guarantees.
  const devices: DeviceConfig[] = (rawDevices as RawDevice[]).map((d) => ({
    socket: resolve(baseDir, d.socket),
    vmpiId: d.vmpiId,
    maxSduLog2: d.maxSduLog2 ?? DEFAULT_SDU_LOG2,
    carrier: d.carrier ?? 'gpio',
    owner: normaliseId(d.owner),
    group: normaliseId(d.group),
    mode: d.mode === undefined ? undefined : parseInt(d.mode, 8),
    ...(d.allowUnsealedMemory === true ? { allowUnsealedMemory: true } : {}),
    ...(d.echoChannels !== undefined && d.echoChannels.length > 0 ? { echoChannels: [...d.echoChannels] } : {}),
  }));
  const log = (isRecord(data.log) ? data.log : {}) as { level?: LogLevel; format?: LogFormat };
  return {
    devices,
    metrics: {
      enabled: (m.enabled as boolean | undefined) ?? true,
      listen: listen ?? parseListenAddress(DEFAULT_METRICS_LISTEN),
      ...(typeof m.guestTimeoutMs === 'number' ? { guestTimeoutMs: m.guestTimeoutMs } : {}),
      ...(typeof m.guestMaxBytes === 'number' ? { guestMaxBytes: m.guestMaxBytes } : {}),
    },
    log: { level: log.level ?? 'info', ...(log.format !== undefined ? { format: log.format } : {}) },
    difs: (data.difs ?? []) as DifConfig[],
    ipcps: (data.ipcps ?? []) as IpcpConfig[],
    ...(normal ? { normal } : {}),
    ...(shimUdp ? { shimUdp: shimUdp.hostsFile === undefined ? shimUdp : { ...shimUdp, hostsFile: resolve(baseDir, shimUdp.hostsFile) } } : {}),
    ...(shimEth ? { shimEth } : {}),
    ipc: { ...((data.ipc ?? {}) as Partial<IpcLimits> & { maxRingBytes?: number }) },
  };
}

/** The default configuration: no devices, metrics on 127.0.0.1:19464, log level info. */
export function defaultConfig(): VmpiConfig {
  return validateConfig({});
}

interface RawDevice {
  socket: string;
  vmpiId?: number;
  maxSduLog2?: number;
  carrier?: string;
  owner?: string | number;
  group?: string | number;
  mode?: string;
  allowUnsealedMemory?: boolean;
  echoChannels?: number[];
}

function normaliseId(v: string | number | undefined): string | number | undefined {
  if (typeof v === 'string' && /^[0-9]+$/.test(v)) return Number(v);
  return v;
}
