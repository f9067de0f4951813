/**
 * The whole test suite, as CI runs it: formatting, lint, type check, the unit
 * suite under Deno, the binary build, and the end-to-end suite against the
 * binary. Ends with one line `tests: N passed, N failed`.
 *
 * Usage: deno task test:all   (as root: the tests mount loop filesystems)
 *
 * @module
 */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import process from "node:process";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const deno = join(root, "node_modules", "deno", "deno");

const steps: [string, string[]][] = [
  ["format", ["fmt", "--check"]],
  ["lint", ["lint"]],
  ["type check", ["check", "mod.ts", "src/", "plugins/", "scripts/", "tests/"]],
  ["doc examples type-check", ["check", "--doc-only", "mod.ts", "src/", "plugins/"]],
  ["no import cycles", ["run", "-A", "scripts/check_cycles.ts"]],
  ["unit tests (Deno)", ["test", "-A", "--parallel", "tests/unit/"]],
  ["build dist/vmsnap", ["run", "-A", "scripts/build.ts"]],
  ["end-to-end tests (dist/vmsnap)", ["test", "-A", "tests/e2e/"]],
  ["proof: consistency, faults, security, issue 9's defects (writes docs/PROOF.md)", [
    "run",
    "-A",
    "scripts/proof.ts",
  ]],
  ["vmtest: vmsnap in a Debian VM under QEMU (writes docs/VMTEST.md)", [
    "run",
    "-A",
    "scripts/vmtest.ts",
  ]],
];

/** Runs one step, streaming its output, and returns its exit code and output. */
function run(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(deno, args, {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1" },
    });
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
      process.stdout.write(d);
    });
    child.stderr.on("data", (d) => {
      output += d;
      process.stderr.write(d);
    });
    child.on("close", (code) => resolve({ code: code ?? 1, output }));
  });
}

if (process.getuid?.() !== 0) {
  console.error("test:all must run as root: the tests mount loop filesystems and chown files.");
  process.exit(2);
}

let passed = 0;
let failed = 0;
const failures: string[] = [];
for (const [name, args] of steps) {
  console.log(`\n=== ${name}: deno ${args.join(" ")}`);
  const { code, output } = await run(args);
  for (
    const match of output.matchAll(
      /^(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/gm,
    )
  ) {
    passed += Number(match[1]);
    failed += Number(match[2]);
  }
  if (code !== 0) {
    failures.push(name);
    // A step that is not a test run still fails the suite.
    if (!/^(?:ok|FAILED) \|/m.test(output)) failed++;
    if (name.startsWith("build")) break;
  }
}
console.log(failures.length ? `\nFailed steps: ${failures.join(", ")}` : "\nAll steps passed.");
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failures.length ? 1 : 0);
