/**
 * Issue 21, what an unprivileged user or the machine's own state can do to
 * vmsnap (items 5, 9, 13, 14), through the compiled binary. Pending: each
 * asserts what the issue asks for and fails until the fix lands (run with
 * `deno test -A tests/pending/hardening_test.ts` after a build).
 *
 * - Item 5: a user's process named `postgres` on a socket in /tmp: `init
 *   --detect` must not propose it, `check` must say the socket's directory is
 *   world-writable, `check --connect` must not send it the password.
 * - Item 9: the metrics textfile gets the rules of every file vmsnap writes:
 *   a FIFO there must not hang `run` or the holder, a directory on the way that
 *   a user owns is refused (and `check` says so).
 * - Item 13: `install --root` stays under its prefix; `uninstall` removes the
 *   directories `install` created; the ones it creates have the usual modes.
 * - Item 14: the guard restores /sys/kernel/rcu_expedited only while it still
 *   holds vmsnap's value, never over an administrator's.
 *
 * Only the fixture's loop mount is frozen (item 14); the machine-wide RCU
 * setting is put back as found.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { json, NOBODY, put, putConfig, runBin, secureDir, startBin, waitFor } from "../helpers.ts";
import { mariadbWrite } from "../db_servers.ts";
import { runFixture } from "../run_fixture.ts";
import { dbWorld, hook } from "../hook_world.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

/**
 * A user's fake PostgreSQL: a process of `nobody` whose name is `postgres`,
 * listening on `/tmp/.s.PGSQL.<port>`, asking for a cleartext password and
 * writing what it receives to `capture`.
 */
async function fakePostgres(port: number, capture: string): Promise<ChildProcess> {
  const code = `
import ctypes, os, socket, struct, sys
ctypes.CDLL(None).prctl(15, b"postgres", 0, 0, 0)
path, capture = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path); os.chmod(path, 0o777); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        n = struct.unpack("!I", c.recv(4))[0]; c.recv(n - 4)
        c.sendall(b"R" + struct.pack("!II", 8, 3))
        if c.recv(1) == b"p":
            n = struct.unpack("!I", c.recv(4))[0]
            open(capture, "ab").write(c.recv(n - 4) + b"\\n")
        c.sendall(b"R" + struct.pack("!II", 8, 0) + b"Z" + struct.pack("!I", 5) + b"I")
    except Exception:
        pass
    c.close()
`;
  const child = spawn(
    "setpriv",
    [
      `--reuid=${NOBODY}`,
      `--regid=${NOBODY}`,
      "--clear-groups",
      "/usr/bin/python3",
      "-c",
      code,
      `/tmp/.s.PGSQL.${port}`,
      capture,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  try {
    await waitFor("the fake postgres", () => out.includes("ready"), 10_000);
  } catch (error) {
    child.kill("SIGKILL");
    throw new Error(`${(error as Error).message}: ${out}`);
  }
  return child;
}

Deno.test({
  ...options,
  name:
    "issue 21 item 5: a user's fake postgres on /tmp: not detected, flagged by check, never sent the password",
  fn: async (t) => {
    const { dir, cleanup } = secureDir("fakepg-");
    const port = 54000 + (process.pid % 900);
    const captureDir = mkdtempSync("/tmp/vmsnap-test-capture-");
    chownSync(captureDir, NOBODY, NOBODY);
    const capture = join(captureDir, "password");
    let fake: ChildProcess | undefined;
    const secret = "Pg-Secret-Never-Cleartext";
    try {
      fake = await fakePostgres(port, capture);
      await t.step("init --detect does not propose it", async () => {
        const init = await runBin([
          "init",
          "--detect",
          "--dry-run",
          "--config",
          join(dir, "new.json"),
        ]);
        assert.equal(init.code, 0, init.stderr);
        assert.doesNotMatch(
          init.stdout + init.stderr,
          new RegExp(`PGSQL\\.${port}|"port": ${port}`),
          `a process of nobody named postgres became a plugin entry:\n${init.stdout}`,
        );
      });

      const config = putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "log", "vmsnap.jsonl") },
        plugins: [{
          type: "postgresql",
          name: "pg",
          host: "/tmp",
          port,
          user: "vmsnap",
          passwordFile: put(join(dir, "pg.pw"), `${secret}\n`, 0o600),
        }],
      });
      await t.step("check says the socket is in a directory others can write", async () => {
        const checked = await runBin(["check", "--json", "--config", config]);
        const report = json<{ problems: { message: string }[]; warnings: { message: string }[] }>(
          checked,
        );
        assert.ok(
          [...report.problems, ...report.warnings].some((p) =>
            p.message.includes("/tmp") && /writ/i.test(p.message)
          ),
          `check names /tmp as writable by others: ${checked.stdout}`,
        );
      });

      await t.step("check --connect never sends the password there in cleartext", async () => {
        await runBin(["check", "--connect", "--config", config]);
        const received = existsSync(capture) ? readFileSync(capture, "utf8") : "";
        assert.ok(!received.includes(secret), "the password was sent to the user's fake server");
      });
    } finally {
      fake?.kill("SIGKILL");
      rmSync(`/tmp/.s.PGSQL.${port}`, { force: true });
      rmSync(captureDir, { recursive: true, force: true });
      cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "issue 21 item 9: the metrics textfile: a FIFO does not hang run or the holder; a user's directory on the way is refused",
  fn: async (t) => {
    await t.step("a FIFO at the textfile path: run finishes, says so; check says so", async () => {
      const f = runFixture();
      try {
        const metrics = f.path("metrics");
        mkdirSync(metrics, { mode: 0o755 });
        execFileSync("mkfifo", ["-m", "0644", join(metrics, "vmsnap.prom")]);
        const config = f.config({
          fsFreezeEnabled: false,
          metrics: { textfile: join(metrics, "vmsnap.prom") },
        });
        const t0 = performance.now();
        const ran = await runBin(["run", "--json", "--config", config], { timeoutMs: 25_000 });
        const took = performance.now() - t0;
        assert.notEqual(
          ran.signal,
          "SIGKILL",
          `run hung on the FIFO (killed after ${Math.round(took)} ms)`,
        );
        assert.match(
          ran.stdout + ran.stderr,
          /vmsnap\.prom/,
          "it names the textfile it could not write",
        );
        const checked = await runBin(["check", "--config", config]);
        assert.match(
          checked.stdout,
          /vmsnap\.prom/,
          `check names the textfile:\n${checked.stdout}`,
        );
        await runBin(["recover", "--config", config]);
      } finally {
        f.cleanup();
      }
    });

    await t.step(
      "a FIFO at the textfile path: the holder records, answers the thaw, releases the lock",
      async () => {
        const w = await dbWorld();
        try {
          const metrics = w.f.path("metrics");
          mkdirSync(metrics, { mode: 0o755 });
          execFileSync("mkfifo", ["-m", "0644", join(metrics, "vmsnap.prom")]);
          const config = w.f.config({
            fsFreezeEnabled: false,
            plugins: [w.mysql],
            metrics: { textfile: join(metrics, "vmsnap.prom") },
          });
          assert.equal((await hook("freeze", "vmware", config)).code, 0);
          const thaw = await hook("thaw", "vmware", config, ["--timeout", "10"]);
          assert.equal(thaw.code, 0, `the thaw hook got the result:\n${thaw.stderr}`);
          const ms = await mariadbWrite(w.server.socket, "INSERT INTO app.t VALUES (1)", 5000);
          assert.ok(ms < 5000, "the lock is released");
        } finally {
          await w.cleanup();
        }
      },
    );

    await t.step("the textfile's directory reached through a user's symlink: refused", async () => {
      const { dir, cleanup } = secureDir("metrics-");
      try {
        // A user owns the parent and points "metrics" at a root-only directory.
        const rootOnly = join(dir, "root-only");
        mkdirSync(rootOnly, { mode: 0o700 });
        const userDir = join(dir, "node-exporter");
        mkdirSync(userDir, { mode: 0o755 });
        chownSync(userDir, NOBODY, NOBODY);
        symlinkSync(rootOnly, join(userDir, "metrics"));
        execFileSync("chown", ["-h", `${NOBODY}:${NOBODY}`, join(userDir, "metrics")]);
        const snap = put(join(dir, "snap.sh"), "#!/bin/sh\nexit 0\n", 0o700);
        const config = putConfig(dir, {
          fsFreezeEnabled: false,
          snapshot: { command: [snap] },
          stateDir: join(dir, "state"),
          log: { file: join(dir, "log", "vmsnap.jsonl") },
          metrics: { textfile: join(userDir, "metrics", "vmsnap.prom") },
        });
        const ran = await runBin(["run", "--json", "--config", config]);
        assert.deepEqual(
          readdirSync(rootOnly),
          [],
          "root's write was redirected into a root-only directory through a user's symlink",
        );
        assert.match(ran.stdout + ran.stderr, /InsecureDirectory|node-exporter/, ran.stdout);
        const checked = await runBin(["check", "--config", config]);
        assert.match(
          checked.stdout,
          /node-exporter/,
          `check names the directory:\n${checked.stdout}`,
        );
      } finally {
        cleanup();
      }
    });
  },
});

