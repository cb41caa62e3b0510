/*
 * npm run bench (last stage) — one page from the benchmarks' JSON reports:
 * reports/bench.md, with each figure beside its baseline and target, and one
 * SVG chart per benchmark (reports/bench-<name>.svg). It measures nothing:
 * it reads whatever reports/*.json the benches wrote and says when each was
 * measured, so a figure from an earlier run is never passed off as fresh.
 *
 * The charts are plain SVG written here (horizontal bars of ratios with the
 * target as a line): a charting library would be a large dependency for
 * a dozen bars.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const dir = path.resolve(__dirname, '..', 'reports');

interface Bar {
  label: string;
  value: number | null;
  /** the ratio the performance issue asks for; null for a figure shown for reference only */
  target: number | null;
  /** what the table says instead of met / not met, for a reference figure */
  note?: string;
  /** 'min': the value should reach the target; 'max': stay under it */
  want: 'min' | 'max';
}

interface Section {
  name: string;
  title: string;
  measuredAt: string;
  command: string;
  lines: string[];
  bars: Bar[];
}

function read<T>(file: string): { data: T; at: string } | null {
  const p = path.join(dir, file);
  if (!existsSync(p)) return null;
  const data = JSON.parse(readFileSync(p, 'utf8')) as T;
  const own = (data as { generatedAt?: string; at?: string }).generatedAt ?? (data as { at?: string }).at;
  return { data, at: own ?? statSync(p).mtime.toISOString() };
}

const fmt = (v: number | null | undefined, digits = 2): string => (v === null || v === undefined || !Number.isFinite(v) ? '—' : String(Math.round(v * 10 ** digits) / 10 ** digits));
const met = (b: Bar): string =>
  b.value === null ? 'not measured' : b.target === null ? (b.note ?? 'for reference') : (b.want === 'min' ? b.value >= b.target : b.value <= b.target) ? 'met' : 'not met';

