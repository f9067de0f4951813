/**
 * The external handshake over a character device, as in a VM where the
 * caller's stdin and stdout are the guest's virtio-serial port: a
 * non-seekable, non-tty character device as stdin (a TUN device in a private
 * network namespace, tests/char_stdin.py), and a stdout whose open file
 * description another process shares (vmsnap must not leave it non-blocking:
 * the other process's reads and writes would fail with EAGAIN).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { BIN, codes, resultOf, ROOT, timeToWrite, waitFor } from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";

const O_NONBLOCK = 0o4000;

Deno.test("external handshake with a character device as stdin: snapshot-done is read, and the shared stdout is not left non-blocking", async () => {
  const f = runFixture();
  try {
    const config = f.config({ snapshot: { external: { timeoutInSeconds: 10 } } });
    const child = spawn("unshare", [
      "-n",
      "/usr/bin/python3",
      join(ROOT, "tests", "char_stdin.py"),
      BIN,
      "run",
      "--external",
      "--json",
      "--config",
      config,
    ], { env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const done = new Promise<number | null>((resolve) => child.on("close", resolve));
    const stop = setTimeout(() => child.kill("SIGKILL"), 60_000);
    try {
      await waitFor(
        "the frozen line",
        () => stdout.includes('"frozen"') || child.exitCode !== null,
      );
      assert.ok(stdout.includes('"frozen"'), `${stdout}\n${stderr}`);
      assert.equal(await timeToWrite(f.mp, 300), Infinity, "frozen while it waits");
      child.stdin.write("snapshot-done\n");
      const code = await done;
      const result = resultOf(stdout);
      assert.deepEqual(codes(result), [], `${stdout}\n${stderr}`);
      assert.equal(result.snapshotTaken, true);
      assert.equal(code, 0, stderr);
      const flags = parseInt(/flags=0o([0-7]+)/.exec(stderr)?.[1] ?? "x", 8);
      assert.ok(Number.isInteger(flags), stderr);
      assert.equal(flags & O_NONBLOCK, 0, `stdout left O_NONBLOCK (flags 0o${flags.toString(8)})`);
    } finally {
      clearTimeout(stop);
      child.kill("SIGTERM");
      await done;
    }
  } finally {
    f.cleanup();
  }
});
