import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseInvocation } from "../../src/cli/args.ts";
import { UsageError } from "../../src/cli/command.ts";
import { commandHelp, generalHelp } from "../../src/cli/help.ts";
import { main } from "../../src/cli/main.ts";
import { DEFAULT_CONFIG_PATH } from "../../src/config/config.ts";
import { CODES } from "../../src/errors.ts";
import { VERSION } from "../../src/version.ts";
import { ROOT } from "../helpers.ts";

function usage(argv: string[]): string {
  try {
    parseInvocation(argv, {});
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    return error.message;
  }
  assert.fail(`expected a usage error for ${argv.join(" ")}`);
}

Deno.test("the config path: --config, else VMSNAP_CONFIG, else Azure's path", () => {
  assert.equal(parseInvocation(["check"], {}).configPath, DEFAULT_CONFIG_PATH);
  assert.equal(
    parseInvocation(["check"], { VMSNAP_CONFIG: "/etc/v.json" }).configPath,
    "/etc/v.json",
  );
  assert.equal(
    parseInvocation(["check", "--config", "/a.json"], { VMSNAP_CONFIG: "/etc/v.json" }).configPath,
    "/a.json",
  );
  assert.equal(parseInvocation(["--config=/b.json", "check"], {}).configPath, "/b.json");
});

Deno.test("global options before or after the command", () => {
  const a = parseInvocation(["--json", "check", "--log-level", "debug"], {});
  assert.deepEqual([a.command, a.json, a.logLevel], ["check", true, "debug"]);
});

Deno.test("usage errors suggest the nearest valid word", () => {
  assert.match(usage(["chekc"]), /unknown command "chekc"\. Did you mean "check"\?/);
  assert.match(
    usage(["check", "--confg", "/x"]),
    /unknown option --confg for check\. Did you mean --config\?/,
  );
  assert.match(usage(["check", "--extrnal"]), /unknown option --extrnal/);
  assert.match(usage(["check", "--external"]), /belongs to another command/);
  assert.match(usage(["check", "--config"]), /--config needs a value/);
  assert.match(
    usage(["check", "--log-level", "verbos"]),
    /--log-level must be one of .* Did you mean "warning"\?|--log-level must be one of/,
  );
  assert.match(usage(["check", "extra"]), /unexpected argument "extra"/);
  assert.match(usage(["check", "--json=yes"]), /--json takes no value/);
  assert.match(usage(["run", "--snapshot-command"]), /needs the command's argv/);
  assert.match(usage(["run", "--external", "--snapshot-command", "/x"]), /exclude each other/);
});

Deno.test("--snapshot-command takes every argument after it", () => {
  const inv = parseInvocation([
    "run",
    "--json",
    "--snapshot-command",
    "/usr/local/sbin/snap",
    "--config",
    "x",
  ], {});
  assert.deepEqual(inv.snapshotCommand, ["/usr/local/sbin/snap", "--config", "x"]);
  assert.equal(inv.configPath, DEFAULT_CONFIG_PATH);
  assert.equal(inv.json, true);
});

Deno.test("no command shows help; --version alone is the version command", () => {
  assert.equal(parseInvocation([], {}).command, "help");
  assert.equal(parseInvocation(["--version"], {}).command, "version");
  assert.equal(parseInvocation(["-V"], {}).command, "version");
});

Deno.test("main: exit codes for usage errors and help", async () => {
  const out: string[] = [];
  const err: string[] = [];
  const io = { stdout: (t: string) => out.push(t), stderr: (t: string) => err.push(t), env: {} };
  assert.equal(await main(["nope"], io), 64);
  assert.match(err.join(""), /See vmsnap --help/);
  assert.equal(await main(["help", "check"], io), 0);
  assert.equal(await main(["help", "chek"], io), 64);
  assert.equal(await main(["version"], io), 0);
  assert.ok(out.join("").includes(`vmsnap ${VERSION}\n`));
});

Deno.test("help answers the admin's questions", () => {
  const help = generalHelp();
  for (
    const word of [
      "check",
      "run",
      "--config",
      "VMSNAP_CONFIG",
      DEFAULT_CONFIG_PATH,
      "Exit codes",
      "64",
    ]
  ) {
    assert.ok(help.includes(word), word);
  }
  assert.match(commandHelp("check"), /Exit 0 when there is no problem, 1 when/);
  assert.match(commandHelp("run"), /--snapshot-command/);
});

Deno.test("the version is package.json's", () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  assert.equal(VERSION, pkg.version);
});

Deno.test("docs/errors.md lists every code with its fix", () => {
  const doc = readFileSync(join(ROOT, "docs", "errors.md"), "utf8");
  for (const code of Object.keys(CODES)) {
    assert.ok(
      doc.includes(`- **\`${code}\`**`),
      `docs/errors.md lacks ${code}: run deno run -A scripts/codes_table.ts --write`,
    );
  }
  assert.equal(
    doc.match(/^- \*\*`/gm)?.length,
    Object.keys(CODES).length,
    "a code listed twice or one not in CODES",
  );
});

Deno.test("main: an error a command did not expect is said with its stack, exit 2", async () => {
  const err: string[] = [];
  const io = {
    stdout: () => {
      throw new TypeError("the output is gone");
    },
    stderr: (t: string) => err.push(t),
    env: {},
  };
  assert.equal(await main(["version"], io), 2);
  const said = err.join("");
  assert.match(said, /^vmsnap version: \[InternalError\] the output is gone\n/);
  assert.match(said, /\n\s+at /, "the stack follows");
});
