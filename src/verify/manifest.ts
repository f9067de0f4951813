/**
 * The manifest: what a restore of a snapshot must show, per database the run
 * quiesced (the positions its plugin recorded while it held it) and per
 * filesystem (UUID and mount point), with the run's id and consistency.
 * Built from a run's (or hook hold's) result; read back, validated, by
 * `manifest_read.ts`; stored by `manifest_store.ts`.
 *
 * Format (JSON, version 1):
 *
 * ```json
 * {
 *   "format": "vmsnap-manifest", "version": 1, "stage": "final",
 *   "runId": "20261126T045100Z-a1b2c3", "source": "run",
 *   "startedAt": "2026-11-26T04:51:00Z", "durationMs": 812,
 *   "consistency": "application", "requestedConsistency": "application",
 *   "snapshotTaken": true,
 *   "filesystems": [{ "mountPoint": "/var/lib/mysql", "uuid": "…", "fsType": "ext4",
 *                     "device": "/dev/vdb", "frozen": true }],
 *   "databases": [{ "plugin": "shop", "type": "mysql", "held": true, "flavor": "mariadb",
 *                   "binlog": true, "binlogFile": "binlog.000002", "binlogPosition": 1234,
 *                   "gtidPosition": "0-1-42" }],
 *   "scripts": ["app-pre-post"]
 * }
 * ```
 *
 * `stage` is `final` for a manifest built from the result (it knows whether
 * a lock was lost before resume) and `frozen` for one written onto the
 * filesystem before FIFREEZE (it knows the positions, not the end).
 *
 * @module
 */
import type { Consistency } from "../run/consistency.ts";
import type { RunResult } from "../protocol.ts";
import type { StepResult } from "../../plugins/plugin.ts";

/** The `format` of every manifest. */
export const MANIFEST_FORMAT = "vmsnap-manifest";

/** The version this vmsnap writes and the newest it reads. */
export const MANIFEST_VERSION = 1;

/** One filesystem of the run. */
export interface ManifestFilesystem {
  mountPoint: string;
  /** The filesystem's UUID (blkid), how a snapshot is matched to its manifest. */
  uuid?: string;
  fsType: string;
  device: string;
  /** Frozen for the snapshot (and thawed after). */
  frozen: boolean;
}

/** What every database entry has. */
export interface DatabaseBase {
  /** The plugin's name in the config. */
  plugin: string;
  /** The run held it from quiesce to the snapshot (no lock lost, writes held). */
  held: boolean;
  /** The server's data directory on the VM (absolute), when the plugin recorded it. */
  dataDir?: string;
  version?: string;
  mode?: string;
}

/** MariaDB/MySQL: the binary log and GTID position while locked. */
export interface MysqlEntry extends DatabaseBase {
  type: "mysql";
  flavor?: "mariadb" | "mysql";
  binlog: boolean;
  binlogFile?: string;
  binlogPosition?: number;
  gtidPosition?: string;
  /** `@@log_bin_basename` (absolute), when recorded. */
  logBinBasename?: string;
}

/** PostgreSQL: the WAL position after the checkpoint (or backup start). */
export interface PostgresEntry extends DatabaseBase {
  type: "postgresql";
  walLsn: string;
  timeline: number;
  checkpointLsn?: string;
  backupStartLsn?: string;
  backupStopLsn?: string;
  /** The `backup_label` returned by pg_backup_stop (backup mode), its text. */
  backupLabel?: string;
  /** The `tablespace_map` returned by pg_backup_stop, its text. */
  tablespaceMap?: string;
}

/** MongoDB: the last applied optime, when recorded. */
export interface MongoEntry extends DatabaseBase {
  type: "mongodb";
  optime?: { ts: string; t: number };
}

/** Redis: what persistence held at the snapshot. */
export interface RedisEntry extends DatabaseBase {
  type: "redis";
  persistence: "aof" | "rdb";
  /** `snapshot`: writes were paused until the snapshot; `bgsave`: state at the end of a save. */
  consistentAt?: "snapshot" | "bgsave";
  /** LASTSAVE (Unix seconds) while held. */
  lastsave?: number;
  replicationOffset?: number;
  /** Keys in all databases, and how many of them expire (INFO keyspace), while held. */
  keys?: number;
  expires?: number;
  dbfilename?: string;
  appenddirname?: string;
  appendfilename?: string;
}

/** One SQLite file held by the plugin. */
export interface SqliteFileEntry {
  file: string;
  journalMode: string;
  /** The header's file change counter (bytes 24-27) while locked. */
  changeCounter?: number;
  /** The header's database size in pages (bytes 28-31) while locked. */
  pageCount?: number;
}

