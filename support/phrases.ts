/*
 * Phrase tables of the step vocabulary that the catalogue (scripts/steps-doc.js) lists as they are defined:
 * kept apart from support/parameter-types.ts, which needs cucumber's runtime to load.
 */

/**
 * A {disruption} is what the crash-point sweep does to a run at each crash
 * point: the worker crashes there by itself, is SIGKILLed from outside while
 * paused there, or one of the database faults lands while it is paused there.
 */
export const DISRUPTIONS = {
  'its worker dies': 'crash',
  'its worker is killed from outside': 'kill',
  "the database drops the engine's connections": 'drop-connections',
  'the network to the database is cut': 'sever',
  'the network to the database goes silent': 'blackhole',
  'the database crashes and restarts': 'db-restart',
} as const;
export type Disruption = (typeof DISRUPTIONS)[keyof typeof DISRUPTIONS];

/*
 * The database's own defences, weakened by someone who owns it: each phrase
 * with the SQL that does it, what `verify --all` must then name and, for what
 * outlives the scenario's database, the SQL that undoes it.
 */
export const WEAKENINGS = {
  'switches off row-level security on the runs': { sql: 'ALTER TABLE runs DISABLE ROW LEVEL SECURITY', named: /table runs changed: row-level security is off \(it was on\)/ },
  'opens a second door through row-level security': {
    sql: 'CREATE POLICY every_project ON run_events TO meshhook_engine USING (true)',
    named: /policy every_project on run_events was added behind the engine's back/,
  },
  "switches off the run log's append-only protection": {
    sql: 'ALTER TABLE run_events DISABLE TRIGGER run_events_no_update_delete',
    named: /trigger run_events_no_update_delete on run_events is disabled \(it was enabled\)/,
  },
  "replaces the run log's gap-free check with one that lets anything through": {
    sql: 'CREATE OR REPLACE FUNCTION run_events_check_seq() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$',
    named: /function run_events_check_seq\(\) was replaced/,
  },
  // roles belong to the whole server, not the scenario's database: put back when the scenario ends
  "lets the engine's role bypass row-level security": {
    sql: 'ALTER ROLE meshhook_engine BYPASSRLS',
    undo: 'ALTER ROLE meshhook_engine NOBYPASSRLS',
    named: /role meshhook_engine changed: bypassing row-level security is on \(it was off\)/,
  },
  'drops the link between events and their run': {
    sql: 'ALTER TABLE run_events DROP CONSTRAINT run_events_run_fkey',
    named: /constraint run_events_run_fkey on run_events is gone/,
  },
} as const;
export type Weakening = (typeof WEAKENINGS)[keyof typeof WEAKENINGS];
