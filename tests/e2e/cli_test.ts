/**
 * The command line through the binary: words it does not know are usage
 * errors, whatever they are named; exit codes by kind of failure, the same
 * for every command.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { BIN, putConfig, runBin, secureDir } from "../helpers.ts";

Deno.test("a word that names a property of every JavaScript object is unknown, never a command", async () => {
  const cases: [string[], RegExp][] = [
    [["toString", "--config", "/nonexistent.json"], /unknown command "toString"/],
    [["constructor"], /unknown command "constructor"/],
    [["__proto__"], /unknown command "__proto__"/],
    [["help", "constructor"], /no help for "constructor"/],
    [["check", "--constructor"], /unknown option --constructor for check/],
    [["hook", "toString", "--for", "generic"], /hook needs an event: .*not "toString"/],
    [["valueOf"], /unknown command "valueOf"/],
  ];
  for (const [args, message] of cases) {
    const ran = await runBin(args);
    assert.equal(ran.code, 64, `${args.join(" ")}: ${ran.stderr}`);
    assert.match(ran.stderr, message, args.join(" "));
    assert.doesNotMatch(ran.stderr, /vmsnap run|Uncaught|TypeError/, args.join(" "));
  }
});

Deno.test("the same kind of failure exits with the same code, whatever the command", async () => {
  const { dir, cleanup } = secureDir("exit-");
  try {
    const config = putConfig(dir, { fsFreezeEnabled: false });
    const nobody = (args: string[]) =>
      spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", BIN, ...args], {
        encoding: "utf8",
        env: { PATH: "/usr/bin:/bin" },
      });
    // Failed, nothing done: 2, the coded error on stderr.
    const exists = await runBin(["init", "--config", config]);
    assert.equal(exists.code, 2, exists.stderr);
    assert.match(exists.stderr, /^vmsnap init: \[ConfigExists\]/);
    const init = nobody(["init", "--config", join(dir, "new.json")]);
    assert.equal(init.status, 2, init.stderr);
    assert.match(init.stderr, /^vmsnap init: \[NotRoot\]/);
    const recover = nobody(["recover", "--config", config]);
    assert.equal(recover.status, 2, recover.stderr);
    assert.match(recover.stderr, /^vmsnap recover: \[NotRoot\]/);
    const open = join(dir, "open");
    mkdirSync(join(open, "etc", "vmware-tools"), { recursive: true });
    chmodSync(join(open, "etc"), 0o777);
    const install = await runBin(["install", "--for", "vmware", "--root", open]);
    assert.equal(install.code, 2, install.stderr);
    assert.match(install.stderr, /^vmsnap install: \[InsecureDirectory\]/);
    // Problems found: 1.
    assert.equal((await runBin(["check", "--config", join(dir, "missing.json")])).code, 1);
    // A usage error: 64, for every command, and for an agent with nothing to install.
    for (const command of ["check", "run", "recover", "install", "uninstall", "init", "status"]) {
      const ran = await runBin([command, "--no-such-option"]);
      assert.equal(ran.code, 64, `${command}: ${ran.stderr}`);
    }
    const generic = await runBin(["install", "--for", "generic", "--root", open]);
    assert.equal(generic.code, 64, generic.stderr);
    assert.match(
      generic.stderr,
      /^vmsnap install: \[UsageError\] --for generic has nothing to install/,
    );
  } finally {
    cleanup();
  }
});
