/**
 * The verify library's parts: the manifest (built from a result, validated,
 * looked up in order), verdicts, the parsers of the tools' output, the
 * snapshot kinds, the sandbox's namespaces and the record of leftovers.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { secureDir } from "../helpers.ts";
import type { RunResult } from "../../src/protocol.ts";
import { VerifyError } from "../../src/verify/codes.ts";
import { findDataDirs } from "../../src/verify/discover.ts";
import { readCheck } from "../../src/verify/engines/mariadb.ts";
import { lsnValue } from "../../src/verify/engines/postgresql.ts";
import { sqliteHeader } from "../../src/verify/engines/sqlite.ts";
import { ledgerDir, processesIn, sweepLeftovers } from "../../src/verify/ledger.ts";
import { buildManifest, runIdTime, snapshotDeadline } from "../../src/verify/manifest.ts";
import { parseManifest } from "../../src/verify/manifest_read.ts";
import { chooseManifest, devicePath, saveManifest } from "../../src/verify/manifest_store.ts";
import { Sandbox, userIds } from "../../src/verify/sandbox.ts";
import { classifySource } from "../../src/verify/sources.ts";
import { exitCodeOf, lowest, verdictOf } from "../../src/verify/verdict.ts";

const step = (facts: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  ok: true,
  durationMs: 1,
  errors: [],
  facts,
  ...extra,
});

/** A result as `run --json` prints it, with one plugin of each kind. */
function result(runId = "20261208T030000Z-abcdef"): RunResult {
  return {
    event: "result",
    runId,
    status: "success",
    consistency: "application",
    requestedConsistency: "application",
    snapshotTaken: true,
    exitCode: 0,
    errors: [],
    warnings: [],
    plugins: [
      {
        name: "shop",
        type: "mysql",
        checks: [],
        quiesce: step({
          flavor: "mariadb",
          binlog: true,
          binlogFile: "binlog.000002",
          binlogPosition: 1234,
          gtidPosition: "0-1-42",
          version: "10.11.6-MariaDB",
        }),
        resume: step({ holdMs: 40 }),
      },
      {
        name: "pg",
        type: "postgresql",
        checks: [],
        quiesce: step({
          mode: "backup",
          walLsn: "0/3000028",
          timeline: 1,
          checkpointLsn: "0/3000060",
        }),
        resume: step({
          backupLabel: "/state/postgresql/r/backup_label",
          backupStopLsn: "0/3000100",
        }),
      },
      {
        name: "cache",
        type: "redis",
        checks: [],
        quiesce: step({ persistence: "rdb", mode: "bgsave", lastsave: 1700000000 }, {
          notHeld: { reason: "bgsave only", chosen: true },
        }),
        resume: step({}),
      },
      {
        name: "app",
        type: "sqlite",
        checks: [],
        quiesce: step({ files: [{ file: "/srv/app.db", journalMode: "wal" }] }),
        resume: {
          ok: false,
          durationMs: 1,
          errors: [{ code: "PluginLockLost", message: "lost" }],
          facts: {},
        },
      },
      { name: "pre", type: "script", checks: [], quiesce: step({}), resume: step({}) },
      { name: "never", type: "mongodb", checks: [], quiesce: null, resume: null },
    ],
    freeze: {
      enabled: true,
      mounts: [{
        mountPoint: "/srv",
        fsType: "ext4",
        device: "7:3",
        frozen: true,
        thawed: true,
      }],
      frozenMs: 30,
    },
    snapshot: { kind: "command", taken: true, durationMs: 10 },
    log: { written: 1, lost: 0, dropped: 0 } as unknown as RunResult["log"],
    durationMs: 812,
  };
}

const deps = {
  uuidOf: (m: { device: string }) => m.device === "7:3" ? "uuid-srv" : undefined,
  readText: (path: string) =>
    path.endsWith("backup_label") ? "START WAL LOCATION: 0/3000028\n" : undefined,
};

