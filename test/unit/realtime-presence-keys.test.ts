import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';

/*
 * Hostile round 7: a presence key is any string a client gives (config.presence.key), and the server gathered a
 * topic's presences into plain objects by key, where "constructor", "toString" or "__proto__" are already there.
 * Run in a process of its own: what it found ended the process (the engine's, with `up`).
 */

const SCRIPT = `
const { RealtimeServer } = require('./src/realtime/server');
const { signAnonKey } = require('./src/realtime/tokens');
const { WebSocket } = require('ws');
const SECRET = 'unit-test-secret-with-at-least-32-characters';
process.on('exit', (code) => console.log('exit ' + code));
(async () => {
  const server = new RealtimeServer({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', jwtSecret: SECRET, port: 0 });
  const { port } = await server.start();
  const anon = await signAnonKey({ secret: SECRET });
  const open = () => new Promise((resolve) => { const ws = new WebSocket('ws://127.0.0.1:' + port + '/realtime/v1/websocket?vsn=1.0.0&apikey=' + anon); ws.on('open', () => resolve(ws)); });
  const frames = [];
  const watcher = await open();
  watcher.on('message', (d) => frames.push(JSON.parse(String(d))));
  watcher.send(JSON.stringify({ topic: 'realtime:room', event: 'phx_join', ref: '1', join_ref: '1', payload: { config: { presence: { enabled: true, key: 'watcher' } } } }));
  for (const key of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    const ws = await open();
    const got = [];
    ws.on('message', (d) => got.push(JSON.parse(String(d))));
    ws.send(JSON.stringify({ topic: 'realtime:room', event: 'phx_join', ref: '1', join_ref: '1', payload: { config: { presence: { enabled: true, key } } } }));
    await new Promise((r) => setTimeout(r, 100));
    ws.send(JSON.stringify({ topic: 'realtime:room', event: 'presence', ref: '2', join_ref: '1', payload: { type: 'presence', event: 'track', payload: { who: key } } }));
    await new Promise((r) => setTimeout(r, 100));
    // a late joiner is sent the whole state
    const late = await open();
    const lateFrames = [];
    late.on('message', (d) => lateFrames.push(JSON.parse(String(d))));
    late.send(JSON.stringify({ topic: 'realtime:room', event: 'phx_join', ref: '1', join_ref: '1', payload: { config: { presence: { enabled: true, key: 'late' } } } }));
    await new Promise((r) => setTimeout(r, 100));
    const state = lateFrames.find((f) => f.event === 'presence_state');
    console.log('state ' + key + ' ' + JSON.stringify(state && Object.keys(state.payload)));
    // untracked on leaving
    ws.close();
    await new Promise((r) => setTimeout(r, 150));
    late.close();
  }
  const leaves = frames.filter((f) => f.event === 'presence_diff').map((f) => Object.keys(f.payload.leaves)).flat();
  console.log('leaves ' + JSON.stringify(leaves));
  await server.close();
  process.exit(0);
})();
`;

describe('presence keys', () => {
  it('a presence key named like a property every object has is tracked, listed and untracked like any other', async () => {
    const child = spawn(process.execPath, ['-r', 'sucrase/register/ts', '-e', SCRIPT], { cwd: `${__dirname}/../..`, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0, `the server's process ended with ${code}: ${err.split('\n').find((l) => /Error/.test(l)) ?? err.slice(0, 300)}\n${out}`);
    for (const key of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) assert.ok(out.includes(`state ${key} ["${key}"]`), out);
    assert.match(out, /leaves \["constructor","toString","__proto__","hasOwnProperty"\]/, out);
  });
});
