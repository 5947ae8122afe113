/**
 * config.ts — the vmpi configuration file: parse (YAML or JSON, by extension), validate, merge.
 *
 * Owns: the JSON Schema of the file (`CONFIG_SCHEMA`, validated with ajv, `allErrors: true`), the
 * checks a schema cannot express (duplicate VMPI-ids and socket paths, the metrics address), and
 * turning every problem into one line that names the field path and the bad value, e.g.
 * `devices[1].vmpiId: 70000 is above the maximum 65535`. All problems are reported at once, in a
 * ConfigError. The result is a typed VmpiConfig with defaults filled in.
 *
 * A file looks like this (YAML; the same keys in JSON):
 *
 *   devices:
 *     - socket: /run/vmpi/vm1.sock   # relative paths are relative to the config file's directory
 *       vmpiId: 1                    # optional: lowest free id when omitted
 *       maxSduLog2: 16               # optional, 10..20 (default 16 = 64 KiB)
 *       carrier: gpio                # optional, the only carrier today
 *       owner: libvirt-qemu          # optional: user name or numeric uid
 *       group: kvm                   # optional: group name or numeric gid
 *       mode: "0660"                 # optional: a QUOTED octal string
 *   metrics: { enabled: true, listen: "127.0.0.1:19464" }
 *   log: { level: info }
 *   ipc:                             # optional: the IPC daemon's limits (docs/IPC.md), defaults shown
 *     maxSessions: 256               # applications connected at once
 *     maxSessionsPerUid: 64          # … per user (SO_PEERCRED)
 *     maxFlowsPerUid: 256            # flows allocated or being allocated, per user
 *     maxRegistrationsPerUid: 64
 *     maxAllocateTimeoutMs: 60000    # longer allocation timeouts are clamped
 *     idleTimeoutMs: 300000          # sessions holding nothing and silent this long are closed
 *     outputHighWater: 262144        # bytes of answers queued per session before its requests wait
 *     unlimitedUids: []              # users the per-user limits do not apply to
 *   normal: { dif: n.DIF }       # optional: a normal DIF over every device's shim DIF (below)
 *   difs: []    # [{ name, type }]: type "normal" declares the normal DIF (same as normal.dif)
 *   ipcps: []   # placeholders for other IPC processes: [{ name, type, ... }]
 *
 * The normal DIF: `vmpi serve` runs its enroller (IPCP name `<dif>.host`, or normal.name) over
 * every device's shim DIF; `vmpi guest --config FILE` (or --normal-dif) runs a member that
 * enrolls through its shim DIF to normal.enroller (default `<dif>.host`). Only the DIF name is
 * required; maxPduSize (default 65536) must be the same on every member.
 *
 * Flags (`vmpi serve --socket … --vmpi-id …`) become more devices after the file's (see
 * `mergeServeOptions`), and the duplicate checks run again over the merged list.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, extname, resolve } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parseDocument } from 'yaml';
import { CARRIERS, DEFAULT_SDU_LOG2, MAX_SDU_LOG2, MIN_SDU_LOG2 } from '../vmpi/carrier.js';
import { permissionProblems } from './socket-perms.js';
import { parseAppName } from '../dif/naming.js';
import { LOG_FORMATS, type LogFormat } from '../sys/log.js';
import type { IpcLimits } from '../dif/ipc/daemon.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/**
 * 19464: 9464 is the default of OpenTelemetry's Prometheus exporter (and taken in Prometheus'
 * list of default port allocations, whose 9100-9999 range is full); the Prometheus docs advise
 * software that is not in that list to stay outside its range.
 */
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:19464';
export const MAX_VMPI_ID = 0xffff;

