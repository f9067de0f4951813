/**
 * What the verify tests share: a snapshot made by the current
 * `dist/vmsnap run` (the database's loop image copied by the snapshot
 * command while frozen), its manifest built from the run's result, and the
 * verify entry (`tests/verify_cli.ts`) run in a process of its own.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  createReadStream,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { resultOf, ROOT, runBin } from "../helpers.ts";
import type { RunFixture } from "../run_fixture.ts";
import type { RunResult } from "../../src/protocol.ts";
import { buildManifest, type Manifest } from "../../src/verify/manifest.ts";
import { machineBuildDeps, saveManifest } from "../../src/verify/manifest_store.ts";
import type { VerifyReport } from "../../src/verify/report.ts";

/** A snapshot and what the run said about it. */
export interface Snapshot {
  /** The copied image. */
  copy: string;
  result: RunResult;
  manifest: Manifest;
  /** The manifest saved as a file (for --manifest). */
  manifestFile: string;
}

/**
 * `vmsnap run --json` freezing `image`'s mount and copying the image to
 * `copy` (in `dir`), with the given plugins; asserts exit 0 and builds the
 * manifest from the result (saved under `dir/manifests-out`).
 */
export async function snapshotByRun(
  f: RunFixture,
  options: { mount: string; image: string; copy: string; plugins: unknown[]; extraSnap?: string },
): Promise<Snapshot> {
  const snap = f.script(
    `snap-${Math.random().toString(36).slice(2)}.sh`,
    `${options.extraSnap ?? ""}\ncp --sparse=always "${options.image}" "${options.copy}"`,
  );
  const config = f.config({
    freeze: { mounts: [options.mount] },
    snapshot: { command: [snap] },
    plugins: options.plugins,
  });
  const ran = await runBin(["run", "--json", "--config", config], { timeoutMs: 120_000 });
  assert.equal(ran.code, 0, ran.stdout + ran.stderr);
  const result = resultOf<RunResult>(ran.stdout);
  const manifest = buildManifest(result, machineBuildDeps());
  const out = f.path("manifests-out");
  mkdirSync(out, { recursive: true, mode: 0o700 });
  const manifestFile = saveManifest(out, manifest);
  return { copy: options.copy, result, manifest, manifestFile };
}

/** What the verify entry printed and how it ended. */
export interface Verified {
  code: number | null;
  signal: string | null;
  /** The report (or `{ verdict: null, error }`). */
  report: VerifyReport & { error?: { code: string; message: string } };
  /** Progress events (stderr JSON lines). */
  progress: Record<string, unknown>[];
  stderr: string;
}

/** The verify entry's argv (`deno run -A tests/verify_cli.ts …`). */
export function verifyArgv(args: string[]): string[] {
  return ["run", "-A", "--no-check", join(ROOT, "tests", "verify_cli.ts"), "--json", ...args];
}

/** Parses what the verify entry wrote. */
function parse(
  code: number | null,
  signal: string | null,
  stdout: string,
  stderr: string,
): Verified {
  const progress = stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  let report;
  try {
    report = JSON.parse(stdout.trim().split("\n").at(-1) ?? "");
  } catch {
    throw new Error(`verify printed no report (exit ${code} ${signal}):\n${stdout}\n${stderr}`);
  }
  return { code, signal, report, progress, stderr };
}

/** Runs the verify entry; resolves when it exits. */
export function verify(args: string[], timeoutMs = 600_000): Promise<Verified> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, verifyArgv(args), { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      try {
        const verified = parse(code, signal, stdout, stderr);
        if (process.env.VMSNAP_TEST_VERBOSE) console.error(explain(verified.report));
        resolve(verified);
      } catch (error) {
        reject(error);
      }
    });
  });
}

/** A file's SHA-256. */
export function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(path).on("data", (d) => hash.update(d)).on("error", reject).on(
      "end",
      () => resolve(hash.digest("hex")),
    );
  });
}

/** The evidence of a report entry as `name: detail` lines (for assertion messages). */
export function explain(report: Verified["report"]): string {
  return JSON.stringify(
    {
      verdict: report.verdict,
      error: report.error,
      errors: report.errors,
      filesystems: report.filesystems?.map((f) => ({ verdict: f.verdict, evidence: f.evidence })),
      databases: report.databases?.map((d) => ({
        plugin: d.plugin,
        verdict: d.verdict,
        error: d.error,
        evidence: d.evidence,
      })),
    },
    null,
    1,
  );
}

/** Asserts a verify left nothing: no record, no work directory, no loop device on `images`. */
export function assertNothingLeft(stateDir: string, images: string[]): void {
  const active = join(stateDir, "verify", "active");
  let records: string[] = [];
  try {
    records = readdirSync(active);
  } catch {
    // never made
  }
  assert.deepEqual(records, [], "a verify record is left");
  let work: string[] = [];
  try {
    work = readdirSync(join(stateDir, "verify", "work"));
  } catch {
    // never made
  }
  assert.deepEqual(work, [], "a work directory is left");
  for (const image of images) {
    const backing = readdirSync("/sys/block").filter((d) => d.startsWith("loop")).filter((d) => {
      try {
        return readFileSync(`/sys/block/${d}/loop/backing_file`, "utf8").trim() === image;
      } catch {
        return false;
      }
    });
    assert.deepEqual(backing, [], `a loop device is left on ${image}`);
  }
}

/** Mounts an image read-write for `edit` (damage it on purpose), then unmounts and detaches it. */
export function editImage(
  image: string,
  mountPoint: string,
  edit: (mountPoint: string) => void,
): void {
  const device = execFileSync("losetup", ["--find", "--show", image], { encoding: "utf8" }).trim();
  try {
    mkdirSync(mountPoint, { recursive: true, mode: 0o700 });
    execFileSync("mount", [device, mountPoint]);
    try {
      edit(mountPoint);
    } finally {
      execFileSync("umount", [mountPoint]);
    }
  } finally {
    execFileSync("losetup", ["-d", device]);
  }
}

/** Overwrites `bytes` bytes of a file at `offset` with a pattern. */
export function scribble(file: string, offset: number, bytes = 512): void {
  const fd = openSync(file, "r+");
  try {
    writeSync(fd, Buffer.alloc(bytes, 0x5a), 0, bytes, offset);
  } finally {
    closeSync(fd);
  }
}