Deno.test("verify manifest: built from a run's result, positions and held per plugin, scripts apart", () => {
  const m = buildManifest(result(), deps, { finishedAt: new Date("2026-12-08T03:00:01.500Z") });
  assert.equal(m.format, "vmsnap-manifest");
  assert.equal(m.startedAt, "2026-12-08T03:00:00.000Z");
  assert.deepEqual(m.filesystems, [
    { mountPoint: "/srv", uuid: "uuid-srv", fsType: "ext4", device: "7:3", frozen: true },
  ]);
  assert.deepEqual(m.scripts, ["pre"]);
  assert.deepEqual(m.databases.map((d) => [d.plugin, d.type, d.held]), [
    ["shop", "mysql", true],
    ["pg", "postgresql", true],
    ["cache", "redis", false], // bgsave: writes not held
    ["app", "sqlite", false], // the lock was lost before resume
  ]);
  const shop = m.databases[0];
  assert.equal(shop.type === "mysql" && shop.gtidPosition, "0-1-42");
  const pg = m.databases[1];
  assert.equal(pg.type === "postgresql" && pg.backupLabel, "START WAL LOCATION: 0/3000028\n");
  assert.equal(snapshotDeadline(m), Date.parse("2026-12-08T03:00:01.500Z"));
  // Without finishedAt: the start (whole seconds) + 1 s + the duration.
  assert.equal(snapshotDeadline({ ...m, finishedAt: undefined }), Date.parse(m.startedAt) + 1812);
  // What is built is what is read back.
  assert.deepEqual(parseManifest(JSON.stringify(m), "m.json"), m);
});

Deno.test("verify manifest: an invalid one is refused, naming the file and the field", () => {
  const m = buildManifest(result(), deps);
  const refused = (value: unknown, pattern: RegExp) => {
    assert.throws(() => parseManifest(JSON.stringify(value), "/x/m.json"), (e: unknown) => {
      assert.ok(e instanceof VerifyError);
      assert.equal(e.code, "VerifyManifestInvalid");
      assert.match(e.message, /\/x\/m\.json/);
      assert.match(e.message, pattern);
      return true;
    });
  };
  refused({ ...m, format: "other" }, /"format"/);
  refused({ ...m, version: 99 }, /newer vmsnap/);
  refused({ ...m, runId: undefined }, /\$\.runId is missing/);
  refused({ ...m, consistency: "great" }, /consistency is "great"/);
  refused({ ...m, databases: [{ ...m.databases[1], walLsn: "xyz" }] }, /not a WAL position/);
  refused({ ...m, databases: [{ ...m.databases[0], type: "oracle" }] }, /type is "oracle"/);
  refused([1], /not a JSON object/);
  assert.throws(() => parseManifest("{", "m.json"), /not valid JSON/);
});

Deno.test("verify manifest: found on the snapshot first, else by UUID in stateDir (latest before the snapshot), else --manifest", () => {
  const { dir, cleanup } = secureDir("verify-");
  try {
    const older = buildManifest(result("20261208T010000Z-000001"), deps);
    const newer = buildManifest(result("20261208T020000Z-000002"), deps);
    const elsewhere = {
      ...buildManifest(result("20261208T025000Z-000003"), deps),
      filesystems: [],
    };
    for (const m of [older, newer, elsewhere]) saveManifest(dir, m);
    const explicit = join(dir, "explicit.json");
    writeFileSync(explicit, JSON.stringify({ ...older, runId: "20261201T000000Z-explic" }));
    const lookup = { onSnapshot: [], stateDir: dir, uuids: ["uuid-srv"], explicit };
    const at = (iso: string) => Date.parse(iso);
    assert.equal(
      chooseManifest({ ...lookup, before: at("2026-12-08T03:00:00Z") })?.manifest.runId,
      newer.runId,
    );
    assert.equal(
      chooseManifest({ ...lookup, before: at("2026-12-08T01:30:00Z") })?.manifest.runId,
      older.runId,
    );
    const fallback = chooseManifest({ ...lookup, before: at("2026-12-08T00:30:00Z") });
    assert.equal(fallback?.source, "option");
    assert.equal(
      chooseManifest({ ...lookup, explicit: undefined, uuids: ["other"], before: Date.now() }),
      undefined,
    );
    // On the snapshot: preferred; a stored final manifest of the same run replaces it.
    const frozen = { ...older, stage: "frozen" as const };
    const carried = chooseManifest({
      ...lookup,
      before: Date.now(),
      onSnapshot: [{ path: "img:/.vmsnap/manifest.json", text: JSON.stringify(frozen) }],
    });
    assert.equal(carried?.source, "stateDir");
    assert.equal(carried?.manifest.stage, "final");
    const alone = chooseManifest({
      ...lookup,
      before: Date.now(),
      onSnapshot: [{
        path: "img:/.vmsnap/manifest.json",
        text: JSON.stringify({ ...frozen, runId: "20261208T023000Z-onlyon" }),
      }],
    });
    assert.equal(alone?.source, "snapshot");
    assert.throws(
      () =>
        chooseManifest({
          ...lookup,
          before: Date.now(),
          onSnapshot: [{ path: "img:m", text: "{}" }],
        }),
      /img:m is not a valid vmsnap manifest/,
    );
  } finally {
    cleanup();
  }
});

