import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { canonicalJson } from '../domain/canonical';
import { keptAsSent, nestedDeeperThan } from '../domain/json-exact';
import type { HttpOutcome, HttpRequestPrepared } from '../domain/events';
import { BodyBlocks } from '../security/http-limits';
import { Redactor, SecretValue } from '../security/redact';

/*
 * The worker's side of an http_call: send one prepared request exactly as it
 * was recorded, and turn whatever happens into an outcome to record. It uses
 * node:http directly (not fetch) for three things fetch cannot do here: check
 * every address a host name resolves to before connecting (no calls into
 * private networks unless the project allows them), stop reading an answer
 * once it is longer than what is recorded, and send the recorded bytes as is.
 */

/** Headers worth keeping in the log; the rest (dates, connection details) is noise. */
const KEPT_RESPONSE_HEADERS = ['content-type', 'location', 'retry-after', 'idempotency-key', 'x-request-id'];

/** Longer answers are cut while they stream in: the log records what the step needs, not an unbounded blob. */
export const MAX_RECORDED_BODY_BYTES = 1024 * 1024;

/** the error code of a request whose headers node cannot send; it is not tried again (src/domain/decider.ts) */
export const HEADER_INVALID = 'HEADER_INVALID';

// jsonb cannot hold NUL or unpaired surrogates; an answer containing them must still be recordable
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * A JSON answer is recorded as JSON only when that is what it says: nested at most this deep, no number with more
 * digits than a double keeps, no key twice in one object (src/domain/json-exact.ts); otherwise it is kept as its text.
 * An id of 20 digits (as APIs with 64-bit ids send them) was recorded rounded, {"id": 12345678901234567890} as
 * 12345678901234567000, and a next step reading steps.create.body.id acted on another object.
 *
 * How deep a JSON answer may nest and still be recorded as JSON (as a webhook body: src/intake/server.ts MAX_BODY_DEPTH).
 * An answer of `[[[[…]]]]` nested 100,000 deep (200 kB) parsed, and then the walks that make it storable and redact it
 * overflowed the stack outside any try: the worker process ended, and the run, never recorded, took down each
 * worker that claimed it next, sending its request again every time. A deeper answer is kept as its text.
 */
export const MAX_ANSWER_DEPTH = 64;

/** How many members the objects of a parsed JSON value hold together (walked without recursion). */
function membersOf(value: unknown): number {
  let members = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    const children = Array.isArray(v) ? v : Object.values(v);
    if (!Array.isArray(v)) members += children.length;
    for (const child of children) if (child !== null && typeof child === 'object') stack.push(child);
  }
  return members;
}

export function storable(v: unknown): unknown {
  if (typeof v === 'string') return v.replace(UNSTORABLE, '\uFFFD');
  if (Array.isArray(v)) return v.map(storable);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(UNSTORABLE, '\uFFFD'), storable(x)]));
  }
  return v;
}

export interface SendContext {
  /** the run's project's secrets, opened: header references resolve against them, and every answer is redacted of them */
  secrets: readonly SecretValue[];
  /** private, loopback and link-local addresses may be called (a project setting; off by default) */
  allowPrivateTargets: boolean;
  maxBodyBytes?: number;
}

export const NO_SECRETS: SendContext = { secrets: [], allowPrivateTargets: true };

/** The exact bytes of a recorded request's body: recorded text (semantics 2), or the canonical JSON of a recorded body (semantics 1). */
export function requestBodyText(req: HttpRequestPrepared['data']): string | null {
  if (req.bodyText !== undefined) return req.bodyText;
  return req.body === null || req.body === undefined || req.method === 'GET' ? null : canonicalJson(req.body);
}

const PRIVATE = new net.BlockList();
for (const [net4, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as Array<[string, number]>) PRIVATE.addSubnet(net4, bits, 'ipv4');
for (const [net6, bits] of [['::', 128], ['::1', 128], ['64:ff9b:1::', 48], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8]] as Array<[string, number]>) PRIVATE.addSubnet(net6, bits, 'ipv6');

