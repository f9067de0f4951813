/**
 * Timing figures, written to bench/RESULTS.md (timing targets live here, not
 * in unit tests). Everything runs on loop filesystems this script makes.
 *
 * Usage (root): deno task bench [--rounds N]
 *
 * @module
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { createFreezer, thawAndConfirm } from "../src/freeze.ts";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const bin = join(root, "dist", "vmsnap");
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { rounds: { type: "string", default: "30" } },
});
const rounds = Number(values.rounds);

if (process.getuid?.() !== 0) {
  console.error("bench freezes loop filesystems: run it as root.");
  process.exit(2);
}
if (!existsSync(bin)) {
  execFileSync(join(root, "node_modules", "deno", "deno"), ["run", "-A", "scripts/build.ts"], {
    cwd: root,
    stdio: "inherit",
  });
}

function stats(samples: number[]): { median: number; p95: number; min: number; max: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { median: at(0.5), p95: at(0.95), min: s[0], max: s.at(-1)! };
}
const fmt = (ms: number) => ms < 10 ? ms.toFixed(2) : ms.toFixed(0);
const rows: string[] = [];
function row(what: string, samples: number[], note = "") {
  const s = stats(samples);
  rows.push(
    `| ${what} | ${samples.length} | ${fmt(s.median)} | ${fmt(s.p95)} | ${fmt(s.min)} | ${
      fmt(s.max)
    } | ${note} |`,
  );
  console.log(`${what}: median ${fmt(s.median)} ms, p95 ${fmt(s.p95)} ms`);
}

mkdirSync("/var/lib/vmsnap-bench", { recursive: true, mode: 0o700 });
const dir = mkdtempSync("/var/lib/vmsnap-bench/b-");
chmodSync(dir, 0o700);
const image = join(dir, "fs.img");
const mp = join(dir, "fs");
let device = "";
try {
  execFileSync("truncate", ["-s", "128M", image]);
  execFileSync("mkfs.ext4", ["-q", "-F", image]);
  device = execFileSync("losetup", ["--find", "--show", image], { encoding: "utf8" }).trim();
  mkdirSync(mp, { mode: 0o700 });
  execFileSync("mount", [device, mp]);

  // 1. Freeze + thaw of an idle filesystem: the ioctl through FFI vs the fsfreeze command.
  for (const method of ["ioctl", "fsfreeze"] as const) {
    const freezer = await createFreezer(method);
    const freeze: number[] = [];
    const thaw: number[] = [];
    for (let i = 0; i < rounds; i++) {
      freeze.push(freezer.freeze(mp).ms);
      thaw.push(freezer.thaw(mp).ms);
    }
    row(`freeze, repeated on a quiet ext4 (${method})`, freeze);
    row(`thaw (${method})`, thaw);
  }
  // 2. Freeze with dirty data: 8 MiB written just before.
  const freezer = await createFreezer("ioctl");
  const dirty: number[] = [];
  for (let i = 0; i < Math.min(rounds, 10); i++) {
    writeFileSync(join(mp, "dirty"), Buffer.alloc(8 << 20, i));
    dirty.push(freezer.freeze(mp).ms);
    thawAndConfirm(freezer, mp);
  }
  row("freeze after writing 8 MiB (ioctl)", dirty, "includes flushing the data");
  // 3. The first freeze after the filesystem sat idle (as in a real nightly run).
  const idle: number[] = [];
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 6000));
    idle.push(freezer.freeze(mp).ms);
    thawAndConfirm(freezer, mp);
  }
  row(
    "freeze after 6 s idle (ioctl)",
    idle,
    "ext4 writes its superblock through the loop device; the cost of the disk, not of vmsnap",
  );

  // 4. A whole `vmsnap run` with a pre/post script and a no-op snapshot command.
  const script = (name: string, body: string) => {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o700);
    return path;
  };
  const config = join(dir, "vmsnap.json");
  writeFileSync(
    config,
    JSON.stringify({
      preScriptLocation: script("pre.sh", "true"),
      postScriptLocation: script("post.sh", "true"),
      freeze: { mounts: [mp] },
      snapshot: { command: [script("snap.sh", "true")] },
      log: { file: join(dir, "log", "vmsnap.jsonl") },
      stateDir: join(dir, "state"),
    }),
  );
  chmodSync(config, 0o600);
  const total: number[] = [];
  const frozen: number[] = [];
  const wall: number[] = [];
  for (let i = 0; i < Math.min(rounds, 15); i++) {
    const started = performance.now();
    const ran = spawnSync(bin, ["run", "--json", "--config", config], { encoding: "utf8" });
    wall.push(performance.now() - started);
    const result = JSON.parse(ran.stdout.trim().split("\n").at(-1)!);
    if (result.exitCode !== 0) throw new Error(`run failed: ${ran.stdout}`);
    total.push(result.durationMs);
    frozen.push(result.freeze.frozenMs);
  }
  row(
    "vmsnap run: frozen window",
    frozen,
    "first freeze of each run pays the idle-superblock write above; then snapshot command, thaw confirmed",
  );
  row(
    "vmsnap run: the run as it reports it",
    total,
    "check → quiesce → freeze → snapshot → thaw → resume",
  );
  row(
    "vmsnap run: wall time of the process",
    wall,
    "including process start of the 100 MiB binary",
  );

  // 5. The agent SIGKILLed while frozen: time until a blocked writer resumes.
  const slow = script("slow.sh", `touch "${join(dir, "snapping")}"; exec sleep 300`);
  const toThaw: number[] = [];
  for (let i = 0; i < Math.min(rounds, 5); i++) {
    rmSync(join(dir, "snapping"), { force: true });
    const agent = spawn(bin, ["run", "--json", "--config", config, "--snapshot-command", slow], {
      stdio: "ignore",
    });
    while (!existsSync(join(dir, "snapping"))) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50));
    const writer = spawn("/bin/sh", ["-c", `echo x > "${mp}/w"`]);
    const killedAt = performance.now();
    process.kill(agent.pid!, "SIGKILL");
    await new Promise((r) => writer.on("exit", r));
    toThaw.push(performance.now() - killedAt);
    spawnSync("pkill", ["-f", slow]);
    await new Promise((r) => setTimeout(r, 100));
  }
  row(
    "agent SIGKILLed while frozen → writer resumes",
    toThaw,
    "the guard sees EOF on the agent's pipe",
  );
} finally {
  spawnSync("fsfreeze", ["--unfreeze", mp], { stdio: "ignore" });
  spawnSync("umount", [mp]);
  if (device) spawnSync("losetup", ["-d", device]);
  rmSync(dir, { recursive: true, force: true });
}

const kernel = execFileSync("uname", ["-r"], { encoding: "utf8" }).trim();
const report = `# Benchmark results

Written by \`deno task bench\` (scripts/bench.ts) on ${
  new Date().toISOString().slice(0, 10)
}: ${cpus().length} cores (${
  cpus()[0]?.model ?? "?"
}), Linux ${kernel}, a 128 MiB ext4 loop filesystem. All times in milliseconds.

| what | n | median | p95 | min | max | note |
| --- | --- | --- | --- | --- | --- | --- |
${rows.join("\n")}
`;
writeFileSync(join(root, "bench", "RESULTS.md"), report);
console.log(`\nwrote bench/RESULTS.md`);
