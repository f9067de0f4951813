import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { rmdirSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runProcess } from "../../src/sys/process_runner.ts";
import { put, ROOT, secureDir, waitFor } from "../helpers.ts";
import { makeLoopFs } from "../loop.ts";

const env = { PATH: "/usr/bin:/bin" };
const sh = (script: string) => ["/bin/sh", "-c", script];
const alive = (pattern: string) => spawnSync("pgrep", ["-f", pattern]).status === 0;

Deno.test("exit code, output lines and tails, with stdin /dev/null and cwd /", async () => {
  const r = await runProcess({ argv: sh("pwd; cat; echo oops >&2; exit 3"), env, timeoutMs: 5000 });
  assert.deepEqual([r.exitCode, r.timedOut, r.tail.stdout, r.tail.stderr], [3, false, ["/"], [
    "oops",
  ]]);
  assert.equal(r.lines, 2);
});

Deno.test("only the environment given reaches the process (plus the tag)", async () => {
  const r = await runProcess({
    argv: sh("env | sort"),
    env: { PATH: "/usr/bin:/bin", ONLY: "this" },
    timeoutMs: 5000,
  });
  const names = r.tail.stdout.map((l) => l.split("=")[0]).filter((n) =>
    n !== "PWD" && n !== "SHLVL" && n !== "_"
  );
  assert.deepEqual(names, ["ONLY", "PATH", "VMSNAP_PROCESS_TAG"]);
});

Deno.test("a timeout kills the group and descendants that left it (setsid)", async () => {
  const marker = `sleep 4${Date.now() % 100000}`;
  const r = await runProcess({
    argv: sh(`setsid sh -c '${marker}' & ${marker} & wait`),
    env,
    timeoutMs: 300,
    graceMs: 200,
  });
  assert.equal(r.timedOut, true);
  assert.ok(r.killed >= 3, `killed ${r.killed}`);
  assert.equal(alive(marker), false);
});

Deno.test("a process that ignores SIGTERM is killed after the grace", async () => {
  const marker = `sleep 5${Date.now() % 100000}`;
  const r = await runProcess({
    argv: sh(`trap '' TERM; ${marker}; true`),
    env,
    timeoutMs: 200,
    graceMs: 300,
  });
  assert.equal(r.timedOut, true);
  assert.ok(r.durationMs >= 500 && r.durationMs < 3000, `${r.durationMs} ms`);
  assert.equal(alive(marker), false);
});

Deno.test("a daemon left behind after a normal exit: not waited for, not killed, reported", async () => {
  const marker = `sleep 6${Date.now() % 100000}`;
  const r = await runProcess({ argv: sh(`(${marker} &); echo started`), env, timeoutMs: 5000 });
  try {
    assert.equal(r.exitCode, 0);
    assert.ok(r.durationMs < 2000, `${r.durationMs} ms`);
    assert.ok(r.leftovers.some((l) => l.command === marker), JSON.stringify(r.leftovers));
    assert.ok(alive(marker));
  } finally {
    for (const l of r.leftovers) process.kill(l.pid, "SIGKILL");
  }
});

Deno.test("a process that closes stdout and keeps running is still timed out", async () => {
  const r = await runProcess({
    argv: sh("exec >&- 2>&-; sleep 300"),
    env,
    timeoutMs: 300,
    graceMs: 200,
  });
  assert.equal(r.timedOut, true);
});

Deno.test("megabytes of output never block; very long lines are cut", async () => {
  const r = await runProcess({
    argv: sh(
      "head -c 20000000 /dev/zero | tr '\\0' 'y' | fold -w 200; echo; head -c 100000 /dev/zero | tr '\\0' 'z'; echo",
    ),
    env,
    timeoutMs: 30_000,
  });
  assert.equal(r.exitCode, 0);
  // 20 MB folded into 100,000 lines (99,999 newlines from fold, one from echo), then one 100 kB line.
  assert.equal(r.bytes, 20_000_000 + 99_999 + 1 + 100_000 + 1);
  // However the 100 kB line arrives in chunks, no kept line exceeds the bound, and the cut is marked.
  assert.ok(r.tail.stdout.every((line) => line.length <= 4096 + 32));
  assert.ok(
    r.tail.stdout.some((line) => /^z+… \(\d+ characters\)$/.test(line)),
    r.tail.stdout.map((l) => l.length).join(","),
  );
});

