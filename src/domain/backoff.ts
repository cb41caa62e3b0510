import type { RetryPolicy } from './definition';

/**
 * Delay before attempt `nextAttempt` (2, 3, …): exponential, capped, then spread
 * by ±policy.jitter around the nominal value. `draw` is a number in [0, 1) the
 * worker drew and recorded, so replay recomputes the same delay.
 */
export function backoffDelayMs(policy: RetryPolicy, nextAttempt: number, draw: number): number {
  const exponent = Math.max(0, nextAttempt - 2);
  const nominal = Math.min(policy.maxDelayMs, policy.initialDelayMs * Math.pow(policy.multiplier, exponent));
  const spread = 1 - policy.jitter + 2 * policy.jitter * clamp01(draw);
  return Math.round(nominal * spread);
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 0.999999) : 0;
}
