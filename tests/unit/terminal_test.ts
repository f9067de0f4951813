import assert from "node:assert/strict";
import { escapeForTerminal } from "../../src/sys/terminal.ts";

Deno.test("escapeForTerminal: ESC, BEL, CR, DEL, C1 and bidi controls escaped; newline, tab and text kept", () => {
  assert.equal(
    escapeForTerminal("a\x1b[2Jb\x07\r\x7f\x9b\u202e\u2066c\n\td é €"),
    "a\\x1b[2Jb\\x07\\x0d\\x7f\\x9b\\u202e\\u2066c\n\td é €",
  );
});
