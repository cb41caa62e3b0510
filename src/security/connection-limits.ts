import { readFileSync } from 'node:fs';

/*
 * How many connections a listening server holds at once. Every connection
 * takes a file descriptor, and the process needs some of its own: its
 * database connections, the embedded Postgres's pid file that `meshhook up`
 * watches. A flood of idle connections that took them all would make those
 * fail; beyond the cap a new connection is closed as it comes instead.
 */

/** 1,024, or a quarter of this process's open-file limit when that is lower (Linux tells it in /proc). */
export function defaultMaxConnections(): number {
  try {
    const soft = Number(/^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]);
    if (Number.isSafeInteger(soft) && soft > 0) return Math.max(16, Math.min(1024, Math.floor(soft / 4)));
  } catch {
    /* no /proc: the default */
  }
  return 1024;
}
