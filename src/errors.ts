/**
 * Every problem vmsnap reports carries a stable `code`. Where Azure Backup's
 * pre/post-script framework has a name for it, the code is Azure's name, so a
 * backup extension that matches on Azure's codes keeps working.
 *
 * @module
 */

/** What each code means and what the admin should do about it. */
export interface CodeInfo {
  /** One line: what went wrong. */
  summary: string;
  /** One line: how to fix it. */
  fix: string;
  /** True when the name is Azure's. */
  azure?: boolean;
}

/** The catalog of codes. docs/errors.md is written from it (scripts/codes_table.ts) and checked by a test. */
export const CODES = {
  ConfigFileNotFound: {
    summary: "The config file does not exist.",
    fix: "Create it (Azure's sample works as is), or point --config / VMSNAP_CONFIG at it.",
  },
  ConfigFileNotReadable: {
    summary: "The config file exists but could not be read.",
    fix: "Run vmsnap as root; the config must be readable by root only.",
  },
  ConfigFileNotRegular: {
    summary:
      "The config path is a directory, device, FIFO or socket, not a regular file; it is not read.",
    fix: "Name the JSON file itself (Azure's is /etc/azure/VMSnapshotScriptPluginConfig.json).",
  },
  IncorrectJSONConfigFile: {
    summary: "The config file is not valid JSON (comments and trailing commas are allowed).",
    fix: "Correct the syntax at the line and column named, or start again from Azure's sample.",
    azure: true,
  },
  InsufficientPermissionforConfigFile: {
    summary:
      "The config file, or a secret file it names, is not a root-owned regular file without group/other or execute bits, or sits in a directory others can write.",
    fix: "chown root:root FILE && chmod 600 FILE, and keep it in a directory only root can write.",
    azure: true,
  },
  InvalidConfigType: {
    summary: "A config value has the wrong JSON type.",
    fix: "Use the type the message names (for example a number without quotes).",
  },
  InvalidConfigValue: {
    summary: "A config value is out of range or not one of the allowed words.",
    fix: "Use a value in the range or from the list the message names.",
  },
  UnknownConfigKey: {
    summary:
      "A config key is not known (often a typo). At the top level run ignores it as Azure does and warns, unless it looks like one of vmsnap's own keys.",
    fix: "Correct the spelling (the message suggests the nearest key) or remove the key.",
  },
  DuplicateConfigKey: {
    summary:
      "The same key appears twice in one object; the last one wins, as in Azure's JSON reader (run warns for Azure's keys, refuses for vmsnap's).",
    fix: "Keep one of them.",
  },
  MissingConfigKey: {
    summary: "A required key is missing.",
    fix: "Add the key the message names.",
  },
  DuplicatePluginName: {
    summary: "Two plugins have the same name.",
    fix: "Give every plugin a unique name (the Azure top-level script keys use pluginName).",
  },
  UnknownPluginType: {
    summary: "A plugin's type is not one this vmsnap knows.",
    fix: 'Use one of the types the message lists, for example "script".',
  },
  RelativePath: {
    summary: "A path in the config is relative; vmsnap runs from / and needs absolute paths.",
    fix: "Write the full path, starting with /.",
  },
  IgnoredConfigKey: {
    summary: "A key from Azure's sample that has no effect in vmsnap (a warning).",
    fix: "Nothing to do; remove the key to silence the warning.",
  },
  EmptyScriptParam: {
    summary:
      'A script parameter is "" (Azure\'s sample placeholder); it is passed as an empty argument (a warning).',
    fix: "Remove the empty strings from the params list unless the script expects them.",
  },
  ConfigValueClamped: {
    summary:
      "An Azure key is out of range in a way Azure's framework tolerates (timeoutInSeconds above 1800, a negative retry count): run uses the bound and warns; check lists it as a problem.",
    fix: "Write the value the message names.",
  },
  ScriptParamNotString: {
    summary:
      'A script parameter is a number, true/false or null: run passes Python\'s str() of it ("1", "True", "None") as Azure does and warns; check lists it as a problem.',
    fix: 'Write the parameter as a string in quotes, for example "1".',
  },
  "Pre-ScriptNotFound": {
    summary: "The pre-script does not exist at the configured path.",
    fix: "Install the script there or correct preScriptLocation / the plugin's pre path.",
    azure: true,
  },
  "Post-ScriptNotFound": {
    summary: "The post-script does not exist at the configured path.",
    fix: "Install the script there or correct postScriptLocation / the plugin's post path.",
    azure: true,
  },
  "InsufficientPermissionforPre-Script": {
    summary:
      "The pre-script (root's, no group/other bits), its #! interpreter or a directory on the way is not root-owned or is open to group/other.",
    fix: "chown root:root SCRIPT && chmod 700 SCRIPT, in a directory only root can write.",
    azure: true,
  },
  "InsufficientPermissionforPost-Script": {
    summary:
      "The post-script (root's, no group/other bits), its #! interpreter or a directory on the way is not root-owned or is open to group/other.",
    fix: "chown root:root SCRIPT && chmod 700 SCRIPT, in a directory only root can write.",
    azure: true,
  },
  SnapshotCommandNotFound: {
    summary: "The snapshot command's executable does not exist.",
    fix: "Install it or correct snapshot.command[0] (an absolute path).",
  },
  InsufficientPermissionforSnapshotCommand: {
    summary:
      "The snapshot command's executable, its #! interpreter or a directory on the way is not root-owned or is writable by group/other.",
    fix:
      "chown root:root FILE && chmod go-w FILE (755 is fine), in directories only root can write.",
  },
  InsecureDirectory: {
    summary:
      "log.file's directory or stateDir exists and is writable by group or other, or not owned by root.",
    fix: "chown root:root DIR && chmod 700 DIR.",
  },
  FreezeMountNotFound: {
    summary: "A mount point in freeze.mounts is not mounted.",
    fix: "Mount it, or correct freeze.mounts (see /proc/self/mountinfo).",
  },
  FreezeNotSupported: {
    summary: "A mount point in freeze.mounts has a filesystem type that cannot be frozen.",
    fix: "Remove it from freeze.mounts; only ext2/3/4, xfs, btrfs and the like can be frozen.",
  },
  FreezeOrder: {
    summary:
      "freeze.mounts freezes a filesystem before one that depends on it; the second freeze can block in the kernel (a warning).",
    fix:
      'List children (and loop filesystems) before the filesystems that hold them, or use "auto".',
  },
  MountinfoUnreadable: {
    summary: "/proc/self/mountinfo could not be read, so no freeze targets are known.",
    fix: "Mount /proc; vmsnap needs it to find filesystems.",
  },
  NotRoot: {
    summary: "vmsnap run was started by a user other than root.",
    fix:
      "Run it as root (sudo vmsnap run ...); freezing filesystems and running root's scripts needs root.",
  },
  InvalidConfig: {
    summary: "vmsnap run found problems in the config (listed with it) and ran nothing.",
    fix: "Run vmsnap check, fix every problem it lists, and run again.",
  },
  NoSnapshotMethod: {
    summary: "vmsnap run has no way to take the snapshot.",
    fix:
      "Set snapshot.command or snapshot.external in the config, or pass --snapshot-command ARGV... or --external.",
  },
  AnotherRunInProgress: {
    summary: "Another vmsnap run holds the run lock in stateDir.",
    fix: "Wait for it to finish; a lock left by a dead process is taken over automatically.",
  },
  "Pre-ScriptExecutionFailed": {
    summary:
      "The pre-script exited non-zero (or could not start) on every attempt; the snapshot is at most filesystem-consistent.",
    fix:
      "Read the script's output in the message and the log, fix the script, then run vmsnap run again.",
    azure: true,
  },
  "Post-ScriptExecutionFailed": {
    summary:
      "The post-script exited non-zero (or could not start) on every attempt; the application may not have resumed.",
    fix:
      "Read the script's output in the message and the log, check the application's state, fix the script.",
    azure: true,
  },
  "Pre-ScriptTimeout": {
    summary:
      "The pre-script did not finish within timeoutInSeconds (all attempts together); its processes were killed (any that could not be are named).",
    fix: "Make the script faster or raise timeoutInSeconds in the config.",
    azure: true,
  },
  "Post-ScriptTimeout": {
    summary:
      "The post-script did not finish within timeoutInSeconds (all attempts together); its processes were killed (any that could not be are named).",
    fix:
      "Make the script faster or raise timeoutInSeconds in the config; check the application's state.",
    azure: true,
  },
  FreezeFailed: {
    summary: "A filesystem could not be frozen; everything frozen was thawed.",
    fix:
      "Read the errno in the message (EOPNOTSUPP: the filesystem cannot freeze; EBUSY: someone else froze it); exclude it or fix the cause.",
  },
  FreezeTimeout: {
    summary:
      "The filesystems stayed frozen longer than freeze.maxFrozenSeconds and the guard thawed them; the snapshot may be inconsistent.",
    fix:
      "Make the snapshot faster or raise freeze.maxFrozenSeconds; check the freeze order (vmsnap check).",
  },
  GuardFailed: {
    summary: "The freeze guard process could not be started, so nothing was frozen.",
    fix:
      "Check that the vmsnap binary can execute itself (noexec mounts, seccomp) and the log for the guard's error.",
  },
  ThawFailed: {
    summary: "A filesystem could not be confirmed thawed.",
    fix: "Run fsfreeze --unfreeze MOUNT now, then vmsnap recover; report the errno in the message.",
  },
  SnapshotFailed: {
    summary:
      "The snapshot command exited non-zero, or the external caller answered snapshot-failed or closed stdin.",
    fix: "Read the command's output in the message and the log; fix the command or the caller.",
  },
  DiscardSnapshot: {
    summary:
      "The snapshot was taken, but a post-script failed and continueBackupOnFailure is false: the backup failed (exit 2).",
    fix:
      "Discard that snapshot (its application state is not what the scripts promised); fix the post-script and run again.",
  },
  SnapshotTimeout: {
    summary:
      "The snapshot command (or the external caller) did not finish within its timeoutInSeconds; it was killed (or named as still running).",
    fix:
      "Make the snapshot faster or raise snapshot.timeoutInSeconds (and freeze.maxFrozenSeconds).",
  },
  Interrupted: {
    summary:
      "vmsnap run received SIGINT, SIGTERM or SIGHUP; it stopped its scripts, thawed and resumed.",
    fix: "Nothing to repair; run again when ready.",
  },
  LogWriteFailed: {
    summary:
      "Log records could not be written (full disk, I/O error); the result still carries every error.",
    fix: "Free space on the log's filesystem or move log.file.",
  },
  LogFileNotRegular: {
    summary:
      "log.file names a FIFO, device, directory or symbolic link, not a regular file; the run goes on without a log file.",
    fix:
      "Remove what is at that path, or point log.file at a regular file in a root-only directory.",
  },
  LogRecordsDropped: {
    summary:
      "More log records came while the filesystems were frozen than vmsnap holds in memory; the first and the latest were kept, the count of the others is in the result and the log (a warning).",
    fix:
      "Make the snapshot command quieter (its output is logged line by line), or send its output elsewhere.",
  },
  StateDirUnwritable: {
    summary:
      "stateDir (the run lock, the freeze marker, the last result) could not be written: a full or read-only filesystem, or an I/O error. At the start of a run: nothing was started.",
    fix:
      "Free space on stateDir's filesystem, remount it read-write, or set stateDir to a writable root-only directory.",
  },
  PluginConnectFailed: {
    summary:
      "A database plugin could not connect (wrong password, server down, bad socket or host).",
    fix:
      "The message names the server and the cause; check the credentials file and that the server runs.",
  },
  PluginQuiesceFailed: {
    summary:
      "A database plugin connected but could not take its lock or flush (often a missing privilege).",
    fix:
      "Grant what the message names (vmsnap check --connect prints the GRANT), or read the server's log.",
  },
  PluginQuiesceTimeout: {
    summary:
      "A database plugin did not get its lock within timeoutInSeconds (a long query, or lock_wait_timeout); nothing was left locked.",
    fix:
      "Run when long queries are done, raise longQuerySeconds/timeoutInSeconds, or set killLongQueries.",
  },
  PluginResumeFailed: {
    summary:
      "A database plugin could not release its lock cleanly; closing its session released it.",
    fix: "Check the database is writable (it should be); read the server's log.",
  },
  PluginLockLost: {
    summary:
      "A database plugin's lock ended before resume (session dropped, server restarted, watchdog); the snapshot may not be application-consistent.",
    fix: "Check the server's log; raise maxHoldSeconds if the watchdog fired.",
  },
  PluginNotHeld: {
    summary:
      "A plugin quiesced without holding writes until the snapshot (Redis in bgsave mode, or older than 6.2): writes after its save may be missing, so the snapshot is at most filesystem-consistent (a warning).",
    fix:
      "To hold writes: Redis 6.2 or later with mode auto or pause. When mode bgsave is what you chose, the run asks for no more than the freeze gives and exits 0.",
  },
  PluginRecovered: {
    summary:
      "A lock left by a dead vmsnap run (MongoDB fsync lock) was found and released (a warning).",
    fix: "Nothing to do; the message says which server and run.",
  },
  Recovered: {
    summary:
      "A previous run died; what it left (frozen filesystems, its processes, guard reports) was found and undone (a warning).",
    fix:
      "Nothing to do; the message says what was done. Find out why the previous run died (its log).",
  },
  ShortSecret: {
    summary:
      "A configured password is shorter than 4 characters: it is hidden in secret fields but cannot be scrubbed from free text (a warning).",
    fix: "Use a longer password (16 or more random characters) for vmsnap's database user.",
  },
  HoldInProgress: {
    summary:
      "vmsnap hook freeze found the holder of an earlier freeze still holding; the first hold was left intact.",
    fix:
      "Send the thaw (or post) hook for the first freeze, or wait for its maxHoldSeconds; vmsnap status shows it.",
  },
  NoHolder: {
    summary:
      "A thaw, post or freezeFail hook found no holder: the freeze hook did not run, failed, or its hold already ended.",
    fix:
      "Read the message and vmsnap status (the last result says how the hold ended); check that the agent runs the freeze hook.",
  },
  HoldTimeout: {
    summary:
      "The holder ended the hold by itself after hook.maxHoldSeconds without a thaw; every plugin was resumed before the snapshot was done.",
    fix:
      "Find out why the agent's thaw/post came late (or never); raise hook.maxHoldSeconds if the snapshot needs longer.",
  },
  HolderDied: {
    summary:
      "The holder process died during the hold (killed); the databases ended its sessions, so the locks were released early.",
    fix:
      "Find out what killed it (dmesg, the OOM killer); the next vmsnap start recovered what it left.",
  },
  HookTimeout: {
    summary:
      "The hook did not finish within its timeout; the holder was told to resume everything and end.",
    fix:
      "Make quiesce faster (plugin timeoutInSeconds), or raise --timeout in the installed hook within the agent's own limit.",
  },
  HookAborted: {
    summary:
      "The freeze hook ended (killed by its agent) before it could report that everything was quiesced; the holder resumed everything.",
    fix: "Check the agent's hook timeout and log; run the freeze again.",
  },
  HolderFailed: {
    summary: "The holder process could not be started or did not come up.",
    fix:
      "Check that the vmsnap binary can execute itself (noexec mounts, seccomp) and the log for the holder's error.",
  },
  InstallFailed: {
    summary: "vmsnap install or uninstall could not write or remove a file.",
    fix: "Run it as root; the message names the file and the error.",
  },
  AgentSetupUnknown: {
    summary:
      "vmsnap install could not tell where the backup agent on this system runs its hook, or how to switch it on; nothing was changed.",
    fix:
      "Name what it could not find: --hook-dir DIR (the directory the agent's hook script runs), --agent-config FILE (the agent's config file); the message lists the paths it looked at.",
  },
  HookNotRun: {
    summary:
      "The backup agent will not run vmsnap's installed hook as it is set up now (its hook switched off or pointing elsewhere, the hook file changed or gone, its freeze command blocked).",
    fix: "Run vmsnap install --for AGENT again, or undo the change the message names.",
  },
  SelinuxConfined: {
    summary:
      "SELinux confines the agent, and vmsnap's hook would run inside the agent's domain (not labelled as the vendor's way out, or its boolean off): it cannot reach a database socket or start the holder.",
    fix:
      "Run the commands the message names (semanage fcontext, restorecon, setsebool -P), or vmsnap install --for AGENT --selinux-boolean.",
  },
  SelinuxDenied: {
    summary: "The audit log has SELinux denials (AVC) of vmsnap.",
    fix: "Apply the fix the message gives for the domain vmsnap ran in, then run the hook again.",
  },
  AgentTimeout: {
    summary:
      "The backup agent waits less for its hook, or for the whole snapshot, than vmsnap's hook or hold may take: the agent gives up (or snapshots) while vmsnap still quiesces or holds.",
    fix:
      "Raise the agent's timeout, or run vmsnap install --for AGENT again so the hook's --timeout follows the agent's.",
  },
  ConfigExists: {
    summary: "vmsnap init found a config at the path already and wrote nothing.",
    fix: "See the starter with vmsnap init --dry-run and merge by hand, or move the file away.",
  },
  DeadRunLeftover: {
    summary:
      "A dead run left something behind (a freeze marker, its processes, a database lock, a guard's report); vmsnap check only reports it.",
    fix:
      "Run vmsnap recover as root (vmsnap run does the same before it starts); find out why the run died (its log).",
  },
  UntrustedState: {
    summary:
      "Recovery refused to act: the config or its stateDir fails the permission rules, so what it names could be forged.",
    fix:
      "chown root:root and chmod 600 the config, chown root:root and chmod 700 stateDir, then run vmsnap recover again.",
  },
  GroupEtcdUnreachable: {
    summary:
      "No etcd endpoint of group.etcd answered within the deadline, or this member lost etcd during a group run for longer than its bound (it thawed and resumed at once).",
    fix:
      "Check the endpoints (scheme, host, port), the network path and that etcd runs: vmsnap check --connect, etcdctl endpoint health.",
  },
  GroupEtcdAuthFailed: {
    summary:
      "etcd refused this member: wrong user or password, authentication enabled but no user configured, or the TLS handshake failed (CA, client certificate).",
    fix:
      "Check group.etcd's username and password file, caFile, certFile and keyFile against etcd's settings; vmsnap check --connect names the failing step.",
  },
  GroupEtcdPermissionDenied: {
    summary:
      "This member's etcd user may not read or write the group's keys (/vmsnap/groups/NAME/).",
    fix:
      "Grant the member's user the group's role: vmsnap group etcd-setup NAME prints the etcdctl commands.",
  },
  GroupEtcdError: {
    summary: "etcd answered a request with an error; the message carries etcd's own.",
    fix: "Read etcd's message and check the cluster's health (etcdctl endpoint health, its log).",
  },
  GroupEtcdOpen: {
    summary:
      "A warning of vmsnap check --connect: etcd's authentication is off, or this member's etcd user may write beyond its group's prefix.",
    fix:
      "Enable etcd's authentication and give each member only its group's role: vmsnap group etcd-setup NAME prints the commands.",
  },
  GroupTlsInvalid: {
    summary:
      "group.etcd's CA, client certificate or key is not valid PEM, or the key does not match the certificate.",
    fix:
      "Point caFile, certFile and keyFile at PEM files (openssl x509 -in FILE -noout; openssl pkey -in FILE -noout).",
  },
  GroupLate: {
    summary:
      "This member started after the group run it belonged to had ended (it did not join within the join window); it took no part and froze nothing.",
    fix:
      "Start the members closer together (the same timer, or one orchestrator), or raise the join window; vmsnap group status NAME shows why the run ended.",
  },
  GroupMembersMismatch: {
    summary:
      "The group run's member list differs from this member's group.members, or does not name this member: the group's configs disagree (the run was aborted).",
    fix: "Give every member the same group.members list, with each member's own name in it.",
  },
  GroupMemberBusy: {
    summary:
      "The current group run already has a live member of this name: another VM configured with the same member name, or a vmsnap of this member that died less than a lease TTL ago.",
    fix:
      "Give each VM its own group.member name; after a crash, run again once the lease has expired (seconds).",
  },
  GroupAborted: {
    summary:
      "The group run was aborted (the message names the member and its reason): every member thawed and resumed at once, and the group has no consistent snapshot.",
    fix: "Read the reason; vmsnap group status NAME shows each member's phase and result.",
  },
  GroupBarrierTimeout: {
    summary:
      "Not every member reached the group's barrier within its deadline (the message names the missing members); the group run was aborted.",
    fix:
      "Find out why those members were late or absent (their log, vmsnap group status NAME); raise barrierTimeoutSeconds or the join window if they are only slow.",
  },
  GroupMemberLost: {
    summary:
      "A member's etcd lease expired before it reported (its vmsnap died or was stopped, or it lost etcd); the group run was aborted.",
    fix: "Read that member's own result and log (vmsnap status on it) to see what happened there.",
  },
  InternalError: {
    summary: "vmsnap met an error it did not expect; it thawed and resumed what it had started.",
    fix: "Report it with the log file; the message carries the stack.",
  },
  UsageError: {
    summary: "The command line has an unknown command or option or a bad value (exit 64).",
    fix: "See vmsnap --help; the message suggests the nearest valid word.",
  },
} as const satisfies Record<string, CodeInfo>;

