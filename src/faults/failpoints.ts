import { appendFileSync } from 'node:fs';

/*
 * Failpoints: named sites at every boundary of the engine where a fault can be
 * injected on purpose. Armed per worker process (MESHHOOK_FAILPOINTS) or in
 * code; every firing is written down before it acts, so a scenario can prove
 * its fault really happened. Unarmed, a site costs one property read.
 */

export const FAILPOINTS = [
  /** a worker is about to commit a batch of events */
  'before-append',
  /** inside the transaction: events inserted, run view not yet updated */
  'before-view-update',
  /** inside the transaction: run view updated, next step or timer not yet scheduled */
  'scheduling-next',
  /** the batch is committed */
  'after-append',
  /** the HTTP request went out and was answered; the answer is not recorded yet */
  'after-request-sent',
  /** a durable timer is due and about to be recorded as fired */
  'timer-fired',
  /** a worker picked up a run another worker left unfinished, before resuming it */
  'during-recovery',
  /** the intake is about to record a delivery and its run's first events (one statement) */
  'before-start-run',
  /** the delivery and its run are committed; the sender has not been answered yet */
  'after-start-run',
] as const;
export type FailpointName = (typeof FAILPOINTS)[number];

export type FailAction = 'crash' | 'throw' | 'delay' | 'hang' | 'trace';

export interface FailpointSpec {
  name: FailpointName;
  /** only when this step is involved */
  step?: string;
  /** only for batches holding an event of this type (append sites) */
  eventType?: string;
  /** the n-th matching hit in this process (1-based); every hit when omitted */
  occurrence?: number;
  action: FailAction;
  delayMs?: number;
}

export interface FailpointHit {
  name: FailpointName;
  runId: string;
  step: string | null;
  /** event types of the batch, for append sites */
  events?: string[];
}

export interface FiredRecord extends FailpointHit {
  action: FailAction;
  occurrence: number;
  pid: number;
  at: string;
}

export class FailpointError extends Error {
  constructor(public readonly hit: FailpointHit) {
    super(`failpoint ${hit.name}${hit.step ? `@${hit.step}` : ''} fired`);
    this.name = 'FailpointError';
  }
}

/** `after-append@map#1=crash;after-request-sent@push=delay:500;after-append@push+StepSucceeded=crash` */
export function parseFailpoints(text: string | undefined): FailpointSpec[] {
  if (!text || !text.trim()) return [];
  return text
    .split(/[;,\n]/)
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const m = /^([a-z-]+)(?:@([a-z0-9_-]+))?(?:\+([A-Za-z]+))?(?:#(\d+))?=(crash|throw|hang|trace|delay(?::(\d+))?)$/.exec(item);
      if (!m) throw new Error(`cannot read failpoint "${item}": expected name[@step][+EventType][#occurrence]=crash|throw|hang|trace|delay:ms`);
      const name = m[1] as FailpointName;
      if (!FAILPOINTS.includes(name)) throw new Error(`unknown failpoint "${name}"; known: ${FAILPOINTS.join(', ')}`);
      const action = (m[5].startsWith('delay') ? 'delay' : m[5]) as FailAction;
      return {
        name,
        step: m[2],
        eventType: m[3],
        occurrence: m[4] ? Number(m[4]) : undefined,
        action,
        delayMs: m[6] ? Number(m[6]) : undefined,
      };
    });
}

export function formatFailpoint(spec: FailpointSpec): string {
  const action = spec.action === 'delay' ? `delay:${spec.delayMs ?? 1000}` : spec.action;
  return `${spec.name}${spec.step ? `@${spec.step}` : ''}${spec.eventType ? `+${spec.eventType}` : ''}${spec.occurrence ? `#${spec.occurrence}` : ''}=${action}`;
}

export class Failpoints {
  /** false when nothing is armed: callers skip the await entirely */
  readonly armed: boolean;
  readonly fired: FiredRecord[] = [];
  private readonly counts = new Map<string, number>();

  constructor(
    private readonly specs: FailpointSpec[] = [],
    private readonly opts: { recordFile?: string; inProcess?: boolean } = {},
  ) {
    this.armed = specs.length > 0;
  }

  static fromEnv(env: NodeJS.ProcessEnv = process.env): Failpoints {
    return new Failpoints(parseFailpoints(env.MESHHOOK_FAILPOINTS), { recordFile: env.MESHHOOK_FAILPOINT_LOG });
  }

  static none(): Failpoints {
    return new Failpoints([]);
  }

  async hit(hit: FailpointHit): Promise<void> {
    const matching = this.specs.filter(
      (spec) =>
        spec.name === hit.name &&
        (!spec.step || spec.step === hit.step) &&
        (!spec.eventType || (hit.events ?? []).includes(spec.eventType)),
    );
    if (matching.length === 0) return;
    // count each site once per hit, however many specs watch it ("#1=trace;#2=crash" must see 1 then 2)
    const occurrence = new Map<string, number>();
    for (const spec of matching) {
      const key = siteKey(spec);
      if (!occurrence.has(key)) {
        const n = (this.counts.get(key) ?? 0) + 1;
        this.counts.set(key, n);
        occurrence.set(key, n);
      }
    }
    for (const spec of matching) {
      const n = occurrence.get(siteKey(spec))!;
      if (spec.occurrence && spec.occurrence !== n) continue;
      const record: FiredRecord = { ...hit, action: spec.action, occurrence: n, pid: process.pid, at: new Date().toISOString() };
      this.fired.push(record);
      // written synchronously: a crash right after must not lose the proof
      if (this.opts.recordFile) appendFileSync(this.opts.recordFile, JSON.stringify(record) + '\n');
      await act(spec, hit, this.opts.inProcess ?? false);
    }
  }
}

function siteKey(spec: FailpointSpec): string {
  return formatFailpoint({ ...spec, occurrence: undefined, action: 'trace' });
}

async function act(spec: FailpointSpec, hit: FailpointHit, inProcess: boolean): Promise<void> {
  switch (spec.action) {
    case 'trace':
      return;
    case 'delay':
      await new Promise((r) => setTimeout(r, spec.delayMs ?? 1000));
      return;
    case 'throw':
      throw new FailpointError(hit);
    case 'hang':
      await new Promise(() => undefined);
      return;
    case 'crash':
      if (inProcess) throw new FailpointError(hit);
      // the process dies at once: no finally blocks, no cleanup, no goodbye to Postgres
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => undefined);
  }
}
