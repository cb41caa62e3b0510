import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SupabaseClient } from '@supabase/supabase-js';
import { LiveLog, type CaughtUpEvent } from '../../src/realtime/live-log';

/*
 * LiveLog's bookkeeping without a server: a fake channel drives the statuses, system messages and
 * live inserts that supabase-js would deliver, in the orders that matter.
 */

const RUN = '00000000-0000-0000-0000-00000000000a';

class FakeChannel {
  pg: ((p: unknown) => void) | null = null;
  system: ((p: unknown) => void) | null = null;
  status: ((s: string, e?: Error) => void) | null = null;
  filter: Record<string, unknown> | null = null;
  removed = false;
  on(type: string, filter: Record<string, unknown>, cb: (p: unknown) => void): this {
    if (type === 'postgres_changes') {
      this.pg = cb;
      this.filter = filter;
    }
    if (type === 'system') this.system = cb;
    return this;
  }
  subscribe(cb: (s: string, e?: Error) => void): this {
    this.status = cb;
    return this;
  }
  /** the server's join reply and system ok */
  join(): void {
    this.status!('SUBSCRIBED');
    this.system!({ extension: 'postgres_changes', status: 'ok', message: 'Subscribed to PostgreSQL' });
  }
  insert(seq: number, run = RUN): void {
    this.pg!({ eventType: 'INSERT', new: { run_id: run, seq, type: `T${seq}`, payload: { seq }, hash: `h${seq}` }, old: {} });
  }
}

function fakeClient(ch: FakeChannel): SupabaseClient {
  return {
    channel: () => ch,
    removeChannel: async () => {
      ch.removed = true;
      return 'ok';
    },
  } as unknown as SupabaseClient;
}

/** the "history API": the events committed so far */
function history() {
  const events: CaughtUpEvent[] = [];
  let calls = 0;
  return {
    events,
    add(seq: number, run = RUN) {
      events.push({ runId: run, seq, type: `T${seq}`, data: { seq }, hash: `h${seq}` });
    },
    get calls() {
      return calls;
    },
    catchUp: async (known: Map<string, number>) => {
      calls++;
      await new Promise((r) => setImmediate(r));
      return events.filter((e) => e.seq > (known.get(e.runId) ?? 0));
    },
  };
}

const flush = () => new Promise((r) => setTimeout(r, 5));

