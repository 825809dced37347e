#!/usr/bin/env node
// The citychain command. The sources are TypeScript, loaded through tsx's ESM hooks.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
