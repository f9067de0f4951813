/**
 * verify's refusals and its cleanup, on one Redis snapshot made by
 * `dist/vmsnap run`: a snapshot under an active mount (the live image, its
 * mounted loop device, a read-write directory), a missing server binary and
 * an invalid manifest are coded errors that leave nothing behind; the same
 * snapshot as a directory mounted read-only by an admin and as a qcow2 image
 * verifies; SIGKILL while the restored server runs leaves no server, no
 * namespace, no mount and no loop device, and the next verify removes the
 * record.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { alive, waitFor } from "../helpers.ts";
import { dbDir, startRedis } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";
import { loopDevicesOf, processesIn } from "../../src/verify/ledger.ts";
import {
  assertNothingLeft,
  explain,
  sha256,
  snapshotByRun,
  verify,
  verifyArgv,
} from "./fixtures.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...options,
  name:
    "verify: refusals (active mount, missing binary, invalid manifest), other snapshot kinds, SIGKILL",
  fn: async (t) => {
    const f = runFixture();
    const db = dbDir();
    const server = await startRedis(db.dir, { persistence: "aof" });
    const stateDir = f.path("verify-state");
    try {
      server.cli("RPUSH", "log", "1", "2", "3");
      const snap = await snapshotByRun(f, {
        mount: server.fs.mountPoint,
        image: server.fs.image,
        copy: join(db.dir, "copy.img"),
        plugins: [{ type: "redis", name: "cache", socket: server.socket }],
      });
      const manifest = ["--state-dir", stateDir, "--manifest", snap.manifestFile];

      await t.step(
        "a snapshot under an active mount is refused with VerifySnapshotInUse",
        async () => {
          for (const live of [server.fs.image, server.fs.device, server.fs.mountPoint]) {
            const ran = await verify([live, ...manifest]);
            assert.equal(ran.code, 2, `${live}: ${explain(ran.report)}`);
            assert.equal(ran.report.error?.code, "VerifySnapshotInUse", live);
            assert.match(ran.report.error!.message, /Fix:/);
          }
          assertNothingLeft(stateDir, []);
        },
      );

      await t.step(
        "a missing server binary is VerifyServerNotFound, nothing started or left",
        async () => {
          const ran = await verify([
            snap.copy,
            ...manifest,
            "--options",
            JSON.stringify({ binaries: { redisServer: "/nonexistent/redis-server" } }),
          ]);
          assert.equal(ran.code, 2);
          assert.equal(ran.report.error?.code, "VerifyServerNotFound", explain(ran.report));
          assert.match(ran.report.error!.message, /redis-server/);
          assert.ok(!ran.progress.some((p) => p.stage === "server-starting"));
          assertNothingLeft(stateDir, [snap.copy]);
        },
      );

      await t.step("an invalid manifest is VerifyManifestInvalid, naming the field", async () => {
        const bad = f.path("bad-manifest.json");
        writeFileSync(bad, JSON.stringify({ ...snap.manifest, databases: [{ type: "redis" }] }));
        const ran = await verify([snap.copy, "--state-dir", stateDir, "--manifest", bad]);
        assert.equal(ran.code, 2);
        assert.equal(ran.report.error?.code, "VerifyManifestInvalid");
        assert.match(ran.report.error!.message, /databases\[0\]\.plugin is missing/);
        writeFileSync(bad, "{ not json");
        const garbled = await verify([snap.copy, "--state-dir", stateDir, "--manifest", bad]);
        assert.equal(garbled.report.error?.code, "VerifyManifestInvalid");
        assertNothingLeft(stateDir, [snap.copy]);
      });

      await t.step(
        "the snapshot mounted read-only by an admin (a directory) verifies",
        async () => {
          const dir = join(db.dir, "admin-mount");
          mkdirSync(dir, { recursive: true });
          execFileSync("mount", ["-o", "loop,ro,noload", snap.copy, dir]);
          try {
            const ran = await verify([dir, ...manifest]);
            assert.equal(ran.report.verdict, "application-consistent", explain(ran.report));
            assert.equal(ran.report.snapshots[0].kind, "directory");
          } finally {
            execFileSync("umount", [dir]);
          }
          assertNothingLeft(stateDir, []);
        },
      );

      await t.step(
        "a qcow2 image is converted into the scratch space and verifies, unchanged",
        async () => {
          const qcow2 = join(db.dir, "copy.qcow2");
          execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", snap.copy, qcow2]);
          const before = await sha256(qcow2);
          const ran = await verify([qcow2, ...manifest]);
          assert.equal(ran.report.verdict, "application-consistent", explain(ran.report));
          assert.equal(ran.report.snapshots[0].kind, "qcow2");
          assert.equal(await sha256(qcow2), before);
          assertNothingLeft(stateDir, [qcow2]);
        },
      );

      await t.step(
        "without a manifest, the databases found on the snapshot are at best crash-consistent",
        async () => {
          const ran = await verify([snap.copy, "--state-dir", f.path("empty-state")]);
          assert.equal(ran.report.manifest, null);
          assert.equal(ran.report.verdict, "crash-consistent", explain(ran.report));
          assert.equal(ran.code, 1);
          assert.equal(ran.report.databases[0].type, "redis");
          assert.ok(
            ran.report.databases[0].evidence.some((e) => /loads the AOF/.test(e.name) && e.ok),
          );
          assertNothingLeft(f.path("empty-state"), [snap.copy]);
        },
      );

      await t.step("a whole-disk image (MBR partition table) verifies its partition", async () => {
        const disk = join(db.dir, "disk.img");
        withPartitionTable(snap.copy, disk);
        const ran = await verify([disk, ...manifest]);
        assert.equal(ran.report.verdict, "application-consistent", explain(ran.report));
        assert.equal(ran.report.filesystems[0].partition, 1);
        assert.match(ran.report.filesystems[0].evidence[0].detail, /offset=1048576/);
        assertNothingLeft(stateDir, [disk]);
      });

      await t.step(
        "SIGKILL while the restored server runs leaves nothing; the next verify removes the record",
        async () => {
          const child = spawn(process.execPath, verifyArgv([snap.copy, ...manifest]), {
            stdio: ["ignore", "pipe", "pipe"],
          });
          let stderr = "";
          child.stderr.on("data", (d) => (stderr += d));
          const exited = new Promise((r) => child.on("close", r));
          const events = () =>
            stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
          await waitFor(
            "the restored server",
            () => events().some((e) => e.stage === "server-ready"),
            60_000,
          );
          const init = events().find((e) => e.stage === "namespace")!.pid as number;
          const serverPid = events().find((e) => e.stage === "server-ready")!.pid as number;
          const ns = readlinkSync(`/proc/${init}/ns/mnt`);
          assert.ok(alive(serverPid));
          child.kill("SIGKILL");
          await exited;
          await waitFor("the namespace to end", () => processesIn(ns).length === 0, 10_000);
          assert.ok(!alive(serverPid), "the restored redis-server outlived verify");
          assert.ok(!alive(init), "the namespace's first process outlived verify");
          await waitFor(
            "the loop device to detach",
            () => loopDevicesOf(snap.copy).length === 0,
            10_000,
          );
          assert.ok(!readFileMounts().includes(snap.copy));
          // The record says what was set up: the next verify finds it and cleans up.
          const records = readdirSync(join(stateDir, "verify", "active"));
          assert.equal(records.length, 1);
          const next = await verify([snap.copy, ...manifest]);
          assert.equal(next.report.verdict, "application-consistent", explain(next.report));
          assert.ok(
            next.report.warnings.some((w) => w.code === "VerifyLeftoverCleaned"),
            JSON.stringify(next.report.warnings),
          );
          assertNothingLeft(stateDir, [snap.copy]);
          assert.ok(!existsSync(join(stateDir, "verify", "work", records[0].replace(".json", ""))));
        },
      );
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

/** A disk image: an MBR with one Linux partition at 1 MiB holding `fs` (no fdisk needed). */
function withPartitionTable(fs: string, disk: string): void {
  execFileSync("python3", [
    "-c",
    `
import os, shutil, struct, sys
fs, disk = sys.argv[1], sys.argv[2]
sectors = os.path.getsize(fs) // 512
mbr = bytearray(512)
mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\\0\\0\\0", 0x83, b"\\0\\0\\0", 2048, sectors)
mbr[510:512] = b"\\x55\\xaa"
with open(disk, "wb") as out:
    out.write(mbr)
    out.seek(2048 * 512)
    with open(fs, "rb") as src:
        shutil.copyfileobj(src, out)
`,
    fs,
    disk,
  ]);
}

/** Every mount's source as the host sees it. */
function readFileMounts(): string {
  return execFileSync("cat", ["/proc/self/mountinfo"], { encoding: "utf8" });
}
