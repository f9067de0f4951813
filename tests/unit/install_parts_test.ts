/**
 * The parts of `vmsnap install` that decide without running anything: how
 * an agent is restarted for each init system (at once, or queued when
 * install runs inside the agent), one setting changed in an agent's file
 * with everything else kept, and paths of a `--root` resolved inside it.
 */
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { planRestart } from "../../src/hook/agent_restart.ts";
import { setEnvVar, setIniKey } from "../../src/hook/agents/config_edit.ts";
import {
  hostPathUnder,
  makeDirUnder,
  removeDirsUnder,
  resolveDirUnder,
} from "../../src/hook/root_paths.ts";
import { distroRoot } from "../distro_roots.ts";
import { secureDir } from "../helpers.ts";

const QGA = {
  units: ["qemu-guest-agent.service"],
  openrc: ["qemu-guest-agent"],
  executables: ["qemu-ga"],
};

Deno.test("planRestart: systemd and OpenRC, from a shell at once, from inside the agent queued outside it", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    const shell = planRestart({ root, service: QGA, init: "systemd", inside: false });
    assert.deepEqual(shell.now, [
      ["systemctl", "daemon-reload"],
      ["systemctl", "try-restart", "qemu-guest-agent.service"],
    ]);
    assert.equal(shell.detached, undefined);
    const inside = planRestart({
      root,
      service: QGA,
      init: "systemd",
      inside: true,
      delaySeconds: 7,
    });
    assert.deepEqual(inside.now[0], ["systemctl", "daemon-reload"]);
    assert.deepEqual(inside.now[1].slice(0, 1), ["systemd-run"]);
    assert.deepEqual(inside.now[1].slice(-3), [
      "/bin/sh",
      "-c",
      "sleep 7; exec systemctl try-restart qemu-guest-agent.service",
    ]);
    assert.match(
      inside.say,
      /restarts in 7 s, from a transient systemd service outside its cgroup/,
    );
    const rc = planRestart({ root, service: QGA, init: "openrc", inside: false });
    assert.deepEqual(rc.now, [["rc-service", "--ifstarted", "qemu-guest-agent", "restart"]]);
    const rcInside = planRestart({
      root,
      service: QGA,
      init: "openrc",
      inside: true,
      delaySeconds: 3,
    });
    assert.deepEqual(rcInside.now, []);
    assert.deepEqual(rcInside.detached, {
      argv: ["rc-service", "--ifstarted", "qemu-guest-agent", "restart"],
      delaySeconds: 3,
    });
    const none = planRestart({ root, service: QGA, init: "none", inside: false });
    assert.deepEqual(none.now, []);
    assert.match(
      none.say,
      /restart the agent yourself \(systemctl restart qemu-guest-agent\.service, or rc-service qemu-guest-agent restart\)/,
    );
  } finally {
    cleanup();
  }
});

Deno.test("planRestart restarts the unit the root has: Google's agent or its manager", () => {
  const { root, cleanup } = distroRoot("rhel9");
  try {
    const service = {
      units: ["google-guest-agent-manager.service", "google-guest-agent.service"],
      openrc: [],
      executables: ["google_guest_agent"],
    };
    const plan = planRestart({ root, service, init: "systemd", inside: false });
    assert.deepEqual(plan.now[1], ["systemctl", "try-restart", "google-guest-agent.service"]);
  } finally {
    cleanup();
  }
});

Deno.test("setEnvVar: the last assignment replaced, comments and other lines kept, values quoted for sh", () => {
  const text =
    "# FSFREEZE_HOOK_PATHNAME=/dev/null : disables\nA=1\nFSFREEZE_HOOK_PATHNAME=/dev/null\nB=2\n";
  assert.equal(
    setEnvVar(text, "FSFREEZE_HOOK_PATHNAME", "/etc/qemu-ga/fsfreeze-hook"),
    "# FSFREEZE_HOOK_PATHNAME=/dev/null : disables\nA=1\nFSFREEZE_HOOK_PATHNAME=/etc/qemu-ga/fsfreeze-hook\nB=2\n",
  );
  assert.equal(
    setEnvVar("A=1", "GA_OPTS", "-v --fsfreeze-hook=/x"),
    'A=1\nGA_OPTS="-v --fsfreeze-hook=/x"\n',
  );
  assert.equal(setEnvVar("", "X", "a$b"), 'X="a\\$b"\n');
  assert.equal(setEnvVar("export X=1\n", "X", "2"), "export X=2\n");
});

