/**
 * index.ts — the IPC daemon and its client library (see daemon.ts, client.ts, datapath.ts).
 */
export { IpcDaemon, Session, type IpcDaemonOptions, type IpcDaemonStats, type IpcResumeSummary } from './daemon.js';
export { IPC_DAEMON_SNAPSHOT_VERSION, IpcStateError, ipcSnapshotFlows, parseIpcDaemonSnapshot, type IpcDaemonSnapshot, type IpcSessionSnapshot } from './snapshot.js';
export { IpcClient, ClientFlow, ClientFlowRequest, ClientRegistration, CLIENT_RX_QUEUE_LIMIT, type ClientAllocateOptions } from './client.js';
export { DEFAULT_IPC_SOCKET, IPC_PROTOCOL_VERSION, MAX_MESSAGE_BYTES, defaultIpcSocketPath, type DifInfo, type DifInspection, type FlowInfo, type IpcpInfo, type TruncationInfo } from './protocol.js';
export { LINGER_MS, RECORD_SDU } from './datapath.js';
