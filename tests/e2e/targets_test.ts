/**
 * The cross-compiled binaries: `deno task build --target ...` builds them with
 * checksums beside them; the arm64 binary runs under qemu-user-static
 * (`--version`, and `check` on a sample config with a loop-mounted freeze
 * target, and the freeze pool's worker thread). The musl binary is checked for its interpreter and
 * the libraries it needs (musl's libstdc++, which Debian does not ship, so it is not run:
 * docs/install.md).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { putConfig, ROOT, secureDir } from "../helpers.ts";
import { type LoopFs, makeLoopFs } from "../loop.ts";

const deno = join(ROOT, "node_modules", "deno", "deno");
const QEMU = "/usr/bin/qemu-aarch64-static";
/** Debian's arm64 glibc (libc6-arm64-cross), the loader's prefix under emulation. */
const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";

function build(target: string): string {
  const built = spawnSync(deno, ["run", "-A", "scripts/build.ts", "--target", target], {
    cwd: ROOT,
    encoding: "utf8",
  });
  assert.equal(built.status, 0, `${built.stdout}\n${built.stderr}`);
  return join(ROOT, "dist", `vmsnap-${target}`);
}

function assertChecksum(binary: string): void {
  const [digest, name] = readFileSync(`${binary}.sha256`, "utf8").trim().split(/\s+/);
  assert.equal(name, binary.split("/").at(-1));
  assert.equal(digest, createHash("sha256").update(readFileSync(binary)).digest("hex"));
}

function interpreter(binary: string): string {
  const out = execFileSync("readelf", ["-l", binary], { encoding: "utf8" });
  return out.match(/Requesting program interpreter: ([^\]]+)/)?.[1] ?? "";
}

Deno.test("linux-arm64: built with a checksum, runs --version, check and the freeze pool's worker under qemu", () => {
  const binary = build("linux-arm64");
  assertChecksum(binary);
  assert.equal(interpreter(binary), "/lib/ld-linux-aarch64.so.1");
  const emulate = (args: string[]) =>
    spawnSync(QEMU, ["-L", ARM64_SYSROOT, binary, ...args], {
      encoding: "utf8",
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      timeout: 60_000,
    });
  const version = emulate(["--version"]);
  assert.equal(version.status, 0, version.stderr);
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  assert.equal(version.stdout, `vmsnap ${pkg.version}\n`);

  const { dir, cleanup } = secureDir("arm64-");
  const fs = makeLoopFs({ dir, name: "data" });
  let second: LoopFs | undefined;
  try {
    const config = putConfig(dir, {
      pluginName: "ScriptRunner",
      freeze: { mounts: [fs.mountPoint] },
      stateDir: join(dir, "state"),
      log: { file: join(dir, "log", "vmsnap.jsonl") },
    });
    const check = emulate(["check", "--json", "--config", config]);
    const report = JSON.parse(check.stdout);
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.freezeTargets.map((t: { mountPoint: string }) => t.mountPoint),
      [fs.mountPoint],
    );

    // The freeze pool's worker (a second entrypoint of the bundle) loads in the arm64 binary: with
    // two targets, the syncfs of the second runs on worker thread 1. (Under qemu-user without
    // binfmt_misc the guard, a re-exec of the binary, cannot start, so nothing is frozen here.)
    second = makeLoopFs({ dir, name: "second" });
    const log = join(dir, "log", "pool.jsonl");
    const two = putConfig(dir, {
      pluginName: "ScriptRunner",
      freeze: { mounts: [fs.mountPoint, second.mountPoint] },
      snapshot: { command: ["/bin/true"] },
      stateDir: join(dir, "state"),
      log: { file: log, level: "debug" },
    }, "two.json");
    const ran = emulate(["run", "--json", "--config", two]);
    const synced = readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l))
      .filter((r) => r.event === "syncfs");
    assert.deepEqual(
      synced.map((r) => [r.mount, r.ok, r.thread]),
      [[fs.mountPoint, true, 0], [second.mountPoint, true, 1]],
      ran.stdout + ran.stderr,
    );
  } finally {
    second?.cleanup();
    fs.cleanup();
    cleanup();
  }
});

Deno.test("linux-x64 and linux-x64-musl: built with checksums for their loaders", () => {
  const x64 = build("linux-x64");
  assertChecksum(x64);
  assert.equal(interpreter(x64), "/lib64/ld-linux-x86-64.so.2");
  const ran = spawnSync(x64, ["--version"], { encoding: "utf8" });
  assert.equal(ran.status, 0, ran.stderr);
  const musl = build("linux-x64-musl");
  assertChecksum(musl);
  assert.equal(interpreter(musl), "/lib/ld-musl-x86_64.so.1");
  // docs/install.md says what the musl binary needs at run time (and why it is untested): these.
  const needed = execFileSync("readelf", ["-d", musl], { encoding: "utf8" })
    .split("\n")
    .flatMap((line) => line.match(/\(NEEDED\).*\[(.+)\]/)?.[1] ?? []);
  assert.deepEqual(needed.sort(), ["libc.musl-x86_64.so.1", "libstdc++.so.6"]);
});
