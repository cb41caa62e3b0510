import { Cron } from 'croner';
import type { Pool } from 'pg';
import { inProject } from '../db/scope';
import { engineInfo, type EngineFlags } from '../domain/decider';
import type { Keyring } from '../security/keyring';
import { runIdOfDelivery, startRun } from '../store/intake-start';
import { latestVersion, listProjects, type LoadedVersion } from '../store/registry';
import type { Clock } from '../worker/clock';

/*
 * Runs started by the clock: a workflow whose latest version has a `schedule` (a cron pattern, in UTC) gets one
 * run at each of its ticks, as if a webhook had arrived then with the body {"scheduledAt": "<tick>"}. Each tick
 * is a delivery, `schedule@<tick>`, started through the intake's own path, so a tick is started once however
 * many `meshhook up` processes tick at once (the delivery's record refuses a second start) and its run has the
 * id the delivery derives to. A webhook cannot take a tick's delivery id first: '@' is not allowed in those.
 *
 * The ticks are counted from the workflow's last scheduled run (or from when its version was published), so a
 * tick missed while nothing was running is started when the scheduler comes back, at most MAX_CATCH_UP of them
 * (the latest); older ones are logged as skipped.
 */

/** at most this many missed ticks of one workflow are started when the scheduler comes back */
export const MAX_CATCH_UP = 10;

export const SCHEDULED_DELIVERY_PREFIX = 'schedule@';

export interface SchedulerOptions {
  pool: Pool;
  keyring: Keyring;
  clock: Clock;
  flags?: EngineFlags;
  log?: (entry: Record<string, unknown>) => void;
  /** a run was started (to wake a worker for it) */
  onRunStarted?: (runId: string) => void;
  /** how often to look for due ticks (default 1 s) */
  intervalMs?: number;
}

interface ScheduledWorkflow {
  projectId: string;
  projectSlug: string;
  workflowId: string;
  workflowSlug: string;
  version: LoadedVersion;
  /** when its latest version was published, and the tick of its last scheduled run, if any */
  publishedAt: Date;
  lastTick: Date | null;
}

export class Scheduler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private stopped = false;

  constructor(private readonly opts: SchedulerOptions) {}

  start(): void {
    const every = this.opts.intervalMs ?? 1_000;
    const loop = (): void => {
      if (this.stopped) return;
      this.running = this.tick()
        .catch((e: Error) => this.opts.log?.({ level: 'warn', msg: 'scheduler could not look for due ticks', error: e.message }))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(loop, every);
        });
    };
    this.timer = setTimeout(loop, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** Start every tick that is due by `now` and not started yet; returns how many runs this call started. */
  async tick(now: Date = this.opts.clock.now()): Promise<number> {
    let started = 0;
    for (const w of await this.scheduled()) {
      const cron = new Cron(w.version.definition.schedule!, { timezone: 'UTC', paused: true });
      // the ticks after the last one started (or after publication), up to now
      const due: Date[] = [];
      let skipped = 0;
      for (let t = cron.nextRun(w.lastTick ?? w.publishedAt); t && t.getTime() <= now.getTime(); t = cron.nextRun(t)) {
        due.push(t);
        if (due.length > MAX_CATCH_UP) {
          due.shift();
          skipped++;
        }
      }
      if (skipped) this.opts.log?.({ level: 'warn', msg: 'scheduled ticks missed and skipped', project: w.projectSlug, workflow: w.workflowSlug, skipped, keptLatest: MAX_CATCH_UP });
      for (const t of due) if (await this.startTick(w, t, now)) started++;
    }
    return started;
  }

  private async startTick(w: ScheduledWorkflow, tick: Date, now: Date): Promise<boolean> {
    const deliveryId = `${SCHEDULED_DELIVERY_PREFIX}${tick.toISOString()}`;
    const input = { scheduledAt: tick.toISOString() };
    const { keyring } = this.opts;
    const started = await startRun(this.opts.pool, {
      runId: runIdOfDelivery(keyring.runIdKey(), w.projectId, w.workflowId, deliveryId),
      projectId: w.projectId,
      projectSlug: w.projectSlug,
      workflowSlug: w.workflowSlug,
      version: w.version,
      deliveryId,
      input,
      rawBody: JSON.stringify(input),
      at: now,
      engine: engineInfo(this.opts.flags),
      chain: keyring.chainKey(),
      keys: keyring.chainKeys(),
    });
    if (started.duplicate) return false;
    this.opts.log?.({ level: 'info', msg: 'scheduled run started', project: w.projectSlug, workflow: w.workflowSlug, tick: tick.toISOString(), runId: started.runId });
    this.opts.onRunStarted?.(started.runId);
    return true;
  }

  /** Every workflow whose latest version has a schedule, its version verified (a tampered one is logged and left). */
  private async scheduled(): Promise<ScheduledWorkflow[]> {
    const { pool, keyring } = this.opts;
    const out: ScheduledWorkflow[] = [];
    for (const p of await listProjects(pool, keyring.chainKeys())) {
      if (p.nameProblem) continue;
      const rows = await inProject(pool, p.id, async (c) =>
        (
          await c.query<{ id: string; slug: string; published_at: Date; last_tick: string | null }>(
            `SELECT w.id, w.slug, v.published_at,
                    (SELECT max(d.delivery_id COLLATE "C") FROM deliveries d WHERE d.workflow_id = w.id AND d.delivery_id LIKE 'schedule@%') AS last_tick
             FROM workflows w
             JOIN LATERAL (SELECT version, definition, published_at FROM workflow_versions WHERE workflow_id = w.id ORDER BY version DESC LIMIT 1) v ON true
             WHERE w.project_id = $1 AND v.definition ? 'schedule'`,
            [p.id],
          )
        ).rows,
      );
      for (const r of rows) {
        try {
          const version = await latestVersion(pool, p.id, r.id, { keys: keyring.chainKeys() });
          if (!version.definition.schedule) continue;
          const lastTick = r.last_tick ? new Date(r.last_tick.slice(SCHEDULED_DELIVERY_PREFIX.length)) : null;
          out.push({ projectId: p.id, projectSlug: p.slug, workflowId: r.id, workflowSlug: r.slug, version, publishedAt: r.published_at, lastTick: lastTick && !Number.isNaN(lastTick.getTime()) ? lastTick : null });
        } catch (e) {
          this.opts.log?.({ level: 'warn', msg: 'scheduled workflow not started: its version cannot be used', project: p.slug, workflow: r.slug, error: (e as Error).message });
        }
      }
    }
    return out;
  }
}
