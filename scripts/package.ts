/**
 * Builds the Debian package `dist/vmsnap_<version>_<arch>.deb` with dpkg-deb:
 * the binary in /usr/bin, the man page and bash completion (generated from
 * the command table), the systemd units (the timer installed disabled), an
 * example config and the reference under /usr/share/doc/vmsnap/,
 * /var/lib/vmsnap and /var/log/vmsnap created 0700, /etc/default/vmsnap as a
 * conffile. A SHA-256 file is written beside the package.
 *
 * Usage: deno task package [--target linux-x64|linux-arm64] [--binary PATH]
 *                          [--format deb|rpm|all] [--compress gzip|xz] [--outdir DIR]
 *
 * `--format rpm` builds `vmsnap-<version>-1.<arch>.rpm` from the same files
 * with rpmbuild.
 *
 * Without --binary, the target's binary is built first (`deno task build`).
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { bashCompletion, manPage } from "../src/cli/manual.ts";
import { VERSION } from "../src/version.ts";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
const packaging = join(root, "packaging");

/** Debian's name for each target's architecture. */
const ARCH: Record<string, string> = { "linux-x64": "amd64", "linux-arm64": "arm64" };

/** The maintainer named in the control file and the changelog. */
const MAINTAINER = "vmsnap maintainers <vmsnap@users.noreply.github.com>";

/** The time of the last commit (reproducible output), else now. */
function buildTime(): Date {
  const epoch = process.env.SOURCE_DATE_EPOCH ??
    spawnSync("git", ["log", "-1", "--format=%ct"], { cwd: root, encoding: "utf8" }).stdout
      ?.trim();
  return epoch ? new Date(Number(epoch) * 1000) : new Date();
}

/** Writes a file under the package tree with a mode, creating its directories (0755). */
function put(tree: string, path: string, content: string | Uint8Array, mode: number): void {
  const file = join(tree, path);
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  writeFileSync(file, content);
  chmodSync(file, mode);
}

/** gzip -9n: no name, no time stamp (reproducible, as Debian wants). */
const gzip = (data: string | Uint8Array) => gzipSync(data, { level: 9 });

/** The RFC 2822 date of a Debian changelog entry. */
function changelogDate(date: Date): string {
  return date.toUTCString().replace("GMT", "+0000");
}

/** Sets every directory of the tree to 0755, except the given ones. */
function fixDirectoryModes(tree: string, except: Record<string, number>): void {
  const walk = (dir: string) => {
    const relative = dir.slice(tree.length) || "/";
    chmodSync(dir, except[relative] ?? 0o755);
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(dir, entry.name));
    }
  };
  walk(tree);
}

/** The total size of the files, in KiB, for Installed-Size. */
function installedKiB(dir: string): number {
  let bytes = 0;
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else bytes += statSync(path).size;
    }
  };
  walk(dir);
  return Math.ceil(bytes / 1024);
}

/** The description both packages carry (first line: the summary). */
const DESCRIPTION = [
  "application-consistent snapshots for Linux VMs",
  "vmsnap quiesces the applications of a VM (pre/post scripts, MySQL and",
  "MariaDB, PostgreSQL, MongoDB), freezes its filesystems under a guard",
  "process, has the snapshot taken, thaws and resumes, and reports the",
  "consistency the snapshot has. It reads Azure Backup's pre/post-script",
  "config and can be called as a hook by the guest agents of qemu, VMware,",
  "Azure, Google Cloud and AWS. The package ships a systemd timer, disabled",
  "until the admin enables it.",
];

/**
 * Lays out what both packages install: the binary, the man page and the
 * completion, the units (under `unitDir`), /etc/default/vmsnap, the docs
 * and the example, the 0700 state and log directories.
 */
function stageFiles(tree: string, options: { binary: string; when: Date; unitDir: string }): void {
  put(tree, "usr/bin/vmsnap", readFileSync(options.binary), 0o755);
  const date = options.when.toISOString().slice(0, 10);
  put(tree, "usr/share/man/man1/vmsnap.1.gz", gzip(manPage({ date })), 0o644);
  put(tree, "usr/share/bash-completion/completions/vmsnap", bashCompletion(), 0o644);
  for (const unit of ["vmsnap.service", "vmsnap.timer"]) {
    put(tree, `${options.unitDir}/${unit}`, readFileSync(join(packaging, unit)), 0o644);
  }
  put(tree, "etc/default/vmsnap", readFileSync(join(packaging, "default")), 0o644);
  const doc = "usr/share/doc/vmsnap";
  put(tree, `${doc}/copyright`, readFileSync(join(packaging, "deb", "copyright")), 0o644);
  put(
    tree,
    `${doc}/examples/VMSnapshotScriptPluginConfig.json`,
    readFileSync(join(packaging, "VMSnapshotScriptPluginConfig.example.json")),
    0o644,
  );
  // The schedule without systemd (OpenRC, sysvinit): the cron job and its settings, to copy.
  for (const name of ["vmsnap-cron", "vmsnap.confd"]) {
    put(tree, `${doc}/examples/${name}`, readFileSync(join(packaging, "openrc", name)), 0o644);
  }
  for (const name of ["install.md", "operations.md", "vmsnap.schema.json"]) {
    try {
      put(tree, `${doc}/${name}`, readFileSync(join(root, "docs", name)), 0o644);
    } catch {
      // Not written yet.
    }
  }
  mkdirSync(join(tree, "var/lib/vmsnap"), { recursive: true });
  mkdirSync(join(tree, "var/log/vmsnap"), { recursive: true });
}

