import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { COMMANDS, parseArgs, runCli } from '../../src/cli/main';

const spec = (name: string) => COMMANDS.find((c) => c.name === name)!;

describe('cli argument parsing', () => {
  it('reads positionals, --flag value and --flag=value', () => {
    assert.deepEqual(parseArgs(['a', 'b', '--body', '{}', '--delivery-id=d1'], spec('deliver')), {
      positional: ['a', 'b'],
      flags: { body: '{}', 'delivery-id': 'd1' },
    });
  });

  it('refuses unknown options, missing values and missing arguments', () => {
    assert.throws(() => parseArgs(['x.json', '--nope'], spec('publish')), /unknown option --nope/);
    assert.throws(() => parseArgs(['x.json', '--project'], spec('publish')), /--project needs a value/);
    assert.throws(() => parseArgs([], spec('replay')), /"replay" needs <run-id>/);
    assert.throws(() => parseArgs(['a', 'b'], spec('verify')), /takes 1 argument/);
  });

  it('--help on any command prints its usage and exits 0', async () => {
    for (const c of COMMANDS) {
      const out: string[] = [];
      const code = await runCli([c.name, '--help'], { out: (l) => out.push(l), err: (l) => out.push(l), env: {} });
      assert.equal(code, 0);
      assert.match(out.join('\n'), new RegExp(`^usage: meshhook ${c.name}`));
    }
  });

  it('usage errors exit 2', async () => {
    const err: string[] = [];
    assert.equal(await runCli(['frobnicate'], { out: () => undefined, err: (l) => err.push(l), env: {} }), 2);
    assert.match(err.join('\n'), /unknown command "frobnicate"/);
    assert.equal(await runCli(['verify', 'not-a-uuid'], { out: () => undefined, err: () => undefined, env: {} }), 2);
  });

  it('runs --status takes only run states, and --workflow only a slug, before any database is asked', async () => {
    const err: string[] = [];
    const io = { out: () => undefined, err: (l: string) => err.push(l), env: {}, cwd: '/nonexistent' };
    assert.equal(await runCli(['runs', '--project', 'acme', '--status', 'failed,done'], io), 2);
    assert.match(err.join('\n'), /--status: "done" is not a run state \(running, waiting, paused, succeeded, failed, canceled\)/);
    assert.equal(await runCli(['runs', '--project', 'acme', '--status', ','], io), 2);
    assert.equal(await runCli(['runs', '--project', 'acme', '--workflow', 'Not A Slug'], io), 2);
    assert.match(err.join('\n'), /workflow "Not A Slug" is not a slug/);
  });

  it('a command needing the database says how to get one', async () => {
    const err: string[] = [];
    const code = await runCli(['runs'], { out: () => undefined, err: (l) => err.push(l), env: {}, cwd: '/nonexistent' });
    assert.equal(code, 2);
    assert.match(err.join('\n'), /no database: start one with `meshhook up`/);
  });
});
