/**
 * A node that cannot serve exits with the error: with its API port taken by another program, a
 * validator whose peer network had already started must stop it and exit non-zero, not run on in
 * consensus without an API (it did: the failed listen left the peer network holding the process).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, test } from "node:test";
import { createProcessNetwork, type ProcessNetwork } from "./process-net.ts";

let network: ProcessNetwork;
let squatter: net.Server;

before(async () => {
  network = await createProcessNetwork({ nodes: 4 });
  // It hangs up on whoever connects, so the harness's readiness probe fails fast and sees the exit.
  squatter = net.createServer((socket) => socket.destroy());
  const port = network.layout.nodes[0]!.apiPort;
  await new Promise<void>((resolve, reject) => {
    squatter.once("error", reject);
    squatter.listen(port, "127.0.0.1", () => resolve());
  });
});

after(async () => {
  await new Promise<void>((resolve) => squatter?.close(() => resolve()));
  await network?.close();
});

test("a validator whose API port is taken exits with EADDRINUSE instead of running without an API", async () => {
  await assert.rejects(network.start(0), /node0 exited with 1/);
  const log = fs.readFileSync(path.join(network.dir, "node0.log"), "utf8");
  assert.match(log, /p2p: listening/, "the peer network had started before the API failed");
  assert.match(log, /EADDRINUSE/);
});
