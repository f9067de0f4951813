/**
 * Restoring SQLite: each file the manifest names, as the snapshot holds it:
 * its header (the change counter and page count the run recorded while it
 * held the write lock), its WAL (the plugin checkpointed it to empty and
 * held the lock, so a frame in it is a commit after quiesce) or hot
 * rollback journal, then `PRAGMA integrity_check` by `sqlite3` on the
 * overlay, as an unprivileged user.
 *
 * @module
 */
import { closeSync, openSync, readSync } from "node:fs";
import { dirname } from "node:path";
import type { SqliteEntry, SqliteFileEntry } from "../manifest.ts";
import type { Evidence } from "../verdict.ts";
import {
  asRootOn,
  type Engine,
  program,
  type RestoreContext,
  type RestoreOutcome,
  said,
  sizeOf,
  writtenAfterRun,
} from "./engine.ts";

/** The first bytes of a file, or undefined. */
function head(path: string, bytes: number): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return undefined;
  }
  try {
    const buffer = Buffer.alloc(bytes);
    return buffer.subarray(0, readSync(fd, buffer, 0, bytes, 0));
  } finally {
    closeSync(fd);
  }
}

/** The header fields a position check needs. */
interface Header {
  pageSize: number;
  changeCounter: number;
  pageCount: number;
}

/**
 * Reads a database header (the first 100 bytes), or undefined when the file
 * is not an SQLite 3 database.
 *
 * @example
 * ```ts
 * import { sqliteHeader } from "./sqlite.ts";
 * sqliteHeader("/var/lib/app/app.db")?.changeCounter;
 * ```
 */
export function sqliteHeader(path: string): Header | undefined {
  const bytes = head(path, 100);
  if (!bytes || bytes.length < 100 || bytes.toString("latin1", 0, 16) !== "SQLite format 3\0") {
    return undefined;
  }
  const raw = bytes.readUInt16BE(16);
  return {
    pageSize: raw === 1 ? 65536 : raw,
    changeCounter: bytes.readUInt32BE(24),
    pageCount: bytes.readUInt32BE(28),
  };
}

/** What the snapshot holds of one file, before anything opens it. */
function fileEvidence(ctx: RestoreContext, recorded: SqliteFileEntry): Evidence[] {
  const at = ctx.snapshotPath(recorded.file);
  const header = at ? sqliteHeader(at) : undefined;
  if (!header) {
    return [{
      kind: "check",
      name: `${recorded.file} is an SQLite database`,
      ok: false,
      detail: sizeOf(at) === undefined
        ? "missing on the snapshot (or behind a symbolic link, which verify does not follow)"
        : "no SQLite 3 header",
    }];
  }
  const out: Evidence[] = [];
  if (recorded.changeCounter !== undefined) {
    out.push({
      kind: "position",
      name: `${recorded.file}: the change counter is the recorded one`,
      ok: header.changeCounter === recorded.changeCounter,
      detail: `snapshot ${header.changeCounter}, recorded ${recorded.changeCounter}`,
    });
  }
  if (recorded.pageCount !== undefined) {
    out.push({
      kind: "position",
      name: `${recorded.file}: the page count is the recorded one`,
      ok: header.pageCount === recorded.pageCount,
      detail: `snapshot ${header.pageCount}, recorded ${recorded.pageCount}`,
    });
  }
  const wal = sizeOf(ctx.snapshotPath(`${recorded.file}-wal`)) ?? 0;
  const frames = wal > 32 ? Math.floor((wal - 32) / (24 + header.pageSize)) : 0;
  if (recorded.journalMode === "wal") {
    out.push({
      kind: "position",
      name: `${recorded.file}: no commit in the WAL after the checkpoint`,
      ok: frames === 0,
      detail: frames === 0
        ? "the WAL is empty (checkpointed while the write lock was held)"
        : `${frames} frame(s) in the WAL: written after the run's checkpoint`,
    });
  }
  const journal = head(ctx.snapshotPath(`${recorded.file}-journal`) ?? "", 28);
  const hot = !!journal && journal.length >= 28 && journal.some((b) => b !== 0);
  if (recorded.journalMode !== "wal") {
    out.push({
      kind: "position",
      name: `${recorded.file}: no transaction in flight (hot journal)`,
      ok: !hot,
      detail: hot ? "a hot rollback journal: a transaction was being written" : "no hot journal",
    });
  }
  return out;
}

/** `PRAGMA integrity_check` on the overlay copy, as the unprivileged user. */
async function integrity(ctx: RestoreContext, file: string): Promise<Evidence> {
  const sqlite3 = program(ctx.binaries.sqlite3, "sqlite3")!;
  // The directory too: SQLite makes its -shm (and may make a -wal) beside the file.
  const own = ["", "-wal", "-shm", "-journal"].map((suffix) => `${file}${suffix}`);
  await asRootOn(ctx, ["chown", `${ctx.user}:`], [dirname(file), ...own]);
  ctx.progress("check", { tool: "sqlite3", file });
  const ran = await ctx.sandbox.run([sqlite3, "-batch", file, "PRAGMA integrity_check"], {
    root: ctx.root,
    user: ctx.user,
    timeoutMs: ctx.timeouts.checkMs,
  });
  const out = ran.stdout.trim();
  return {
    kind: "check",
    name: `${file}: PRAGMA integrity_check is ok`,
    ok: ran.code === 0 && out === "ok",
    detail: ran.code === 0 ? out.split("\n").slice(0, 10).join("; ") : said(ran),
  };
}

/** The `sqlite` restore. */
export const sqliteEngine: Engine = {
  type: "sqlite",
  missing(ctx) {
    return program(ctx.binaries.sqlite3, "sqlite3") ? [] : ["sqlite3 (sqlite3)"];
  },
  async restore(ctx): Promise<RestoreOutcome> {
    const entry = ctx.entry as SqliteEntry;
    const evidence: Evidence[] = [];
    for (const recorded of entry.files) {
      const files = fileEvidence(ctx, recorded);
      evidence.push(...files);
      if (files.some((e) => e.kind === "check" && !e.ok)) continue;
      evidence.push(await integrity(ctx, recorded.file));
      const own = ["", "-wal", "-journal"].map((suffix) => `${recorded.file}${suffix}`);
      const late = writtenAfterRun(ctx, dirname(recorded.file), own);
      if (late) evidence.push(late);
    }
    return { evidence };
  },
};
