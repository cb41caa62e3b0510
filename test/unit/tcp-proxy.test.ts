import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { once } from 'node:events';
import { TcpProxy } from '../../src/faults/tcp-proxy';

// Echo server standing in for Postgres; it tracks its sockets so after() can close everything.
let echo: net.Server;
let echoPort: number;
const echoSockets = new Set<net.Socket>();
const clients = new Set<net.Socket>();
let proxy: TcpProxy;

before(async () => {
  echo = net.createServer((s) => {
    echoSockets.add(s);
    s.on('error', () => {});
    s.on('close', () => echoSockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as net.AddressInfo).port;
});

after(async () => {
  for (const s of echoSockets) s.destroy();
  await new Promise<void>((r) => echo.close(() => r()));
});

afterEach(async () => {
  for (const c of clients) c.destroy();
  clients.clear();
  await proxy?.close();
});

async function newProxy(): Promise<TcpProxy> {
  proxy = new TcpProxy({ targetHost: '127.0.0.1', targetPort: echoPort });
  await proxy.start();
  return proxy;
}

async function connect(port: number): Promise<net.Socket> {
  const c = net.connect(port, '127.0.0.1');
  clients.add(c);
  c.on('error', () => {});
  await once(c, 'connect');
  return c;
}

/** Resolves on 'close' with the error seen, if any (events.once would reject on 'error'). */
function closed(c: net.Socket): Promise<string | null> {
  let err: string | null = null;
  c.on('error', (e: NodeJS.ErrnoException) => (err = e.code ?? e.message));
  return new Promise((resolve) => c.once('close', () => resolve(err)));
}

/** Resolves with the bytes received within ms, or null if nothing came. */
function readWithin(c: net.Socket, ms: number): Promise<string | null> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      c.off('data', onData);
      resolve(null);
    }, ms);
    const onData = (b: Buffer) => {
      clearTimeout(t);
      resolve(b.toString());
    };
    c.once('data', onData);
  });
}

async function roundTrip(c: net.Socket, msg: string, ms = 2000): Promise<string | null> {
  const p = readWithin(c, ms);
  c.write(msg);
  return p;
}

describe('TcpProxy', () => {
  test('forwards bytes both ways and counts them', async () => {
    const p = await newProxy();
    assert.ok(p.port > 0);
    const c = await connect(p.port);
    assert.equal(await roundTrip(c, 'hello'), 'hello');
    const s = p.stats();
    assert.equal(s.accepted, 1);
    assert.equal(s.active, 1);
    assert.equal(s.bytesUp, 5);
    assert.equal(s.bytesDown, 5);
  });

  test('sever() cuts every open pair at once and keeps accepting', async () => {
    const p = await newProxy();
    const a = await connect(p.port);
    const b = await connect(p.port);
    assert.equal(await roundTrip(a, 'a'), 'a');
    assert.equal(await roundTrip(b, 'b'), 'b');
    const cuts = Promise.all([closed(a), closed(b)]);
    p.sever();
    // RST, not FIN: the engine must see a broken connection, not a polite goodbye.
    assert.deepEqual(await cuts, ['ECONNRESET', 'ECONNRESET']);
    assert.equal(p.stats().severed, 2);
    assert.equal(p.stats().active, 0);
    const c = await connect(p.port);
    assert.equal(await roundTrip(c, 'again'), 'again');
  });

  test('blackhole() swallows traffic and holds new connections; heal() flushes them', async () => {
    const p = await newProxy();
    const existing = await connect(p.port);
    assert.equal(await roundTrip(existing, 'x'), 'x');
    p.blackhole();
    assert.equal(await roundTrip(existing, 'lost?', 300), null);
    const held = await connect(p.port); // the accept succeeds: clients hang, not fail
    assert.equal(await roundTrip(held, 'held', 300), null);

    const flushedExisting = readWithin(existing, 2000);
    const flushedHeld = readWithin(held, 2000);
    p.heal();
    assert.equal(await flushedExisting, 'lost?');
    assert.equal(await flushedHeld, 'held');
    const fresh = await connect(p.port);
    assert.equal(await roundTrip(fresh, 'fresh'), 'fresh');
  });

  test('setLatency(150) delays a round trip by at least 150ms, in order', async () => {
    const p = await newProxy();
    const c = await connect(p.port);
    p.setLatency(150);
    const t0 = Date.now();
    let got = '';
    const done = new Promise<void>((resolve) =>
      c.on('data', (b) => {
        got += b.toString();
        if (got.length >= 6) resolve();
      }),
    );
    c.write('ab');
    c.write('cd');
    c.write('ef');
    await done;
    assert.ok(Date.now() - t0 >= 150, `round trip took ${Date.now() - t0}ms`);
    assert.equal(got, 'abcdef');
    // heal() releases chunks still waiting out the old latency instead of letting them finish it.
    p.setLatency(1000);
    const late = readWithin(c, 2000);
    const t2 = Date.now();
    c.write('q');
    await new Promise((r) => setTimeout(r, 50));
    p.heal();
    assert.equal(await late, 'q');
    assert.ok(Date.now() - t2 < 500, `healed chunk took ${Date.now() - t2}ms`);
    p.setLatency(0);
    const t1 = Date.now();
    assert.equal(await roundTrip(c, 'z'), 'z');
    assert.ok(Date.now() - t1 < 150);
  });

  test('a clean shutdown under latency delivers every byte before the FIN', async () => {
    const p = await newProxy();
    p.setLatency(60);
    const c = await connect(p.port);
    let got = '';
    c.on('data', (b) => (got += b.toString()));
    const err = closed(c);
    c.end('bye');
    await new Promise((r) => c.once('end', r));
    assert.equal(got, 'bye');
    assert.equal(await err, null);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(p.stats().active, 0);
  });

  test('refuse() closes new connections immediately; heal() lifts it', async () => {
    const p = await newProxy();
    p.refuse();
    const c = net.connect(p.port, '127.0.0.1');
    clients.add(c);
    let data = '';
    c.on('data', (b) => (data += b.toString()));
    await closed(c);
    assert.equal(data, '');
    assert.equal(p.stats().refused, 1);
    assert.equal(p.stats().accepted, 0);
    p.heal();
    const ok = await connect(p.port);
    assert.equal(await roundTrip(ok, 'up'), 'up');
  });

  test('close() leaves no TCP handles or timers of its own behind', async () => {
    const p = await newProxy();
    const c = await connect(p.port);
    p.setLatency(50);
    c.write('pending'); // a chunk still waiting in the latency queue
    p.blackhole();
    await connect(p.port); // a held connection
    await p.close();
    for (const s of clients) s.destroy();
    clients.clear();
    for (const s of echoSockets) s.destroy();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 20));
    const tcp = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap');
    assert.deepEqual(tcp, []);
    await p.close(); // idempotent
  });
});