Deno.test("setIniKey: the key replaced in its section only, added first in it, or the section added", () => {
  const text = "[general]\n# a comment\nverbose=true\n[other]\nfsfreeze-hook=/no\n";
  assert.equal(
    setIniKey(text, { section: "general", key: "fsfreeze-hook", value: "/h", separator: "=" }),
    "[general]\nfsfreeze-hook=/h\n# a comment\nverbose=true\n[other]\nfsfreeze-hook=/no\n",
  );
  assert.equal(
    setIniKey("[vmbackup]\nExecScripts = false\n", {
      section: "vmbackup",
      key: "execScripts",
      value: "true",
      ignoreCase: true,
    }),
    "[vmbackup]\nexecScripts = true\n",
  );
  assert.equal(
    setIniKey("[a]\nx = 1", { section: "Snapshots", key: "enabled", value: "true" }),
    "[a]\nx = 1\n\n[Snapshots]\nenabled = true\n",
  );
  assert.equal(
    setIniKey("", { section: "general", key: "k", value: "v", separator: "=" }),
    "[general]\nk=v\n",
  );
});

Deno.test("paths under a root: links resolved inside it, directories made 0755 but the last, removed only when empty", () => {
  const { dir: root, cleanup } = secureDir("root-paths-");
  try {
    mkdirSync(join(root, "etc/qemu-real"), { recursive: true });
    symlinkSync("/etc/qemu-real", join(root, "etc/qemu"));
    assert.equal(
      resolveDirUnder(root, "/etc/qemu/fsfreeze-hook.d"),
      "/etc/qemu-real/fsfreeze-hook.d",
    );
    assert.equal(
      hostPathUnder(root, "/etc/qemu/fsfreeze-hook.d/vmsnap"),
      join(root, "etc/qemu-real/fsfreeze-hook.d/vmsnap"),
    );
    assert.deepEqual(
      makeDirUnder({ root, dir: "/var/backups/vmsnap", mode: 0o700, dryRun: true }),
      [
        "/var",
        "/var/backups",
        "/var/backups/vmsnap",
      ],
    );
    assert.deepEqual(readdirSync(root), ["etc"], "a dry run makes nothing");
    const made = makeDirUnder({ root, dir: "/var/backups/vmsnap", mode: 0o700, dryRun: false });
    assert.equal(statSync(join(root, "var")).mode & 0o7777, 0o755);
    assert.equal(statSync(join(root, "var/backups")).mode & 0o7777, 0o755);
    assert.equal(statSync(join(root, "var/backups/vmsnap")).mode & 0o7777, 0o700);
    writeFileSync(join(root, "var/backups/vmsnap/qemu-ga.json"), "{}");
    // A dry run counts what the same uninstall removes.
    assert.deepEqual(
      removeDirsUnder({
        root,
        dirs: made,
        dryRun: true,
        gone: ["/var/backups/vmsnap/qemu-ga.json"],
      }),
      ["/var/backups/vmsnap", "/var/backups", "/var"],
    );
    // Someone's file in /var/backups: that directory (and /var) stay.
    writeFileSync(join(root, "var/backups/dpkg.status.0"), "");
    assert.deepEqual(
      removeDirsUnder({
        root,
        dirs: made,
        dryRun: false,
        gone: ["/var/backups/vmsnap/qemu-ga.json"],
      }),
      [],
      "vmsnap's directory still holds its record: nothing removed",
    );
  } finally {
    cleanup();
  }
});
