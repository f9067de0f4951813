/**
 * `verifySnapshots`: proves what a snapshot restores to, on this machine,
 * without writing to it. Each SNAPSHOT (a block device, a raw or qcow2
 * image, a directory an admin mounted) is mounted read-only without journal
 * replay inside private namespaces, under overlays whose upper layers are
 * scratch space; each database the manifest names is started by this
 * machine's server as its service user, on a private socket, with resource
 * limits, and checked; everything is stopped and removed after. The verdict
 * per filesystem and per database, with the evidence, and the lowest of
 * them, come back as a {@linkcode VerifyReport}.
 *
 * What verify sets up is recorded first (`ledger.ts`); a verify killed on
 * the way leaves nothing mounted or running (the kernel ends the
 * namespaces), and the next verify removes what the record names.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { totalmem } from "node:os";
import { dirname, join, posix } from "node:path";
import process from "node:process";
import {
  VERIFY_CHECK_TIMEOUT_SECONDS,
  VERIFY_REPORTS_KEPT,
  VERIFY_SERVER_LIMITS,
  VERIFY_SERVICE_USERS,
  VERIFY_START_TIMEOUT_SECONDS,
  VERIFY_TMPFS_SIZE,
} from "../defaults.ts";
import { VerifyError, type VerifyProblem, verifyProblem } from "./codes.ts";
import { findDataDirs } from "./discover.ts";
import type { Engine, RestoreContext, VerifyBinaries } from "./engines/engine.ts";
import { mariadbEngine } from "./engines/mariadb.ts";
import { postgresqlEngine } from "./engines/postgresql.ts";
import { redisEngine } from "./engines/redis.ts";
import { sqliteEngine } from "./engines/sqlite.ts";
import { mountSnapshot, type SnapshotFs } from "./filesystems.ts";
import { Ledger, loopDevicesOf, processesIn, settle, sweepLeftovers } from "./ledger.ts";
import type { ManifestDatabase } from "./manifest.ts";
import { MAX_MANIFEST_BYTES, readManifestFile } from "./manifest_read.ts";
import {
  chooseManifest,
  type FoundManifest,
  machineBuildDeps,
  ON_SNAPSHOT_MANIFEST,
} from "./manifest_store.ts";
import type { DatabaseReport, FilesystemReport, VerifyReport } from "./report.ts";
import { buildRestoreRoot, type Placement, placementOf, type RestoreRoot } from "./restore_root.ts";
import { type Limits, Sandbox } from "./sandbox.ts";
import { classifySource, type SnapshotSource } from "./sources.ts";
import { type Evidence, exitCodeOf, lowest, type Verdict, verdictOf } from "./verdict.ts";

/** What to verify and how. */
export interface VerifyOptions {
  /** SNAPSHOT arguments: block devices, raw or qcow2 images, directories. */
  snapshots: string[];
  /** vmsnap's stateDir: stored manifests, the records of what verify set up, reports. */
  stateDir: string;
  /** `--manifest FILE`: used when neither the snapshot nor stateDir has one. */
  manifest?: string;
  /** `--scratch DIR`: the overlays' upper layers on disk instead of a tmpfs. */
  scratch?: string;
  /** The manifest's path on each filesystem (default {@linkcode ON_SNAPSHOT_MANIFEST}). */
  onSnapshotManifest?: string;
  /** Data directories (VM paths) by plugin name, where the manifest does not record them. */
  dataDirs?: Record<string, string>;
  /**
   * PostgreSQL in backup mode, by plugin name: the host directory its WAL is
   * archived to. With it the cluster is restored as the backup was meant to
   * be (its backup_label, WAL from the archive up to the backup's end); without
   * it, by crash recovery.
   */
  walArchives?: Record<string, string>;
  binaries?: VerifyBinaries;
  /** Service users by database type (default mysql, postgres, redis, nobody). */
  users?: Record<string, string>;
  startTimeoutSeconds?: number;
  checkTimeoutSeconds?: number;
  /** Limits of each restored server (default: the machine's memory as address space). */
  limits?: Limits;
  /** The tmpfs's size (tmpfs `size=`: `50%`, `8g`). */
  tmpfsSize?: string;
  /** Keep the report in `<stateDir>/verify/<verifyId>.json` (default true). */
  keepReport?: boolean;
}

