import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatLogLine, runCli } from '../../src/cli/main';

/*
 * Hostile round 7: what the CLI writes holds what webhooks, targets and requests sent (log lines of `up`, events in
 * `tail`, reports). JSON escapes the C0 controls, but not the C1 ones (U+009B is CSI, like ESC [), the line
 * separators, or the bidirectional overrides that make a line read otherwise than it is.
 */

const RAW = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const HOSTILE = ['\u009b2J', '\u009d0;pwned\u0007', '\u202eevil', 'a\u2028b', '\u2066x\u2069', '\u001b[31m', 'a\rb', '\u0085'];

describe('the CLI writes nothing a terminal acts on', () => {
  it("in a log line of up (a request's charset, an Expect header, as the intake logs them)", () => {
    for (const v of HOSTILE) {
      const line = formatLogLine({ level: 'warn', msg: `request refused ${v}`, reason: `webhook bodies are UTF-8 JSON, not ${v}`, expect: v });
      assert.ok(!RAW.test(line), `${JSON.stringify(v)}: ${JSON.stringify(line)}`);
    }
  });

  it('in any line a command writes (here the error naming an unknown command)', async () => {
    for (const v of HOSTILE) {
      const lines: string[] = [];
      await runCli([`x${v}`], { out: (l) => lines.push(l), err: (l) => lines.push(l), env: {} });
      assert.ok(lines.length > 0);
      for (const l of lines) assert.ok(!RAW.test(l), `${JSON.stringify(v)}: ${JSON.stringify(l.slice(0, 80))}`);
      assert.ok(lines[0].includes(`\\u${v.match(RAW)![0].charCodeAt(0).toString(16).padStart(4, '0')}`), lines[0].slice(0, 80));
    }
  });

  it('and a JSON line stays the same JSON', () => {
    const value = { note: HOSTILE.join(' ') };
    const line = formatLogLine({ level: 'info', msg: 'x', value });
    const json = line.slice(line.indexOf('value=') + 'value='.length);
    assert.deepEqual(JSON.parse(JSON.parse(json)), value);
  });
});
