/**
 * Restoring Redis: `redis-check-aof` (the AOF manifest of Redis 7, or the
 * single file before it) or `redis-check-rdb` on the snapshot's files, then
 * `redis-server` on the overlay, as `redis`, on a private socket only, with
 * saving off; it loads the dataset as it would on the VM (a truncated AOF
 * tail is loaded up to the last whole command, as `aof-load-truncated`
 * does). The positions: the RDB's creation time against the LASTSAVE the
 * run recorded, the key count when it was recorded, and nothing written
 * after the run.
 *
 * @module
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { RedisEntry } from "../manifest.ts";
import { RUN_DIR } from "../restore_root.ts";
import type { Evidence } from "../verdict.ts";
import {
  asRootOn,
  type Engine,
  logLines,
  program,
  type RestoreContext,
  type RestoreOutcome,
  said,
  timeoutProblem,
  waitForServer,
  writtenAfterRun,
} from "./engine.ts";

const SOCKET = `${RUN_DIR}/redis.sock`;

/** The persistence files' names, from the manifest or Redis's defaults. */
function names(entry: RedisEntry | undefined) {
  return {
    dbfilename: entry?.dbfilename ?? "dump.rdb",
    appenddirname: entry?.appenddirname ?? "appendonlydir",
    appendfilename: entry?.appendfilename ?? "appendonly.aof",
  };
}

/** AOF or RDB: as recorded, else what the snapshot holds. */
function persistenceOf(ctx: RestoreContext, entry: RedisEntry | undefined): "aof" | "rdb" {
  if (entry) return entry.persistence;
  const n = names(entry);
  const has = (name: string) => existsSync(ctx.reach(join(ctx.dataDir, name)));
  return has(n.appenddirname) || has(n.appendfilename) ? "aof" : "rdb";
}

/** The AOF to check: Redis 7's manifest, else the single file. */
function aofTarget(ctx: RestoreContext, entry: RedisEntry | undefined): string | undefined {
  const n = names(entry);
  const dir = join(ctx.dataDir, n.appenddirname);
  try {
    const manifest = readdirSync(ctx.reach(dir)).find((f) => f.endsWith(".manifest"));
    if (manifest) return join(dir, manifest);
  } catch {
    // Redis before 7: one file
  }
  const single = join(ctx.dataDir, n.appendfilename);
  return existsSync(ctx.reach(single)) ? single : undefined;
}

/** What the file checkers found, before the start. */
interface FileChecks {
  evidence: Evidence[];
  /** The RDB's creation time (its ctime field). */
  ctime?: number;
  /** What follows the last whole command of the AOF, when something does. */
  aofTail?: string;
}

/** A checker as the service user, in the root. */
function checker(ctx: RestoreContext, tool: string, file: string) {
  return ctx.sandbox.run([tool, file], {
    root: ctx.root,
    user: ctx.user,
    timeoutMs: ctx.timeouts.checkMs,
  });
}

/** redis-check-rdb, and the RDB's creation time. */
async function checkRdb(ctx: RestoreContext, entry: RedisEntry | undefined): Promise<FileChecks> {
  const file = join(ctx.dataDir, names(entry).dbfilename);
  if (!existsSync(ctx.reach(file))) {
    const detail = `${file} is missing`;
    return { evidence: [{ kind: "check", name: "the RDB file is there", ok: false, detail }] };
  }
  const ran = await checker(ctx, program(ctx.binaries.redisCheckRdb, "redis-check-rdb")!, file);
  const ctime = /AUX FIELD ctime = '(\d+)'/.exec(ran.stdout)?.[1];
  return {
    evidence: [{
      kind: "check",
      name: "redis-check-rdb finds the RDB file sound",
      ok: ran.code === 0 && /RDB looks OK/.test(ran.stdout),
      detail: ran.code === 0 ? `${file}: RDB looks OK` : said(ran),
    }],
    ctime: ctime === undefined ? undefined : Number(ctime),
  };
}

/**
 * redis-check-aof: its verdict is shown, not judged (a tail cut mid-command
 * is what a crash leaves; whether the server loads it decides damage).
 */
async function checkAof(ctx: RestoreContext, entry: RedisEntry | undefined): Promise<FileChecks> {
  const target = aofTarget(ctx, entry);
  if (!target) {
    const detail = `no AOF under ${ctx.dataDir}`;
    return { evidence: [{ kind: "check", name: "the AOF is there", ok: false, detail }] };
  }
  const ran = await checker(ctx, program(ctx.binaries.redisCheckAof, "redis-check-aof")!, target);
  const bad =
    /AOF analyzed: filename=([^,]+), size=(\d+), ok_up_to=(\d+), ok_up_to_line=\d+, diff=(\d+)/
      .exec(ran.stdout.split("\n").filter((l) => /diff=[1-9]/.test(l)).join("\n"));
  const detail = ran.code === 0
    ? `${target}: all AOF files valid`
    : bad
    ? `${bad[1]} is valid up to byte ${bad[3]} of ${bad[2]} (${bad[4]} bytes after it)`
    : said(ran);
  return {
    evidence: [{ kind: "info", name: "redis-check-aof", ok: ran.code === 0, detail }],
    aofTail: ran.code === 0
      ? undefined
      : bad
      ? `${bad[1]}: ${bad[4]} bytes after the last whole command`
      : "invalid",
  };
}

/** The client on the private socket. */
function cli(ctx: RestoreContext, ...args: string[]) {
  const redisCli = program(ctx.binaries.redisCli, "redis-cli")!;
  return ctx.sandbox.run([redisCli, "-s", SOCKET, ...args], {
    root: ctx.root,
    user: ctx.user,
    timeoutMs: 10_000,
  });
}