/** One step of a verify, for a progress display (and tests that act at a known point). */
export interface VerifyProgress {
  verifyId: string;
  stage: string;
  [detail: string]: unknown;
}

/** What verify needs from its caller. */
export interface VerifyDeps {
  isRoot(): boolean;
  progress(event: VerifyProgress): void;
}

/** The machine's own: root is uid 0; progress goes nowhere. */
export const MACHINE_VERIFY_DEPS: VerifyDeps = {
  isRoot: () => process.getuid?.() === 0,
  progress: () => {},
};

/** The restore of each database type; MongoDB has none yet. */
const ENGINES: Record<string, Engine> = {
  mysql: mariadbEngine,
  postgresql: postgresqlEngine,
  redis: redisEngine,
  sqlite: sqliteEngine,
};

/**
 * A new verify id: its UTC start and six random hex digits.
 *
 * @example
 * ```ts
 * import { newVerifyId } from "./verify.ts";
 * newVerifyId(); // "20261208T030000Z-v1a2b3c"
 * ```
 */
export function newVerifyId(): string {
  const time = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${time}-v${randomBytes(3).toString("hex")}`;
}

/** A database to restore. */
interface Target {
  plugin: string;
  type: string;
  entry?: ManifestDatabase;
  dataDir?: string;
  /** Why it cannot be verified. */
  problem?: VerifyProblem;
}

/** One verify from set-up to teardown. */
class Session {
  readonly id = newVerifyId();
  readonly started = Date.now();
  readonly ledger: Ledger;
  readonly workDir: string;
  readonly scratchDir?: string;
  readonly errors: VerifyProblem[] = [];
  sandbox?: Sandbox;
  filesystems: SnapshotFs[] = [];
  found?: FoundManifest;
  root?: RestoreRoot;

  constructor(
    readonly options: VerifyOptions,
    readonly deps: VerifyDeps,
    readonly sources: SnapshotSource[],
  ) {
    this.ledger = new Ledger(options.stateDir, this.id);
    this.workDir = join(options.stateDir, "verify", "work", this.id);
    mkdirSync(this.workDir, { recursive: true, mode: 0o700 });
    this.ledger.update((r) => (r.workDir = this.workDir));
    if (options.scratch) {
      this.scratchDir = join(options.scratch, `vmsnap-verify-${this.id}`);
      this.ledger.update((r) => r.scratchDirs.push(this.scratchDir!));
      mkdirSync(this.scratchDir, { recursive: true, mode: 0o700 });
    }
  }

  progress(stage: string, detail: Record<string, unknown> = {}): void {
    this.deps.progress({ verifyId: this.id, stage, ...detail });
  }

  /** Scratch space as the sandbox sees it. */
  get scratch(): string {
    return this.scratchDir ?? join(this.workDir, "scratch");
  }

  async open(): Promise<Sandbox> {
    this.sandbox = await Sandbox.open({
      started: (anchor, init) => this.ledger.update((r) => Object.assign(r, { anchor, init })),
    });
    const size = this.options.tmpfsSize ?? VERIFY_TMPFS_SIZE;
    const ran = await this.sandbox.run([
      "mount",
      "-t",
      "tmpfs",
      "-o",
      `mode=0700,size=${size}`,
      "vmsnap-verify",
      this.workDir,
    ]);
    if (ran.code !== 0) {
      throw new VerifyError(
        "VerifyNamespaceFailed",
        `cannot mount the scratch tmpfs: ${ran.stderr.trim()}`,
      );
    }
    await this.sandbox.run(["mkdir", "-p", this.scratch, join(this.workDir, "lower")]);
    this.progress("namespace", { pid: this.sandbox.initPid });
    return this.sandbox;
  }

  /** A qcow2 image converted to raw in the scratch space; returns the raw path. */
  async convert(source: SnapshotSource, n: number): Promise<string> {
    const raw = join(this.scratch, `snapshot${n}.raw`);
    this.ledger.update((r) => r.images.push(raw));
    this.progress("convert", { snapshot: source.arg });
    const ran = await this.sandbox!.run(
      ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", source.path, raw],
      { timeoutMs: 3_600_000 },
    );
    if (ran.code !== 0) {
      throw new VerifyError(
        "VerifySnapshotUnsupported",
        `qemu-img cannot convert ${source.arg}: ${ran.stderr.trim()}.`,
      );
    }
    return raw;
  }

  /** Mounts every snapshot's filesystems read-only. */
  async mountAll(): Promise<void> {
    let n = 0;
    const next = () => n++;
    for (const [i, source] of this.sources.entries()) {
      let path = source.path;
      if (source.kind === "qcow2") path = await this.convert(source, i);
      else if (source.kind !== "directory") this.ledger.update((r) => r.images.push(source.path));
      const found = await mountSnapshot(
        this.sandbox!,
        source,
        path,
        join(this.workDir, "lower"),
        next,
      );
      for (const fs of found) {
        if (source.kind === "directory" && source.mount) {
          fs.uuid = machineBuildDeps().uuidOf({
            device: source.mount.device,
            mountPoint: source.mount.mountPoint,
          });
        }
      }
      this.filesystems.push(...found);
    }
    this.progress("mounted", { filesystems: this.filesystems.length });
    if (this.filesystems.every((fs) => fs.skipped)) {
      throw new VerifyError(
        "VerifySnapshotUnsupported",
        `no filesystem verify can mount on ${this.sources.map((s) => s.arg).join(", ")}: ${
          this.filesystems.map((fs) => fs.skipped).join("; ")
        }. Fix: attach the volume (LVM, RAID, LUKS) on this machine and verify its device.`,
      );
    }
  }

  /** Manifests carried by the snapshot's filesystems. */
  onSnapshot(): { path: string; text: string }[] {
    const rel = this.options.onSnapshotManifest ?? ON_SNAPSHOT_MANIFEST;
    const out: { path: string; text: string }[] = [];
    for (const fs of this.filesystems) {
      if (!fs.lower) continue;
      const at = this.walk(fs.lower, rel);
      if (!at) continue;
      try {
        const stat = lstatSync(at);
        if (!stat.isFile() || stat.size > MAX_MANIFEST_BYTES) continue;
        out.push({ path: `${fs.source.arg}:/${rel}`, text: readFileSync(at, "utf8") });
      } catch {
        // none on this filesystem
      }
    }
    return out;
  }

  /** The latest moment the snapshot can be from: an image's modification time, else now. */
  snapshotTime(): number {
    const times = this.sources.filter((s) => s.kind === "image" || s.kind === "qcow2").map((s) =>
      statSync(s.path).mtimeMs
    );
    return times.length > 0 ? Math.max(...times) : Date.now();
  }

  findManifest(): void {
    this.found = chooseManifest({
      onSnapshot: this.onSnapshot(),
      stateDir: this.options.stateDir,
      uuids: this.filesystems.map((f) => f.uuid).filter((u): u is string => !!u),
      before: this.snapshotTime(),
      explicit: this.options.manifest,
    });
    this.progress("manifest", { source: this.found?.source, runId: this.found?.manifest.runId });
  }

  /** Each filesystem at its VM mount point (from the manifest), else under /snapshots. */
  placements(): Placement[] {
    const manifest = this.found?.manifest;
    return this.filesystems.filter((fs) => fs.lower).map((fs, i) => {
      const named = manifest?.filesystems.find((f) => f.uuid && f.uuid === fs.uuid);
      return { fs, vmPath: named?.mountPoint ?? `/snapshots/${i}` };
    });
  }

  async buildRoot(): Promise<void> {
    this.root = await buildRestoreRoot(this.sandbox!, {
      dir: join(this.workDir, "root"),
      scratch: join(this.scratch, "layers"),
      placements: this.placements(),
    });
    this.progress("root", { metacopy: this.root.metacopy });
  }

  /**
   * `base/relative` as this process reaches it in the sandbox, or undefined
   * when a component is a symbolic link: reached from the host, a link in the
   * snapshot would resolve on the host's files, never the snapshot's.
   */
  private walk(base: string, relative: string): string | undefined {
    let at = base;
    for (const part of relative.split("/").filter(Boolean)) {
      at = join(at, part);
      try {
        if (lstatSync(this.sandbox!.path(at)).isSymbolicLink()) return undefined;
      } catch {
        break; // missing: so is everything below it
      }
    }
    return this.sandbox!.path(join(base, relative));
  }

  /** A VM path as verify reaches it in the root (the overlay), or {@linkcode REFUSED} through a link. */
  reach(vmPath: string): string {
    return this.walk(this.root!.dir, posix.normalize(`/${vmPath}`)) ?? REFUSED;
  }

  /** A VM path in the read-only snapshot itself (undefined off the snapshot or through a link). */
  snapshotPath(vmPath: string): string | undefined {
    const at = placementOf(this.root!.placements, posix.normalize(`/${vmPath}`));
    if (!at) return undefined;
    return this.walk(at.placement.fs.lower!, at.relative);
  }
}

/** What {@linkcode Session.reach} gives for a path through a symbolic link: a path that never exists. */
export const REFUSED = "/proc/vmsnap-verify-refused-symbolic-link";

/** The verdict and evidence of each filesystem. */
function judgeFilesystems(session: Session): FilesystemReport[] {
  const manifest = session.found?.manifest;
  return session.filesystems.map((fs) => {
    const named = manifest?.filesystems.find((f) => f.uuid && f.uuid === fs.uuid);
    const evidence = [...fs.evidence];
    if (manifest && !fs.skipped) {
      evidence.push({
        kind: "position",
        name: "the manifest's run froze this filesystem",
        ok: !!named?.frozen,
        detail: named
          ? `${named.mountPoint} (${named.device}) in run ${manifest.runId}${
            named.frozen ? ", frozen" : ", not frozen"
          }`
          : `UUID ${fs.uuid ?? "unknown"} is not among run ${manifest.runId}'s filesystems (${
            manifest.filesystems.map((f) => f.uuid ?? f.mountPoint).join(", ") || "none"
          })`,
      });
      evidence.push({
        kind: "position",
        name: "the run recorded application consistency",
        ok: manifest.consistency === "application",
        detail: `run ${manifest.runId} was ${manifest.consistency}-consistent`,
      });
    }
    return {
      snapshot: fs.source.arg,
      ...(fs.partition !== undefined ? { partition: fs.partition } : {}),
      fsType: fs.fsType,
      uuid: fs.uuid,
      ...(fs.label ? { label: fs.label } : {}),
      mountPoint: named?.mountPoint,
      verdict: fs.skipped ? null : verdictOf(evidence, !!manifest),
      ...(fs.skipped ? { skipped: fs.skipped } : {}),
      evidence,
    };
  });
}

/** Where the database of a manifest entry lives, or why it is not verifiable. */
function locate(session: Session, entry: ManifestDatabase): Target {
  const target: Target = { plugin: entry.plugin, type: entry.type, entry };
  const placements = session.root!.placements;
  if (!ENGINES[entry.type]) {
    target.problem = verifyProblem(
      "VerifyEngineUnsupported",
      `plugin "${entry.plugin}" is ${entry.type}, which verify cannot restore yet; its recorded position is in the report.`,
    );
    return target;
  }
  if (entry.type === "sqlite") {
    const placed = entry.files.filter((f) => placementOf(placements, f.file));
    if (placed.length === 0) {
      target.problem = verifyProblem(
        "VerifyDataDirNotFound",
        `plugin "${entry.plugin}": none of its files (${
          entry.files.map((f) => f.file).join(", ")
        }) is on a filesystem of the snapshots given.`,
      );
    }
    target.dataDir = dirname(entry.files[0]?.file ?? "/");
    return target;
  }
  const given = session.options.dataDirs?.[entry.plugin] ?? entry.dataDir;
  if (given) {
    target.dataDir = given;
    if (!placementOf(placements, given) || !existsSync(session.reach(given))) {
      target.problem = verifyProblem(
        "VerifyDataDirNotFound",
        `plugin "${entry.plugin}": its data directory ${given} is not on the snapshots given.`,
      );
    }
    return target;
  }
  return discover(session, target);
}

/** The data directory of a manifest database that does not record it, found on the snapshot. */
function discover(session: Session, target: Target): Target {
  const entry = target.entry!;
  let candidates = findDataDirs(
    entry.type,
    session.root!.placements.map((p) => p.vmPath),
    (p) => session.reach(p),
  );
  if (entry.type === "mysql" && entry.binlogFile && candidates.length > 1) {
    const withLog = candidates.filter((c) => existsSync(session.reach(join(c, entry.binlogFile!))));
    if (withLog.length > 0) candidates = withLog;
  }
  if (candidates.length === 0) {
    target.problem = verifyProblem(
      "VerifyDataDirNotFound",
      `plugin "${entry.plugin}": no ${entry.type} data directory on the snapshots given (the manifest does not record where it was).`,
    );
  } else if (candidates.length === 1) {
    target.dataDir = candidates[0];
  } else {
    throw new VerifyError(
      "VerifyDataDirAmbiguous",
      `plugin "${entry.plugin}" (${entry.type}): the snapshot has ${candidates.length} data directories that could be its: ${
        candidates.join(", ")
      }. Fix: name it in the verify options (dataDirs: { "${entry.plugin}": "…" }).`,
    );
  }
  return target;
}

/** The databases to restore: the manifest's, else every one found on the snapshot. */
function targets(session: Session): Target[] {
  const manifest = session.found?.manifest;
  if (manifest) {
    return manifest.databases.map((entry) => locate(session, entry));
  }
  const out: Target[] = [];
  for (const type of ["mysql", "postgresql", "redis"]) {
    const roots = session.root!.placements.map((p) => p.vmPath);
    for (const dataDir of findDataDirs(type, roots, (p) => session.reach(p))) {
      out.push({ plugin: `${type}:${dataDir}`, type, dataDir });
    }
  }
  return out;
}

/** Every program the databases need, checked before any server starts. */
function preflight(session: Session, list: Target[]): void {
  const missing: string[] = [];
  for (const t of list) {
    if (t.problem || !t.dataDir) continue;
    const need = ENGINES[t.type].missing({
      binaries: session.options.binaries ?? {},
      dataDir: t.dataDir,
      reach: (p) => session.reach(p),
    });
    missing.push(...need.map((n) => `${n} for "${t.plugin}"`));
  }
  if (missing.length > 0) {
    throw new VerifyError(
      "VerifyServerNotFound",
      `not installed here: ${
        missing.join("; ")
      }. Nothing was started. Fix: install them (a server of the snapshot's major version), or name their paths in the verify options (binaries).`,
    );
  }
}

