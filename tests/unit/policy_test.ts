/**
 * The policy in docs/how-it-works.md ("What a failure does"), through `runBackup` with injected dependencies:
 * no root, no real freeze, no guard process. Each failure ×
 * `continueBackupOnFailure` → snapshot or not, consistency, exit code; and
 * the promises that hold on every path (what was frozen is thawed, in reverse;
 * what was quiesced is resumed).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { PassThrough } from "node:stream";
import type { Freezer } from "../../src/freeze/freezer.ts";
import type { GuardClient } from "../../src/freeze/guard.ts";
import type { Mount } from "../../src/sys/mountinfo.ts";
import type { RunResult, SnapshotOutcome } from "../../src/protocol.ts";
import { PRODUCTION_DEPS, type RunDeps } from "../../src/run/deps.ts";
import { runBackup } from "../../src/run/sequence.ts";
import { secureDir } from "../helpers.ts";
import type { PluginDefinition, StepResult } from "../../plugins/plugin.ts";

/** What the fakes are told to do, and what they saw. */
interface Script {
  failCheck?: string[];
  failQuiesce?: string[];
  failFreeze?: string[];
  guardFails?: boolean;
  snapshotFails?: boolean;
  notRoot?: boolean;
  /** The path of this mount leads to another mount now (over-mounted, lazily unmounted). */
  moved?: string[];
  /** A signal arrives while frozen. */
  signalWhileFrozen?: boolean;
}

interface Seen {
  calls: string[];
}

const ROOT = process.getuid?.() === 0;
const MOUNTS = ["/fake/child", "/fake/parent"];

function mount(mountPoint: string, i: number): Mount {
  return {
    mountId: 100 + i,
    parentId: 1,
    device: `253:${i}`,
    root: "/",
    mountPoint,
    mountOptions: ["rw"],
    optionalFields: [],
    fsType: "ext4",
    source: `/dev/vd${"bc"[i]}`,
    superOptions: ["rw"],
  };
}

const ok = (ms = 1): StepResult => ({ ok: true, durationMs: ms, errors: [], facts: {} });

