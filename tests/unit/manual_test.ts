/**
 * The man page renders without a warning from man/groff, and the bash
 * completion completes what the command table holds, run in a real bash.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { bashCompletion, manPage } from "../../src/cli/manual.ts";
import { GLOBAL_OPTIONS } from "../../src/cli/command.ts";
import { COMMANDS } from "../../src/cli/commands/mod.ts";
import { CODES } from "../../src/errors.ts";
import { secureDir } from "../helpers.ts";

Deno.test("vmsnap.1 renders with man -l without warnings and names every command", () => {
  const { dir, cleanup } = secureDir("man-");
  try {
    const file = join(dir, "vmsnap.1");
    writeFileSync(file, manPage({ date: "2026-11-26" }));
    const rendered = spawnSync("man", ["--warnings", "-l", file], {
      encoding: "utf8",
      env: { PATH: "/usr/bin:/bin", MANWIDTH: "80", MAN_KEEP_FORMATTING: "0", LANG: "C.UTF-8" },
    });
    assert.equal(rendered.status, 0, rendered.stderr);
    assert.equal(rendered.stderr, "", "man/groff warnings");
    // Bold and underline come as overstrikes (x BACKSPACE x): keep the last character.
    let text = "";
    for (const ch of rendered.stdout) text = ch === "\b" ? text.slice(0, -1) : text + ch;
    for (const name of Object.keys(COMMANDS)) assert.match(text, new RegExp(`vmsnap ${name}`));
    for (const name of Object.keys(GLOBAL_OPTIONS)) assert.ok(text.includes(`--${name}`), name);
    for (const code of Object.keys(CODES)) assert.ok(text.includes(code), code);
    for (const line of text.split("\n")) assert.ok(line.length <= 80, `too wide: ${line}`);
  } finally {
    cleanup();
  }
});

/** What the completion offers for a command line (the last word being completed). */
function complete(words: string[]): string[] {
  const script = `${bashCompletion()}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")})
COMP_CWORD=${words.length - 1}
_vmsnap
printf '%s\\n' "\${COMPREPLY[@]}"`;
  const ran = spawnSync("bash", ["--norc", "-c", script], { encoding: "utf8" });
  assert.equal(ran.status, 0, ran.stderr);
  return ran.stdout.split("\n").filter(Boolean).sort();
}

Deno.test("bash completion: commands, each command's options, fixed values, skipped values", () => {
  assert.deepEqual(complete(["vmsnap", ""]), Object.keys(COMMANDS).sort());
  assert.deepEqual(complete(["vmsnap", "ch"]), ["check"]);
  assert.ok(complete(["vmsnap", "check", "--"]).includes("--connect"));
  assert.ok(!complete(["vmsnap", "run", "--"]).includes("--connect"));
  assert.ok(complete(["vmsnap", "run", "--"]).includes("--external"));
  assert.deepEqual(complete(["vmsnap", "check", "--log-level", "w"]), ["warning"]);
  // A value of an option is not taken for the command.
  assert.ok(complete(["vmsnap", "--config", "/etc/x.json", "check", "--c"]).includes("--connect"));
  assert.deepEqual(complete(["vmsnap", "help", "re"]), ["recover"]);
});

Deno.test("bash completion: the words of a command's first argument (hook's events), once", () => {
  const events = [...COMMANDS.hook.words!];
  assert.deepEqual(events, ["freeze", "pre", "thaw", "post", "freezeFail"]);
  for (const word of events) assert.ok(complete(["vmsnap", "hook", ""]).includes(word), word);
  assert.deepEqual(complete(["vmsnap", "hook", "fr"]), ["freeze", "freezeFail"]);
  assert.deepEqual(complete(["vmsnap", "hook", "--for", "aws", "th"]), ["thaw"]);
  assert.deepEqual(complete(["vmsnap", "--config", "/x", "hook", "--timeout", "9", "p"]), [
    "post",
    "pre",
  ]);
  assert.deepEqual(complete(["vmsnap", "hook", "freeze", "--for", ""]), [
    "aws",
    "azure",
    "gcp",
    "generic",
    "qemu-ga",
    "vmware",
  ]);
  // Given once: the event is not offered again, nor a topic after help's.
  assert.ok(!complete(["vmsnap", "hook", "thaw", ""]).includes("freeze"));
  assert.ok(!complete(["vmsnap", "help", "run", ""]).includes("check"));
  // --help and the man page show the same words.
  assert.match(COMMANDS.hook.usage, /hook freeze\|pre\|thaw\|post\|freezeFail --for AGENT/);
  assert.ok(manPage({ date: "2026-11-26" }).includes("freeze|pre|thaw|post|freezeFail"));
});
