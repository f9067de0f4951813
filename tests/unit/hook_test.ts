/**
 * Hook mode's building blocks without a backup agent: stage order, the
 * holder's socket (token, answers), and the descriptors a started process
 * inherits.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { byStage, runStaged } from "../../src/run/stages.ts";
import { askHolder, holderPaths, listenForHooks, liveHolder } from "../../src/hook/channel.ts";
import { type HookDeps, PRODUCTION_HOOK_DEPS } from "../../src/hook/deps.ts";
import { runHook } from "../../src/hook/hook.ts";
import { holderMain, type HolderSpec } from "../../src/hook/holder.ts";
import { readLastResult } from "../../src/state/last_result.ts";
import { closeOnExecAbove2 } from "../../src/sys/descriptors.ts";
import { parseInvocation } from "../../src/cli/args.ts";
import { UsageError } from "../../src/cli/command.ts";
import { putConfig, secureDir } from "../helpers.ts";

Deno.test("byStage: lowest stage first, stable within a stage, missing stage is 0", () => {
  const items = [{ n: "db", s: 1 }, { n: "app" }, { n: "web", s: -1 }, { n: "cache", s: 1 }];
  assert.deepEqual(
    byStage(items, (i) => (i as { s?: number }).s).map((g) => g.map((i) => i.n)),
    [["web"], ["app"], ["db", "cache"]],
  );
});

Deno.test("runStaged: descending for resume; goOn false starts no later stage", async () => {
  const items = [{ n: "a", s: 0 }, { n: "b", s: 1 }, { n: "c", s: 2 }];
  const seen: string[] = [];
  await runStaged({
    items,
    stageOf: (i) => i.s,
    order: "descending",
    step: (group) => {
      seen.push(...group.map((i) => i.n));
      return Promise.resolve();
    },
  });
  assert.deepEqual(seen, ["c", "b", "a"]);
  const started: string[] = [];
  await runStaged({
    items,
    stageOf: (i) => i.s,
    order: "ascending",
    step: (group) => {
      started.push(...group.map((i) => i.n));
      return Promise.resolve();
    },
    goOn: () => started.length < 2,
  });
  assert.deepEqual(started, ["a", "b"]);
});

Deno.test("the holder's socket: root-only files, answers with the token, refuses without", async () => {
  const { dir, cleanup } = secureDir("holder-");
  const paths = holderPaths(dir);
  const server = await listenForHooks(paths, { runId: "r1", agent: "generic" }, (c) => {
    c.answer({ event: "echo", request: c.request });
  });
  try {
    assert.equal(Deno.statSync(paths.dir).mode! & 0o777, 0o700);
    assert.equal(Deno.statSync(paths.token).mode! & 0o777, 0o600);
    assert.equal(liveHolder(paths)?.runId, "r1");
    const reply = await askHolder(paths, { op: "thaw", event: "thaw" }, 5000);
    assert.ok("answer" in reply);
    assert.deepEqual(reply.answer.request, { op: "thaw", event: "thaw" });
    assert.equal(server.peerCheck(), "SO_PEERCRED");
    // Without the token: closed, no answer.
    Deno.writeTextFileSync(paths.token, "0".repeat(64));
    const refused = await askHolder(paths, { op: "attach" }, 5000);
    assert.ok("failed" in refused && refused.failed === "closed", JSON.stringify(refused));
  } finally {
    server.close();
    cleanup();
  }
  assert.equal(liveHolder(paths), undefined);
  const none = await askHolder(paths, { op: "attach" }, 1000);
  assert.ok("failed" in none && none.failed === "no-holder");
});

Deno.test("closeOnExecAbove2: a process started next inherits only 0, 1 and 2", async () => {
  // An inherited descriptor without close-on-exec, as an agent may hand its hook one: dup() of one.
  const libc = Deno.dlopen("libc.so.6", { dup: { parameters: ["i32"], result: "i32" } });
  const leaked = libc.symbols.dup(openSync("/dev/null", "r"));
  const fds = () =>
    spawnSync("/bin/sh", ["-c", "ls /proc/$$/fd"], { encoding: "utf8" }).stdout.trim().split("\n");
  try {
    assert.ok(fds().includes(String(leaked)), "without it, the child inherits the descriptor");
    assert.equal(await closeOnExecAbove2(), "close_range");
    assert.deepEqual(fds().sort(), ["0", "1", "2"]);
  } finally {
    libc.close();
  }
});

Deno.test("the command line: hook, install and uninstall", () => {
  const hook = parseInvocation(
    ["hook", "freeze", "--for", "vmware", "--timeout", "30", "--", "backup"],
    {},
  );
  assert.equal(hook.agent, "vmware");
  assert.equal(hook.timeoutSeconds, 30);
  assert.deepEqual(hook.positionals, ["freeze", "backup"]);
  const install = parseInvocation(["uninstall", "--for", "gcp", "--root", "/x", "--dry-run"], {});
  assert.deepEqual([install.agent, install.root, install.dryRun], ["gcp", "/x", true]);
  const usage = (argv: string[]) => {
    try {
      parseInvocation(argv, {});
    } catch (error) {
      assert.ok(error instanceof UsageError);
      return error.message;
    }
    assert.fail(`no usage error for ${argv.join(" ")}`);
  };
  assert.match(usage(["hook", "freeze"]), /needs --for AGENT/);
  assert.match(
    usage(["hook", "frezee", "--for", "gcp"]),
    /not "frezee"\. Did you mean "freeze"\?$/,
  );
  assert.match(usage(["install", "--for", "vmwar"]), /Did you mean "vmware"/);
  assert.match(usage(["hook", "thaw", "--for", "gcp", "--timeout", "0"]), /--timeout must be/);
  assert.match(usage(["hook", "thaw", "--for", "gcp", "--root", "/x"]), /unknown option --root/);
});

/** Hook mode's dependencies with no guard and no holder process: a test fails if one is started. */
function noProcesses(): HookDeps {
  return {
    ...PRODUCTION_HOOK_DEPS,
    spawnGuard: () => assert.fail("no guard may be started"),
    startGuard: () => assert.fail("no guard may be started"),
    spawnHolder: () => assert.fail("no holder may be started"),
  };
}

