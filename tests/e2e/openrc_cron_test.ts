/**
 * The scheduled run where no systemd timer exists (OpenRC):
 * `packaging/openrc/vmsnap-cron`, as cron starts it, runs `vmsnap run` with
 * the settings of its conf.d file, says the outcome in one line, exits with
 * vmsnap's code, and waits the machine's fixed offset first. Nothing is
 * frozen (the config turns the freeze off).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, put, putConfig, ROOT, secureDir } from "../helpers.ts";

const CRON = join(ROOT, "packaging/openrc/vmsnap-cron");

/** Runs the cron script as cron does (sh, a minimal environment), with these settings. */
function cron(settings: string) {
  const started = performance.now();
  const ran = spawnSync("/bin/sh", [CRON], {
    encoding: "utf8",
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", VMSNAP_CONFD: settings },
    timeout: 60_000,
  });
  return { ...ran, ms: performance.now() - started };
}

Deno.test("vmsnap-cron (OpenRC's schedule): runs vmsnap run with its settings, logs the outcome, passes the exit code", () => {
  const { dir, cleanup } = secureDir("cron-");
  try {
    const log = join(dir, "cron.log");
    const config = putConfig(dir, {
      fsFreezeEnabled: false,
      stateDir: join(dir, "state"),
      log: { file: join(dir, "vmsnap.jsonl") },
      snapshot: { command: ["/bin/true"] },
    });
    const settings = (extra: string) =>
      put(
        join(dir, "vmsnap.confd"),
        [
          `VMSNAP_BIN=${BIN}`,
          `VMSNAP_CONFIG=${config}`,
          "VMSNAP_RUN_ARGS=--json",
          `VMSNAP_LOG_COMMAND="tee -a ${log}"`,
          extra,
          "",
        ].join("\n"),
        0o600,
      );

    const done = cron(settings("VMSNAP_DELAY_MAX=0"));
    assert.ok(done.status === 0 || done.status === 1, done.stderr);
    const result = done.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) =>
      JSON.parse(l)
    )
      .find((r) => r.event === "result");
    assert.equal(result?.exitCode, done.status, done.stdout);
    assert.ok(existsSync(join(dir, "state/last-result.json")), "vmsnap ran with the config named");
    assert.match(
      readFileSync(log, "utf8"),
      new RegExp(`^vmsnap run: .*\\(exit ${done.status}\\)`, "m"),
    );

    // Each machine waits its own fixed offset, within VMSNAP_DELAY_MAX.
    const waited = cron(settings("VMSNAP_DELAY_MAX=2"));
    assert.ok(waited.status === done.status, waited.stderr);
    assert.ok(waited.ms < 2_000 + 20_000, `waited ${Math.round(waited.ms)} ms`);

    // A failed run: its code, and the line says so.
    const failed = cron(settings(`VMSNAP_CONFIG=${join(dir, "missing.json")}\nVMSNAP_DELAY_MAX=0`));
    assert.equal(failed.status, 2, failed.stdout);
    assert.match(
      readFileSync(log, "utf8"),
      /^vmsnap run failed \(exit 2\): vmsnap status and the log say why$/m,
    );
  } finally {
    cleanup();
  }
});
