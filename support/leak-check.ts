import { Redactor, SecretValue } from '../src/security/redact';

/*
 * The leak check every passing scenario ends with: no secret value in use —
 * a workflow's signing secret or a project's vault secret — may appear, in
 * any of the forms a value travels in (as is, base64 at any alignment,
 * URL-encoded, JSON-escaped), in any place the scenario can read: the run
 * log, the run views, the workers' output (as one stream, so a value split
 * across two writes is still found), live-log frames, report attachments.
 */

export interface Place {
  place: string;
  text: string;
}

/** One line per leak: which secret, in which form, where. Empty when nothing leaked. */
export function findLeaks(secrets: readonly SecretValue[], places: readonly Place[]): string[] {
  const finder = new Redactor(secrets);
  const leaks: string[] = [];
  for (const { place, text } of places) {
    for (const hit of finder.findIn(text)) {
      const secret = secrets.find((s) => s.name === hit.name)!;
      const form = hit.form === secret.value ? 'as is' : hit.form.includes('%') ? 'URL-encoded' : /^[A-Za-z0-9+/=_-]+$/.test(hit.form) ? 'base64' : 'escaped';
      leaks.push(`${hit.name} (${form}) in ${place}`);
    }
  }
  return [...new Set(leaks)];
}
