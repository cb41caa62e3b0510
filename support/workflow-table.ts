import type { WorkflowDefinition } from '../src/domain/definition';

/*
 * Feature files describe workflows as tables a product person can read:
 *
 *   | step  | type      | does                                   | then                |
 *   | map   | transform | {id: order.id, total: order.sum}       | push                |
 *   | push  | http_call | POST the mapped order to /orders        | check               |
 *   | check | branch    | when the total of map is over 100       | review, else done   |
 *   | wait  | delay     | wait 1 hour                             | done                |
 *   | done  | terminate | succeeded                               |                     |
 *
 * This file turns such a table into a definition; the phrases it knows are
 * listed in docs/steps.md.
 */

export interface WorkflowRow {
  step: string;
  type: string;
  does: string;
  then?: string;
}

export class WorkflowTableError extends Error {}

/** Durations in business words: "1 hour", "30 minutes", "2 seconds", "1.5 seconds", "250 milliseconds". */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(milliseconds?|ms|seconds?|s|minutes?|min|hours?|h|days?|d)\s*$/i.exec(text);
  if (!m) throw new WorkflowTableError(`cannot read the duration "${text}" (try "30 seconds", "5 minutes" or "1 hour")`);
  const n = Number(m[1]);
  const unit = m[2].toLowerCase();
  const factor = unit.startsWith('ms') || unit.startsWith('milli') ? 1 : unit.startsWith('s') ? 1000 : unit.startsWith('min') || unit === 'm' ? 60_000 : unit.startsWith('h') ? 3_600_000 : 86_400_000;
  return Math.round(n * factor);
}

/** Table-defined http_call steps retry quickly unless the table says otherwise. */
export const SPEC_RETRY = { maxAttempts: 3, initialDelayMs: 200, multiplier: 2, maxDelayMs: 5_000, jitter: 0.2 };

function literal(value: string): string {
  const v = value.trim().replace(/^"(.*)"$/, '$1');
  if (/^-?\d+(\.\d+)?$/.test(v) || v === 'true' || v === 'false' || v === 'null') return `\`${v}\``;
  return `'${v.replace(/'/g, "\\'")}'`;
}

/**
 * `steps.<id>` as JMESPath reads it: a plain identifier as it is, any other id quoted
 * (unquoted, `steps.map-invoice` would be `steps.map` minus `invoice`).
 */
export function stepRef(id: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(id) ? `steps.${id}` : `steps.${JSON.stringify(id)}`;
}

function condition(does: string): string {
  const raw = /^when `(.+)`$/.exec(does.trim());
  if (raw) return raw[1];
  const answered = /^when (\w[\w-]*) answered (\d{3})$/.exec(does.trim());
  if (answered) return `${stepRef(answered[1])}.status == \`${answered[2]}\``;
  const over = /^when the ([\w.]+) of (\w[\w-]*) is (over|under|at least|at most) (-?[\d.]+)$/.exec(does.trim());
  if (over) {
    const op = { over: '>', under: '<', 'at least': '>=', 'at most': '<=' }[over[3]]!;
    return `${stepRef(over[2])}.${over[1]} ${op} \`${over[4]}\``;
  }
  const is = /^when the ([\w.]+) of (\w[\w-]*) is (not )?(.+)$/.exec(does.trim());
  if (is) return `${stepRef(is[2])}.${is[1]} ${is[3] ? '!=' : '=='} ${literal(is[4])}`;
  throw new WorkflowTableError(
    `cannot read the branch condition "${does}" (try "when push answered 201", "when the total of map is over 100" or "when \`<JMESPath>\`")`,
  );
}

