/**
 * config/schema.ts — the JSON Schema (draft-07) of the configuration file (`CONFIG_SCHEMA`) and its
 * ajv validator (`allErrors: true`, compiled on first use). `errorHint` is an annotation the
 * messages (config/messages.ts) use.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { LOG_FORMATS } from '../../sys/log.js';
import { MAX_CHANNEL } from '../../vmpi/port.js';
import { CARRIERS, DEFAULT_SDU_LOG2, MAX_SDU_LOG2, MIN_SDU_LOG2 } from '../../vmpi/carrier.js';
import { DEFAULT_METRICS_LISTEN, ECHO_CHANNEL_MIN, LOG_LEVELS, MAX_ECHO_CHANNELS, MAX_VMPI_ID } from './types.js';

const IPC_LIMIT = { type: 'integer', minimum: 1, maximum: 2 ** 31 - 1 } as const;

/** A user or group name, or a numeric id (as a string). */
export const NAME_PATTERN = '^([0-9]+|[A-Za-z_][A-Za-z0-9_.-]*\\$?)$';
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
          echoChannels: {
            type: 'array',
            maxItems: MAX_ECHO_CHANNELS,
            items: { type: 'integer', minimum: 0, maximum: MAX_CHANNEL },
            description: `channels on which the server sends every SDU back to the guest (a test instrument for vmpi-perf loop/stream); ${ECHO_CHANNEL_MIN}..${MAX_CHANNEL}, outside the shim DIF's channels 0..${ECHO_CHANNEL_MIN - 1}`,
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
        guestTimeoutMs: {
          type: 'integer',
          minimum: 10,
          maximum: 60_000,
          default: 3000,
          description: "serve: how long a fetch of a guest's metrics through its VMPI (GET /metrics/guest/<vmpi-id>) may take before it answers 504",
        },
        guestMaxBytes: {
          type: 'integer',
          minimum: 1024,
          maximum: 16 * 1024 * 1024,
          default: 1024 * 1024,
          description: "serve: the largest guest metrics reply taken, in bytes (more answers 502)",
        },
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
        maxRingBytes: { type: 'integer', minimum: 0, maximum: 2 ** 40, description: "bytes of shared-memory flow rings (memfd) the daemon maps in all; past it new flows keep the socket data path; 0: never offer rings (default 268435456)" },
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
        keepaliveMs: { type: 'integer', minimum: 20, maximum: 3600000, description: 'keepalive period on each N-1 adjacency (routing liveness; default 10000). Use the same value at every member' },
        keepaliveMisses: { type: 'integer', minimum: 1, maximum: 100, description: 'a neighbour heard nothing from for this many keepalive periods is down, its adjacency withdrawn (default 3)' },
        role: { type: 'string', enum: ['enroller', 'member'], description: 'serve: "enroller" (default) over every lower DIF, or "member" enrolling to `enroller` through the first lower DIF (the shim-udp DIF when there is one)' },
        acceptEnrollment: { type: 'boolean', description: 'member: enroll new members too (on every lower DIF), from a block of addresses the enroller delegates at this member\'s enrollment (default false: it takes adjacencies only)' },
        neighbours: {
          type: 'array',
          maxItems: 64,
          description: 'further members to keep an N-1 adjacency with once enrolled (a mesh, not a star): routing uses them as alternate paths',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'dif'],
            properties: {
              name: { type: 'string', minLength: 1, maxLength: 255, description: 'the neighbour\'s IPC process name' },
              dif: { type: 'string', minLength: 1, maxLength: 255, description: 'the lower DIF to reach it over: the shimUdp or shimEth DIF, or a device\'s hv.vmpi-<VMPI-id>' },
            },
          },
        },
      },
    },
    shimUdp: {
      type: 'object',
      additionalProperties: false,
      required: ['dif', 'bind'],
      description: 'a shim DIF over UDP/IPv4 (hosts in different L2 domains, or two servers on one machine)',
      properties: {
        dif: { type: 'string', minLength: 1, maxLength: 255, description: 'the shim DIF\'s name, e.g. udp.lo' },
        name: { type: 'string', minLength: 1, maxLength: 255, description: 'this IPC process\'s name (default <dif>.<bind>)' },
        bind: { type: 'string', errorHint: 'IPv4:PORT such as "127.0.0.1:7300"', description: 'the well-known address: IPv4:PORT of the one UDP socket' },
        peers: { type: 'object', additionalProperties: { type: 'string', errorHint: 'IPv4:PORT such as "127.0.0.1:7301", or HOST:PORT' }, description: 'application (or process) name → IPv4:PORT (or HOST:PORT, resolved by DNS) of the shim-udp IPC process hosting it; datagrams are accepted from these addresses' },
        dnsServers: { type: 'array', maxItems: 16, items: { type: 'string', errorHint: 'IPv4 or IPv4:PORT such as "127.0.0.1:53"' }, description: 'DNS servers for HOST:PORT peers (default: the system resolver: /etc/hosts, then resolv.conf)' },
        resolveTimeoutMs: { type: 'integer', minimum: 1, maximum: 600000, description: 'most time one DNS resolution of a HOST:PORT peer may take (default 2000)' },
        resolveCacheMs: { type: 'integer', minimum: 1, maximum: 86400000, description: 'how long a resolved address is kept (default 60000; a failed allocation forgets it)' },
        allow: { type: 'array', maxItems: 1024, items: { type: 'string', errorHint: 'IPv4:PORT' }, description: 'more addresses datagrams are accepted from (peers that only call in)' },
        hostsFile: { type: 'string', minLength: 1, description: 'a hosts file (/etc/hosts format): an application not in peers is looked for by its process name among its host names (IPv4), at peerPort' },
        peerPort: { type: 'integer', minimum: 1, maximum: 65535, description: 'the well-known port of the peers found in hostsFile (default: the bind port)' },
        mtu: { type: 'integer', minimum: 64, maximum: 65507, description: 'largest datagram (default 1472: no IPv4 fragmentation on Ethernet); max SDU = mtu - 5' },
        keepaliveMs: { type: 'integer', minimum: 10, maximum: 600000, description: 'keepalive period on idle flows (default 1000)' },
        keepaliveTimeoutMs: { type: 'integer', minimum: 20, maximum: 3600000, description: 'a flow whose peer sent nothing this long ends (default 5000; at least 2 keepaliveMs)' },
        allocateTimeoutMs: { type: 'integer', minimum: 1, maximum: 2147483647, description: 'how long an allocation waits for the peer (default 10000)' },
      },
    },
    shimEth: {
      type: 'object',
      additionalProperties: false,
      required: ['dif', 'interface'],
      description: 'a shim DIF over Ethernet / 802.1Q (hosts on one L2 segment or VLAN)',
      properties: {
        dif: { type: 'string', minLength: 1, maxLength: 255, description: 'the shim DIF\'s name, e.g. eth.vlan100' },
        name: { type: 'string', minLength: 1, maxLength: 255, description: 'this IPC process\'s name (default <dif>.<interface>)' },
        interface: { type: 'string', minLength: 1, maxLength: 15, pattern: '^[^/\\s:]+$', errorHint: 'an interface name such as "eth0.100" (at most 15 bytes, no "/", ":" or spaces)', description: 'the network interface: a VLAN interface (eth0.100), or the parent interface with vlan' },
        vlan: { type: 'integer', minimum: 1, maximum: 4094, description: 'tag frames with this VLAN id on the parent interface (and receive only those); leave out on a VLAN interface' },
        allow: { type: 'array', maxItems: 1024, items: { type: 'string', errorHint: 'a MAC such as "02:00:00:00:00:01"' }, description: 'accept frames only from these MACs (default: any MAC of the segment)' },
        mtu: { type: 'integer', minimum: 64, maximum: 65535, description: 'largest payload of a frame (default: the interface MTU, jumbo included; no more than it); max SDU = mtu - 7' },
        keepaliveMs: { type: 'integer', minimum: 10, maximum: 600000, description: 'keepalive period on idle flows (default 1000)' },
        keepaliveTimeoutMs: { type: 'integer', minimum: 20, maximum: 3600000, description: 'a flow whose peer sent nothing this long ends (default 5000; at least 2 keepaliveMs)' },
        allocateTimeoutMs: { type: 'integer', minimum: 1, maximum: 2147483647, description: 'how long an allocation (resolution included) waits (default 10000)' },
        resolveCacheSize: { type: 'integer', minimum: 1, maximum: 65536, description: 'names kept resolved (default 256, least recently used out first)' },
        resolveCacheMs: { type: 'integer', minimum: 1, maximum: 86400000, description: 'how long a resolved name is kept (default 60000)' },
      },
    },
    difs: { type: 'array', description: 'DIFs: type "normal" declares the normal DIF (like normal.dif); other types are placeholders', items: NAMED_OBJECT },
    ipcps: { type: 'array', description: 'placeholders for IPC processes of other types', items: NAMED_OBJECT },
  },
} as const;

let compiled: ValidateFunction | undefined;
/** The schema validator, compiled on first use (keeps `vmpi --help` fast). */
export function validateSchema(data: unknown): { ok: boolean; errors: ErrorObject[] } {
  if (!compiled) {
    const ajv = new Ajv({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
    ajv.addKeyword({ keyword: 'errorHint', schemaType: 'string' });
    compiled = ajv.compile(CONFIG_SCHEMA);
  }
  const ok = compiled(data);
  return { ok, errors: compiled.errors ?? [] };
}
