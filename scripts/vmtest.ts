/**
 * vmsnap inside a real VM: builds (once, cached) a small Debian guest with
 * qemu-guest-agent, MariaDB and PostgreSQL 15, boots it under QEMU (TCG),
 * installs the freshly built dist/vmsnap, and runs the scenarios of
 * tests/vm/cases.ts under write load: the hypervisor's quiesced snapshot
 * through qemu-ga, `vmsnap run --external` freezing the guest's root
 * filesystem with the host snapshotting on its `frozen` event, and vmsnap
 * SIGKILLed while the root is frozen. Then restores each snapshot on the host
 * and checks both databases, and writes docs/VMTEST.md.
 *
 * Usage (root): deno task vmtest [--output docs/VMTEST.md] [--keep]
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Guest } from "../tests/vm/guest.ts";
import { ensureImage, makePayload } from "../tests/vm/image.ts";
import {
  agentFreezeCase,
  type CaseResult,
  holderDeadlineCase,
  installHook,
  killedWhileFrozenCase,
  relayedRunCase,
} from "../tests/vm/cases.ts";
import { openSnapshot, restoreMariaDb, restorePostgres } from "../tests/vm/restore.ts";
import { renderReport, type VmtestRun } from "../tests/vm/report.ts";
import { dbDir } from "../tests/db_servers.ts";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const vmDir = join(root, "tests", "vm");
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    output: { type: "string", default: join(root, "docs", "VMTEST.md") },
    keep: { type: "boolean", default: false },
  },
});
const MEMORY_MIB = 1536;
const CPUS = 2;
/** hook.maxHoldSeconds in the deadline scenario (tests/vm/vmsnap-short-hold.json). */
const SHORT_HOLD_SECONDS = 30;

if (process.getuid?.() !== 0) {
  console.error("vmtest builds an image, mounts snapshots and starts databases: run it as root.");
  process.exit(2);
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const step = (text: string) => console.log(`vmtest: ${text}`);

/** Installs the host tools vmtest needs when one is missing (Debian apt). */
function ensureTools(): void {
  const needed: [string, string][] = [
    ["mmdebstrap", "mmdebstrap"],
    ["qemu-system-x86_64", "qemu-system-x86"],
    ["qemu-img", "qemu-utils"],
  ];
  const missing = needed.filter(([tool]) =>
    spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0
  ).map(([, pkg]) => pkg);
  if (missing.length === 0) return;
  step(`installing ${missing.join(" ")}`);
  execFileSync("apt-get", [
    "-o",
    "DPkg::Lock::Timeout=600",
    "install",
    "-y",
    "-q",
    "--no-install-recommends",
    ...missing,
  ], { stdio: "inherit" });
}

const started = performance.now();
ensureTools();
const image = ensureImage(join(vmDir, "build_image.sh"));
step(
  image.built
    ? `built the guest image in ${secs(image.buildMs)}`
    : `guest image cached in ${image.dir}`,
);
execFileSync(join(root, "node_modules", "deno", "deno"), ["run", "-A", "scripts/build.ts"], {
  cwd: root,
  stdio: "inherit",
});

const work = mkdtempSync("/var/tmp/vmsnap-vmtest-");
const payload = join(work, "payload.img");
makePayload(payload, join(work, "payload"), {
  vmsnap: join(root, "dist", "vmsnap"),
  "writer.sh": join(vmDir, "writer.sh"),
  "relay.sh": join(vmDir, "relay.sh"),
  "setup.sh": join(vmDir, "setup.sh"),
  "vmsnap.json": join(vmDir, "vmsnap.json"),
  "vmsnap-short-hold.json": join(vmDir, "vmsnap-short-hold.json"),
});
const disk = join(work, "disk0.qcow2");
execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.disk, disk]);