/** A stable error code. */
export type Code = keyof typeof CODES;

/** One problem (or warning) found by a check, with where it comes from. */
export interface Problem {
  /** Stable code, see {@linkcode CODES}. */
  code: Code;
  /** Names the file, the rule that failed, and the fix. */
  message: string;
  /** JSON path in the config, e.g. `plugins[0].pre`. */
  path?: string;
  /** 1-based line in the config file. */
  line?: number;
  /** 1-based column in the config file. */
  column?: number;
  /** The plugin the problem belongs to. */
  plugin?: string;
  /** Tolerated as Azure's framework tolerates it: `run` goes on and warns; `check` lists it as a problem. */
  lenient?: true;
}

/** What a {@linkcode VmsnapError} carries besides its code and message. */
export interface VmsnapErrorOptions {
  /** The problems behind the error, when there are several. */
  problems?: Problem[];
  /** The error this one wraps (kept, never lost). */
  cause?: unknown;
  /** The plugin the error belongs to. */
  plugin?: string;
}

/**
 * An error with a stable code, thrown where a problem stops the command.
 * Every error vmsnap throws on purpose is one (or a subclass): only these are
 * trusted to carry a code of {@linkcode CODES}.
 *
 * @example
 * ```ts
 * import { VmsnapError } from "./errors.ts";
 * throw new VmsnapError("ConfigFileNotFound", "/etc/azure/x.json does not exist. Fix: create it.");
 * ```
 */
