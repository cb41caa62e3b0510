/**
 * Renders a run's event timeline as a standalone SVG (attach as image/svg+xml to
 * the Cucumber HTML report) or as a plain-text table (terminal / text/plain).
 *
 * The x axis is recorded_at, but events are never drawn closer than MIN_GAP px
 * apart: identical or near-identical timestamps are common (one transaction, one
 * millisecond) and would otherwise stack into an unreadable blot. Where that
 * happens the axis is stretched locally and the chart says so; faults and ticks
 * go through the same mapping so they stay correctly ordered relative to events.
 */

export interface TimelineEvent {
  seq: number;
  type: string;
  recordedAt: Date | string;
  step?: string | null;
}

export interface TimelineFault {
  at: Date | string;
  label: string;
}

export interface TimelineInput {
  title: string;
  events: TimelineEvent[];
  faults: TimelineFault[];
}

const MIN_WIDTH = 1000;
const MAX_WIDTH = 4000;
const LEFT = 160;
// Room for the rotated label of the right-most event.
const RIGHT = 140;
const MIN_GAP = 16;
const LANE_H = 128;
const FAULT_ROW_H = 14;
const FAULT_ROWS = 3;
const LABEL_CHARS = 26;
const LANE_LABEL_CHARS = 20;
const FAULT_COLOR = '#e03131';

const CATEGORIES: Array<{ name: string; color: string; test: RegExp }> = [
  { name: 'failed / error', color: '#9c36b5', test: /fail|error|timeout|timed_out|cancel|abort|dead/ },
  { name: 'retry', color: '#f08c00', test: /retr|backoff|reschedul/ },
  { name: 'completed', color: '#2b8a3e', test: /complet|succe|done|finish|commit/ },
  { name: 'started / scheduled', color: '#1971c2', test: /start|schedul|claim|creat|request|enqueu|attempt|dispatch/ },
  { name: 'other', color: '#495057', test: /.*/ },
];

const RUN_LANE = '\u0000run';

interface Row {
  seq: number;
  type: string;
  lane: string;
  ms: number;
  /** Original timestamp was unusable; ms was borrowed from a neighbour. */
  badTime: boolean;
}

interface FaultRow {
  label: string;
  ms: number;
  badTime: boolean;
}

interface Prepared {
  rows: Row[]; // sorted by (ms, seq)
  faults: FaultRow[]; // sorted by ms
  tmin: number;
  tmax: number;
}

