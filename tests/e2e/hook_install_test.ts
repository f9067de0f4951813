/**
 * `vmsnap install` / `uninstall` under a prefix, through the binary: every
 * change printed, idempotent, what was there backed up and restored, the
 * dry run changes nothing.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { BIN, put, putConfig, runBin, secureDir } from "../helpers.ts";
import { layDistro } from "../distro_roots.ts";
import { DEBIAN_FSFREEZE_HOOK } from "../qemu_ga.ts";

/** Every file under a directory, relative, with its content. */
function tree(root: string, dir = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) Object.assign(out, tree(root, path));
    else out[path] = readFileSync(join(root, path), "utf8");
  }
  return out;
}

Deno.test("install --for each agent: printed, idempotent, backed up, uninstall restores", async (t) => {
  const { dir, cleanup } = secureDir("install-");
  try {
    const config = putConfig(dir, { fsFreezeEnabled: true });
    for (const agent of ["qemu-ga", "vmware", "azure", "gcp"]) {
      await t.step(agent, async () => {
        const root = join(dir, `root-${agent}`);
        // What the admin had before.
        const before: Record<string, [string, number]> = {
          "qemu-ga": ["etc/qemu/fsfreeze-hook.d/vmsnap", 0o755],
          vmware: ["etc/vmware-tools/backupScripts.d/vmsnap", 0o700],
          azure: ["etc/azure/VMSnapshotScriptPluginConfig.json", 0o600],
          gcp: ["etc/default/instance_configs.cfg", 0o644],
        };
        // qemu-ga: Debian's layout (install finds how qemu-ga runs its hook, or refuses).
        if (agent === "qemu-ga") layDistro("debian12", root);
        const [path, mode] = before[agent];
        const original = agent === "azure"
          ? `{ "pluginName": "ScriptRunner", "preScriptLocation": "/etc/azure/mine.sh", "timeoutInSeconds": 20 }\n`
          : agent === "gcp"
          ? "[Accounts]\ndeprovision_remove = true\n"
          : "#!/bin/sh\necho the admin's own hook\n";
        put(join(root, path), original, mode);
        const snapshot = tree(root);
        const args = ["--for", agent, "--root", root, "--config", config];

        const dry = await runBin(["install", ...args, "--dry-run"]);
        assert.equal(dry.code, 0, dry.stderr);
        assert.match(dry.stdout, /dry run, nothing changed/);
        assert.deepEqual(tree(root), snapshot, "the dry run changed nothing");

        const first = await runBin(["install", ...args]);
        assert.equal(first.code, 0, first.stderr);
        assert.match(first.stdout, new RegExp(`backup +${root}/${path.replaceAll(".", "\\.")}`));
        assert.match(first.stdout, /(create|replace|edit) +\//);
        const backup = join(root, "var/backups/vmsnap", agent, path);
        assert.equal(readFileSync(backup, "utf8"), original, "the original is kept");
        const installed = tree(root);

        const second = await runBin(["install", ...args]);
        assert.equal(second.code, 0, second.stderr);
        assert.doesNotMatch(second.stdout, /^ +(create|replace|edit|backup) /m, second.stdout);
        assert.match(second.stdout, /unchanged/);
        assert.deepEqual(tree(root), installed, "a second install changes nothing");

        const removed = await runBin(["uninstall", "--for", agent, "--root", root]);
        assert.equal(removed.code, 0, removed.stderr);
        assert.match(removed.stdout, /restore +\//);
        assert.equal(readFileSync(join(root, path), "utf8"), original, "restored");
        assert.equal(statSync(join(root, path)).mode & 0o7777, mode, "with its mode");
        for (const file of Object.keys(tree(root))) {
          assert.ok(
            file in snapshot || file.startsWith("etc/vmsnap/"),
            `uninstall left ${file}`,
          );
        }
        const again = await runBin(["uninstall", "--for", agent, "--root", root]);
        assert.match(again.stdout, /nothing to uninstall/);
      });
    }
    await t.step("azure: vmsnap's own config starts as a copy of Azure's", () => {
      const root = join(dir, "root-azure-default");
      put(
        join(root, "etc/azure/VMSnapshotScriptPluginConfig.json"),
        `{ "preScriptLocation": "/etc/azure/mine.sh", "timeoutInSeconds": 40, }`,
        0o600,
      );
      return runBin(["install", "--for", "azure", "--root", root]).then((ran) => {
        assert.equal(ran.code, 0, ran.stderr);
        const own = join(root, "etc/vmsnap/vmsnap.json");
        assert.match(readFileSync(own, "utf8"), /mine\.sh/);
        assert.equal(statSync(own).mode & 0o7777, 0o600);
        const azure = JSON.parse(
          readFileSync(join(root, "etc/azure/VMSnapshotScriptPluginConfig.json"), "utf8"),
        );
        assert.equal(azure.timeoutInSeconds, 40);
        assert.match(
          readFileSync(join(root, "etc/azure/vmsnap-pre.sh"), "utf8"),
          /--config \/etc\/vmsnap\/vmsnap\.json --timeout 35/,
        );
      });
    });
    await t.step(
      "a directory others can write, a planted link: refused, nothing followed",
      async () => {
        // The decoy stands for a file only root may change (never a real system file in a test).
        const decoy = put(join(dir, "decoy"), "root's own file\n", 0o644);
        const root = join(dir, "root-planted");
        const snapshots = join(root, "etc/google/snapshots");
        put(join(root, "etc/default/instance_configs.cfg"), "[Core]\nx = 1\n", 0o600);
        mkdirSync(snapshots, { recursive: true });
        chmodSync(snapshots, 0o777);
        symlinkSync(decoy, join(snapshots, "pre.sh.vmsnap-new"));
        const before = tree(root);
        const open = await runBin(["install", "--for", "gcp", "--root", root, "--config", config]);
        assert.equal(open.code, 2, open.stdout);
        assert.match(
          open.stderr,
          /\[InsecureDirectory\].*snapshots is writable by group and other/,
        );
        assert.equal(readFileSync(decoy, "utf8"), "root's own file\n", "the link was not followed");
        assert.equal(statSync(decoy).mode & 0o7777, 0o644);
        assert.deepEqual(tree(root), before, "nothing was changed");
        // A link left at the temporary name in a root-only directory is not followed either.
        chmodSync(snapshots, 0o755);
        const done = await runBin(["install", "--for", "gcp", "--root", root, "--config", config]);
        assert.equal(done.code, 0, done.stderr);
        assert.equal(readFileSync(decoy, "utf8"), "root's own file\n", "the link was not followed");
        assert.equal(statSync(decoy).mode & 0o7777, 0o644);
        assert.ok(lstatSync(join(snapshots, "pre.sh")).isFile());
        assert.equal(
          statSync(join(root, "etc/default/instance_configs.cfg")).mode & 0o7777,
          0o600,
          "the admin's mode of instance_configs.cfg is kept",
        );
        // The hook file itself a link: refused, its target untouched.
        const link = join(root, "etc/vmware-tools/backupScripts.d/vmsnap");
        mkdirSync(join(link, ".."), { recursive: true });
        symlinkSync(decoy, link);
        const linked = await runBin(["install", "--for", "vmware", "--root", root]);
        assert.equal(linked.code, 2, linked.stdout);
        assert.match(linked.stderr, /\[InstallFailed\].*vmsnap is a symbolic link/);
        assert.equal(readFileSync(decoy, "utf8"), "root's own file\n");
      },
    );
    await t.step("qemu-ga: the drop-in keeps the admin's own ExecStart override", async () => {
      const root = join(dir, "root-qga-override");
      const unit = "/lib/systemd/system/qemu-guest-agent.service";
      const dropins = join(root, "etc/systemd/system/qemu-guest-agent.service.d");
      put(join(root, unit), readFileSync(unit, "utf8"), 0o644);
      put(join(root, "etc/qemu/fsfreeze-hook"), readFileSync(DEBIAN_FSFREEZE_HOOK, "utf8"), 0o755);
      // The admin keeps guest-exec off: vmsnap's drop-in must not turn it back on.
      const admin = "-/usr/sbin/qemu-ga --blacklist=guest-exec,guest-file-open";
      put(join(dropins, "override.conf"), `[Service]\nExecStart=\nExecStart=${admin}\n`, 0o644);
      const ran = await runBin(["install", "--for", "qemu-ga", "--root", root, "--config", config]);
      assert.equal(ran.code, 0, ran.stderr);
      const ours = readFileSync(join(dropins, "vmsnap-fsfreeze-hook.conf"), "utf8");
      assert.match(
        ours,
        new RegExp(`^ExecStart=${admin} --fsfreeze-hook=/etc/qemu/fsfreeze-hook$`, "m"),
      );
      // systemd accepts the unit with both drop-ins, and ours is the ExecStart it runs.
      const units = join(dir, "qga-units");
      mkdirSync(join(units, "qemu-guest-agent.service.d"), { recursive: true });
      copyFileSync(join(root, unit), join(units, "qemu-guest-agent.service"));
      for (const name of ["override.conf", "vmsnap-fsfreeze-hook.conf"]) {
        copyFileSync(join(dropins, name), join(units, "qemu-guest-agent.service.d", name));
      }
      const verify = spawnSync(
        "systemd-analyze",
        ["verify", join(units, "qemu-guest-agent.service")],
        { encoding: "utf8", env: { ...Deno.env.toObject(), SYSTEMD_UNIT_PATH: `${units}:` } },
      );
      assert.equal(verify.status, 0, verify.stderr);
      assert.doesNotMatch(verify.stderr, /qemu-guest-agent/, verify.stderr);
      // A later drop-in that sets ExecStart again would undo vmsnap's: said, not hidden.
      put(join(dropins, "zz-local.conf"), `[Service]\nExecStart=\nExecStart=${admin}\n`, 0o644);
      const later = await runBin([
        "install",
        "--for",
        "qemu-ga",
        "--root",
        root,
        "--config",
        config,
      ]);
      assert.match(later.stdout, /WARNING: .*zz-local\.conf.*sets ExecStart after/);
    });
    await t.step(
      "azure: the hook gives up before Azure does, whatever timeoutInSeconds says",
      async () => {
        const cases: [string, string | undefined][] = [
          ["3600", "1795"], // Azure caps script timeouts at 1800 s
          ['"60"', "55"],
          ["6", "5"],
          ['"abc"', undefined],
          ["0", undefined],
        ];
        for (const [value, expected] of cases) {
          const root = join(dir, `root-azure-timeout-${cases.findIndex((c) => c[0] === value)}`);
          const azure = join(root, "etc/azure/VMSnapshotScriptPluginConfig.json");
          put(azure, `{ "timeoutInSeconds": ${value} }\n`, 0o600);
          const ran = await runBin(["install", "--for", "azure", "--root", root]);
          if (expected === undefined) {
            assert.equal(ran.code, 2, `${value}: ${ran.stdout}`);
            assert.match(ran.stderr, /\[InvalidConfigValue\].*timeoutInSeconds/);
            assert.equal(readFileSync(azure, "utf8"), `{ "timeoutInSeconds": ${value} }\n`);
            assert.ok(!existsSync(join(root, "etc/azure/vmsnap-pre.sh")), "nothing written");
            continue;
          }
          assert.equal(ran.code, 0, ran.stderr);
          for (const script of ["vmsnap-pre.sh", "vmsnap-post.sh"]) {
            const text = readFileSync(join(root, "etc/azure", script), "utf8");
            assert.match(text, new RegExp(`--timeout ${expected}\n`), `${value}: ${text}`);
          }
        }
      },
    );
    await t.step("uninstall keeps what the admin changed after install", async () => {
      const root = join(dir, "root-gcp-edited");
      const cfg = join(root, "etc/default/instance_configs.cfg");
      put(cfg, "[Core]\ncloud_logging_enabled = false\n", 0o644);
      const args = ["--for", "gcp", "--root", root, "--config", config];
      assert.equal((await runBin(["install", ...args])).code, 0);
      // Later, the admin sets something else in the same file.
      const edited = `${readFileSync(cfg, "utf8")}\n[Accounts]\ndeprovision_remove = true\n`;
      writeFileSync(cfg, edited);
      const removed = await runBin(["uninstall", "--for", "gcp", "--root", root]);
      assert.equal(removed.code, 0, removed.stderr);
      assert.equal(readFileSync(cfg, "utf8"), edited, "the admin's later edit is not lost");
      assert.match(
        removed.stdout,
        /instance_configs\.cfg was changed since vmsnap install wrote it/,
      );
      assert.ok(existsSync(join(root, "var/backups/vmsnap/gcp/etc/default/instance_configs.cfg")));
      assert.ok(!existsSync(join(root, "etc/google/snapshots/pre.sh")), "unchanged files go");
    });
    await t.step(
      "gcp: Enabled = false (a key in another case) is the setting changed",
      async () => {
        const root = join(dir, "root-gcp-case");
        const cfg = join(root, "etc/default/instance_configs.cfg");
        put(cfg, "[Snapshots]\nEnabled = false\nTimeout_In_Seconds = 30\n", 0o644);
        const ran = await runBin(["install", "--for", "gcp", "--root", root, "--config", config]);
        assert.equal(ran.code, 0, ran.stderr);
        assert.equal(
          readFileSync(cfg, "utf8"),
          "[Snapshots]\nenabled = true\nTimeout_In_Seconds = 30\n",
        );
        const pre = readFileSync(join(root, "etc/google/snapshots/pre.sh"), "utf8");
        assert.match(pre, /--timeout 25 /, "the agent's timeout_in_seconds (30) was read");
      },
    );
    await t.step("a vmsnap binary others can write: install warns", () => {
      // `install --dry-run` run by a copy of the binary with the given mode, in the test's root-only
      // directory: the checkout itself may live anywhere (even under /tmp).
      const installFrom = (name: string, mode: number) => {
        const copy = join(dir, name);
        copyFileSync(BIN, copy);
        chmodSync(copy, mode);
        const ran = spawnSync(copy, [
          "install",
          "--for",
          "vmware",
          "--root",
          join(dir, "w"),
          "--dry-run",
        ], {
          encoding: "utf8",
        });
        assert.equal(ran.status, 0, ran.stderr);
        return ran.stdout;
      };
      assert.match(
        installFrom("vmsnap-writable", 0o777),
        /WARNING: the agent will run \S+vmsnap-writable as root, but .*writable by group or other/,
      );
      assert.doesNotMatch(installFrom("vmsnap-safe", 0o755), /WARNING/);
    });
    await t.step("generic has nothing to install; an unknown agent is a usage error", async () => {
      const generic = await runBin(["install", "--for", "generic", "--root", dir]);
      assert.equal(generic.code, 64);
      assert.match(generic.stderr, /nothing to install/);
      const typo = await runBin(["install", "--for", "vmwar"]);
      assert.equal(typo.code, 64);
      assert.match(typo.stderr, /did you mean "vmware"/i);
      assert.ok(!existsSync(join(dir, "var")));
    });
  } finally {
    cleanup();
  }
});