function fakeDeps(script: Script, seen: Seen): RunDeps {
  // A fake plugin type under its own name: the config is validated with the run's plugin types.
  const plugin: PluginDefinition = {
    type: "fake",
    summary: "fake",
    fields: { pre: { type: "string", absolutePath: true } },
    normalize: (values) => ({ type: "fake", name: String(values.name) }),
    check: (config) =>
      script.failCheck?.includes(config.name)
        ? [{ code: "Pre-ScriptNotFound", message: `${config.name}: no pre-script` }]
        : [],
    create: (config) => ({
      quiesce: () => {
        seen.calls.push(`quiesce ${config.name}`);
        if (script.failQuiesce?.includes(config.name)) {
          return Promise.resolve({
            ok: false,
            durationMs: 1,
            errors: [{ code: "Pre-ScriptExecutionFailed", message: "exit 1", plugin: config.name }],
            facts: {},
          });
        }
        return Promise.resolve(ok());
      },
      resume: () => {
        seen.calls.push(`resume ${config.name}`);
        return Promise.resolve(ok());
      },
    }),
  };
  const freezeByPath = (mp: string) => {
    seen.calls.push(`freeze ${mp}`);
    return script.failFreeze?.includes(mp)
      ? { ok: false, errno: 95, error: "EOPNOTSUPP", ms: 0 }
      : { ok: true, ms: 0 };
  };
  const thawByPath = (mp: string) => {
    // thawAndConfirm thaws twice: the second answers EINVAL ("not frozen").
    const last = seen.calls.at(-1);
    if (last === `thaw ${mp}`) return { ok: false, errno: 22, error: "EINVAL", ms: 0 };
    seen.calls.push(`thaw ${mp}`);
    return { ok: true, ms: 0 };
  };
  const freezer: Freezer = {
    method: "ioctl",
    freeze: freezeByPath,
    thaw: thawByPath,
    open: (mp) => {
      const planned = 100 + MOUNTS.indexOf(mp);
      return {
        handle: { mountPoint: mp, fd: 1000, mountId: script.moved?.includes(mp) ? 7 : planned },
      };
    },
    freezeHandle: (h) => freezeByPath(h.mountPoint),
    thawHandle: (h) => thawByPath(h.mountPoint),
    syncHandle: (h) => {
      seen.calls.push(`sync ${h.mountPoint}`);
      return { ok: true, ms: 0 };
    },
    close: () => {},
  };
  const guard: GuardClient = {
    pid: 4242,
    expired: () => undefined,
    died: () => false,
    release: (froze) => {
      seen.calls.push(`release guard ${froze.join(",")}`);
      return Promise.resolve([]);
    },
    kill: () => {},
    drop: (mount) => void seen.calls.push(`drop ${mount}`),
  };
  return {
    ...PRODUCTION_DEPS,
    createFreezer: () => Promise.resolve(freezer),
    startGuard: (arm) => {
      seen.calls.push(`arm guard ${arm.mounts.join(",")}`);
      if (script.guardFails) return Promise.reject(new Error("the guard did not start"));
      return Promise.resolve(guard);
    },
    spawnGuard: () => {
      seen.calls.push("spawn guard");
      return {
        pid: 4242,
        arm: (arm) => {
          seen.calls.push(`arm guard ${arm.mounts.join(",")}`);
          if (script.guardFails) return Promise.reject(new Error("the guard did not start"));
          return Promise.resolve(guard);
        },
        dismiss: () => void seen.calls.push("dismiss guard"),
      };
    },
    readMounts: () => MOUNTS.map(mount),
    plugins: new Map([["fake", plugin]]),
    uid: () => (script.notRoot ? 1000 : 0),
    pause: (phase) => {
      if (phase === "frozen" && script.signalWhileFrozen) process.emit("SIGTERM", "SIGTERM");
      return Promise.resolve();
    },
    trust: {
      checkFile: () => [],
      checkDirectory: () => [],
      checkLogFile: () => [],
      checkExecutable: () => [],
      ensureDirectory: (path) => void mkdirSync(path, { recursive: true }),
    },
    takeSnapshot: (method, ctx): Promise<SnapshotOutcome> => {
      seen.calls.push(`snapshot ${ctx.mounts.join(",")}`);
      if (script.snapshotFails) {
        return Promise.resolve({
          kind: method.kind,
          taken: false,
          durationMs: 1,
          error: { code: "SnapshotFailed", message: "exit 1" },
        });
      }
      return Promise.resolve({ kind: method.kind, taken: true, durationMs: 1 });
    },
  };
}

