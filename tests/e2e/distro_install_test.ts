/**
 * `vmsnap install` / `uninstall` through the binary on every distribution's
 * layout (copies of tests/fixtures/distros, `--root`): the hook where that
 * distribution's qemu-ga really runs it, switched on the way the
 * distribution does it, what was found said, a second install changing
 * nothing, and uninstall giving back exactly the tree that was there
 * (contents, modes, links, no directory left behind). Then the layouts
 * admins make of them: a hook switched off, an empty hook variable, their
 * own hook script, a directory link inside the prefix.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { put, runBin, secureDir } from "../helpers.ts";
import { type Distro, distroRoot, DISTROS } from "../distro_roots.ts";

/** Every entry under a root: type, mode and content hash (or link target). */
function state(root: string, dir = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(root, dir)).sort()) {
    const path = join(dir, name);
    const stat = lstatSync(join(root, path));
    const mode = (stat.mode & 0o7777).toString(8);
    if (stat.isSymbolicLink()) out[path] = `link ${readlinkSync(join(root, path))}`;
    else if (stat.isDirectory()) {
      out[path] = `dir ${mode}`;
      Object.assign(out, state(root, path));
    } else {
      const hash = createHash("sha256").update(readFileSync(join(root, path))).digest("hex");
      out[path] = `file ${mode} ${hash.slice(0, 16)}`;
    }
  }
  return out;
}

/** What install must do for qemu-ga on each distribution (undefined: it must refuse). */
const QEMU_GA: Record<
  Distro,
  { hook: string; enable?: [string, RegExp]; said: RegExp } | undefined
> = {
  debian12: {
    hook: "etc/qemu/fsfreeze-hook.d/vmsnap",
    enable: [
      "etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf",
      /^ExecStart=\n^ExecStart=-\/usr\/sbin\/qemu-ga --fsfreeze-hook=\/etc\/qemu\/fsfreeze-hook$/m,
    ],
    said: /\/etc\/qemu\/fsfreeze-hook runs every file of \/etc\/qemu\/fsfreeze-hook\.d/,
  },
  rhel8: {
    hook: "etc/qemu-ga/fsfreeze-hook.d/vmsnap",
    said: /qemu-ga runs \/etc\/qemu-ga\/fsfreeze-hook .*expanded from \/etc\/sysconfig\/qemu-ga/,
  },
  rhel9: {
    hook: "etc/qemu-ga/fsfreeze-hook.d/vmsnap",
    said: /qemu-ga runs \/etc\/qemu-ga\/fsfreeze-hook .*expanded from \/etc\/sysconfig\/qemu-ga/,
  },
  fedora: {
    hook: "etc/qemu-ga/fsfreeze-hook.d/vmsnap",
    said: /qemu-ga runs \/etc\/qemu-ga\/fsfreeze-hook .*expanded from \/etc\/sysconfig\/qemu-ga/,
  },
  suse: {
    hook: "etc/qemu/fsfreeze-hook.d/vmsnap",
    enable: [
      "etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf",
      /^ExecStart=-\/usr\/bin\/qemu-ga -p \/dev\/virtio-ports\/org\.qemu\.guest_agent\.0 --fsfreeze-hook=\/etc\/qemu\/fsfreeze-hook\.d\/vmsnap$/m,
    ],
    said: /no hook script here .*qemu-ga will run vmsnap's hook itself/,
  },
  alpine: {
    hook: "etc/qemu/fsfreeze-hook.d/vmsnap",
    enable: [
      "etc/qemu/qemu-ga.conf",
      /^\[general\]\nfsfreeze-hook=\/etc\/qemu\/fsfreeze-hook\.d\/vmsnap\n$/,
    ],
    said: /found: openrc \/etc\/init\.d\/qemu-guest-agent/,
  },
  al2023: undefined,
};

/** SELinux: enforcing on the RHEL family, permissive on AL2023; none elsewhere. */
const SELINUX: Partial<Record<Distro, RegExp>> = {
  rhel8: /restorecon -v \/etc\/qemu-ga\/fsfreeze-hook\.d\/vmsnap /,
  rhel9: /restorecon -v \/etc\/qemu-ga\/fsfreeze-hook\.d\/vmsnap /,
  fedora: /restorecon -v \/etc\/qemu-ga\/fsfreeze-hook\.d\/vmsnap /,
};

