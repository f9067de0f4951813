/**
 * Secrets (passwords, credentials in URIs) registered as they are read, and
 * kept out of everything vmsnap writes: the log, stdout, stderr, the result.
 *
 * Two ways, because text search alone fails: an object about to be printed
 * is redacted structurally ({@linkcode redactValue}: a `password` field, or
 * any string that is a secret, becomes `***`, whatever its characters or
 * length), and free text is scrubbed ({@linkcode redact}: every secret of at
 * least {@linkcode MIN_SCRUBBED_LENGTH} characters, raw and as JSON escapes
 * it). A shorter secret cannot be scrubbed from free text without scrubbing
 * ordinary words; {@linkcode shortSecretWarnings} says so.
 *
 * @module
 */
import type { Problem } from "./errors.ts";

/** The shortest secret scrubbed from free text. */
export const MIN_SCRUBBED_LENGTH = 4;

/** The replacement. */
const MASK = "***";

/** Keys whose string value is always a secret. */
const SECRET_KEYS = new Set(["password"]);

/** Every secret, whatever its length. */
const secrets = new Set<string>();
/** What free text is scrubbed of: each long-enough secret and its JSON-escaped forms, longest first. */
let scrubbed: string[] = [];

/**
 * Registers a secret; from now on it is replaced by `***` in all output.
 *
 * @example
 * ```ts
 * import { addSecret, redact } from "./secrets.ts";
 * addSecret("hunter2");
 * redact("password=hunter2"); // "password=***"
 * ```
 */
export function addSecret(secret: string): void {
  if (secret === "" || secrets.has(secret)) return;
  secrets.add(secret);
  if (secret.length < MIN_SCRUBBED_LENGTH) return;
  // As JSON escapes it, once (a log line) and twice (a message quoted in a JSON string).
  const once = JSON.stringify(secret).slice(1, -1);
  const twice = JSON.stringify(once).slice(1, -1);
  scrubbed = [...new Set([...scrubbed, secret, once, twice])].sort((a, b) => b.length - a.length);
}

/**
 * Replaces every registered secret (raw or JSON-escaped) in the text with `***`.
 *
 * @example
 * ```ts
 * import { addSecret, redact } from "./secrets.ts";
 * addSecret('pa"ss');
 * redact(JSON.stringify({ message: 'login pa"ss refused' })); // '{"message":"login *** refused"}'
 * ```
 */
export function redact(text: string): string {
  for (const secret of scrubbed) {
    if (text.includes(secret)) text = text.split(secret).join(MASK);
  }
  return text;
}

/**
 * A copy of a value for printing with every secret replaced: a string that
 * is a registered secret (of any length) or the value of a `password` key
 * becomes `***`; other strings are scrubbed with {@linkcode redact}. Redact
 * before `JSON.stringify`, so escaping cannot hide a secret from the search.
 *
 * @example
 * ```ts
 * import { addSecret, redactValue } from "./secrets.ts";
 * addSecret("ab1");
 * redactValue({ password: "ab1", note: "x" }); // { password: "***", note: "x" }
 * ```
 */
export function redactValue<T>(value: T): T {
  return walk(value, undefined) as T;
}

function walk(value: unknown, key: string | undefined): unknown {
  if (typeof value === "string") {
    if (secrets.has(value) || (key !== undefined && SECRET_KEYS.has(key))) return MASK;
    return redact(value);
  }
  if (Array.isArray(value)) return value.map((item) => walk(item, undefined));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, walk(v, k)]),
    );
  }
  return value;
}

/**
 * One warning (`ShortSecret`) per registered secret too short to scrub from
 * free text. The message gives the length, never the secret.
 *
 * @example
 * ```ts
 * import { shortSecretWarnings } from "./secrets.ts";
 * for (const w of shortSecretWarnings()) console.error(w.code, w.message);
 * ```
 */
export function shortSecretWarnings(): Problem[] {
  return [...secrets].filter((s) => s.length < MIN_SCRUBBED_LENGTH).map((s) => ({
    code: "ShortSecret",
    message: `a password of ${s.length} character${
      s.length === 1 ? "" : "s"
    } is configured: vmsnap replaces it in the fields it knows are secret, but cannot scrub a string shorter than ${MIN_SCRUBBED_LENGTH} characters from free text (log lines, error messages) without scrubbing ordinary words. Fix: use a longer password (16 or more random characters).`,
  }));
}