export interface DeviceConfig {
  /** Absolute path of the vhost-user socket to create. */
  socket: string;
  /** Fixed VMPI-id; undefined = allocated (lowest free) at start-up. */
  vmpiId?: number;
  maxSduLog2: number;
  carrier: string;
  /** Socket file owner / group: a name (resolved at start-up) or a numeric id. */
  owner?: string | number;
  group?: string | number;
  /** Socket file permission bits, e.g. 0o660. */
  mode?: number;
  /**
   * Accept guest memory that is not a shrink-sealed memfd (memory-backend-file, hugetlbfs, an
   * unsealed memfd). Such a file can be truncated under the server, which then dies of SIGBUS:
   * only for a trusted QEMU. Present (true) only when set.
   */
  allowUnsealedMemory?: boolean;
}

export interface ListenAddress {
  host: string;
  port: number;
}

export interface MetricsConfig {
  enabled: boolean;
  listen: ListenAddress;
}

/** The normal DIF of this host or guest (`normal`, or a `difs` entry of type "normal"). */
export interface NormalConfig {
  dif: string;
  /** This IPC process's name (default `<dif>.host` on the host, `<dif>.vm<VMPI-id>` in a guest). */
  name?: string;
  /** Guest: the enroller's IPC process name (default `<dif>.host`). */
  enroller?: string;
  /** The DIF's largest PDU, the same at every member (default 65536). */
  maxPduSize?: number;
}

/** A DIF declaration; type "normal" is the normal DIF, other types are placeholders. */
export interface DifConfig {
  name: string;
  type: string;
  [key: string]: unknown;
}

/** Placeholder: the shim DIF (next step) defines the rest of these objects. */
export interface IpcpConfig {
  name: string;
  type: string;
  [key: string]: unknown;
}

export interface VmpiConfig {
  devices: DeviceConfig[];
  metrics: MetricsConfig;
  log: { level: LogLevel; format?: LogFormat };
  difs: DifConfig[];
  ipcps: IpcpConfig[];
  /** The normal DIF, if one is configured. */
  normal?: NormalConfig;
  /** The IPC daemon's limits (what is not given keeps the daemon's defaults). */
  ipc: Partial<IpcLimits>;
}

const IPC_LIMIT = { type: 'integer', minimum: 1, maximum: 2 ** 31 - 1 } as const;

/** Every problem found, one line each (`path: what is wrong`). */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly problems: string[],
    readonly source?: string,
  ) {
    super(problems.map((p) => (source ? `${source}: ${p}` : p)).join('\n'));
  }
}

const NAME_PATTERN = '^([0-9]+|[A-Za-z_][A-Za-z0-9_.-]*\\$?)$';
const NAME_OR_ID = {
  type: ['string', 'integer'],
  minimum: 0,
  maximum: 0xfffffffe,
  pattern: NAME_PATTERN,
  errorHint: 'a user or group name, or a numeric id',
};

const NAMED_OBJECT = {
  type: 'object',
  required: ['name', 'type'],
  properties: {
    name: { type: 'string', minLength: 1 },
    type: { type: 'string', minLength: 1 },
  },
  additionalProperties: true,
};

