/**
 * index.ts — the normal DIF's EFCP, as the rest of the DIF uses it.
 */
export { EfcpConnection, type EfcpOptions, type EfcpSnapshot, type EfcpState } from './efcp.js';
export { EfcpError, type EfcpErrorCode } from './errors.js';
export { EFCP_DEFAULTS, QOS_CUBES, cubeById, cubeForQos, efcpForQos, resolveParams, type CubeChoice, type EfcpParams, type QosCube, type QosCubeName } from './qos.js';
export { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, seqMax, seqMin } from './seq.js';
export type { EfcpStats } from './stats.js';