/**
 * Position evidence for a database: the filesystem it is on was frozen at the
 * snapshot (the run froze it, and its journal needs no replay). Without it,
 * the read-only view (no journal replay) is older than what a restore would
 * show, and the database's verdict cannot be better than crash-consistent.
 */
function frozenFilesystem(session: Session, vmPath: string): Evidence | undefined {
  const at = placementOf(session.root!.placements, vmPath);
  const manifest = session.found?.manifest;
  if (!at || !manifest) return undefined;
  const fs = at.placement.fs;
  const journal = fs.evidence.find((e) => e.kind === "position");
  const named = manifest.filesystems.find((f) => f.uuid && f.uuid === fs.uuid);
  const why = !named?.frozen
    ? `the run did not freeze it (UUID ${fs.uuid ?? "unknown"})`
    : journal && !journal.ok
    ? `${journal.detail}; the database was restored from the filesystem without its journal replayed`
    : "";
  return {
    kind: "position",
    name: "the filesystem it is on was frozen at the snapshot",
    ok: why === "",
    detail: why ||
      `${named!.mountPoint}: frozen by run ${manifest.runId}${
        journal ? ", no journal to replay" : ""
      }`,
  };
}

/** Restores one database and judges it. */
async function restoreOne(session: Session, target: Target): Promise<DatabaseReport> {
  const started = performance.now();
  const base = {
    plugin: target.plugin,
    type: target.type,
    ...(target.dataDir ? { dataDir: target.dataDir } : {}),
    ...(target.entry ? { recorded: target.entry } : {}),
  };
  if (target.problem) {
    return { ...base, verdict: null, error: target.problem, evidence: [], durationMs: 0 };
  }
  const options = session.options;
  const ctx: RestoreContext = {
    sandbox: session.sandbox!,
    root: session.root!.dir,
    dataDir: target.dataDir!,
    entry: target.entry,
    manifest: session.found?.manifest,
    binaries: options.binaries ?? {},
    user: options.users?.[target.type] ?? VERIFY_SERVICE_USERS[target.type],
    limits: options.limits ?? {
      addressSpace: Math.max(totalmem(), 4 << 30),
      ...VERIFY_SERVER_LIMITS,
    },
    timeouts: {
      startMs: (options.startTimeoutSeconds ?? VERIFY_START_TIMEOUT_SECONDS) * 1000,
      checkMs: (options.checkTimeoutSeconds ?? VERIFY_CHECK_TIMEOUT_SECONDS) * 1000,
    },
    reach: (p) => session.reach(p),
    snapshotPath: (p) => session.snapshotPath(p),
    ...(options.walArchives?.[target.plugin]
      ? { walArchive: options.walArchives[target.plugin] }
      : {}),
    progress: (stage, detail) => session.progress(stage, { plugin: target.plugin, ...detail }),
  };
  session.progress("database", { plugin: target.plugin, type: target.type });
  const outcome = await ENGINES[target.type].restore(ctx);
  await scratchFull(session, target);
  const frozen = frozenFilesystem(
    session,
    target.entry?.type === "sqlite" ? target.entry.files[0].file : target.dataDir!,
  );
  if (frozen && !outcome.error) outcome.evidence.push(frozen);
  const held = !!target.entry?.held;
  return {
    ...base,
    verdict: outcome.error ? null : verdictOf(outcome.evidence, held),
    ...(outcome.error ? { error: outcome.error } : {}),
    evidence: target.entry && !held
      ? [...outcome.evidence, {
        kind: "position" as const,
        name: "the run held this database until the snapshot",
        ok: false,
        detail:
          "the manifest says it was not held (its quiesce failed, held nothing, or lost its lock)",
      }]
      : outcome.evidence,
    durationMs: Math.round(performance.now() - started),
  };
}