const CONFIG = "/etc/vmsnap/vmsnap.json";

for (const distro of DISTROS) {
  Deno.test(`install --for qemu-ga on ${distro}: where its qemu-ga runs the hook, undone exactly`, async () => {
    const { root, cleanup } = distroRoot(distro);
    try {
      const want = QEMU_GA[distro];
      const before = state(root);
      const args = ["--for", "qemu-ga", "--root", root, "--config", CONFIG];
      const dry = await runBin(["install", ...args, "--dry-run"]);
      assert.deepEqual(state(root), before, "the dry run changed nothing");
      const ran = await runBin(["install", ...args]);
      if (!want) {
        assert.equal(dry.code, 2, dry.stdout);
        assert.equal(ran.code, 2, ran.stdout);
        assert.match(ran.stderr, /\[AgentSetupUnknown\] no qemu-guest-agent service was found/);
        assert.match(
          ran.stderr,
          /looked at: .*\/usr\/lib\/systemd\/system\/qemu-guest-agent\.service/,
        );
        assert.match(ran.stderr, /--hook-dir DIR.*--agent-config FILE/);
        assert.deepEqual(state(root), before, "nothing was changed");
        return;
      }
      assert.equal(dry.code, 0, dry.stderr);
      assert.equal(ran.code, 0, ran.stderr);
      assert.match(ran.stdout, want.said, ran.stdout);
      const hook = readFileSync(join(root, want.hook), "utf8");
      assert.match(
        hook,
        /^exec \S+ hook --for qemu-ga --config \/etc\/vmsnap\/vmsnap\.json -- "\$1"$/m,
      );
      assert.equal(statSync(join(root, want.hook)).mode & 0o7777, 0o700);
      const added = Object.keys(state(root)).filter((p) => !(p in before));
      const enable = want.enable;
      if (enable) assert.match(readFileSync(join(root, enable[0]), "utf8"), enable[1]);
      // Only the hook, what switches it on, the directories they need and the manifest.
      for (const path of added) {
        assert.ok(
          path === want.hook || path === enable?.[0] || path.startsWith("var") ||
            lstatSync(join(root, path)).isDirectory(),
          `${distro}: install also wrote ${path}`,
        );
      }
      assert.equal(statSync(join(root, "var/backups/vmsnap")).mode & 0o7777, 0o700);
      for (const dir of ["var", "var/backups"]) {
        assert.equal(statSync(join(root, dir)).mode & 0o7777, 0o755, `${dir} is created 0755`);
      }
      const selinux = SELINUX[distro];
      if (selinux) {
        assert.match(ran.stdout, /SELinux is on in \S+: on that system, run as root: /);
        assert.match(ran.stdout, selinux);
        assert.match(
          ran.stdout,
          /setsebool -P virt_qemu_ga_run_unconfined on \(or vmsnap install --selinux-boolean\)/,
        );
      } else {
        assert.doesNotMatch(ran.stdout, /SELinux/);
      }
      if (enable) assert.match(ran.stdout, /on that system, restart the agent/);
      if (distro === "alpine") assert.match(ran.stdout, /rc-service qemu-guest-agent restart/);

      const installed = state(root);
      const again = await runBin(["install", ...args]);
      assert.equal(again.code, 0, again.stderr);
      assert.doesNotMatch(again.stdout, /^ +(create|replace|edit|backup|run) /m, again.stdout);
      assert.match(again.stdout, /unchanged/);
      assert.deepEqual(state(root), installed, "a second install changes nothing");

      const removed = await runBin(["uninstall", "--for", "qemu-ga", "--root", root]);
      assert.equal(removed.code, 0, removed.stderr);
      assert.deepEqual(state(root), before, "uninstall gives back exactly what was there");
    } finally {
      cleanup();
    }
  });
}

