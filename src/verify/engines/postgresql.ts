/**
 * Restoring PostgreSQL: before the start, `pg_controldata` (the cluster's
 * state, its latest checkpoint and timeline) and `pg_waldump` from the
 * recorded checkpoint to the end of the WAL on the snapshot (the commits
 * after the recorded position, and where the WAL ends); then `postgres` of
 * the cluster's major version on the overlay, as `postgres`, with verify's
 * own config and hba (trust on the private socket only), archiving and
 * restore commands off, no preloaded libraries; crash recovery; then
 * `pg_amcheck --all` where amcheck is installed.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { basename, dirname, join, posix } from "node:path";
import type { PostgresEntry } from "../manifest.ts";
import { RUN_DIR } from "../restore_root.ts";
import type { Evidence } from "../verdict.ts";
import {
  asRootOn,
  type Engine,
  logLines,
  type RestoreContext,
  type RestoreOutcome,
  said,
  timeoutProblem,
  waitForServer,
  writtenAfterRun,
} from "./engine.ts";
import { findTool } from "../tools.ts";

const PORT = "5432";
const CONF_DIR = `${RUN_DIR}/pg`;
/** A client's connection to the restored server: its private socket, as the superuser. */
const CONNECT = ["-h", RUN_DIR, "-p", PORT, "-U", "postgres"];

