import { readFileSync } from 'node:fs';
import { IncomingMessage } from 'node:http';

/*
 * Limits the engine's two HTTP servers (the webhook intake, the live-log
 * server) share, and how they answer what they refuse.
 *
 * How many connections a listening server holds at once. Every connection
 * takes a file descriptor, and the process needs some of its own: its
 * database connections, the embedded Postgres's pid file that `meshhook up`
 * watches. A flood of idle connections that took them all would make those
 * fail; beyond the cap a new connection is closed as it comes instead.
 */

/** 1,024, or a quarter of this process's open-file limit when that is lower (Linux tells it in /proc). */
export function defaultMaxConnections(): number {
  try {
    const soft = Number(/^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]);
    if (Number.isSafeInteger(soft) && soft > 0) return Math.max(16, Math.min(1024, Math.floor(soft / 4)));
  } catch {
    /* no /proc: the default */
  }
  return 1024;
}

/** The answer to bytes the HTTP parser refused, or to a request that did not arrive in time: [status, reason, code, message]. */
export function clientErrorAnswer(code: string | undefined, headersTimeoutMs: number, requestTimeoutMs: number): [number, string, string, string] {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return [408, 'Request Timeout', 'request_timeout', `the request did not arrive in time: headers are awaited ${Math.round(headersTimeoutMs / 1000)} s, the whole request ${Math.round(requestTimeoutMs / 1000)} s`];
    case 'HPE_HEADER_OVERFLOW':
      return [431, 'Request Header Fields Too Large', 'headers_too_large', "the request's line and headers are larger than this server reads (16 KiB)"];
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return [400, 'Bad Request', 'bad_request', 'the request is not valid HTTP: Content-Length given twice, or together with Transfer-Encoding'];
    case 'HPE_INVALID_CONTENT_LENGTH':
      return [400, 'Bad Request', 'bad_request', 'the request is not valid HTTP: its Content-Length is not a number of bytes'];
    case 'HPE_INVALID_EOF_STATE':
      return [400, 'Bad Request', 'incomplete_request', 'the connection ended before the request was whole'];
    case 'HPE_INVALID_CHUNK_SIZE':
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return [400, 'Bad Request', 'bad_request', 'the request is not valid HTTP: its chunked body is malformed'];
    default:
      return [400, 'Bad Request', 'bad_request', 'the request is not valid HTTP'];
  }
}