Deno.test("install --for vmware and gcp on RHEL 9's layout: their fixed paths, the agent's settings kept", async () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    const before = state(root);
    const cfg = join(root, "etc/default/instance_configs.cfg");
    const original = readFileSync(cfg, "utf8");
    for (const agent of ["vmware", "gcp"]) {
      const ran = await runBin(["install", "--for", agent, "--root", root, "--config", CONFIG]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.match(
        ran.stdout,
        /found: systemd \/usr\/lib\/systemd\/system\/(vmtoolsd|google-guest-agent)\.service/,
      );
    }
    assert.match(
      readFileSync(join(root, "etc/vmware-tools/backupScripts.d/vmsnap"), "utf8"),
      /hook --for vmware --config \/etc\/vmsnap\/vmsnap\.json --timeout 60 -- "\$@"/,
    );
    const edited = readFileSync(cfg, "utf8");
    assert.equal(
      edited,
      `${original}${original.endsWith("\n") ? "" : "\n"}\n[Snapshots]\nenabled = true\n`,
    );
    assert.equal(statSync(join(root, "etc/google")).mode & 0o7777, 0o755, "etc/google is 0755");
    assert.equal(statSync(join(root, "etc/google/snapshots")).mode & 0o7777, 0o700);
    for (const agent of ["gcp", "vmware"]) {
      const removed = await runBin(["uninstall", "--for", agent, "--root", root]);
      assert.equal(removed.code, 0, removed.stderr);
    }
    assert.deepEqual(state(root), before, "both uninstalled: the tree as it was");
  } finally {
    cleanup();
  }
});