/** An LSN (`0/1A2B3C4`) as a number. */
export function lsnValue(lsn: string): bigint {
  const [high, low] = lsn.split("/");
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`);
}

/** The cluster's major version (PG_VERSION). */
function majorOf(ctx: Pick<RestoreContext, "reach" | "dataDir">): string | undefined {
  try {
    const text = readFileSync(ctx.reach(join(ctx.dataDir, "PG_VERSION")), "utf8").trim();
    return /^\d{1,3}$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

/** The bin directory of a major version. */
function binDir(ctx: Pick<RestoreContext, "binaries">, major: string): string {
  return (ctx.binaries.postgresBinDir ?? "/usr/lib/postgresql/{major}/bin").replace(
    "{major}",
    major,
  );
}

/** What pg_controldata says. */
interface Control {
  state?: string;
  checkpoint?: string;
  redo?: string;
  timeline?: number;
}

async function controlData(ctx: RestoreContext, bin: string): Promise<Control & { ran: string }> {
  const ran = await ctx.sandbox.run([join(bin, "pg_controldata"), "-D", ctx.dataDir], {
    root: ctx.root,
    user: ctx.user,
    timeoutMs: 60_000,
  });
  const field = (name: string) =>
    new RegExp(`^${name.replace(/[()']/g, ".")}:\\s*(.*)$`, "m").exec(ran.stdout)?.[1]?.trim();
  const tli = field("Latest checkpoint's TimeLineID");
  return {
    state: field("Database cluster state"),
    checkpoint: field("Latest checkpoint location"),
    redo: field("Latest checkpoint's REDO location"),
    timeline: tli === undefined ? undefined : Number(tli),
    ran: ran.code === 0 ? "" : said(ran),
  };
}

/** The WAL on the snapshot from a position on: its end and the transaction records after `after`. */
interface WalScan {
  end?: string;
  commits: { lsn: string; desc: string }[];
  error?: string;
}

async function scanWal(
  ctx: RestoreContext,
  bin: string,
  from: string,
  timeline: number,
  after: string,
): Promise<WalScan> {
  const ran = await ctx.sandbox.run([
    join(bin, "pg_waldump"),
    `--path=${join(ctx.dataDir, "pg_wal")}`,
    `--timeline=${timeline}`,
    `--start=${from}`,
    "--rmgr=Transaction",
  ], { root: ctx.root, user: ctx.user, timeoutMs: ctx.timeouts.checkMs });
  const commits: WalScan["commits"] = [];
  for (const line of ran.stdout.split("\n")) {
    const m = /lsn: ([0-9A-F]+\/[0-9A-F]+),.*desc: ((?:COMMIT|COMMIT_PREPARED|PREPARE)\b.*)$/.exec(
      line,
    );
    if (m && lsnValue(m[1]) >= lsnValue(after)) {
      commits.push({ lsn: m[1], desc: m[2].slice(0, 80) });
    }
  }
  const end = /error in WAL record at [0-9A-F]+\/[0-9A-F]+: .* at ([0-9A-F]+\/[0-9A-F]+)/.exec(
    ran.stderr,
  )?.[1] ?? (/could not find a valid record after ([0-9A-F]+\/[0-9A-F]+)/.exec(ran.stderr)?.[1]);
  const error = end ? undefined : ran.stderr.trim().split("\n").slice(-2).join(" ");
  return { end, commits, error };
}

/** The WAL position evidence, from the scan and the control file. */
function walEvidence(entry: PostgresEntry, control: Control, scan: WalScan): Evidence[] {
  const out: Evidence[] = [];
  const recorded = lsnValue(entry.walLsn);
  const later = control.redo !== undefined && lsnValue(control.redo) > recorded;
  if (scan.end === undefined) {
    out.push({
      kind: later ? "position" : "check",
      name: "the WAL from the recorded checkpoint is on the snapshot",
      ok: false,
      detail: `pg_waldump: ${scan.error}${
        later
          ? ` (the snapshot's own checkpoint ${control.redo} is after the recorded ${entry.walLsn}: a later snapshot)`
          : ""
      }`,
    });
    return out;
  }
  if (lsnValue(scan.end) < recorded && !later) {
    out.push({
      kind: "check",
      name: "the WAL reaches the recorded position",
      ok: false,
      detail:
        `the WAL on the snapshot ends at ${scan.end}, before the recorded ${entry.walLsn}: WAL the server had written is missing (truncated)`,
    });
    return out;
  }
  out.push({
    kind: "position",
    name: "no commit in the WAL after the recorded position",
    ok: scan.commits.length === 0,
    detail: scan.commits.length === 0
      ? `the WAL ends at ${scan.end}; recorded ${entry.walLsn}`
      : `${scan.commits.length} commit(s) after the recorded ${entry.walLsn} (first at ${
        scan.commits[0].lsn
      }: ${scan.commits[0].desc}); the WAL ends at ${scan.end}`,
  });
  return out;
}

/** Where a symbolic link of the snapshot points (a VM path), if it is one. */
function linkTarget(ctx: RestoreContext, vmLink: string): string | undefined {
  const dir = ctx.reach(dirname(vmLink));
  try {
    return posix.resolve(dirname(vmLink), readlinkSync(join(dir, basename(vmLink))));
  } catch {
    return undefined; // not a link, or not there
  }
}

/** pg_wal and the tablespaces when they are links to other places of the snapshot. */
function linkedDirs(ctx: RestoreContext): string[] {
  const tablespaces = join(ctx.dataDir, "pg_tblspc");
  let oids: string[] = [];
  try {
    oids = readdirSync(ctx.reach(tablespaces));
  } catch {
    // none
  }
  return [join(ctx.dataDir, "pg_wal"), ...oids.map((oid) => join(tablespaces, oid))]
    .map((link) => linkTarget(ctx, link)).filter((t): t is string => t !== undefined);
}

/** Verify's own configuration files, and the data directory made startable. */
async function prepare(ctx: RestoreContext): Promise<string[]> {
  const notes: string[] = [];
  const stale = ["postmaster.pid", "standby.signal", "recovery.signal"].map((f) =>
    join(ctx.dataDir, f)
  );
  for (const file of stale.slice(1)) {
    if (existsSync(ctx.reach(file))) {
      notes.push(`${file} removed: restored as a primary by crash recovery`);
    }
  }
  await asRootOn(ctx, ["rm", "-f"], stale);
  await asRootOn(ctx, ["chown", "-R", `${ctx.user}:`], [ctx.dataDir, ...linkedDirs(ctx)]);
  await asRootOn(ctx, ["chmod", "0700"], [ctx.dataDir]);
  await ctx.sandbox.run(["mkdir", "-p", CONF_DIR], { root: ctx.root });
  writeFileSync(ctx.reach(`${CONF_DIR}/postgresql.conf`), "");
  writeFileSync(ctx.reach(`${CONF_DIR}/pg_hba.conf`), "local all all trust\n");
  writeFileSync(ctx.reach(`${CONF_DIR}/pg_ident.conf`), "");
  return notes;
}

/** Where the WAL archive is bound in the root. */
const ARCHIVE = `${RUN_DIR}/wal-archive`;

/**
 * Backup mode with the WAL archive: the archive bound read-only into the
 * root, the run's backup_label (and tablespace_map) and recovery.signal in
 * the data directory. Returns the archive's path in the root, or a reason.
 */
async function prepareBackup(
  ctx: RestoreContext,
  entry: PostgresEntry,
): Promise<string | Evidence> {
  const fail = (detail: string): Evidence => ({
    kind: "start",
    name: "the backup's label and WAL archive are in place",
    ok: false,
    detail,
  });
  const bound = await ctx.sandbox.script([
    ["mkdir", "-p", join(ctx.root, ARCHIVE)],
    ["mount", "--bind", "-o", "ro", ctx.walArchive!, join(ctx.root, ARCHIVE)],
  ]);
  if (bound.code !== 0) return fail(`the WAL archive ${ctx.walArchive}: ${bound.stderr.trim()}`);
  const files: [string, string | undefined][] = [
    ["backup_label", entry.backupLabel],
    ["tablespace_map", entry.tablespaceMap],
    ["recovery.signal", ""],
  ];
  for (const [name, text] of files) {
    if (text === undefined) continue;
    try {
      writeFileSync(ctx.reach(join(ctx.dataDir, name)), text, { mode: 0o600 });
    } catch (error) {
      return fail(`${name}: ${(error as Error).message}`);
    }
  }
  await asRootOn(ctx, ["chown", `${ctx.user}:`], files.map(([name]) => join(ctx.dataDir, name)));
  return ARCHIVE;
}

/** Backup mode: recovery reached the backup's end (a consistent state), the recorded stop position. */
function backupEvidence(entry: PostgresEntry, log: string): Evidence {
  const reached = /consistent recovery state reached at ([0-9A-F]+\/[0-9A-F]+)/.exec(log)?.[1];
  const ok = reached !== undefined &&
    (entry.backupStopLsn === undefined || lsnValue(reached) >= lsnValue(entry.backupStopLsn));
  return {
    kind: "position",
    name: "recovery from the backup label reaches the backup's end",
    ok,
    detail: reached
      ? `consistent at ${reached}; the backup stopped at ${entry.backupStopLsn ?? "(not recorded)"}`
      : "no consistent recovery state in the server's log",
  };
}

/** The server's arguments: verify's config, no archiving, nothing preloaded, no network. */
function serverArgs(ctx: RestoreContext, archive?: string): string[] {
  const settings: Record<string, string> = {
    config_file: `${CONF_DIR}/postgresql.conf`,
    hba_file: `${CONF_DIR}/pg_hba.conf`,
    ident_file: `${CONF_DIR}/pg_ident.conf`,
    listen_addresses: "",
    unix_socket_directories: RUN_DIR,
    port: PORT,
    archive_mode: "off",
    archive_command: "",
    restore_command: "",
    shared_preload_libraries: "",
    ssl: "off",
    logging_collector: "off",
    log_destination: "stderr",
    shared_buffers: "64MB",
    max_connections: "20",
    autovacuum: "off",
    fsync: "off",
    jit: "off",
    // Off: with it on, archive recovery requires max_connections and others at the VM's values or above.
    hot_standby: "off",
  };
  if (archive) {
    // The backup's own recovery: WAL from the archive, stopping where the backup became consistent.
    Object.assign(settings, {
      restore_command: `cp ${archive}/%f %p`,
      recovery_target: "immediate",
      recovery_target_action: "promote",
    });
  }
  return ["-D", ctx.dataDir, ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`])];
}

/** pg_amcheck of every database, where amcheck is installed. */
async function amcheck(ctx: RestoreContext, bin: string, major: string): Promise<Evidence> {
  const name = "pg_amcheck --all (heap and B-tree indexes) is clean";
  if (
    !existsSync(`/usr/share/postgresql/${major}/extension/amcheck.control`) ||
    !findTool(join(bin, "pg_amcheck"))
  ) {
    return { kind: "info", name, ok: true, detail: "amcheck is not installed here: not run" };
  }
  ctx.progress("check", { tool: "pg_amcheck" });
  const ran = await ctx.sandbox.run([
    join(bin, "pg_amcheck"),
    ...CONNECT,
    "--all",
    "--install-missing",
  ], { root: ctx.root, user: ctx.user, timeoutMs: ctx.timeouts.checkMs });
  return {
    kind: "check",
    name,
    ok: ran.code === 0,
    detail: ran.code === 0 ? "no corruption found" : said(ran, 1200),
  };
}

/** What is known before the server starts. */
interface BeforeStart {
  bin: string;
  evidence: Evidence[];
  control: Control;
  /** Backup mode with the WAL archive: its path in the root. */
  archive?: string;
  /** The snapshot's WAL after the recorded position (crash recovery only). */
  scan?: WalScan;
}

/** The data directory made startable, the control file, the WAL scan or the backup's set-up. */
async function beforeStart(
  ctx: RestoreContext,
  major: string,
): Promise<BeforeStart | { failed: Evidence[] }> {
  const entry = ctx.entry as PostgresEntry | undefined;
  const bin = binDir(ctx, major);
  const notes = await prepare(ctx);
  const control = await controlData(ctx, bin);
  const evidence: Evidence[] = [{
    kind: "info",
    name: "control file",
    ok: control.ran === "",
    detail: control.ran ||
      `PostgreSQL ${major}, state "${control.state}", latest checkpoint ${control.checkpoint} (redo ${control.redo}), timeline ${control.timeline}`,
  }, ...notes.map((detail) => ({ kind: "info" as const, name: "restore", ok: true, detail }))];
  const archive = entry?.mode === "backup" && entry.backupLabel && ctx.walArchive
    ? await prepareBackup(ctx, entry)
    : undefined;
  if (typeof archive === "object") return { failed: [archive, ...evidence] };
  if (entry?.mode === "backup" && !archive) {
    evidence.push({
      kind: "info",
      name: "backup mode",
      ok: true,
      detail:
        "restored by crash recovery: no WAL archive given (walArchives) to restore with the backup label",
    });
  }
  const scan = entry && !archive
    ? await scanWal(ctx, bin, entry.checkpointLsn ?? entry.walLsn, entry.timeline, entry.walLsn)
    : undefined;
  return { bin, evidence, control, archive, scan };
}

/** The restored server's evidence: its start and recovery, amcheck, the positions. */
async function judge(
  ctx: RestoreContext,
  known: BeforeStart & { major: string; log: string; up: Awaited<ReturnType<typeof start>>["up"] },
): Promise<RestoreOutcome> {
  const { log, up, archive } = known;
  const entry = ctx.entry as PostgresEntry | undefined;
  const evidence: Evidence[] = [{
    kind: "start",
    name: archive
      ? "postgres starts and recovers from the backup label and the WAL archive"
      : "postgres starts and finishes crash recovery",
    ok: up.state === "ready",
    detail: up.state === "ready"
      ? `ready in ${Math.round(up.ms)} ms`
      : `${up.state === "exited" ? "exited" : "not ready"} after ${Math.round(up.ms)} ms: ${
        logLines(log, /FATAL|PANIC|ERROR|invalid|could not/i, 6).join(" | ") || log.slice(-600)
      }`,
  }, ...known.evidence];
  const recovery = logLines(
    log,
    /not properly shut down|redo starts|redo done|consistent recovery|invalid record|checkpoint record/i,
  );
  if (recovery.length) {
    evidence.push({ kind: "info", name: "recovery", ok: true, detail: recovery.join(" | ") });
  }
  if (up.state === "timeout") return { evidence, error: timeoutProblem(ctx, "postgres") };
  if (up.state !== "ready") return { evidence };
  evidence.push(await amcheck(ctx, known.bin, known.major));
  if (entry) {
    evidence.push({
      kind: "position",
      name: "the timeline is the recorded one",
      ok: known.control.timeline === entry.timeline,
      detail: `snapshot ${known.control.timeline}, recorded ${entry.timeline}`,
    });
    evidence.push(
      ...(archive ? [backupEvidence(entry, log)] : walEvidence(entry, known.control, known.scan!)),
    );
  }
  const late = writtenAfterRun(ctx, ctx.dataDir);
  if (late) evidence.push(late);
  return { evidence };
}

/** Starts the server and waits until it accepts connections. */
async function start(ctx: RestoreContext, bin: string, archive?: string) {
  ctx.progress("server-starting", { server: "postgres" });
  const server = ctx.sandbox.start([join(bin, "postgres"), ...serverArgs(ctx, archive)], {
    root: ctx.root,
    user: ctx.user,
    limits: ctx.limits,
  });
  const up = await waitForServer(server, async () => {
    const ran = await ctx.sandbox.run(
      [
        join(bin, "psql"),
        "-X",
        ...CONNECT,
        "-Atc",
        "SELECT pg_is_in_recovery()",
      ],
      { root: ctx.root, user: ctx.user, timeoutMs: 5_000 },
    );
    return ran.code === 0 && ran.stdout.trim() === "f";
  }, ctx.timeouts.startMs);
  if (up.state === "ready") ctx.progress("server-ready", { pid: server.pid() });
  return { server, up };
}

/** The `postgresql` restore. */
export const postgresqlEngine: Engine = {
  type: "postgresql",
  missing(ctx) {
    const major = majorOf(ctx);
    if (!major) return [];
    const bin = binDir(ctx, major);
    return ["postgres", "pg_controldata", "pg_waldump", "psql"].filter((p) =>
      !findTool(join(bin, p))
    )
      .map((p) => `${join(bin, p)} (postgresql-${major})`);
  },
  async restore(ctx): Promise<RestoreOutcome> {
    const major = majorOf(ctx);
    if (!major) {
      const detail = `${ctx.dataDir}/PG_VERSION is missing or not a version number`;
      return {
        evidence: [{ kind: "start", name: "the cluster's version is readable", ok: false, detail }],
      };
    }
    const before = await beforeStart(ctx, major);
    if ("failed" in before) return { evidence: before.failed };
    const { server, up } = await start(ctx, before.bin, before.archive);
    try {
      return await judge(ctx, { ...before, major, log: server.output().stderr, up });
    } finally {
      await server.kill();
    }
  },
};