export class VmsnapError extends Error {
  /** Stable code, see {@linkcode CODES}. */
  readonly code: Code;
  /** The problems behind the error, when there are several. */
  readonly problems: Problem[];
  /** The plugin the error belongs to. */
  readonly plugin?: string;

  /** `options` may also be the list of problems (older callers). */
  constructor(code: Code, message: string, options: VmsnapErrorOptions | Problem[] = {}) {
    const opts = Array.isArray(options) ? { problems: options } : options;
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "VmsnapError";
    this.code = code;
    this.problems = opts.problems ?? [];
    if (opts.plugin !== undefined) this.plugin = opts.plugin;
  }
}

/** True when `code` is one of vmsnap's codes (a driver's `ER_*` or errno name is not). */
export function isCode(code: unknown): code is Code {
  return typeof code === "string" && Object.hasOwn(CODES, code);
}

/**
 * Turns anything thrown into a problem. Only a {@linkcode VmsnapError} is
 * trusted to carry its code; anything else (a driver's error with its own
 * `code`, a TypeError) gets `fallback`, with its message kept.
 *
 * @example
 * ```ts
 * import { toProblem } from "./errors.ts";
 * toProblem(Object.assign(new Error("denied"), { code: "ER_ACCESS_DENIED_ERROR" }), "PluginConnectFailed").code; // "PluginConnectFailed"
 * ```
 */
