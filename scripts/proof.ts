/**
 * The proof: runs the restore-consistency, fault-injection and security
 * suites (tests/consistency, tests/faults, tests/security) and the end-to-end
 * tests that reproduce issue 9's defects against the compiled binary, and
 * writes docs/PROOF.md: each scenario, what it asserts (its name says it),
 * the figures it measured, pass or fail, and for each of issue 9's defects
 * the scenarios that reproduce it (a defect with none found fails the proof).
 *
 * Usage (root): deno task proof [--output docs/PROOF.md]
 *
 * @module
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const deno = join(root, "node_modules", "deno", "deno");
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { output: { type: "string", default: join(root, "docs", "PROOF.md") } },
});
const SECTIONS = [
  ["1. Restore verification", "tests/consistency/"],
  ["2. Fault injection", "tests/faults/"],
  ["3. Bad input and security", "tests/security/"],
] as const;

/**
 * Issue 9's defects, each with the scenarios that reproduce it through the
 * binary: a test file and words of the test's name. Those outside the three
 * suites run too (only the named tests, section 4).
 */
const DEFECTS: { item: string; tests: [file: string, name: string][] }[] = [
  {
    item: "1. A database that accepts the login and then never answers hangs run",
    tests: [
      ["tests/e2e/mysql_test.ts", "a server that accepts the login and then never answers"],
      ["tests/e2e/mysql_test.ts", "SIGTERM while the server is silent after the login"],
      ["tests/e2e/mysql_test.ts", "a server that goes silent before the unlock"],
      ["tests/e2e/postgresql_test.ts", "a server that goes silent after the login"],
      ["tests/e2e/mongodb_test.ts", "accepts the connection and then never answers"],
      ["tests/e2e/mongodb_test.ts", "SIGTERM while the server is silent after the connection"],
    ],
  },
  {
    item: "2. Freezing a filesystem that is not in the plan",
    tests: [
      ["tests/faults/freeze_path_test.ts", "the target lazily unmounted by the pre-script"],
      ["tests/faults/freeze_path_test.ts", "the target mounted over after the plan"],
    ],
  },
  {
    item: "3. The log destroys its own history at its size limit",
    tests: [
      ["tests/faults/state_test.ts", "the log rotates across runs"],
      ["tests/faults/state_test.ts", "records held while frozen are bounded"],
    ],
  },
  {
    item: "4. The guard and the recovery thaw a freeze vmsnap did not make",
    tests: [
      ["tests/faults/freeze_path_test.ts", "a target someone else froze first (EBUSY)"],
      ["tests/e2e/side_effects_test.ts", "recover thaws a marker's mount only while its path"],
    ],
  },
  {
    item: "5. A target unmounted while frozen stays frozen",
    tests: [["tests/faults/freeze_path_test.ts", "the target unmounted while frozen"]],
  },
  {
    item: "6. Two contenders take over a stale run lock",
    tests: [["tests/faults/state_test.ts", "8 runs racing on a stale run lock"]],
  },
  {
    item: "7. snapshot.timeoutInSeconds and a snapshot command blocked on the frozen filesystem",
    tests: [["tests/faults/freeze_path_test.ts", "a snapshot command blocked on the frozen"]],
  },
  {
    item: "8. The external handshake accepts snapshot-done sent before frozen",
    tests: [["tests/e2e/handshake_test.ts", "snapshot-done sent before the frozen line"]],
  },
  {
    item: "9. Secrets in check --json",
    tests: [
      ["tests/security/secrets_test.ts", "never show a password"],
      ["tests/security/secrets_test.ts", "run's result warns ShortSecret"],
    ],
  },
  {
    item: "10. A script's interpreter is not checked",
    tests: [["tests/e2e/scripts_test.ts", "root never runs an interpreter a user could change"]],
  },
  {
    item: "11. Recovery acts on state from an untrusted config",
    tests: [
      ["tests/e2e/side_effects_test.ts", "recover refuses state from a config a user owns"],
      [
        "tests/e2e/side_effects_test.ts",
        "check reports a dead run's leftovers and changes nothing",
      ],
    ],
  },
  {
    item: "12. A script's descendants that left its group survive a timeout",
    tests: [["tests/e2e/scripts_test.ts", "a timeout kills descendants that left the group"]],
  },
  {
    item: "13. A full or read-only stateDir",
    tests: [
      ["tests/faults/state_test.ts", "a full stateDir"],
      ["tests/faults/state_test.ts", "a read-only stateDir"],
      ["tests/faults/state_test.ts", "stateDir full after the lock was taken"],
    ],
  },
  {
    item: "14. A FIFO as log.file",
    tests: [["tests/faults/state_test.ts", "a FIFO as log.file"]],
  },
  {
    item: "14. check --config /dev/zero reads without limit",
    tests: [["tests/e2e/azure_compat_test.ts", "the config is read safely"]],
  },
  {
    item: "14. UTF-8 split across pipe reads; terminal escapes in script output",
    tests: [["tests/e2e/scripts_test.ts", "a character split across pipe reads stays whole"]],
  },
  {
    item: "14. run --json | head -1 prints an EPIPE stack",
    tests: [["tests/faults/state_test.ts", "head -1: no EPIPE stack"]],
  },
  {
    item: "14. Config keys named like Object.prototype members",
    tests: [["tests/e2e/azure_compat_test.ts", "prototype names"]],
  },
  {
    item: "14. The fsfreeze fallback found through the caller's PATH",
    tests: [["tests/e2e/run_test.ts", "the fsfreeze fallback runs /usr/sbin/fsfreeze"]],
  },
  {
    item: "14. status success alongside LogWriteFailed",
    tests: [["tests/faults/faults_test.ts", "a full disk for the log file"]],
  },
  {
    item: "14. A frozen event with no mounts",
    tests: [["tests/e2e/handshake_test.ts", "nothing frozen (fsFreezeEnabled false)"]],
  },
  {
    item: "14. --external with snapshot.command in the config takes the command's timeout",
    tests: [["tests/e2e/handshake_test.ts", "the caller gets the external timeout"]],
  },
];
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
/** The named tests outside the three suites: their files, and one filter for their names. */
const extraTests = DEFECTS.flatMap((d) => d.tests).filter(([file]) =>
  !SECTIONS.some(([, dir]) => file.startsWith(dir))
);
const EXTRA_FILES = [...new Set(extraTests.map(([file]) => file))];
const EXTRA_FILTER = `/${extraTests.map(([, name]) => escapeRegExp(name)).join("|")}/`;

