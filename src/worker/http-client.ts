import type { HttpOutcome, HttpRequestPrepared } from '../domain/events';

/** Headers worth keeping in the log; the rest (dates, connection details) is noise. */
const KEPT_RESPONSE_HEADERS = ['content-type', 'location', 'retry-after', 'idempotency-key', 'x-request-id'];

/** Larger answers are cut: the log records what the step needs, not an unbounded blob. */
export const MAX_RECORDED_BODY_BYTES = 1024 * 1024;

// jsonb cannot hold NUL or unpaired surrogates; an answer containing them must still be recordable
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function storable(v: unknown): unknown {
  if (typeof v === 'string') return v.replace(UNSTORABLE, '\uFFFD');
  if (Array.isArray(v)) return v.map(storable);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(UNSTORABLE, '\uFFFD'), storable(x)]));
  }
  return v;
}

/**
 * Send one prepared request. Never throws: a network failure or timeout is an
 * outcome to record like any response.
 */
export async function sendRequest(req: HttpRequestPrepared['data']): Promise<{ outcome: HttpOutcome; durationMs: number }> {
  const started = performance.now();
  // the engine's key wins over any user header of the same name, whatever its capitals
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (k.toLowerCase() !== 'idempotency-key') headers[k] = v;
  headers['idempotency-key'] = req.idempotencyKey;
  let body: string | undefined;
  if (req.body !== null && req.body !== undefined && req.method !== 'GET') {
    body = JSON.stringify(req.body);
    headers['content-type'] = headers['content-type'] ?? 'application/json';
  }
  try {
    const res = await fetch(req.url, { method: req.method, headers, body, signal: AbortSignal.timeout(req.timeoutMs) });
    let text = await res.text();
    if (Buffer.byteLength(text) > MAX_RECORDED_BODY_BYTES) text = Buffer.from(text).subarray(0, MAX_RECORDED_BODY_BYTES).toString('utf8');
    const kept: Record<string, string> = {};
    for (const h of KEPT_RESPONSE_HEADERS) {
      const v = res.headers.get(h);
      if (v !== null) kept[h] = v;
    }
    let parsed: unknown = text;
    if ((res.headers.get('content-type') ?? '').includes('json')) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    return { outcome: { kind: 'response', status: res.status, headers: storable(kept) as Record<string, string>, body: storable(parsed) }, durationMs: Math.round(performance.now() - started) };
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const code = err.name === 'TimeoutError' ? 'TIMEOUT' : (err.cause?.code ?? err.name ?? 'ERROR');
    const message = err.name === 'TimeoutError' ? `no answer within ${req.timeoutMs} ms` : (err.cause?.message ?? err.message);
    return { outcome: { kind: 'error', code: String(storable(code)), message: String(storable(message)) }, durationMs: Math.round(performance.now() - started) };
  }
}
