/**
 * Hook mode as VMware Tools, Azure Backup, Google's guest agent and AWS's
 * SSM agent call it: `vmsnap install --for X --root <prefix>`, then the
 * installed files run exactly as each agent runs them (arguments, `sh` for
 * Azure, no stdin, output read until end of file), with a real MariaDB held
 * between the two calls. For gcp and aws vmsnap freezes the test's loop
 * mount itself between pre and post.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { put, runBin, timeToWrite } from "../helpers.ts";
import { dbDir, mariadbWrite, startMariaDb } from "../db_servers.ts";
import { type RunFixture, runFixture } from "../run_fixture.ts";
import { agentCall, descriptors, lastResult } from "../hook_agent.ts";

const SLEEP = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Installs for an agent under a fresh prefix; returns the prefix and the printed changes. */
function installFor(f: RunFixture, agent: string, config: string) {
  const prefix = join(f.dir, `root-${agent}`);
  mkdirSync(prefix, { recursive: true, mode: 0o755 });
  return {
    prefix,
    install: () => runBin(["install", "--for", agent, "--root", prefix, "--config", config]),
  };
}

/** A write to MariaDB is held while the hold lasts, and completes after it. */
async function heldWrite(server: { socket: string }, id: number) {
  const write = mariadbWrite(server.socket, `INSERT INTO app.t VALUES (${id})`, 20_000);
  const first = await Promise.race([
    write.then(() => "finished"),
    SLEEP(800).then(() => "waiting"),
  ]);
  assert.equal(first, "waiting", "the write waits while the hold lasts");
  return { write };
}

