/**
 * ipcp-links.ts — the N-1 adjacencies a normal IPC process (ipcp.ts) makes itself: the enrollment
 * that joins the DIF (`enroll`) and the further neighbours it is configured with (`neighbours`),
 * each an N-1 flow allocated through a lower IPC process to a named member and enrolled over.
 *
 * Owns: one attempt at a time per link, the retry every `retryMs` after a failure or after the
 * link's N-1 flow is lost, and the choice each attempt makes: a member with no address, or one
 * that reaches no other neighbour, joins (its enroller assigns the address, the one it had
 * proposed); a member still connected through another neighbour, and every neighbour link,
 * enrolls keeping its address (an adjacency). Neighbour links start once the member has an
 * address. What a success means for the IPC process (address, routing, directory) is its host's.
 */
import type { Flow, IpcProcess } from '../api.js';
import type { EnrollmentState } from '../core/observe.js';
import { appNameEquals, formatAppName, toAppName, type AppName } from '../naming.js';
import type { AddressRange } from './cdap-objects.js';
import type { Clock, TimerHandle } from './clock.js';
import { defaultConstants, type CdapTransport } from './enrollment.js';
import { Enrollee, type EnrollmentResult } from './enrollment-enrollee.js';

/** A member to enroll with: its IPC process name in a lower DIF. */
export interface LinkTarget {
  readonly lower: IpcProcess;
  readonly name: AppName | string;
}

/** What the links need from their IPC process. */
export interface LinkHost {
  readonly name: AppName;
  readonly difName: string;
  readonly clock: Clock;
  readonly maxPduSize: number;
  readonly retryMs: number;
  readonly closed: boolean;
  /** 0 while not a member. */
  readonly address: number;
  /** It enrolls others (acceptEnrollment): the join asks for a block of addresses. */
  readonly wantsPool: boolean;
  readonly stats: { enrollAttempts: number; enrollFailures: number };
  /** The block it holds now (proposed again at a re-join). */
  pool(): AddressRange | undefined;
  addPort(flow: Flow): number | undefined;
  transport(id: number): CdapTransport;
  closePort(id: number, reason: string): void;
  /** N-1 ports other than `except` with an enrolled neighbour. */
  neighboursBesides(except: number): number;
  /** Joined the DIF over port `id` (an address assigned by `peer`). */
  joined(id: number, r: EnrollmentResult, peer: number): void;
  /** An adjacency with member `peer` is up on `id`; this member kept its address. `join`: over the join link. */
  adjacent(id: number, r: EnrollmentResult, peer: number, join: boolean): void;
  failed(err: Error): void;
}

interface Link {
  readonly target: LinkTarget;
  readonly join: boolean;
  port: number | undefined;
  enrollee: Enrollee | undefined;
  timer: TimerHandle | undefined;
  up: boolean;
  /** Bumped by every attempt and by close: a stale attempt's result is dropped. */
  gen: number;
}

export class IpcpLinks {
  private readonly links: Link[] = [];

  constructor(
    private readonly h: LinkHost,
    enroll: LinkTarget | undefined,
    neighbours: readonly LinkTarget[] = [],
  ) {
    const mk = (target: LinkTarget, join: boolean): Link => ({ target, join, port: undefined, enrollee: undefined, timer: undefined, up: false, gen: 0 });
    if (enroll) this.links.push(mk(enroll, true));
    for (const n of neighbours) this.links.push(mk(n, false));
  }

  /** Begin: the join at once (neighbour links wait for an address: `addressSet`). */
  start(): void {
    for (const l of this.links) if (l.join) this.schedule(l, 0);
  }

  /** The member has an address now: neighbour links not yet made are tried. */
  addressSet(): void {
    for (const l of this.links) if (!l.join && l.port === undefined && l.timer === undefined) this.schedule(l, 0);
  }