/** JSON Schema (draft-07) of the configuration file. `errorHint` is an annotation used in messages. */
export const CONFIG_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'vmpi configuration',
  type: 'object',
  additionalProperties: false,
  properties: {
    devices: {
      type: 'array',
      description: 'VMPI devices, one vhost-user socket each',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['socket'],
        properties: {
          socket: { type: 'string', minLength: 1, maxLength: 107, description: 'vhost-user socket path (at most 107 bytes: sun_path)' },
          vmpiId: { type: 'integer', minimum: 1, maximum: MAX_VMPI_ID },
          maxSduLog2: { type: 'integer', minimum: MIN_SDU_LOG2, maximum: MAX_SDU_LOG2, default: DEFAULT_SDU_LOG2 },
          carrier: { type: 'string', enum: [...CARRIERS.keys()], default: 'gpio' },
          owner: NAME_OR_ID,
          group: NAME_OR_ID,
          mode: { type: 'string', pattern: '^0?[0-7]{3}$', errorHint: 'a quoted octal mode such as "0660"' },
          allowUnsealedMemory: {
            type: 'boolean',
            default: false,
            description: 'accept guest RAM that is not a shrink-sealed memfd (memory-backend-file, hugetlbfs); a QEMU that truncates it can crash the server: trusted front-ends only',
          },
        },
      },
    },
    metrics: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean', default: true },
        listen: { type: 'string', default: DEFAULT_METRICS_LISTEN, errorHint: 'HOST:PORT such as "127.0.0.1:19464"' },
      },
    },
    log: {
      type: 'object',
      additionalProperties: false,
      properties: {
        level: { type: 'string', enum: [...LOG_LEVELS], default: 'info' },
        format: { type: 'string', enum: [...LOG_FORMATS], description: 'json (default), text, or journal (sd-daemon priorities; the default when stderr is the journal)' },
      },
    },
    ipc: {
      type: 'object',
      additionalProperties: false,
      description: "the IPC daemon's limits (per user: SO_PEERCRED uid)",
      properties: {
        maxSessions: IPC_LIMIT,
        maxSessionsPerUid: IPC_LIMIT,
        maxFlowsPerUid: IPC_LIMIT,
        maxRegistrationsPerUid: IPC_LIMIT,
        maxAllocateTimeoutMs: IPC_LIMIT,
        idleTimeoutMs: IPC_LIMIT,
        outputHighWater: IPC_LIMIT,
        unlimitedUids: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 0xfffffffe } },
      },
    },
    normal: {
      type: 'object',
      additionalProperties: false,
      required: ['dif'],
      description: 'a normal DIF: its enroller on the host over every device, a member in each guest',
      properties: {
        dif: { type: 'string', minLength: 1, maxLength: 255, description: 'the normal DIF\'s name, e.g. n.DIF' },
        name: { type: 'string', minLength: 1, maxLength: 255, description: 'this IPC process\'s name (default <dif>.host / <dif>.vm<VMPI-id>)' },
        enroller: { type: 'string', minLength: 1, maxLength: 255, description: 'guest: the enroller\'s IPC process name (default <dif>.host)' },
        maxPduSize: { type: 'integer', minimum: 1024, maximum: 1048576, description: 'the DIF\'s largest PDU, the same at every member (default 65536)' },
      },
    },
    difs: { type: 'array', description: 'DIFs: type "normal" declares the normal DIF (like normal.dif); other types are placeholders', items: NAMED_OBJECT },
    ipcps: { type: 'array', description: 'placeholders for IPC processes of other types', items: NAMED_OBJECT },
  },
} as const;

let compiled: ValidateFunction | undefined;
/** The schema validator, compiled on first use (keeps `vmpi --help` fast). */
function validateSchema(data: unknown): { ok: boolean; errors: ErrorObject[] } {
  if (!compiled) {
    const ajv = new Ajv({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
    ajv.addKeyword({ keyword: 'errorHint', schemaType: 'string' });
    compiled = ajv.compile(CONFIG_SCHEMA);
  }
  const ok = compiled(data);
  return { ok, errors: compiled.errors ?? [] };
}

// ---------------------------------------------------------------------------------------------
// Reading and parsing

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

export type ConfigFormat = 'yaml' | 'json';

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
      throw new ConfigError([`invalid JSON: ${(e as Error).message}`], opts.source);
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
  }));
  const log = (isRecord(data.log) ? data.log : {}) as { level?: LogLevel; format?: LogFormat };
  return {
    devices,
    metrics: { enabled: (m.enabled as boolean | undefined) ?? true, listen: listen ?? parseListenAddress(DEFAULT_METRICS_LISTEN) },
    log: { level: log.level ?? 'info', ...(log.format !== undefined ? { format: log.format } : {}) },
    difs: (data.difs ?? []) as DifConfig[],
    ipcps: (data.ipcps ?? []) as IpcpConfig[],
    ...(normal ? { normal } : {}),
    ipc: { ...((data.ipc ?? {}) as Partial<IpcLimits>) },
  };
}

/**
 * The normal DIF from `normal` or a `difs` entry of type "normal" (at most one, names valid
 * application names); problems are appended to `problems`.
 */
