import { canonicalJson, deepEqualCanonical } from './canonical';
import { inexactNumberOf } from './exact-numbers';
import type { RunState } from './decider';

/** What users see about a run: a projection of the run log, rebuildable at any time. */
export interface RunView {
  runId: string;
  project: string;
  workflow: string;
  version: number;
  status: string;
  currentStep: string | null;
  outputs: Record<string, unknown>;
  attempts: Record<string, number>;
  result: RunState['result'];
  wakeAt: string | null;
  lastSeq: number;
  startedAt: string | null;
  finishedAt: string | null;
}

export function toRunView(state: RunState, lastSeq: number): RunView {
  return {
    runId: state.runId!,
    project: state.project!,
    workflow: state.workflow!,
    version: state.version!,
    status: state.status,
    currentStep: state.phase === 'done' ? null : state.cursor,
    outputs: state.outputs,
    attempts: state.attempts,
    result: state.result,
    // a waiting run is woken by its timer, or by its deadline when that comes first (semantics 5)
    wakeAt: state.phase === 'awaiting_timer' ? earlier(state.pendingTimer!.dueAt, state.deadline) : null,
    lastSeq,
    startedAt: state.startedAt,
    finishedAt: state.finishedAt,
  };
}

const VIEW_FIELDS: Array<keyof RunView> = [
  'status',
  'currentStep',
  'outputs',
  'attempts',
  'result',
  'wakeAt',
  'lastSeq',
  'startedAt',
  'finishedAt',
];

/** The first field where a stored view differs from the replayed one, as one readable line; null when equal. */
export function compareViews(stored: RunView, replayed: RunView): string | null {
  for (const f of VIEW_FIELDS) {
    if (!deepEqualCanonical(stored[f] ?? null, replayed[f] ?? null)) {
      return `${f}: stored ${canonicalJson(stored[f] ?? null)}, replayed ${canonicalJson(replayed[f] ?? null)}`;
    }
    // read as the same doubles, but the table shows other digits (src/domain/exact-numbers.ts)
    const inexact = inexactNumberOf(stored[f]);
    if (inexact !== null) return `${f}: stored with the number ${inexact.length > 40 ? `${inexact.slice(0, 40)}…` : inexact}, which the log never recorded (it reads as ${Number(inexact)})`;
  }
  return null;
}

function earlier(dueAt: string, deadline: string | null): string {
  return deadline !== null && Date.parse(deadline) < Date.parse(dueAt) ? deadline : dueAt;
}