Deno.test({
  name: "hook mode as each agent calls it: vmware, azure, gcp, aws",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const f = runFixture();
    const db = dbDir();
    const server = await startMariaDb(db.dir);
    try {
      server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB");
      const config = f.config({
        plugins: [{ type: "mysql", name: "shop", socket: server.socket }],
      });
      const state = f.path("state");

      await t.step(
        "vmware: backupScripts.d/vmsnap freeze, thaw; then freeze, freezeFail",
        async () => {
          const { prefix, install } = installFor(f, "vmware", config);
          const installed = await install();
          assert.equal(installed.code, 0, installed.stderr);
          const script = join(prefix, "etc/vmware-tools/backupScripts.d/vmsnap");
          assert.equal(statSync(script).mode & 0o7777, 0o700);
          // vmtoolsd: `"<path>" freeze` through a shell, output read until EOF.
          const frozen = await agentCall(["/bin/sh", "-c", `"${script}" freeze`]);
          assert.equal(frozen.code, 0, frozen.stdout + frozen.stderr);
          assert.match(frozen.stderr, /quiesced shop: ok/);
          // vmsnap status says a hold is in progress, and whose.
          const during = await runBin(["status", "--config", config]);
          assert.match(during.stdout, /a hold is in progress: run \S+ \(vmware\), holder pid \d+/);
          const { write } = await heldWrite(server, 1);
          const thawed = await agentCall(["/bin/sh", "-c", `"${script}" thaw`]);
          assert.equal(thawed.code, 0, thawed.stdout + thawed.stderr);
          assert.ok(await write !== Infinity, "the write completed after thaw");
          const result = lastResult(state);
          const after = JSON.parse((await runBin(["status", "--json", "--config", config])).stdout);
          assert.equal(after.holding, undefined, "no hold after the thaw");
          assert.equal(after.lastResult.runId, result.runId);
          assert.equal(result.hook.agent, "vmware");
          assert.equal(result.hook.endedBy, "thaw");
          assert.equal(result.consistency, "application");

          const again = await agentCall(["/bin/sh", "-c", `"${script}" freeze`]);
          assert.equal(again.code, 0, again.stderr);
          const { write: write2 } = await heldWrite(server, 2);
          const failed = await agentCall(["/bin/sh", "-c", `"${script}" freezeFail`]);
          assert.ok(await write2 !== Infinity, "the write completed after freezeFail");
          const result2 = lastResult(state);
          assert.equal(result2.hook.endedBy, "freezeFail");
          assert.equal(result2.snapshotTaken, false);
          assert.equal(result2.plugins[0].resume?.ok, true);
          assert.equal(failed.code, 2, "freezeFail: no snapshot (VMware ignores the status)");
        },
      );

      await t.step(
        "azure: sh vmsnap-pre.sh / vmsnap-post.sh from a strict-JSON config",
        async () => {
          const { prefix, install } = installFor(f, "azure", config);
          // What the admin had: Azure's sample with their settings.
          put(
            join(prefix, "etc/azure/VMSnapshotScriptPluginConfig.json"),
            JSON.stringify({
              pluginName: "ScriptRunner",
              timeoutInSeconds: 60,
              appName: "shop",
              continueBackupOnFailure: false,
            }),
            0o600,
          );
          const installed = await install();
          assert.equal(installed.code, 0, installed.stderr);
          assert.match(installed.stdout, /backup +\S+VMSnapshotScriptPluginConfig\.json/);
          const azurePath = join(prefix, "etc/azure/VMSnapshotScriptPluginConfig.json");
          const azure = JSON.parse(readFileSync(azurePath, "utf8"));
          assert.equal(statSync(azurePath).mode & 0o7777, 0o600);
          assert.equal(azure.preScriptLocation, "/etc/azure/vmsnap-pre.sh");
          assert.equal(azure.postScriptLocation, "/etc/azure/vmsnap-post.sh");
          assert.equal(azure.appName, "shop", "Azure's keys are kept");
          assert.equal(azure.continueBackupOnFailure, false);
          assert.equal(azure.timeoutInSeconds, 60);
          const pre = join(prefix, "etc/azure/vmsnap-pre.sh");
          assert.match(readFileSync(pre, "utf8"), /--timeout 55/);
          // Azure: ["sh", preScriptLocation, *params], stdout and stderr piped.
          const frozen = await agentCall(["sh", pre]);
          assert.equal(frozen.code, 0, frozen.stdout + frozen.stderr);
          const { write } = await heldWrite(server, 3);
          const thawed = await agentCall(["sh", join(prefix, "etc/azure/vmsnap-post.sh")]);
          assert.equal(thawed.code, 0, thawed.stdout + thawed.stderr);
          assert.ok(await write !== Infinity);
          assert.equal(lastResult(state).hook.agent, "azure");
          assert.equal(lastResult(state).consistency, "application");
        },
      );

      await t.step(
        "gcp: pre.sh DISKS freezes the loop mount; post.sh thaws; writers resume",
        async () => {
          const { prefix, install } = installFor(f, "gcp", config);
          const cfg = join(prefix, "etc/default/instance_configs.cfg");
          put(
            cfg,
            "[InstanceSetup]\nset_host_keys = false\n\n[Snapshots]\nenabled = false\ntimeout_in_seconds = 30\n",
            0o644,
          );
          const installed = await install();
          assert.equal(installed.code, 0, installed.stderr);
          const text = readFileSync(cfg, "utf8");
          assert.match(text, /\[Snapshots\]\nenabled = true\ntimeout_in_seconds = 30/);
          assert.match(text, /set_host_keys = false/);
          const pre = join(prefix, "etc/google/snapshots/pre.sh");
          assert.match(readFileSync(pre, "utf8"), /--timeout 25/);
          // The guest agent execs the script with the disk list; one more inherited pipe, too.
          const frozen = await agentCall([pre, "disk-1,disk-2"], { extraPipe: true });
          assert.equal(frozen.code, 0, frozen.stdout + frozen.stderr);
          assert.match(frozen.stderr, new RegExp(`froze ${f.mp}`));
          const holderPid = lastHolderPid(state);
          const fds = descriptors(holderPid);
          for (const fd of ["0", "1", "2"]) assert.equal(fds[fd], "/dev/null", `holder fd ${fd}`);
          const writer = timeToWrite(f.mp, 20_000);
          const { write } = await heldWrite(server, 4);
          const thawed = await agentCall([
            join(prefix, "etc/google/snapshots/post.sh"),
            "disk-1,disk-2",
          ]);
          assert.equal(thawed.code, 0, thawed.stdout + thawed.stderr);
          const blocked = await writer;
          assert.ok(
            blocked > 700 && blocked !== Infinity,
            `the file write waited for post (${blocked} ms)`,
          );
          assert.ok(await write !== Infinity);
          const result = lastResult(state);
          assert.equal(result.hook.freezeBy, "vmsnap");
          assert.deepEqual(result.hook.agentArgs, ["disk-1,disk-2"]);
          assert.equal(result.freeze.mounts.length, 1);
          assert.equal(result.freeze.mounts[0].thawed, true);
          assert.equal(result.consistency, "application");
        },
      );

      await t.step(
        "aws: the printed SSM document's script, with pre-script and post-script",
        async () => {
          const installed = await runBin(["install", "--for", "aws", "--config", config]);
          assert.equal(installed.code, 0, installed.stderr);
          const document = JSON.parse(installed.stdout.slice(installed.stdout.indexOf("\n{") + 1));
          assert.deepEqual(document.parameters.command.allowedValues, [
            "pre-script",
            "post-script",
            "dry-run",
          ]);
          const lines: string[] = document.mainSteps[0].inputs.runCommand;
          const script = (command: string) => {
            const path = f.path(`ssm-${command}.sh`);
            writeFileSync(path, lines.join("\n").replaceAll("{{ command }}", command), {
              mode: 0o700,
            });
            return path;
          };
          const frozen = await agentCall(["sh", script("pre-script")]);
          assert.equal(frozen.code, 0, frozen.stdout + frozen.stderr);
          const writer = timeToWrite(f.mp, 20_000);
          const { write } = await heldWrite(server, 5);
          const thawed = await agentCall(["sh", script("post-script")]);
          assert.equal(thawed.code, 0, thawed.stdout + thawed.stderr);
          assert.ok(await writer !== Infinity && await write !== Infinity);
          assert.equal(lastResult(state).hook.agent, "aws");
          assert.equal(lastResult(state).consistency, "application");
          const dry = await agentCall(["sh", script("dry-run")]);
          assert.equal(dry.code, 0, dry.stdout + dry.stderr);
        },
      );
    } finally {
      await server.stop();
      db.cleanup();
      f.cleanup();
    }
  },
});

/** The pid in holder.json (the holder still runs while this is called). */
function lastHolderPid(stateDir: string): number {
  return JSON.parse(readFileSync(join(stateDir, "hook", "holder.json"), "utf8")).pid;
}