Deno.test("qemu-ga as admins change it: switched off, empty variable, their own hook, --hook-dir, --agent-config", async (t) => {
  const install = (root: string, ...more: string[]) =>
    runBin(["install", "--for", "qemu-ga", "--root", root, "--config", CONFIG, ...more]);
  const uninstall = (root: string) => runBin(["uninstall", "--for", "qemu-ga", "--root", root]);

  await t.step(
    "RHEL 9, FSFREEZE_HOOK_PATHNAME=/dev/null: set to the package's script, restored",
    async () => {
      const { root, cleanup } = distroRoot("rhel9");
      try {
        const sysconfig = join(root, "etc/sysconfig/qemu-ga");
        const off = readFileSync(sysconfig, "utf8").replace(
          /^FSFREEZE_HOOK_PATHNAME=.*$/m,
          "FSFREEZE_HOOK_PATHNAME=/dev/null",
        );
        writeFileSync(sysconfig, off);
        chmodSync(sysconfig, 0o640);
        const before = state(root);
        const ran = await install(root);
        assert.equal(ran.code, 0, ran.stderr);
        assert.match(ran.stdout, /switched off/);
        assert.match(ran.stdout, /edit +\S+\/etc\/sysconfig\/qemu-ga \(mode 0640\)/);
        const now = readFileSync(sysconfig, "utf8");
        assert.equal(
          now,
          off.replace(
            /^FSFREEZE_HOOK_PATHNAME=.*$/m,
            "FSFREEZE_HOOK_PATHNAME=/etc/qemu-ga/fsfreeze-hook",
          ),
          "one line changed",
        );
        assert.ok(existsSync(join(root, "etc/qemu-ga/fsfreeze-hook.d/vmsnap")));
        assert.equal((await uninstall(root)).code, 0);
        assert.deepEqual(state(root), before);
      } finally {
        cleanup();
      }
    },
  );

  await t.step(
    "RHEL 8, FSFREEZE_HOOK_PATHNAME empty: qemu-ga's default through /etc/qemu-kvm",
    async () => {
      const { root, cleanup } = distroRoot("rhel8");
      try {
        const sysconfig = join(root, "etc/sysconfig/qemu-ga");
        writeFileSync(
          sysconfig,
          readFileSync(sysconfig, "utf8").replace(
            /^FSFREEZE_HOOK_PATHNAME=.*$/m,
            "FSFREEZE_HOOK_PATHNAME=",
          ),
        );
        const before = state(root);
        const ran = await install(root);
        assert.equal(ran.code, 0, ran.stderr);
        // qemu-ga runs /etc/qemu-kvm/fsfreeze-hook (a link), whose script runs the directory beside $0.
        assert.ok(existsSync(join(root, "etc/qemu-kvm/fsfreeze-hook.d/vmsnap")), ran.stdout);
        assert.match(
          ran.stdout,
          /semanage fcontext -a -t virt_qemu_ga_unconfined_exec_t '\/etc\/qemu-kvm\/fsfreeze-hook\\\.d\/vmsnap'/,
        );
        assert.equal((await uninstall(root)).code, 0);
        assert.deepEqual(state(root), before, "the directory install made is gone too");
      } finally {
        cleanup();
      }
    },
  );

  await t.step(
    "the admin's own hook script, which runs no directory: refused; --hook-dir names one",
    async () => {
      const { root, cleanup } = distroRoot("rhel9");
      try {
        put(join(root, "usr/local/sbin/site-freeze"), '#!/bin/sh\nlogger "freeze $1"\n', 0o755);
        const sysconfig = join(root, "etc/sysconfig/qemu-ga");
        writeFileSync(
          sysconfig,
          readFileSync(sysconfig, "utf8").replace(
            /^FSFREEZE_HOOK_PATHNAME=.*$/m,
            "FSFREEZE_HOOK_PATHNAME=/usr/local/sbin/site-freeze",
          ),
        );
        const before = state(root);
        const refused = await install(root);
        assert.equal(refused.code, 2, refused.stdout);
        assert.match(
          refused.stderr,
          /\[AgentSetupUnknown\] qemu-ga runs \/usr\/local\/sbin\/site-freeze/,
        );
        assert.match(refused.stderr, /does not replace a hook that works/);
        assert.match(
          refused.stderr,
          /hook --for qemu-ga --config \/etc\/vmsnap\/vmsnap\.json -- "\$1"/,
        );
        assert.match(refused.stderr, /--hook-dir DIR/);
        assert.deepEqual(state(root), before, "nothing changed");
        // The admin's script runs /etc/site-hooks.d: named, the hook goes there, nothing else changes.
        const named = await install(root, "--hook-dir", "/etc/site-hooks.d");
        assert.equal(named.code, 0, named.stderr);
        assert.ok(existsSync(join(root, "etc/site-hooks.d/vmsnap")));
        assert.equal(readFileSync(sysconfig, "utf8"), readFileSync(sysconfig, "utf8"));
        assert.match(named.stdout, /which runs every file of \/etc\/site-hooks\.d \(--hook-dir\)/);
        assert.equal((await uninstall(root)).code, 0);
        assert.deepEqual(state(root), before);
      } finally {
        cleanup();
      }
    },
  );

  await t.step(
    "Debian: the admin's hooks in fsfreeze-hook.d keep running beside vmsnap's",
    async () => {
      const { root, cleanup } = distroRoot("debian12");
      try {
        put(join(root, "etc/qemu/fsfreeze-hook.d/10-flush-app"), "#!/bin/sh\nsync\n", 0o755);
        const before = state(root);
        const ran = await install(root);
        assert.equal(ran.code, 0, ran.stderr);
        assert.deepEqual(readdirSync(join(root, "etc/qemu/fsfreeze-hook.d")).sort(), [
          "10-flush-app",
          "vmsnap",
        ]);
        assert.equal((await uninstall(root)).code, 0);
        assert.deepEqual(state(root), before);
      } finally {
        cleanup();
      }
    },
  );

  await t.step(
    "no qemu-ga service, --agent-config names its config file: set there, said",
    async () => {
      const { root, cleanup } = distroRoot("al2023");
      try {
        const before = state(root);
        const ran = await install(root, "--agent-config", "/etc/qemu/qemu-ga.conf");
        assert.equal(ran.code, 0, ran.stderr);
        assert.equal(
          readFileSync(join(root, "etc/qemu/qemu-ga.conf"), "utf8"),
          "[general]\nfsfreeze-hook=/etc/qemu/fsfreeze-hook.d/vmsnap\n",
        );
        assert.match(
          ran.stdout,
          /no qemu-guest-agent service was found: make sure qemu-ga reads \/etc\/qemu\/qemu-ga\.conf/,
        );
        assert.equal((await uninstall(root)).code, 0);
        assert.deepEqual(state(root), before);
      } finally {
        cleanup();
      }
    },
  );

  await t.step(
    "OpenRC passing a conf.d variable through: set there, a stale -F replaced",
    async () => {
      const { root, cleanup } = distroRoot("alpine");
      try {
        put(
          join(root, "etc/init.d/qemu-guest-agent"),
          '#!/sbin/openrc-run\ncommand=/usr/bin/qemu-ga\ncommand_args="-m ${GA_METHOD:-virtio-serial} -d ${GA_EXTRA}"\n',
          0o755,
        );
        const confd = join(root, "etc/conf.d/qemu-guest-agent");
        put(confd, '# extra options\nGA_EXTRA="-v -F/etc/qemu/missing-hook"\n', 0o644);
        const before = state(root);
        const ran = await install(root);
        assert.equal(ran.code, 0, ran.stderr);
        assert.equal(
          readFileSync(confd, "utf8"),
          '# extra options\nGA_EXTRA="-v --fsfreeze-hook=/etc/qemu/fsfreeze-hook.d/vmsnap"\n',
        );
        assert.match(ran.stdout, /rc-service qemu-guest-agent restart/);
        assert.equal((await uninstall(root)).code, 0);
        assert.deepEqual(state(root), before);
      } finally {
        cleanup();
      }
    },
  );

  await t.step("a relative --hook-dir is a usage error", async () => {
    const ran = await runBin(["install", "--for", "qemu-ga", "--hook-dir", "etc/x", "--dry-run"]);
    assert.equal(ran.code, 64, ran.stderr);
    assert.match(ran.stderr, /--hook-dir must be an absolute path/);
  });
});

