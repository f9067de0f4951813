/**
 * The permission matrix, one table for the library tests and the binary
 * tests. Each case lays out files in a private directory and names the code
 * that `check` must report (or null for a pass).
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, linkSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { NOBODY, put, putConfig } from "./helpers.ts";
import type { Code } from "../src/errors.ts";

/** One case: `setup` returns the config file to check. */
export interface PermissionCase {
  name: string;
  setup(dir: string): string;
  expect: Code | null;
  /** A word the message must contain (the offending file or directory). */
  mentions?: (dir: string) => string;
}

const script = "#!/bin/sh\necho ok\n";

/** A config whose pre-script is `pre` (and post-script `post`, when given). */
function withScripts(dir: string, pre: string, post?: string): string {
  return putConfig(dir, {
    preScriptLocation: pre,
    postScriptLocation: post ?? "",
    stateDir: join(dir, "state"),
    log: { file: join(dir, "log", "vmsnap.jsonl") },
    fsFreezeEnabled: false,
  });
}

function scriptCase(name: string, mode: number, expect: Code | null, uid = 0): PermissionCase {
  return {
    name,
    expect,
    setup: (dir) => withScripts(dir, put(join(dir, "pre.sh"), script, mode, uid)),
    mentions: expect ? (dir) => join(dir, "pre.sh") : undefined,
  };
}

function configCase(name: string, mode: number, expect: Code | null, uid = 0): PermissionCase {
  return {
    name,
    expect,
    setup: (dir) => {
      const file = putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "log", "x.jsonl") },
      });
      chmodSync(file, mode);
      chownSync(file, uid, uid);
      return file;
    },
    mentions: expect ? (dir) => join(dir, "vmsnap.json") : undefined,
  };
}

/** A config whose snapshot command is a file made with this mode and owner, or a given path. */
function snapshotCase(
  name: string,
  file: number | string,
  expect: Code | null,
  uid = 0,
): PermissionCase {
  return {
    name,
    expect,
    setup: (dir) =>
      putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "l", "x") },
        snapshot: {
          command: [typeof file === "string" ? file : put(join(dir, "snap"), script, file, uid)],
        },
      }),
    mentions: expect ? (dir) => join(dir, "snap") : undefined,
  };
}

/** How the interpreter of an interpreter case is laid out. */
interface InterpreterLayout {
  mode: number;
  uid?: number;
  /** The owner of the interpreter's directory (root unless given). */
  dirOwner?: number;
  /** The interpreter is a root script whose own #! names nobody's file. */
  nested?: boolean;
  /** Named through `#!/usr/bin/env -S PATH`. */
  viaEnv?: boolean;
  /** The pre-script's mode (0700 unless given). */
  scriptMode?: number;
}

/** A root-owned pre-script whose #! line names an interpreter laid out as given. */
function interpreterCase(
  name: string,
  layout: InterpreterLayout,
  expect: Code | null,
): PermissionCase {
  return {
    name,
    expect,
    setup: (dir) => {
      const bin = join(dir, "bin");
      let interpreter = put(join(bin, "interp"), script, layout.mode, layout.uid);
      if (layout.dirOwner !== undefined) chownSync(bin, layout.dirOwner, layout.dirOwner);
      if (layout.nested) {
        chownSync(interpreter, NOBODY, NOBODY);
        interpreter = put(join(dir, "wrapper"), `#!${interpreter}\n`, 0o755);
      }
      const line = layout.viaEnv ? `#!/usr/bin/env -S ${interpreter}` : `#!${interpreter}`;
      return withScripts(dir, put(join(dir, "pre.sh"), `${line}\n`, layout.scriptMode ?? 0o700));
    },
    mentions: expect ? (dir) => join(dir, "bin", "interp") : undefined,
  };
}

