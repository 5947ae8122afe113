/**
 * dispatch.ts — what happens to one whole request: check, decode, handle, answer.
 *
 * Owns: the checks every request gets from its rule in the registry (requests.ts): known, its
 * protocol feature negotiated, fd count; then one decode of its payload and its handler, or the
 * device's own hook (VhostUserDevice.handleRequest) for a request the registry does not know.
 * Then the answer: its own reply, or a REPLY_ACK when asked for and negotiated. Failure follows
 * the error's scope (errors.ts): a request- or queue-scoped error refuses the request (a failed
 * REPLY_ACK, the connection stays up; without REPLY_ACK the connection closes), a
 * connection-scoped one closes the connection, anything untyped is an internal error (close).
 * Fds a handler did not take are closed here, whatever happened.
 */
import { errText, safeClose } from '../sys/fd.js';
import type { DisconnectCause } from './endpoint.js';
import { ProtocolError, VhostUserError } from './errors.js';
import { encodeU64, type Message } from './messages.js';
import { FLAG_NEED_REPLY, ProtoFeature, hasBit, requestName } from './protocol.js';
import { REQUESTS, type RequestContext } from './requests.js';

export interface DispatchHost extends RequestContext {
  send(request: number, payload?: Uint8Array): void;
  close(reason: string, cause: DisconnectCause): void;
  /** A request was refused with a failed REPLY_ACK. */
  rejected(request: string, message: string): void;
  /**
   * The request's effect on the state is complete and its reply not yet sent: the moment to
   * persist (restart). `received` are the fd numbers the request carried (now the state's, or
   * closed). Not called when the connection closes instead.
   */
  commit?(received: readonly number[]): void;
}

export function dispatch(host: DispatchHost, msg: Message): void {
  const name = requestName(msg.request);
  const wantsAck = (msg.flags & FLAG_NEED_REPLY) !== 0 && hasBit(host.state.protocolFeatures, ProtoFeature.REPLY_ACK);
  const spec = REQUESTS.get(msg.request);
  const received = host.commit && msg.fds.length > 0 ? msg.fds.slice() : NO_FDS;
  let ownReply = spec?.hasReply ?? false;
  let reply: Uint8Array | undefined;
  try {
    if (spec) {
      if (spec.needs !== undefined && !hasBit(host.state.protocolFeatures, spec.needs)) {
        throw new ProtocolError(name, `needs protocol feature ${protoFeatureName(spec.needs)}, which was not negotiated`);
      }
      if (msg.fds.length < spec.minFds || msg.fds.length > spec.maxFds) {
        throw new ProtocolError(name, `carries ${msg.fds.length} fds, expected ${spec.minFds === spec.maxFds ? spec.minFds : `${spec.minFds}..${spec.maxFds}`}`);
      }
      reply = spec.handle(host, spec.decode(msg.request, msg.payload), msg);
    } else {
      const r = host.device.handleRequest?.(msg.request, msg.payload, msg.fds) ?? false;
      if (r === false) throw new ProtocolError(name, 'request not supported by this back-end', 'unsupported_request');
      reply = r.reply;
      ownReply = reply !== undefined;
    }
    host.log.debug({ request: name }, 'request handled');
  } catch (e) {
    closeFds(msg.fds);
    if (!(e instanceof VhostUserError)) {
      host.log.error({ request: name, err: errText(e), stack: (e as Error)?.stack }, 'internal error handling request; closing connection');
      return host.close(`internal error on ${name}: ${errText(e)}`, 'internal_error');
    }
    if (e.scope !== 'connection' && wantsAck && !ownReply) {
      host.log.warn({ request: name, code: e.code, err: e.message }, 'request rejected');
      host.commit?.(received);
      host.send(msg.request, encodeU64(1));
      host.rejected(name, e.message);
      return;
    }
    host.log.error({ request: name, code: e.code, err: e.message }, 'protocol error; closing connection');
    return host.close(e.message, 'protocol_error');
  }
  closeFds(msg.fds);
  host.commit?.(received);
  if (ownReply) host.send(msg.request, reply);
  else if (wantsAck) host.send(msg.request, encodeU64(0));
}

const NO_FDS: readonly number[] = [];

function closeFds(fds: number[]): void {
  for (const fd of fds.splice(0)) safeClose(fd);
}

function protoFeatureName(n: number): string {
  return Object.entries(ProtoFeature).find(([, v]) => v === n)?.[0] ?? `bit ${n}`;
}