Deno.test("install --root stays in its prefix: links inside it resolved there (issue 21 item 13)", async (t) => {
  const { dir, cleanup } = secureDir("root-links-");
  try {
    await t.step(
      "an absolute link to a directory of the image leads inside the image",
      async () => {
        const { root, cleanup: done } = distroRoot("debian12");
        try {
          // The image keeps /etc/qemu elsewhere and links it absolutely, as images do.
          renameSync(join(root, "etc/qemu"), join(root, "etc/qemu-real"));
          symlinkSync("/etc/qemu-real", join(root, "etc/qemu"));
          const ran = await runBin([
            "install",
            "--for",
            "qemu-ga",
            "--root",
            root,
            "--config",
            CONFIG,
          ]);
          assert.equal(ran.code, 0, ran.stderr);
          assert.ok(existsSync(join(root, "etc/qemu-real/fsfreeze-hook.d/vmsnap")));
          assert.equal(readlinkSync(join(root, "etc/qemu")), "/etc/qemu-real", "the link is kept");
        } finally {
          done();
        }
      },
    );
    await t.step(
      "an absolute link that would lead out of the prefix is never followed",
      async () => {
        const root = join(dir, "image");
        // Stands for the host's /etc/qemu (never a real system directory in a test).
        const decoy = join(dir, "host-etc-qemu");
        mkdirSync(decoy, { mode: 0o755 });
        mkdirSync(join(root, "etc/vmware-tools"), { recursive: true, mode: 0o755 });
        symlinkSync(decoy, join(root, "etc/vmware-tools/backupScripts.d"));
        const ran = await runBin([
          "install",
          "--for",
          "vmware",
          "--root",
          root,
          "--config",
          CONFIG,
        ]);
        assert.equal(ran.code, 2, ran.stdout);
        assert.match(
          ran.stderr,
          /\[InstallFailed\] .*backupScripts\.d is a symbolic link to something that does not exist/,
        );
        assert.deepEqual(readdirSync(decoy), [], "nothing written outside the prefix");
      },
    );
    await t.step("uninstall removes what install created, and creates nothing", async () => {
      const root = join(dir, "empty");
      mkdirSync(root, { mode: 0o755 });
      for (const agent of ["vmware", "gcp"]) {
        const installed = await runBin([
          "install",
          "--for",
          agent,
          "--root",
          root,
          "--config",
          CONFIG,
        ]);
        assert.equal(installed.code, 0, installed.stderr);
        assert.equal(statSync(join(root, "var")).mode & 0o7777, 0o755);
        const removed = await runBin(["uninstall", "--for", agent, "--root", root]);
        assert.equal(removed.code, 0, removed.stderr);
        assert.deepEqual(readdirSync(root), [], `${agent}: uninstall left what install created`);
      }
      const nothing = await runBin(["uninstall", "--for", "gcp", "--root", root]);
      assert.match(nothing.stdout, /nothing to uninstall/);
      assert.deepEqual(readdirSync(root), [], "uninstall with nothing to undo creates nothing");
    });
  } finally {
    cleanup();
  }
});
