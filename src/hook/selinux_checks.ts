/**
 * What `vmsnap check` says about SELinux: its mode and policy; for an
 * installed qemu-ga hook, whether qemu-ga would run it unconfined (the
 * policy's label of the hook, the boolean `virt_qemu_ga_run_unconfined`);
 * and the recent AVC denials of vmsnap (from `ausearch` on the running
 * system, else the audit log), each with its fix. Denials in permissive
 * mode are warnings (nothing was stopped); in enforcing mode, problems.
 *
 * @module
 */
import { posix } from "node:path";
import type { Problem } from "../errors.ts";
import {
  ausearchCommand,
  type AvcDenial,
  detectSelinux,
  fcontextSpec,
  fileContextFor,
  parseAvcDenials,
  parseGetsebool,
  QGA_DOMAIN,
  QGA_UNCONFINED_BOOLEAN,
  QGA_UNCONFINED_TYPE,
  readAvcDenials,
  runSelinuxCommands,
  type SelinuxState,
} from "../sys/selinux.ts";
import type { Manifest } from "./install.ts";

/** Denials older than this are history, not news. */
const RECENT_SECONDS = 7 * 24 * 3600;

/** What the SELinux checks found (the shape of ./agent_checks.ts). */
export interface SelinuxFindings {
  steps: { name: string; ok: boolean; warning?: boolean; detail: string }[];
  problems: Problem[];
  warnings: Problem[];
}

/** vmsnap's qemu-ga hook would run confined: the label, or the boolean. */
function qemuGaConfinement(state: SelinuxState, root: string, hookFile: string): string[] {
  const found: string[] = [];
  const label = state.policyType
    ? fileContextFor({ root, policyType: state.policyType, path: hookFile })
    : undefined;
  if (label?.type !== QGA_UNCONFINED_TYPE) {
    found.push(
      `the policy labels vmsnap's hook ${hookFile} ${
        label?.type ?? "by no rule"
      }, not ${QGA_UNCONFINED_TYPE}, so qemu-ga runs it confined as ${QGA_DOMAIN}. Run: semanage fcontext -a -t ${QGA_UNCONFINED_TYPE} '${
        fcontextSpec(hookFile)
      }' && restorecon -v ${hookFile} (vmsnap install --for qemu-ga does)`,
    );
  }
  const getsebool = state.tools.getsebool;
  if (getsebool) {
    const [ran] = runSelinuxCommands([[getsebool, QGA_UNCONFINED_BOOLEAN]], {});
    if (parseGetsebool(ran.stdout) === false) {
      found.push(
        `the boolean ${QGA_UNCONFINED_BOOLEAN} is off, so qemu-ga runs vmsnap's hook confined as ${QGA_DOMAIN}: it cannot reach a database socket or start the holder. Run: setsebool -P ${QGA_UNCONFINED_BOOLEAN} on (or vmsnap install --for qemu-ga --selinux-boolean)`,
      );
    }
  }
  return found;
}

/** The recent denials of vmsnap: ausearch on the running system, else the audit log. */
function recentDenials(state: SelinuxState, root: string, now: number): {
  source: string;
  denials: AvcDenial[];
} {
  let source: string;
  let denials: AvcDenial[];
  if (root === "/" && state.tools.ausearch) {
    const argv = [...ausearchCommand("vmsnap"), "-ts", "this-week"];
    const [ran] = runSelinuxCommands([[state.tools.ausearch, ...argv.slice(1)]], {});
    source = argv.join(" ");
    denials = parseAvcDenials(ran.stdout, "vmsnap");
  } else {
    const read = readAvcDenials({ root, comm: "vmsnap" });
    source = read.log;
    denials = read.denials;
  }
  const since = now / 1000 - RECENT_SECONDS;
  return { source, denials: denials.filter((d) => Number(d.stamp.split(":")[0]) >= since) };
}

/** Denials alike (same domain, target type, class and permissions) as one problem each. */
function denialProblems(
  denials: AvcDenial[],
  source: string,
): { problem: Problem; permissive: boolean }[] {
  const groups = new Map<string, AvcDenial[]>();
  for (const d of denials) {
    const key = [d.scontext, d.tcontext, d.tclass, d.permissions.join(" "), d.permissive].join("|");
    groups.set(key, [...(groups.get(key) ?? []), d]);
  }
  return [...groups.values()].map((group) => {
    const d = group[group.length - 1];
    const when = new Date(Number(d.stamp.split(":")[0]) * 1000).toISOString();
    const problem: Problem = {
      code: "SelinuxDenied",
      message: `SELinux ${d.permissive ? "logged (permissive)" : "denied"} vmsnap { ${
        d.permissions.join(" ")
      } } on ${d.target ? `${d.target} ` : ""}(${d.tclass}, ${
        d.tcontext.split(":")[2] ?? d.tcontext
      }) running as ${d.scontext.split(":")[2] ?? d.scontext}, ${group.length} time${
        group.length > 1 ? "s" : ""
      }, last at ${when} (${source}). Fix: ${d.fix}.`,
    };
    return { problem, permissive: d.permissive };
  });
}

/**
 * SELinux's part of check.
 *
 * @example
 * ```ts
 * import { selinuxChecks } from "./selinux_checks.ts";
 * const found = selinuxChecks({ root: "/" });
 * for (const p of found.problems) console.log(p.message);
 * ```
 */
export function selinuxChecks(
  options: { root: string; qemuGa?: Manifest; now?: number },
): SelinuxFindings {
  const { root } = options;
  const state = detectSelinux({ root });
  if (state.mode === "absent") return { steps: [], problems: [], warnings: [] };
  const detail = `${state.mode}, policy ${state.policyType ?? "unknown"} (${state.modeSource})`;
  if (state.mode === "disabled") {
    return { steps: [{ name: "SELinux", ok: true, detail }], problems: [], warnings: [] };
  }
  const hookFile = options.qemuGa?.files.find((f) => posix.basename(f.path) === "vmsnap")?.path;
  const confined = hookFile ? qemuGaConfinement(state, root, hookFile) : [];
  const { source, denials } = recentDenials(state, root, options.now ?? Date.now());
  const denied = denialProblems(denials, source);
  const enforcing = state.mode === "enforcing";
  const confinedProblems: Problem[] = confined.map((message) => ({
    code: "SelinuxConfined",
    message: `${message}.`,
  }));
  const problems = [
    ...(enforcing ? confinedProblems : []),
    ...denied.filter((d) => !d.permissive).map((d) => d.problem),
  ];
  const warnings = [
    ...(enforcing ? [] : confinedProblems),
    ...denied.filter((d) => d.permissive).map((d) => d.problem),
  ];
  return {
    steps: [{
      name: "SELinux",
      ok: problems.length === 0,
      ...(warnings.length ? { warning: true } : {}),
      detail: problems.length === 0
        ? `${detail}; ${denials.length} recent denial(s) of vmsnap`
        : `${problems.length} problem${problems.length > 1 ? "s" : ""}`,
    }],
    problems,
    warnings,
  };
}
