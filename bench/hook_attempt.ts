/**
 * The script attempt probe of `deno task bench --only hook` (bench/hook.ts):
 * compiled by the same Bun with vmsnap's build flags, it times one script
 * attempt the ways vmsnap's code makes it (the runner with and without its
 * cgroup, the script plugin's whole attempt) beside a bare spawn of the same
 * script by the same runtime, and the runner's set-up steps one by one.
 * Methods are interleaved in a rotating order. Prints one JSON object:
 * method → milliseconds per trial.
 *
 * Environment: PROBE_SCRIPT (an executable script), PROBE_ROUNDS.
 *
 * @module
 */
import { spawn } from "node:child_process";
import process from "node:process";
import {
  cgroup2OrMount,
  createProcessCgroup,
  joinAndExecArgv,
  PRIVATE_CGROUP2_DIR,
} from "../src/sys/cgroup.ts";
import { findTagged, runProcess } from "../src/sys/process_runner.ts";
import { checkScript, runScript } from "../plugins/script_runner.ts";

const script = process.env.PROBE_SCRIPT ?? "";
const rounds = Number(process.env.PROBE_ROUNDS ?? 20);
const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" };

/** Spawns argv and resolves when it exited and (with pipes) both pipes closed. */
function spawned(argv: string[], pipes: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      env: ENV,
      cwd: "/",
      stdio: pipes ? ["ignore", "pipe", "pipe"] : "ignore",
      detached: pipes,
    });
    child.on("error", reject);
    child.on(pipes ? "close" : "exit", () => resolve());
    if (pipes) {
      child.stdout!.resume();
      child.stderr!.resume();
    }
  });
}

/** One cgroup made and removed the way the runner does it (no process in it). */
function cgroupOnly(): void {
  const cgroup = createProcessCgroup(cgroup2OrMount(PRIVATE_CGROUP2_DIR));
  if (!cgroup) throw new Error("no cgroup2 hierarchy");
  cgroup.release();
}

/** The script spawned through the shell that joins the cgroup, as the runner does. */
async function joinedSpawn(): Promise<void> {
  const cgroup = createProcessCgroup(cgroup2OrMount(PRIVATE_CGROUP2_DIR));
  if (!cgroup) throw new Error("no cgroup2 hierarchy");
  await spawned(joinAndExecArgv(cgroup.path, [script]), true);
  cgroup.release();
}

/** One attempt of the runner; it must have run the script and tracked it as asked. */
async function runner(isolation: "tag" | "auto"): Promise<void> {
  const result = await runProcess({ argv: [script], env: ENV, timeoutMs: 30_000, isolation });
  const tracking = isolation === "tag" ? "tag" : "cgroup";
  if (result.exitCode !== 0 || result.tracking !== tracking) {
    throw new Error(`runner: exit ${result.exitCode}, tracking ${result.tracking}`);
  }
}

/**
 * The cut proposed for the attempt (research/hook_perf.md): the shell that
 * joins the cgroup is started and joined before quiesce (untimed here), and
 * waits on fd 3; the attempt is then "go" → exit → the cgroup removed.
 * Returns the timed part only.
 */
async function parkedAttempt(): Promise<number> {
  const cgroup = createProcessCgroup(cgroup2OrMount(PRIVATE_CGROUP2_DIR));
  if (!cgroup) throw new Error("no cgroup2 hierarchy");
  const child = spawn(
    "/bin/sh",
    [
      "-c",
      '{ echo $$ > "$0/cgroup.procs"; } 2>/dev/null; read -r go <&3; exec 3<&-; exec "$@"',
      cgroup.path,
      script,
    ],
    { env: ENV, cwd: "/", stdio: ["ignore", "pipe", "pipe", "pipe"], detached: true },
  );
  child.stdout!.resume();
  child.stderr!.resume();
  const closed = new Promise((resolve) => child.on("close", resolve));
  while (!cgroup.members().includes(child.pid!)) await new Promise((r) => setTimeout(r, 1));
  const started = performance.now();
  (child.stdio[3] as NodeJS.WritableStream).end("go\n");
  await closed;
  cgroup.release();
  return performance.now() - started;
}

const attemptEnv = {
  runId: "bench",
  stateDir: "/nonexistent",
  configFile: "/nonexistent",
  signal: new AbortController().signal,
  log: () => {},
};

/** Each method runs once; one that returns a number timed itself (its set-up is not counted). */
const methods: Record<string, () => Promise<unknown> | unknown> = {
  "bare spawn": () => spawned([script], false),
  "bare spawn, pipes read to EOF": () => spawned([script], true),
  "runner, no cgroup (tag tracking)": () => runner("tag"),
  "runner with its cgroup (the default)": () => runner("auto"),
  "the script plugin's attempt (checks + runner)": async () => {
    const result = await runScript({
      plugin: "bench",
      phase: "pre",
      step: { path: script, params: [], retries: 0, key: "preScriptLocation" },
      timeoutInSeconds: 30,
      env: attemptEnv,
    });
    if (!result.ok) throw new Error(JSON.stringify(result.errors));
  },
  "part: the script's permission checks": () =>
    checkScript(script, { phase: "pre", what: "pre-script" }),
  "part: a cgroup made and removed": cgroupOnly,
  "part: spawn through the cgroup-joining shell": joinedSpawn,
  "part: the /proc environ scan for the tag": () => findTagged("bench-probe"),
  "proposed: joined before quiesce, go → exit → cgroup removed": parkedAttempt,
};

const names = Object.keys(methods);
const out: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
for (let i = 0; i < rounds; i++) {
  const order = [...names.slice(i % names.length), ...names.slice(0, i % names.length)];
  for (const name of order) {
    const started = performance.now();
    const timed = await methods[name]();
    out[name].push(typeof timed === "number" ? timed : performance.now() - started);
  }
}
process.stdout.write(`${JSON.stringify(out)}\n`);
