#!/usr/bin/env node
// The `byol` command of the installed package (package.json "bin"): runs byol/cli.ts's main, whatever path or
// symlink it was started through.

import { main } from './cli.ts';

main(process.argv.slice(2)).then((code) => (process.exitCode = code));
