import '../db/load-pg';
import { parentPort, workerData } from 'node:worker_threads';
import { openEnginePool } from '../db/pool';
import { assertProjectId } from '../db/scope';
import { verifyRunsIn } from '../replay-service';
import { CheckpointIndex } from './checkpoints';
import { chainKeysOf, RunVerdict, SliceResult, SliceTask, SNAPSHOT_NAME, ThreadSetup, verdictOf } from './verify-threads';

/*
 * A verify thread (see verify-threads.ts): one connection as the engine's role, one slice at a time, each in a
 * read-only transaction that imports the main thread's snapshot before its first query.
 */
const setup = workerData as ThreadSetup;
const keys = chainKeysOf(setup.chainKeys);
const checkpoints = setup.checkpoints.length ? CheckpointIndex.ofRuns(setup.checkpoints) : null;
const pool = openEnginePool(setup.connectionString, { max: 1 }, () => undefined);

async function verifySlice(task: SliceTask): Promise<SliceResult> {
  assertProjectId(task.projectId);
  if (!SNAPSHOT_NAME.test(task.snapshot)) throw new Error(`not a snapshot name: ${JSON.stringify(task.snapshot.slice(0, 40))}`);
  const c = await pool.connect();
  let broken = false;
  try {
    await c.query(
      `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '${task.snapshot}'; SELECT set_config('meshhook.project', '${task.projectId}', true)`,
    );
    const verdicts: RunVerdict[] = [];
    const runIds: string[] = [];
    const r = await verifyRunsIn(c, task.projectId, task.range, {
      keys,
      checkpoints,
      allowUnsignedHead: setup.allowUnsignedHead,
      onRun: (v) => {
        if (task.runIds) runIds.push(v.runId);
        if (!v.ok || v.unsignedAccepted) verdicts.push(verdictOf(v));
      },
    });
    await c.query('COMMIT');
    return { id: task.id, ok: true, result: { runs: r.runs, events: r.events, bad: r.bad, orphans: r.orphans, named: r.named }, verdicts, runIds };
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw e;
  } finally {
    c.release(broken ? true : undefined);
  }
}

parentPort!.on('message', (task: SliceTask) => {
  verifySlice(task).then(
    (r) => parentPort!.postMessage(r),
    (e: Error) => parentPort!.postMessage({ id: task.id, ok: false, error: e.message } satisfies SliceResult),
  );
});