/** A full scratch space makes a restore's failure say nothing about the snapshot. */
async function scratchFull(session: Session, target: Target): Promise<void> {
  const ran = await session.sandbox!.run(["df", "--output=avail", "-B1", session.scratch]);
  const avail = Number(ran.stdout.trim().split("\n")[1]);
  if (Number.isFinite(avail) && avail < 16 << 20) {
    throw new VerifyError(
      "VerifyScratchFull",
      `the scratch space (${session.scratch}) filled up while "${target.plugin}" was restored (${avail} bytes left): its result says nothing about the snapshot. Fix: give --scratch DIR on a disk with room for the databases' files.`,
    );
  }
}

/** Ends the namespace and removes what verify made; problems go to `errors`. */
async function teardown(session: Session): Promise<void> {
  const { sandbox, ledger } = session;
  if (sandbox) {
    await sandbox.close();
    const gone = await settle(() => processesIn(sandbox.mntNs).length === 0, 15_000);
    if (!gone) {
      session.errors.push(verifyProblem(
        "VerifyCleanupFailed",
        `processes ${
          processesIn(sandbox.mntNs).join(", ")
        } are still in verify's namespace ${sandbox.mntNs}.`,
      ));
    }
  }
  for (const image of ledger.record.images) {
    const detached = await settle(() => loopDevicesOf(image).length === 0, 5_000);
    if (!detached) {
      session.errors.push(verifyProblem(
        "VerifyCleanupFailed",
        `${
          loopDevicesOf(image).join(", ")
        } still attached to ${image}. Fix: losetup -d DEVICE once nothing mounts it.`,
      ));
    }
  }
  if (session.scratchDir) rmSync(session.scratchDir, { recursive: true, force: true });
  try {
    rmdirSync(session.workDir);
  } catch (error) {
    session.errors.push(
      verifyProblem("VerifyCleanupFailed", `${session.workDir}: ${(error as Error).message}.`),
    );
  }
  if (session.errors.every((e) => e.code !== "VerifyCleanupFailed")) ledger.close();
}

