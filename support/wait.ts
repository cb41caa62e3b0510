/** Thrown by a predicate that knows the wait is hopeless: waitFor rethrows it at once. */
export class StopWaiting extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StopWaiting';
  }
}

export interface WaitForOptions {
  /** Default 5000. */
  timeoutMs?: number;
  /** Default 25. */
  intervalMs?: number;
  /**
   * What is being waited for, used in the timeout message. A function is called
   * at timeout so the message can include the last observed state.
   */
  what: string | (() => string);
}

/**
 * Polls predicate until it returns a truthy value and resolves with that value.
 * A predicate that throws counts as "not yet"; its last error is quoted on timeout
 * so a failing step says why, not just that it waited.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  opts: WaitForOptions,
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const intervalMs = opts.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = undefined;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
      lastError = undefined;
    } catch (err) {
      if (err instanceof StopWaiting) throw err;
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, Math.min(intervalMs, Math.max(0, deadline - Date.now()))));
  }
  let what: string;
  try {
    what = typeof opts.what === 'function' ? opts.what() : opts.what;
  } catch (err) {
    what = `<what() threw: ${(err as Error)?.message ?? String(err)}>`;
  }
  const cause = lastError === undefined ? '' : `; last error: ${(lastError as Error)?.message ?? String(lastError)}`;
  throw new Error(`Timed out after ${timeoutMs}ms waiting for ${what}${cause}`, { cause: lastError });
}
