/**
 * `vmsnap group etcd-setup NAME`: the `etcdctl` commands that give a group
 * least privilege in etcd: one role whose only permission is read-write on
 * the group's prefix (`/vmsnap/groups/NAME/`), and one user per member with
 * that role and its own random password, written to a file that goes to that
 * member's VM as `group.etcd.passwordFile`. A member's credentials can then
 * touch its own group's keys and nothing else (leases need no permission in
 * etcd; revoking one needs write access to every key attached to it), on an
 * etcd that checks permissions inside nested transactions (3.4.44, 3.5.30,
 * 3.6.11 or later: `check.ts` warns about an older one).
 *
 * @module
 */
import { checkName, GROUPS_PREFIX } from "./keys.ts";

/** What the commands set up. */
export interface EtcdSetupOptions {
  group: string;
  members: string[];
}

/**
 * The role name of group `group`.
 *
 * @example
 * ```ts
 * import { groupRole } from "./etcd_setup.ts";
 * groupRole("shop"); // "vmsnap-shop"
 * ```
 */
export function groupRole(group: string): string {
  return `vmsnap-${group}`;
}

/**
 * The etcd user name of a member.
 *
 * @example
 * ```ts
 * import { memberUser } from "./etcd_setup.ts";
 * memberUser("shop", "db1"); // "vmsnap-shop-db1"
 * ```
 */
export function memberUser(group: string, member: string): string {
  return `vmsnap-${group}-${member}`;
}

/**
 * The shell lines (comments and `etcdctl` commands) that set the group up,
 * to run as etcd's root user where etcdctl reaches the cluster.
 *
 * @example
 * ```ts
 * import { etcdSetupCommands } from "./etcd_setup.ts";
 * console.log(etcdSetupCommands({ group: "shop", members: ["db1", "app1"] }).join("\n"));
 * ```
 */
export function etcdSetupCommands(options: EtcdSetupOptions): string[] {
  checkName("group", options.group);
  for (const member of options.members) checkName("member", member);
  const role = groupRole(options.group);
  const prefix = `${GROUPS_PREFIX}${options.group}/`;
  const lines = [
    `# vmsnap consistency group "${options.group}": one etcd role limited to ${prefix}, one user per member.`,
    "# Run as etcd's root user, with your connection flags (or ETCDCTL_* variables):",
    "#   export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://ETCD:2379 ETCDCTL_CACERT=… ETCDCTL_CERT=… ETCDCTL_KEY=… ETCDCTL_USER=root",
    "# Authentication must be on (once per cluster, if it is not yet):",
    "#   etcdctl user add root && etcdctl user grant-role root root && etcdctl auth enable",
    "set -e",
    `etcdctl role add ${role}`,
    `etcdctl role grant-permission ${role} readwrite ${prefix} --prefix=true`,
  ];
  for (const member of options.members) {
    const user = memberUser(options.group, member);
    const file = `${user}.password`;
    lines.push(
      `# member ${member}: copy ${file} to ${member} as group.etcd.passwordFile (root:root, mode 0600), then delete it here`,
      `( umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' > ${file} )`,
      `etcdctl user add ${user} --interactive=false < ${file}`,
      `etcdctl user grant-role ${user} ${role}`,
    );
  }
  lines.push(`etcdctl role get ${role}`);
  return lines;
}