const timings: [string, string][] = [];
const cases: CaseResult[] = [];
const guestFacts: string[] = [];
const restores: VmtestRun["restores"] = [];
let failure: Error | undefined;
let guest: Guest | undefined;
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    guest?.kill();
    console.error(`vmtest: ${signal}: QEMU stopped; work directory kept: ${work}`);
    process.exit(130);
  });
}
try {
  step("booting the guest (TCG)");
  const booted = await Guest.boot({
    dir: work,
    disk,
    kernel: image.kernel,
    initrd: image.initrd,
    payload,
    memoryMiB: MEMORY_MIB,
    cpus: CPUS,
  });
  guest = booted.guest;
  step(`guest agent answered after ${secs(booted.bootMs)}`);
  const setupStarted = performance.now();
  const version = await guest.sh(
    "mkdir -p /mnt/p && mount -o ro /dev/disk/by-id/virtio-vmtest-payload /mnt/p && " +
      "cp /mnt/p/setup.sh /run/vmtest-setup.sh && umount /mnt/p && sh /run/vmtest-setup.sh",
    600_000,
  );
  const setupMs = performance.now() - setupStarted;
  const facts = await guest.sh(
    '. /etc/os-release; echo "$PRETTY_NAME"; uname -r; ' +
      "dpkg-query -W -f '${Package} ${Version}\\n' qemu-guest-agent mariadb-server postgresql-15; " +
      "systemd-analyze | head -1; df -h / | tail -1",
  );
  const [os, kernel, ...rest] = facts.trim().split("\n");
  guestFacts.push(
    `${os}, kernel ${kernel}, ${CPUS} vCPUs (TCG, -cpu max), ${MEMORY_MIB} MiB, no network (-nic none)`,
    `packages: ${
      rest.slice(0, 3).join(", ")
    }; ${version.trim()} (dist/vmsnap of this commit, copied in at boot from a read-only payload disk)`,
    `boot: ${rest[3] ?? "?"} (guest clock)`,
    `root: ext4 on /dev/vda (virtio-blk), qcow2 overlay over the cached image; ${rest[4] ?? ""}`,
    `cached image: ${image.dir}/root.qcow2, ${image.sizeMiB} MiB on disk, from ${image.mirror}`,
    "channels: qemu-ga on virtio-serial org.qemu.guest_agent.0, the vmsnap relay on org.vmsnap.relay, QMP; all unix sockets on the host",
  );
  timings.push(["boot → guest agent answers", secs(booted.bootMs)]);
  timings.push(["install vmsnap, wait for both databases", secs(setupMs)]);

  const run = async (name: string, fn: () => Promise<CaseResult>) => {
    step(`scenario: ${name}`);
    const caseStarted = performance.now();
    try {
      const result = await fn();
      cases.push(result);
      timings.push([`scenario: ${result.name}`, secs(performance.now() - caseStarted)]);
    } catch (error) {
      // Stop any write load the scenario left running.
      await guest!.sh("touch /run/vmtest/qga.stop /run/vmtest/run.stop").catch(() => {});
      cases.push({
        name,
        how: "",
        checks: [{ name: "the scenario ran", ok: false, detail: String((error as Error).stack) }],
        figures: [],
      });
    }
  };
  step("vmsnap install --for qemu-ga");
  const installed = await installHook(guest);
  timings.push(["vmsnap install --for qemu-ga (qemu-ga restarted with -F)", secs(installed.ms)]);
  await run("qemu-ga quiesced snapshot", async () => {
    const result = await agentFreezeCase(guest!, work, { hook: true });
    result.checks.unshift(...installed.checks);
    return result;
  });
  await run("vmsnap run relayed", () => relayedRunCase(guest!, work));
  await run("vmsnap SIGKILLed while frozen", () => killedWhileFrozenCase(guest!));
  await run("holder deadline", () => holderDeadlineCase(guest!, SHORT_HOLD_SECONDS));
  await guest.stop();

  const db = dbDir();
  try {
    for (const c of cases) {
      if (!c.snapshot) continue;
      step(`restoring the snapshot of: ${c.name}`);
      const restoreStarted = performance.now();
      const s = c.snapshot;
      try {
        const opened = openSnapshot(s.image, db.dir, s.table);
        try {
          const mariadb = await restoreMariaDb(opened.mountPoint, db.dir, s.table, {
            ackedBefore: s.mysqlAckedBefore,
            slack: s.mysqlSlack,
            gtid: s.gtid,
          });
          const postgres = await restorePostgres(opened.mountPoint, db.dir, s.table, {
            ackedBefore: s.postgresAckedBefore,
            slack: s.postgresSlack,
          });
          restores.push({ caseName: c.name, convertMs: opened.convertMs, mariadb, postgres });
          timings.push([
            `restore: ${c.name} (convert, mount, start both, check)`,
            secs(performance.now() - restoreStarted),
          ]);
          timings.push([`restore: MariaDB started (InnoDB recovery) in`, secs(mariadb.startMs)]);
          timings.push([`restore: PostgreSQL started (WAL redo) in`, secs(postgres.startMs)]);
        } finally {
          opened.cleanup();
        }
      } catch (error) {
        restores.push({ caseName: c.name, convertMs: 0, error: String((error as Error).stack) });
      }
    }
  } finally {
    db.cleanup();
  }
} catch (error) {
  failure = error as Error;
} finally {
  guest?.kill();
}

const totalMs = performance.now() - started;
timings.unshift([
  `guest image build (${image.built ? "this run: cold" : "cached: warm run; cold build took"})`,
  image.buildMs ? secs(image.buildMs) : "unknown",
]);
timings.push([`whole run (${image.built ? "cold" : "warm"})`, secs(totalMs)]);
const allChecks = [
  ...cases.flatMap((c) => c.checks),
  ...restores.flatMap((r) => [...(r.mariadb?.checks ?? []), ...(r.postgres?.checks ?? [])]),
];
const passed = !failure && allChecks.length > 0 && allChecks.every((c) => c.ok) &&
  restores.every((r) => !r.error) && restores.length === 2;
const commit = spawnSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" })
  .stdout.trim();
const report = renderReport({
  date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
  commit,
  guest: guestFacts,
  timings,
  cases,
  restores,
  passed,
});
writeFileSync(values.output!, report);
console.log(report);
if (failure) console.error(`vmtest: ${failure.stack}`);
if (passed && !values.keep) rmSync(work, { recursive: true, force: true });
else console.log(`vmtest: work directory kept: ${work}`);
console.log(`vmtest: ${passed ? "passed" : "FAILED"} in ${secs(totalMs)}`);
process.exit(passed ? 0 : 1);
