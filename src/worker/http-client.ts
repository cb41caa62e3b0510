import type { HttpOutcome, HttpRequestPrepared } from '../domain/events';

/** Headers worth keeping in the log; the rest (dates, connection details) is noise. */
const KEPT_RESPONSE_HEADERS = ['content-type', 'location', 'retry-after', 'idempotency-key', 'x-request-id'];

/**
 * Send one prepared request. Never throws: a network failure or timeout is an
 * outcome to record like any response.
 */
export async function sendRequest(req: HttpRequestPrepared['data']): Promise<{ outcome: HttpOutcome; durationMs: number }> {
  const started = performance.now();
  const headers: Record<string, string> = { ...req.headers, 'idempotency-key': req.idempotencyKey };
  let body: string | undefined;
  if (req.body !== null && req.body !== undefined && req.method !== 'GET') {
    body = JSON.stringify(req.body);
    headers['content-type'] = headers['content-type'] ?? 'application/json';
  }
  try {
    const res = await fetch(req.url, { method: req.method, headers, body, signal: AbortSignal.timeout(req.timeoutMs) });
    const text = await res.text();
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
    return { outcome: { kind: 'response', status: res.status, headers: kept, body: parsed }, durationMs: Math.round(performance.now() - started) };
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const code = err.name === 'TimeoutError' ? 'TIMEOUT' : (err.cause?.code ?? err.name ?? 'ERROR');
    const message = err.name === 'TimeoutError' ? `no answer within ${req.timeoutMs} ms` : (err.cause?.message ?? err.message);
    return { outcome: { kind: 'error', code, message }, durationMs: Math.round(performance.now() - started) };
  }
}
