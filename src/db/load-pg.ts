/*
 * Load `pg` before anything else in a process's entry. On loading, pg asks
 * whether it runs in a Cloudflare Worker: with no global `navigator` (Node 20;
 * Node 21 and later have one) it builds a fetch `Response` to find out, which
 * loads node's whole fetch implementation, about 25 of the 85 ms a worker
 * process spends loading its modules, for a fetch the worker never makes.
 * A `navigator` that says "Node.js" answers the question; it is removed again
 * at once, so nothing else ever sees it; every later import of pg gets the
 * module loaded here.
 */
const g = globalThis as { navigator?: unknown };
if (g.navigator === undefined) {
  Object.defineProperty(g, 'navigator', { value: { userAgent: `Node.js/${process.versions.node}` }, configurable: true, writable: true });
  try {
    require('pg');
  } finally {
    delete g.navigator;
  }
}

export {};
