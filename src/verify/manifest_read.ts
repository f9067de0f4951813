/**
 * Reading a manifest back: JSON parsed and every field the verifier relies on
 * checked, so that a damaged or hand-edited manifest is refused with the file
 * and the field named, never half-used.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { VerifyError } from "./codes.ts";
import {
  DATABASE_TYPES,
  type Manifest,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  type ManifestDatabase,
} from "./manifest.ts";

/** The largest manifest read (a run with hundreds of plugins is far below). */
export const MAX_MANIFEST_BYTES = 4 << 20;

const CONSISTENCIES = ["application", "filesystem", "crash", "none"];
const LSN = /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i;

type Json = Record<string, unknown>;

/** Collects what is wrong, each with its JSON path. */
class Checker {
  readonly wrong: string[] = [];

  field(object: Json, key: string, path: string, type: string, required: boolean): unknown {
    const value = object[key];
    if (value === undefined) {
      if (required) this.wrong.push(`${path}.${key} is missing`);
      return undefined;
    }
    const actual = Array.isArray(value) ? "array" : value === null ? "null" : typeof value;
    if (actual !== type) this.wrong.push(`${path}.${key} is ${actual}, not ${type}`);
    return value;
  }

  oneOf(object: Json, key: string, path: string, values: readonly string[]): void {
    const value = this.field(object, key, path, "string", true);
    if (typeof value === "string" && !values.includes(value)) {
      this.wrong.push(`${path}.${key} is "${value}", not one of ${values.join(", ")}`);
    }
  }

  lsn(object: Json, key: string, path: string, required: boolean): void {
    const value = this.field(object, key, path, "string", required);
    if (typeof value === "string" && !LSN.test(value)) {
      this.wrong.push(`${path}.${key} "${value}" is not a WAL position like 0/1A2B3C4`);
    }
  }
}

/** Checks one database entry's own fields. */
function checkDatabase(c: Checker, db: Json, path: string): void {
  c.field(db, "plugin", path, "string", true);
  c.field(db, "held", path, "boolean", true);
  c.field(db, "dataDir", path, "string", false);
  c.oneOf(db, "type", path, DATABASE_TYPES);
  switch (db.type) {
    case "mysql":
      c.field(db, "binlog", path, "boolean", true);
      c.field(db, "binlogFile", path, "string", false);
      c.field(db, "binlogPosition", path, "number", false);
      c.field(db, "gtidPosition", path, "string", false);
      break;
    case "postgresql":
      c.lsn(db, "walLsn", path, true);
      c.field(db, "timeline", path, "number", true);
      c.lsn(db, "checkpointLsn", path, false);
      c.lsn(db, "backupStopLsn", path, false);
      c.field(db, "backupLabel", path, "string", false);
      break;
    case "redis":
      c.oneOf(db, "persistence", path, ["aof", "rdb"]);
      c.field(db, "lastsave", path, "number", false);
      c.field(db, "keys", path, "number", false);
      break;
    case "sqlite": {
      const files = c.field(db, "files", path, "array", true);
      if (!Array.isArray(files)) break;
      files.forEach((f, i) => {
        const at = `${path}.files[${i}]`;
        if (typeof f !== "object" || f === null) return c.wrong.push(`${at} is not an object`);
        c.field(f as Json, "file", at, "string", true);
        c.field(f as Json, "journalMode", at, "string", true);
        c.field(f as Json, "changeCounter", at, "number", false);
      });
      break;
    }
  }
}

/** Checks the top level and the lists. */
function checkManifest(c: Checker, m: Json): void {
  if (m.format !== MANIFEST_FORMAT) {
    c.wrong.push(`"format" is ${JSON.stringify(m.format)}, not "${MANIFEST_FORMAT}"`);
    return;
  }
  const version = c.field(m, "version", "$", "number", true);
  if (typeof version === "number" && version > MANIFEST_VERSION) {
    c.wrong.push(
      `version ${version} was written by a newer vmsnap (this one reads up to ${MANIFEST_VERSION})`,
    );
  }
  c.field(m, "runId", "$", "string", true);
  c.oneOf(m, "stage", "$", ["final", "frozen"]);
  c.oneOf(m, "consistency", "$", CONSISTENCIES);
  const started = c.field(m, "startedAt", "$", "string", true);
  if (typeof started === "string" && Number.isNaN(Date.parse(started))) {
    c.wrong.push(`$.startedAt "${started}" is not a time`);
  }
  c.field(m, "durationMs", "$", "number", true);
  const finished = c.field(m, "finishedAt", "$", "string", false);
  if (typeof finished === "string" && Number.isNaN(Date.parse(finished))) {
    c.wrong.push(`$.finishedAt "${finished}" is not a time`);
  }
  const filesystems = c.field(m, "filesystems", "$", "array", true);
  if (Array.isArray(filesystems)) {
    filesystems.forEach((f, i) => {
      const at = `$.filesystems[${i}]`;
      if (typeof f !== "object" || f === null) return c.wrong.push(`${at} is not an object`);
      c.field(f as Json, "mountPoint", at, "string", true);
      c.field(f as Json, "uuid", at, "string", false);
    });
  }
  const databases = c.field(m, "databases", "$", "array", true);
  if (Array.isArray(databases)) {
    databases.forEach((d, i) => {
      const at = `$.databases[${i}]`;
      if (typeof d !== "object" || d === null) return c.wrong.push(`${at} is not an object`);
      checkDatabase(c, d as Json, at);
    });
  }
}

/**
 * Parses and validates a manifest; `source` names it in errors.
 *
 * @example
 * ```ts
 * import { parseManifest } from "./manifest_read.ts";
 * try { parseManifest("{}", "/tmp/m.json"); } catch (e) { console.log((e as Error).message); }
 * ```
 */
export function parseManifest(text: string, source: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new VerifyError(
      "VerifyManifestInvalid",
      `${source} is not valid JSON (${
        (error as Error).message
      }). Fix: use the manifest vmsnap wrote.`,
      { cause: error },
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new VerifyError("VerifyManifestInvalid", `${source} is not a JSON object.`);
  }
  const checker = new Checker();
  checkManifest(checker, value as Json);
  if (checker.wrong.length > 0) {
    throw new VerifyError(
      "VerifyManifestInvalid",
      `${source} is not a valid vmsnap manifest: ${checker.wrong.slice(0, 8).join("; ")}${
        checker.wrong.length > 8 ? ` (and ${checker.wrong.length - 8} more)` : ""
      }.`,
    );
  }
  const manifest = value as Manifest;
  manifest.scripts ??= [];
  manifest.databases = manifest.databases as ManifestDatabase[];
  return manifest;
}

/**
 * Reads and validates a manifest file.
 *
 * @example
 * ```ts
 * import { readManifestFile } from "./manifest_read.ts";
 * const manifest = readManifestFile("/var/lib/vmsnap/manifests/20261126T045100Z-a1b2c3.json");
 * ```
 */
export function readManifestFile(path: string): Manifest {
  let text: string;
  try {
    const buffer = readFileSync(path);
    if (buffer.length > MAX_MANIFEST_BYTES) {
      throw new VerifyError(
        "VerifyManifestInvalid",
        `${path} is ${buffer.length} bytes, more than a manifest can be (${MAX_MANIFEST_BYTES}).`,
      );
    }
    text = buffer.toString("utf8");
  } catch (error) {
    if (error instanceof VerifyError) throw error;
    throw new VerifyError(
      "VerifyManifestNotFound",
      `cannot read the manifest ${path}: ${(error as Error).message}.`,
      { cause: error },
    );
  }
  return parseManifest(text, path);
}
