/**
 * A snapshot cannot lead verify to the host's files: a directory of the
 * snapshot replaced by a symbolic link to a host directory (absolute: on
 * the VM it would name the VM's own) is never followed by verify's root
 * commands (chown of the database's files) nor read from the host side.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, renameSync, statSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { runFixture } from "../run_fixture.ts";
import {
  assertNothingLeft,
  editImage,
  explain,
  sha256,
  snapshotByRun,
  verify,
} from "./fixtures.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...options,
  name:
    "verify: a symbolic link in the snapshot to a host directory is not followed (no chown, no read of the host's file)",
  fn: async () => {
    const f = runFixture();
    try {
      const real = join(f.mp, "app");
      mkdirSync(real);
      const file = join(real, "app.db");
      execFileSync("sqlite3", [file, "CREATE TABLE t (x); INSERT INTO t VALUES (1);"]);
      const snap = await snapshotByRun(f, {
        mount: f.mp,
        image: f.fs.image,
        copy: f.copy,
        plugins: [{ type: "sqlite", name: "app", files: [file] }],
      });
      // On the host, a root-only database at a path the link will name.
      const host = f.path("host-secrets");
      mkdirSync(host, { mode: 0o700 });
      execFileSync("sqlite3", [
        join(host, "app.db"),
        "CREATE TABLE secret (x); INSERT INTO secret VALUES (42);",
      ]);
      const before = await sha256(join(host, "app.db"));
      editImage(snap.copy, f.path("edit"), (mp) => {
        renameSync(join(mp, "app"), join(mp, "app.orig"));
        symlinkSync(host, join(mp, "app"));
      });
      const stateDir = f.path("verify-state");
      const ran = await verify([
        snap.copy,
        "--state-dir",
        stateDir,
        "--manifest",
        snap.manifestFile,
      ]);
      const stat = statSync(join(host, "app.db"));
      assert.equal(stat.uid, 0, "verify chowned a host file through the snapshot's link");
      assert.equal(statSync(host).uid, 0);
      assert.equal(await sha256(join(host, "app.db")), before);
      assert.equal(ran.report.verdict, "damaged", explain(ran.report));
      assert.ok(!JSON.stringify(ran.report).includes("secret"), "the host file was read");
      assertNothingLeft(stateDir, [snap.copy]);
    } finally {
      f.cleanup();
    }
  },
});
