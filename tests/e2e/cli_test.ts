/**
 * The command line through the binary: words it does not know are usage
 * errors, whatever they are named.
 */
import assert from "node:assert/strict";
import { runBin } from "../helpers.ts";

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