/** Runs one backup with the fakes; returns the result and the calls in order. */
async function backup(
  script: Script,
  config: Record<string, unknown> = {},
): Promise<{ result: RunResult; calls: string[] }> {
  // As root, a directory the permission rules accept, so the log is written; else /tmp.
  const dir = ROOT ? secureDir("policy-").dir : mkdtempSync(join(tmpdir(), "vmsnap-policy-"));
  try {
    const file = join(dir, "config.json");
    mkdirSync(join(dir, "log"));
    writeFileSync(
      file,
      JSON.stringify({
        pluginName: "ScriptRunner",
        continueBackupOnFailure: true,
        fsFreezeEnabled: true,
        freeze: { mounts: MOUNTS },
        snapshot: { command: ["/fake/snap"] },
        plugins: [
          { type: "fake", name: "app", pre: "/fake/pre.sh" },
          { type: "fake", name: "db", pre: "/fake/pre2.sh" },
        ],
        log: { file: join(dir, "log", "vmsnap.log") },
        stateDir: join(dir, "state"),
        ...config,
      }),
    );
    const seen: Seen = { calls: [] };
    const result = await runBackup({
      configPath: file,
      json: true,
      streams: { stdout: () => {}, stderr: () => {} },
      stdin: new PassThrough(),
    }, fakeDeps(script, seen));
    return { result, calls: seen.calls };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const codes = (r: RunResult) => r.errors.map((e) => e.code);

Deno.test("policy: a clean run freezes children first, thaws in reverse, resumes: application, exit 0", async () => {
  const { result, calls } = await backup({});
  assert.equal(result.exitCode, 0, JSON.stringify(result.errors));
  assert.equal(result.consistency, "application");
  // Without root the log's directory is refused, which is the only error then.
  assert.deepEqual(codes(result), ROOT ? [] : ["LogWriteFailed"], JSON.stringify(result.log));
  assert.equal(result.status, ROOT ? "success" : "degraded");
  assert.deepEqual(calls, [
    "spawn guard",
    "quiesce app",
    "quiesce db",
    "sync /fake/child",
    "sync /fake/parent",
    "arm guard /fake/child,/fake/parent",
    "freeze /fake/child",
    "freeze /fake/parent",
    "snapshot /fake/child,/fake/parent",
    "thaw /fake/parent",
    "thaw /fake/child",
    "release guard /fake/child,/fake/parent",
    "resume app",
    "resume db",
    "dismiss guard",
  ]);
});

for (const continueBackupOnFailure of [true, false]) {
  const expect = continueBackupOnFailure
    ? { taken: true, consistency: "filesystem", exit: 1 }
    : { taken: false, consistency: "none", exit: 2 };
  Deno.test(`policy: a pre step fails, continueBackupOnFailure ${continueBackupOnFailure} → ${expect.consistency}, exit ${expect.exit}; both plugins resumed`, async () => {
    const { result, calls } = await backup({ failQuiesce: ["app"] }, { continueBackupOnFailure });
    assert.equal(result.snapshotTaken, expect.taken);
    assert.equal(result.consistency, expect.consistency);
    assert.equal(result.exitCode, expect.exit);
    assert.ok(codes(result).includes("Pre-ScriptExecutionFailed"));
    assert.ok(calls.includes("resume app") && calls.includes("resume db"), calls.join("; "));
    assert.equal(calls.some((c) => c.startsWith("freeze")), continueBackupOnFailure);
  });

  Deno.test(`policy: a plugin fails its checks, continueBackupOnFailure ${continueBackupOnFailure} → ${expect.consistency}, exit ${expect.exit}; it never runs`, async () => {
    const { result, calls } = await backup({ failCheck: ["db"] }, { continueBackupOnFailure });
    assert.equal(result.snapshotTaken, expect.taken);
    assert.equal(result.consistency, expect.consistency);
    assert.equal(result.exitCode, expect.exit);
    assert.ok(codes(result).includes("Pre-ScriptNotFound"));
    assert.ok(!calls.includes("quiesce db"));
    assert.equal(calls.includes("quiesce app"), continueBackupOnFailure);
  });

  const freezeExpect = continueBackupOnFailure
    ? { taken: true, consistency: "crash", exit: 1 }
    : { taken: false, consistency: "none", exit: 2 };
  Deno.test(`policy: a freeze fails, continueBackupOnFailure ${continueBackupOnFailure} → ${freezeExpect.consistency}, exit ${freezeExpect.exit}; what froze is thawed before any snapshot`, async () => {
    const { result, calls } = await backup({ failFreeze: ["/fake/parent"] }, {
      continueBackupOnFailure,
    });
    assert.equal(result.snapshotTaken, freezeExpect.taken);
    assert.equal(result.consistency, freezeExpect.consistency);
    assert.equal(result.exitCode, freezeExpect.exit);
    assert.ok(codes(result).includes("FreezeFailed"));
    assert.ok(calls.includes("drop /fake/parent"), "the guard never thaws a freeze that failed");
    const thaw = calls.indexOf("thaw /fake/child");
    assert.ok(thaw > calls.indexOf("freeze /fake/parent"), calls.join("; "));
    const snapshot = calls.findIndex((c) => c.startsWith("snapshot"));
    if (continueBackupOnFailure) {
      assert.ok(snapshot > thaw, "the crash-consistent snapshot comes after the thaw");
      assert.equal(calls[snapshot], "snapshot ", "no mount is announced as frozen");
    } else assert.equal(snapshot, -1);
    assert.ok(calls.includes("resume app") && calls.includes("resume db"));
  });

  Deno.test(`policy: the guard cannot start, continueBackupOnFailure ${continueBackupOnFailure} → ${freezeExpect.consistency}; nothing is frozen`, async () => {
    const { result, calls } = await backup({ guardFails: true }, { continueBackupOnFailure });
    assert.ok(codes(result).includes("GuardFailed"));
    assert.ok(!calls.some((c) => c.startsWith("freeze")), calls.join("; "));
    assert.equal(result.snapshotTaken, freezeExpect.taken);
    assert.equal(result.consistency, freezeExpect.consistency);
    assert.equal(result.exitCode, freezeExpect.exit);
  });

  Deno.test(`policy: the config cannot be parsed, continueBackupOnFailure ${continueBackupOnFailure} → nothing runs, exit 2`, async () => {
    const { result, calls } = await backup({}, {
      continueBackupOnFailure,
      fsFreezeEnabled: "yes",
    });
    assert.equal(result.exitCode, 2);
    assert.equal(result.consistency, "none");
    assert.deepEqual(calls, []);
    assert.ok(codes(result).includes("InvalidConfig"), codes(result).join());
  });
}

Deno.test("policy: a failed snapshot is no snapshot (exit 2), thawed and resumed all the same", async () => {
  const { result, calls } = await backup({ snapshotFails: true });
  assert.equal(result.exitCode, 2);
  assert.equal(result.consistency, "none");
  assert.ok(codes(result).includes("SnapshotFailed"));
  assert.ok(calls.includes("thaw /fake/parent") && calls.includes("resume db"));
});

Deno.test("policy: a signal while frozen: no snapshot, thaw, resume, Interrupted, exit 2", async () => {
  const { result, calls } = await backup({ signalWhileFrozen: true });
  assert.equal(result.exitCode, 2);
  assert.ok(codes(result).includes("Interrupted"), codes(result).join());
  assert.ok(!calls.some((c) => c.startsWith("snapshot")), calls.join("; "));
  assert.ok(calls.includes("thaw /fake/child") && calls.includes("resume app"));
});

Deno.test("policy: not root: NotRoot, nothing runs, exit 2", async () => {
  const { result, calls } = await backup({ notRoot: true });
  assert.equal(result.exitCode, 2);
  assert.deepEqual(codes(result), ["NotRoot"]);
  assert.deepEqual(calls, []);
});

Deno.test("policy: fsFreezeEnabled false: no freeze, application-consistent from the plugins alone", async () => {
  const { result, calls } = await backup({}, { fsFreezeEnabled: false });
  assert.equal(result.exitCode, 0);
  assert.equal(result.consistency, "application");
  assert.ok(!calls.some((c) => c.startsWith("freeze") || c.startsWith("arm")));
});

Deno.test("policy: a target whose path leads to another mount than planned: FreezeMountNotFound before anything is frozen", async () => {
  const { result, calls } = await backup({ moved: ["/fake/parent"] });
  assert.ok(codes(result).includes("FreezeMountNotFound"), codes(result).join());
  assert.match(result.errors.find((e) => e.code === "FreezeMountNotFound")!.message, /mount 101/);
  assert.ok(!calls.some((c) => c.startsWith("freeze") || c.startsWith("arm")), calls.join("; "));
  assert.equal(result.consistency, "crash");
  assert.equal(result.exitCode, 1);
});
