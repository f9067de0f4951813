/**
 * Shared set-up for the hook tests that reproduce issues 20 and 21
 * (tests/pending/): a MariaDB with a table, qemu-ga started with the hook
 * `vmsnap install --for qemu-ga` put under a prefix, the hold's holder, what a
 * failing test must end (a hold still held, a filesystem still frozen), and
 * `vmsnap status` read both ways.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { alive, put, type Ran, runBin, waitFor } from "./helpers.ts";
import { agentCall } from "./hook_agent.ts";
import { dbDir, mariadbWrite, startMariaDb } from "./db_servers.ts";
import { type RunFixture, runFixture } from "./run_fixture.ts";
import { DEBIAN_FSFREEZE_HOOK, type QemuGa, startQemuGa } from "./qemu_ga.ts";
import { type LoopFs, makeLoopFs } from "./loop.ts";

/** Waits `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What `holder.json` says, whether or not that process still runs. */
export function holderInfo(
  stateDir: string,
): { pid: number; runId: string; agent: string } | undefined {
  try {
    return JSON.parse(readFileSync(join(stateDir, "hook", "holder.json"), "utf8"));
  } catch {
    return undefined;
  }
}

/** The pid of the holder running now (asserted). */
export function holderPid(stateDir: string): number {
  const info = holderInfo(stateDir);
  assert.ok(info && alive(info.pid), `a holder runs for ${stateDir}`);
  return info.pid;
}

/**
 * Ends whatever hold a failing test left: SIGCONT (it may be stopped), then
 * SIGTERM (the holder thaws, resumes and records), SIGKILL after 15 s.
 */
export async function endHolds(stateDir: string): Promise<void> {
  const info = holderInfo(stateDir);
  if (!info || !alive(info.pid)) return;
  for (const signal of ["SIGCONT", "SIGTERM"] as const) {
    try {
      process.kill(info.pid, signal);
    } catch {
      return;
    }
  }
  await waitFor("the holder to end", () => !alive(info.pid), 15_000).catch(() => {
    try {
      process.kill(info.pid, "SIGKILL");
    } catch {
      // gone
    }
  });
}

/** `vmsnap status` as text and as JSON. */
export async function statusOf(
  config: string,
  // deno-lint-ignore no-explicit-any
): Promise<{ text: Ran; json: Ran; shown: any }> {
  const text = await runBin(["status", "--config", config]);
  const json = await runBin(["status", "--json", "--config", config]);
  let shown: unknown;
  try {
    shown = JSON.parse(json.stdout);
  } catch {
    shown = undefined;
  }
  return { text, json, shown };
}

/** `vmsnap hook <event> --for <agent> --config <config> [...]`. */
export function hook(event: string, agent: string, config: string, extra: string[] = []) {
  return runBin(["hook", event, "--for", agent, "--config", config, ...extra]);
}

/**
 * A write to MariaDB started now, asserted to wait `waitMs` (held by the
 * hold); `write` resolves with its duration (Infinity past `limitMs`). Wrapped
 * in an object: an async function returning the promise itself would make its
 * caller wait for the write.
 */
export async function heldWrite(
  socket: string,
  id: number,
  options: { waitMs?: number; limitMs?: number } = {},
): Promise<{ write: Promise<number> }> {
  const write = mariadbWrite(socket, `INSERT INTO app.t VALUES (${id})`, options.limitMs ?? 20_000);
  const first = await Promise.race([
    write.then(() => "finished"),
    sleep(options.waitMs ?? 800).then(() => "waiting"),
  ]);
  assert.equal(first, "waiting", "the write waits while the hold lasts");
  return { write };
}

/** A test world: the run fixture (its loop mount), and MariaDB with `app.t`. */
export interface DbWorld {
  f: RunFixture;
  server: Awaited<ReturnType<typeof startMariaDb>>;
  /** The fixture's stateDir. */
  state: string;
  /** The MariaDB plugin entry. */
  mysql: { type: string; name: string; socket: string };
  /** What a private mount namespace (qemu-ga's) must keep to reach the fixture and the server. */
  keep: string[];
  cleanup(): Promise<void>;
}

/** Makes the fixture and MariaDB; `cleanup` ends any hold, stops the server, removes all. */
export async function dbWorld(): Promise<DbWorld> {
  const f = runFixture();
  const db = dbDir();
  const server = await startMariaDb(db.dir);
  server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB");
  const state = f.path("state");
  return {
    f,
    server,
    state,
    mysql: { type: "mysql", name: "shop", socket: server.socket },
    keep: [f.dir, db.dir],
    async cleanup() {
      await endHolds(state);
      await server.stop();
      db.cleanup();
      f.cleanup();
    },
  };
}

/**
 * Installs vmsnap's qemu-ga hook under a prefix holding Debian's own
 * fsfreeze-hook, and starts qemu-ga with it (in its private mount namespace,
 * where only `keep` is visible of the test filesystems).
 */