/** Total keys and keys with an expiry, from INFO keyspace. */
async function keyspace(ctx: RestoreContext): Promise<{ keys: number; expires: number }> {
  const ran = await cli(ctx, "INFO", "keyspace");
  let keys = 0;
  let expires = 0;
  for (const m of ran.stdout.matchAll(/keys=(\d+),expires=(\d+)/g)) {
    keys += Number(m[1]);
    expires += Number(m[2]);
  }
  return { keys, expires };
}

/** The positions: RDB time against LASTSAVE, key count, the AOF's tail. */
function positions(
  entry: RedisEntry,
  files: { ctime?: number; aofTail?: string },
  restored: { keys: number; expires: number },
): Evidence[] {
  const out: Evidence[] = [];
  if (entry.persistence === "rdb" && entry.lastsave !== undefined && files.ctime !== undefined) {
    // The save the run waited for began before LASTSAVE (its end); a later save began after it.
    const ok = files.ctime <= entry.lastsave && files.ctime >= entry.lastsave - 600;
    out.push({
      kind: "position",
      name: "the RDB file is the save the run recorded (LASTSAVE)",
      ok,
      detail: `RDB created at ${files.ctime}, LASTSAVE recorded ${entry.lastsave}`,
    });
  }
  if (entry.persistence === "aof") {
    out.push({
      kind: "position",
      name: "the AOF ends with a whole command (writes were paused)",
      ok: files.aofTail === undefined,
      detail: files.aofTail ?? "every AOF file is valid to its end",
    });
  }
  if (entry.keys !== undefined && entry.expires === 0) {
    out.push({
      kind: "position",
      name: "the key count is the recorded one",
      ok: restored.keys === entry.keys,
      detail: `restored ${restored.keys}, recorded ${entry.keys}`,
    });
  }
  return out;
}

/** The server's arguments. */
function serverArgs(
  ctx: RestoreContext,
  entry: RedisEntry | undefined,
  persistence: string,
): string[] {
  const n = names(entry);
  return [
    "--port",
    "0",
    "--unixsocket",
    SOCKET,
    "--unixsocketperm",
    "700",
    "--dir",
    ctx.dataDir,
    "--dbfilename",
    n.dbfilename,
    "--appendonly",
    persistence === "aof" ? "yes" : "no",
    "--appenddirname",
    n.appenddirname,
    "--appendfilename",
    n.appendfilename,
    "--aof-load-truncated",
    "yes",
    "--appendfsync",
    "no",
    "--save",
    "",
    "--daemonize",
    "no",
    "--logfile",
    "",
    "--protected-mode",
    "no",
  ];
}

/** The `redis` restore. */
export const redisEngine: Engine = {
  type: "redis",
  missing(ctx) {
    return [
      [ctx.binaries.redisServer, "redis-server"],
      [ctx.binaries.redisCli, "redis-cli"],
      [ctx.binaries.redisCheckAof, "redis-check-aof"],
      [ctx.binaries.redisCheckRdb, "redis-check-rdb"],
    ].filter(([configured, name]) => !program(configured, name!)).map(([, name]) =>
      `${name} (redis-server, redis-tools)`
    );
  },
  async restore(ctx): Promise<RestoreOutcome> {
    const entry = ctx.entry as RedisEntry | undefined;
    const persistence = persistenceOf(ctx, entry);
    await asRootOn(ctx, ["chown", "-R", `${ctx.user}:`], [ctx.dataDir]);
    const files = persistence === "rdb" ? await checkRdb(ctx, entry) : await checkAof(ctx, entry);
    ctx.progress("server-starting", { server: "redis-server" });
    const server = ctx.sandbox.start([
      program(ctx.binaries.redisServer, "redis-server")!,
      ...serverArgs(ctx, entry, persistence),
    ], {
      root: ctx.root,
      user: ctx.user,
      limits: ctx.limits,
    });
    try {
      const up = await waitForServer(server, async () => {
        const ran = await cli(ctx, "PING");
        return ran.code === 0 && ran.stdout.trim() === "PONG";
      }, ctx.timeouts.startMs);
      if (up.state === "ready") ctx.progress("server-ready", { pid: server.pid() });
      const log = server.output().stdout + server.output().stderr;
      const evidence: Evidence[] = [{
        kind: "start",
        name: `redis-server loads the ${persistence.toUpperCase()}`,
        ok: up.state === "ready",
        detail: up.state === "ready"
          ? `ready in ${Math.round(up.ms)} ms`
          : `${up.state === "exited" ? "exited" : "not ready"} after ${Math.round(up.ms)} ms: ${
            logLines(log, /#|Bad file|corrupt|error|Short read/i, 6).join(" | ") || log.slice(-600)
          }`,
      }, ...files.evidence];
      const loading = logLines(
        log,
        /DB loaded|Short read|truncated|loaded anyway|Reading RDB|Done loading/i,
      );
      if (loading.length) {
        evidence.push({ kind: "info", name: "loading", ok: true, detail: loading.join(" | ") });
      }
      if (up.state === "timeout") return { evidence, error: timeoutProblem(ctx, "redis-server") };
      if (up.state !== "ready") return { evidence };
      const restored = await keyspace(ctx);
      evidence.push({
        kind: "info",
        name: "dataset",
        ok: true,
        detail: `${restored.keys} keys (${restored.expires} with an expiry)`,
      });
      if (entry) evidence.push(...positions(entry, files, restored));
      const late = writtenAfterRun(ctx, ctx.dataDir);
      if (late) evidence.push(late);
      return { evidence };
    } finally {
      await server.kill();
    }
  },
};