export function toProblem(error: unknown, fallback: Code, plugin?: string): Problem {
  if (error instanceof VmsnapError) {
    const owner = error.plugin ?? plugin;
    return {
      ...error.problems[0],
      code: error.code,
      message: error.message,
      ...(owner ? { plugin: owner } : {}),
    };
  }
  const e = error as { message?: unknown; code?: unknown } | undefined;
  const own = e?.code !== undefined ? ` (${String(e.code)})` : "";
  const text = typeof e?.message === "string" ? `${e.message}${own}` : String(error);
  if (!plugin) return { code: fallback, message: text };
  return { code: fallback, message: `plugin "${plugin}": ${text}`, plugin };
}

/**
 * Formats a file mode as four octal digits, as `stat -c %a` and chmod use it.
 *
 * @example
 * ```ts
 * import { octal } from "./errors.ts";
 * octal(0o100755); // "0755"
 * ```
 */
export function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/**
 * The problem with a fix in its message: the catalog's fix is appended when
 * the message does not carry its own `Fix:`.
 *
 * @example
 * ```ts
 * import { withFix } from "./errors.ts";
 * withFix({ code: "UsageError", message: "unknown option --x." }).message; // "… Fix: See vmsnap --help; …"
 * ```
 */
export function withFix(problem: Problem): Problem {
  if (problem.message.includes("Fix:")) return problem;
  const info: CodeInfo | undefined = isCode(problem.code) ? CODES[problem.code] : undefined;
  return info ? { ...problem, message: `${problem.message} Fix: ${info.fix}` } : problem;
}