Deno.test("verify verdicts: damage from a failed start or check, crash from a failed position or no manifest", () => {
  const e = (kind: "start" | "check" | "position" | "info", ok: boolean) => ({
    kind,
    ok,
    name: kind,
    detail: "",
  });
  assert.equal(verdictOf([e("start", true), e("position", true)], true), "application-consistent");
  assert.equal(verdictOf([e("start", true), e("position", true)], false), "crash-consistent");
  assert.equal(verdictOf([e("start", true), e("info", false)], true), "crash-consistent"); // nothing compared
  assert.equal(verdictOf([e("start", true), e("position", false)], true), "crash-consistent");
  assert.equal(verdictOf([e("check", false), e("position", true)], true), "damaged");
  assert.equal(verdictOf([e("start", false)], false), "damaged");
  assert.equal(lowest([]), "application-consistent");
  assert.equal(lowest(["crash-consistent", "application-consistent"]), "crash-consistent");
  assert.deepEqual(
    ["application-consistent", "crash-consistent", "damaged"].map((v) => exitCodeOf(v as never)),
    [0, 1, 2],
  );
});

Deno.test("verify parsers: mariadb-check output, LSNs, the SQLite header, the run id's time", () => {
  assert.deepEqual(
    readCheck(
      "app.t\nWarning  : InnoDB: The B-tree of index PRIMARY is corrupted.\nerror    : Corrupt\nmysql.db    OK\napp.m\nnote     : The storage engine for the table doesn't support check\n",
    ),
    {
      ok: 1,
      bad: [
        "app.t: warning: InnoDB: The B-tree of index PRIMARY is corrupted.",
        "app.t: error: Corrupt",
      ],
    },
  );
  assert.ok(lsnValue("1/0") > lsnValue("0/FFFFFFFF"));
  assert.equal(lsnValue("0/1597EA0"), 0x1597ea0n);
  assert.equal(runIdTime("nonsense"), undefined);
  const { dir, cleanup } = secureDir("verify-");
  try {
    const db = join(dir, "a.db");
    execFileSync("sqlite3", [db, "CREATE TABLE t (x); INSERT INTO t VALUES (1);"]);
    const header = sqliteHeader(db);
    assert.equal(header?.pageSize, 4096);
    assert.equal(header?.pageCount, 2);
    assert.ok(header!.changeCounter >= 1);
    writeFileSync(
      join(dir, "b.db"),
      "not a database at all, but long enough to have a header".repeat(3),
    );
    assert.equal(sqliteHeader(join(dir, "b.db")), undefined);
  } finally {
    cleanup();
  }
});

Deno.test("verify discovery: data directories by their markers, not below one found, within limits", () => {
  const { dir, cleanup } = secureDir("verify-");
  try {
    for (
      const p of ["var/lib/mysql/mysql", "srv/pg/main/global", "srv/pg/main/base", "proc/x/global"]
    ) {
      mkdirSync(join(dir, p), { recursive: true });
    }
    writeFileSync(join(dir, "var/lib/mysql/ibdata1"), "");
    writeFileSync(join(dir, "srv/pg/main/PG_VERSION"), "15\n");
    mkdirSync(join(dir, "srv/pg/main/base/5/global"), { recursive: true });
    const reach = (p: string) => join(dir, p);
    assert.deepEqual(findDataDirs("mysql", ["/"], reach), ["/var/lib/mysql"]);
    assert.deepEqual(findDataDirs("postgresql", ["/"], reach), ["/srv/pg/main"]);
    assert.deepEqual(findDataDirs("redis", ["/"], reach), []);
  } finally {
    cleanup();
  }
});

Deno.test("verify sources: missing, not a file/device/directory, image, qcow2; devices by major:minor", () => {
  const { dir, cleanup } = secureDir("verify-");
  try {
    assert.throws(
      () => classifySource(join(dir, "none")),
      (e: unknown) => e instanceof VerifyError && e.code === "VerifySnapshotNotFound",
    );
    execFileSync("mkfifo", [join(dir, "fifo")]);
    assert.throws(
      () => classifySource(join(dir, "fifo")),
      (e: unknown) => e instanceof VerifyError && e.code === "VerifySnapshotUnsupported",
    );
    writeFileSync(join(dir, "raw.img"), Buffer.alloc(4096));
    assert.equal(classifySource(join(dir, "raw.img")).kind, "image");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(dir, "x.qcow2"), "1M"]);
    assert.equal(classifySource(join(dir, "x.qcow2")).kind, "qcow2");
    const loop0 = Deno.readTextFileSync("/sys/block/loop0/dev").trim();
    assert.equal(devicePath(loop0), "/dev/loop0");
    assert.equal(devicePath("/dev/vda"), "/dev/vda");
    assert.equal(devicePath("nonsense"), undefined);
    assert.deepEqual(userIds("nobody"), { uid: 65534, gid: 65534 });
  } finally {
    cleanup();
  }
});

