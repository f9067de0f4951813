/**
 * The short commands write with write(2) instead of Bun's stdout stream (start-up, issue 12):
 * their output must still arrive whole when stdout is a non-blocking pipe that is full (EAGAIN:
 * vmsnap waits for the reader, as a blocking write would) and when the reader went away (EPIPE:
 * dropped, exit code kept), through the compiled binary.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { BIN, put, putConfig, secureDir } from "../helpers.ts";

// A full, non-blocking pipe as stdout, drained half a second after the binary started.
const FULL_PIPE = `
import fcntl, os, subprocess, sys, time
r, w = os.pipe()
fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
filler = 0
for size in (4096, 1):
    try:
        while True:
            filler += os.write(w, b"f" * size)
    except BlockingIOError:
        pass
child = subprocess.Popen(sys.argv[1:], stdout=w, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
os.close(w)
time.sleep(0.5)  # the child finds the pipe full and must wait for this reader
out = b""
while True:
    chunk = os.read(r, 65536)
    if not chunk:
        break
    out += chunk
child.wait()
sys.stdout.write(f"{child.returncode} {filler}\\n")
sys.stdout.buffer.write(out[filler:])
`;

Deno.test("a short command's output arrives whole through a full non-blocking pipe (EAGAIN)", () => {
  const alone = spawnSync(BIN, ["--help"], { encoding: "utf8" });
  assert.equal(alone.status, 0);
  const ran = spawnSync("/usr/bin/python3", ["-c", FULL_PIPE, BIN, "--help"], {
    encoding: "utf8",
    timeout: 30_000,
  });
  const [head, ...rest] = ran.stdout.split("\n");
  assert.equal(head.split(" ")[0], "0", ran.stderr);
  assert.equal(rest.join("\n"), alone.stdout, "the whole help, in order, after the filler");
});

Deno.test("a reader that went away (EPIPE): the short command still exits 0, quietly", () => {
  // The reader closes the pipe before vmsnap writes: its write(2) gets EPIPE.
  const ran = spawnSync("/bin/bash", [
    "-c",
    `"${BIN}" --help 2>/dev/null | { exec 0<&-; sleep 0.3; }; echo "\${PIPESTATUS[0]}"`,
  ], { encoding: "utf8" });
  assert.equal(ran.stdout.trim(), "0", ran.stderr);
});

Deno.test("run --json: the result line arrives through a full non-blocking pipe read late", () => {
  const { dir, cleanup } = secureDir("output-");
  try {
    const script = (name: string) => put(join(dir, name), "#!/bin/sh\ntrue\n", 0o700);
    const config = putConfig(dir, {
      preScriptLocation: script("pre.sh"),
      postScriptLocation: script("post.sh"),
      fsFreezeEnabled: false,
      snapshot: { command: [script("snap.sh")] },
      stateDir: join(dir, "state"),
      log: { file: join(dir, "log", "vmsnap.jsonl") },
    });
    const ran = spawnSync("/usr/bin/python3", [
      "-c",
      FULL_PIPE,
      BIN,
      "run",
      "--json",
      "--config",
      config,
    ], { encoding: "utf8", timeout: 30_000 });
    const [head, ...rest] = ran.stdout.split("\n");
    assert.equal(head.split(" ")[0], "0", ran.stderr);
    const last = JSON.parse(rest.join("\n").trim().split("\n").at(-1)!);
    assert.equal(last.event, "result");
    assert.equal(last.exitCode, 0);
  } finally {
    cleanup();
  }
});