describe('LiveLog bookkeeping', () => {
  it('subscribes to INSERTs on public.run_events with the scope filter', async () => {
    const ch = new FakeChannel();
    const h = history();
    const a = new LiveLog({ client: fakeClient(ch), scope: { projectId: 'p-1' }, catchUp: h.catchUp });
    assert.deepEqual(ch.filter, { event: 'INSERT', schema: 'public', table: 'run_events', filter: 'project_id=eq.p-1' });
    const ch2 = new FakeChannel();
    const b = new LiveLog({ client: fakeClient(ch2), scope: { runId: RUN }, catchUp: h.catchUp });
    assert.equal(ch2.filter!.filter, `run_id=eq.${RUN}`);
    await a.close();
    await b.close();
    assert.ok(ch.removed && ch2.removed);
  });

  it('is ready after SUBSCRIBED, the system ok and a catch-up; merges catch-up and live events by (run, seq)', async () => {
    const ch = new FakeChannel();
    const h = history();
    h.add(1);
    h.add(2);
    const live = new LiveLog({ client: fakeClient(ch), scope: { projectId: 'p' }, catchUp: h.catchUp });
    let ready = false;
    void live.ready().then(() => (ready = true));
    ch.status!('SUBSCRIBED');
    await flush();
    assert.equal(ready, false, 'waits for the system ok');
    ch.system!({ extension: 'postgres_changes', status: 'ok' });
    await live.ready(1000);
    assert.deepEqual(live.eventsOf(RUN).map((e) => [e.seq, e.via]), [
      [1, 'catch-up'],
      [2, 'catch-up'],
    ]);
    h.add(3);
    ch.insert(3);
    ch.insert(3); // a duplicate is held once
    h.add(4);
    ch.insert(4);
    await live.waitUntilHolds(RUN, 4, 1000);
    assert.deepEqual(live.eventsOf(RUN).map((e) => [e.seq, e.via]), [
      [1, 'catch-up'],
      [2, 'catch-up'],
      [3, 'live'],
      [4, 'live'],
    ]);
    assert.deepEqual(live.gaps, []);
    assert.equal(live.compareWith(RUN, h.events.map((e) => ({ seq: e.seq, type: e.type, hash: e.hash }))), null);
  });

  it('a jump while continuously subscribed is a gap; the catch-up it triggers fills the hole', async () => {
    const ch = new FakeChannel();
    const h = history();
    const live = new LiveLog({ client: fakeClient(ch), scope: { projectId: 'p' }, catchUp: h.catchUp });
    ch.join();
    await live.ready(1000);
    h.add(1);
    ch.insert(1);
    h.add(2); // committed, but its live message never comes
    h.add(3);
    ch.insert(3);
    await live.waitUntilHolds(RUN, 3, 1000);
    assert.deepEqual(live.gaps, [{ runId: RUN, expectedSeq: 2, gotSeq: 3 }]);
    assert.equal(live.eventsOf(RUN)[1].via, 'catch-up');
    assert.match(String(live.compareWith(RUN, h.events)), /gap while subscribed: event 2 never arrived live \(event 3 came next/);
  });

  it('a new run whose first live event is not 1 is a gap once the catch-up has run', async () => {
    const ch = new FakeChannel();
    const h = history();
    const live = new LiveLog({ client: fakeClient(ch), scope: { projectId: 'p' }, catchUp: h.catchUp });
    ch.join();
    await live.ready(1000);
    h.add(1);
    h.add(2);
    ch.insert(2);
    await live.waitUntilHolds(RUN, 2, 1000);
    assert.deepEqual(live.gaps, [{ runId: RUN, expectedSeq: 1, gotSeq: 2 }]);
  });

  it('what a reconnect misses is caught up, not a gap', async () => {
    const ch = new FakeChannel();
    const h = history();
    const live = new LiveLog({ client: fakeClient(ch), scope: { projectId: 'p' }, catchUp: h.catchUp });
    ch.join();
    await live.ready(1000);
    h.add(1);
    ch.insert(1);
    ch.status!('CHANNEL_ERROR', new Error('channel error: transport failure'));
    h.add(2);
    h.add(3);
    ch.join(); // rejoin: the server only sends what is committed from now on
    h.add(4);
    ch.insert(4); // may arrive before the rejoin's catch-up is merged
    await live.settled(1000);
    await live.waitUntilHolds(RUN, 4, 1000);
    assert.deepEqual(live.gaps, []);
    assert.equal(live.subscribedCount, 2);
    assert.deepEqual(live.eventsOf(RUN).map((e) => e.via), ['live', 'catch-up', 'catch-up', 'live']);
    assert.equal(live.lastError, 'channel error: transport failure');
  });

  it('a run-scoped log ignores other runs; a failing catch-up is retried', async () => {
    const ch = new FakeChannel();
    const h = history();
    let failures = 1;
    const live = new LiveLog({
      client: fakeClient(ch),
      scope: { runId: RUN },
      catchUp: async (known) => {
        if (failures-- > 0) throw new Error('history API unavailable');
        return h.catchUp(known);
      },
    });
    h.add(1);
    h.add(1, 'other-run');
    ch.join();
    await live.ready(3000);
    ch.insert(1, 'other-run');
    ch.insert(2);
    await live.waitUntilHolds(RUN, 2, 1000);
    assert.deepEqual(live.runIds(), [RUN]);
  });

  it('ready() fails on a system error or a closed channel', async () => {
    const ch = new FakeChannel();
    const live = new LiveLog({ client: fakeClient(ch), scope: { projectId: 'p' }, catchUp: history().catchUp });
    ch.status!('SUBSCRIBED');
    ch.system!({ extension: 'postgres_changes', status: 'error', message: 'Unable to subscribe to changes with given parameters' });
    await assert.rejects(live.ready(1000), /Unable to subscribe/);
    const ch2 = new FakeChannel();
    const closed = new LiveLog({ client: fakeClient(ch2), scope: { projectId: 'p' }, catchUp: history().catchUp });
    ch2.status!('CLOSED');
    await assert.rejects(closed.ready(1000), /closed/);
    await assert.rejects(closed.waitUntilHolds(RUN, 1, 50), /did not hold run .* through event 1 within 50 ms: holds \[\], status CLOSED/);
  });
});