/** Writes `<file>.sha256` in `sha256sum -c` format. */
function writeChecksum(file: string): void {
  const digest = createHash("sha256").update(readFileSync(file)).digest("hex");
  writeFileSync(`${file}.sha256`, `${digest}  ${file.split("/").at(-1)}\n`);
}

/**
 * Builds the package and returns its path.
 *
 * @example
 * ```ts
 * import { buildDeb } from "./package.ts";
 * const deb = buildDeb({ target: "linux-x64", binary: "dist/vmsnap", outdir: "dist" });
 * ```
 */
export function buildDeb(
  options: { target: string; binary: string; outdir: string; compress?: "gzip" | "xz" },
): string {
  const arch = ARCH[options.target];
  const when = buildTime();
  const tree = mkdtempSync(join(tmpdir(), "vmsnap-deb-"));
  try {
    stageFiles(tree, { binary: options.binary, when, unitDir: "lib/systemd/system" });
    put(
      tree,
      "usr/share/doc/vmsnap/changelog.gz",
      gzip(
        `vmsnap (${VERSION}) unstable; urgency=medium\n\n  * vmsnap ${VERSION}.\n\n -- ${MAINTAINER}  ${
          changelogDate(when)
        }\n`,
      ),
      0o644,
    );
    put(
      tree,
      "usr/share/lintian/overrides/vmsnap",
      readFileSync(join(packaging, "deb", "lintian-overrides")),
      0o644,
    );

    const control = [
      "Package: vmsnap",
      `Version: ${VERSION}`,
      `Architecture: ${arch}`,
      `Maintainer: ${MAINTAINER}`,
      `Installed-Size: ${installedKiB(tree)}`,
      // The binary needs glibc 2.17 (objdump -T); util-linux (fsfreeze) is essential.
      "Depends: libc6 (>= 2.17)",
      "Suggests: prometheus-node-exporter",
      "Section: admin",
      "Priority: optional",
      `Description: ${DESCRIPTION[0]}`,
      ...DESCRIPTION.slice(1).map((line) => ` ${line}`),
      "",
    ].join("\n");
    put(tree, "DEBIAN/control", control, 0o644);
    put(tree, "DEBIAN/conffiles", "/etc/default/vmsnap\n", 0o644);
    for (const script of ["postinst", "prerm", "postrm"]) {
      put(tree, `DEBIAN/${script}`, readFileSync(join(packaging, "deb", script)), 0o755);
    }
    fixDirectoryModes(tree, { "/var/lib/vmsnap": 0o700, "/var/log/vmsnap": 0o700 });

    mkdirSync(options.outdir, { recursive: true });
    const deb = join(options.outdir, `vmsnap_${VERSION}_${arch}.deb`);
    execFileSync("dpkg-deb", [
      "--root-owner-group",
      `-Z${options.compress ?? "gzip"}`,
      "-z6",
      "--build",
      tree,
      deb,
    ], {
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, SOURCE_DATE_EPOCH: String(Math.floor(when.getTime() / 1000)) },
    });
    writeChecksum(deb);
    return deb;
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}

/** RPM's name for each target's architecture. */
const RPM_ARCH: Record<string, string> = { "linux-x64": "x86_64", "linux-arm64": "aarch64" };

/**
 * Builds `vmsnap-<version>-1.<arch>.rpm` with rpmbuild (Debian's `rpm`
 * package), from the same files as the .deb: units under
 * /usr/lib/systemd/system, /etc/default/vmsnap as `%config(noreplace)`, the
 * state and log directories 0700; `%post` restores their SELinux labels,
 * `%preun` on erase undoes the agents' hooks `vmsnap install` put in place.
 * Returns its path.
 *
 * @example
 * ```ts
 * import { buildRpm } from "./package.ts";
 * const rpm = buildRpm({ target: "linux-x64", binary: "dist/vmsnap", outdir: "dist" });
 * ```
 */