/** The raw HTTP answer for bytes the parser refused: JSON, then the connection closes. */
export function clientErrorResponse(status: number, reason: string, json: unknown): string {
  const body = JSON.stringify(json);
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** pieces of a body taken whatever their size (see BodyBlocks.fragmented) */
const FREE_PIECES = 1024;
/** past those, what a body's pieces must weigh on average: a TCP segment is hundreds of bytes, a socket read kilobytes */
export const MIN_PIECE_BYTES = 64;
/** the refusal of a body that came in too many tiny pieces */
export const FRAGMENTED_BODY = `the body is coming in pieces of under ${MIN_PIECE_BYTES} bytes on average (chunked encoding with tiny chunks, or a trickle of tiny writes): send it in larger chunks`;

/**
 * A body's pieces gathered into blocks of `blockBytes` as they arrive. Node hands a chunked body on one piece per
 * chunk, and a sender may make every chunk one byte: a 2 MiB webhook body sent so (to a target that does not even
 * exist; bodies are read before the signature is checked) was collected as two million Buffers and grew the process
 * by 870 MB, within the body budget, which counts bytes. Gathered, a body is held in about its own size however it
 * was cut.
 */
export class BodyBlocks {
  private block: Buffer | null = null;
  private used = 0;
  private pieces = 0;
  private bytes = 0;

  constructor(private readonly blockBytes = 16 * 1024) {}

  /**
   * Whether the body is coming in pieces too small to be worth what each costs: past the first FREE_PIECES, pieces
   * under MIN_PIECE_BYTES long on average. Every piece costs the HTTP parser and the stream about as much whatever its
   * size (2.7 µs: a 2 MiB body of one-byte chunks took 5.6 s of the one event loop), so a sender cutting its body that
   * fine holds the process for far longer than the bytes it sends could otherwise make it.
   */
  get fragmented(): boolean {
    return this.pieces > FREE_PIECES && this.bytes < this.pieces * MIN_PIECE_BYTES;
  }

  /** Take a piece; the blocks it filled, to pass on (none until a block is full). */
  add(piece: Buffer): Buffer[] {
    this.pieces++;
    this.bytes += piece.length;
    // a large piece (the usual case: a socket read) goes on as it is, unless a block is begun
    if (this.used === 0 && piece.length >= this.blockBytes) return [piece];
    const full: Buffer[] = [];
    for (let from = 0; from < piece.length; ) {
      this.block ??= Buffer.allocUnsafe(this.blockBytes);
      const copied = piece.copy(this.block, this.used, from);
      this.used += copied;
      from += copied;
      if (this.used === this.blockBytes) {
        full.push(this.block);
        this.block = null;
        this.used = 0;
      }
    }
    return full;
  }

  /** What is left once the body has ended (null: nothing). */
  rest(): Buffer | null {
    const rest = this.block && this.used > 0 ? this.block.subarray(0, this.used) : null;
    this.block = null;
    this.used = 0;
    return rest;
  }
}

/**
 * A request whose body is gathered into blocks as node's HTTP parser hands it on (`http.createServer({ IncomingMessage:
 * GatheredRequest })`), so that what waits to be read is held in about its own size however finely its sender cut it.
 * Gathered only where it is read, a body waited as pieces while the request's target was looked up: 500 connections
 * sending one-byte chunks held 26,000 Buffers each, and the process grew past 2 GB and spent minutes collecting
 * garbage. Once its pieces are too small (BodyBlocks.fragmented) `fragmented` is set, what was gathered goes on to
 * its reader, which refuses the request, and nothing more of it is kept.
 */
export class GatheredRequest extends IncomingMessage {
  private readonly blocks = new BodyBlocks();
  fragmented = false;

  override push(chunk: any, encoding?: BufferEncoding): boolean {
    if (chunk === null) {
      const rest = this.blocks.rest();
      if (rest) super.push(rest);
      return super.push(null);
    }
    // (the parser is told to stop reading; what it still hands on is dropped, the request is being refused)
    if (this.fragmented) return false;
    if (!Buffer.isBuffer(chunk)) return super.push(chunk, encoding);
    const full = this.blocks.add(chunk);
    // set before what was gathered goes on (its reader may be handed it at once), and at least one block or the
    // rest goes on after it is set, so that the reader sees it
    this.fragmented = this.blocks.fragmented;
    const rest = this.fragmented ? this.blocks.rest() : null;
    let more = true;
    for (const block of rest ? [...full, rest] : full) more = super.push(block);
    return more && !this.fragmented;
  }
}

/**
 * Who a connection comes from, for sharing connections: an IPv4 address (also as IPv4-mapped IPv6), or an IPv6
 * address's /64, which one host is commonly given whole.
 */
export function connectionSource(address: string | undefined): string {
  if (!address) return '';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  if (!address.includes(':')) return address;
  // the first four groups of the address written out in full
  const [head, tail = ''] = address.toLowerCase().split('::');
  const front = head ? head.split(':') : [];
  const back = tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...front, ...Array(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back] : front;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/**
 * Connections shared between the addresses they come from, once they run short: past three quarters of the cap,
 * a new connection from an address (an IPv6 /64) that already holds a quarter of it is closed as it comes. One
 * address opening idle connections (slow headers on the intake, the public anon key on the live-log server) took
 * every connection of the cap, and no one else could connect while they lasted; now it takes at most three
 * quarters of them however many it opens, and the rest are left to others. Under that pressure only: behind a
 * proxy, where every client has the proxy's address, nothing changes until three quarters of the cap are in use.
 */
export function shareConnections(server: import('node:net').Server, maxConnections: number, onRefused?: (source: string, held: number) => void): void {
  const pressure = Math.ceil((maxConnections * 3) / 4);
  const share = Math.max(1, Math.floor(maxConnections / 4));
  const bySource = new Map<string, number>();
  let total = 0;
  // first, before the HTTP server takes the socket up
  server.prependListener('connection', (socket: import('node:net').Socket) => {
    const source = connectionSource(socket.remoteAddress);
    const held = bySource.get(source) ?? 0;
    if (total >= pressure && held >= share) {
      onRefused?.(source, held);
      socket.destroy();
      return;
    }
    total++;
    bySource.set(source, held + 1);
    socket.once('close', () => {
      total--;
      const left = (bySource.get(source) ?? 1) - 1;
      if (left > 0) bySource.set(source, left);
      else bySource.delete(source);
    });
  });
}