export function tableToDefinition(name: string, rows: WorkflowRow[], targetBaseUrl: string): WorkflowDefinition {
  const leadsTo = new Map<string, string>();
  for (const r of rows) {
    for (const n of (r.then ?? '').split(/,\s*else\s+|\s+or\s+/).map((s) => s.trim()).filter(Boolean)) {
      if (!leadsTo.has(n)) leadsTo.set(n, r.step);
    }
  }
  const typeOf = new Map(rows.map((r) => [r.step, r.type]));
  const steps = rows.map((r): WorkflowDefinition['steps'][number] => {
    const next = r.then?.trim() || undefined;
    const does = r.does.trim();
    switch (r.type) {
      case 'transform':
        return { id: r.step, type: 'transform', expression: does, next };
      case 'http_call': {
        const m = /^(GET|POST|PUT|PATCH|DELETE)\s+(?:(.+?)\s+to\s+)?(\/[^\s,]*)(.*)$/.exec(does);
        if (!m) throw new WorkflowTableError(`cannot read the request "${does}" (try "POST the mapped order to /orders")`);
        const [, method, what, path, rest] = m;
        // the body is what the step before produced, when that was a transform; otherwise the webhook body
        const before = leadsTo.get(r.step);
        const body = method === 'GET' || what === 'nothing' ? undefined : before && typeOf.get(before) === 'transform' ? stepRef(before) : 'input';
        const retry = { ...SPEC_RETRY };
        let timeoutMs = 2_000;
        const attempts = /,\s*up to (\d+) attempts?\b/.exec(rest);
        if (attempts) retry.maxAttempts = Number(attempts[1]);
        const backoff = /,\s*backing off ([\d.]+ \w+)/.exec(rest);
        if (backoff) {
          // a stated backoff stays near what it says: a short exponential run, capped at 4×
          retry.initialDelayMs = parseDuration(backoff[1]);
          retry.maxDelayMs = retry.initialDelayMs * 4;
        }
        const timeout = /,\s*at most ([\d.]+ \w+) (?:each|per attempt)/.exec(rest);
        if (timeout) timeoutMs = parseDuration(timeout[1]);
        // `with the "orders-token" secret`: the project's vault secret, sent as a bearer token
        const secret = /\s*with the "([a-z][a-z0-9_-]*)" secret/.exec(rest);
        // anything else is a misspelt option, which would otherwise quietly leave the default in place
        let leftover = rest;
        for (const matched of [attempts, backoff, timeout, secret]) if (matched) leftover = leftover.replace(matched[0], '');
        if (leftover.trim())
          throw new WorkflowTableError(
            `cannot read "${leftover.trim()}" in the request "${does}"; a request's options are: with the "<vault name>" secret, up to <n> attempts, backing off <duration>, at most <duration> per attempt`,
          );
        const headers: Record<string, string | { secret: string; prefix?: string }> = secret ? { authorization: { secret: secret[1], prefix: 'Bearer ' } } : {};
        return { id: r.step, type: 'http_call', method: method as 'POST', url: `${targetBaseUrl}${path}`, headers, body, timeoutMs, retry, next };
      }
      case 'branch': {
        const m = /^(\w[\w-]*),\s*else\s+(\w[\w-]*)$/.exec(r.then?.trim() ?? '');
        if (!m) throw new WorkflowTableError(`a branch's "then" reads "<step>, else <step>", not "${r.then ?? ''}"`);
        return { id: r.step, type: 'branch', condition: condition(does), then: m[1], else: m[2] };
      }
      case 'delay': {
        const m = /^wait (.+)$/.exec(does);
        if (!m) throw new WorkflowTableError(`a delay reads "wait <duration>", not "${does}"`);
        return { id: r.step, type: 'delay', durationMs: parseDuration(m[1]), next };
      }
      case 'terminate': {
        const m = /^(succeeded|failed)(?::\s*(.+))?$/.exec(does);
        if (!m) throw new WorkflowTableError(`a terminate step reads "succeeded" or "failed: <reason>", not "${does}"`);
        return { id: r.step, type: 'terminate', status: m[1] as 'succeeded', reason: m[2] };
      }
      default:
        // passed through so that validation names the unknown type
        return { id: r.step, type: r.type, next } as never;
    }
  });
  return { name, steps };
}
