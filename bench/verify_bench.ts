/**
 * The verify part of the bench (issue 25): the time and peak memory of
 * `verify` on a MariaDB and a PostgreSQL snapshot holding about 1 GiB of
 * data, against restoring the same snapshot by hand (copy the image, mount
 * it, start the server on it, run the same checks, stop).
 *
 * The snapshot is made by `dist/vmsnap run` with the plugin, the image copied
 * while frozen, the manifest built from the result. Memory is sampled every
 * 100 ms: the resident set of every process of the method (verify, its
 * namespace, the server, the checks), and for verify the scratch tmpfs its
 * overlays copy up into (memory too), reported apart and summed.
 *
 * `benchVerify()` is what `scripts/bench.ts` calls; run alone
 * (`deno run -A bench/verify_bench.ts [--mib 1024] [--only mariadb,postgresql]`)
 * it prints the table.
 *
 * @module
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { dbDir, PG_BIN, startMariaDb, startPostgres } from "../tests/db_servers.ts";
import { runFixture } from "../tests/run_fixture.ts";
import { snapshotByRun, verifyArgv } from "../tests/verify/fixtures.ts";

/** One method's figures. */
export interface VerifyBenchRow {
  engine: "mariadb" | "postgresql";
  method: "vmsnap verify" | "vmsnap verify --scratch (disk)" | "by hand";
  /** Wall time, ms. */
  ms: number;
  /** Peak resident memory of the method's processes, MiB. */
  rssMiB: number;
  /** Peak scratch tmpfs use (verify's overlay upper layers), MiB. */
  scratchMiB: number;
  /** The peak of both at once, MiB. */
  totalMiB: number;
  /** What the method concluded. */
  outcome: string;
}

/** Every descendant of a process, with itself. */
function tree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone
    }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]) ?? []));
  return out;
}

/** Resident set (bytes) of some processes. */
function rss(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // gone
    }
  }
  return total;
}

/** Bytes used by the tmpfs mounted at `path` in a process's mount namespace, or 0. */
function tmpfsUsed(initPid: number | undefined, path: string | undefined): number {
  if (!initPid || !path) return 0;
  // statfs(2) of the path itself (df would look the mount up in this namespace's table).
  const stat = spawnSync("stat", ["-f", "-c", "%b %f %S", `/proc/${initPid}/root${path}`], {
    encoding: "utf8",
  });
  const [blocks, free, size] = stat.stdout.trim().split(" ").map(Number);
  return stat.status === 0 ? (blocks - free) * size : 0;
}

/** Samples memory every 100 ms until stopped. */
function sampler(root: () => number[], scratch: () => number) {
  const peak = { rss: 0, scratch: 0, total: 0 };
  const timer = setInterval(() => {
    const r = rss(root());
    const s = scratch();
    peak.rss = Math.max(peak.rss, r);
    peak.scratch = Math.max(peak.scratch, s);
    peak.total = Math.max(peak.total, r + s);
  }, 100);
  return { peak, stop: () => clearInterval(timer) };
}

const MiB = 1 << 20;

/** verify through the test entry, measured. */
async function measureVerify(
  engine: VerifyBenchRow["engine"],
  image: string,
  manifest: string,
  stateDir: string,
  scratch?: string,
): Promise<VerifyBenchRow> {
  const started = performance.now();
  const args = [image, "--state-dir", stateDir, "--manifest", manifest];
  if (scratch) args.push("--scratch", scratch);
  const child = spawn(process.execPath, verifyArgv(args), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const events = () =>
    stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  const init = () => events().find((e) => e.stage === "namespace")?.pid as number | undefined;
  const workDir = () => {
    const id = events()[0]?.verifyId;
    return id ? join(stateDir, "verify", "work", id) : undefined;
  };
  const sample = sampler(() => tree(child.pid!), () => tmpfsUsed(init(), workDir()));
  const code = await new Promise<number | null>((r) => child.on("close", r));
  sample.stop();
  const report = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}");
  if (process.env.VERIFY_BENCH_TRACE) {
    for (const e of events()) console.error(e.ms, e.stage, e.plugin ?? "", e.tool ?? "");
  }
  return {
    engine,
    method: scratch ? "vmsnap verify --scratch (disk)" : "vmsnap verify",
    ms: Math.round(performance.now() - started),
    rssMiB: Math.round(sample.peak.rss / MiB),
    scratchMiB: Math.round(sample.peak.scratch / MiB),
    totalMiB: Math.round(sample.peak.total / MiB),
    outcome: `${report.verdict ?? report.error?.code} (exit ${code})`,
  };
}

/** The same restore by hand: copy the image, start the server on it, run the checks, stop. */
async function measureByHand(
  engine: VerifyBenchRow["engine"],
  image: string,
  dir: string,
): Promise<VerifyBenchRow> {
  const started = performance.now();
  const sample = sampler(() => tree(process.pid).filter((p) => p !== process.pid), () => 0);
  const copy = join(dir, "by-hand.img");
  execFileSync("cp", ["--sparse=always", image, copy]);
  let outcome: string;
  if (engine === "mariadb") {
    const server = await startMariaDb(dir, "by-hand", { image: copy });
    try {
      const check = spawnSync("mariadb-check", [
        "--no-defaults",
        `--socket=${server.socket}`,
        "--all-databases",
      ], {
        encoding: "utf8",
      });
      outcome = `mariadb-check exit ${check.status}`;
    } finally {
      await server.stop();
    }
  } else {
    const server = await startPostgres(dir, { name: "by-hand", image: copy });
    try {
      const check = spawnSync("setpriv", [
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        join(PG_BIN, "pg_amcheck"),
        "-h",
        server.socketDir,
        "-p",
        String(server.port),
        "-U",
        "postgres",
        "--all",
        "--install-missing",
      ], { encoding: "utf8" });
      outcome = `pg_amcheck exit ${check.status}`;
    } finally {
      await server.stop();
    }
  }
  sample.stop();
  rmSync(copy, { force: true });
  return {
    engine,
    method: "by hand",
    ms: Math.round(performance.now() - started),
    rssMiB: Math.round(sample.peak.rss / MiB),
    scratchMiB: 0,
    totalMiB: Math.round(sample.peak.total / MiB),
    outcome,
  };
}

