/**
 * The thin entry the verify tests (and the bench) run in a process of its
 * own, until `vmsnap verify` exists: `verifySnapshots` with its options
 * from the command line, the report on stdout (JSON with `--json`, else the
 * text), each progress step as a JSON line on stderr, exit 0/1/2 as the
 * verdict (2 with the error when it could not verify).
 *
 * Usage: deno run -A tests/verify_cli.ts SNAPSHOT... --state-dir DIR
 *          [--manifest FILE] [--scratch DIR] [--json] [--options JSON]
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { VerifyError } from "../src/verify/codes.ts";
import { formatReport } from "../src/verify/report.ts";
import { MACHINE_VERIFY_DEPS, type VerifyOptions, verifySnapshots } from "../src/verify/verify.ts";

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  allowPositionals: true,
  options: {
    "state-dir": { type: "string" },
    manifest: { type: "string" },
    scratch: { type: "string" },
    json: { type: "boolean", default: false },
    options: { type: "string" },
  },
});
const extra = values.options ? JSON.parse(values.options) as Partial<VerifyOptions> : {};
try {
  const report = await verifySnapshots({
    ...extra,
    snapshots: positionals,
    stateDir: values["state-dir"] ?? "/var/lib/vmsnap",
    ...(values.manifest ? { manifest: values.manifest } : {}),
    ...(values.scratch ? { scratch: values.scratch } : {}),
  }, {
    ...MACHINE_VERIFY_DEPS,
    progress: (event) =>
      process.stderr.write(`${JSON.stringify({ ...event, ms: Math.round(performance.now()) })}\n`),
  });
  process.stdout.write(values.json ? `${JSON.stringify(report)}\n` : `${formatReport(report)}\n`);
  process.exitCode = report.exitCode;
} catch (error) {
  if (!(error instanceof VerifyError)) throw error;
  const problem = error.toProblem();
  process.stdout.write(
    values.json
      ? `${JSON.stringify({ event: "verify", verdict: null, exitCode: 2, error: problem })}\n`
      : `vmsnap verify: [${problem.code}] ${problem.message}\n`,
  );
  process.exitCode = 2;
}
