/**
 * Any other caller of a pre and a post command: it runs `vmsnap hook pre
 * --for generic` before its snapshot and `vmsnap hook post --for generic`
 * after, itself. vmsnap freezes the filesystems; there is nothing to
 * install.
 *
 * @module
 */
import { DEFAULT_CONFIG_PATH } from "../../config/config.ts";
import { VmsnapError } from "../../errors.ts";
import type { AgentSpec } from "./agent.ts";

/** Any other caller. */
export const generic: AgentSpec = {
  name: "generic",
  title: "any other caller of a pre and a post command",
  freezes: false,
  timeoutSeconds: 60,
  defaultConfig: DEFAULT_CONFIG_PATH,
  plan: () => {
    throw new VmsnapError(
      "UsageError",
      "--for generic has nothing to install: the caller runs vmsnap hook pre --for generic and vmsnap hook post --for generic itself.",
    );
  },
};
