// node --test: the client against a running CLIP server (demo model). tests/clients/test_typescript_client.py
// starts the servers and sets CLIP_SERVER_URL, CLIP_SERVER_API_KEY, CLIP_RATE_LIMITED_URL and CLIP_TEST_IMAGE.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  centreCropBox,
  ClipClient,
  ClipConfigError,
  ClipConnectionError,
  ClipServerError,
  createClipClient,
  parseRetryAfter,
  targetSize,
} from "../index.js";

const live = process.env.CLIP_SERVER_URL ? {} : { skip: "CLIP_SERVER_URL is not set (no server to test against)" };
const here = dirname(fileURLToPath(import.meta.url));

const dot = (a, b) => a.reduce((sum, value, n) => sum + value * b[n], 0);

test("fails early with a clear message when CLIP_SERVER_URL is unset", () => {
  const saved = process.env.CLIP_SERVER_URL;
  delete process.env.CLIP_SERVER_URL;
  try {
    assert.throws(() => new ClipClient(), (error) => {
      assert.ok(error instanceof ClipConfigError);
      assert.match(error.message, /CLIP_SERVER_URL is not set/);
      return true;
    });
    assert.throws(() => createClipClient({ url: "localhost:5001" }), /must start with http/);
  } finally {
    if (saved !== undefined) process.env.CLIP_SERVER_URL = saved;
  }
});

test("parses Retry-After as seconds or a date", () => {
  assert.equal(parseRetryAfter("3"), 3);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:10 GMT", Date.parse("Wed, 21 Oct 2015 07:28:00 GMT")), 10);
});

test("embeds texts and images into one space", live, async () => {
  const client = createClipClient(); // CLIP_SERVER_URL and CLIP_SERVER_API_KEY from the environment
  const image = await readFile(process.env.CLIP_TEST_IMAGE);
  const { model, dim, imageEmbeddings, textEmbeddings } = await client.embed({
    images: [image],
    texts: ["a photo of a red circle", "a photo of a blue square"],
  });
  assert.equal(dim, imageEmbeddings[0].length);
  assert.equal(typeof model, "string");
  assert.ok(dot(textEmbeddings[0], imageEmbeddings[0]) > dot(textEmbeddings[1], imageEmbeddings[0]));
  const single = await client.embedImage(new Blob([image], { type: "image/jpeg" }));
  assert.ok(Math.abs(dot(single, imageEmbeddings[0]) - 1) < 1e-4);
  const text = await client.embedText("a photo of a red circle");
  assert.ok(Math.abs(dot(text, text) - 1) < 1e-4); // L2-normalised
});

test("classifies an image against labels", live, async () => {
  const client = new ClipClient();
  const image = await readFile(process.env.CLIP_TEST_IMAGE);
  const labels = await client.classifyImage(image, ["blue square", "red circle", "green triangle"], { topK: 2 });
  assert.equal(labels.length, 2);
  assert.equal(labels[0].label, "red circle");
  assert.ok(labels[0].score >= labels[1].score);
  const health = await client.health();
  assert.equal(health.status, "ok");
});

test("errors carry the server's status, code and message", live, async () => {
  const wrongKey = new ClipClient({ apiKey: "not-the-key" });
  await assert.rejects(wrongKey.embedText("a red circle"), (error) => {
    assert.ok(error instanceof ClipServerError);
    assert.equal(error.status, 401);
    assert.equal(error.code, "unauthorized");
    assert.match(error.serverMessage, /API key/);
    return true;
  });
  const client = new ClipClient();
  await assert.rejects(client.embedImage(new TextEncoder().encode("not an image")), { code: "invalid_image" });
  await assert.rejects(client.classifyImage(new Uint8Array([1, 2, 3]), []), { status: 400, code: "no_labels" });
});

test("waits for Retry-After on 429, or throws with it", live, async () => {
  const url = process.env.CLIP_RATE_LIMITED_URL; // one request per second
  const patient = new ClipClient({ url, maxRetries: 2 });
  const impatient = new ClipClient({ url, maxRetries: 0 });
  await patient.embedText("first");
  await assert.rejects(impatient.embedText("second, same second"), (error) => {
    assert.equal(error.status, 429);
    assert.equal(error.code, "rate_limited");
    assert.ok(error.retryAfter >= 1);
    return true;
  });
  await new Promise((resolve) => setTimeout(resolve, 1100));
  await patient.embedText("first of a new second");
  const started = Date.now();
  await patient.embedText("second of that second: waits, then succeeds");
  assert.ok(Date.now() - started >= 500);
});

