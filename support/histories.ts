import path from 'node:path';
import type { WorkflowDefinition } from '../src/domain/definition';
import type { RecordedEvent } from '../src/domain/events';

/*
 * Golden histories (Temporal-style replay tests): run logs recorded by the
 * engine and checked in under features/fixtures/histories/.
 */

export const HISTORIES = path.resolve(__dirname, '..', 'features', 'fixtures', 'histories');

export interface RecordedHistory {
  name: string;
  description: string;
  recordedWith: string;
  runId: string;
  definition: WorkflowDefinition;
  events: RecordedEvent[];
}