if (process.getuid?.() !== 0) {
  console.error("the proof mounts, freezes and starts databases: run it as root.");
  process.exit(2);
}
if (!existsSync(join(root, "dist", "vmsnap"))) {
  execFileSync(deno, ["run", "-A", "scripts/build.ts"], { cwd: root, stdio: "inherit" });
}

const work = mkdtempSync("/tmp/vmsnap-proof-");
const junit = join(work, "junit.xml");
const junitExtra = join(work, "junit-e2e.xml");
const figuresFile = join(work, "figures.jsonl");
writeFileSync(figuresFile, "");
const started = performance.now();
/** One `deno test` run; its exit code. */
const denoTest = (args: string[]) =>
  new Promise<number>((resolve) => {
    const child = spawn(deno, ["test", "-A", ...args], {
      cwd: root,
      stdio: "inherit",
      env: { ...process.env, VMSNAP_PROOF_FIGURES: figuresFile },
    });
    child.on("close", (c) => resolve(c ?? 1));
  });
const codes = [
  await denoTest([`--junit-path=${junit}`, ...SECTIONS.map(([, dir]) => dir)]),
  await denoTest([`--junit-path=${junitExtra}`, `--filter=${EXTRA_FILTER}`, ...EXTRA_FILES]),
];
const code = codes.some((c) => c !== 0) ? 1 : 0;
const seconds = (performance.now() - started) / 1000;

interface Case {
  name: string;
  file: string;
  time: number;
  outcome: "pass" | "FAIL" | "skipped";
}
const unescape = (s: string) =>
  s.replace(/&apos;/g, "'").replace(/&quot;/g, '"').replace(/&lt;/g, "<").replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");
const xml = [junit, junitExtra].filter(existsSync).map((f) => readFileSync(f, "utf8")).join("\n");
const cases: Case[] = [];
for (
  const m of xml.matchAll(
    /<testcase name="([^"]*)" classname="([^"]*)"(?: time="([\d.]+)")?[^>]*>([\s\S]*?)<\/testcase>/g,
  )
) {
  cases.push({
    name: unescape(m[1]),
    file: m[2],
    time: Number(m[3] ?? 0),
    outcome: /<failure|<error/.test(m[4]) ? "FAIL" : /<skipped/.test(m[4]) ? "skipped" : "pass",
  });
}
const figures = readFileSync(figuresFile, "utf8").trim().split("\n").filter(Boolean).map((l) =>
  JSON.parse(l) as { scenario: string; name: string; value: number; unit: string }
);
/** Each defect's scenarios as they ran (none found: the proof fails). */
const defects = DEFECTS.map((d) => ({
  item: d.item,
  cases: d.tests.flatMap(([file, name]) =>
    cases.filter((c) => c.file.includes(file) && c.name.includes(name))
  ),
}));
const unproven = defects.filter((d) => d.cases.length === 0);
const passed = cases.filter((c) => c.outcome === "pass").length;
const failed = cases.filter((c) => c.outcome === "FAIL").length + unproven.length;
/** How many scenarios ran in a section (a directory, or section 4's end-to-end files). */
const countIn = (dir: string) =>
  cases.filter((c) => c.file.includes(dir.replace(/\/$/, ""))).length;
// The junit lists the tests the filter left out as skipped: only those that ran count.
const extraCount =
  cases.filter((c) => c.outcome !== "skipped" && EXTRA_FILES.some((f) => c.file.includes(f)))
    .length;

