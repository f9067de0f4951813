/**
 * The verify report: one JSON object (`verdict`, `databases`,
 * `filesystems`, with the evidence) and its readable text form.
 *
 * @module
 */
import type { Consistency } from "../run/consistency.ts";
import type { VerifyProblem } from "./codes.ts";
import type { ManifestDatabase } from "./manifest.ts";
import type { SourceKind } from "./sources.ts";
import type { Evidence, Verdict } from "./verdict.ts";

/** One filesystem of the snapshot. */
export interface FilesystemReport {
  /** The SNAPSHOT argument it is on. */
  snapshot: string;
  partition?: number;
  fsType?: string;
  uuid?: string;
  label?: string;
  /** Its mount point on the VM, from the manifest. */
  mountPoint?: string;
  /** Null when it was not judged (`skipped` says why). */
  verdict: Verdict | null;
  skipped?: string;
  evidence: Evidence[];
}

/** One database. */
export interface DatabaseReport {
  /** The plugin's name (from the manifest), or the type and directory when found without one. */
  plugin: string;
  type: string;
  /** Its data directory on the VM. */
  dataDir?: string;
  /** Null when it could not be verified (`error` says why). */
  verdict: Verdict | null;
  error?: VerifyProblem;
  evidence: Evidence[];
  /** What the manifest recorded for it. */
  recorded?: ManifestDatabase;
  durationMs: number;
}

/** Where the manifest came from. */
export interface ManifestUsed {
  source: "snapshot" | "stateDir" | "option";
  path: string;
  runId: string;
  consistency: Consistency;
  stage: "final" | "frozen";
}

/** The whole report. */
export interface VerifyReport {
  event: "verify";
  verifyId: string;
  /** The lowest verdict of all (capped at crash-consistent when something was not verified). */
  verdict: Verdict;
  exitCode: 0 | 1 | 2;
  manifest: ManifestUsed | null;
  snapshots: { arg: string; path: string; kind: SourceKind }[];
  filesystems: FilesystemReport[];
  databases: DatabaseReport[];
  warnings: VerifyProblem[];
  errors: VerifyProblem[];
  startedAt: string;
  durationMs: number;
  /** Where the report was kept (`<stateDir>/verify/<verifyId>.json`). */
  reportFile?: string;
}

/** One evidence line. */
function evidenceLine(e: Evidence): string {
  const mark = e.kind === "info" ? "  info" : e.ok ? "    ok" : "  FAIL";
  return `    ${mark}  ${e.name}: ${e.detail}`;
}

/**
 * The report as text for a terminal: the verdict first, then each
 * filesystem and database with its evidence, then warnings and errors.
 *
 * @example
 * ```ts
 * import { formatReport, type VerifyReport } from "./report.ts";
 * declare const report: VerifyReport;
 * console.log(formatReport(report));
 * ```
 */
export function formatReport(report: VerifyReport): string {
  const m = report.manifest;
  const lines = [
    `vmsnap verify ${report.verifyId}: ${report.verdict} (exit ${report.exitCode}), ${
      (report.durationMs / 1000).toFixed(1)
    } s`,
    m
      ? `  manifest: run ${m.runId} (${m.consistency}-consistent), from ${
        m.source === "option" ? "--manifest" : m.source === "snapshot" ? "the snapshot" : "stateDir"
      } ${m.path}`
      : "  manifest: none found (nothing to compare: at best crash-consistent)",
  ];
  for (const fs of report.filesystems) {
    const where = `${fs.snapshot}${fs.partition ? ` partition ${fs.partition}` : ""}`;
    const what = [
      fs.fsType,
      fs.uuid && `UUID ${fs.uuid}`,
      fs.mountPoint && `(${fs.mountPoint} on the VM)`,
    ]
      .filter(Boolean).join(" ");
    lines.push(`  filesystem ${where} ${what}: ${fs.verdict ?? `not judged: ${fs.skipped}`}`);
    lines.push(...fs.evidence.map(evidenceLine));
  }
  for (const db of report.databases) {
    lines.push(
      `  database ${db.plugin} (${db.type}${db.dataDir ? `, ${db.dataDir}` : ""}): ${
        db.verdict ?? "not verified"
      }`,
    );
    lines.push(...db.evidence.map(evidenceLine));
    if (db.error) lines.push(`    [${db.error.code}] ${db.error.message}`);
  }
  for (const w of report.warnings) lines.push(`  warning [${w.code}] ${w.message}`);
  for (const e of report.errors) lines.push(`  error [${e.code}] ${e.message}`);
  if (report.reportFile) lines.push(`  report: ${report.reportFile}`);
  return lines.join("\n");
}
