import { canonicalJson } from '../src/domain/canonical';

/*
 * Two runs of one workflow differ only in what the outside world chose for
 * them: run ids, idempotency keys, ids the order service handed out and
 * times. Normalising those lets a spec say "the same run, without the fault".
 */
export function normalise(value: unknown): unknown {
  if (typeof value === 'string') {
    return value
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<uuid>')
      .replace(/mh_[0-9a-f]{40}/g, '<idempotency-key>')
      .replace(/ord_[0-9a-f]{6,}/g, '<order-id>')
      .replace(/dlv_[\w-]+/g, '<delivery>')
      .replace(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z/g, '<time>');
  }
  if (Array.isArray(value)) return value.map(normalise);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = normalise(v);
    return out;
  }
  return value;
}

export function sameNormalised(a: unknown, b: unknown): boolean {
  return canonicalJson(normalise(a)) === canonicalJson(normalise(b));
}
