/**
 * Issue 21 item 13: `install --root` stays under its prefix (an absolute
 * directory symlink inside it is never followed onto the host), `uninstall`
 * removes what `install` created and nothing else, and the directories
 * `install` creates have the usual modes. Each root is a copy of the Debian 12
 * fixture (tests/fixtures/distros/), where every agent is set up as Debian's
 * packages set it up.
 */
import assert from "node:assert/strict";
import { cpSync, lstatSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { putConfig, runBin, secureDir } from "../helpers.ts";
import { layDistro } from "../distro_roots.ts";

/** Every entry under a directory with its mode (relative paths), directories included. */
function entries(root: string, dir = ""): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).sort((a, b) =>
    a.name.localeCompare(b.name)
  ).flatMap((e) => {
    const path = join(dir, e.name);
    const mode = (lstatSync(join(root, path)).mode & 0o7777).toString(8);
    return e.isDirectory() && !e.isSymbolicLink()
      ? [`${path}/ ${mode}`, ...entries(root, path)]
      : [`${path} ${mode}`];
  });
}

Deno.test(
  "issue 21 item 13: install --root stays under its prefix; uninstall removes what install created; usual modes",
  async (t) => {
    const { dir, cleanup } = secureDir("install-root-");
    const config = putConfig(dir, { fsFreezeEnabled: true });
    try {
      await t.step(
        "an absolute directory symlink inside the prefix is not followed out of it",
        async () => {
          const root = layDistro("debian12", join(dir, "root-link"));
          // Stands for the host's /etc/qemu (never a real system directory in a test).
          const decoy = join(dir, "host-etc-qemu");
          cpSync(join(root, "etc", "qemu"), decoy, { recursive: true, verbatimSymlinks: true });
          rmSync(join(root, "etc", "qemu"), { recursive: true });
          symlinkSync(decoy, join(root, "etc", "qemu"));
          const before = entries(decoy);
          const ran = await runBin([
            "install",
            "--for",
            "qemu-ga",
            "--root",
            root,
            "--config",
            config,
          ]);
          assert.deepEqual(
            entries(decoy),
            before,
            `install wrote outside its --root through a symlink:\n${ran.stdout}${ran.stderr}`,
          );
          assert.notEqual(ran.code, 0, "a path that leads out of --root is refused");
        },
      );

      for (const agent of ["qemu-ga", "vmware", "gcp", "azure"]) {
        await t.step(
          `${agent}: uninstall puts the root back exactly as install found it`,
          async () => {
            const root = layDistro("debian12", join(dir, `root-${agent}`));
            const before = entries(root);
            const installed = await runBin([
              "install",
              "--for",
              agent,
              "--root",
              root,
              "--config",
              config,
            ]);
            assert.equal(installed.code, 0, installed.stdout + installed.stderr);
            assert.notDeepEqual(entries(root), before, `${agent}: install changed something`);
            const removed = await runBin(["uninstall", "--for", agent, "--root", root]);
            assert.equal(removed.code, 0, removed.stdout + removed.stderr);
            assert.deepEqual(
              entries(root),
              before,
              `${agent}: uninstall left what install created`,
            );
          },
        );
      }

      await t.step("uninstall of what was never installed creates nothing", async () => {
        const root = join(dir, "root-bare");
        mkdirSync(root, { mode: 0o755 });
        for (const agent of ["qemu-ga", "vmware", "gcp", "azure"]) {
          await runBin(["uninstall", "--for", agent, "--root", root]);
          assert.deepEqual(entries(root), [], `${agent}: uninstall created directories`);
        }
      });

      await t.step("the directories install creates have the usual modes", async () => {
        const root = layDistro("debian12", join(dir, "root-modes"));
        rmSync(join(root, "var"), { recursive: true, force: true });
        const installed = await runBin([
          "install",
          "--for",
          "gcp",
          "--root",
          root,
          "--config",
          config,
        ]);
        assert.equal(installed.code, 0, installed.stdout + installed.stderr);
        const mode = (path: string) => (statSync(join(root, path)).mode & 0o7777).toString(8);
        for (const path of ["var", "var/backups", "etc/google"]) {
          assert.ok(lstatSync(join(root, path)).isDirectory(), path);
          assert.equal(mode(path), "755", `${path} is created 0${mode(path)}, not 0755`);
        }
      });
    } finally {
      cleanup();
    }
  },
);