let commit = "?";
try {
  commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" })
    .trim();
  const dirty = execFileSync("git", [
    "status",
    "--porcelain",
    "--",
    "src",
    "plugins",
    "tests",
    "mod.ts",
  ], {
    cwd: root,
    encoding: "utf8",
  });
  if (dirty.trim()) commit += " with uncommitted changes";
} catch {
  // not a checkout
}
const kernel = execFileSync("uname", ["-r"], { encoding: "utf8" }).trim();
/** The first line of a command's version output, matched; "?" when it is not there. */
const versionOf = (command: string, args: string[], pattern: RegExp): string => {
  try {
    const out = execFileSync(command, args, {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    return out.match(pattern)?.[1] ?? "?";
  } catch {
    return "?";
  }
};
const servers = [
  `MariaDB ${versionOf("mariadbd", ["--version"], /Ver (\d+\.\d+\.\d+)/)}`,
  `PostgreSQL ${versionOf("/usr/lib/postgresql/15/bin/postgres", ["--version"], /(\d+\.\d+)/)}`,
  `Redis ${versionOf("redis-server", ["--version"], /v=(\d+\.\d+\.\d+)/)}`,
  `SQLite ${versionOf("sqlite3", ["--version"], /^(\d+\.\d+\.\d+)/)}`,
].join(", ");
const lines = [
  "# PROOF: restored snapshots are consistent, and no fault leaves a filesystem frozen or a database locked",
  "",
  `Generated by \`deno task proof\` (scripts/proof.ts) on ${
    new Date().toISOString().slice(0, 16).replace("T", " ")
  } UTC from commit ${commit}: ${cpus().length} cores, Linux ${kernel}, the compiled \`dist/vmsnap\`, real ${servers} (databases on files), a MongoDB wire-protocol server written for the tests, loop-mounted filesystems made by the tests. CI runs the same suites.`,
  "",
  `**${passed} passed, ${failed} failed** in ${seconds.toFixed(0)} s: ${
    [
      ...SECTIONS.map(([title, dir]) =>
        `${title.replace(/^\d+\. /, "").toLowerCase()} ${countIn(dir)}`
      ),
      `issue 9's defects outside those suites ${extraCount}`,
    ].join(", ")
  } (steps of a scenario count as scenarios)${
    unproven.length ? `; ${unproven.length} defect(s) of issue 9 with no scenario found` : ""
  }.`,
  "",
  "Each scenario's name says what it asserts. Every fault scenario also asserts afterwards: no mount frozen (a write from another process succeeds within 1 s), no database lock held (a write succeeds), no process of the run left, the run lock released, and the result or the next start says what happened.",
];
for (const [title, dir] of SECTIONS) {
  const inSection = cases.filter((c) => c.file.includes(dir.replace(/\/$/, "")));
  lines.push("", `## ${title}`, "");
  if (inSection.length === 0) {
    lines.push("No scenario ran in this section.");
    continue;
  }
  lines.push("| scenario | result | time | measured |", "| --- | --- | --- | --- |");
  for (const c of inSection) {
    const own = figures.filter((f) =>
      c.name.includes(f.scenario) || c.name.endsWith(`> ${f.scenario}`)
    );
    const measured = own.map((f) => `${f.name}: ${f.value} ${f.unit}`).join("; ");
    lines.push(
      `| ${c.name.replace(/\|/g, "\\|")} | ${c.outcome} | ${c.time.toFixed(1)} s | ${measured} |`,
    );
  }
}
lines.push(
  "",
  "## 4. The defects adversarial testing found (issue 9)",
  "",
  `Each defect and the scenarios that reproduce it through the binary (the end-to-end ones run here too: ${
    EXTRA_FILES.map((f) => `\`${f}\``).join(", ")
  }, only the named tests).`,
  "",
  "| defect | scenarios | result |",
  "| --- | --- | --- |",
);
for (const d of defects) {
  const names = d.cases.map((c) => c.name.replace(/\|/g, "\\|")).join("<br>");
  const outcome = d.cases.length === 0
    ? "FAIL (no scenario found)"
    : d.cases.every((c) => c.outcome === "pass")
    ? "pass"
    : "FAIL";
  lines.push(`| ${d.item.replace(/\|/g, "\\|")} | ${names} | ${outcome} |`);
}
const used = new Set<string>();
for (const c of cases) {
  for (const f of figures) if (c.name.includes(f.scenario)) used.add(JSON.stringify(f));
}
const other = figures.filter((f) => !used.has(JSON.stringify(f)));
if (other.length > 0) {
  lines.push("", "## Figures", "", "| scenario | figure | value |", "| --- | --- | --- |");
  for (const f of other) lines.push(`| ${f.scenario} | ${f.name} | ${f.value} ${f.unit} |`);
}
writeFileSync(values.output!, lines.join("\n") + "\n");
rmSync(work, { recursive: true, force: true });
console.log(`\nwrote ${values.output}: ${passed} passed, ${failed} failed`);
process.exit(code === 0 && failed === 0 ? 0 : 1);