export function renderTimeline(input: TimelineInput): string {
  const p = prepare(input);
  const n = p.rows.length;

  const width = clamp(LEFT + RIGHT + 20 + n * MIN_GAP, MIN_WIDTH, MAX_WIDTH);
  const x0 = LEFT + 20;
  const x1 = width - RIGHT;

  const xs = layoutX(p, x0, x1);
  const stretched = xs.stretched;
  const toX = (ms: number) => interpolate(xs.anchors, ms, p, x0, x1);

  const lanes = laneOrder(p.rows);
  const laneIndex = new Map(lanes.map((l, i) => [l, i]));

  const faultTop = 52;
  const faultRows = Math.min(FAULT_ROWS, Math.max(1, p.faults.length));
  const lanesTop = faultTop + faultRows * FAULT_ROW_H + 10;
  const lanesBottom = lanesTop + lanes.length * LANE_H;
  const axisY = lanesBottom + 6;
  const legendY = axisY + 44;
  const height = legendY + 30;

  const out: string[] = [];
  const title = input.title ?? '';
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f(width)}" height="${f(height)}" viewBox="0 0 ${f(width)} ${f(height)}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
  );
  out.push(`<title>${esc(title)}</title>`);
  out.push(`<rect x="0" y="0" width="${f(width)}" height="${f(height)}" fill="#ffffff"/>`);
  out.push(`<text x="12" y="22" font-size="15" font-weight="bold" fill="#212529">${esc(title)}</text>`);
  const startText = n + p.faults.length > 0 ? `start ${iso(p.tmin)}` : 'no events';
  const subtitle =
    `${startText} · ${n} event${n === 1 ? '' : 's'} · ${p.faults.length} fault${p.faults.length === 1 ? '' : 's'}` +
    (p.tmax > p.tmin ? ` · span ${duration(p.tmax - p.tmin)}` : '') +
    (stretched ? ' · time axis stretched where events are dense' : '');
  out.push(`<text x="12" y="40" fill="#495057">${esc(subtitle)}</text>`);

  // Lanes.
  lanes.forEach((lane, i) => {
    const y = lanesTop + i * LANE_H;
    const name = lane === RUN_LANE ? 'run' : lane;
    out.push(
      `<rect x="0" y="${f(y)}" width="${f(width)}" height="${f(LANE_H)}" fill="${i % 2 ? '#f8f9fa' : '#ffffff'}"/>`,
    );
    out.push(
      `<line x1="${f(x0 - 10)}" y1="${f(dotY(y))}" x2="${f(x1)}" y2="${f(dotY(y))}" stroke="#ced4da" stroke-width="1"/>`,
    );
    out.push(
      `<text x="12" y="${f(dotY(y) + 4)}" font-size="12" font-weight="${lane === RUN_LANE ? 'bold' : 'normal'}" fill="#212529"><title>${esc(name)}</title>${esc(truncate(name, LANE_LABEL_CHARS))}</text>`,
    );
  });

  // Faults under the events so markers stay visible on top of the line.
  const eventInstants = new Set(p.rows.map((r) => r.ms));
  p.faults.forEach((fault, i) => {
    // A fault at the same instant as events is drawn just before them: it is the cause.
    const x = toX(fault.ms) - (eventInstants.has(fault.ms) ? MIN_GAP / 2 : 0);
    const labelY = faultTop + (i % faultRows) * FAULT_ROW_H + 10;
    out.push(
      `<g><title>${esc(`fault: ${fault.label} @ ${fault.badTime ? 'invalid time' : iso(fault.ms)}`)}</title>` +
        `<line x1="${f(x)}" y1="${f(labelY + 3)}" x2="${f(x)}" y2="${f(lanesBottom)}" stroke="${FAULT_COLOR}" stroke-width="1.5" stroke-dasharray="6 4"/>` +
        `<text x="${f(x + 3)}" y="${f(labelY)}" fill="${FAULT_COLOR}" font-weight="bold">${esc(truncate(fault.label, 40))}</text></g>`,
    );
  });

  // Events.
  for (let i = 0; i < n; i++) {
    const r = p.rows[i];
    const x = xs.positions[i];
    const y = dotY(lanesTop + (laneIndex.get(r.lane) ?? 0) * LANE_H);
    const color = category(r.type).color;
    const label = truncate(`#${r.seq} ${r.type}`, LABEL_CHARS);
    const tip = `#${r.seq} ${r.type}\nlane: ${r.lane === RUN_LANE ? 'run' : r.lane}\nrecorded_at: ${r.badTime ? 'invalid' : iso(r.ms)} (${duration(r.ms - p.tmin)})`;
    out.push(
      `<g><title>${esc(tip)}</title>` +
        `<circle cx="${f(x)}" cy="${f(y)}" r="5" fill="${color}" stroke="#ffffff" stroke-width="1"/>` +
        // Rotated so labels of neighbouring events run parallel instead of overlapping.
        `<text x="${f(x + 5)}" y="${f(y - 8)}" transform="rotate(-40 ${f(x + 5)} ${f(y - 8)})" fill="#212529">${esc(label)}</text></g>`,
    );
  }
  if (n === 0) {
    out.push(
      `<text x="${f((x0 + x1) / 2)}" y="${f(lanesTop + LANE_H / 2)}" text-anchor="middle" fill="#868e96">no events recorded</text>`,
    );
  }

  // Time axis; ticks go through the same (possibly stretched) mapping as events.
  out.push(`<line x1="${f(x0)}" y1="${f(axisY)}" x2="${f(x1)}" y2="${f(axisY)}" stroke="#495057" stroke-width="1"/>`);
  let lastTickX = -Infinity;
  for (const t of ticks(p.tmin, p.tmax)) {
    const x = toX(t);
    if (x - lastTickX < 60) continue;
    lastTickX = x;
    out.push(
      `<line x1="${f(x)}" y1="${f(axisY)}" x2="${f(x)}" y2="${f(axisY + 5)}" stroke="#495057"/>` +
        `<text x="${f(x)}" y="${f(axisY + 18)}" text-anchor="middle" fill="#495057">${esc(duration(t - p.tmin))}</text>`,
    );
  }
  out.push(`<text x="12" y="${f(axisY + 18)}" fill="#495057">recorded_at</text>`);

  // Legend.
  let lx = 12;
  for (const c of CATEGORIES) {
    out.push(
      `<circle cx="${f(lx + 5)}" cy="${f(legendY - 4)}" r="5" fill="${c.color}"/>` +
        `<text x="${f(lx + 14)}" y="${f(legendY)}" fill="#212529">${esc(c.name)}</text>`,
    );
    lx += 24 + c.name.length * 6.5;
  }
  out.push(
    `<line x1="${f(lx)}" y1="${f(legendY - 4)}" x2="${f(lx + 24)}" y2="${f(legendY - 4)}" stroke="${FAULT_COLOR}" stroke-width="1.5" stroke-dasharray="6 4"/>` +
      `<text x="${f(lx + 30)}" y="${f(legendY)}" fill="#212529">injected fault</text>`,
  );

  out.push('</svg>');
  return out.join('\n');
}

