import type { Pool } from 'pg';
import { appendBatch, appendBatches, BatchGroup, ConcurrencyError, PreparedBatch } from './log-append';

/*
 * Group commit across runs. A worker drives many runs at once; each decides a
 * batch and waits for it to be committed before it acts on the outside world.
 * Rather than one transaction per batch, the batches that arrive while a
 * commit is in flight wait for it and then go together, in one call and one
 * transaction (at most MAX_GROUP per call). A lone batch goes the one-batch
 * way. Nothing is acknowledged before its transaction committed, so the
 * failure semantics are those of one batch per transaction: a batch whose run
 * another writer moved on is refused alone (ConcurrencyError) and the others
 * are kept; a call that fails for any other reason (a lost connection, a
 * trigger refusing) is tried again batch by batch, so each batch gets its own
 * answer and one bad batch cannot fail the others.
 */

const MAX_GROUP = 64;
/** calls in flight at once: one keeps groups large, a second overlaps a round trip with the next group forming */
const MAX_IN_FLIGHT = 2;

interface Waiting {
  batch: PreparedBatch;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class GroupCommit implements BatchGroup {
  readonly stats = { calls: 0, batches: 0, largest: 0, fallbacks: 0 };
  private queue: Waiting[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(private readonly db: Pool) {}

  append(batch: PreparedBatch): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ batch, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= MAX_IN_FLIGHT || this.queue.length === 0) return;
    this.scheduled = true;
    // after the current turn of the event loop, so every run that decides in it joins the same group
    setImmediate(() => {
      this.scheduled = false;
      if (this.inFlight >= MAX_IN_FLIGHT || this.queue.length === 0) return;
      const group = this.queue.splice(0, MAX_GROUP);
      this.inFlight++;
      void this.commit(group).finally(() => {
        this.inFlight--;
        this.schedule();
      });
      this.schedule();
    });
  }

  private async commit(group: Waiting[]): Promise<void> {
    this.stats.calls++;
    this.stats.batches += group.length;
    this.stats.largest = Math.max(this.stats.largest, group.length);
    if (group.length === 1) return this.one(group[0]);
    let kept: boolean[];
    try {
      kept = await appendBatches(this.db, group.map((w) => w.batch));
    } catch {
      // nothing of the call was kept: each batch on its own, for its own answer
      this.stats.fallbacks++;
      await Promise.all(group.map((w) => this.one(w)));
      return;
    }
    group.forEach((w, i) => (kept[i] ? w.resolve() : w.reject(new ConcurrencyError(w.batch.runId, w.batch.expectedSeq))));
  }

  private async one(w: Waiting): Promise<void> {
    try {
      await appendBatch(this.db, w.batch);
      w.resolve();
    } catch (e) {
      w.reject(e);
    }
  }
}