Deno.test("an abort stops the process like a timeout", async () => {
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  const r = await runProcess({
    argv: sh("sleep 300"),
    env,
    timeoutMs: 60_000,
    signal: controller.signal,
    graceMs: 200,
  });
  assert.deepEqual([r.aborted, r.timedOut], [true, false]);
});

Deno.test("a program that cannot start is reported, not thrown", async () => {
  const r = await runProcess({ argv: ["/nonexistent/program"], env, timeoutMs: 1000 });
  assert.match(r.spawnError!, /ENOENT/);
  assert.equal(r.exitCode, null);
});

for (const isolation of ["auto", "tag"] as const) {
  Deno.test(`a descendant that left the group and cleared its environment (setsid env -i), isolation ${isolation}: killed through the cgroup, or (tag) out of reach and not counted`, async () => {
    const marker = `sleep 7${Date.now() % 100000}`;
    const r = await runProcess({
      argv: sh(`setsid env -i /bin/sh -c '${marker}; true' & echo started; wait`),
      env,
      timeoutMs: 400,
      graceMs: 200,
      isolation,
    });
    try {
      assert.equal(r.timedOut, true);
      assert.deepEqual(r.survivors, []);
      if (isolation === "auto") {
        assert.equal(r.tracking, "cgroup", "this machine has a writable cgroup2 hierarchy");
        assert.equal(alive(marker), false, "the escaped descendant was killed");
        assert.ok(r.killed >= 3, `killed ${r.killed}`);
      } else {
        // The fallback cannot see it (the reason for cgroups), so it does not count it either.
        assert.equal(r.tracking, "tag");
        assert.equal(alive(marker), true);
        assert.ok(r.killed >= 1, "the script's own shell");
      }
    } finally {
      spawnSync("pkill", ["-KILL", "-f", marker]);
    }
  });
}

Deno.test("a process that cannot be killed (a writer blocked on a frozen test filesystem) is reported as a survivor, not as killed", async () => {
  const { dir, cleanup } = secureDir("runner-");
  const fs = makeLoopFs({ dir, name: "frozen", sizeMiB: 16 });
  let r: Awaited<ReturnType<typeof runProcess>> | undefined;
  try {
    execFileSync("fsfreeze", ["--freeze", fs.mountPoint]);
    r = await runProcess({
      argv: sh(`echo blocked; echo x > '${fs.mountPoint}/file'`),
      env,
      // Long enough for the shell to reach the write and block, even on a loaded machine.
      timeoutMs: 1500,
      graceMs: 100,
      killMs: 500,
    });
    assert.equal(r.timedOut, true);
    assert.equal(r.survivors.length, 1, JSON.stringify(r.survivors));
    assert.equal(r.survivors[0].state, "D");
    assert.equal(r.killed, 0, "nothing is claimed killed");
  } finally {
    // Thaw, let the blocked writer end (its SIGKILL is pending), then unmount.
    spawnSync("fsfreeze", ["--unfreeze", fs.mountPoint]);
    if (r?.cgroup) await waitFor("the survivor to end", () => rmdirQuietly(r!.cgroup!));
    fs.cleanup();
    cleanup();
  }
});

/** Removes an empty cgroup directory; false while it still has members. */
function rmdirQuietly(path: string): boolean {
  try {
    rmdirSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("under Bun (the binary's runtime, whose spawn throws ENOEXEC), a file without #! runs with /bin/sh, without a cgroup too", () => {
  const { dir, cleanup } = secureDir("runner-");
  try {
    const script = put(join(dir, "noshebang"), 'echo "ran $1"\n', 0o700);
    const probe = put(
      join(dir, "probe.ts"),
      `import { runProcess } from ${JSON.stringify(join(ROOT, "src", "sys", "process_runner.ts"))};
for (const isolation of ["tag", "auto"] as const) {
  const r = await runProcess({ argv: [${
        JSON.stringify(script)
      }, "x"], env: {}, timeoutMs: 5000, isolation });
  console.log(JSON.stringify([isolation, r.exitCode, r.tail.stdout, r.spawnError ?? null, r.viaShell ?? false]));
}
`,
      0o600,
    );
    const out = execFileSync(join(ROOT, "node_modules", "bun", "bin", "bun.exe"), [probe], {
      encoding: "utf8",
    });
    assert.deepEqual(out.trim().split("\n").map((l) => JSON.parse(l)), [
      ["tag", 0, ["ran x"], null, true],
      ["auto", 0, ["ran x"], null, false],
    ]);
  } finally {
    cleanup();
  }
});