export function renderTimelineText(input: TimelineInput): string {
  const p = prepare(input);
  type Line = { ms: number; order: number; seq: number; cells: string[] };
  const lines: Line[] = [];
  for (const r of p.rows) {
    lines.push({
      ms: r.ms,
      order: 1,
      seq: r.seq,
      cells: [
        String(r.seq),
        duration(r.ms - p.tmin),
        r.badTime ? '(invalid time)' : iso(r.ms),
        r.lane === RUN_LANE ? 'run' : r.lane,
        r.type,
      ],
    });
  }
  for (const fl of p.faults) {
    // Faults sort before events at the same instant: the fault is the cause.
    lines.push({
      ms: fl.ms,
      order: 0,
      seq: 0,
      cells: ['!!', duration(fl.ms - p.tmin), fl.badTime ? '(invalid time)' : iso(fl.ms), 'FAULT', fl.label],
    });
  }
  lines.sort((a, b) => a.ms - b.ms || a.order - b.order || a.seq - b.seq);

  const header = ['seq', 'offset', 'recorded_at', 'lane', 'type'];
  const all = [header, ...lines.map((l) => l.cells.map(oneLine))];
  const widths = header.map((_, c) => Math.max(...all.map((row) => row[c].length)));
  const fmtRow = (row: string[]) =>
    row
      .map((cell, c) => (c === 0 ? cell.padStart(widths[c]) : c === row.length - 1 ? cell : cell.padEnd(widths[c])))
      .join('  ');

  const out: string[] = [];
  out.push(`Timeline: ${oneLine(input.title ?? '')}`);
  out.push(
    `${p.rows.length + p.faults.length > 0 ? `start ${iso(p.tmin)}` : 'no events'}, ${p.rows.length} event(s), ${p.faults.length} fault(s)`,
  );
  out.push(fmtRow(header));
  out.push(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of all.slice(1)) out.push(fmtRow(row));
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------

function prepare(input: TimelineInput): Prepared {
  const events = [...(input.events ?? [])].sort((a, b) => num(a.seq) - num(b.seq));
  // An unparsable time borrows its predecessor's (in seq order) so it still lands in sequence.
  let fallback: number | null = null;
  const firstValid = events.map((e) => toMs(e.recordedAt)).find((m): m is number => m !== null);
  const rows: Row[] = events.map((e) => {
    const m = toMs(e.recordedAt);
    if (m !== null) fallback = m;
    const ms = m ?? fallback ?? firstValid ?? 0;
    const lane = e.step === null || e.step === undefined || e.step === '' ? RUN_LANE : String(e.step);
    return { seq: num(e.seq), type: String(e.type ?? ''), lane, ms, badTime: m === null };
  });
  rows.sort((a, b) => a.ms - b.ms || a.seq - b.seq);

  const validTimes = rows.filter((r) => !r.badTime).map((r) => r.ms);
  const faults: FaultRow[] = (input.faults ?? []).map((fl) => {
    const m = toMs(fl.at);
    return { label: String(fl.label ?? ''), ms: m ?? 0, badTime: m === null };
  });
  for (const fl of faults) if (!fl.badTime) validTimes.push(fl.ms);
  const tmin = validTimes.length ? Math.min(...validTimes) : rows.length ? rows[0].ms : 0;
  const tmax = validTimes.length ? Math.max(...validTimes) : tmin;
  // Faults with unusable times are pinned to the start rather than dropped: they still happened.
  for (const fl of faults) if (fl.badTime) fl.ms = tmin;
  faults.sort((a, b) => a.ms - b.ms);
  return { rows, faults, tmin, tmax };
}

function layoutX(
  p: Prepared,
  x0: number,
  x1: number,
): { positions: number[]; anchors: Array<[number, number]>; stretched: boolean } {
  const n = p.rows.length;
  const span = p.tmax - p.tmin;
  const base = p.rows.map((r, i) =>
    span > 0 ? x0 + ((r.ms - p.tmin) / span) * (x1 - x0) : n <= 1 ? (x0 + x1) / 2 : x0 + ((i + 0.5) * (x1 - x0)) / n,
  );
  const pos: number[] = [];
  for (let i = 0; i < n; i++) pos.push(i === 0 ? base[i] : Math.max(base[i], pos[i - 1] + MIN_GAP));
  if (n > 0 && pos[n - 1] > x1) {
    const from = Math.min(pos[0], x0);
    const k = (x1 - from) / (pos[n - 1] - from || 1);
    for (let i = 0; i < n; i++) pos[i] = from + (pos[i] - from) * k;
  }
  const stretched = span > 0 && pos.some((x, i) => Math.abs(x - base[i]) > 0.5);
  const anchors: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) {
    // The first event of a same-instant group anchors that instant.
    if (anchors.length === 0 || anchors[anchors.length - 1][0] !== p.rows[i].ms) anchors.push([p.rows[i].ms, pos[i]]);
  }
  if (span > 0) {
    if (anchors.length === 0 || anchors[0][0] > p.tmin) anchors.unshift([p.tmin, Math.min(x0, anchors[0]?.[1] ?? x0)]);
    if (anchors[anchors.length - 1][0] < p.tmax) anchors.push([p.tmax, Math.max(x1, anchors[anchors.length - 1][1])]);
  }
  return { positions: pos, anchors, stretched };
}

