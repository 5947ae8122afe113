/**
 * flow.ts — the shim DIF over Ethernet's flow and incoming flow request: the datagram shims' shared
 * ones (../shim-datagram/flow.ts), under this shim's names. A flow's peer is
 * a MAC, "aa:bb:cc:dd:ee:ff".
 */
export { DatagramFlow as EthFlow, DatagramFlowRequest as EthFlowRequest, type DatagramFlowOwner as EthFlowOwner } from '../shim-datagram/flow.js';
