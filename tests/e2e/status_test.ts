/**
 * Reporting through the binary: `vmsnap status`, the Prometheus textfile,
 * the journal's priority prefixes, the record a run leaves when it fails
 * before its config is read, and `vmsnap schema`.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync } from "node:fs";
import { statSync } from "node:fs";
import { join } from "node:path";
import { BIN, json, put, putConfig, resultOf, ROOT, runBin, secureDir } from "../helpers.ts";
import { dbDir, startMariaDb } from "../db_servers.ts";

/** A sample value of the textfile. */
function sample(text: string, metric: string): number | undefined {
  const escaped = metric.replace(/[{}"=,]/g, (c) => `\\${c}`);
  const match = text.match(new RegExp(`^${escaped} (\\S+)$`, "m"));
  return match ? Number(match[1]) : undefined;
}

Deno.test("after a run: status shows it, the textfile has it, a failed run keeps the last good time", async () => {
  const { dir, cleanup } = secureDir("status-");
  const db = dbDir();
  const server = await startMariaDb(db.dir);
  try {
    const metricsDir = join(dir, "node-exporter");
    put(join(metricsDir, ".keep"), "", 0o600);
    const textfile = join(metricsDir, "vmsnap.prom");
    const snapshot = put(join(dir, "bin", "snap"), "#!/bin/sh\nsleep 0.2\n", 0o700);
    const failing = put(join(dir, "bin", "fail"), "#!/bin/sh\nexit 3\n", 0o700);
    const config = putConfig(dir, {
      freeze: { mounts: [server.fs.mountPoint] },
      snapshot: { command: [snapshot] },
      plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
      stateDir: join(dir, "state"),
      log: { file: join(dir, "log", "vmsnap.jsonl") },
      metrics: { textfile },
    });

    const ran = await runBin(["run", "--json", "--config", config]);
    const result = resultOf(ran.stdout);
    assert.equal(ran.code, 0, ran.stdout + ran.stderr);
    const text = readFileSync(textfile, "utf8");
    assert.equal(statSync(textfile).mode & 0o777, 0o644);
    assert.deepEqual(readdirSync(metricsDir).sort(), [".keep", "vmsnap.prom"], "no temp files");
    for (const line of text.trim().split("\n")) {
      assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{(\w+="[^"]*",?)+\})? -?[\d.e+]+)$/, line);
    }
    assert.equal(sample(text, "vmsnap_last_run_exit_code"), 0);
    assert.equal(sample(text, 'vmsnap_last_run_status{status="success"}'), 1);
    assert.equal(sample(text, 'vmsnap_last_run_consistency{consistency="application"}'), 1);
    assert.ok(sample(text, "vmsnap_last_run_frozen_seconds")! > 0.15, text);
    const hold = sample(text, 'vmsnap_last_run_plugin_hold_seconds{plugin="shop",type="mysql"}');
    assert.ok(hold! >= 0.2, `the lock was held across the 0.2 s snapshot: ${hold}`);
    assert.ok(
      Math.abs(sample(text, "vmsnap_last_run_timestamp_seconds")! - Date.now() / 1000) < 60,
    );
    const goodTime = sample(text, "vmsnap_last_application_consistent_timestamp_seconds");
    assert.ok(goodTime);

    const status = await runBin(["status", "--json", "--config", config]);
    assert.equal(status.code, 0, status.stdout + status.stderr);
    const shown = json<{ lastResult: { runId: string }; recordedAt: string }>(status);
    assert.equal(shown.lastResult.runId, result.runId);
    const human = await runBin(["status", "--config", config]);
    assert.match(human.stdout, new RegExp(`last run ${result.runId}: success, application`));
    assert.match(human.stdout, /plugin shop \(mysql\): ok, held \d+ ms/);

    // A failed run: its status is recorded; the last good snapshot's time stays.
    const failed = await runBin([
      "run",
      "--json",
      "--config",
      config,
      "--snapshot-command",
      failing,
    ]);
    assert.equal(failed.code, 2, failed.stdout);
    const after = readFileSync(textfile, "utf8");
    assert.equal(sample(after, "vmsnap_last_run_exit_code"), 2);
    assert.equal(sample(after, 'vmsnap_last_run_status{status="failed"}'), 1);
    assert.equal(sample(after, "vmsnap_last_run_snapshot_taken"), 0);
    assert.equal(sample(after, "vmsnap_last_application_consistent_timestamp_seconds"), goodTime);
    const again = await runBin(["status", "--config", config]);
    assert.equal(again.code, 2);
    assert.match(again.stdout, /: failed, none-consistent \(no snapshot\), exit 2/);
  } finally {
    await server.stop();
    db.cleanup();
    cleanup();
  }
});

Deno.test("a run that fails before its config is read leaves its record in the default places", async () => {
  const { dir, cleanup } = secureDir("norecord-");
  try {
    const ran = await runBin(["run", "--config", join(dir, "missing.json")]);
    assert.equal(ran.code, 2);
    assert.match(ran.stderr, /ConfigFileNotFound/);
    const runId = ran.stderr.match(/vmsnap run (\S+): failed/)?.[1];
    assert.ok(runId, ran.stderr);
    const log = readFileSync("/var/log/vmsnap/vmsnap.jsonl", "utf8").trim().split("\n")
      .map((l) => JSON.parse(l)).filter((r) => r.runId === runId);
    assert.equal(log.length, 1);
    assert.equal(log[0].event, "result");
    assert.equal(log[0].errors[0].code, "ConfigFileNotFound");
    assert.equal(statSync("/var/log/vmsnap").mode & 0o777, 0o700);
    // Other runs on this machine may record after this one: the file exists and is root's.
    assert.equal(statSync("/var/lib/vmsnap/last-result.json").mode & 0o777, 0o600);
  } finally {
    cleanup();
  }
});

Deno.test("a run that fails before its config is read leaves the metrics textfile at the default place too", () => {
  // A private mount namespace with tmpfs over /var/lib and /var/log: the default places exist
  // (node_exporter's directory included) for this run alone, and nothing of the machine's changes.
  const script = `set -e
mount -t tmpfs -o mode=0755 vmsnap-test-lib /var/lib
mount -t tmpfs -o mode=0755 vmsnap-test-log /var/log
mkdir -p /var/lib/prometheus/node-exporter
"$0" run --config /nonexistent/missing.json 2>&1 || echo "exit $?"
echo "--- metrics"; cat /var/lib/prometheus/node-exporter/vmsnap.prom
echo "--- last"; cat /var/lib/vmsnap/last-result.json; echo
echo "--- log"; cat /var/log/vmsnap/vmsnap.jsonl`;
  const ran = spawnSync(
    "unshare",
    ["--mount", "--propagation", "private", "sh", "-c", script, BIN],
    {
      encoding: "utf8",
    },
  );
  assert.equal(ran.status, 0, ran.stderr + ran.stdout);
  const [run, metrics, last, log] = ran.stdout.split(/^--- \w+$/m);
  assert.match(run, /ConfigFileNotFound/);
  assert.match(run, /^exit 2$/m);
  const runId = run.match(/vmsnap run (\S+): failed/)?.[1];
  assert.ok(runId, run);
  assert.equal(
    sample(
      metrics,
      `vmsnap_last_run_info{run_id="${runId}",mode="run",version="${
        JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version
      }"}`,
    ),
    1,
    metrics,
  );
  assert.equal(sample(metrics, "vmsnap_last_run_exit_code"), 2);
  assert.equal(sample(metrics, 'vmsnap_last_run_status{status="failed"}'), 1);
  assert.equal(sample(metrics, 'vmsnap_last_run_consistency{consistency="none"}'), 1);
  assert.equal(JSON.parse(last).runId, runId);
  assert.equal(JSON.parse(log.trim()).errors[0].code, "ConfigFileNotFound");
});

Deno.test("stderr as the journal (JOURNAL_STREAM matches fd 2): one prefixed line per event", () => {
  const { dir, cleanup } = secureDir("journal-");
  try {
    const stderrFile = join(dir, "stderr");
    const runWith = (journal: (fd: number) => string) => {
      const fd = openSync(stderrFile, "w");
      const stat = fstatSync(fd);
      const ran = spawnSync(BIN, ["run", "--config", join(dir, "missing.json")], {
        stdio: ["ignore", "pipe", fd],
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", JOURNAL_STREAM: journal(stat.ino) },
      });
      closeSync(fd);
      assert.equal(ran.status, 2);
      return readFileSync(stderrFile, "utf8").trim().split("\n");
    };
    const dev = fstatSync(openSync(ROOT, "r")).dev;
    const devOf = (path: string) => statSync(path).dev;
    const lines = runWith((ino) => `${devOf(stderrFile)}:${ino}`);
    for (const line of lines) assert.match(line, /^<[0-7]>/, line);
    assert.ok(lines.some((l) => /^<3>vmsnap run \S+: failed/.test(l)), lines.join("\n"));
    assert.ok(lines.some((l) => /^<3>\s+\[ConfigFileNotFound\]/.test(l)), lines.join("\n"));
    assert.ok(lines.some((l) => /^<6>\+[\d.]+s\s+check/.test(l)), lines.join("\n"));
    // Another stream (a pipe or a file in between): no prefixes.
    const plain = runWith((ino) => `${dev}:${ino + 1}`);
    assert.ok(plain.every((l) => !/^<\d>/.test(l)), plain.join("\n"));
  } finally {
    cleanup();
  }
});

Deno.test("vmsnap schema prints docs/vmsnap.schema.json", async () => {
  const ran = await runBin(["schema"]);
  assert.equal(ran.code, 0, ran.stderr);
  assert.equal(ran.stdout, readFileSync(join(ROOT, "docs", "vmsnap.schema.json"), "utf8"));
  assert.ok(existsSync(join(ROOT, "docs", "vmsnap.schema.json")));
});

Deno.test("status in words never prints a script's escape sequences raw", async () => {
  const { dir, cleanup } = secureDir("status-esc-");
  try {
    const snapshot = put(
      join(dir, "snap"),
      '#!/bin/sh\nprintf "\\033[2Jboom" >&2\nexit 1\n',
      0o700,
    );
    const config = putConfig(dir, {
      fsFreezeEnabled: false,
      snapshot: { command: [snapshot] },
      stateDir: join(dir, "state"),
      log: { file: join(dir, "log", "vmsnap.jsonl") },
    });
    assert.equal((await runBin(["run", "--config", config])).code, 2);
    const status = await runBin(["status", "--config", config]);
    assert.match(status.stdout, /boom/);
    assert.ok(!status.stdout.includes("\u001b"), JSON.stringify(status.stdout));
  } finally {
    cleanup();
  }
});

Deno.test("a config that fails the permission rules never chooses where root writes the record", async () => {
  const { dir, cleanup } = secureDir("untrusted-record-");
  try {
    const target = join(dir, "attacker");
    Deno.mkdirSync(target, { mode: 0o700 });
    // Written by a user: stateDir and the textfile it names must not be used.
    const config = put(
      join(dir, "user.json"),
      JSON.stringify({
        stateDir: target,
        metrics: { textfile: join(target, "cron-job") },
      }),
      0o666,
    );
    const ran = await runBin(["run", "--config", config]);
    assert.equal(ran.code, 2, ran.stderr);
    assert.match(ran.stderr, /InsufficientPermissionforConfigFile/);
    assert.deepEqual(readdirSync(target), [], "nothing written where the user's config points");
  } finally {
    cleanup();
  }
});
