/**
 * Builds the single binary from `mod.ts`: with `bun build --compile`, or with
 * `deno compile` when `DENORT_BIN` names a Deno runtime (deno compile cannot
 * download one here). Each binary gets a SHA-256 checksum file beside it
 * (`sha256sum -c` reads it).
 *
 * Usage: deno task build [--target TARGET]... [--outfile PATH]
 *
 *   (no --target)            dist/vmsnap for this machine
 *   --target linux-x64       dist/vmsnap-linux-x64
 *   --target linux-arm64     dist/vmsnap-linux-arm64 (Graviton, Ampere, Cobalt)
 *   --target linux-x64-musl  dist/vmsnap-linux-x64-musl (Alpine)
 *   --target all             the three
 *
 * Cross-compiling needs the target's Bun runtime: it is the npm package
 * `@oven/bun-<platform>` of the same version as the Bun that builds, fetched
 * with `npm pack` from the npm registry, verified against the integrity that
 * package-lock.json records for it, and cached under ~/.cache/vmsnap.
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { writeBundlerTsconfig } from "./bun/overrides.ts";

const root = join(dirname(new URL(import.meta.url).pathname), "..");

/** The targets: Bun's `--target` name and the npm package of its runtime. */
export const TARGETS = {
  "linux-x64": { bun: "bun-linux-x64", runtime: "@oven/bun-linux-x64", debArch: "amd64" },
  "linux-arm64": { bun: "bun-linux-arm64", runtime: "@oven/bun-linux-aarch64", debArch: "arm64" },
  "linux-x64-musl": {
    bun: "bun-linux-x64-musl",
    runtime: "@oven/bun-linux-x64-musl",
    debArch: "amd64",
  },
} as const;
/** A target name. */
export type Target = keyof typeof TARGETS;

const bin = (name: string) =>
  join(root, "node_modules", ...(name === "bun" ? ["bun", "bin", "bun.exe"] : ["deno", "deno"]));

/** The lockfile's version and integrity of an npm package. */
function locked(name: string): { version: string; integrity: string } {
  const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8"));
  const entry = lock.packages?.[`node_modules/${name}`];
  if (!entry?.version || !entry?.integrity) {
    throw new Error(
      `package-lock.json has no entry for ${name}. Fix: npm install (it is an optional dependency of bun).`,
    );
  }
  return { version: entry.version, integrity: entry.integrity };
}

/**
 * The path of the target's Bun runtime: this machine's Bun when it is that
 * runtime, else the npm package, fetched once and verified.
 */
