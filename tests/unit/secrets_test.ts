import assert from "node:assert/strict";
import { addSecret, redact, redactValue, shortSecretWarnings } from "../../src/secrets.ts";

Deno.test("redact: a secret with characters JSON escapes is scrubbed from JSON text too", () => {
  const secret = 'a"b\\c-unit-1';
  addSecret(secret);
  const line = JSON.stringify({ message: `login with ${secret} refused` });
  assert.equal(redact(line), '{"message":"login with *** refused"}');
  const nested = JSON.stringify({ quoted: line });
  assert.ok(!redact(nested).includes("unit-1"), redact(nested));
});

Deno.test("redactValue: password fields and exact secrets of any length become ***; the rest is scrubbed", () => {
  addSecret("Zq1");
  addSecret("long-secret-unit-2");
  const shown = redactValue({
    config: { password: "whatever-it-is", uri: "Zq1", list: ["Zq1", "keep"] },
    message: "got long-secret-unit-2 back",
    count: 3,
    none: null,
  });
  assert.deepEqual(shown, {
    config: { password: "***", uri: "***", list: ["***", "keep"] },
    message: "got *** back",
    count: 3,
    none: null,
  });
  // Too short to scrub from free text: left alone there, and warned about.
  assert.equal(redact("Zq1 in a sentence"), "Zq1 in a sentence");
  const warnings = shortSecretWarnings();
  assert.deepEqual(warnings.map((w) => w.code), ["ShortSecret"]);
  assert.ok(!warnings[0].message.includes("Zq1"));
});
