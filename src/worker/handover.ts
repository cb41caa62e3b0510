import type { StoredRun } from '../store/run-repository';
import type { LoadedVersion } from '../store/registry';

/*
 * Runs this process's intake has just started, handed to the process's workers so that one of them carries the
 * run on from the state the intake committed instead of finding it among the due runs and loading it back
 * (Worker.adopt). One per process, shared by its workers: a run waits here until a worker with a free slot takes
 * it, and every worker's claim leaves the waiting ones to this queue. It also knows which runs the process's
 * workers hold, so a run one of them holds already is never handed over again.
 *
 * As the claims do (migration 033), it takes the projects in turn, oldest first within each, and one project's
 * runs fill at most three quarters of it: a claim takes handed runs before due ones, so a burst of one project
 * that filled the queue would otherwise go ahead of another project's next run by the whole queue.
 *
 * Nothing here is needed for correctness: a run handed over is still due in the database, a worker locks it
 * before it acts, and its first append names the sequence the intake committed (anyone who moved the run on
 * since wins). A run left here when the process stops is found by the next claim.
 */

export interface HandedRun {
  run: StoredRun;
  /** the version it runs, as the intake loaded and checked it */
  version?: LoadedVersion;
  /** the size of the webhook body the run started from: what its state holds, about (its input) */
  bytes?: number;
}

/** webhook bodies' bytes the runs waiting may hold together, by default (a burst of 2 MiB orders is not kept whole) */
export const HANDOVER_BYTES = 32 * 1024 * 1024;

export class Handover {
  private readonly waiting = new Map<string, HandedRun>();
  private readonly held = new Set<string>();
  private readonly perProject = new Map<string, number>();
  private bytes = 0;

  /**
   * `capacity`: runs kept waiting at most; `maxBytes`: their webhook bodies' bytes together. Beyond either a run is
   * left to the claims (they find it among the due runs).
   */
  constructor(
    private readonly capacity: number,
    private readonly maxBytes = HANDOVER_BYTES,
  ) {}

  /** Keep a run for the next worker with a free slot; false when it is held or waiting already, or the queue is full. */
  offer(h: HandedRun): boolean {
    const id = h.run.runId;
    if (this.held.has(id) || this.waiting.has(id) || this.waiting.size >= this.capacity) return false;
    if (this.bytes + (h.bytes ?? 0) > this.maxBytes) return false;
    const project = h.run.projectId;
    if ((this.perProject.get(project) ?? 0) >= Math.ceil((this.capacity * 3) / 4)) return false;
    this.waiting.set(id, h);
    this.perProject.set(project, (this.perProject.get(project) ?? 0) + 1);
    this.bytes += h.bytes ?? 0;
    return true;
  }

  private remove(id: string): void {
    const h = this.waiting.get(id);
    if (!h) return;
    this.waiting.delete(id);
    const left = (this.perProject.get(h.run.projectId) ?? 1) - 1;
    if (left > 0) this.perProject.set(h.run.projectId, left);
    else this.perProject.delete(h.run.projectId);
    this.bytes -= h.bytes ?? 0;
  }

  /** Up to `n` waiting runs taken out of the queue: the projects in turn (the one waiting longest first), oldest first within each. */
  take(n: number): HandedRun[] {
    const byProject = new Map<string, HandedRun[]>();
    for (const h of this.waiting.values()) {
      const queue = byProject.get(h.run.projectId);
      if (queue) queue.push(h);
      else byProject.set(h.run.projectId, [h]);
    }
    const out: HandedRun[] = [];
    for (let turn = 0; out.length < n; turn++) {
      let any = false;
      for (const queue of byProject.values()) {
        if (out.length >= n) break;
        const h = queue[turn];
        if (!h) continue;
        any = true;
        out.push(h);
      }
      if (!any) break;
    }
    for (const h of out) this.remove(h.run.runId);
    return out;
  }

  /** The runs still waiting: a claim leaves them to this queue. */
  waitingIds(): string[] {
    return [...this.waiting.keys()];
  }

  /** A worker of the process holds the run (claimed or handed over): it is not handed over again while it does. */
  hold(runId: string): void {
    this.held.add(runId);
    this.remove(runId);
  }

  release(runId: string): void {
    this.held.delete(runId);
  }

  get size(): number {
    return this.waiting.size;
  }
}