function runtimeFor(target: Target): string | undefined {
  const pkg = TARGETS[target].runtime;
  // The installed Bun is the native runtime: no download needed.
  const installed = join(root, "node_modules", ...pkg.split("/"), "bin", "bun");
  if (existsSync(installed)) return installed;
  const { version, integrity } = locked(pkg);
  const cache = join(
    process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"),
    "vmsnap",
    "bun-runtimes",
    `${basename(pkg)}-${version}`,
  );
  const runtime = join(cache, "bun");
  if (existsSync(runtime)) return runtime;
  mkdirSync(dirname(cache), { recursive: true });
  const work = mkdtempSync(`${cache}.tmp-`);
  try {
    const packed = JSON.parse(execFileSync("npm", [
      "pack",
      `${pkg}@${version}`,
      "--json",
      "--silent",
      "--pack-destination",
      work,
    ], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }));
    const tarball = join(work, packed[0].filename);
    const [algorithm, expected] = integrity.split(/-(.*)/s);
    const actual = createHash(algorithm).update(readFileSync(tarball)).digest("base64");
    if (actual !== expected) {
      throw new Error(
        `${pkg}@${version}: the tarball's ${algorithm} is ${actual}, package-lock.json says ${expected}. Refusing to build with it.`,
      );
    }
    execFileSync("tar", ["-xzf", tarball, "-C", work, "package/bin/bun"]);
    mkdirSync(cache, { recursive: true });
    renameSync(join(work, "package", "bin", "bun"), runtime);
    return runtime;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * How Bun compiles the binary (the bench compiles its hello world with the same flags).
 * Bytecode: no parse of the bundle at start (issue 12; ESM, for mod.ts's top-level await).
 * Splitting: a dynamically imported module's node builtins (net, tls, readline, stream,
 * crypto: ~1-2 ms each) load when it does, not at every start (bench/RESULTS.md).
 *
 * @example
 * ```ts
 * import { BUN_BUILD_FLAGS } from "./build.ts";
 * console.log(["bun", "build", ...BUN_BUILD_FLAGS, "--outfile", "dist/x", "x.ts"].join(" "));
 * ```
 */
export const BUN_BUILD_FLAGS = [
  "--compile",
  "--bytecode",
  "--format=esm",
  "--splitting",
  "--minify-syntax",
  // A short-lived CLI: JIT tiers up 10× later, ~1-2 ms less CPU per start (bench/RESULTS.md).
  "--compile-jit-policy=10",
  // Never read .env or bunfig.toml from the current directory (a bunfig.toml can preload
  // code; vmsnap runs as root from wherever the admin stands), and no directory walk at start.
  "--no-compile-autoload-dotenv",
  "--no-compile-autoload-bunfig",
  "--compile-exec-argv=--smol",
] as const;

/** The freeze pool's worker (src/freeze/pool.ts loads it with `new Worker`): built in as an entrypoint. */
const WORKER = "src/freeze/worker.ts";

/** Writes `<file>.sha256` in `sha256sum` format and returns the digest. */
function writeChecksum(file: string): string {
  const digest = createHash("sha256").update(readFileSync(file)).digest("hex");
  writeFileSync(`${file}.sha256`, `${digest}  ${basename(file)}\n`);
  return digest;
}

/** Builds one binary; exits the process when the compiler fails. */
function build(outfile: string, target?: Target): void {
  mkdirSync(dirname(outfile), { recursive: true });
  const started = performance.now();
  let command: string;
  let args: string[];
  let overrides: string | undefined;
  if (process.env.DENORT_BIN && !target) {
    command = bin("deno");
    args = ["compile", "--allow-all", "--no-check", "--include", WORKER, "--output", outfile];
    args.push("mod.ts");
  } else {
    command = bin("bun");
    // jsonc-parser without its formatter's start-up cost (scripts/bun/jsonc_slim.js), bson
    // without its 17 MiB zero-fill at load (scripts/bun/overrides.ts).
    overrides = mkdtempSync(join(tmpdir(), "vmsnap-build-"));
    const tsconfig = writeBundlerTsconfig(overrides);
    args = ["build", ...BUN_BUILD_FLAGS, `--tsconfig-override=${tsconfig}`, "--outfile", outfile];
    if (target) {
      args.push(`--target=${TARGETS[target].bun}`);
      const runtime = runtimeFor(target);
      if (runtime) args.push(`--compile-executable-path=${runtime}`);
    }
    // The freeze pool's worker thread is a second entrypoint (src/freeze/pool.ts).
    args.push("mod.ts", WORKER);
  }
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  if (overrides) rmSync(overrides, { recursive: true, force: true });
  if (result.status !== 0) {
    console.error(
      `build failed: ${command} ${args.join(" ")} exited ${result.status ?? result.signal}`,
    );
    process.exit(1);
  }
  const digest = writeChecksum(outfile);
  const size = statSync(outfile).size;
  console.log(
    `built ${outfile} (${(size / 1048576).toFixed(1)} MiB, sha256 ${digest.slice(0, 12)}…) ${
      target ? `for ${target} ` : ""
    }with ${command === bin("deno") ? "deno compile" : "bun build --compile"} in ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s`,
  );
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      outfile: { type: "string" },
      target: { type: "string", multiple: true, default: [] },
    },
  });
  const asked = values.target!.flatMap((t) => t === "all" ? Object.keys(TARGETS) : t.split(","));
  for (const t of asked) {
    if (!(t in TARGETS)) {
      console.error(
        `unknown --target ${JSON.stringify(t)}: one of ${Object.keys(TARGETS).join(", ")}, all`,
      );
      process.exit(64);
    }
  }
  if (values.outfile && asked.length > 1) {
    console.error("--outfile names one binary: give at most one --target with it");
    process.exit(64);
  }
  if (asked.length === 0) build(values.outfile ?? join(root, "dist", "vmsnap"));
  for (const target of asked as Target[]) {
    build(values.outfile ?? join(root, "dist", `vmsnap-${target}`), target);
  }
}