/** Every entry under a directory (relative paths), directories included. */
function entries(root: string, dir = ""): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() && !e.isSymbolicLink() ? [`${path}/`, ...entries(root, path)] : [path];
  });
}

const KNOB = "/sys/kernel/rcu_expedited";
const knob = () => readFileSync(KNOB, "utf8").trim();

Deno.test({
  ...options,
  name:
    "issue 21 item 14: the agent dies after an administrator set rcu_expedited to 1 during the run: the guard leaves it",
  fn: async () => {
    const found = knob();
    const f = runFixture();
    try {
      writeFileSync(KNOB, "0");
      const snapping = f.path("snapping");
      // During the snapshot (vmsnap has put its 0 back by then), the administrator sets 1.
      const snap = f.script(
        "admin-sets-1.sh",
        `echo 1 > ${KNOB}; touch "${snapping}"; exec sleep 300`,
      );
      const config = f.config({
        freeze: { mounts: [f.mp], expediteRcu: true },
        snapshot: { command: [snap] },
      });
      const run = startBin(["run", "--json", "--config", config]);
      await waitFor("the snapshot", () => existsSync(snapping), 30_000);
      assert.equal(knob(), "1");
      run.child.kill("SIGKILL");
      await run.done;
      await waitFor(
        "the guard's report",
        () => readdirSync(f.path("state")).some((n) => n.startsWith("guard-")),
        10_000,
      );
      assert.equal(knob(), "1", "the guard wrote 0 over the administrator's 1");
    } finally {
      writeFileSync(KNOB, found);
      await runBin(["recover", "--config", f.config({}, "final.json")]);
      f.cleanup();
    }
  },
});
