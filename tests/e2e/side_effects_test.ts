/**
 * Side effects only where asked, through the binary: help and version change
 * nothing, check reports what a dead run left and changes nothing, recover
 * undoes it, and no recovery acts on state that a user could have forged.
 *
 * The "dead run" is forged by the test on a loop filesystem it made and froze
 * itself (fsfreeze); the fixture's cleanup thaws it in every case.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { json, put, runBin } from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";

type Fixture = ReturnType<typeof runFixture>;

/** Freezes the fixture's own loop fs and leaves what a run killed with its guard would leave. */
function forgeDeadRun(f: Fixture): string[] {
  const state = f.path("state");
  mkdirSync(state, { recursive: true, mode: 0o700 });
  execFileSync("fsfreeze", ["--freeze", f.mp]);
  const dead = { pid: 999999, started: "1", since: "2026-11-26T00:00:00Z" };
  const files = {
    "frozen.json": { ...dead, runId: "dead-1", mounts: [f.mp] },
    "run.lock": { ...dead, runId: "dead-1" },
    "guard-dead-0.json": {
      runId: "dead-0",
      reason: "agent-died",
      at: "2026-11-25T00:00:00Z",
      afterMs: 12,
      thawed: [{ mount: "/nowhere", wasFrozen: true, confirmed: true }],
    },
  };
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(state, name), JSON.stringify(content), { mode: 0o600 });
  }
  return Object.keys(files).map((name) => join(state, name));
}

const allThere = (files: string[]) => files.every((file) => existsSync(file));

Deno.test("help, --help, X --help and version change nothing; check reports a dead run's leftovers and changes nothing; recover undoes them", async () => {
  const f = runFixture();
  try {
    const config = f.config();
    const files = forgeDeadRun(f);
    for (
      const args of [
        ["--help"],
        ["help"],
        ["help", "recover"],
        ["recover", "--help"],
        ["run", "--help"],
        ["check", "--help"],
        ["version"],
        ["--version"],
      ]
    ) {
      const ran = await runBin([...args, "--config", config]);
      assert.equal(ran.code, 0, `${args.join(" ")}: ${ran.stderr}`);
      assert.doesNotMatch(ran.stderr, /recovered/, args.join(" "));
      assert.ok(allThere(files), `${args.join(" ")} changed nothing in stateDir`);
    }

    const checked = await runBin(["check", "--json", "--config", config]);
    assert.equal(checked.code, 1, checked.stdout);
    const report = json<{ problems: { code: string; message: string }[] }>(checked);
    const leftovers = report.problems.filter((p) => p.code === "DeadRunLeftover");
    assert.equal(leftovers.length, 3, JSON.stringify(report.problems));
    assert.ok(leftovers.every((p) => /Fix: run vmsnap recover/.test(p.message)));
    assert.ok(leftovers.some((p) => p.message.includes(f.mp)), "names the mount left frozen");
    assert.ok(allThere(files), "check changed nothing");

    const recovered = await runBin(["recover", "--json", "--config", config]);
    assert.equal(recovered.code, 0, recovered.stdout + recovered.stderr);
    const recovery = json<{ thawed: { mount: string; wasFrozen: boolean; confirmed: boolean }[] }>(
      recovered,
    );
    // (wasFrozen is not asserted: qemu-ga's guest-fsfreeze-thaw, run by other tests on this
    // machine, thaws every frozen filesystem. The marker kept until here shows nothing of
    // vmsnap's acted before recover: recovery always removes it.)
    assert.deepEqual(recovery.thawed.map((t) => [t.mount, t.confirmed]), [[f.mp, true]]);
    assert.ok(files.every((file) => !existsSync(file)), "recover removed what it undid");
  } finally {
    f.cleanup();
  }
});