Deno.test("verify sandbox: mounts stay inside its namespaces, which end with close (and with verify)", async () => {
  const { dir, cleanup } = secureDir("verify-");
  let ns = "";
  let sandbox: Sandbox | undefined;
  try {
    const recorded: number[] = [];
    sandbox = await Sandbox.open({
      started: (anchor, init) => recorded.push(anchor.pid, init.pid),
    });
    ns = sandbox.mntNs;
    assert.notEqual(ns, readlinkSync("/proc/self/ns/mnt"));
    assert.equal(recorded[1], sandbox.initPid);
    const target = join(dir, "inside");
    mkdirSync(target);
    const mounted = await sandbox.run(["mount", "-t", "tmpfs", "x", target]);
    assert.equal(mounted.code, 0, mounted.stderr);
    await sandbox.run(["touch", join(target, "only-inside")]);
    assert.ok(!existsSync(join(target, "only-inside")), "a mount inside showed on the host");
    assert.ok(existsSync(sandbox.path(join(target, "only-inside"))));
    // No network but loopback, down.
    const links = await sandbox.run(["cat", "/proc/net/dev"]);
    assert.deepEqual(
      links.stdout.split("\n").slice(2).filter(Boolean).map((l) => l.trim().split(":")[0]),
      ["lo"],
    );
    // PID 1 of its own PID namespace.
    const pid = await sandbox.run(["sh", "-c", "echo $$"]);
    assert.ok(Number(pid.stdout) < 10, pid.stdout);
    const timed = await sandbox.run(["sleep", "30"], { timeoutMs: 1_000 });
    assert.equal(timed.timedOut, true);
    const limited = await sandbox.run(["sh", "-c", "ulimit -n"], { limits: { openFiles: 100 } });
    assert.equal(limited.stdout.trim(), "100");
    const asUser = await sandbox.run(["id", "-u"], { user: "nobody" });
    assert.equal(asUser.stdout.trim(), "65534");
    await sandbox.close();
    sandbox = undefined;
    const until = Date.now() + 10_000;
    while (processesIn(ns).length > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(processesIn(ns), []);
  } finally {
    await sandbox?.close();
    cleanup();
  }
});

Deno.test("verify leftovers: a dead verify's record names what to remove; a live one's is left alone", async () => {
  const { dir, cleanup } = secureDir("verify-");
  try {
    mkdirSync(ledgerDir(dir), { recursive: true });
    const scratch = join(dir, "scratch", "vmsnap-verify-20261208T000000Z-vdead01");
    mkdirSync(join(scratch, "upper"), { recursive: true });
    const work = join(dir, "verify", "work", "20261208T000000Z-vdead01");
    mkdirSync(work, { recursive: true });
    const dead = {
      verifyId: "20261208T000000Z-vdead01",
      pid: 2 ** 22 + 1, // above pid_max: never running
      started: "1",
      since: "2026-12-08T00:00:00Z",
      workDir: work,
      scratchDirs: [scratch],
      images: [],
    };
    writeFileSync(join(ledgerDir(dir), `${dead.verifyId}.json`), JSON.stringify(dead));
    const live = { ...dead, verifyId: "live", pid: Deno.pid, started: readStart(Deno.pid) };
    writeFileSync(join(ledgerDir(dir), "live.json"), JSON.stringify(live));
    const warnings = await sweepLeftovers(dir);
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0].code, "VerifyLeftoverCleaned");
    assert.match(warnings[0].message, /removed the scratch directory/);
    assert.ok(!existsSync(scratch));
    assert.ok(!existsSync(work));
    assert.ok(!existsSync(join(ledgerDir(dir), `${dead.verifyId}.json`)));
    assert.ok(existsSync(join(ledgerDir(dir), "live.json")));
  } finally {
    cleanup();
  }
});

/** A process's start time as the ledger records it. */
function readStart(pid: number): string {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
}
