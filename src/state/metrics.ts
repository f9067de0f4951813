/**
 * The Prometheus textfile: the last run's (or hook hold's) outcome for
 * node_exporter's textfile collector, at `metrics.textfile` (default
 * {@link DEFAULT_METRICS_FILE}, Debian's collector directory). Written whole
 * (a new file renamed over the old one, so the collector never reads half a
 * file), mode 0644 (node_exporter is not root), and only after the thaw:
 * callers write it once the result is final.
 *
 * Durations are in seconds (Prometheus' base unit), with millisecond
 * resolution.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";
import type { RunResult } from "../protocol.ts";
import { VERSION } from "../version.ts";

/** A consistency level, as the result says it. */
type Consistency = RunResult["consistency"];

/** What the metrics are made of: a run's or a hook's result (the fields both have). */
export interface ResultForMetrics {
  runId: string;
  status: "success" | "degraded" | "failed";
  consistency: Consistency;
  snapshotTaken: boolean;
  exitCode: number;
  errors: { code: string }[];
  plugins: {
    name: string;
    type: string;
    quiesce: { ok: boolean } | null;
    resume: { ok: boolean; facts: Record<string, unknown> } | null;
  }[];
  freeze: { frozenMs: number; mounts: unknown[] };
  durationMs: number;
  mode?: string;
}

const STATUSES = ["success", "degraded", "failed"] as const;
const CONSISTENCIES: Consistency[] = ["application", "filesystem", "crash", "none"];
const LAST_APP = "vmsnap_last_application_consistent_timestamp_seconds";

/** A label value, escaped as the exposition format wants. */
const label = (value: string) =>
  value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(
    /\n/g,
    "\\n",
  );
const seconds = (ms: number) => Number((ms / 1000).toFixed(3));

/**
 * The textfile's content. `previous` is the file as it was, for the time of
 * the last application-consistent snapshot, which a later failed run keeps.
 *
 * @example
 * ```ts
 * import { metricsText } from "./metrics.ts";
 * const text = metricsText({
 *   runId: "r1", status: "success", consistency: "application", snapshotTaken: true,
 *   exitCode: 0, errors: [], plugins: [], freeze: { frozenMs: 12, mounts: [] }, durationMs: 900,
 * }, { now: new Date() });
 * text.includes("vmsnap_last_run_exit_code 0"); // true
 * ```
 */
export function metricsText(
  result: ResultForMetrics,
  options: { now: Date; previous?: string },
): string {
  const now = options.now.getTime() / 1000;
  const lines: string[] = [];
  const metric = (
    name: string,
    help: string,
    samples: [Record<string, string>, number][],
  ) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    for (const [labels, value] of samples) {
      const text = Object.entries(labels).map(([k, v]) => `${k}="${label(v)}"`).join(",");
      lines.push(`${name}${text ? `{${text}}` : ""} ${value}`);
    }
  };
  metric("vmsnap_last_run_timestamp_seconds", "When the last run (or hook hold) ended.", [
    [{}, Number(now.toFixed(3))],
  ]);
  metric(
    "vmsnap_last_run_info",
    "The last run: its id, mode (run or hook) and vmsnap's version.",
    [[{ run_id: result.runId, mode: result.mode ?? "run", version: VERSION }, 1]],
  );
  metric(
    "vmsnap_last_run_status",
    "The last run's status: 1 for the one it had.",
    STATUSES.map((s) => [{ status: s }, s === result.status ? 1 : 0]),
  );
  metric(
    "vmsnap_last_run_consistency",
    "The last snapshot's consistency: 1 for the one it had (none: no snapshot).",
    CONSISTENCIES.map((c) => [{ consistency: c }, c === result.consistency ? 1 : 0]),
  );
  metric("vmsnap_last_run_exit_code", "The last run's exit code (0, 1, 2).", [
    [{}, result.exitCode],
  ]);
  metric("vmsnap_last_run_snapshot_taken", "1 when the last run took a snapshot.", [
    [{}, result.snapshotTaken ? 1 : 0],
  ]);
  metric("vmsnap_last_run_errors", "Errors the last run reported.", [
    [{}, result.errors.length],
  ]);
  metric("vmsnap_last_run_duration_seconds", "How long the last run took.", [
    [{}, seconds(result.durationMs)],
  ]);
  metric(
    "vmsnap_last_run_frozen_seconds",
    "How long the last run kept filesystems frozen (0: none frozen by vmsnap).",
    [[{}, seconds(result.freeze?.frozenMs ?? 0)]],
  );
  metric(
    "vmsnap_last_run_plugin_hold_seconds",
    "How long each database plugin held its lock in the last run.",
    result.plugins.flatMap((p) => {
      const ms = p.resume?.facts?.holdMs;
      return typeof ms === "number" ? [[{ plugin: p.name, type: p.type }, seconds(ms)]] : [];
    }) as [Record<string, string>, number][],
  );
  metric(
    "vmsnap_last_run_plugin_ok",
    "1 when a plugin quiesced and resumed without error in the last run.",
    result.plugins.map((p) => [
      { plugin: p.name, type: p.type },
      p.quiesce?.ok && p.resume?.ok ? 1 : 0,
    ]),
  );
  const previousApp = options.previous?.match(new RegExp(`^${LAST_APP} ([0-9.e+]+)$`, "m"))?.[1];
  const lastApp = result.consistency === "application" ? now : Number(previousApp ?? NaN);
  if (Number.isFinite(lastApp)) {
    metric(LAST_APP, "When the last application-consistent snapshot was taken.", [
      [{}, Number(lastApp.toFixed(3))],
    ]);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Writes the textfile atomically. A missing directory is not created (no
 * node_exporter here): the answer says so. Returns an error message, or
 * undefined when written.
 *
 * @example
 * ```ts
 * import { writeMetrics } from "./metrics.ts";
 * // after the run, never while frozen:
 * // writeMetrics("/var/lib/prometheus/node-exporter/vmsnap.prom", result);
 * ```
 */
export function writeMetrics(
  file: string,
  result: ResultForMetrics,
  now = new Date(),
): { written: boolean; error?: string } {
  const dir = dirname(file);
  if (!existsSync(dir)) {
    return { written: false, error: `${dir} does not exist (is node_exporter installed?)` };
  }
  let previous: string | undefined;
  try {
    previous = readFileSync(file, "utf8");
  } catch {
    // First run.
  }
  const fresh = join(dir, `.${file.split("/").at(-1)}.${randomBytes(6).toString("hex")}`);
  try {
    const fd = openSync(
      fresh,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o644,
    );
    try {
      fchmodSync(fd, 0o644);
      writeSync(fd, metricsText(result, { now, previous }));
    } finally {
      closeSync(fd);
    }
    renameSync(fresh, file);
    return { written: true };
  } catch (error) {
    try {
      unlinkSync(fresh);
    } catch {
      // never created
    }
    return { written: false, error: `${file}: ${(error as Error).message}` };
  }
}