/** Every rule of the permission section, each bit on its own. */
export const PERMISSION_CASES: PermissionCase[] = [
  // The config file: root, no group/other bits, no execute bit.
  configCase("config 0600 passes", 0o600, null),
  configCase("config 0400 passes", 0o400, null),
  configCase("config owned by nobody", 0o600, "InsufficientPermissionforConfigFile", NOBODY),
  configCase("config owner-execute bit (0700)", 0o700, "InsufficientPermissionforConfigFile"),
  ...[0o040, 0o020, 0o010, 0o004, 0o002, 0o001].map((bit) =>
    configCase(
      `config with bit ${(0o600 | bit).toString(8)}`,
      0o600 | bit,
      "InsufficientPermissionforConfigFile",
    )
  ),
  // Scripts: root, no group/other bits; 700, 500, 600 pass.
  scriptCase("script 0700 passes", 0o700, null),
  scriptCase("script 0500 passes", 0o500, null),
  scriptCase("script 0600 passes (run with /bin/sh)", 0o600, null),
  scriptCase("script 0750 refused", 0o750, "InsufficientPermissionforPre-Script"),
  scriptCase("script 0755 refused", 0o755, "InsufficientPermissionforPre-Script"),
  ...[0o040, 0o020, 0o010, 0o004, 0o002, 0o001].map((bit) =>
    scriptCase(
      `script with bit ${(0o700 | bit).toString(8)}`,
      0o700 | bit,
      "InsufficientPermissionforPre-Script",
    )
  ),
  scriptCase("script setuid (4700)", 0o4700, "InsufficientPermissionforPre-Script"),
  scriptCase("script setgid (2700)", 0o2700, "InsufficientPermissionforPre-Script"),
  scriptCase("script owned by nobody", 0o700, "InsufficientPermissionforPre-Script", NOBODY),
  {
    name: "pre-script missing",
    expect: "Pre-ScriptNotFound",
    setup: (dir) => withScripts(dir, join(dir, "missing.sh")),
    mentions: (dir) => join(dir, "missing.sh"),
  },
  {
    name: "post-script missing",
    expect: "Post-ScriptNotFound",
    setup: (dir) => withScripts(dir, put(join(dir, "pre.sh"), script, 0o700), join(dir, "gone.sh")),
    mentions: (dir) => join(dir, "gone.sh"),
  },
  {
    name: "post-script 0755",
    expect: "InsufficientPermissionforPost-Script",
    setup: (dir) =>
      withScripts(
        dir,
        put(join(dir, "pre.sh"), script, 0o700),
        put(join(dir, "post.sh"), script, 0o755),
      ),
  },
  {
    name: "script is a directory",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      mkdirSync(join(dir, "pre.d"), { mode: 0o700 });
      return withScripts(dir, join(dir, "pre.d"));
    },
  },
  {
    name: "script is a FIFO",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      spawnSync("mkfifo", ["-m", "600", join(dir, "fifo")]);
      return withScripts(dir, join(dir, "fifo"));
    },
  },
  // Symlinks: the target is judged, and every directory on the way.
  {
    name: "symlink to a good script passes",
    expect: null,
    setup: (dir) => {
      put(join(dir, "real", "pre.sh"), script, 0o700);
      symlinkSync(join(dir, "real", "pre.sh"), join(dir, "pre.sh"));
      return withScripts(dir, join(dir, "pre.sh"));
    },
  },
  {
    name: "relative symlink to a good script passes",
    expect: null,
    setup: (dir) => {
      put(join(dir, "real", "pre.sh"), script, 0o700);
      symlinkSync("real/pre.sh", join(dir, "pre.sh"));
      return withScripts(dir, join(dir, "pre.sh"));
    },
  },
  {
    name: "symlink to a script owned by nobody",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "real", "pre.sh"), script, 0o700, NOBODY);
      symlinkSync(join(dir, "real", "pre.sh"), join(dir, "pre.sh"));
      return withScripts(dir, join(dir, "pre.sh"));
    },
  },
  {
    name: "symlink to a 0755 script",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "real", "pre.sh"), script, 0o755);
      symlinkSync(join(dir, "real", "pre.sh"), join(dir, "pre.sh"));
      return withScripts(dir, join(dir, "pre.sh"));
    },
  },
  {
    name: "symlink into a directory owned by nobody",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "user", "pre.sh"), script, 0o700);
      chownSync(join(dir, "user"), NOBODY, NOBODY);
      symlinkSync(join(dir, "user", "pre.sh"), join(dir, "pre.sh"));
      return withScripts(dir, join(dir, "pre.sh"));
    },
    mentions: (dir) => join(dir, "user"),
  },
  {
    name: "symlink placed in a group-writable directory",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "real", "pre.sh"), script, 0o700);
      mkdirSync(join(dir, "links"), { mode: 0o770 });
      chmodSync(join(dir, "links"), 0o770);
      symlinkSync(join(dir, "real", "pre.sh"), join(dir, "links", "pre.sh"));
      return withScripts(dir, join(dir, "links", "pre.sh"));
    },
    mentions: (dir) => join(dir, "links"),
  },
  {
    name: "symlink loop",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      symlinkSync(join(dir, "b"), join(dir, "a"));
      symlinkSync(join(dir, "a"), join(dir, "b"));
      return withScripts(dir, join(dir, "a"));
    },
  },
  {
    name: "hard link to a file owned by nobody",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "user.sh"), script, 0o700, NOBODY);
      linkSync(join(dir, "user.sh"), join(dir, "pre.sh"));
      return withScripts(dir, join(dir, "pre.sh"));
    },
  },
  // Directories from / down.
  {
    name: "script in a group-writable directory",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "shared", "pre.sh"), script, 0o700);
      chmodSync(join(dir, "shared"), 0o775);
      return withScripts(dir, join(dir, "shared", "pre.sh"));
    },
    mentions: (dir) => join(dir, "shared"),
  },
  {
    name: "script in an other-writable directory",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "open", "pre.sh"), script, 0o700);
      chmodSync(join(dir, "open"), 0o757);
      return withScripts(dir, join(dir, "open", "pre.sh"));
    },
    mentions: (dir) => join(dir, "open"),
  },
  {
    name: "script in a sticky world-writable directory (like /tmp)",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "tmp", "pre.sh"), script, 0o700);
      chmodSync(join(dir, "tmp"), 0o1777);
      return withScripts(dir, join(dir, "tmp", "pre.sh"));
    },
    mentions: (dir) => join(dir, "tmp"),
  },
  {
    name: "script in a directory owned by nobody (mode 0700)",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "mine", "pre.sh"), script, 0o700);
      chownSync(join(dir, "mine"), NOBODY, NOBODY);
      return withScripts(dir, join(dir, "mine", "pre.sh"));
    },
    mentions: (dir) => join(dir, "mine"),
  },
  {
    name: "grandparent directory group-writable",
    expect: "InsufficientPermissionforPre-Script",
    setup: (dir) => {
      put(join(dir, "a", "b", "pre.sh"), script, 0o700);
      chmodSync(join(dir, "a"), 0o770);
      return withScripts(dir, join(dir, "a", "b", "pre.sh"));
    },
    mentions: (dir) => join(dir, "a"),
  },
  {
    name: "config in a group-writable directory",
    expect: "InsufficientPermissionforConfigFile",
    setup: (dir) => {
      mkdirSync(join(dir, "etc"), { mode: 0o770 });
      chmodSync(join(dir, "etc"), 0o770);
      return putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "l", "x") },
      }, "etc/vmsnap.json");
    },
    mentions: (dir) => join(dir, "etc"),
  },
  {
    name: "stateDir writable by other",
    expect: "InsecureDirectory",
    setup: (dir) => {
      mkdirSync(join(dir, "state"), { mode: 0o777 });
      chmodSync(join(dir, "state"), 0o777);
      return putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "l", "x") },
      });
    },
    mentions: (dir) => join(dir, "state"),
  },
  {
    name: "log directory owned by nobody",
    expect: "InsecureDirectory",
    setup: (dir) => {
      mkdirSync(join(dir, "log"), { mode: 0o700 });
      chownSync(join(dir, "log"), NOBODY, NOBODY);
      return putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "log", "x.jsonl") },
      });
    },
    mentions: (dir) => join(dir, "log"),
  },
  {
    name: "missing stateDir and log directory pass (created 0700 by run)",
    expect: null,
    setup: (dir) =>
      putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "new", "state"),
        log: { file: join(dir, "new", "log", "x") },
      }),
  },
  // The snapshot command and interpreters: the executable rule (OpenSSH's AuthorizedKeysCommand).
  snapshotCase("snapshot command 0755 (a system tool) passes", 0o755, null),
  snapshotCase("snapshot command /usr/bin/cp as installed passes", "/usr/bin/cp", null),
  snapshotCase(
    "snapshot command writable by group (0775) refused",
    0o775,
    "InsufficientPermissionforSnapshotCommand",
  ),
  snapshotCase(
    "snapshot command writable by other (0757) refused",
    0o757,
    "InsufficientPermissionforSnapshotCommand",
  ),
  snapshotCase(
    "snapshot command owned by nobody (0755) refused",
    0o755,
    "InsufficientPermissionforSnapshotCommand",
    NOBODY,
  ),
  {
    name: "snapshot command whose #! interpreter is nobody's refused",
    expect: "InsufficientPermissionforSnapshotCommand",
    setup: (dir) => {
      const interpreter = put(join(dir, "interp"), script, 0o755, NOBODY);
      return putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "l", "x") },
        snapshot: { command: [put(join(dir, "snap"), `#!${interpreter}\n`, 0o755)] },
      });
    },
    mentions: (dir) => join(dir, "interp"),
  },
  interpreterCase("#! interpreter root 0755 passes", { mode: 0o755 }, null),
  interpreterCase(
    "#! interpreter owned by nobody refused",
    { mode: 0o755, uid: NOBODY },
    "InsufficientPermissionforPre-Script",
  ),
  interpreterCase(
    "#! interpreter writable by group refused",
    { mode: 0o775 },
    "InsufficientPermissionforPre-Script",
  ),
  interpreterCase(
    "#! interpreter in a directory nobody owns refused",
    { mode: 0o755, dirOwner: NOBODY },
    "InsufficientPermissionforPre-Script",
  ),
  interpreterCase(
    "#! interpreter that is itself a script with nobody's interpreter refused",
    { mode: 0o755, nested: true },
    "InsufficientPermissionforPre-Script",
  ),
  interpreterCase(
    "#!/usr/bin/env -S PATH to nobody's file refused",
    { mode: 0o755, uid: NOBODY, viaEnv: true },
    "InsufficientPermissionforPre-Script",
  ),
  interpreterCase(
    "a 0600 script is run with /bin/sh: its #! line is not used",
    { mode: 0o755, uid: NOBODY, scriptMode: 0o600 },
    null,
  ),
  {
    name: "#!/usr/bin/env sh passes (sh found in the fixed PATH)",
    expect: null,
    setup: (dir) => withScripts(dir, put(join(dir, "pre.sh"), "#!/usr/bin/env sh\ntrue\n", 0o700)),
  },
  {
    name: "#!/usr/bin/env with a program not in the fixed PATH: Pre-ScriptNotFound",
    expect: "Pre-ScriptNotFound",
    setup: (dir) =>
      withScripts(dir, put(join(dir, "pre.sh"), "#!/usr/bin/env vmsnap-no-such-tool\n", 0o700)),
    mentions: () => "vmsnap-no-such-tool",
  },
  {
    name: "snapshot command 0700 passes",
    expect: null,
    setup: (dir) =>
      putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "l", "x") },
        snapshot: { command: [put(join(dir, "snap"), script, 0o700), "--flag"] },
      }),
  },
  {
    name: "snapshot command missing",
    expect: "SnapshotCommandNotFound",
    setup: (dir) =>
      putConfig(dir, {
        fsFreezeEnabled: false,
        stateDir: join(dir, "state"),
        log: { file: join(dir, "l", "x") },
        snapshot: { command: [join(dir, "nope")] },
      }),
  },
];
