/**
 * Hook mode's building blocks without a backup agent: stage order, the
 * holder's socket (token, answers), and the descriptors a started process
 * inherits.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { openSync } from "node:fs";
import { byStage, runStaged } from "../../src/run/stages.ts";
import { askHolder, holderPaths, listenForHooks, liveHolder } from "../../src/hook/channel.ts";
import { closeOnExecAbove2 } from "../../src/sys/libc.ts";
import { parseInvocation } from "../../src/cli/args.ts";
import { UsageError } from "../../src/cli/command.ts";
import { secureDir } from "../helpers.ts";

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