export function buildRpm(options: { target: string; binary: string; outdir: string }): string {
  const arch = RPM_ARCH[options.target];
  const when = buildTime();
  const work = mkdtempSync(join(tmpdir(), "vmsnap-rpm-"));
  try {
    const tree = join(work, "root");
    mkdirSync(tree);
    stageFiles(tree, { binary: options.binary, when, unitDir: "usr/lib/systemd/system" });
    const systemd = (command: string) =>
      `if [ -d /run/systemd/system ]; then ${command} >/dev/null 2>&1 || :; fi`;
    const spec = [
      "Name: vmsnap",
      `Version: ${VERSION}`,
      "Release: 1",
      `Summary: ${DESCRIPTION[0]}`,
      "License: MIT",
      // The binary needs glibc 2.17; nothing else is looked for in it.
      "Requires: glibc >= 2.17",
      "AutoReqProv: no",
      // A Bun binary carries its application appended: no strip, no build-id links.
      "%define __os_install_post %{nil}",
      "%define _build_id_links none",
      "%define debug_package %{nil}",
      "%description",
      ...DESCRIPTION.slice(1),
      "%install",
      `cp -a ${tree}/. %{buildroot}/`,
      "%files",
      "%attr(0755,root,root) /usr/bin/vmsnap",
      "/usr/share/man/man1/vmsnap.1.gz",
      "/usr/share/bash-completion/completions/vmsnap",
      "/usr/lib/systemd/system/vmsnap.service",
      "/usr/lib/systemd/system/vmsnap.timer",
      "%config(noreplace) /etc/default/vmsnap",
      "/usr/share/doc/vmsnap",
      "%dir %attr(0700,root,root) /var/lib/vmsnap",
      "%dir %attr(0700,root,root) /var/log/vmsnap",
      // The timer stays as the admin left it (installed disabled); on erase it is stopped.
      "%post",
      systemd("systemctl daemon-reload"),
      // SELinux labels what the package installs as the policy says (the binary bin_t, the
      // state and log directories var_lib_t and var_log_t), whatever rpm's own labelling did.
      "if command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled; then",
      "  restorecon -R /usr/bin/vmsnap /var/lib/vmsnap /var/log/vmsnap >/dev/null 2>&1 || :",
      "fi",
      "%preun",
      `if [ $1 -eq 0 ]; then ${systemd("systemctl stop vmsnap.timer")}; fi`,
      // On erase, the hooks vmsnap install put in place (they call this binary) are undone.
      "if [ $1 -eq 0 ]; then",
      "  for manifest in /var/backups/vmsnap/*.json; do",
      '    [ -f "$manifest" ] || continue',
      '    /usr/bin/vmsnap uninstall --for "$(basename "$manifest" .json)" || :',
      "  done",
      "fi",
      "%postun",
      systemd("systemctl daemon-reload"),
      "",
    ].join("\n");
    writeFileSync(join(work, "vmsnap.spec"), spec);
    execFileSync("rpmbuild", [
      "-bb",
      "--quiet",
      "--target",
      `${arch}-linux`,
      "--define",
      `_topdir ${join(work, "top")}`,
      "--define",
      // gzip -6: fast to build, readable by every rpm; xz/zstd save ~25% and cost minutes.
      "_binary_payload w6.gzdio",
      join(work, "vmsnap.spec"),
    ], {
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, SOURCE_DATE_EPOCH: String(Math.floor(when.getTime() / 1000)) },
    });
    const name = `vmsnap-${VERSION}-1.${arch}.rpm`;
    mkdirSync(options.outdir, { recursive: true });
    const rpm = join(options.outdir, name);
    writeFileSync(rpm, readFileSync(join(work, "top", "RPMS", arch, name)));
    writeChecksum(rpm);
    return rpm;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      target: { type: "string", default: "linux-x64" },
      binary: { type: "string" },
      compress: { type: "string", default: "gzip" },
      format: { type: "string", default: "deb" },
      outdir: { type: "string", default: join(root, "dist") },
    },
  });
  const target = values.target!;
  if (!ARCH[target]) {
    console.error(`--target must be one of ${Object.keys(ARCH).join(", ")}`);
    process.exit(64);
  }
  if (!["deb", "rpm", "all"].includes(values.format!)) {
    console.error("--format must be deb, rpm or all");
    process.exit(64);
  }
  if (values.compress !== "gzip" && values.compress !== "xz") {
    console.error("--compress must be gzip or xz");
    process.exit(64);
  }
  let binary = values.binary;
  if (!binary) {
    const deno = join(root, "node_modules", "deno", "deno");
    const built = spawnSync(deno, ["run", "-A", "scripts/build.ts", "--target", target], {
      cwd: root,
      stdio: "inherit",
    });
    if (built.status !== 0) process.exit(1);
    binary = join(root, "dist", `vmsnap-${target}`);
  }
  const compress = values.compress as "gzip" | "xz";
  const builders = {
    deb: () => buildDeb({ target, binary, outdir: values.outdir!, compress }),
    rpm: () => buildRpm({ target, binary, outdir: values.outdir! }),
  };
  for (
    const format of values.format === "all"
      ? ["deb", "rpm"] as const
      : [values.format as "deb" | "rpm"]
  ) {
    const started = performance.now();
    const file = builders[format]();
    console.log(
      `built ${file} (${(statSync(file).size / 1048576).toFixed(1)} MiB) in ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s`,
    );
  }
}
