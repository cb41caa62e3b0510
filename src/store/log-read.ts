import { types as pgTypes, type Pool, type PoolClient } from 'pg';
import { assertProjectId, inProject } from '../db/scope';
import type { RecordedEvent } from '../domain/events';
import { parseJsonExact } from '../domain/exact-numbers';

/*
 * Reading the run log: one run's events at once (the intake, the CLI), or a
 * run or a whole project page by page through a cursor (replay, verify,
 * rebuild), so memory stays flat however long the log is. Every read happens
 * in a transaction that acts for the run's project.
 */

export interface RowEvent {
  project_id: string;
  run_id: string;
  seq: number;
  type: string;
  version: number;
  payload: unknown;
  /** as text in ISO form when read with eventTypes(), else as pg parses it */
  recorded_at: Date | string;
  prev_hash: string;
  hash: string;
  kid: string | null;
}

/** A log row as an event; the run and project may be given when the query did not read them for every row. */
export function rowToEvent(r: RowEvent, runId: string = r.run_id, project: string = r.project_id): RecordedEvent {
  return {
    runId,
    project,
    seq: r.seq,
    type: r.type as RecordedEvent['type'],
    version: r.version,
    data: r.payload as RecordedEvent['data'],
    recordedAt: typeof r.recorded_at === 'string' ? r.recorded_at : r.recorded_at.toISOString(),
    prevHash: r.prev_hash,
    hash: r.hash,
    kid: r.kid,
  };
}

const TIMESTAMPTZ = 1184;
const JSONB = 3802;
const parseTimestamptz = pgTypes.getTypeParser(TIMESTAMPTZ, 'text') as (text: string) => Date;

/*
 * How event rows are read: as pg reads them, except that a timestamp comes as
 * the ISO text an event holds. The events of one batch share their time, so
 * the text of the row before is kept and a repeat costs no Date and no text.
 */
export function eventTypes(): { getTypeParser: typeof pgTypes.getTypeParser } {
  let lastText = '';
  let lastIso = '';
  const isoOf = (text: string): string => {
    if (text !== lastText) {
      lastIso = parseTimestamptz(text).toISOString();
      lastText = text;
    }
    return lastIso;
  };
  return {
    getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
      format === 'binary' ? pgTypes.getTypeParser(oid, format) : oid === TIMESTAMPTZ ? isoOf : oid === JSONB ? parseJsonExact : pgTypes.getTypeParser(oid, 'text')) as typeof pgTypes.getTypeParser,
  };
}

/** As pg reads rows, except that a jsonb holding a number no double holds is remembered (src/domain/exact-numbers.ts). */
export function exactJsonTypes(): { getTypeParser: typeof pgTypes.getTypeParser } {
  return {
    getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
      oid === JSONB && format !== 'binary' ? parseJsonExact : pgTypes.getTypeParser(oid, format as 'text')) as typeof pgTypes.getTypeParser,
  };
}

export type Queryable = Pool | PoolClient;

/** A run's events, read inside a transaction that already acts for the run's project. */
export async function readEvents(db: Queryable, projectId: string, runId: string, page?: { after: number; limit: number }): Promise<RecordedEvent[]> {
  // the project named as well as enforced by row-level security: a second wall should the policies be weakened
  const { rows } = await db.query<RowEvent>({
    text: `SELECT ${EVENT_COLUMNS} FROM run_events WHERE run_id = $1 AND project_id = $2${page ? ' AND seq > $3' : ''} ORDER BY seq${page ? ' LIMIT $4' : ''}`,
    values: page ? [runId, projectId, page.after, page.limit] : [runId, projectId],
    types: eventTypes(),
  });
  return rows.map((r) => rowToEvent(r));
}

const EVENT_COLUMNS = 'project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid';

/**
 * Read a log page by page through a cursor, inside a transaction that already
 * acts for the project: one run's events in order, or (without `runId`)
 * every event of the project ordered by run and number. Each page is handed
 * to `onPage` while the next is already on its way, so memory holds about two
 * pages however long the log is. Returns how many events were read.
 */