function normalProblems(data: Record<string, unknown>, problems: string[]): NormalConfig | undefined {
  let out: NormalConfig | undefined;
  let from = '';
  const n = isRecord(data.normal) ? data.normal : undefined;
  if (n && typeof n.dif === 'string' && n.dif !== '') {
    out = { dif: n.dif };
    from = 'normal.dif';
    for (const f of ['name', 'enroller'] as const) {
      const v = n[f];
      if (typeof v !== 'string' || v === '') continue;
      try {
        parseAppName(v);
        out[f] = v;
      } catch (e) {
        problems.push(`normal.${f}: ${JSON.stringify(v)} is not an IPC process name: ${(e as Error).message}`);
      }
    }
    if (typeof n.maxPduSize === 'number') out.maxPduSize = n.maxPduSize;
  }
  const difs = Array.isArray(data.difs) ? data.difs : [];
  difs.forEach((d: unknown, i) => {
    if (!isRecord(d) || d.type !== 'normal' || typeof d.name !== 'string' || d.name === '') return;
    if (out && out.dif !== d.name) problems.push(`difs[${i}].name: ${JSON.stringify(d.name)}: only one normal DIF is supported, and ${from} already declares ${JSON.stringify(out.dif)}`);
    else if (!out) {
      out = { dif: d.name };
      from = `difs[${i}]`;
    }
  });
  return out;
}

/**
 * What is valid but probably not meant, one line each (check-config prints them, serve logs them):
 * a vhost-user socket that every local user may connect to lets any of them play a VM's
 * front-end, i.e. hand the server memory and rings of its choosing.
 */
export function configWarnings(devices: readonly { where: string; mode?: number }[]): string[] {
  const out: string[] = [];
  for (const d of devices) {
    if (d.mode !== undefined && (d.mode & 0o002) !== 0) {
      out.push(`${d.where}.mode: "${d.mode.toString(8).padStart(4, '0')}" lets every local user connect to this vhost-user socket and act as the VM's front-end; use "0660" with group: kvm (or the group QEMU runs as)`);
    }
  }
  return out;
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
}

function normaliseId(v: string | number | undefined): string | number | undefined {
  if (typeof v === 'string' && /^[0-9]+$/.test(v)) return Number(v);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Semantic checks

export interface DeviceIdentity {
  /** Where the device came from, for messages: `devices[1]`, `--socket #2`, `--listen-fd 3`. */
  where: string;
  vmpiId?: number;
  socket?: string;
}

/** Duplicate VMPI-ids and socket paths, each reported once with every place it appears. */
export function duplicateProblems(list: DeviceIdentity[]): string[] {
  const problems: string[] = [];
  const byId = new Map<number, string[]>();
  const bySocket = new Map<string, string[]>();
  for (const d of list) {
    if (d.vmpiId !== undefined) byId.set(d.vmpiId, [...(byId.get(d.vmpiId) ?? []), d.where]);
    if (d.socket !== undefined) bySocket.set(d.socket, [...(bySocket.get(d.socket) ?? []), d.where]);
  }
  for (const [id, where] of byId) {
    if (where.length > 1) problems.push(`${where[1]}.vmpiId: ${id} is already used by ${where[0]}${where.length > 2 ? ` (and by ${where.slice(2).join(', ')})` : ''}; VMPI-ids must be unique on a host`);
  }
  for (const [socket, where] of bySocket) {
    if (where.length > 1) problems.push(`${where[1]}.socket: ${JSON.stringify(socket)} is already used by ${where[0]}${where.length > 2 ? ` (and by ${where.slice(2).join(', ')})` : ''}; each device needs its own socket`);
  }
  return problems;
}

function duplicateNames(field: string, list: unknown): string[] {
  const seen = new Map<string, number>();
  const problems: string[] = [];
  if (!Array.isArray(list)) return problems;
  list.forEach((o: unknown, i) => {
    if (!isRecord(o) || typeof o.name !== 'string') return;
    const first = seen.get(o.name);
    if (first !== undefined) problems.push(`${field}[${i}].name: ${JSON.stringify(o.name)} is already used by ${field}[${first}]`);
    else seen.set(o.name, i);
  });
  return problems;
}

/**
 * Parse `HOST:PORT` (IPv4 literal, `[IPv6]`, or `localhost`; port 0..65535, 0 = any free port),
 * or `:PORT` for every address of the host (IPv6 and IPv4, as Prometheus exporters read it).
 * Throws an Error whose message completes "<value> …".
 */
export function parseListenAddress(text: string): ListenAddress {
  const any = /^:(\d{1,5})$/.exec(text);
  if (any) {
    const port = Number(any[1]);
    if (port > 65535) throw new Error(`has port ${port}, above the maximum 65535`);
    return { host: '::', port };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) throw new Error('is not HOST:PORT or :PORT (for example "127.0.0.1:19464", "[::1]:19464" or ":19464")');
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`has port ${port}, above the maximum 65535`);
  if (m[1] !== undefined && isIP(host) !== 6) throw new Error(`has "${host}" in brackets, which is not an IPv6 address`);
  if (m[2] !== undefined && isIP(host) !== 4 && host !== 'localhost') throw new Error(`has host "${host}": use an IPv4 address, [IPv6] or localhost`);
  return { host, port };
}

