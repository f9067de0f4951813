/**
 * verify on XFS and btrfs: the snapshot of a filesystem that is still
 * mounted has the same UUID (xfs needs `nouuid`; btrfs a temporary fsid),
 * and neither may replay its log (`norecovery`, `rescue=nologreplay`). An
 * SQLite database on each, snapshotted by `dist/vmsnap run` with the sqlite
 * plugin, verifies application-consistent with the image unchanged.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { runFixture } from "../run_fixture.ts";
import { assertNothingLeft, explain, sha256, snapshotByRun, verify } from "./fixtures.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

for (
  const [fsType, mountOption] of [["xfs", "norecovery,nouuid"], ["btrfs", "rescue=nologreplay"]]
) {
  Deno.test({
    ...options,
    name:
      `verify: an SQLite snapshot on ${fsType} (mounted ${mountOption}) is application-consistent`,
    fn: async () => {
      const f = runFixture({ fsType, sizeMiB: 320 });
      try {
        const file = join(f.mp, "app.db");
        execFileSync("sqlite3", [
          file,
          "PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
        ]);
        const snap = await snapshotByRun(f, {
          mount: f.mp,
          image: f.fs.image,
          copy: f.copy,
          plugins: [{ type: "sqlite", name: "app", files: [file] }],
        });
        const before = await sha256(snap.copy);
        const stateDir = f.path("verify-state");
        const ran = await verify([
          snap.copy,
          "--state-dir",
          stateDir,
          "--manifest",
          snap.manifestFile,
        ]);
        assert.equal(ran.report.verdict, "application-consistent", explain(ran.report));
        const mount = ran.report.filesystems[0].evidence.find((e) =>
          /mounts read-only/.test(e.name)
        );
        assert.match(mount!.detail, new RegExp(`-t ${fsType} -o loop,ro,${mountOption}`));
        assert.equal(await sha256(snap.copy), before);
        assertNothingLeft(stateDir, [snap.copy]);
      } finally {
        f.cleanup();
      }
    },
  });
}
