// Downscaling before upload, measured against a running CLIP server; not part of `npm test`:
// tests/clients/test_typescript_downscale.py starts the servers, writes the test images and reads the JSON.
//
//   CLIP_SERVER_URL=... node test/downscale.mjs IMAGE_DIR [OUT_DIR [CLIENT_MODULE]]
//
// Embeds all images twice, as they are (resize: false) and downscaled (resize: true), and prints per
// image both vectors, the bytes each upload carried (read from the request bodies the client sent) and
// the size of what prepareImage made of it, which it writes to OUT_DIR when given. CLIENT_MODULE
// (default ../index.js) lets the test load a copy of the client that cannot find sharp.
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [imageDir, outDir, clientModule] = process.argv.slice(2);
const { ClipClient, prepareImage } = await import(
  clientModule ? pathToFileURL(resolve(clientModule)).href : "../index.js"
);

let sharp = null; // this script's own sharp, to read the prepared images' sizes
try {
  sharp = (await import("sharp")).default;
} catch {
  // without it, sizes are not reported
}

const requests = []; // { path, images: [bytes of each image field] } of every request the client sent
const recordingFetch = (url, init) => {
  const images = init.body instanceof FormData ? init.body.getAll("image").map((file) => file.size) : [];
  requests.push({ path: new URL(url).pathname, images });
  return fetch(url, init);
};
const client = new ClipClient({ fetch: recordingFetch });

const names = (await readdir(imageDir)).sort();
const images = await Promise.all(names.map((name) => readFile(join(imageDir, name))));
const full = await client.embed({ images, resize: false });
const fullUploads = requests.at(-1).images;
const small = await client.embed({ images, resize: true });
const smallUploads = requests.at(-1).images;

const preprocessing = await client.preprocessing();
const report = { preprocessing, images: {} };
for (const [n, name] of names.entries()) {
  const prepared = await prepareImage(images[n], preprocessing);
  const meta = sharp && prepared !== images[n] ? await sharp(prepared).metadata() : null;
  if (outDir) await writeFile(join(outDir, name), prepared);
  report.images[name] = {
    original: images[n].length,
    fullUpload: fullUploads[n],
    smallUpload: smallUploads[n],
    unchanged: prepared === images[n],
    size: meta && [meta.width, meta.height],
    orientation: meta?.orientation ?? null,
    format: meta?.format ?? null,
    full: full.imageEmbeddings[n],
    small: small.imageEmbeddings[n],
  };
}
report.modelsRequests = requests.filter(({ path }) => path === "/v1/models").length;
console.log(JSON.stringify(report));
