import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Pool } from 'pg';
import { inProject } from '../db/scope';
import type { ChainKeys } from '../domain/hash-chain';
import { problemsOf, RunsVerified, RunVerification, strayDeliveriesOf, StrayDelivery, verifyRunsIn, VerifyRunOptions } from '../replay-service';
import type { RunRange } from '../store/log-read';
import type { Checkpoint } from './checkpoints';

/*
 * verify --all on more than one core. A project's runs are cut into slices by run id, each about as many runs;
 * the main thread verifies the first slice and each thread one other, every one in its own connection reading
 * the same snapshot (the main thread's, exported with pg_export_snapshot and imported with SET TRANSACTION
 * SNAPSHOT), so together they judge exactly the state one transaction would. What a thread sends back is the
 * verdict of each bad run and what the slices add up to; the events themselves never cross threads (sending a
 * page's links to a hashing thread cost the main thread what the hashing saved: docs/performance.md).
 */

/** What verify --all prints of a run: enough to report it, without its state. */
export interface RunVerdict {
  runId: string;
  ok: boolean;
  unsignedAccepted: boolean;
  problems: string[];
}

export function verdictOf(v: RunVerification): RunVerdict {
  return { runId: v.runId, ok: v.ok, unsignedAccepted: v.unsignedAccepted, problems: v.ok ? [] : problemsOf(v) };
}

/** What a thread needs once: where the database is and the keys to check with (they never leave the process). */
export interface ThreadSetup {
  connectionString: string;
  chainKeys: Array<{ kid: string; key: Uint8Array }>;
  checkpoints: Checkpoint[];
  allowUnsignedHead: boolean;
}

/** One slice to verify, and what comes back. */
export interface SliceTask {
  id: number;
  projectId: string;
  snapshot: string;
  range: RunRange;
  /** send every run's id back, not only the bad ones' (verify --all needs them to match checkpoints) */
  runIds: boolean;
}

export type SliceResult =
  | { id: number; ok: true; result: Omit<RunsVerified, 'deliveries'>; verdicts: RunVerdict[]; runIds: string[] }
  | { id: number; ok: false; error: string };

/** A slice is worth a thread from this many runs up: below, starting the transaction costs more than it saves. */
export const MIN_RUNS_A_SLICE = 1_000;

/** How many threads verify --all uses unless told: one a core beside the main thread, at most three. */
export function defaultThreads(): number {
  return Math.max(0, Math.min(3, availableParallelism() - 1));
}

/** A ChainKeys lookup over a table of keys (what a thread is handed). */
export function chainKeysOf(table: ThreadSetup['chainKeys']): ChainKeys {
  const keys = new Map(table.map((k) => [k.kid, Buffer.from(k.key)]));
  return (kid) => keys.get(kid) ?? null;
}

/** A snapshot name as pg_export_snapshot writes it: checked before it is put into SET TRANSACTION SNAPSHOT. */
export const SNAPSHOT_NAME = /^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$/;

