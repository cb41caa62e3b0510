import * as net from 'node:net';

/**
 * A TCP proxy that sits between the engine and Postgres so scenarios can inject
 * network faults (cut connections, partitions, latency, unreachable database).
 *
 * Semantics worth knowing:
 * - blackhole(): bytes keep being *read* from both sides but are buffered, not
 *   delivered; new connections are accepted and held without an upstream. This
 *   is a network partition as seen by a client: writes "succeed", nothing comes back.
 * - heal(): models a transient partition ending (TCP retransmission / SYN retry):
 *   held connections are connected upstream and every buffered byte is flushed in
 *   order. A client that gave up in the meantime has closed its socket, and its
 *   pair was already dropped, so nothing stale is delivered for it.
 * - sever(): connections are cut with a TCP RST where possible, so clients see
 *   ECONNRESET rather than a polite EOF, like a crashed network path.
 * - refuse(): new connections are accepted and immediately reset; existing
 *   connections are left alone. heal() lifts it.
 */

export interface TcpProxyOptions {
  targetHost: string;
  targetPort: number;
  /** Defaults to 0: the OS picks a free port. */
  listenPort?: number;
}

export interface TcpProxyStats {
  /** Connections taken into forwarding (held ones included, refused ones not). */
  accepted: number;
  /** Connection pairs cut by sever(). */
  severed: number;
  /** Pairs currently open (held ones included). */
  active: number;
  /** Bytes delivered to the upstream (client -> target). */
  bytesUp: number;
  /** Bytes delivered to clients (target -> client). */
  bytesDown: number;
  /** Connections reset on arrival because of refuse(). */
  refused: number;
}

type Item = { chunk: Buffer; releaseAt: number } | { end: true; releaseAt: number };

interface Direction {
  queue: Item[];
  timer: NodeJS.Timeout | null;
  /** Set while the destination socket asked us to wait for 'drain'. */
  waitingDrain: boolean;
  /** The end marker has been written: nothing more goes this way. */
  finished: boolean;
}

interface Pair {
  id: number;
  client: net.Socket;
  upstream: net.Socket | null;
  /** Upstream socket exists and has connected. */
  upstreamReady: boolean;
  up: Direction;
  down: Direction;
  /** FIN received from that side. */
  clientEnded: boolean;
  upstreamEnded: boolean;
  closed: boolean;
}

const HOST = '127.0.0.1';

function newDirection(): Direction {
  return { queue: [], timer: null, waitingDrain: false, finished: false };
}

/** Abort a socket with an RST when it is connected, otherwise just destroy it. */
function cut(sock: net.Socket | null): void {
  if (!sock || sock.destroyed) return;
  try {
    if (sock.connecting || sock.pending) sock.destroy();
    else sock.resetAndDestroy();
  } catch {
    sock.destroy();
  }
}

export class TcpProxy {
  private readonly opts: TcpProxyOptions;
  private server: net.Server | null = null;
  private listeningPort: number | null = null;
  private readonly pairs = new Set<Pair>();
  private nextId = 1;
  private latencyMs = 0;
  private blackholed = false;
  private refusing = false;
  private readonly counters = { accepted: 0, severed: 0, bytesUp: 0, bytesDown: 0, refused: 0 };

  constructor(opts: TcpProxyOptions) {
    this.opts = opts;
  }

  start(): Promise<number> {
    if (this.server) return Promise.reject(new Error('TcpProxy already started'));
    // allowHalfOpen: we propagate FIN per direction ourselves, after queued bytes drain.
    const server = net.createServer({ allowHalfOpen: true }, (sock) => this.onConnection(sock));
    this.server = server;
    return new Promise<number>((resolve, reject) => {
      const onError = (err: Error) => {
        this.server = null;
        reject(err);
      };
      server.once('error', onError);
      server.listen(this.opts.listenPort ?? 0, HOST, () => {
        server.off('error', onError);
        const addr = server.address() as net.AddressInfo;
        this.listeningPort = addr.port;
        resolve(addr.port);
      });
    });
  }

  get port(): number {
    if (this.listeningPort === null) throw new Error('TcpProxy not started: call start() first');
    return this.listeningPort;
  }

  sever(): void {
    for (const pair of [...this.pairs]) {
      this.counters.severed++;
      this.teardown(pair, true);
    }
  }

  blackhole(): void {
    this.blackholed = true;
  }

  setLatency(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new Error(`TcpProxy.setLatency: invalid ms ${ms}`);
    this.latencyMs = ms;
  }

  heal(): void {
    this.latencyMs = 0;
    this.blackholed = false;
    this.refusing = false;
    for (const pair of [...this.pairs]) {
      if (!pair.upstream) this.connectUpstream(pair);
      // Queued items were stamped with the old latency; release them now.
      for (const dir of [pair.up, pair.down]) {
        for (const item of dir.queue) item.releaseAt = 0;
        if (dir.timer) clearTimeout(dir.timer);
        dir.timer = null;
      }
      this.pump(pair, 'up');
      this.pump(pair, 'down');
    }
  }

