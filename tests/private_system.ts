/**
 * A private view of the system's own paths, for tests that must run vmsnap
 * where it really looks (`/etc/azure`, `/etc/vmsnap`, `/etc/qemu`,
 * `/etc/systemd/system`, `/etc/default/instance_configs.cfg`,
 * `/etc/vmware-tools`, `/var/backups`, `/var/lib/vmsnap`, `/var/log`) without
 * touching the machine: a mount namespace in which `/etc`, `/var/backups` and
 * `/var/log` are copy-on-write overlays (writes land on a tmpfs that
 * disappears with the namespace) and `/var/lib/vmsnap` is an empty tmpfs.
 * Optionally `/run/systemd` is a tmpfs holding `system/` (as on a machine
 * booted with systemd), for code that asks whether systemd runs.
 *
 * The namespace lives as long as its anchor process (`sleep`); commands run
 * in it through `nsenter --mount`, and the test reads and writes its files
 * through `/proc/<anchor>/root`, which resolves paths in the anchor's mounts.
 *
 * Safety: nothing is frozen here; the test directories under
 * /var/lib/vmsnap-test are the real ones (not overlaid), so what vmsnap
 * writes there is visible outside.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { alive, BIN, type Ran, waitFor } from "./helpers.ts";

/** A running private view. */
export interface PrivateSystem {
  /** The anchor's pid (the namespace is `/proc/<pid>/ns/mnt`). */
  pid: number;
  /** Where a path of the private view is, seen from outside. */
  path(path: string): string;
  /** Writes a file in the private view, root-owned with this mode (directories 0755). */
  put(path: string, content: string, mode: number): string;
  /** Runs argv in the private view; resolves when it exits. */
  run(argv: string[], options?: { env?: Record<string, string>; timeoutMs?: number }): Promise<Ran>;
  /** Runs the binary under test in the private view. */
  vmsnap(args: string[], options?: { timeoutMs?: number }): Promise<Ran>;
  /** Ends the namespace (its overlays and tmpfs go with it). */
  stop(): Promise<void>;
}

/** The mounts that make the private view (run by the anchor before it sleeps). */
function mountScript(scratch: string, fakeSystemd: boolean): string {
  const overlays = ["/etc", "/var/backups", "/var/log"];
  return [
    "set -e",
    `mount -t tmpfs -o mode=0700 vmsnap-private "${scratch}"`,
    ...overlays.flatMap((dir) => [
      `mkdir -p "${scratch}/upper${dir}" "${scratch}/work${dir}" "${dir}"`,
      `mount -t overlay vmsnap-private -o lowerdir=${dir},upperdir=${scratch}/upper${dir},workdir=${scratch}/work${dir} ${dir}`,
    ]),
    "mkdir -p /var/lib/vmsnap",
    "mount -t tmpfs -o mode=0700 vmsnap-private /var/lib/vmsnap",
    ...(fakeSystemd
      ? ["mount -t tmpfs -o mode=0755 vmsnap-private /run/systemd", "mkdir -p /run/systemd/system"]
      : []),
    "echo ready",
    "exec sleep 100000",
  ].join("\n");
}

/**
 * Starts a private view; `scratch` is an empty directory of the test (the
 * overlays' upper layers are mounted there, inside the namespace only).
 *
 * @example
 * ```ts
 * const system = await privateSystem({ scratch: "/var/lib/vmsnap-test/t-1/scratch" });
 * try {
 *   system.put("/etc/azure/VMSnapshotScriptPluginConfig.json", "{}", 0o600);
 *   await system.vmsnap(["check", "--config", "/etc/azure/VMSnapshotScriptPluginConfig.json"]);
 * } finally {
 *   await system.stop();
 * }
 * ```
 */
export async function privateSystem(
  options: { scratch: string; fakeSystemd?: boolean },
): Promise<PrivateSystem> {
  mkdirSync(options.scratch, { recursive: true, mode: 0o700 });
  const anchor = spawn(
    "unshare",
    [
      "--mount",
      "--propagation",
      "private",
      "/bin/sh",
      "-c",
      mountScript(options.scratch, !!options.fakeSystemd),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  anchor.stdout.on("data", (d) => (output += d));
  anchor.stderr.on("data", (d) => (output += d));
  let exited = false;
  anchor.on("exit", () => (exited = true));
  await waitFor("the private view", () => {
    if (exited) throw new Error(`the private view could not be made: ${output}`);
    return output.includes("ready");
  });
  const pid = anchor.pid!;
  const path = (p: string) => join(`/proc/${pid}/root`, p);
  const run = (
    argv: string[],
    runOptions: { env?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<Ran> =>
    new Promise((resolve, reject) => {
      const child = spawn("nsenter", [`--mount=/proc/${pid}/ns/mnt`, "--", ...argv], {
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C", ...runOptions.env },
        stdio: ["ignore", "pipe", "pipe"],
        cwd: "/",
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      const timer = setTimeout(() => child.kill("SIGKILL"), runOptions.timeoutMs ?? 60_000);
      child.on("error", reject);
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
    });
  return {
    pid,
    path,
    put(p, content, mode) {
      mkdirSync(path(dirname(p)), { recursive: true, mode: 0o755 });
      writeFileSync(path(p), content);
      chownSync(path(p), 0, 0);
      chmodSync(path(p), mode);
      return p;
    },
    run,
    vmsnap: (args, runOptions) => run([BIN, ...args], runOptions),
    async stop() {
      if (alive(pid)) process.kill(pid, "SIGTERM");
      await waitFor("the private view to end", () => exited, 10_000).catch(() => {});
    },
  };
}
