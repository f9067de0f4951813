/**
 * Permission attacks, secrets and the scripts' environment, through
 * `vmsnap run`: each attack is refused before the file runs.
 */
import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { assertNoSecret, NOBODY, put, resultOf, runBin, startBin, waitFor } from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";

const options = { sanitizeResources: false, sanitizeOps: false };

/** The attacker's script: it leaves a trace if it ever runs. */
const evil = (trace: string) => `#!/bin/sh\ntouch "${trace}"\n`;

Deno.test({
  ...options,
  name: "security: permission attacks are refused before anything runs",
  fn: async (t) => {
    const f = runFixture();
    try {
      const trace = f.path("attacker.ran");
      const attempt = async (name: string, preScriptLocation: string, code: string) => {
        const ran = await runBin([
          "run",
          "--json",
          "--config",
          f.config({ preScriptLocation }, `${name}.json`),
        ]);
        const result = resultOf(ran.stdout);
        assert.ok(
          result.errors.some((e: { code: string }) => e.code === code),
          `${name}: ${ran.stdout}`,
        );
        assert.ok(!existsSync(trace), `${name}: the attacker's script ran`);
      };
      await t.step("a script swapped through a group-writable directory", async () => {
        const shared = f.path("shared");
        mkdirSync(shared, { mode: 0o775 });
        chmodSync(shared, 0o775);
        put(join(shared, "pre.sh"), evil(trace), 0o700); // root's file, but the group can rename it away
        await attempt(
          "group-writable",
          join(shared, "pre.sh"),
          "InsufficientPermissionforPre-Script",
        );
      });
      await t.step("a symlink into a user-owned directory", async () => {
        const home = f.path("home");
        put(join(home, "pre.sh"), evil(trace), 0o700);
        chownSync(home, NOBODY, NOBODY);
        symlinkSync(join(home, "pre.sh"), f.path("linked.sh"));
        await attempt("symlink", f.path("linked.sh"), "InsufficientPermissionforPre-Script");
      });
      await t.step("a hard link to a user-owned file", async () => {
        put(f.path("user.sh"), evil(trace), 0o700, NOBODY);
        linkSync(f.path("user.sh"), f.path("hardlink.sh"));
        await attempt("hardlink", f.path("hardlink.sh"), "InsufficientPermissionforPre-Script");
      });
      await t.step("a setuid script", async () => {
        put(f.path("setuid.sh"), evil(trace), 0o4700);
        await attempt("setuid", f.path("setuid.sh"), "InsufficientPermissionforPre-Script");
      });
      await t.step("a config owned by a user: nothing runs at all", async () => {
        put(f.path("ok.sh"), evil(trace), 0o700);
        const config = f.config({ preScriptLocation: f.path("ok.sh") }, "owned.json");
        chownSync(config, NOBODY, NOBODY);
        const ran = await runBin(["run", "--json", "--config", config]);
        assert.equal(ran.code, 2);
        assert.deepEqual(resultOf(ran.stdout).errors.map((e: { code: string }) => e.code), [
          "InsufficientPermissionforConfigFile",
        ]);
        assert.ok(!existsSync(trace));
      });
      await t.step("a script made writable between attempts is refused on the retry", async () => {
        const count = f.path("count");
        const pre = put(f.path("retry.sh"), `#!/bin/sh\necho x >> "${count}"\nexit 1\n`, 0o700);
        const run = startBin([
          "run",
          "--json",
          "--config",
          f.config(
            { preScriptLocation: pre, preScriptNoOfRetries: 3, timeoutInSeconds: 20 },
            "retry.json",
          ),
        ]);
        await waitFor("the first attempt", () => existsSync(count));
        chmodSync(pre, 0o777); // during the backoff: anyone could now change what runs next
        const ran = await run.done;
        const result = resultOf(ran.stdout);
        assert.ok(
          result.errors.some((e: { code: string }) =>
            e.code === "InsufficientPermissionforPre-Script"
          ),
          ran.stdout,
        );
        assert.equal(
          readFileSync(count, "utf8").trim().split("\n").length,
          1,
          "no second attempt ran",
        );
      });
      await t.step("a script replaced by a user's file through a rename is refused", async () => {
        const dir = f.path("opt");
        mkdirSync(dir, { mode: 0o700 });
        put(join(dir, "pre.sh"), "#!/bin/sh\ntrue\n", 0o700);
        const config = f.config({ preScriptLocation: join(dir, "pre.sh") }, "replaced.json");
        put(f.path("swap.sh"), evil(trace), 0o700, NOBODY);
        renameSync(f.path("swap.sh"), join(dir, "pre.sh"));
        const ran = await runBin(["run", "--json", "--config", config]);
        assert.ok(
          resultOf(ran.stdout).errors.some((e: { code: string }) =>
            e.code === "InsufficientPermissionforPre-Script"
          ),
        );
        assert.ok(!existsSync(trace));
      });
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name: "security: every plugin's secrets are absent from the log, stdout, stderr and the result",
  fn: async () => {
    const f = runFixture();
    try {
      const secrets = [
        "Mysql-Inline-Secret-1",
        "Pg-File-Secret-2",
        "Mongo-Uri-Secret-3",
        "Pg-Inline-Secret-4",
      ];
      const pgFile = put(f.path("pg.pw"), `${secrets[1]}\n`, 0o600);
      const config = f.config({
        plugins: [
          {
            type: "mysql",
            name: "my",
            socket: f.path("no-mysql.sock"),
            user: "u",
            password: secrets[0],
            timeoutInSeconds: 2,
          },
          {
            type: "postgresql",
            name: "pg",
            host: f.path("nopg"),
            user: "u",
            passwordFile: pgFile,
            timeoutInSeconds: 2,
          },
          {
            type: "mongodb",
            name: "mo",
            uri: `mongodb://u:${secrets[2]}@127.0.0.1:1/?directConnection=true`,
            timeoutInSeconds: 2,
          },
          {
            type: "postgresql",
            name: "pg2",
            host: f.path("nopg"),
            user: "u",
            password: secrets[3],
            timeoutInSeconds: 2,
          },
        ],
      });
      const logFile = join(f.dir, "log", "vmsnap.jsonl");
      for (
        const args of [["run", "--json"], ["run"], ["check", "--json"], ["check", "--connect"], [
          "check",
          "--connect",
          "--json",
        ]]
      ) {
        const ran = await runBin([...args, "--config", config], { timeoutMs: 30_000 });
        for (const secret of secrets) {
          assertNoSecret(secret, ran, logFile);
        }
      }
      assert.ok(
        readFileSync(logFile, "utf8").includes("PluginConnectFailed"),
        "the log has the failures, without the secrets",
      );
    } finally {
      f.cleanup();
    }
  },
});

Deno.test({
  ...options,
  name:
    "security: nothing of vmsnap's environment reaches scripts (LD_PRELOAD, LD_LIBRARY_PATH, BASH_ENV, …)",
  fn: async () => {
    const f = runFixture();
    try {
      const pre = put(f.path("env.sh"), `#!/bin/sh\nenv > "${f.path("env.txt")}"\n`, 0o700);
      const hostile = {
        LD_PRELOAD: "",
        LD_LIBRARY_PATH: "/tmp/evil",
        BASH_ENV: "/tmp/evil.sh",
        ENV: "/tmp/evil.sh",
        PYTHONPATH: "/tmp/evil",
        PERL5LIB: "/tmp/evil",
        IFS: "x",
        SECRET: "inherited",
      };
      const ran = await runBin(
        ["run", "--json", "--config", f.config({ preScriptLocation: pre })],
        { env: hostile },
      );
      assert.equal(ran.code, 0, ran.stdout);
      const names = readFileSync(f.path("env.txt"), "utf8").trim().split("\n").map((l) =>
        l.split("=")[0]
      );
      for (const name of Object.keys(hostile)) {
        assert.ok(!names.includes(name), `${name} reached the script`);
      }
      const allowed = new Set([
        "PATH",
        "LANG",
        "HOME",
        "VMSNAP_PHASE",
        "VMSNAP_RUN_ID",
        "VMSNAP_ATTEMPT",
        "VMSNAP_PLUGIN",
        "VMSNAP_PROCESS_TAG",
        "PWD",
        "SHLVL",
        "_",
      ]);
      assert.deepEqual(names.filter((n) => !allowed.has(n)), []);
      writeFileSync(f.path("env.txt"), "");
    } finally {
      f.cleanup();
    }
  },
});
