import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { RealtimeServer, withoutTrailingSlashes } from '../../src/realtime/server';
import { signAnonKey, signProjectToken } from '../../src/realtime/tokens';
import { WebSocket } from 'ws';
import { Visibility } from '../../src/realtime/auth';

/*
 * Hostile requests against the live-log server that need no database: the server is started against an
 * address where nothing listens (nothing here joins postgres_changes, so the feed never starts).
 */

const SECRET = 'unit-test-secret-with-at-least-32-characters';
let server: RealtimeServer;
let port: number;

/** one raw HTTP request; resolves with the status line and how long the answer took */
function raw(request: string | Buffer): Promise<{ status: string; ms: number; text: string }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    s.on('data', (d) => (text += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve({ status: text.split('\r\n')[0], ms: Date.now() - t0, text }));
    s.write(request);
  });
}

describe('live-log server against hostile requests', () => {
  before(async () => {
    server = new RealtimeServer({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', jwtSecret: SECRET, port: 0, broadcastBodyBudgetBytes: 2 * 1024 * 1024 });
    port = (await server.start()).port;
  });
  after(() => server.close());

  it('trims trailing slashes without a regex', () => {
    assert.equal(withoutTrailingSlashes('/a/b///'), '/a/b');
    assert.equal(withoutTrailingSlashes('/a/b'), '/a/b');
    assert.equal(withoutTrailingSlashes('///'), '');
  });

  it('answers a path of thousands of slashes at once (it used to hold the event loop for a second)', async () => {
    const path = `/x${'/'.repeat(15_000)}a`;
    for (const method of ['GET', 'POST']) {
      const r = await raw(`${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      assert.match(r.status, / 404 /);
      assert.ok(r.ms < 250, `${method} took ${r.ms} ms`);
    }
    const upgrade = await raw(`GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    assert.match(upgrade.status, / 404 /);
    assert.ok(upgrade.ms < 1250, `upgrade took ${upgrade.ms} ms`);
  });

  it('REST broadcast: the sender is checked and the body bounded before a byte of it is held', async () => {
    const anon = await signAnonKey({ secret: SECRET });
    const head = (headers: string, length: number) => `POST /realtime/v1/api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers}Content-Length: ${length}\r\n\r\n`;
    // no token: 401 at once, without waiting for the megabyte announced (which never comes)
    const noToken = await raw(head('', 1024 * 1024));
    assert.match(noToken.status, / 401 /);
    // a body announced over the limit: 413 at once
    const tooBig = await raw(head(`apikey: ${anon}\r\n`, 1024 * 1024 + 1));
    assert.match(tooBig.status, / 413 /);
    // slow senders hold their share of the budget (2 MiB here) until they finish or go; beyond it: 503
    const slow = [0, 1].map(() => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      s.write(head(`apikey: ${anon}\r\n`, 1024 * 1024) + 'x'.repeat(1000));
      return s;
    });
    await new Promise((r) => setTimeout(r, 200));
    const busy = await raw(head(`apikey: ${anon}\r\n`, 20) + '{"messages":[]}     ');
    assert.match(busy.status, / 503 /);
    assert.match(busy.text, /retry-after: 1/i);
    for (const s of slow) s.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const after = await raw(head(`apikey: ${anon}\r\nConnection: close\r\n`, 20) + '{"messages":[]}     ');
    assert.match(after.status, / 202 /, 'the budget is given back when a sender goes');
  });

  it('REST broadcast: a sender that hangs up while its token is checked holds nothing of the budget', async () => {
    const anon = await signAnonKey({ secret: SECRET });
    const head = (headers: string, length: number) => `POST /realtime/v1/api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers}Content-Length: ${length}\r\n\r\n`;
    for (let i = 0; i < 6; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => undefined);
        s.on('close', () => resolve());
        s.write(head(`apikey: ${anon}\r\n`, 1024 * 1024), () => s.resetAndDestroy());
      });
    }
    await new Promise((r) => setTimeout(r, 200));
    const after = await raw(head(`apikey: ${anon}\r\nConnection: close\r\n`, 20) + '{"messages":[]}     ');
    assert.match(after.status, / 202 /, 'the shares of senders that went were given back');
  });

  it("REST broadcast: slow senders holding the public anon key fill at most a quarter of the body budget, not every project's", async () => {
    const roomy = new RealtimeServer({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', jwtSecret: SECRET, port: 0, broadcastBodyBudgetBytes: 8 * 1024 * 1024 });
    const roomyPort = (await roomy.start()).port;
    const held: net.Socket[] = [];
    try {
      const anon = await signAnonKey({ secret: SECRET });
      const project = await signProjectToken({ secret: SECRET, projectId: '00000000-0000-4000-8000-000000000001', ttlSec: 600 });
      const head = (headers: string, length: number) => `POST /realtime/v1/api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers}Content-Length: ${length}\r\n\r\n`;
      const send = (request: string) =>
        new Promise<string>((resolve) => {
          const s = net.connect(roomyPort, '127.0.0.1');
          let text = '';
          s.on('data', (d) => (text += d.toString('latin1')));
          s.on('error', () => resolve(text));
          s.on('close', () => resolve(text));
          s.write(request);
        });
      for (let i = 0; i < 8; i++) {
        const s = net.connect(roomyPort, '127.0.0.1');
        s.on('error', () => undefined);
        s.write(head(`apikey: ${anon}\r\n`, 1024 * 1024) + 'x'.repeat(100));
        held.push(s);
      }
      await new Promise((r) => setTimeout(r, 300));
      const anonAgain = await send(head(`apikey: ${anon}\r\nConnection: close\r\n`, 20) + '{"messages":[]}     ');
      assert.match(anonAgain.split('\r\n')[0], / 503 /, 'the anon key has used its share');
      const mine = await send(head(`apikey: ${anon}\r\nAuthorization: Bearer ${project}\r\nConnection: close\r\n`, 20) + '{"messages":[]}     ');
      assert.match(mine.split('\r\n')[0], / 202 /, "a project's sender still gets through");
    } finally {
      for (const s of held) s.destroy();
      await roomy.close();
    }
  });

  it('a CONNECT is answered 405 and let go even if the client never hangs up: it does not keep a connection slot', async () => {
    const tight = new RealtimeServer({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', jwtSecret: SECRET, port: 0, maxConnections: 1 });
    const tightPort = (await tight.start()).port;
    const tunnel = net.connect({ port: tightPort, host: '127.0.0.1', allowHalfOpen: true });
    try {
      let answer = '';
      tunnel.on('data', (d) => (answer += d.toString('latin1')));
      tunnel.on('error', () => undefined);
      tunnel.write('CONNECT 127.0.0.1:5432 HTTP/1.1\r\nHost: 127.0.0.1:5432\r\n\r\n');
      await new Promise((r) => tunnel.once('end', r));
      assert.match(answer, /^HTTP\/1\.1 405 /);
      // the client keeps its side open; the server's slot comes back all the same
      await new Promise((r) => setTimeout(r, 1500));
      const health = await fetch(`http://127.0.0.1:${tightPort}/healthcheck`).then((r) => r.status, (e) => String(e));
      assert.equal(health, 200);
    } finally {
      tunnel.destroy();
      await tight.close();
    }
  });

  it("presence: a topic's state is bounded, and a diff is sent to every member as one shared frame", async () => {
    const anon = await signAnonKey({ secret: SECRET });
    const open = async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/realtime/v1/websocket?apikey=${anon}&vsn=1.0.0`);
      const frames: any[] = [];
      ws.on('message', (d) => frames.push(JSON.parse(String(d))));
      await new Promise((r) => ws.once('open', r));
      return { ws, frames };
    };
    const until = async (what: string, probe: () => unknown) => {
      for (const deadline = Date.now() + 5000; !probe(); await new Promise((r) => setTimeout(r, 10))) if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    };
    const members = await Promise.all(Array.from({ length: 40 }, open));
    for (const [i, m] of members.entries()) m.ws.send(JSON.stringify({ topic: 'realtime:room', event: 'phx_join', ref: 'j', join_ref: 'j', payload: { config: { presence: { enabled: true, key: `k${i}` } } } }));
    await until('joined', () => members.every((m) => m.frames.some((f) => f.event === 'phx_reply' && f.ref === 'j')));
    const big = 'x'.repeat(30_000);
    const track = (i: number, ref: string, payload: unknown) => members[i].ws.send(JSON.stringify({ topic: 'realtime:room', event: 'presence', ref, join_ref: 'j', payload: { type: 'presence', event: 'track', payload } }));
    const answer = (i: number, ref: string) => members[i].frames.find((f) => f.event === 'phx_reply' && f.ref === ref)?.payload;
    // 1 MiB a topic: 34 members of 30 kB fit, the 35th does not
    for (let i = 0; i < 35; i++) track(i, `t${i}`, { big });
    await until('tracks answered', () => answer(34, 't34'));
    assert.equal(answer(0, 't0').status, 'ok');
    assert.equal(answer(34, 't34').status, 'error');
    assert.match(answer(34, 't34').response.reason, /presence state of this topic is full/);
    // a member may replace its own presence at the limit, and an untrack makes room for another
    track(0, 'again', { big, v: 2 });
    await until('replaced', () => answer(0, 'again'));
    assert.equal(answer(0, 'again').status, 'ok');
    members[1].ws.send(JSON.stringify({ topic: 'realtime:room', event: 'presence', ref: 'u', join_ref: 'j', payload: { type: 'presence', event: 'untrack' } }));
    await until('untracked', () => answer(1, 'u'));
    track(34, 't34b', { big });
    await until('tracked after room was made', () => answer(34, 't34b'));
    assert.equal(answer(34, 't34b').status, 'ok');
    // every member saw the same diffs
    const diffs = (i: number) => members[i].frames.filter((f) => f.event === 'presence_diff').map((f) => JSON.stringify(f));
    await until('diffs delivered', () => diffs(39).length === diffs(2).length && diffs(2).length > 0);
    assert.deepEqual(diffs(39), diffs(2));
    for (const m of members) m.ws.terminate();
  });

  it("presence: one socket's presences over all its topics are bounded too", async () => {
    const anon = await signAnonKey({ secret: SECRET });
    const ws = new WebSocket(`ws://127.0.0.1:${port}/realtime/v1/websocket?apikey=${anon}&vsn=1.0.0`);
    const frames: any[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    await new Promise((r) => ws.once('open', r));
    const answer = async (ref: string) => {
      for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 10))) {
        const f = frames.find((x) => x.event === 'phx_reply' && x.ref === ref);
        if (f) return f.payload;
      }
      throw new Error(`no reply ${ref}`);
    };
    const big = 'x'.repeat(30_000);
    for (let i = 0; i < 6; i++) {
      ws.send(JSON.stringify({ topic: `realtime:t${i}`, event: 'phx_join', ref: `j${i}`, join_ref: `j${i}`, payload: { config: { presence: { enabled: true } } } }));
      assert.equal((await answer(`j${i}`)).status, 'ok');
    }
    const track = (i: number, ref: string) => ws.send(JSON.stringify({ topic: `realtime:t${i}`, event: 'presence', ref, join_ref: `j${i}`, payload: { type: 'presence', event: 'track', payload: { big } } }));
    for (let i = 0; i < 5; i++) track(i, `t${i}`);
    assert.deepEqual(await Promise.all([0, 1, 2, 3].map((i) => answer(`t${i}`).then((p) => p.status))), ['ok', 'ok', 'ok', 'ok']);
    assert.match((await answer('t4')).response.reason, /presence payloads of this socket may weigh at most 128 KiB/);
    // leaving a topic gives its presence back
    ws.send(JSON.stringify({ topic: 'realtime:t0', event: 'phx_leave', ref: 'l0', join_ref: 'j0', payload: {} }));
    await answer('l0');
    track(5, 't5');
    assert.equal((await answer('t5')).status, 'ok');
    ws.terminate();
  });

  it('catalog answers a join is announced with are asked once, not once per binding nor once per table name', async () => {
    let queries = 0;
    const pool = {
      query: async (text: string) =>
        (queries++, text.includes('pg_publication_tables') ? { rowCount: 1, rows: [{ schemaname: 'public', tablename: 'run_events' }] } : { rowCount: 1, rows: [{}] }),
    };
    const v = new Visibility(pool as never);
    const answers = await Promise.all(Array.from({ length: 100 }, () => v.published('supabase_realtime', 'public', 'run_events')));
    assert.ok(answers.every(Boolean));
    for (let i = 0; i < 100; i++) assert.equal(await v.roleExists('authenticated'), true);
    assert.equal(queries, 2);
    // names a client made up are answered from the publication's list: no question each
    const madeUp = await Promise.all(Array.from({ length: 1000 }, (_, i) => v.published('supabase_realtime', 'public', `nope_${i}`)));
    assert.ok(madeUp.every((x) => x === false));
    assert.equal(await v.published('supabase_realtime', 'public', null), true);
    assert.equal(await v.published('supabase_realtime', 'other', null), false);
    assert.equal(await v.published('supabase_realtime', null, 'run_events'), true);
    assert.equal(queries, 2, 'another table name is not another question');
  });

  it('a CONNECT is answered 405 with why, not a connection that just ends', async () => {
    const r = await raw('CONNECT 127.0.0.1:5432 HTTP/1.1\r\nHost: 127.0.0.1:5432\r\n\r\n');
    assert.match(r.status, / 405 /);
    assert.match(r.text, /not a proxy/);
  });
});