export function formatListenAddress(a: ListenAddress): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

// ---------------------------------------------------------------------------------------------
// Merging command-line flags

/** Devices and settings given on the command line of `vmpi serve`. */
export interface ServeFlags {
  sockets: string[];
  /** The n-th id belongs to the n-th socket, then to the listen fds in order. */
  vmpiIds: number[];
  listenFds: number[];
  /** Applies to the devices given by flags. */
  maxSduLog2?: number;
  logLevel?: LogLevel;
  logFormat?: LogFormat;
  metricsListen?: ListenAddress;
  noMetrics?: boolean;
}

/** One device to serve: from the file, from --socket, or from an inherited fd. */
export interface ServeDevice extends Omit<DeviceConfig, 'socket'> {
  socket?: string;
  listenFd?: number;
  where: string;
}

export interface ServePlan {
  devices: ServeDevice[];
  metrics: MetricsConfig;
  log: { level: LogLevel; format?: LogFormat };
  config: VmpiConfig;
}

/**
 * Merge flags into a config (or the defaults): flag devices come after the file's; flag settings
 * override the file's. VMPI-ids left open are assigned here (lowest free, in order), so a device
 * without an id never takes one that a later device asks for. Throws ConfigError on duplicates.
 */
export function mergeServeOptions(config: VmpiConfig | undefined, flags: ServeFlags): ServePlan {
  const base = config ?? defaultConfig();
  const devices: ServeDevice[] = base.devices.map((d, i) => ({ ...d, where: `devices[${i}]` }));
  const flagDevice = (n: number): Pick<ServeDevice, 'vmpiId' | 'maxSduLog2' | 'carrier'> => ({
    vmpiId: flags.vmpiIds[n],
    maxSduLog2: flags.maxSduLog2 ?? DEFAULT_SDU_LOG2,
    carrier: 'gpio',
  });
  flags.sockets.forEach((s, i) => devices.push({ ...flagDevice(i), socket: resolve(s), where: `--socket #${i + 1}` }));
  flags.listenFds.forEach((fd, j) => devices.push({ ...flagDevice(flags.sockets.length + j), listenFd: fd, where: `--listen-fd ${fd}` }));
  const flagSlots = flags.sockets.length + flags.listenFds.length;
  const problems: string[] = [];
  if (flags.vmpiIds.length > flagSlots) {
    problems.push(`--vmpi-id: ${flags.vmpiIds.length} values for ${flagSlots} device${flagSlots === 1 ? '' : 's'} given by --socket/--listen-fd`);
  }
  problems.push(...duplicateProblems(devices));
  if (problems.length > 0) throw new ConfigError(problems);

  const used = new Set(devices.flatMap((d) => (d.vmpiId === undefined ? [] : [d.vmpiId])));
  let next = 1;
  for (const d of devices) {
    if (d.vmpiId !== undefined) continue;
    while (used.has(next)) next++;
    if (next > MAX_VMPI_ID) throw new ConfigError([`${d.where}: no free VMPI-id left`]);
    d.vmpiId = next;
    used.add(next);
  }

  const enabled = flags.noMetrics ? false : base.metrics.enabled;
  return {
    devices,
    metrics: { enabled, listen: flags.metricsListen ?? base.metrics.listen },
    log: { level: flags.logLevel ?? base.log.level, ...((flags.logFormat ?? base.log.format) !== undefined ? { format: flags.logFormat ?? base.log.format } : {}) },
    config: base,
  };
}