/** The overall verdict: the lowest, capped when a database could not be verified. */
function overall(filesystems: FilesystemReport[], databases: DatabaseReport[]): Verdict {
  const judged = [...filesystems, ...databases].map((x) => x.verdict).filter((v): v is Verdict =>
    v !== null
  );
  const verdict = lowest(judged);
  return databases.some((d) => d.verdict === null)
    ? lowest([verdict, "crash-consistent"])
    : verdict;
}

/** Writes the report to `<stateDir>/verify/<verifyId>.json` (0600); the oldest beyond the kept number go. */
function keep(stateDir: string, report: VerifyReport): string {
  const dir = join(stateDir, "verify");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${report.verifyId}.json`);
  writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`, { mode: 0o600 });
  // Verify ids start with their UTC time: the name order is the time order.
  const reports = readdirSync(dir).filter((n) => /^\d{8}T\d{6}Z-v[0-9a-f]+\.json$/.test(n)).sort();
  for (const old of reports.slice(0, Math.max(0, reports.length - VERIFY_REPORTS_KEPT))) {
    rmSync(join(dir, old), { force: true });
  }
  return path;
}

/** The work between set-up and teardown. */
async function verifyInside(session: Session): Promise<Omit<VerifyReport, "durationMs">> {
  await session.open();
  await session.mountAll();
  session.findManifest();
  await session.buildRoot();
  const filesystems = judgeFilesystems(session);
  const list = targets(session);
  preflight(session, list);
  const databases: DatabaseReport[] = [];
  for (const target of list) databases.push(await restoreOne(session, target));
  const found = session.found;
  const verdict = overall(filesystems, databases);
  return {
    event: "verify",
    verifyId: session.id,
    verdict,
    exitCode: exitCodeOf(verdict),
    manifest: found
      ? {
        source: found.source,
        path: found.path,
        runId: found.manifest.runId,
        consistency: found.manifest.consistency,
        stage: found.manifest.stage,
      }
      : null,
    snapshots: session.sources.map(({ arg, path, kind }) => ({ arg, path, kind })),
    filesystems,
    databases,
    warnings: [],
    errors: session.errors,
    startedAt: new Date(session.started).toISOString(),
  };
}

