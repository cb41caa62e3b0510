/*
 * One DBOS executor in a child process, for runDbosTrial({ executors: N > 1 }).
 * DBOS is a process-wide singleton (one executor per process), so N executors
 * need N processes. Spoken to over IPC by bench/contenders/dbos.ts:
 *
 *   parent → child  { type: 'config', databaseUrl, executorId, targetUrl, poolSize }
 *   child → parent  { type: 'ready' }                 modules loaded, DBOS configured, no connection yet
 *   parent → child  { type: 'launch' }
 *   child → parent  { type: 'launched', at }          DBOS.launch() returned (at: epoch ms)
 *   child → parent  { type: 'settled', ok }           one per workflow body that finished here
 *   parent → child  { type: 'stop' }                  shut down (waiting for outcomes to be recorded), then exit
 */
import { DBOS } from '@dbos-inc/dbos-sdk';
import { configureDbos, executorHooks } from './dbos-workflows';

type FromParent =
  | { type: 'config'; databaseUrl: string; executorId: string; targetUrl?: string; poolSize?: number }
  | { type: 'launch' }
  | { type: 'stop' };

const send = (m: Record<string, unknown>): void => {
  process.send?.(m);
};

process.on('message', (m: FromParent) => {
  void (async () => {
    try {
      if (m.type === 'config') {
        executorHooks.targetUrl = m.targetUrl ?? '';
        executorHooks.onSettled = (ok) => send({ type: 'settled', ok });
        configureDbos({ databaseUrl: m.databaseUrl, executorId: m.executorId, poolSize: m.poolSize });
        send({ type: 'ready' });
      } else if (m.type === 'launch') {
        await DBOS.launch();
        send({ type: 'launched', at: Date.now() });
      } else if (m.type === 'stop') {
        await DBOS.shutdown({ workflowCompletionTimeoutMS: 15_000 });
        send({ type: 'stopped' });
        process.disconnect?.();
        process.exit(0);
      }
    } catch (e) {
      send({ type: 'error', message: String((e as Error)?.stack ?? e) });
      process.exit(1);
    }
  })();
});

// the parent went away: do not linger
process.on('disconnect', () => process.exit(0));