// ---------------------------------------------------------------------------------------------
// ajv errors → one line each

function formatAjvError(e: ErrorObject, format: ConfigFormat): string {
  const path = jsonPointerToPath(e.instancePath);
  const at = path || '(top level)';
  const value = show(e.data);
  const hint = isRecord(e.parentSchema) && typeof e.parentSchema.errorHint === 'string' ? e.parentSchema.errorHint : undefined;
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return `${join(path, String(p.missingProperty))}: is required but missing`;
    case 'additionalProperties': {
      const field = String(p.additionalProperty);
      const known = isRecord(e.parentSchema) && isRecord(e.parentSchema.properties) ? Object.keys(e.parentSchema.properties) : [];
      const guess = closest(field, known);
      return `${join(path, field)}: unknown field${guess ? ` (did you mean "${guess}"?)` : ''}; known fields here: ${known.join(', ')}`;
    }
    case 'maximum':
      return `${at}: ${value} is above the maximum ${String(p.limit)}`;
    case 'minimum':
      return `${at}: ${value} is below the minimum ${String(p.limit)}`;
    case 'type': {
      const want = String(p.type).split(',').map(article).join(' or ');
      const octal =
        path.endsWith('.mode') && typeof e.data === 'number' && /^[0-7]{3}$/.test(String(e.data))
          ? format === 'json'
            ? ` (write it as a string, "mode": "0${e.data}": a JSON number is decimal)`
            : ` (write it quoted, mode: "0${e.data}": YAML reads an unquoted 0${e.data} as the decimal number ${e.data})`
          : '';
      return `${at}: ${value} is ${describe(e.data)}, expected ${hint ?? want}${octal}`;
    }
    case 'enum':
      return `${at}: ${value} is not one of ${(p.allowedValues as unknown[]).map((v) => String(v)).join(', ')}`;
    case 'pattern':
      return `${at}: ${value} is not ${hint ?? `matching ${String(p.pattern)}`}`;
    case 'minLength':
      return `${at}: ${value} is too short (at least ${String(p.limit)} characters)`;
    case 'maxLength':
      return `${at}: ${value} is too long (at most ${String(p.limit)} characters)`;
    default:
      return `${at}: ${value} ${e.message ?? 'is invalid'}`;
  }
}

/** "/devices/1/vmpiId" → "devices[1].vmpiId". */
function jsonPointerToPath(ptr: string): string {
  let out = '';
  for (const raw of ptr.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(seg) ? `[${seg}]` : out ? `.${seg}` : seg;
  }
  return out;
}

function join(path: string, field: string): string {
  return path ? `${path}.${field}` : field;
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === undefined) return 'undefined';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  if (typeof v === 'object') return 'an object';
  return article(typeof v);
}

function article(t: string): string {
  const word = t === 'object' ? 'an object' : t === 'array' ? 'a list' : t === 'integer' ? 'an integer' : t === 'null' ? 'null' : `a ${t}`;
  return word;
}

function dedupe(lines: string[]): string[] {
  return [...new Set(lines)];
}

/** The first line of a yaml error message, without the position it repeats. */
function firstLine(s: string): string {
  return s.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The known name within edit distance 2 of `word`, if any. */
function closest(word: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const k of known) {
    const d = editDistance(word.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}