function interpolate(anchors: Array<[number, number]>, ms: number, p: Prepared, x0: number, x1: number): number {
  if (anchors.length === 0) return p.tmax > p.tmin ? x0 + ((ms - p.tmin) / (p.tmax - p.tmin)) * (x1 - x0) : x0;
  if (ms <= anchors[0][0]) return anchors[0][1];
  for (let i = 1; i < anchors.length; i++) {
    const [ta, xa] = anchors[i - 1];
    const [tb, xb] = anchors[i];
    if (ms <= tb) return tb === ta ? xb : xa + ((ms - ta) / (tb - ta)) * (xb - xa);
  }
  return anchors[anchors.length - 1][1];
}

function laneOrder(rows: Row[]): string[] {
  const lanes: string[] = [RUN_LANE];
  for (const r of rows) if (!lanes.includes(r.lane)) lanes.push(r.lane);
  return lanes;
}

function ticks(tmin: number, tmax: number): number[] {
  if (!(tmax > tmin)) return [tmin];
  const out: number[] = [];
  for (let k = 0; k <= 5; k++) out.push(tmin + ((tmax - tmin) * k) / 5);
  return out;
}

function dotY(laneTop: number): number {
  return laneTop + LANE_H - 18;
}

function category(type: string): { name: string; color: string } {
  const t = type.toLowerCase();
  return CATEGORIES.find((c) => c.test.test(t)) ?? CATEGORIES[CATEGORIES.length - 1];
}

function toMs(v: Date | string | null | undefined): number | null {
  if (v === null || v === undefined) return null;
  const ms = v instanceof Date ? v.getTime() : Date.parse(String(v));
  return Number.isFinite(ms) ? ms : null;
}

function num(v: unknown): number {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

/** Formats a coordinate; never lets NaN/Infinity reach the SVG. */
function f(n: number): string {
  return Number.isFinite(n) ? String(Math.round(n * 10) / 10) : '0';
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n));
}

function iso(ms: number): string {
  const d = new Date(ms);
  return Number.isFinite(d.getTime()) ? d.toISOString() : 'invalid';
}

function duration(ms: number): string {
  if (!Number.isFinite(ms)) return '?';
  if (ms < 1000) return `+${Math.round(ms)}ms`;
  if (ms < 60_000) return `+${(ms / 1000).toFixed(2)}s`;
  const m = Math.floor(ms / 60_000);
  return `+${m}m${((ms - m * 60_000) / 1000).toFixed(1)}s`;
}

function truncate(s: string, max: number): string {
  const chars = Array.from(s); // don't split surrogate pairs
  return chars.length <= max ? s : chars.slice(0, max - 1).join('') + '…';
}

function oneLine(s: string): string {
  return s.replace(/[\r\n\t]+/g, ' ');
}

/** XML text/attribute escape; also drops characters XML 1.0 forbids outright. */
function esc(s: string): string {
  return String(s)
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}
