// whatwg-url for the compiled binary: the runtime's own URL and URLSearchParams. The MongoDB
// driver's connection-string parser (mongodb-connection-string-url) imports whatwg-url, a
// JavaScript implementation of the same WHATWG URL standard, whose tr46 tables and code cost
// ~3 MiB of every run with the mongodb plugin (bench/ANALYSIS.md, Peak RSS). scripts/build.ts maps
// "whatwg-url" here (tsconfig.json beside this file, for Bun's bundler only); Deno and the tests
// use the package itself. tests/unit/bun_overrides_test.ts checks that the driver parses
// connection strings the same with both.
export const URL = globalThis.URL;
export const URLSearchParams = globalThis.URLSearchParams;