test("times out on a server that never answers, and says so", async () => {
  const sockets = [];
  const silent = createServer((socket) => sockets.push(socket)); // accepts connections, never answers
  await new Promise((resolve) => silent.listen(0, "127.0.0.1", resolve));
  try {
    const client = new ClipClient({ url: `http://127.0.0.1:${silent.address().port}`, timeoutMs: 300 });
    await assert.rejects(client.embedText("anyone?"), (error) => {
      assert.ok(error instanceof ClipConnectionError);
      assert.equal(error.code, "client_timeout");
      return true;
    });
  } finally {
    silent.close();
    for (const socket of sockets) socket.destroy();
  }
});

test("downscales to the published size as the server rounds it, never up", () => {
  const shortest = { resize: "shortest_side", filter: "bicubic", max_useful_size: { short_side: 224 } };
  assert.deepEqual(targetSize(1000, 600, shortest), [373, 224]); // 373.33: the server's int(), not round()
  assert.deepEqual(targetSize(640, 900, shortest), [224, 315]);
  assert.equal(targetSize(1000, 224, shortest), null); // short side already there: the original goes
  const squash = { resize: "squash", filter: "bicubic", max_useful_size: { width: 224, height: 224 } };
  assert.deepEqual(targetSize(1000, 200, squash), [224, 200]);
  assert.equal(targetSize(200, 100, squash), null);
  assert.equal(targetSize(4000, 3000, { resize: "letterbox", max_useful_size: { short_side: 224 } }), null);
  assert.equal(targetSize(4000, 3000, null), null);
});

test("crops the centre as the server does, only where that is exact", () => {
  const clip = { input_size: 224, resize: "shortest_side", resize_size: 224, crop: "center" };
  assert.deepEqual(centreCropBox(373, 224, clip), { left: 74, top: 0, width: 224, height: 224 }); // 74.5: to even
  assert.deepEqual(centreCropBox(224, 315, clip), { left: 0, top: 46, width: 224, height: 224 }); // 45.5: to even
  assert.deepEqual(centreCropBox(224, 317, clip), { left: 0, top: 46, width: 224, height: 224 });
  assert.equal(centreCropBox(224, 224, clip), null);
  // resize 256 then crop 224: the server would resize an uploaded crop again, so the whole image goes
  assert.equal(centreCropBox(426, 256, { ...clip, resize_size: 256 }), null);
  assert.equal(centreCropBox(400, 224, { ...clip, resize: "squash", crop: "none" }), null);
});

test("asks for the preprocessing once; again after 30 s only if there was none; never after a 404", async (t) => {
  let now = 1_000_000;
  t.mock.method(Date, "now", () => now);
  const serving = (answer) => {
    const asked = [];
    const fetch = async (url) => {
      asked.push(new URL(url).pathname);
      if (answer === 404) return Response.json({ error: { code: "not_found", message: "no" } }, { status: 404 });
      return Response.json(url.endsWith("/v1/models") ? answer : { model: "m", dim: 1, text_embeddings: [[1]] });
    };
    return { client: new ClipClient({ url: "http://clip.test", fetch }), asked };
  };
  const published = { resize: "shortest_side", filter: "bicubic", max_useful_size: { short_side: 224 } };

  const ready = serving({ data: [{ id: "m", preprocessing: published }] });
  const answers = await Promise.all([ready.client.preprocessing(), ready.client.preprocessing()]);
  now += 3_600_000;
  assert.deepEqual([...answers, await ready.client.preprocessing()], [published, published, published]);
  await ready.client.embedText("texts alone need no preprocessing");
  assert.deepEqual(ready.asked, ["/v1/models", "/embed"]);

  const loading = serving({ data: [{ id: "m" }] }); // the model not loaded yet
  assert.equal(await loading.client.preprocessing(), null);
  now += 29_000;
  assert.equal(await loading.client.preprocessing(), null);
  assert.equal(loading.asked.length, 1);
  now += 2_000;
  await loading.client.preprocessing();
  assert.equal(loading.asked.length, 2);

  const older = serving(404); // a server from before /v1/models
  assert.equal(await older.client.preprocessing(), null);
  now += 3_600_000;
  assert.equal(await older.client.preprocessing(), null);
  assert.equal(older.asked.length, 1);
});

test("index.d.ts declares every export of index.js", async () => {
  const exported = Object.keys(await import("../index.js")).sort();
  const declarations = await readFile(join(here, "..", "index.d.ts"), "utf8");
  const declared = [...declarations.matchAll(/^export (?:class|function) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, exported);
});