/** An IPv6 address as its eight 16-bit groups (null: not one). */
function ipv6Groups(address: string): number[] | null {
  if (net.isIPv6(address) === false) return null;
  let text = address.toLowerCase();
  // a dotted IPv4 tail is two groups
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number);
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const front = head ? head.split(':') : [];
  const back = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = tail === undefined ? front : [...front, ...Array(8 - front.length - back.length).fill('0'), ...back];
  return groups.length === 8 ? groups.map((g) => parseInt(g, 16)) : null;
}

/**
 * The IPv4 address an IPv6 address reaches, where it is one written into it: IPv4-mapped (::ffff:0:0/96),
 * IPv4-translated (::ffff:0:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16). Only
 * the first was read as its IPv4 address: http://[64:ff9b::a00:5]/ was called as a public address, and on a network
 * with NAT64 (an IPv6-only cloud subnet) it is 10.0.0.5; [::7f00:1] and [2002:a9fe:a9fe::] the same.
 */
export function embeddedIPv4(address: string): string | null {
  const g = ipv6Groups(address);
  if (!g) return null;
  const v4 = (hi: number, lo: number): string => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  const zero = (from: number, to: number): boolean => g.slice(from, to).every((x) => x === 0);
  if (zero(0, 5) && g[5] === 0xffff) return v4(g[6], g[7]);
  if (zero(0, 4) && g[4] === 0xffff && g[5] === 0) return v4(g[6], g[7]);
  // (:: and ::1 are IPv6's own, checked as such)
  if (zero(0, 6) && (g[6] !== 0 || g[7] > 1)) return v4(g[6], g[7]);
  if (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6)) return v4(g[6], g[7]);
  if (g[0] === 0x2002) return v4(g[1], g[2]);
  return null;
}

/** Why an address may not be called without the project's leave, or null when it may. */
export function privateAddressReason(address: string): string | null {
  const ip = embeddedIPv4(address) ?? address;
  const family = net.isIP(ip);
  if (family === 0) return null;
  return PRIVATE.check(ip, family === 4 ? 'ipv4' : 'ipv6') ? `${address} is a private, loopback, link-local or reserved address` : null;
}

class Forbidden extends Error {
  readonly code = 'TARGET_FORBIDDEN';
}

/** dns.lookup, refusing private answers: the check happens on the very address that will be connected to. */
function guardedLookup(allowPrivate: boolean): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, options as dns.LookupAllOptions, (err, addresses: unknown, family?: number) => {
      if (err) return (callback as (e: Error) => void)(err);
      const list = Array.isArray(addresses) ? (addresses as dns.LookupAddress[]) : [{ address: addresses as string, family: family ?? 4 }];
      if (!allowPrivate) {
        for (const a of list) {
          const why = privateAddressReason(a.address);
          if (why) return (callback as (e: Error) => void)(new Forbidden(`${hostname} resolves to ${why}; this project does not allow private targets`));
        }
      }
      if (Array.isArray(addresses)) (callback as (e: null, a: dns.LookupAddress[]) => void)(null, list);
      else (callback as (e: null, a: string, f: number) => void)(null, list[0].address, list[0].family);
    });
  };
}

/**
 * Send one prepared request. Never throws: a refused target, a network
 * failure or a timeout is an outcome to record like any response. Whatever is
 * recorded (answer, headers, error message) is redacted of the project's secrets.
 */
