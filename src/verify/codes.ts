/**
 * The codes `vmsnap verify` reports, in the shape of the main catalog
 * (`src/errors.ts` {@linkcode CodeInfo}), kept here until they move into it,
 * and {@linkcode VerifyError}, the error that carries one.
 *
 * @module
 */
import type { CodeInfo } from "../errors.ts";

/** What each verify code means and what the admin should do about it. */
export const VERIFY_CODES = {
  VerifyNotRoot: {
    summary:
      "vmsnap verify was started by a user other than root (it mounts the snapshot and starts database servers in private namespaces).",
    fix: "Run it as root: sudo vmsnap verify SNAPSHOT...",
  },
  VerifySnapshotNotFound: {
    summary: "A SNAPSHOT argument does not exist.",
    fix:
      "Name a block device, a raw or qcow2 image file, or a directory where the snapshot is mounted.",
  },
  VerifySnapshotUnsupported: {
    summary:
      "A SNAPSHOT argument is not a block device, an image file or a directory (or a qcow2 image with no qemu-img on this machine).",
    fix:
      "Convert the image to raw (qemu-img convert -O raw), or install qemu-utils, or attach it and name the device.",
  },
  VerifySnapshotInUse: {
    summary:
      "A snapshot is under an active mount: the device is mounted, the image is attached to a mounted loop device or opened for writing by a VM, or the directory is on a read-write mount. Verifying it would read a filesystem that is changing.",
    fix:
      "Unmount it (or detach the loop device), or mount the snapshot read-only (mount -o ro,noload) and name that directory.",
  },
  VerifyManifestNotFound: {
    summary: "The file given with --manifest does not exist or cannot be read.",
    fix: "Name a manifest from <stateDir>/manifests/ or the manifest a run wrote on the snapshot.",
  },
  VerifyManifestInvalid: {
    summary:
      "A manifest is not valid JSON or lacks a field the verifier needs (the message names the file and the field).",
    fix: "Use the manifest vmsnap wrote (<stateDir>/manifests/RUNID.json); do not edit it by hand.",
  },
  VerifyServerNotFound: {
    summary:
      "A database the manifest names needs a server binary or check tool that is not installed on this machine; nothing was started.",
    fix:
      "Install the server of the same major version (mariadb-server, postgresql-NN, redis-server, sqlite3) or name the binary in the verify options.",
  },
  VerifyEngineUnsupported: {
    summary:
      "The manifest names a database type this vmsnap cannot restore yet (MongoDB); the other databases are verified.",
    fix:
      "Restore that database by hand; the report lists the positions the manifest recorded for it.",
  },
  VerifyDataDirNotFound: {
    summary:
      "A database the manifest names was not found on the snapshots given (its data directory is on none of them), so it was not verified.",
    fix:
      "Pass every filesystem the database lives on, or record its data directory (dataDir) in the manifest.",
  },
  VerifyDataDirAmbiguous: {
    summary:
      "Several data directories on the snapshot could belong to one database of the manifest; the verifier does not guess.",
    fix:
      "Name the data directory in the verify options (dataDirs), or record it in the manifest (dataDir).",
  },
  VerifyNamespaceFailed: {
    summary:
      "The private mount, PID and network namespaces the verifier runs in could not be made (unshare or nsenter missing, or not permitted here).",
    fix:
      "Install util-linux and run as root outside a restricted container (CAP_SYS_ADMIN is needed).",
  },
  VerifyScratchFull: {
    summary:
      "The scratch area (the overlay's upper layer: a tmpfs, or --scratch DIR) filled up while a database recovered; the verdict would say nothing about the snapshot.",
    fix: "Give a scratch directory on a disk with room for the databases' files: --scratch DIR.",
  },
  VerifyServerTimeout: {
    summary:
      "A database server did not finish recovery (or a check did not end) within the verify timeout; that database was not verified.",
    fix:
      "Raise the timeout (startTimeoutSeconds / checkTimeoutSeconds) for large databases; the server's log is in the evidence.",
  },
  VerifyLeftoverCleaned: {
    summary:
      "A verify that died (SIGKILL, power loss) left a record of what it had set up; it was found and removed (a warning).",
    fix: "Nothing to do; the message says what was removed.",
  },
  VerifyCleanupFailed: {
    summary:
      "Something the verifier set up could not be removed at the end (the message names it); the next verify tries again.",
    fix:
      "Run vmsnap verify (or vmsnap recover) again; if it stays, detach the loop device or remove the directory it names.",
  },
} as const satisfies Record<string, CodeInfo>;

/** A stable verify code. */
export type VerifyCode = keyof typeof VERIFY_CODES;

/** A coded problem in a verify report. */
export interface VerifyProblem {
  code: VerifyCode;
  /** Names what failed and the fix. */
  message: string;
}

/**
 * An error that stops `vmsnap verify`, with its code; the cause is kept.
 *
 * @example
 * ```ts
 * import { VerifyError } from "./codes.ts";
 * throw new VerifyError("VerifySnapshotNotFound", "/dev/sdz does not exist. Fix: name the snapshot's device.");
 * ```
 */
export class VerifyError extends Error {
  /** Stable code, see {@linkcode VERIFY_CODES}. */
  readonly code: VerifyCode;

  constructor(code: VerifyCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VerifyError";
    this.code = code;
  }

  /** The error as a report problem, with the catalog's fix when the message has none. */
  toProblem(): VerifyProblem {
    return verifyProblem(this.code, this.message);
  }
}

/**
 * A problem whose message ends with a fix (the catalog's when it has none).
 *
 * @example
 * ```ts
 * import { verifyProblem } from "./codes.ts";
 * verifyProblem("VerifyLeftoverCleaned", "removed the namespace of verify v1.").message;
 * ```
 */
export function verifyProblem(code: VerifyCode, message: string): VerifyProblem {
  const fix: string = VERIFY_CODES[code].fix;
  return { code, message: message.includes("Fix:") ? message : `${message} Fix: ${fix}` };
}