/**
 * Verifies snapshots; see the module's description. Throws a
 * {@linkcode VerifyError} when it cannot verify at all (not root, a
 * SNAPSHOT missing or under an active mount, an invalid manifest, a server
 * binary missing): nothing is left behind then either.
 *
 * @example
 * ```ts
 * import { verifySnapshots } from "./verify.ts";
 * const report = await verifySnapshots({ snapshots: ["/var/tmp/copy.img"], stateDir: "/var/lib/vmsnap" });
 * console.log(report.verdict, report.exitCode);
 * ```
 */
export async function verifySnapshots(
  options: VerifyOptions,
  deps: VerifyDeps = MACHINE_VERIFY_DEPS,
): Promise<VerifyReport> {
  if (!deps.isRoot()) {
    throw new VerifyError(
      "VerifyNotRoot",
      "vmsnap verify mounts the snapshot and starts servers in private namespaces: run it as root.",
    );
  }
  if (options.snapshots.length === 0) {
    throw new VerifyError(
      "VerifySnapshotNotFound",
      "no SNAPSHOT given. Fix: name the snapshot's device, image or directory.",
    );
  }
  // A --manifest that cannot be used is an error before anything is mounted (whichever is used).
  if (options.manifest) readManifestFile(options.manifest);
  const warnings = await sweepLeftovers(options.stateDir);
  const sources = options.snapshots.map((arg) => classifySource(arg));
  const session = new Session(options, deps, sources);
  let report: Omit<VerifyReport, "durationMs">;
  try {
    report = await verifyInside(session);
  } finally {
    await teardown(session);
    session.progress("cleaned");
  }
  const done: VerifyReport = {
    ...report,
    warnings: [...warnings, ...report.warnings],
    durationMs: Date.now() - session.started,
  };
  if (done.errors.length > 0 && done.verdict === "application-consistent") {
    done.verdict = "crash-consistent";
    done.exitCode = 1;
  }
  if (options.keepReport !== false) done.reportFile = keep(options.stateDir, done);
  return done;
}