export async function streamEvents(
  c: PoolClient,
  which: { projectId: string; runId?: string; range?: RunRange },
  onPage: (events: RecordedEvent[]) => void | Promise<void>,
  pageSize = PAGE_SIZE,
): Promise<number> {
  const { projectId, runId, range } = which;
  // the project (and the run, when it is one run) is known: it is not read again for every row
  const columns = `${runId ? '' : 'run_id, '}seq, type, version, payload, recorded_at, prev_hash, hash, kid`;
  return streamRows<RowEvent>(
    c,
    // the project is named even for one run: an event whose project was changed behind the engine's back is then
    // missing from its run (a break verify reports) even for a caller whose role is not held to one project
    { runId, projectId, range },
    columns,
    (rows) => onPage(rows.map((r) => rowToEvent(r, runId ?? r.run_id, projectId))),
    pageSize,
    eventTypes(),
  );
}

/** What folding a log needs of each event: no chain, no time (replay recomputes neither). */
export type FoldedEvent = Pick<RecordedEvent, 'seq' | 'type' | 'version' | 'data'>;

/**
 * One run's events as `streamEvents` reads them, but only the columns a fold
 * needs: replay reads no ids, hashes or timestamps, and turns no timestamp into text.
 */
export async function streamFoldedEvents(c: PoolClient, runId: string, onPage: (events: FoldedEvent[]) => void): Promise<number> {
  return streamRows<FoldedEvent>(c, { runId }, 'seq, type, version, payload AS data', onPage);
}

/*
 * 1,000 rows a page: with the next page asked for while this one is worked on,
 * larger pages were no faster (npm run bench:replay) and live longer, so more
 * of them outlive a young-generation collection and wait for a full one.
 */
const PAGE_SIZE = 1_000;

/** A slice of a project's runs by id, from `from` (included) to `to` (excluded); an end left out is open. */
export interface RunRange {
  from?: string;
  to?: string;
}

/** The SQL condition on `column` for a range of run ids (checked to be UUIDs, so they are inlined). */
export function rangeCondition(column: string, range: RunRange | undefined): string {
  if (range?.from) assertProjectId(range.from);
  if (range?.to) assertProjectId(range.to);
  return `${range?.from ? ` AND ${column} >= '${range.from}'` : ''}${range?.to ? ` AND ${column} < '${range.to}'` : ''}`;
}

async function streamRows<R>(
  c: PoolClient,
  which: { runId?: string; projectId?: string; range?: RunRange },
  columns: string,
  onPage: (rows: R[]) => void | Promise<void>,
  pageSize = PAGE_SIZE,
  types?: ReturnType<typeof eventTypes>,
): Promise<number> {
  // ids are checked to be UUIDs, so they are safe to inline (DECLARE takes no parameters)
  const { runId, projectId } = which;
  if (runId) assertProjectId(runId);
  if (projectId) assertProjectId(projectId);
  const where = runId
    ? `run_id = '${runId}'${projectId ? ` AND project_id = '${projectId}'` : ''} ORDER BY seq`
    : `project_id = '${projectId}'${rangeCondition('run_id', which.range)} ORDER BY run_id, seq`;
  const declare = `DECLARE meshhook_log NO SCROLL CURSOR FOR SELECT ${columns} FROM run_events WHERE ${where}`;
  // a log is read through an index already in its order (a run's by its key, a project's by (project_id,
  // run_id, seq)): before a table has statistics the planner guesses a few hundred rows and would fetch them by
  // bitmap and sort them, on disk when there are 100,000 (the setting is for this one statement; plans are made
  // at DECLARE)
  await c.query(`SET LOCAL enable_bitmapscan = off; ${declare}; SET LOCAL enable_bitmapscan = DEFAULT`);
  const fetch = (): Promise<{ rows: R[] }> => c.query({ text: `FETCH ${pageSize} FROM meshhook_log`, types }) as unknown as Promise<{ rows: R[] }>;
  let read = 0;
  const ask = (): Promise<{ rows: R[] }> => {
    const p = fetch();
    // awaited below; marked handled so a failure while the last page is worked on is not an unhandled rejection
    p.catch(() => undefined);
    return p;
  };
  let next = ask();
  for (;;) {
    const { rows } = await next;
    const more = rows.length === pageSize;
    // ask for the next page before working on this one: Postgres prepares it meanwhile
    if (more) next = ask();
    read += rows.length;
    await onPage(rows);
    if (!more) break;
  }
  await c.query('CLOSE meshhook_log');
  return read;
}

/** A run's events; an empty list when the project holds no such run. */
export async function loadEvents(db: Pool, projectId: string, runId: string): Promise<RecordedEvent[]> {
  return inProject(db, projectId, (c) => readEvents(c, projectId, runId));
}
