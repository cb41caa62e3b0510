/*
 * postgres_changes bindings: ids, event and filter matching, and the JSON shape of
 * WAL values (what the real server gets by casting each value to jsonb).
 * See src/realtime/README.md.
 */

export type ChangeType = 'INSERT' | 'UPDATE' | 'DELETE';
export type FilterOp = 'eq' | 'neq' | 'lt' | 'lte' | 'gt' | 'gte' | 'in';

export interface ParsedFilter {
  column: string;
  op: FilterOp;
  /** one value, or the list of `in.(a,b)` */
  values: string[];
}

export interface PgBinding {
  /** integer id echoed in the join reply and listed in `ids` of matching changes */
  id: number;
  event: '*' | ChangeType;
  /** null: any schema */
  schema: string | null;
  /** null: any table of the schema */
  table: string | null;
  filter: ParsedFilter | null;
  /** why this binding can never match (bad filter); reported in the `system` message */
  error: string | null;
  /** the filter as the client wrote it (what the binding weighs) */
  filterText: string | null;
  /** the client's entry (its event, schema, table and filter) plus id, as echoed in the join reply */
  echo: Record<string, unknown>;
}

/** A binding's filter is short: an `in` list takes at most MAX_IN_VALUES values, a uuid is 36 characters. */
export const MAX_FILTER_LENGTH = 4096;
/** Supabase's own limit for the values of an `in` filter */
export const MAX_IN_VALUES = 100;
const ECHOED = ['event', 'schema', 'table', 'filter'] as const;

/** FNV-1a over the canonical params, cut to 27 bits like Erlang's phash2 range: identical bindings share an id. */
export function bindingId(req: Record<string, unknown>): number {
  // only text counts: anything else a client puts there (a deep object, say) is not a binding's parameter
  const canon = JSON.stringify(ECHOED.map((k) => (typeof req[k] === 'string' ? req[k] : null)));
  let h = 0x811c9dc5;
  for (let i = 0; i < canon.length; i++) {
    h ^= canon.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h & 0x7ffffff;
}

export function parseBinding(req: unknown): PgBinding {
  const r = (req && typeof req === 'object' ? req : {}) as Record<string, unknown>;
  const id = bindingId(r);
  const ev = typeof r.event === 'string' ? r.event.toUpperCase() : '*';
  const event = ev === 'INSERT' || ev === 'UPDATE' || ev === 'DELETE' ? ev : '*';
  const schemaRaw = typeof r.schema === 'string' && r.schema !== '' ? r.schema : 'public';
  const tableRaw = typeof r.table === 'string' && r.table !== '' ? r.table : null;
  let filter: ParsedFilter | null = null;
  let error: string | null = null;
  if (typeof r.filter === 'string' && r.filter !== '') {
    try {
      filter = parseFilter(r.filter);
    } catch (e) {
      error = (e as Error).message;
    }
  }
  return {
    id,
    event,
    schema: schemaRaw === '*' ? null : schemaRaw,
    table: tableRaw === '*' ? null : tableRaw,
    filter,
    error,
    filterText: typeof r.filter === 'string' ? r.filter : null,
    // what the client needs to match the reply to its bindings, and nothing else it sent
    echo: { ...Object.fromEntries(ECHOED.filter((k) => typeof r[k] === 'string').map((k) => [k, r[k]])), id },
  };
}

const OPS: FilterOp[] = ['eq', 'neq', 'lt', 'lte', 'gt', 'gte', 'in'];

/** `column=op.value`, op one of eq neq lt lte gt gte in (`in.(a,b,"c,d")`): the filters realtime v2.78 supports. */
export function parseFilter(text: string): ParsedFilter {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error(`Error parsing \`filter\` params: ${text}`);
  const column = text.slice(0, eq).trim();
  const rest = text.slice(eq + 1);
  const dot = rest.indexOf('.');
  const op = (dot > 0 ? rest.slice(0, dot) : rest) as FilterOp;
  if (!OPS.includes(op) || dot < 0) throw new Error(`Error parsing \`filter\` params: ${text}`);
  const value = rest.slice(dot + 1);
  if (op !== 'in') return { column, op, values: [unquote(value)] };
  const m = /^\((.*)\)$/s.exec(value.trim());
  if (!m) throw new Error(`Error parsing \`filter\` params: ${text}`);
  const values = splitList(m[1]);
  if (values.length > MAX_IN_VALUES) throw new Error(`Error parsing \`filter\` params: an in filter takes at most ${MAX_IN_VALUES} values`);
  return { column, op, values };
}

function unquote(v: string): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1).replace(/\\(.)/g, '$1') : v;
}