/** SQLite: each file's header while its write lock was held. */
export interface SqliteEntry extends DatabaseBase {
  type: "sqlite";
  files: SqliteFileEntry[];
}

/** One database of the manifest. */
export type ManifestDatabase = MysqlEntry | PostgresEntry | MongoEntry | RedisEntry | SqliteEntry;

/** The database types a manifest may name. */
export const DATABASE_TYPES: readonly ManifestDatabase["type"][] = [
  "mysql",
  "postgresql",
  "mongodb",
  "redis",
  "sqlite",
];

/** A manifest. */
export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: number;
  stage: "final" | "frozen";
  runId: string;
  source: "run" | "hook";
  /** The run's start (from its id; second precision). */
  startedAt: string;
  /** The run's duration: the snapshot was taken before startedAt + 1 s + durationMs. */
  durationMs: number;
  /** When the run ended, when the manifest is built at its end (a tighter bound than the above). */
  finishedAt?: string;
  consistency: Consistency;
  requestedConsistency: Consistency;
  snapshotTaken: boolean;
  filesystems: ManifestFilesystem[];
  databases: ManifestDatabase[];
  /** Script plugins of the run: nothing a restore can check. */
  scripts: string[];
}

/** What building a manifest needs from the machine. */
export interface BuildDeps {
  /** The UUID of a mounted filesystem (blkid), from its device or its mount point, or undefined. */
  uuidOf(mount: { device: string; mountPoint: string }): string | undefined;
  /** A file's text (a backup_label the plugin saved), or undefined. */
  readText(path: string): string | undefined;
}

/**
 * The start time a run id carries (`20261126T045100Z-a1b2c3`), as ISO text.
 *
 * @example
 * ```ts
 * import { runIdTime } from "./manifest.ts";
 * runIdTime("20261126T045100Z-a1b2c3"); // "2026-11-26T04:51:00.000Z"
 * ```
 */