  refuse(): void {
    this.refusing = true;
  }

  stats(): TcpProxyStats {
    return { ...this.counters, active: this.pairs.size };
  }

  close(): Promise<void> {
    const server = this.server;
    for (const pair of [...this.pairs]) this.teardown(pair, false);
    if (!server) return Promise.resolve();
    this.server = null;
    return new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onConnection(client: net.Socket): void {
    client.on('error', () => {
      /* handled via 'close' */
    });
    if (this.refusing) {
      this.counters.refused++;
      cut(client);
      return;
    }
    client.setNoDelay(true);
    this.counters.accepted++;
    const pair: Pair = {
      id: this.nextId++,
      client,
      upstream: null,
      upstreamReady: false,
      up: newDirection(),
      down: newDirection(),
      clientEnded: false,
      upstreamEnded: false,
      closed: false,
    };
    this.pairs.add(pair);

    client.on('data', (chunk: Buffer) => this.enqueue(pair, 'up', { chunk, releaseAt: Date.now() + this.latencyMs }));
    client.on('end', () => {
      pair.clientEnded = true;
      // A held client that hangs up has given up; don't resurrect it on heal().
      if (!pair.upstream) return this.teardown(pair, false);
      this.enqueue(pair, 'up', { end: true, releaseAt: Date.now() + this.latencyMs });
    });
    client.on('close', () => this.onSocketClose(pair, 'client'));

    if (!this.blackholed) this.connectUpstream(pair);
  }

  private connectUpstream(pair: Pair): void {
    if (pair.closed || pair.upstream) return;
    const upstream = net.connect({ host: this.opts.targetHost, port: this.opts.targetPort, allowHalfOpen: true });
    pair.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on('error', () => {
      /* handled via 'close' */
    });
    upstream.on('connect', () => {
      pair.upstreamReady = true;
      this.pump(pair, 'up');
    });
    upstream.on('data', (chunk: Buffer) =>
      this.enqueue(pair, 'down', { chunk, releaseAt: Date.now() + this.latencyMs }),
    );
    upstream.on('end', () => {
      pair.upstreamEnded = true;
      this.enqueue(pair, 'down', { end: true, releaseAt: Date.now() + this.latencyMs });
    });
    upstream.on('close', () => this.onSocketClose(pair, 'upstream'));
  }

  private onSocketClose(pair: Pair, side: 'client' | 'upstream'): void {
    // A socket that closed after both its FINs is done cleanly; bytes it sent may
    // still sit in the (latency) queue for the other side, so leave the pair alone.
    // Any other close (reset, error, upstream unreachable) takes the other side down.
    const clean =
      side === 'client' ? pair.clientEnded && pair.down.finished : pair.upstreamEnded && pair.up.finished;
    if (!clean) this.teardown(pair, false);
  }

  private enqueue(pair: Pair, which: 'up' | 'down', item: Item): void {
    if (pair.closed) return;
    pair[which].queue.push(item);
    this.pump(pair, which);
  }

  private pump(pair: Pair, which: 'up' | 'down'): void {
    const dir = pair[which];
    if (pair.closed || dir.timer || dir.waitingDrain || this.blackholed) return;
    const dest = which === 'up' ? pair.upstream : pair.client;
    if (!dest || (which === 'up' && !pair.upstreamReady) || dest.destroyed) return;

    while (dir.queue.length > 0) {
      const head = dir.queue[0];
      const wait = head.releaseAt - Date.now();
      if (wait > 0) {
        // Head-of-line wait keeps chunk order even if latency changes mid-stream.
        dir.timer = setTimeout(() => {
          dir.timer = null;
          this.pump(pair, which);
        }, wait);
        return;
      }
      dir.queue.shift();
      if ('end' in head) {
        dir.finished = true;
        dest.end();
        continue;
      }
      if (which === 'up') this.counters.bytesUp += head.chunk.length;
      else this.counters.bytesDown += head.chunk.length;
      if (!dest.write(head.chunk)) {
        dir.waitingDrain = true;
        dest.once('drain', () => {
          dir.waitingDrain = false;
          this.pump(pair, which);
        });
        return;
      }
    }
    if (pair.up.finished && pair.down.finished) this.teardown(pair, false);
  }

  private teardown(pair: Pair, abrupt: boolean): void {
    if (pair.closed) return;
    pair.closed = true;
    this.pairs.delete(pair);
    for (const dir of [pair.up, pair.down]) {
      if (dir.timer) clearTimeout(dir.timer);
      dir.timer = null;
      dir.queue.length = 0;
    }
    if (abrupt || !(pair.up.finished && pair.down.finished)) {
      cut(pair.client);
      cut(pair.upstream);
    } else {
      // Both FINs were delivered; let the sockets finish closing on their own.
      pair.client.destroySoon();
      pair.upstream?.destroySoon();
    }
  }
}