export async function qemuGaWithHook(
  f: RunFixture,
  config: string,
  keep: string[],
): Promise<QemuGa> {
  const prefix = join(f.dir, "root-qga");
  mkdirSync(join(prefix, "etc", "qemu"), { recursive: true, mode: 0o755 });
  copyFileSync(DEBIAN_FSFREEZE_HOOK, join(prefix, "etc", "qemu", "fsfreeze-hook"));
  const installed = await runBin([
    "install",
    "--for",
    "qemu-ga",
    "--root",
    prefix,
    "--config",
    config,
  ]);
  assert.equal(installed.code, 0, installed.stdout + installed.stderr);
  return await startQemuGa({
    dir: f.dir,
    hook: join(prefix, "etc", "qemu", "fsfreeze-hook"),
    keep,
  });
}

/** A number the text says after `pattern`'s first group, or undefined. */
export function numberIn(text: string, pattern: RegExp): number | undefined {
  const match = text.match(pattern);
  return match ? Number(match[1]) : undefined;
}

/**
 * Two test filesystems where one's image lives on the other: `inner` is a loop
 * filesystem whose image file is on `base`. Freezing must go inner, base;
 * thawing base, inner (thawing inner while base is frozen sleeps in state D).
 * `cleanup` thaws base first, then inner, then unmounts both.
 */
export function nestedLoops(dir: string, names = ["inner"]): {
  base: LoopFs;
  inners: LoopFs[];
  cleanup(): void;
} {
  const base = makeLoopFs({ dir, name: "base", sizeMiB: 48 + 24 * names.length });
  const inners: LoopFs[] = [];
  try {
    for (const name of names) {
      inners.push(makeLoopFs({ dir, name, sizeMiB: 16, imageDir: base.mountPoint }));
    }
  } catch (error) {
    for (const inner of inners) inner.cleanup();
    base.cleanup();
    throw error;
  }
  return {
    base,
    inners,
    cleanup() {
      // base first: a thaw of an inner while base is frozen would hang this process.
      spawnSync("fsfreeze", ["--unfreeze", base.mountPoint], { stdio: "ignore" });
      for (const inner of inners) inner.cleanup();
      base.cleanup();
    },
  };
}

/** The children of a process whose command line contains `text` (`__guard`, `__holder`). */
export function childrenMatching(pid: number, text: string): number[] {
  let children: string[];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ");
  } catch {
    return [];
  }
  return children.filter(Boolean).map(Number).filter((child) => {
    try {
      return readFileSync(`/proc/${child}/cmdline`, "utf8").includes(text);
    } catch {
      return false;
    }
  });
}

/** An agent's own calls of the hook files `vmsnap install --for <agent>` put under a prefix. */
export interface AgentHooks {
  pre(): Promise<Ran>;
  post(): Promise<Ran>;
}

/**
 * Installs the hook for `agent` under `<f.dir>/root-<agent>` and returns the
 * calls the agent itself makes (research/agents.md): VMware Tools runs
 * `"<backupScripts.d/vmsnap>" freeze|thaw` through `bash -c`; Azure's
 * ScriptRunner `sh <location>`; Google's guest agent execs `pre.sh DISKS`
 * with `[Snapshots] timeout_in_seconds`; AWS's SSM agent runs the document's
 * script with `{{ command }}` set. All with no stdin and output read to EOF.
 */
export async function agentHooks(
  f: RunFixture,
  config: string,
  agent: "vmware" | "azure" | "gcp" | "aws",
): Promise<AgentHooks> {
  const prefix = join(f.dir, `root-${agent}`);
  mkdirSync(prefix, { recursive: true, mode: 0o755 });
  if (agent === "azure") {
    put(
      join(prefix, "etc/azure/VMSnapshotScriptPluginConfig.json"),
      JSON.stringify({ pluginName: "ScriptRunner", timeoutInSeconds: 30, fsFreezeEnabled: true }),
      0o600,
    );
  }
  if (agent === "gcp") {
    put(
      join(prefix, "etc/default/instance_configs.cfg"),
      "[Snapshots]\nenabled = true\ntimeout_in_seconds = 60\n",
      0o644,
    );
  }
  const root = agent === "aws" ? [] : ["--root", prefix];
  const installed = await runBin(["install", "--for", agent, ...root, "--config", config]);
  assert.equal(installed.code, 0, installed.stdout + installed.stderr);
  const call = (argv: string[]) => () => agentCall(argv);
  switch (agent) {
    case "vmware": {
      const script = join(prefix, "etc/vmware-tools/backupScripts.d/vmsnap");
      return {
        pre: call(["/bin/bash", "-c", `"${script}" freeze`]),
        post: call(["/bin/bash", "-c", `"${script}" thaw`]),
      };
    }
    case "azure":
      return {
        pre: call(["sh", join(prefix, "etc/azure/vmsnap-pre.sh")]),
        post: call(["sh", join(prefix, "etc/azure/vmsnap-post.sh")]),
      };
    case "gcp":
      return {
        pre: call([join(prefix, "etc/google/snapshots/pre.sh"), "disk-1"]),
        post: call([join(prefix, "etc/google/snapshots/post.sh"), "disk-1"]),
      };
    case "aws": {
      const document = JSON.parse(installed.stdout.slice(installed.stdout.indexOf("\n{") + 1));
      const lines: string[] = document.mainSteps[0].inputs.runCommand;
      const script = (command: string) =>
        put(
          join(prefix, `ssm-${command}.sh`),
          lines.join("\n").replaceAll("{{ command }}", command),
          0o700,
        );
      return { pre: call(["sh", script("pre-script")]), post: call(["sh", script("post-script")]) };
    }
  }
}