  /** The N-1 flow `id` is gone: its link is made again after retryMs. */
  portLost(id: number, reason: string): void {
    const l = this.links.find((x) => x.port === id);
    if (!l) return;
    l.port = undefined;
    l.up = false;
    l.enrollee?.abort(`the N-1 flow to ${formatAppName(toAppName(l.target.name))} was lost: ${reason}`);
    this.schedule(l, this.h.retryMs);
  }

  /** Is `id` the N-1 flow of the join link? */
  isJoinPort(id: number): boolean {
    return this.links.some((l) => l.join && l.port === id);
  }

  /** Enrollment state per link, for the counters. */
  states(): { neighbour: string; state: EnrollmentState }[] {
    return this.links.map((l) => {
      const st = l.enrollee?.state;
      const state: EnrollmentState = l.up ? 'enrolled' : st === undefined || (st !== 'idle' && st !== 'failed' && st !== 'enrolled') ? 'enrolling' : 'lost';
      return { neighbour: formatAppName(toAppName(l.target.name)), state };
    });
  }

  snapshot(): { name: string; lowerDif: string; join: boolean; up: boolean; port: number | undefined; enrollee: ReturnType<Enrollee['snapshot']> | undefined }[] {
    return this.links.map((l) => ({ name: formatAppName(toAppName(l.target.name)), lowerDif: l.target.lower.difName, join: l.join, up: l.up, port: l.port, enrollee: l.enrollee?.snapshot() }));
  }

  close(reason: string): void {
    for (const l of this.links) {
      l.gen++;
      this.h.clock.clearTimer(l.timer);
      l.timer = undefined;
      l.enrollee?.abort(reason);
    }
  }

  private schedule(l: Link, ms: number): void {
    if (this.h.closed) return;
    this.h.clock.clearTimer(l.timer);
    l.timer = this.h.clock.setTimer(ms, () => {
      l.timer = undefined;
      void this.attempt(l);
    });
  }

  private async attempt(l: Link): Promise<void> {
    const h = this.h;
    if (h.closed || l.port !== undefined) return;
    if (!l.join && h.address === 0) return; // addressSet() starts it
    const gen = ++l.gen;
    h.stats.enrollAttempts++;
    let id: number | undefined;
    try {
      const flow = await l.target.lower.allocateFlow(h.name, l.target.name, {});
      if (h.closed || gen !== l.gen) return flow.deallocate(h.closed ? 'IPC process closed' : 'enrollment superseded');
      id = h.addPort(flow);
      if (id === undefined) throw new Error(`the N-1 flow through ${l.target.lower.difName} is unusable`);
      l.port = id;
      const address = h.address;
      const keep = address !== 0 && (!l.join || h.neighboursBesides(id) > 0);
      const enrollee = new Enrollee({
        clock: h.clock,
        transport: h.transport(id),
        name: h.name,
        difName: h.difName,
        enrollerName: toAppName(l.target.name),
        constants: defaultConstants(h.maxPduSize),
        proposedAddress: address,
        keepAddress: keep,
        wantsPool: l.join && h.wantsPool,
        proposedPool: l.join ? h.pool() : undefined,
      });
      l.enrollee = enrollee;
      const r = await enrollee.enroll();
      if (h.closed || l.port !== id) return;
      const peer = r.neighbours.find((n) => appNameEquals(n.name, r.enroller))?.address ?? 0;
      if (peer === 0) throw new Error('the enroller did not say its own address');
      if (keep && h.address !== address) throw new Error(`this member's address changed from ${address} to ${h.address} during the enrollment`);
      l.up = true;
      if (keep) h.adjacent(id, r, peer, l.join);
      else h.joined(id, r, peer);
    } catch (err) {
      h.stats.enrollFailures++;
      if (id !== undefined && l.port === id) {
        l.port = undefined;
        l.up = false;
        h.closePort(id, `enrollment failed: ${(err as Error)?.message ?? String(err)}`);
      }
      h.failed(err as Error);
      if (!h.closed && l.port === undefined && gen === l.gen) this.schedule(l, h.retryMs);
    }
  }
}
