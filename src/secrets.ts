/**
 * Secrets (passwords, credentials in URIs) registered as they are read, and
 * scrubbed from every line vmsnap writes: the log, stdout, stderr, the result.
 *
 * @module
 */

const secrets = new Set<string>();

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
  // Very short strings would scrub ordinary words; a secret that short is refused elsewhere.
  if (secret.length >= 4) secrets.add(secret);
}

/** Replaces every registered secret in the text with `***`. */
export function redact(text: string): string {
  for (const secret of secrets) {
    if (text.includes(secret)) text = text.split(secret).join("***");
  }
  return text;
}
