#!/usr/bin/env node
'use strict';
// The CLI runs compiled: `npm run build` writes dist/.
let cli;
try {
  cli = require('../dist/cli/main.js');
} catch (e) {
  if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes('dist/cli/main.js')) {
    process.stderr.write('meshhook is not built yet: run `npm run build` first\n');
    process.exit(1);
  }
  throw e;
}
cli.main(process.argv.slice(2));
