import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { renderTimeline, renderTimelineText, type TimelineInput } from '../../support/timeline';

const t = (ms: number) => new Date(Date.UTC(2025, 0, 1, 12, 0, 0) + ms);

const sample: TimelineInput = {
  title: 'order <flow> & "friends"',
  events: [
    { seq: 1, type: 'run_started', recordedAt: t(0), step: null },
    { seq: 2, type: 'step_scheduled', recordedAt: t(5), step: 'charge' },
    { seq: 3, type: 'step_attempt_failed', recordedAt: t(5), step: 'charge' },
    { seq: 4, type: 'step_retry_scheduled', recordedAt: t(5).toISOString(), step: 'charge' },
    { seq: 5, type: 'step_completed', recordedAt: t(900), step: 'charge' },
    { seq: 6, type: 'step_completed', recordedAt: t(950), step: 'notify' },
    { seq: 7, type: 'run_completed', recordedAt: t(1200) },
  ],
  faults: [{ at: t(5), label: 'db <severed> & "reset"' }],
};

/** Cheap well-formedness check: every tag closes in order. Enough to catch broken escaping. */
function assertBalanced(svg: string): void {
  const stack: string[] = [];
  const tags = svg.match(/<\/?[a-zA-Z][^>]*>/g) ?? [];
  for (const tag of tags) {
    if (tag.endsWith('/>')) continue;
    const name = tag.match(/^<\/?([a-zA-Z]+)/)![1];
    if (tag.startsWith('</')) assert.equal(stack.pop(), name, `unbalanced </${name}>`);
    else stack.push(name);
  }
  assert.deepEqual(stack, []);
  // Text content must not carry raw markup characters.
  const text = svg.replace(/<[^>]*>/g, '');
  assert.doesNotMatch(text, /[<>]/);
  assert.doesNotMatch(svg, /&(?!amp;|lt;|gt;|quot;|apos;)/);
}

function assertNoBadNumbers(s: string): void {
  assert.doesNotMatch(s, /NaN|Infinity|undefined/);
}

describe('renderTimeline', () => {
  test('renders every event and fault, escaped and well formed', () => {
    const svg = renderTimeline(sample);
    assert.ok(svg.startsWith('<svg'), svg.slice(0, 40));
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    assert.match(svg, /xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const e of sample.events) {
      assert.ok(svg.includes(`#${e.seq} ${e.type}`), `missing #${e.seq} ${e.type}`);
    }
    assert.ok(svg.includes('db &lt;severed&gt; &amp; &quot;reset&quot;'));
    assert.ok(!svg.includes('db <severed>'));
    assert.ok(svg.includes('order &lt;flow&gt; &amp; &quot;friends&quot;'));
    assert.match(svg, /stroke-dasharray/);
    for (const lane of ['>run<', '>charge<', '>notify<']) assert.ok(svg.includes(lane), lane);
    assertBalanced(svg);
    assertNoBadNumbers(svg);
    const w = Number(svg.match(/width="(\d+)"/)![1]);
    assert.ok(w >= 1000 && w <= 4000);
  });

  test('identical timestamps are spread apart and stay in seq order', () => {
    const events = Array.from({ length: 6 }, (_, i) => ({ seq: i + 1, type: `e${i + 1}`, recordedAt: t(0) }));
    const svg = renderTimeline({ title: 'same instant', events, faults: [{ at: t(0), label: 'f' }] });
    const xs = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].slice(0, 6).map((m) => Number(m[1]));
    for (let i = 1; i < xs.length; i++) assert.ok(xs[i] - xs[i - 1] >= 15, `x ${xs.join(',')}`);
    assertBalanced(svg);
    assertNoBadNumbers(svg);
  });

  test('handles 0 and 1 events, faults only, and garbage timestamps', () => {
    const cases: TimelineInput[] = [
      { title: 'empty', events: [], faults: [] },
      { title: 'one', events: [{ seq: 1, type: 'run_started', recordedAt: t(0) }], faults: [] },
      { title: 'faults only', events: [], faults: [{ at: t(0), label: 'a' }, { at: t(10), label: 'b' }] },
      {
        title: 'bad',
        events: [
          { seq: 2, type: 'b', recordedAt: 'not a date' },
          { seq: 1, type: 'a', recordedAt: t(3) },
        ],
        faults: [{ at: 'nope', label: 'x' }],
      },
    ];
    for (const c of cases) {
      const svg = renderTimeline(c);
      assert.ok(svg.startsWith('<svg'));
      for (const e of c.events) assert.ok(svg.includes(`#${e.seq} ${e.type}`));
      for (const fl of c.faults) assert.ok(svg.includes(`>${fl.label}<`));
      assertBalanced(svg);
      assertNoBadNumbers(svg);
    }
  });

  test('many events widen the chart but cap it', () => {
    const events = Array.from({ length: 400 }, (_, i) => ({
      seq: i + 1,
      type: 'step_completed',
      recordedAt: t(i * 3),
      step: `s${i % 7}`,
    }));
    const svg = renderTimeline({ title: 'big', events, faults: [] });
    const w = Number(svg.match(/width="(\d+)"/)![1]);
    assert.equal(w, 4000);
    assertNoBadNumbers(svg);
    assertBalanced(svg);
  });
});

describe('renderTimelineText', () => {
  test('lists events and faults in time order with offsets', () => {
    const text = renderTimelineText(sample);
    assertNoBadNumbers(text);
    const lines = text.trimEnd().split('\n');
    assert.match(lines[0], /^Timeline: order <flow>/);
    for (const e of sample.events) assert.ok(text.includes(e.type));
    const body = lines.slice(4);
    assert.equal(body.length, sample.events.length + sample.faults.length);
    // The fault at +5ms comes before the events recorded at that instant.
    const faultLine = body.findIndex((l) => l.includes('FAULT'));
    const seq2Line = body.findIndex((l) => l.includes('step_scheduled'));
    assert.ok(faultLine >= 0 && faultLine < seq2Line);
    assert.match(body[faultLine], /\+5ms/);
    assert.match(body.at(-1)!, /\+1\.20s.*run_completed/);
    assert.match(body.find((l) => l.includes('step_completed') && l.includes('notify'))!, /notify/);
  });

  test('empty input', () => {
    const text = renderTimelineText({ title: 'x', events: [], faults: [] });
    assert.match(text, /no events/);
    assertNoBadNumbers(text);
  });
});