/** A hook's output lines, parsed (--json). */
function lines(out: string[]): Record<string, unknown>[] {
  return out.join("").trim().split("\n").map((line) => JSON.parse(line));
}

Deno.test("runHook takes its uid from its dependencies: a thaw hook that is not root says so and contacts nothing", async () => {
  const out: string[] = [];
  const code = await runHook({
    event: "thaw",
    agent: "gcp",
    configPath: "/nonexistent/vmsnap.json",
    json: true,
    agentArgs: [],
    streams: { stdout: (t) => void out.push(t), stderr: (t) => void out.push(t) },
  }, { ...noProcesses(), uid: () => 1000 });
  assert.equal(code, 2);
  const [line] = lines(out);
  assert.equal(line.code, "NotRoot");
  assert.match(String(line.message), /uid 1000/);
});

Deno.test("runHook starts its holder through its dependencies: the orders it gets, and the reason of one that stops before it listens", async () => {
  const { dir, cleanup } = secureDir("hook-");
  try {
    const stateDir = join(dir, "state");
    const config = putConfig(dir, {
      stateDir,
      log: { file: join(dir, "log", "vmsnap.jsonl") },
      metrics: { textfile: join(dir, "vmsnap.prom") },
    });
    const specs: HolderSpec[] = [];
    const out: string[] = [];
    const code = await runHook({
      event: "freeze",
      agent: "gcp",
      configPath: config,
      json: true,
      timeoutSeconds: 20,
      agentArgs: ["sdb"],
      streams: { stdout: (t) => void out.push(t), stderr: (t) => void out.push(t) },
    }, {
      ...noProcesses(),
      spawnHolder: (spec) => {
        specs.push(spec);
        // As a holder that stopped in its preflight: its reason for the hook, then exit 2.
        const failed = join(holderPaths(stateDir).dir, `failed-${spec.runId}.json`);
        writeFileSync(failed, JSON.stringify({ code: "AnotherRunInProgress", message: "busy" }));
        return Promise.resolve({ pid: 4242, exited: () => 2, stop: () => {} });
      },
    });
    assert.equal(code, 2);
    assert.equal(specs.length, 1);
    assert.deepEqual(
      [specs[0].agent, specs[0].configPath, specs[0].agentArgs],
      ["gcp", config, ["sdb"]],
    );
    assert.ok(specs[0].attachTimeoutMs > 10_000, String(specs[0].attachTimeoutMs));
    const [line] = lines(out);
    assert.deepEqual([line.event, line.code], ["hook-error", "AnotherRunInProgress"]);
    assert.ok(!existsSync(join(holderPaths(stateDir).dir, `failed-${specs[0].runId}.json`)));
  } finally {
    cleanup();
  }
});

Deno.test("the holder takes the run's dependencies: for an agent that freezes itself it starts no guard, and its clock is the one given", async () => {
  const { dir, cleanup } = secureDir("holder-");
  try {
    const stateDir = join(dir, "state");
    const config = putConfig(dir, {
      fsFreezeEnabled: true,
      freeze: { mounts: ["/nonexistent-mount"] },
      stateDir,
      log: { file: join(dir, "log", "vmsnap.jsonl") },
      metrics: { textfile: join(dir, "vmsnap.prom") },
    });
    const spec: HolderSpec = {
      runId: "20261126T050000Z-h0ld3r",
      configPath: config,
      agent: "qemu-ga",
      attachTimeoutMs: 200,
      agentArgs: [],
    };
    // No freeze hook attaches: the hold ends by itself ("hook-gone") and records its result.
    assert.equal(await holderMain({ ...noProcesses(), now: () => 42 }, spec), 0);
    const result = readLastResult(stateDir);
    assert.equal(result.runId, spec.runId);
    assert.deepEqual(
      [result.mode, result.hook.agent, result.hook.freezeBy, result.hook.endedBy],
      ["hook", "qemu-ga", "agent", "hook-gone"],
    );
    assert.ok(result.errors.some((e: { code: string }) => e.code === "HookAborted"));
    // The agent's freeze: no plan of vmsnap's own (no FreezeMountNotFound for the missing mount).
    assert.ok(!result.errors.some((e: { code: string }) => e.code === "FreezeMountNotFound"));
    assert.deepEqual([result.durationMs, result.hook.heldMs], [0, 0]);
  } finally {
    cleanup();
  }
});
