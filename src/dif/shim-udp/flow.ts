/**
 * flow.ts — the shim DIF over UDP's flow and incoming flow request: the datagram shims' shared
 * ones (../shim-datagram/flow.ts), under this shim's names. A flow's peer is
 * "IPv4:port".
 */
export { DatagramFlow as UdpFlow, DatagramFlowRequest as UdpFlowRequest, type DatagramFlowOwner as UdpFlowOwner } from '../shim-datagram/flow.js';