/** A horizontal bar chart of ratios, the target drawn as a dashed line on each bar's row. */
export function barChart(title: string, bars: Bar[]): string {
  const width = 640;
  const labelW = 260;
  const rowH = 28;
  const top = 36;
  const height = top + bars.length * rowH + 28;
  const max = Math.max(1.2, ...bars.map((b) => Math.max(b.value ?? 0, b.target ?? 0))) * 1.1;
  const x = (v: number) => labelW + (v / max) * (width - labelW - 60);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const rows = bars.map((b, i) => {
    const y = top + i * rowH;
    const ok = met(b) === 'met';
    const fill = b.value === null || b.target === null ? '#bbb' : ok ? '#2e7d32' : '#c62828';
    return [
      `<text x="${labelW - 8}" y="${y + 17}" text-anchor="end" font-size="12">${esc(b.label)}</text>`,
      b.value === null ? '' : `<rect x="${labelW}" y="${y + 5}" width="${Math.max(1, x(b.value) - labelW).toFixed(1)}" height="16" fill="${fill}"/>`,
      `<text x="${((b.value === null ? labelW : x(b.value)) + 4).toFixed(1)}" y="${y + 17}" font-size="12">${b.value === null ? 'not measured' : `${fmt(b.value)}×`}</text>`,
      b.target === null ? '' : `<line x1="${x(b.target).toFixed(1)}" x2="${x(b.target).toFixed(1)}" y1="${y + 2}" y2="${y + 24}" stroke="#333" stroke-dasharray="3,2"/>`,
    ].join('');
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="8" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    ...rows,
    `<line x1="${x(1).toFixed(1)}" x2="${x(1).toFixed(1)}" y1="${top - 4}" y2="${height - 24}" stroke="#999"/>`,
    `<text x="${x(1).toFixed(1)}" y="${height - 8}" text-anchor="middle" font-size="11">1× (baseline)</text>`,
    `<text x="${width - 8}" y="${height - 8}" text-anchor="end" font-size="11">dashed: target; green met, red not, grey for reference</text>`,
    `</svg>`,
  ].join('\n');
}

function sideBySide(): Section | null {
  type R = {
    config: { workflows: number; repeats: number; quick: boolean; dbosVersion: string };
    results: Record<string, { wfPerSec: number; commitsPerWf: number; statementsPerWf: number }>;
    ratios: Record<string, { throughput: { ratio: number; min: number; max: number } }>;
    scalingRatios?: Array<{ workers: number; pure: number; http: number; repeats?: number; pureMin?: number; pureMax?: number; httpMin?: number; httpMax?: number }>;
  };
  const f = read<R>('side-by-side.json');
  if (!f) return null;
  const { config, results, ratios } = f.data;
  const lines = [
    `${config.workflows} workflows per trial × ${config.repeats} repeats${config.quick ? ' (quick mode)' : ''}, DBOS Transact ${config.dbosVersion}, one embedded Postgres, interleaved.`,
    '',
    '| case | wf/s (median) | commits / wf | statements / wf |',
    '| --- | --- | --- | --- |',
    ...Object.entries(results).map(([k, v]) => `| ${k} | ${fmt(v.wfPerSec, 1)} | ${fmt(v.commitsPerWf)} | ${fmt(v.statementsPerWf)} |`),
  ];
  const r = (k: string) => ratios[k]?.throughput;
  const bars: Bar[] = [
    { label: 'engine ÷ DBOS, 3 pure steps', value: r('engineVsDbosPure')?.ratio ?? null, target: 4, want: 'min' },
    { label: 'engine ÷ DBOS, one HTTP step', value: r('engineVsDbosHttp')?.ratio ?? null, target: 4, want: 'min' },
    // DBOS as its docs advise for deterministic code: the transforms in the workflow's body, no checkpoint between them
    { label: 'engine ÷ DBOS, transforms inline', value: r('engineVsDbosInlinePure')?.ratio ?? null, target: null, want: 'min', note: 'reference: DBOS records no step output' },
    // the floor claims and commits and does nothing else, so no engine reaches it: it shows how close this one gets
    { label: 'engine ÷ SKIP LOCKED floor', value: r('engineVsFloorPure')?.ratio ?? null, target: null, want: 'min', note: 'reference: the floor does no work' },
    { label: 'group commit ÷ one tx per batch', value: r('groupCommitVsSinglePure')?.ratio ?? null, target: null, want: 'min', note: 'reference: fewer commits, the same speed at 8 in flight' },
  ];
  // with --scaling (npm run bench runs it): 1 / 2 / 4 workers × 4 against DBOS with as many executors, medians of paired repeats
  const scaling = f.data.scalingRatios ?? [];
  if (scaling.length) {
    const range = (lo?: number, hi?: number) => (lo === undefined || hi === undefined ? '' : ` [${fmt(lo)}–${fmt(hi)}]`);
    const n = scaling[0].repeats ?? 1;
    lines.push('', `Scaling, ${n === 1 ? 'one trial each' : `medians of ${n} paired trials each, [min–max]`} (workers × 4 in flight; DBOS with as many executors × 4):`, '', '| workers | engine ÷ DBOS, 3 pure steps | engine ÷ DBOS, one HTTP step |', '| --- | --- | --- |');
    for (const x of scaling) {
      lines.push(`| ${x.workers} | ${fmt(x.pure)}×${range(x.pureMin, x.pureMax)} | ${fmt(x.http)}×${range(x.httpMin, x.httpMax)} |`);
      bars.push({ label: `engine ÷ DBOS, ${x.workers} worker${x.workers > 1 ? 's' : ''}, pure`, value: x.pure, target: 4, want: 'min' });
      bars.push({ label: `engine ÷ DBOS, ${x.workers} worker${x.workers > 1 ? 's' : ''}, HTTP`, value: x.http, target: 4, want: 'min' });
    }
  }
  const commits = results['engine/pure']?.commitsPerWf ?? null;
  lines.push('', `Engine commits per workflow (pure): ${fmt(commits)} (target ≤ 4: ${commits === null ? 'not measured' : commits <= 4 ? 'met' : 'not met'}).`);
  return { name: 'dbos', title: 'End to end, side by side with DBOS', measuredAt: f.at, command: config.quick ? 'npm run bench:dbos -- --quick' : 'npm run bench:dbos', lines, bars };
}

function replayAtScale(): Section | null {
  type Row = { events: number; floorMs: number; replayMs: number; verifyMs: number; replaySpeedVsFloor: number; verifySpeedVsFloor: number; floorPeakMb: number; replayPeakMb: number; verifyPeakMb: number; replayPeakMbCapped?: number; verifyPeakMbCapped?: number };
  const f = read<{ repeats: number; heapCapMb?: number; runs: Row[] }>('bench-replay.json');
  if (!f) return null;
  const lines = [
    `One run's log read back from Postgres, medians of ${f.data.repeats} repeat(s), each measurement in a fresh child process after a warm-up. Speed vs floor = the floor's time ÷ its time; peak MB = RSS growth during the measurement.`,
    '',
    '| events | floor ms (peak MB) | replay ms (× floor speed, peak MB) | verify ms (× floor speed, peak MB) |',
    '| --- | --- | --- | --- |',
    ...f.data.runs.map((x) => `| ${x.events} | ${fmt(x.floorMs, 1)} (${fmt(x.floorPeakMb, 1)}) | ${fmt(x.replayMs, 1)} (${fmt(x.replaySpeedVsFloor)}×, ${fmt(x.replayPeakMb, 1)}) | ${fmt(x.verifyMs, 1)} (${fmt(x.verifySpeedVsFloor)}×, ${fmt(x.verifyPeakMb, 1)}) |`),
  ];
  if (f.data.heapCapMb && f.data.runs.every((x) => x.replayPeakMbCapped !== undefined)) {
    lines.push(
      '',
      `Memory flat in log length: V8 collects lazily, so with the default heap the peak follows the garbage. With the old space capped at ${f.data.heapCapMb} MB it collects as it goes; peak RSS growth then: ` +
        f.data.runs.map((x) => `${x.events} events replay ${fmt(x.replayPeakMbCapped ?? null, 1)} MB, verify ${fmt(x.verifyPeakMbCapped ?? null, 1)} MB`).join('; ') +
        ' (the floor holds every row, so its peak grows with the log whatever the cap).',
    );
  }
  const bars = f.data.runs.flatMap((x): Bar[] => [
    { label: `replay, ${x.events} events`, value: x.replaySpeedVsFloor, target: 0.9, want: 'min' },
    { label: `verify, ${x.events} events`, value: x.verifySpeedVsFloor, target: 0.9, want: 'min' },
  ]);
  return { name: 'replay', title: 'Replay and verify from Postgres, speed vs reading the rows', measuredAt: f.at, command: 'npm run bench:replay', lines, bars };
}

function verifyAtScale(): Section | null {
  type R = { runs: number; events: number; floorMs: number; verifyMs: number; verifyOverFloor: number; badRuns: number; chainMs?: number; chainOverFloor?: number };
  const f = read<R>('bench-verify.json');
  if (!f) return null;
  const d = f.data;
  const lines = [`\`meshhook verify --all\` over ${d.events} events (${d.runs} runs, ${d.badRuns} bad): ${fmt(d.verifyMs, 0)} ms; reading and parsing the same rows: ${fmt(d.floorMs, 0)} ms.`];
  if (d.chainMs !== undefined)
    lines.push('', `The same rows with every link's HMAC checked and nothing else: ${fmt(d.chainMs, 0)} ms, ${fmt(d.chainOverFloor ?? null)}× the floor (the least a check of the keyed chain costs).`);
  return { name: 'verify', title: 'Verify a whole project, time vs the floor', measuredAt: f.at, command: 'npm run bench:verify', lines, bars: [{ label: `verify --all ÷ floor (${d.events} events)`, value: d.verifyOverFloor, target: 1.2, want: 'max' }] };
}

function engineVsStateStored(): Section | null {
  type R = { at: string; config: { runs: number; repeats: number }; ratios: { engineVsStateStored: Record<string, { ratio: number | null }>; failpointsNoMatchVsNone: Record<string, { ratio: number | null }> }; verdicts: string[] };
  const f = read<R>('bench.json');
  if (!f) return null;
  const { ratios, verdicts, config } = f.data;
  const lines = [`${config.runs} runs × ${config.repeats} repeats per executor, interleaved.`, '', ...verdicts.map((v) => `- ${v}`)];
  const bars: Bar[] = [
    { label: 'engine ÷ state-stored throughput', value: ratios.engineVsStateStored.throughput?.ratio ?? null, target: 1, want: 'min' },
    // armed, a worker commits step by step so every crash point stays addressable (docs/performance.md)
    { label: 'armed failpoint ÷ none throughput', value: ratios.failpointsNoMatchVsNone.throughput?.ratio ?? null, target: null, want: 'min', note: 'by design: armed workers commit step by step' },
  ];
  return { name: 'engine', title: 'What the log costs: engine vs a state-stored twin', measuredAt: f.at, command: 'npm run bench:engine', lines, bars };
}

function recovery(): Section | null {
  type R = { config: { runs: number; repeats: number; workers: number; concurrency: number }; noCrashMs: number; crashMs: number; finishOverNoCrash: number; resumeMs: number; inFlightAtKill: number; repeatedRequests: number; repeatsWithOtherBytes: number };
  const f = read<R>('bench-recovery.json');
  if (!f) return null;
  const d = f.data;
  const lines = [
    `${d.config.runs} runs, ${d.config.workers} worker processes × concurrency ${d.config.concurrency}, every worker SIGKILLed half way, fresh ones started at once; medians of ${d.config.repeats}.`,
    `${d.inFlightAtKill} runs in flight at the kill, all moving again ${fmt(d.resumeMs, 0)} ms after the fresh workers were spawned (process start included; target ≤ 1 s).`,
    `Working time with the crash ${fmt(d.crashMs, 0)} ms against ${fmt(d.noCrashMs, 0)} ms without. Requests sent again under a known key: ${d.repeatedRequests}, of them with other bytes: ${d.repeatsWithOtherBytes}.`,
  ];
  const bars: Bar[] = [
    { label: 'working time, crash ÷ no crash', value: d.finishOverNoCrash, target: 1.1, want: 'max' },
    { label: 'in-flight runs moving again ÷ 1 s', value: d.resumeMs / 1000, target: 1, want: 'max' },
  ];
  return { name: 'recovery', title: 'Recovery after every worker is SIGKILLed', measuredAt: f.at, command: 'npm run bench:recovery', lines, bars };
}

function liveLogs(): Section | null {
  type R = { subscribers: number; throughputRatio: number; commitToSubscriberMs: { p50: number; p99: number; events: number }; paced?: { runsPerSec: number; events: number; p50: number; p99: number }; runsPerSecNone: number; runsPerSecWithSubscribers: number; throughputRatioApart?: number; runsPerSecApart?: number };
  const f = read<R>('bench-live-logs.json');
  if (!f) return null;
  const d = f.data;
  const lines = [
    `Commit → subscriber over ${d.commitToSubscriberMs.events} events under the trials' full load (mostly queueing): median ${fmt(d.commitToSubscriberMs.p50, 1)} ms, p99 ${fmt(d.commitToSubscriberMs.p99, 1)} ms.`,
    ...(d.paced ? [`Commit → subscriber at a steady ${d.paced.runsPerSec} runs/s, ${d.subscribers} subscribers, over ${d.paced.events} events: median ${fmt(d.paced.p50, 1)} ms, p99 ${fmt(d.paced.p99, 1)} ms.`] : []),
    `Workers' throughput with ${d.subscribers} supabase-js subscribers: ${fmt(d.runsPerSecWithSubscribers, 1)} runs/s against ${fmt(d.runsPerSecNone, 1)} with none.`,
  ];
  if (d.throughputRatioApart !== undefined)
    lines.push(`With the server and subscribers at nice 19 (standing for hosts of their own): ${fmt(d.runsPerSecApart, 1)} runs/s, ${fmt(d.throughputRatioApart)}× none.`);
  return { name: 'live', title: 'Live logs: throughput with subscribers', measuredAt: f.at, command: 'npm run bench:live', lines, bars: [
    { label: `with ${d.subscribers} subscribers ÷ none`, value: d.throughputRatio, target: 0.95, want: 'min' },
    ...(d.throughputRatioApart !== undefined ? [{ label: `the same, server and subscribers at nice 19`, value: d.throughputRatioApart, target: 0.95, want: 'min' as const }] : []),
  ] };
}

export function writeReport(): string {
  const sections = [sideBySide(), replayAtScale(), verifyAtScale(), recovery(), engineVsStateStored(), liveLogs()].filter((s): s is Section => s !== null);
  const md: string[] = [
    '# Benchmarks',
    '',
    `Written ${new Date().toISOString()} on ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model ?? 'unknown'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}. Figures are ratios against a baseline measured in the same run; nothing here is a timed test.`,
    '',
    '| figure | ratio | target | |',
    '| --- | --- | --- | --- |',
    ...sections.flatMap((s) => s.bars.map((b) => `| ${b.label} | ${b.value === null ? '—' : `${fmt(b.value)}×`} | ${b.target === null ? '—' : `${b.want === 'min' ? '≥' : '≤'} ${b.target}×`} | ${met(b)} |`)),
  ];
  for (const s of sections) {
    const svg = `bench-${s.name}.svg`;
    writeFileSync(path.join(dir, svg), barChart(s.title, s.bars) + '\n');
    md.push('', `## ${s.title}`, '', `Measured ${s.measuredAt} by \`${s.command}\`.`, '', ...s.lines, '', `![${s.title}](${svg})`);
  }
  if (sections.length === 0) md.push('', 'No benchmark has written its report yet: run `npm run bench`.');
  writeFileSync(path.join(dir, 'bench.md'), md.join('\n') + '\n');
  return md.slice(0, 7 + sections.reduce((n, s) => n + s.bars.length, 0)).join('\n');
}

if (require.main === module) {
  process.stdout.write(writeReport() + '\n\nreports/bench.md and reports/bench-*.svg\n');
}
