/**
 * Crash paths found by review and adversarial testing, through the binary:
 * each ends in a coded error, never an unhandled exception.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CODES } from "../../src/errors.ts";
import { dbDir, startMariaDb } from "../db_servers.ts";
import { json, put, runBin } from "../helpers.ts";
import { runFixture } from "../run_fixture.ts";

Deno.test({
  name:
    "check --connect: a driver error with its own code (MariaDB ER_MUST_CHANGE_PASSWORD after login) is a coded problem, not a TypeError",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    try {
      const secret = "Expired-pw-5521";
      // An expired password: MariaDB lets the login in (sandbox mode), then refuses every query.
      server.sql(
        `CREATE USER 'old'@'localhost' IDENTIFIED BY '${secret}'; GRANT RELOAD, PROCESS ON *.* TO 'old'@'localhost'; ALTER USER 'old'@'localhost' PASSWORD EXPIRE`,
      );
      const pw = put(join(f.dir, "old.pw"), `${secret}\n`, 0o600);
      const config = f.config({
        fsFreezeEnabled: false,
        plugins: [{
          type: "mysql",
          name: "shop",
          socket: server.socket,
          user: "old",
          passwordFile: pw,
        }],
      });
      const ran = await runBin(["check", "--connect", "--json", "--config", config]);
      assert.doesNotMatch(ran.stderr, /TypeError|at \S+\.ts:\d+/, ran.stderr);
      assert.equal(ran.code, 1, ran.stderr);
      const report = json<{ ok: boolean; problems: { code: string; message: string }[] }>(ran);
      assert.equal(report.ok, false);
      const [problem] = report.problems;
      assert.ok(problem.code in CODES, `a code of vmsnap's: ${problem.code}`);
      assert.equal(problem.code, "PluginConnectFailed");
      assert.match(problem.message, /shop/);
      assert.match(problem.message, /ER_MUST_CHANGE_PASSWORD|expired|must change/i);
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});
