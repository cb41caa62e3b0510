import { readFileSync } from 'node:fs';

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