/** Fills a server with about `mib` MiB of rows (1 KiB each). */
function load(engine: VerifyBenchRow["engine"], sql: (q: string) => string, mib: number): void {
  const rows = Math.round((mib * MiB) / 1100);
  if (engine === "mariadb") {
    sql(
      "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, pad VARCHAR(1000)) ENGINE=InnoDB",
    );
    for (let from = 1; from <= rows; from += 200_000) {
      const to = Math.min(rows, from + 199_999);
      sql(`USE app; INSERT INTO t SELECT seq, REPEAT('x', 1000) FROM seq_${from}_to_${to}`);
    }
  } else {
    sql("CREATE TABLE t (id int PRIMARY KEY, pad text)");
    sql(`INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(1, ${rows}) g`);
  }
}

/** An ext4 image of `sizeMiB` with a new, empty data directory for the engine (the test helpers' are 256 MiB). */
function freshImage(engine: VerifyBenchRow["engine"], dir: string, sizeMiB: number): string {
  const image = join(dir, "data.img");
  const mountPoint = join(dir, "data");
  execFileSync("truncate", ["-s", `${sizeMiB}M`, image]);
  execFileSync("mkfs.ext4", ["-q", "-F", image]);
  mkdirSync(mountPoint, { recursive: true, mode: 0o700 });
  execFileSync("mount", ["-o", "loop", image, mountPoint]);
  try {
    const data = join(mountPoint, "data");
    if (engine === "mariadb") {
      execFileSync("mariadb-install-db", [
        "--no-defaults",
        "--user=root",
        `--datadir=${data}`,
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
      ], { stdio: "pipe" });
    } else {
      execFileSync("chown", ["postgres:postgres", mountPoint]);
      execFileSync("setpriv", [
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        join(PG_BIN, "initdb"),
        "-D",
        data,
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
      ], { stdio: "pipe" });
    }
  } finally {
    execFileSync("umount", [mountPoint]);
  }
  return image;
}

/** One engine: a snapshot of about `mib` MiB of data, verify and the by-hand restore. */
async function benchEngine(
  engine: VerifyBenchRow["engine"],
  mib: number,
): Promise<VerifyBenchRow[]> {
  const f = runFixture();
  const db = dbDir();
  const image = freshImage(engine, db.dir, Math.round(mib * 2.5) + 512);
  const server = engine === "mariadb"
    ? await startMariaDb(db.dir, "data", { image })
    : await startPostgres(db.dir, { name: "data", image });
  try {
    load(engine, server.sql, mib);
    const plugin = engine === "mariadb"
      ? { type: "mysql", name: "db", socket: (server as { socket: string }).socket }
      : {
        type: "postgresql",
        name: "db",
        host: (server as { socketDir: string }).socketDir,
        port: (server as { port: number }).port,
      };
    const snap = await snapshotByRun(f, {
      mount: server.fs.mountPoint,
      image: server.fs.image,
      copy: join(db.dir, "snapshot.img"),
      plugins: [plugin],
    });
    await server.stop();
    const stateDir = f.path("verify-state");
    const verified = await measureVerify(engine, snap.copy, snap.manifestFile, stateDir);
    const onDisk = await measureVerify(engine, snap.copy, snap.manifestFile, stateDir, db.dir);
    const byHand = await measureByHand(engine, snap.copy, db.dir);
    return [verified, onDisk, byHand];
  } finally {
    await server.stop();
    db.cleanup();
    f.cleanup();
  }
}

/**
 * Measures verify against the by-hand restore for each engine; `mib` is the
 * data size (1024 for the figure).
 *
 * @example
 * ```ts
 * import { benchVerify, verifyTable } from "./verify_bench.ts";
 * console.log(verifyTable(await benchVerify({ mib: 64 })));
 * ```
 */
export async function benchVerify(
  options: { mib?: number; engines?: VerifyBenchRow["engine"][] } = {},
): Promise<VerifyBenchRow[]> {
  const rows: VerifyBenchRow[] = [];
  for (const engine of options.engines ?? ["mariadb", "postgresql"]) {
    rows.push(...await benchEngine(engine, options.mib ?? 1024));
  }
  return rows;
}

/**
 * The rows as a Markdown table.
 *
 * @example
 * ```ts
 * import { verifyTable } from "./verify_bench.ts";
 * verifyTable([]);
 * ```
 */
export function verifyTable(rows: VerifyBenchRow[]): string {
  const lines = [
    "| engine | method | time (s) | peak RSS (MiB) | peak scratch tmpfs (MiB) | peak total (MiB) | outcome |",
    "|---|---|---:|---:|---:|---:|---|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.engine} | ${r.method} | ${
        (r.ms / 1000).toFixed(1)
      } | ${r.rssMiB} | ${r.scratchMiB} | ${r.totalMiB} | ${r.outcome} |`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { mib: { type: "string", default: "1024" }, only: { type: "string" } },
  });
  const engines = values.only?.split(",") as VerifyBenchRow["engine"][] | undefined;
  console.log(verifyTable(await benchVerify({ mib: Number(values.mib), engines })));
}
