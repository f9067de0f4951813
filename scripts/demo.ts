/**
 * The self-contained demo (the README's first command): a loop-mounted ext4
 * filesystem in a private directory, an "application" that writes to it, a
 * pre-script that quiesces it and a post-script that resumes it, a config
 * that freezes only that filesystem and snapshots it by copying the image.
 * It runs the compiled `vmsnap check` and `vmsnap run`, then mounts the copy
 * read-only to show the data is there. Then hook mode: `vmsnap install --for
 * qemu-ga` into a prefix with Debian's fsfreeze-hook, a real qemu-ga on a
 * private socket, and the host's side played over QMP (freeze-list of the
 * demo filesystem, a copy of the image, thaw), then `vmsnap status`. It
 * cleans up.
 *
 * Usage (root): deno task demo
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { startQemuGa } from "../tests/qemu_ga.ts";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
/** Debian's fsfreeze hook, shipped by the qemu-guest-agent package. */
const QGA_HOOK = "/etc/qemu/fsfreeze-hook";
const bin = join(root, "dist", "vmsnap");

if (process.getuid?.() !== 0) {
  console.error("The demo mounts and freezes a loop filesystem: run it as root (sudo).");
  process.exit(2);
}
if (!existsSync(bin)) {
  console.log("== building dist/vmsnap");
  execFileSync(join(root, "node_modules", "deno", "deno"), ["run", "-A", "scripts/build.ts"], {
    cwd: root,
    stdio: "inherit",
  });
}

const say = (text: string) => console.log(`\n== ${text}`);
// Not under /tmp: the permission rules refuse scripts in world-writable directories.
mkdirSync("/var/lib/vmsnap-demo", { recursive: true, mode: 0o700 });
chmodSync("/var/lib/vmsnap-demo", 0o700);
const dir = mkdtempSync("/var/lib/vmsnap-demo/run-");
chmodSync(dir, 0o700);
const image = join(dir, "app-disk.img");
const mountPoint = join(dir, "app");
const copy = join(dir, "snapshot.img");
const restored = join(dir, "restored");
let device = "";
const mounted: string[] = [];