export function runIdTime(runId: string): string | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(runId);
  if (!m) return undefined;
  return new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`).toISOString();
}

/**
 * The latest moment the snapshot can have been taken: the run's start (its
 * id has whole seconds) plus one second plus its duration.
 *
 * @example
 * ```ts
 * import { snapshotDeadline } from "./manifest.ts";
 * snapshotDeadline({ startedAt: "2026-11-26T04:51:00.000Z", durationMs: 500 }); // 1795668661500
 * ```
 */
export function snapshotDeadline(
  manifest: Pick<Manifest, "startedAt" | "durationMs" | "finishedAt">,
): number {
  const bound = Date.parse(manifest.startedAt) + 1000 + manifest.durationMs;
  const finished = manifest.finishedAt ? Date.parse(manifest.finishedAt) : NaN;
  return Number.isNaN(finished) ? bound : Math.min(bound, finished);
}

/** A plugin report held its database from quiesce to resume. */
function held(quiesce: StepResult | null, resume: StepResult | null): boolean {
  return !!quiesce?.ok && !quiesce.notHeld &&
    !(resume?.errors ?? []).some((e) => e.code === "PluginLockLost");
}

const str = (v: unknown) => typeof v === "string" && v !== "" ? v : undefined;
const num = (v: unknown) => typeof v === "number" && Number.isFinite(v) ? v : undefined;

/** Drops undefined fields (the JSON stays small and exact). */
function defined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/** The entry of one database type, from its plugin's facts (undefined: nothing usable). */
type EntryBuilder = (
  base: DatabaseBase,
  facts: Record<string, unknown>,
  deps: BuildDeps,
) => ManifestDatabase | undefined;

const mysqlEntry: EntryBuilder = (base, facts) =>
  defined<MysqlEntry>({
    ...base,
    type: "mysql",
    flavor: facts.flavor === "mariadb" || facts.flavor === "mysql" ? facts.flavor : undefined,
    binlog: facts.binlog === true,
    binlogFile: str(facts.binlogFile),
    binlogPosition: num(facts.binlogPosition),
    gtidPosition: typeof facts.gtidPosition === "string" ? facts.gtidPosition : undefined,
    logBinBasename: str(facts.logBinBasename),
  });

const postgresEntry: EntryBuilder = (base, facts, deps) => {
  if (!str(facts.walLsn)) return undefined;
  // The files pg_backup_stop returned, copied in: the snapshot is restored with them later.
  const label = str(facts.backupLabel);
  const map = str(facts.tablespaceMap);
  return defined<PostgresEntry>({
    ...base,
    type: "postgresql",
    walLsn: String(facts.walLsn),
    timeline: num(facts.timeline) ?? 1,
    checkpointLsn: str(facts.checkpointLsn),
    backupStartLsn: str(facts.backupStartLsn),
    backupStopLsn: str(facts.backupStopLsn),
    backupLabel: label ? deps.readText(label) : undefined,
    tablespaceMap: map ? deps.readText(map) : undefined,
  });
};

const mongoEntry: EntryBuilder = (base, facts) => {
  const optime = facts.optime as { ts?: unknown; t?: unknown } | undefined;
  const ts = optime?.ts === undefined ? undefined : String(optime.ts);
  return defined<MongoEntry>({
    ...base,
    type: "mongodb",
    optime: ts ? { ts, t: Number(optime?.t ?? -1) } : undefined,
  });
};

const redisEntry: EntryBuilder = (base, facts) =>
  defined<RedisEntry>({
    ...base,
    type: "redis",
    persistence: facts.persistence === "rdb" ? "rdb" : "aof",
    consistentAt: facts.consistentAt === "snapshot" || facts.consistentAt === "bgsave"
      ? facts.consistentAt
      : undefined,
    lastsave: num(facts.lastsave),
    replicationOffset: num(facts.replicationOffset),
    keys: num(facts.keys),
    expires: num(facts.expires),
    dbfilename: str(facts.dbfilename),
    appenddirname: str(facts.appenddirname),
    appendfilename: str(facts.appendfilename),
  });

const sqliteEntry: EntryBuilder = (base, facts) => {
  const files = Array.isArray(facts.files) ? facts.files as Record<string, unknown>[] : [];
  return {
    ...base,
    type: "sqlite",
    files: files.filter((f) => str(f.file)).map((f) =>
      defined<SqliteFileEntry>({
        file: String(f.file),
        journalMode: str(f.journalMode) ?? "unknown",
        changeCounter: num(f.changeCounter),
        pageCount: num(f.pageCount),
      })
    ),
  };
};

/** The entry builder of each database plugin type. */
const ENTRIES: Record<string, EntryBuilder> = {
  mysql: mysqlEntry,
  postgresql: postgresEntry,
  mongodb: mongoEntry,
  redis: redisEntry,
  sqlite: sqliteEntry,
};

/**
 * The manifest of a run (or hook hold), from its result. Database entries
 * come from each plugin's quiesce facts (and resume facts: PostgreSQL's
 * backup_label, whose text is copied in); filesystems from the freeze part,
 * with their UUIDs. A plugin that never quiesced has no entry.
 *
 * @example
 * ```ts
 * import { buildManifest } from "./manifest.ts";
 * import type { RunResult } from "../protocol.ts";
 * declare const result: RunResult;
 * const manifest = buildManifest(result, { uuidOf: () => undefined, readText: () => undefined });
 * ```
 */
export function buildManifest(
  result: RunResult,
  deps: BuildDeps,
  options: {
    source?: "run" | "hook";
    stage?: "final" | "frozen";
    /** The run just ended (the manifest is built by the run itself): its end, a tight bound. */
    finishedAt?: Date;
  } = {},
): Manifest {
  const databases: ManifestDatabase[] = [];
  const scripts: string[] = [];
  for (const plugin of result.plugins) {
    if (plugin.type === "script") {
      scripts.push(plugin.name);
      continue;
    }
    if (!plugin.quiesce) continue;
    const facts = { ...plugin.quiesce.facts, ...(plugin.resume?.facts ?? {}) };
    const base = defined<DatabaseBase>({
      plugin: plugin.name,
      held: held(plugin.quiesce, plugin.resume),
      dataDir: str(facts.dataDir),
      version: facts.version === undefined ? undefined : String(facts.version),
      mode: str(facts.mode),
    });
    const entry = ENTRIES[plugin.type]?.(base, facts, deps);
    if (entry) databases.push(entry);
  }
  const filesystems = result.freeze.mounts.map((m) =>
    defined<ManifestFilesystem>({
      mountPoint: m.mountPoint,
      uuid: deps.uuidOf(m),
      fsType: m.fsType,
      device: m.device,
      frozen: m.frozen && m.thawed !== false,
    })
  );
  return {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    stage: options.stage ?? "final",
    runId: result.runId,
    source: options.source ?? "run",
    startedAt: runIdTime(result.runId) ?? new Date(Date.now() - result.durationMs).toISOString(),
    durationMs: result.durationMs,
    ...(options.finishedAt ? { finishedAt: options.finishedAt.toISOString() } : {}),
    consistency: result.consistency,
    requestedConsistency: result.requestedConsistency,
    snapshotTaken: result.snapshotTaken,
    filesystems,
    databases,
    scripts,
  };
}