export class VerifyThreads {
  private workers: Worker[] = [];
  private readonly waiting = new Map<number, { resolve: (r: SliceResult) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private failed: Error | null = null;
  /** the most slices one project was cut into (1: every project was verified on the main thread alone) */
  mostSlices = 1;

  private constructor(
    private readonly count: number,
    private readonly setup: ThreadSetup,
  ) {}

  /** The threads, started the first time a project is large enough to be cut (a small one never pays for them). */
  private started(): Worker[] {
    if (this.workers.length === this.count) return this.workers;
    const setup = this.setup;
    // compiled, the thread's entry is JavaScript; run from the TypeScript sources (tests, benches) it is
    // transpiled by sucrase, which starts in milliseconds where ts-node takes about a second
    const ts = __filename.endsWith('.ts');
    const entry = path.join(__dirname, `verify-thread-main.${ts ? 'ts' : 'js'}`);
    this.workers = Array.from({ length: this.count }, () => {
      const w = new Worker(entry, { workerData: setup, execArgv: ts ? ['-r', 'sucrase/register/ts'] : [] });
      w.on('message', (m: SliceResult) => {
        const p = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        p?.resolve(m);
      });
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`a verify thread stopped (exit code ${code})`));
      });
      return w;
    });
    return this.workers;
  }

  /** Up to `count` threads to verify with, started when a project first needs them. */
  static start(count: number, opts: { connectionString: string; chainKeys: ThreadSetup['chainKeys']; checkpoints?: Checkpoint[]; allowUnsignedHead?: boolean }): VerifyThreads {
    return new VerifyThreads(count, { connectionString: opts.connectionString, chainKeys: opts.chainKeys, checkpoints: opts.checkpoints ?? [], allowUnsignedHead: opts.allowUnsignedHead ?? false });
  }

  get size(): number {
    return this.count;
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.waiting.values()) p.reject(e);
    this.waiting.clear();
  }

  private run(worker: Worker, task: Omit<SliceTask, 'id'>): Promise<SliceResult> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({ ...task, id } satisfies SliceTask);
    });
  }

  /**
   * Verify every run of a project as verifyProject does, the runs cut into slices verified side by side.
   * `onVerdict` hears of every bad run and every run accepted unsigned, in run-id order; `onRunId`, when given,
   * of every run.
   */
  async verifyProject(
    pool: Pool,
    projectId: string,
    opts: VerifyRunOptions & { pageSize?: number; minRunsASlice?: number },
    onVerdict: (v: RunVerdict) => void,
    onRunId?: (runId: string) => void,
  ): Promise<{ runs: number; events: number; bad: number; orphans: Array<{ runId: string; events: number }>; strayDeliveries: StrayDelivery[] }> {
    return inProject(
      pool,
      projectId,
      async (c) => {
        const total = Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM runs WHERE project_id = $1', [projectId])).rows[0].n);
        const report = (v: RunVerification): void => {
          onRunId?.(v.runId);
          if (!v.ok || v.unsignedAccepted) onVerdict(verdictOf(v));
        };
        const perSlice = opts.minRunsASlice ?? MIN_RUNS_A_SLICE;
        if (this.count === 0 || total < 2 * perSlice) {
          const r = await verifyRunsIn(c, projectId, undefined, { ...opts, onRun: report });
          return { runs: r.runs, events: r.events, bad: r.bad, orphans: r.orphans, strayDeliveries: await strayDeliveriesOf(c, projectId, r.deliveries, r.named) };
        }
        const snapshot = (await c.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0].s;
        // the first run of each slice: the runs in id order, cut into parts of about as many runs
        const slices = Math.min(this.count + 1, Math.floor(total / perSlice));
        const { rows } = await c.query<{ id: string }>(
          'SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS i FROM runs WHERE project_id = $1) s WHERE i % $2 = 0 ORDER BY id',
          [projectId, Math.ceil(total / slices)],
        );
        // slice 0 runs up to the second slice's first run (the first slice has no lower end, the last no upper:
        // a log whose run has no row is in some slice whatever its id)
        const bounds = rows.map((r) => r.id);
        this.mostSlices = Math.max(this.mostSlices, bounds.length);
        const ranges: RunRange[] = bounds.map((_, k) => ({ from: k === 0 ? undefined : bounds[k], to: bounds[k + 1] }));
        const workers = this.started();
        const others = ranges.slice(1).map((range, k) => this.run(workers[k], { projectId, snapshot, range, runIds: !!onRunId }));
        // every thread's answer is waited for, even after one fails, so no thread is left reading a snapshot
        // whose transaction is gone
        const settled = Promise.allSettled(others);
        let first: RunsVerified;
        try {
          first = await verifyRunsIn(c, projectId, ranges[0], { ...opts, onRun: report });
        } finally {
          await settled;
        }
        const named = [...first.named];
        const orphans = [...first.orphans];
        let { runs, events, bad } = first;
        for (const s of await settled) {
          if (s.status === 'rejected') throw s.reason;
          const m = s.value;
          if (!m.ok) throw new Error(`a verify thread failed: ${m.error}`);
          for (const id of m.runIds) onRunId?.(id);
          for (const v of m.verdicts) onVerdict(v);
          runs += m.result.runs;
          events += m.result.events;
          bad += m.result.bad;
          orphans.push(...m.result.orphans);
          named.push(...m.result.named);
        }
        return { runs, events, bad, orphans, strayDeliveries: await strayDeliveriesOf(c, projectId, first.deliveries, named) };
      },
      { snapshot: true },
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
