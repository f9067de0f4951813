/**
 * `vmsnap init` through the binary, with real MariaDB and PostgreSQL servers
 * running: it finds them by their processes' sockets, writes a root-only
 * config that parses, never overwrites it, and the users and GRANTs its
 * comments name are exactly what `check --connect` then accepts.
 */
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseConfig } from "../../src/config/config.ts";
import { PLUGINS } from "../../plugins/registry.ts";
import { spawnSync } from "node:child_process";
import { BIN, json, put, runBin, secureDir } from "../helpers.ts";
import { dbDir, startMariaDb, startPostgres } from "../db_servers.ts";
import { privateSystem } from "../private_system.ts";

interface Entry {
  type: string;
  name: string;
  socket?: string;
  host?: string;
  port?: number;
  passwordFile?: string;
}

/** The SQL lines of the comment above the entry that names `socket`, with the password set. */
function grantsFor(text: string, socket: string, password: string): string[] {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.includes(`listening on ${socket}`));
  assert.ok(start >= 0, `no comment names ${socket}`);
  const sql: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.trim().startsWith("//")) break;
    const statement = line.trim().replace(/^\/\/\s+/, "");
    if (/^(CREATE|GRANT) /.test(statement)) {
      sql.push(statement.replace("'PASSWORD'", `'${password}'`));
    }
  }
  return sql;
}

Deno.test("init --detect: MariaDB and PostgreSQL found, config written once, its GRANTs suffice", async () => {
  const { dir, cleanup } = secureDir("init-");
  const db = dbDir();
  const maria = await startMariaDb(db.dir);
  const pg = await startPostgres(db.dir);
  try {
    const config = join(dir, "etc", "vmsnap.json");
    const dry = await runBin(["init", "--detect", "--dry-run", "--config", config]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.throws(() => statSync(config), "--dry-run writes nothing");
    const parsed = parseConfig(dry.stdout, config, { plugins: PLUGINS });
    assert.deepEqual([...parsed.problems, ...parsed.lenient], []);

    const wrote = await runBin(["init", "--detect", "--config", config]);
    assert.equal(wrote.code, 0, wrote.stderr);
    assert.match(wrote.stdout, /^wrote .* \(root, 0600\)/);
    const stat = statSync(config);
    assert.equal(stat.mode & 0o777, 0o600);
    assert.equal(stat.uid, 0);
    const text = readFileSync(config, "utf8");
    const { config: loaded, problems } = parseConfig(text, config, { plugins: PLUGINS });
    assert.deepEqual(problems, []);
    const plugins = loaded.plugins as unknown as Entry[];
    const mine = {
      mariadb: plugins.find((p) => p.type === "mysql" && p.socket === maria.socket),
      pg: plugins.find((p) =>
        p.type === "postgresql" && p.host === pg.socketDir && p.port === pg.port
      ),
    };
    assert.ok(mine.mariadb, JSON.stringify(plugins));
    assert.ok(mine.pg, JSON.stringify(plugins));
    assert.ok(loaded.freeze.mounts.includes(maria.fs.mountPoint), "its filesystem is listed");

    // Never over an existing config.
    const again = await runBin(["init", "--detect", "--config", config]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /\[ConfigExists\]/);
    assert.equal(readFileSync(config, "utf8"), text);

    // The placeholders are flagged until the admin does what the comments say.
    const names = [mine.mariadb!.name, mine.pg!.name];
    const ours = (report: { problems: { plugin?: string; message: string }[] }) =>
      report.problems.filter((p) =>
        names.some((n) => p.plugin === n || p.message.includes(`"${n}"`))
      );
    const before = json<{ problems: { plugin?: string; message: string }[] }>(
      await runBin(["check", "--json", "--config", config]),
    );
    assert.ok(ours(before).length >= 2, JSON.stringify(before.problems));

    const password = "init-test-Secret-42";
    for (const statement of grantsFor(text, maria.socket, password)) maria.sql(statement);
    const pgSocket = join(pg.socketDir, `.s.PGSQL.${pg.port}`);
    for (const statement of grantsFor(text, pgSocket, password)) pg.sql(statement);
    put(mine.mariadb!.passwordFile!, `${password}\n`, 0o600);
    put(mine.pg!.passwordFile!, `${password}\n`, 0o600);
    const after = json<{ problems: { plugin?: string; message: string }[] }>(
      await runBin(["check", "--json", "--connect", "--config", config]),
    );
    assert.deepEqual(ours(after), []);
  } finally {
    await pg.stop();
    await maria.stop();
    db.cleanup();
    cleanup();
  }
});

Deno.test("init as another user than root writes nothing and says NotRoot", () => {
  const { dir, cleanup } = secureDir("init-user-");
  try {
    const config = join(dir, "vmsnap.json");
    const ran = spawnSync("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      BIN,
      "init",
      "--config",
      config,
    ], { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } });
    assert.equal(ran.status, 2, ran.stdout + ran.stderr);
    assert.match(ran.stderr, /\[NotRoot\]/);
    assert.throws(() => statSync(config));
  } finally {
    cleanup();
  }
});

Deno.test({
  name: "init --detect names the backup agents found here and the install command for each",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { dir, cleanup } = secureDir("init-agents-");
    // This machine's /etc, copy-on-write: qemu-guest-agent is installed here (Debian's unit).
    const system = await privateSystem({ scratch: join(dir, "scratch") });
    try {
      const config = "/etc/vmsnap/vmsnap.json";
      const dry = await system.vmsnap(["init", "--detect", "--dry-run", "--config", config]);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(
        dry.stdout,
        /^\/\/ Backup agents found here; each calls vmsnap's hook once installed for it:$/m,
      );
      assert.match(
        dry.stdout,
        /^\/\/ {3}qemu-ga \(systemd \/(usr\/)?lib\/systemd\/system\/qemu-guest-agent\.service\): vmsnap install --for qemu-ga --config \/etc\/vmsnap\/vmsnap\.json$/m,
      );
      parseConfig(dry.stdout, config, { plugins: PLUGINS });
      const wrote = await system.vmsnap(["init", "--detect", "--config", config]);
      assert.equal(wrote.code, 0, wrote.stderr);
      assert.match(wrote.stdout, /backup agents: qemu-ga \(systemd /);
      assert.match(
        wrote.stdout,
        /^ {2}vmsnap install --for qemu-ga --config \/etc\/vmsnap\/vmsnap\.json$/m,
      );
      // Once installed, init says so instead of proposing it again.
      const installed = await system.vmsnap(["install", "--for", "qemu-ga", "--config", config]);
      assert.equal(installed.code, 0, installed.stderr);
      const after = await system.vmsnap([
        "init",
        "--detect",
        "--dry-run",
        "--config",
        "/etc/vmsnap/other.json",
      ]);
      assert.match(after.stdout, /^\/\/ {3}qemu-ga \(.*\): installed$/m);
    } finally {
      await system.stop();
      cleanup();
    }
  },
});