function file(name: string, text: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

try {
  say(`a 64 MiB ext4 filesystem for the "application", mounted at ${mountPoint}`);
  execFileSync("truncate", ["-s", "64M", image]);
  execFileSync("mkfs.ext4", ["-q", "-F", image]);
  device = execFileSync("losetup", ["--find", "--show", image], { encoding: "utf8" }).trim();
  mkdirSync(mountPoint, { mode: 0o700 });
  execFileSync("mount", [device, mountPoint]);
  mounted.push(mountPoint);
  writeFileSync(join(mountPoint, "orders.txt"), "order 1\norder 2\n");

  const pre = file(
    "pre-script.sh",
    `#!/bin/sh\n# Quiesce: finish the last write and flush it, as a database's pre-script would.\necho "order 3 (written by the pre-script, run $VMSNAP_RUN_ID)" >> "${mountPoint}/orders.txt"\nsync\necho "application quiesced"\n`,
    0o700,
  );
  const post = file("post-script.sh", `#!/bin/sh\necho "application resumed"\n`, 0o700);
  const snap = file(
    "take-snapshot.sh",
    `#!/bin/sh\n# The snapshot: a copy of the disk image, taken while the filesystem is frozen.\ncp --sparse=always "${image}" "${copy}"\n`,
    0o700,
  );
  const config = file(
    "VMSnapshotScriptPluginConfig.json",
    JSON.stringify(
      {
        pluginName: "ScriptRunner",
        preScriptLocation: pre,
        postScriptLocation: post,
        preScriptParams: [],
        postScriptParams: [],
        preScriptNoOfRetries: 0,
        postScriptNoOfRetries: 0,
        timeoutInSeconds: 30,
        continueBackupOnFailure: true,
        fsFreezeEnabled: true,
        freeze: { mounts: [mountPoint], maxFrozenSeconds: 30 },
        snapshot: { command: [snap], timeoutInSeconds: 30 },
        log: { file: join(dir, "log", "vmsnap.jsonl") },
        stateDir: join(dir, "state"),
      },
      null,
      2,
    ),
    0o600,
  );

  say(`vmsnap check --config ${config}`);
  spawnSync(bin, ["check", "--config", config], { stdio: "inherit" });

  say(`vmsnap run --config ${config}`);
  const run = spawnSync(bin, ["run", "--config", config], { stdio: "inherit" });
  console.log(`(exit code ${run.status})`);

  say("the snapshot, mounted read-only: what the application had written before the freeze");
  mkdirSync(restored);
  execFileSync("mount", ["-o", "loop,ro", copy, restored]);
  mounted.push(restored);
  process.stdout.write(readFileSync(join(restored, "orders.txt"), "utf8"));

  say(`the log (${join(dir, "log", "vmsnap.jsonl")}): one JSON record per line`);
  const log = readFileSync(join(dir, "log", "vmsnap.jsonl"), "utf8").trim().split("\n");
  for (const line of log) {
    const record = JSON.parse(line);
    const detail = record.mount ?? record.line ?? record.plugin ?? record.status ?? "";
    console.log(
      `  ${record["@timestamp"]}  ${record.level.padEnd(7)} ${record.event.padEnd(16)} ${detail}`,
    );
  }
  process.exitCode = run.status === 0 ? 0 : 1;
  if (existsSync(QGA_HOOK)) await hookDemo(config, mountPoint);
  else say(`hook mode: skipped (${QGA_HOOK} is missing: apt-get install qemu-guest-agent)`);
} finally {
  say("cleaning up");
  for (const m of mounted.reverse()) {
    spawnSync("fsfreeze", ["--unfreeze", m], { stdio: "ignore" });
    spawnSync("umount", [m], { stdio: "inherit" });
  }
  if (device) spawnSync("losetup", ["-d", device], { stdio: "ignore" });
  rmSync(dir, { recursive: true, force: true });
  console.log("done");
}

/** Hook mode: what Proxmox or libvirt does through qemu-guest-agent, played over QMP. */
async function hookDemo(config: string, mountPoint: string): Promise<void> {
  const prefix = join(dir, "root");
  mkdirSync(join(prefix, "etc", "qemu"), { recursive: true, mode: 0o755 });
  writeFileSync(join(prefix, "etc", "qemu", "fsfreeze-hook"), readFileSync(QGA_HOOK));
  chmodSync(join(prefix, "etc", "qemu", "fsfreeze-hook"), 0o755);
  say(`hook mode: vmsnap install --for qemu-ga --root ${prefix} --config ${config}`);
  spawnSync(bin, ["install", "--for", "qemu-ga", "--root", prefix, "--config", config], {
    stdio: "inherit",
  });
  say("qemu-ga with its fsfreeze hook, on a private socket (as systemd would start it)");
  const ga = await startQemuGa({
    dir,
    hook: join(prefix, "etc", "qemu", "fsfreeze-hook"),
    keep: [dir],
  });
  try {
    const qmp = async (execute: string, args?: Record<string, unknown>) => {
      const answer = await ga.qmp(execute, args);
      console.log(
        `  host -> ${execute}${args ? ` ${JSON.stringify(args)}` : ""}: ${JSON.stringify(answer)}`,
      );
    };
    say("the host's side, over QMP: freeze (vmsnap's hook quiesces first), snapshot, thaw");
    await qmp("guest-fsfreeze-freeze-list", { mountpoints: [mountPoint] });
    await qmp("guest-fsfreeze-status");
    execFileSync("cp", ["--sparse=always", image, join(dir, "hook-snapshot.img")]);
    console.log("  host: the disk image copied while frozen (the snapshot)");
    await qmp("guest-fsfreeze-thaw");
  } finally {
    await ga.stop();
  }
  say(`vmsnap status --config ${config}: the hold's result, one run id for freeze and thaw`);
  spawnSync(bin, ["status", "--config", config], { stdio: "inherit" });
}