export async function sendRequest(req: HttpRequestPrepared['data'], ctx: SendContext = NO_SECRETS): Promise<{ outcome: HttpOutcome; durationMs: number }> {
  const started = performance.now();
  const redactor = new Redactor(ctx.secrets);
  const done = (outcome: HttpOutcome): { outcome: HttpOutcome; durationMs: number } => ({
    outcome: redactor.redactJson(outcome),
    durationMs: Math.round(performance.now() - started),
  });
  const error = (code: string, message: string) => done({ kind: 'error', code: String(storable(code)), message: String(storable(message)) });

  // headers: literal values, secret references resolved now; the engine's key wins over a user header of that name
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.toLowerCase() === 'idempotency-key') continue;
    if (typeof value === 'string') headers[name] = value;
    else {
      const secret = ctx.secrets.find((s) => s.name === value.secret);
      if (!secret) return error('SECRET_MISSING', `the project has no secret "${value.secret}" (the request was not sent)`);
      headers[name] = `${value.prefix ?? ''}${secret.value}`;
    }
  }
  headers['idempotency-key'] = req.idempotencyKey;
  // node refuses to send a header value with a character beyond Latin-1 or a control character, by throwing: a secret
  // such as "pässwörd-€uro" (which `secrets set` took) left its run running for ever, its worker failing every try.
  // The request is not sent and the step fails, naming the header but not its value (it may be a secret)
  for (const [name, value] of Object.entries(headers)) {
    try {
      http.validateHeaderName(name);
      http.validateHeaderValue(name, value);
    } catch {
      return error(HEADER_INVALID, `the header ${JSON.stringify(name.slice(0, 100))} holds a character HTTP cannot carry (header values are Latin-1 text without control characters); the request was not sent`);
    }
  }
  const bodyText = requestBodyText(req);
  const body = bodyText === null ? null : Buffer.from(bodyText, 'utf8');
  if (body && req.bodyText === undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';

  let url: URL;
  try {
    url = new URL(req.url);
  } catch {
    return error('BAD_URL', 'the request URL cannot be parsed');
  }
  const literal = url.hostname.replace(/^\[|\]$/g, '');
  if (!ctx.allowPrivateTargets && net.isIP(literal)) {
    const why = privateAddressReason(literal);
    if (why) return error('TARGET_FORBIDDEN', `${why}; this project does not allow private targets`);
  }

  const maxBytes = ctx.maxBodyBytes ?? MAX_RECORDED_BODY_BYTES;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: { outcome: HttpOutcome; durationMs: number }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const client = url.protocol === 'https:' ? https : http;
    let request: http.ClientRequest;
    // (whatever else node refuses to send as it is asked is an outcome too: this function never throws)
    try {
      request = client.request(url, { method: req.method, headers, lookup: guardedLookup(ctx.allowPrivateTargets) }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        let truncated = false;
        // gathered into blocks as it arrives: a target answering in chunks of one byte (1 MiB of them, in 6 MB of
        // chunked framing) was held as a million Buffers, and one such answer grew the worker by 400 MB
        const blocks = new BodyBlocks();
        const complete = (): void => {
          const rest = blocks.rest();
          if (rest) chunks.push(rest);
          const text = Buffer.concat(chunks).toString('utf8');
          const kept: Record<string, string> = {};
          for (const h of KEPT_RESPONSE_HEADERS) {
            const v = res.headers[h];
            if (v !== undefined) kept[h] = Array.isArray(v) ? v.join(', ') : v;
          }
          let parsed: unknown = text;
          if (!truncated && (res.headers['content-type'] ?? '').includes('json')) {
            try {
              parsed = JSON.parse(text);
              if (nestedDeeperThan(parsed, MAX_ANSWER_DEPTH) || keptAsSent(text, membersOf(parsed)) !== null) parsed = text;
            } catch {
              parsed = text;
            }
          }
          // a body cut short is kept as text, and may end in the first characters of a secret the cut fell inside
          if (truncated) parsed = redactor.redactCutText(String(storable(parsed)));
          const outcome: HttpOutcome = { kind: 'response', status: res.statusCode ?? 0, headers: storable(kept) as Record<string, string>, body: storable(parsed) };
          if (truncated) outcome.truncated = true;
          finish(done(outcome));
        };
        res.on('data', (chunk: Buffer) => {
          if (truncated) return;
          if (size + chunk.length > maxBytes) {
            // enough: keep the start, stop reading the rest
            chunks.push(...blocks.add(chunk.subarray(0, maxBytes - size)));
            size = maxBytes;
            truncated = true;
            complete();
            res.destroy();
            return;
          }
          for (const block of blocks.add(chunk)) chunks.push(block);
          size += chunk.length;
        });
        res.on('end', complete);
        res.on('error', (e) => finish(error((e as NodeJS.ErrnoException).code ?? 'ERROR', e.message)));
      });
    } catch (e) {
      settled = true;
      resolve(error((e as NodeJS.ErrnoException).code ?? 'ERROR', `the request could not be sent: ${(e as Error).message}`));
      return;
    }
    const timer = setTimeout(() => {
      finish(error('TIMEOUT', `no answer within ${req.timeoutMs} ms`));
      request.destroy();
    }, req.timeoutMs);
    request.on('error', (e: NodeJS.ErrnoException) => finish(error(e.code ?? e.name ?? 'ERROR', e.message)));
    if (body) request.end(body);
    else request.end();
  });
}