function splitList(body: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (quoted) {
      if (c === '\\' && i + 1 < body.length) cur += body[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      out.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  if (cur.trim() !== '' || out.length > 0) out.push(cur.trim());
  return out;
}

const NUMERIC = new Set(['int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'oid']);
const TIMES = new Set(['timestamptz', 'timestamp', 'date']);

/** Compare a WAL text value with a filter value as the column's type would: −1, 0, 1, or null when incomparable. */
export function compareTyped(typname: string, wal: string, value: string): number | null {
  if (NUMERIC.has(typname)) {
    const a = Number(wal);
    const b = Number(value);
    if (Number.isNaN(a) || Number.isNaN(b)) return null;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (TIMES.has(typname)) {
    const a = Date.parse(String(walToJson(typname, wal)));
    const b = Date.parse(value);
    if (Number.isNaN(a) || Number.isNaN(b)) return null;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (typname === 'bool') {
    const t = (s: string) => ['t', 'true', '1', 'yes', 'on'].includes(s.toLowerCase());
    return t(wal) === t(value) ? 0 : t(wal) ? 1 : -1;
  }
  const a = typname === 'uuid' ? wal.toLowerCase() : wal;
  const b = typname === 'uuid' ? value.toLowerCase() : value;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Does this row (WAL text values) satisfy the filter? A NULL column never matches. */
export function filterMatches(f: ParsedFilter, typname: string, wal: string | null | undefined): boolean {
  if (wal === null || wal === undefined) return false;
  const c = (v: string) => compareTyped(typname, wal, v);
  switch (f.op) {
    case 'eq':
      return c(f.values[0]) === 0;
    case 'neq': {
      const r = c(f.values[0]);
      return r !== null && r !== 0;
    }
    case 'lt':
      return c(f.values[0]) === -1;
    case 'lte': {
      const r = c(f.values[0]);
      return r === -1 || r === 0;
    }
    case 'gt':
      return c(f.values[0]) === 1;
    case 'gte': {
      const r = c(f.values[0]);
      return r === 1 || r === 0;
    }
    case 'in':
      return f.values.some((v) => c(v) === 0);
  }
}

/**
 * A WAL text value as the JSON value `to_jsonb(value::type)` would give: numbers, booleans,
 * json/jsonb and 1-D arrays native, timestamps in ISO form, everything else the text itself.
 */
export function walToJson(typname: string, text: string | null | undefined): unknown {
  if (text === null || text === undefined) return null;
  if (typname.startsWith('_')) {
    const items = parsePgArray(text);
    return items ? items.map((v) => walToJson(typname.slice(1), v)) : text;
  }
  switch (typname) {
    case 'int2':
    case 'int4':
    case 'oid': {
      const n = Number(text);
      return Number.isFinite(n) ? n : text;
    }
    case 'int8':
    case 'numeric':
    case 'float4':
    case 'float8': {
      const n = Number(text);
      if (!Number.isFinite(n)) return text; // NaN / Infinity stay strings, as in jsonb
      if (typname === 'int8' && !Number.isSafeInteger(n)) return text;
      return n;
    }
    case 'bool':
      return text === 't' || text === 'true';
    case 'json':
    case 'jsonb':
      try {
        return JSON.parse(text);
      } catch {
        return text;
      }
    case 'timestamptz': {
      // "2025-01-01 10:00:00.123456+00" → "2025-01-01T10:00:00.123456+00:00"
      const t = text.replace(' ', 'T');
      return /[+-]\d\d$/.test(t) ? `${t}:00` : t;
    }
    case 'timestamp':
      return text.replace(' ', 'T');
    default:
      return text;
  }
}

/** A one-dimensional Postgres array literal → its elements (NULL → null); null when not a simple 1-D array. */
export function parsePgArray(text: string): Array<string | null> | null {
  if (!text.startsWith('{') || !text.endsWith('}')) return null;
  const body = text.slice(1, -1);
  if (body === '') return [];
  const out: Array<string | null> = [];
  let i = 0;
  while (i <= body.length) {
    if (body[i] === '{') return null; // multi-dimensional
    if (body[i] === '"') {
      let v = '';
      i++;
      while (i < body.length && body[i] !== '"') {
        if (body[i] === '\\') i++;
        v += body[i++];
      }
      i++; // closing quote
      out.push(v);
    } else {
      let j = body.indexOf(',', i);
      if (j < 0) j = body.length;
      const v = body.slice(i, j).trim();
      out.push(v === 'NULL' ? null : v);
      i = j;
    }
    if (i < body.length && body[i] !== ',') return null;
    i++;
  }
  return out;
}

/** commit time from pgoutput (µs since the Unix epoch) → "YYYY-MM-DDTHH:MM:SS.mmmZ" */
export function commitTimestamp(micros: bigint): string {
  return new Date(Number(micros / 1000n)).toISOString();
}