Deno.test("recover refuses state from a config a user owns, or a stateDir others can write: UntrustedState, nothing thawed or removed", async () => {
  const f = runFixture();
  try {
    const files = forgeDeadRun(f);
    const userConfig = put(
      f.path("user.json"),
      JSON.stringify({ freeze: { mounts: [f.mp] }, stateDir: f.path("state") }),
      0o600,
      1000,
    );
    let ran = await runBin(["recover", "--json", "--config", userConfig]);
    assert.equal(ran.code, 2, ran.stdout + ran.stderr);
    let answer = json<{ ok: boolean; problems: { code: string; message: string }[] }>(ran);
    assert.deepEqual(answer.problems.map((p) => p.code), ["UntrustedState"]);
    assert.match(answer.problems[0].message, /InsufficientPermissionforConfigFile/);
    assert.ok(allThere(files), "nothing acted on the forged marker");

    // A root-owned config whose stateDir others can write.
    const config = f.config();
    chmodSync(f.path("state"), 0o777);
    ran = await runBin(["recover", "--json", "--config", config]);
    assert.equal(ran.code, 2, ran.stdout + ran.stderr);
    answer = json(ran);
    assert.deepEqual(answer.problems.map((p) => p.code), ["UntrustedState"]);
    assert.match(answer.problems[0].message, /stateDir/);
    assert.ok(allThere(files), "nothing acted on the marker in a world-writable stateDir");

    // Made safe again: recover does its work.
    chmodSync(f.path("state"), 0o700);
    ran = await runBin(["recover", "--config", config]);
    assert.equal(ran.code, 0, ran.stdout + ran.stderr);
    assert.match(ran.stdout, new RegExp(`thawed ${f.mp}`));
  } finally {
    f.cleanup();
  }
});

Deno.test("recover thaws a marker's mount only while its path leads to the mount the dead run planned", async () => {
  const f = runFixture();
  try {
    const files = forgeDeadRun(f);
    // The dead run planned another mount at this path (mount id 1 is never a test's loop mount).
    writeFileSync(
      files[0],
      JSON.stringify({
        pid: 999999,
        started: "1",
        since: "then",
        runId: "dead-1",
        mounts: [f.mp],
        mountIds: { [f.mp]: 1 },
      }),
    );
    const ran = await runBin(["recover", "--json", "--config", f.config()]);
    assert.equal(ran.code, 1, ran.stdout + ran.stderr);
    const recovery = json<{ thawed: { mount: string; confirmed: boolean; error?: string }[] }>(ran);
    assert.equal(recovery.thawed[0].confirmed, false);
    assert.match(recovery.thawed[0].error ?? "", /no longer leads to the planned mount 1/);
    assert.equal(
      spawnSync("fsfreeze", ["--unfreeze", f.mp]).status,
      0,
      "the filesystem now at that path was left as it was (frozen by the test)",
    );
  } finally {
    f.cleanup();
  }
});

Deno.test("run after a dead run left the filesystem of stateDir and the log frozen: it thaws before it writes there, then runs", async () => {
  const f = runFixture();
  try {
    // stateDir lives on the filesystem the dead run froze (as on a VM whose root holds everything).
    const state = join(f.mp, "state");
    mkdirSync(state, { mode: 0o700 });
    const dead = { pid: 999999, started: "1", since: "2026-11-26T00:00:00Z" };
    writeFileSync(
      join(state, "frozen.json"),
      JSON.stringify({ ...dead, runId: "dead-1", mounts: [f.mp] }),
      { mode: 0o600 },
    );
    writeFileSync(join(state, "run.lock"), JSON.stringify({ ...dead, runId: "dead-1" }), {
      mode: 0o600,
    });
    const config = f.config({ stateDir: state, log: { file: join(f.mp, "log", "vmsnap.jsonl") } });
    execFileSync("fsfreeze", ["--freeze", f.mp]);
    // Should vmsnap block on the frozen filesystem, thaw it from here after 15 s so the test ends
    // (and fails: the run then finds it already thawed).
    const rescue = setTimeout(() => spawnSync("fsfreeze", ["--unfreeze", f.mp]), 15_000);
    const ran = await runBin(["run", "--json", "--config", config], { timeoutMs: 30_000 });
    clearTimeout(rescue);
    assert.equal(ran.signal, null, `vmsnap blocked on the frozen stateDir:\n${ran.stderr}`);
    const result = JSON.parse(ran.stdout.trim().split("\n").at(-1)!);
    assert.equal(result.exitCode, 0, ran.stdout);
    assert.deepEqual(
      result.recovered.thawed.map((
        t: { mount: string; wasFrozen: boolean },
      ) => [t.mount, t.wasFrozen]),
      [[f.mp, true]],
    );
    assert.equal(result.recovered.deadRun.runId, "dead-1");
    assert.ok(!existsSync(join(state, "frozen.json")), "the dead run's marker is gone");
  } finally {
    spawnSync("fsfreeze", ["--unfreeze", f.mp]);
    f.cleanup();
  }
});
