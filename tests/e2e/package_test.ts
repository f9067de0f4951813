/**
 * The Debian package, built from `dist/vmsnap` by `deno task package`:
 * lintian finds no error; it installs with `dpkg -i` into a clean root (its
 * own dpkg database, holding only libc6, the package's one dependency; the
 * maintainer scripts run without chroot through DPKG_ROOT, so nothing on this
 * shared machine is touched and no unit is ever enabled or started); the
 * installed binary checks the example config; `systemd-analyze verify` accepts
 * the units; the man page renders without warnings; an upgrade over itself
 * keeps the admin's conffile; remove keeps it, purge removes it with the state
 * and the logs.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, put, ROOT, secureDir } from "../helpers.ts";

const deno = join(ROOT, "node_modules", "deno", "deno");
const VERSION = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;

/** Runs a command to completion without blocking the event loop. */
function run(command: string, args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(command, args, {
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A root with an empty dpkg database but for libc6 (this machine's record of it). */
function cleanRoot(root: string): void {
  const admin = join(root, "var/lib/dpkg");
  mkdirSync(join(admin, "info"), { recursive: true });
  mkdirSync(join(admin, "updates"), { recursive: true });
  const libc = execFileSync("dpkg-query", ["--status", "libc6"], { encoding: "utf8" });
  writeFileSync(join(admin, "status"), `${libc.trim()}\n\n`);
  writeFileSync(join(admin, "available"), "");
  const arch = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();
  writeFileSync(join(admin, "info", `libc6:${arch}.list`), "");
}

const dpkg = (root: string, ...args: string[]) => {
  const ran = spawnSync("dpkg", [`--root=${root}`, "--force-script-chrootless", ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 120_000,
  });
  assert.equal(ran.status, 0, `dpkg ${args.join(" ")}:\n${ran.stdout}\n${ran.stderr}`);
  return ran.stdout;
};

const mode = (path: string) => statSync(path).mode & 0o7777;

/** The installed binary checks the installed example, copied into place as the docs say. */
async function checkExample(root: string): Promise<void> {
  const config = put(
    join(root, "etc/azure/VMSnapshotScriptPluginConfig.json"),
    readFileSync(
      join(root, "usr/share/doc/vmsnap/examples/VMSnapshotScriptPluginConfig.json"),
      "utf8",
    ),
    0o600,
  );
  const check = await run(join(root, "usr/bin/vmsnap"), ["check", "--json", "--config", config]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.equal(JSON.parse(check.stdout).ok, true);
}

Deno.test("the .deb: lintian, install, check, units, man page, upgrade, remove, purge", async () => {
  const { dir, cleanup } = secureDir("deb-");
  try {
    const built = spawnSync(
      deno,
      ["run", "-A", "scripts/package.ts", "--binary", BIN, "--outdir", dir],
      { cwd: ROOT, encoding: "utf8" },
    );
    assert.equal(built.status, 0, built.stdout + built.stderr);
    const deb = join(dir, `vmsnap_${VERSION}_amd64.deb`);
    assert.ok(existsSync(`${deb}.sha256`));
    // lintian takes a while: it runs while the package is installed and exercised.
    const lintian = run("lintian", ["--tag-display-limit", "0", deb]);

    const root = join(dir, "root");
    cleanRoot(root);
    dpkg(root, "-i", deb);
    const at = (path: string) => join(root, path);
    assert.equal(mode(at("usr/bin/vmsnap")), 0o755);
    assert.equal(mode(at("var/lib/vmsnap")), 0o700);
    assert.equal(mode(at("var/log/vmsnap")), 0o700);
    for (
      const file of [
        "usr/share/man/man1/vmsnap.1.gz",
        "usr/share/bash-completion/completions/vmsnap",
        "lib/systemd/system/vmsnap.service",
        "lib/systemd/system/vmsnap.timer",
        "usr/share/doc/vmsnap/copyright",
        "usr/share/doc/vmsnap/changelog.gz",
        "usr/share/doc/vmsnap/examples/VMSnapshotScriptPluginConfig.json",
        "usr/share/doc/vmsnap/examples/vmsnap-cron",
        "usr/share/doc/vmsnap/examples/vmsnap.confd",
      ]
    ) assert.ok(existsSync(at(file)), file);
    const conffiles = execFileSync("dpkg-query", [
      `--admindir=${at("var/lib/dpkg")}`,
      "--showformat=${Conffiles}",
      "--show",
      "vmsnap",
    ], { encoding: "utf8" });
    assert.match(conffiles, /^ \/etc\/default\/vmsnap [0-9a-f]{32}$/m);
    // Installed disabled: nothing wants the timer.
    assert.ok(!existsSync(at("etc/systemd/system/timers.target.wants/vmsnap.timer")));

    await checkExample(root);

    // The units, against systemd's own units (copied into the root) and the man page.
    cpSync("/lib/systemd/system", at("lib/systemd/system"), { recursive: true, force: false });
    const verify = await run("systemd-analyze", [
      "verify",
      `--root=${root}`,
      "/lib/systemd/system/vmsnap.service",
      "/lib/systemd/system/vmsnap.timer",
    ], { MANPATH: at("usr/share/man") });
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stderr, "", "systemd-analyze verify warnings");

    const man = await run("man", ["--warnings", "-l", at("usr/share/man/man1/vmsnap.1.gz")], {
      MANWIDTH: "80",
    });
    assert.equal(man.code, 0, man.stderr);
    assert.equal(man.stderr, "", "man page warnings");
    assert.match(man.stdout, /vmsnap check/);
    const completion = spawnSync("bash", [
      "-n",
      at("usr/share/bash-completion/completions/vmsnap"),
    ]);
    assert.equal(completion.status, 0, String(completion.stderr));
    // The installed completion offers hook's events and the agents, as the admin's bash would.
    const complete = (...words: string[]) => {
      const ran = spawnSync("bash", [
        "--norc",
        "-c",
        `. "$1"
COMP_WORDS=("\${@:2}"); COMP_CWORD=$(($# - 2)); _vmsnap; printf '%s\\n' "\${COMPREPLY[@]}"`,
        "-",
        at("usr/share/bash-completion/completions/vmsnap"),
        ...words,
      ], { encoding: "utf8" });
      assert.equal(ran.status, 0, ran.stderr);
      return ran.stdout.split("\n").filter(Boolean).sort();
    };
    assert.deepEqual(complete("vmsnap", "hook", "fr"), ["freeze", "freezeFail"]);
    assert.deepEqual(complete("vmsnap", "hook", "--for", "q"), ["qemu-ga"]);
    assert.deepEqual(complete("vmsnap", "hook", "--for", "aws", "po"), ["post"]);

    // The admin's settings survive an upgrade; the state stays until purge.
    const defaults = at("etc/default/vmsnap");
    writeFileSync(defaults, `${readFileSync(defaults, "utf8")}VMSNAP_RUN_ARGS=--json\n`);
    writeFileSync(at("var/lib/vmsnap/last-result.json"), "{}\n");
    dpkg(root, "-i", deb);
    assert.match(readFileSync(defaults, "utf8"), /^VMSNAP_RUN_ARGS=--json$/m);
    assert.equal(mode(at("var/lib/vmsnap")), 0o700);

    // A hook installed for an agent calls this binary: remove undoes it (the agent's files back).
    const hooked = await run(at("usr/bin/vmsnap"), ["install", "--for", "vmware", "--root", root]);
    assert.equal(hooked.code, 0, hooked.stderr);
    assert.ok(existsSync(at("etc/vmware-tools/backupScripts.d/vmsnap")));
    dpkg(root, "--remove", "vmsnap");
    assert.ok(!existsSync(at("usr/bin/vmsnap")));
    assert.ok(!existsSync(at("etc/vmware-tools")), "remove undid the vmware hook install made");
    assert.ok(!existsSync(at("var/backups/vmsnap")), "and its record");
    assert.ok(existsSync(defaults), "remove keeps the conffile");
    assert.ok(existsSync(at("var/lib/vmsnap/last-result.json")), "remove keeps the state");
    dpkg(root, "--purge", "vmsnap");
    assert.ok(!existsSync(defaults), "purge removes the conffile");
    assert.ok(!existsSync(at("var/lib/vmsnap")), "purge removes the state");
    assert.ok(!existsSync(at("var/log/vmsnap")), "purge removes the logs");
    const status = spawnSync("dpkg-query", [`--admindir=${at("var/lib/dpkg")}`, "-W", "vmsnap"]);
    assert.notEqual(status.status, 0, "dpkg still knows vmsnap after purge");

    const linted = await lintian;
    const errors = `${linted.stdout}${linted.stderr}`.split("\n").filter((l) => /^E: /.test(l));
    assert.deepEqual(errors, [], linted.stdout);
  } finally {
    cleanup();
  }
});

Deno.test("the .rpm: same files, installs into a clean rpm root, upgrade keeps the conffile, erase", async () => {
  const { dir, cleanup } = secureDir("rpm-");
  try {
    const built = spawnSync(
      deno,
      ["run", "-A", "scripts/package.ts", "--binary", BIN, "--format", "rpm", "--outdir", dir],
      { cwd: ROOT, encoding: "utf8" },
    );
    assert.equal(built.status, 0, built.stdout + built.stderr);
    const pkg = join(dir, `vmsnap-${VERSION}-1.x86_64.rpm`);
    assert.ok(existsSync(`${pkg}.sha256`));
    const scripts = execFileSync("rpm", ["-qp", "--scripts", pkg], { encoding: "utf8" });
    assert.match(scripts, /preuninstall scriptlet[\s\S]*systemctl stop vmsnap\.timer/);
    assert.match(
      scripts,
      /preuninstall scriptlet[\s\S]*\/usr\/bin\/vmsnap uninstall --for "\$\(basename "\$manifest" \.json\)"/,
    );
    assert.match(
      scripts,
      /postinstall scriptlet[\s\S]*selinuxenabled; then\n +restorecon -R \/usr\/bin\/vmsnap \/var\/lib\/vmsnap \/var\/log\/vmsnap/,
    );
    assert.doesNotMatch(scripts, /\benable\b/, "the timer is never enabled by the package");

    // A clean rpm database; no dependency is installed in it, and the scriptlets would run
    // chrooted into a root without /bin/sh: --nodeps --noscripts.
    const root = join(dir, "root");
    const rpm = (...args: string[]) => {
      const ran = spawnSync("rpm", [`--root=${root}`, ...args], { encoding: "utf8" });
      assert.equal(ran.status, 0, `rpm ${args.join(" ")}:\n${ran.stdout}\n${ran.stderr}`);
      return ran.stdout;
    };
    mkdirSync(root);
    rpm("--initdb");
    rpm("-i", "--nodeps", "--noscripts", pkg);
    const at = (path: string) => join(root, path);
    assert.equal(mode(at("usr/bin/vmsnap")), 0o755);
    assert.equal(mode(at("var/lib/vmsnap")), 0o700);
    assert.equal(mode(at("var/log/vmsnap")), 0o700);
    assert.ok(existsSync(at("usr/lib/systemd/system/vmsnap.timer")));
    assert.match(rpm("-qc", "vmsnap"), /^\/etc\/default\/vmsnap$/m);
    await checkExample(root);

    const defaults = at("etc/default/vmsnap");
    writeFileSync(defaults, `${readFileSync(defaults, "utf8")}VMSNAP_RUN_ARGS=--json\n`);
    rpm("-U", "--replacepkgs", "--nodeps", "--noscripts", pkg);
    assert.match(readFileSync(defaults, "utf8"), /^VMSNAP_RUN_ARGS=--json$/m);
    rpm("-e", "--nodeps", "--noscripts", "vmsnap");
    assert.ok(!existsSync(at("usr/bin/vmsnap")));
    assert.match(readFileSync(`${defaults}.rpmsave`, "utf8"), /^VMSNAP_RUN_ARGS=--json$/m);
    assert.notEqual(spawnSync("rpm", [`--root=${root}`, "-q", "vmsnap"]).status, 0);
  } finally {
    cleanup();
  }
});
