// Client for the CLIP server: embeddings and zero-shot classification. No dependencies: the global
// fetch, FormData and Blob of Node 18+ (and of Vercel's Node and Edge runtimes). With sharp installed
// (an optional peer), photos are downscaled before upload as the server would after it.

const RETRYABLE = new Set([429, 502, 503, 504]);
// A server that answered without preprocessing (still loading, or an older version) is asked again
// after this long; one without /v1/models at all (404) is never asked again. As the Python client.
const PREPROCESSING_RETRY_MS = 30_000;
// The server's resampling filters in sharp's names (it publishes Pillow's).
const KERNELS = { bicubic: "cubic", bilinear: "linear", nearest: "nearest", lanczos: "lanczos3" };
// Quality 90 at 4:4:4, as the Python client: 10-100 KB at 224 px and the same vector as the full
// upload (cosine >= 0.99 on every test image, tests/clients/test_typescript_downscale.py). 4:2:0
// would halve the bytes but smear colour edges (palette and one-bit images).
const JPEG_OPTIONS = { quality: 90, chromaSubsampling: "4:4:4" };

/** The server answered with an error: `{"error": {"code", "message"}}` and an HTTP status. */
export class ClipServerError extends Error {
  constructor(status, code, message, { retryAfter = null, url = null } = {}) {
    super(`${status} ${code}: ${message}`);
    this.name = "ClipServerError";
    this.status = status;
    this.code = code;
    this.serverMessage = message;
    this.retryAfter = retryAfter; // seconds, from Retry-After
    this.url = url;
  }
}

/** No answer: the server could not be reached, or it did not answer within timeoutMs. */
export class ClipConnectionError extends Error {
  constructor(code, message, { url = null, cause } = {}) {
    super(message, { cause });
    this.name = "ClipConnectionError";
    this.code = code; // "connection_failed" or "client_timeout"
    this.url = url;
  }
}

/** The client is missing its configuration (CLIP_SERVER_URL). */
export class ClipConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "ClipConfigError";
    this.code = "not_configured";
  }
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
export function parseRetryAfter(value, now = Date.now()) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - now) / 1000);
}

/** The typed error for a non-OK response (a proxy's HTML page keeps its status and first words). */
export async function errorFromResponse(res, url = null) {
  const text = await res.text();
  let code = `http_${res.status}`;
  let message = text.slice(0, 200).trim() || `HTTP ${res.status}`;
  try {
    const { error } = JSON.parse(text);
    if (error && typeof error.code === "string") {
      code = error.code;
      message = String(error.message);
    }
  } catch {
    // not JSON: keep the text
  }
  return new ClipServerError(res.status, code, message, {
    retryAfter: parseRetryAfter(res.headers.get("retry-after")),
    url,
  });
}

function checkImage(image) {
  if (!(image instanceof Blob || image instanceof ArrayBuffer || ArrayBuffer.isView(image))) {
    throw new TypeError("an image must be a Blob, File, ArrayBuffer, Buffer or Uint8Array");
  }
}

function toBlob(image) {
  checkImage(image);
  return image instanceof Blob ? image : new Blob([image]);
}

let sharpModule; // undefined: not tried yet; null: not installed (or not loadable here, e.g. Edge)

/** sharp, imported on first use only: the package has no dependencies, and without it originals go. */
async function loadSharp() {
  if (sharpModule === undefined) {
    try {
      sharpModule = (await import("sharp")).default;
    } catch {
      sharpModule = null;
    }
  }
  return sharpModule;
}

/**
 * [width, height] to downscale an upright `width` x `height` image to under the server's published
 * `preprocessing`, or null to send it as it is (small enough, or a preprocessing this client does not know).
 */
export function targetSize(width, height, preprocessing) {
  const limit = preprocessing?.max_useful_size ?? {};
  if (preprocessing?.resize === "shortest_side" && Number.isInteger(limit.short_side)) {
    const short = limit.short_side;
    if (Math.min(width, height) <= short) return null; // never upscaled here (the server upscales if it must)
    // The long side as the server rounds it (torchvision's int()), so its centre crop of this upload
    // starts on the same pixel as its crop of the original would.
    return width <= height ? [short, Math.floor((short * height) / width)] : [Math.floor((short * width) / height), short];
  }
  if (preprocessing?.resize === "squash" && Number.isInteger(limit.width) && Number.isInteger(limit.height)) {
    const size = [Math.min(width, limit.width), Math.min(height, limit.height)];
    return size[0] === width && size[1] === height ? null : size;
  }
  return null;
}

/**
 * The server's centre crop {left, top, width, height} of an upright image already at its resize size,
 * when cropping here is exact: only when the resize size is the input size (CLIP's own preprocessing).
 * With a larger resize size (resize 256, crop 224) the server would resize the crop again. As the
 * Python client's centre_crop_box.
 */
export function centreCropBox(width, height, preprocessing) {
  const size = preprocessing?.input_size;
  if (preprocessing?.crop !== "center" || preprocessing?.resize !== "shortest_side") return null;
  if (size !== preprocessing.resize_size || Math.min(width, height) !== size) return null;
  if (width === size && height === size) return null;
  // Python's round() of (side - size) / 2, which rounds halves to even, as the server does.
  const half = (value) => (value % 1 === 0.5 ? 2 * Math.round(value / 2) : Math.round(value));
  return { left: half((width - size) / 2), top: half((height - size) / 2), width: size, height: size };
}

/**
 * JPEG bytes of a CMYK pipeline's output, converted to RGB as the server (Pillow) converts:
 * R = (255 - C)(255 - K) / 255 and so on, with no colour profile. sharp's own conversion goes through
 * a print profile, whose colours are far enough from Pillow's to move the vector (cosine 0.91).
 * The pipeline resizes in CMYK first, so only the small image is converted here, pixel by pixel.
 */
async function cmykToRgbJpeg(sharp, pipeline) {
  const { data, info } = await pipeline.toColourspace("cmyk").raw().toBuffer({ resolveWithObject: true });
  const rgb = Buffer.alloc(info.width * info.height * 3);
  for (let pixel = 0; pixel < info.width * info.height; pixel++) {
    const nk = 255 - data[pixel * 4 + 3];
    for (let channel = 0; channel < 3; channel++) {
      const product = data[pixel * 4 + channel] * nk + 128; // Pillow's MULDIV255, rounded as it rounds
      rgb[pixel * 3 + channel] = nk - (((product >> 8) + product) >> 8);
    }
  }
  return sharp(rgb, { raw: { width: info.width, height: info.height, channels: 3 } }).jpeg(JPEG_OPTIONS).toBuffer();
}

/**
 * The image to upload: a smaller JPEG (a Uint8Array) of the size the server would shrink it to, or
 * `image` itself when nothing is gained, when `preprocessing` is null or unknown, without sharp, or
 * when sharp cannot read it (the server then answers as it would have anyway, a 4xx if it is bad).
 */
export async function prepareImage(image, preprocessing) {
  checkImage(image);
  if (!preprocessing || !Object.hasOwn(KERNELS, preprocessing.filter)) return image;
  const sharp = await loadSharp();
  if (!sharp) return image;
  try {
    const bytes =
      image instanceof Blob
        ? Buffer.from(await image.arrayBuffer())
        : ArrayBuffer.isView(image)
          ? Buffer.from(image.buffer, image.byteOffset, image.byteLength)
          : Buffer.from(image);
    // The server (Pillow) ignores embedded colour profiles: so does this, or a Display P3 photo would
    // reach the model in other colours than its full upload does.
    const open = () => sharp(bytes, { ignoreIcc: true });
    const meta = await open().metadata();
    // 32-bit integer or float images: the server scales them by the whole image's range; it stays the reference.
    if (meta.depth !== "uchar" && meta.depth !== "ushort") return image;
    const turned = meta.orientation >= 5; // EXIF 5-8: stored on its side, width and height swap upright
    const [width, height] = [meta.width, meta.pageHeight ?? meta.height]; // first frame of an animation
    const size = turned ? targetSize(height, width, preprocessing) : targetSize(width, height, preprocessing);
    if (!size) return image;
    const resize = { width: size[0], height: size[1], kernel: KERNELS[preprocessing.filter], fit: "fill" };
    const crop = centreCropBox(size[0], size[1], preprocessing); // extract after resize: on the small image
    const cropped = (pipeline) => (crop ? pipeline.extract(crop) : pipeline);
    let prepared;
    if (meta.space === "cmyk") {
      if (meta.channels !== 4) return image;
      prepared = await cmykToRgbJpeg(sharp, cropped(open().pipelineColourspace("cmyk").rotate().resize(resize)));
    } else {
      prepared = await cropped(
        open()
          .rotate() // EXIF orientation, as the server applies it: the upload goes upright, without the tag
          .flatten({ background: "#ffffff" }) // alpha over white, as the server composites it
          .toColourspace("srgb") // palette, greyscale, one-bit and 16-bit to 8-bit RGB
          .resize(resize),
      )
        .jpeg(JPEG_OPTIONS)
        .toBuffer();
    }
    return prepared.length < bytes.length ? prepared : image;
  } catch {
    return image;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The CLIP server at `url` (default: process.env.CLIP_SERVER_URL), with the API key `apiKey`
 * (default: process.env.CLIP_SERVER_API_KEY). Throws ClipConfigError at once when no URL is set.
 */
export class ClipClient {
  constructor({
    url = globalThis.process?.env?.CLIP_SERVER_URL,
    apiKey = globalThis.process?.env?.CLIP_SERVER_API_KEY,
    timeoutMs = 30_000,
    maxRetries = 1,
    maxRetryWaitMs = 5_000,
    fetch: fetchImpl = globalThis.fetch,
    resize = true,
  } = {}) {
    if (!url) {
      throw new ClipConfigError(
        "CLIP_SERVER_URL is not set: set it to the CLIP server's URL (http://localhost:5001 in " +
          "development, the Cloud Run URL in production), e.g. `vercel env add CLIP_SERVER_URL production`",
      );
    }
    if (!/^https?:\/\//.test(url)) {
      throw new ClipConfigError(`CLIP_SERVER_URL must start with http:// or https://, got ${JSON.stringify(url)}`);
    }
    this.url = url.replace(/\/+$/, "");
    this.apiKey = apiKey || null;
    this.timeoutMs = timeoutMs;
    this.maxRetries = maxRetries;
    this.maxRetryWaitMs = maxRetryWaitMs;
    this.fetch = fetchImpl;
    this.resize = resize;
  }

  #preprocessing = null;
  #preprocessingCheckedAt = -Infinity;
  #preprocessingPending = null; // one GET /v1/models for concurrent calls

  /** The server's published image preprocessing (GET /v1/models), read once and cached; null if unknown. */
  async preprocessing() {
    if (this.#preprocessing !== null || Date.now() - this.#preprocessingCheckedAt < PREPROCESSING_RETRY_MS) {
      return this.#preprocessing;
    }
    this.#preprocessingPending ??= this.#readPreprocessing().finally(() => {
      this.#preprocessingPending = null;
    });
    return this.#preprocessingPending;
  }

  async #readPreprocessing() {
    try {
      const body = await this.request("GET", "/v1/models");
      this.#preprocessing = body?.data?.[0]?.preprocessing || null;
      this.#preprocessingCheckedAt = Date.now();
    } catch (error) {
      if (error instanceof ClipServerError && error.status === 404) {
        this.#preprocessingCheckedAt = Infinity; // a server without the route: originals, always
      } else if (error instanceof SyntaxError) {
        this.#preprocessingCheckedAt = Date.now(); // not JSON (a proxy's page): ask again later
      } else {
        throw error; // 401, 5xx, unreachable: the upload itself would meet the same
      }
    }
    return this.#preprocessing;
  }

  /** The multipart image fields: each image downscaled when larger than the model needs. */
  async #appendImages(form, images, resize) {
    images.forEach(checkImage);
    const shrink = images.length > 0 && (resize ?? this.resize) && (await loadSharp()) !== null;
    const preprocessing = shrink ? await this.preprocessing() : null;
    const prepared = await Promise.all(images.map((image) => prepareImage(image, preprocessing)));
    prepared.forEach((upload, n) => {
      if (upload === images[n]) form.append("image", toBlob(upload), `image${n}`);
      else form.append("image", new Blob([upload], { type: "image/jpeg" }), `image${n}.jpg`);
    });
  }

  /** One request; retries 429/502/503/504 and broken connections, waiting Retry-After when sent. */
  async request(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      let error;
      try {
        const headers = this.apiKey ? { "X-API-Key": this.apiKey } : {};
        let res;
        try {
          res = await this.fetch(this.url + path, {
            method,
            body,
            headers,
            signal: AbortSignal.timeout(this.timeoutMs),
          });
        } catch (cause) {
          const timedOut = cause?.name === "TimeoutError" || cause?.name === "AbortError";
          throw new ClipConnectionError(
            timedOut ? "client_timeout" : "connection_failed",
            timedOut
              ? `no answer from ${this.url}${path} within ${this.timeoutMs} ms`
              : `${method} ${this.url}${path} failed: ${cause?.cause?.code ?? cause?.message ?? cause}`,
            { url: this.url, cause },
          );
        }
        if (res.ok) return await res.json();
        error = await errorFromResponse(res, this.url);
      } catch (caught) {
        error = caught;
      }
      // A timeout may mean the work is still running there: sending it again would double it.
      const retryable =
        (error instanceof ClipServerError && RETRYABLE.has(error.status)) ||
        (error instanceof ClipConnectionError && error.code === "connection_failed");
      if (!retryable || attempt >= this.maxRetries) throw error;
      const waitMs =
        error.retryAfter != null ? error.retryAfter * 1000 : Math.random() * Math.min(2000, 250 * 2 ** attempt);
      if (waitMs > this.maxRetryWaitMs) throw error;
      await sleep(waitMs);
    }
  }

  /**
   * Embed images and texts in one request: { model, dim, imageEmbeddings, textEmbeddings }.
   * `resize: false` sends the images' original bytes (default: the client's `resize` option).
   */
  async embed({ images = [], texts = [], resize } = {}) {
    const form = new FormData();
    await this.#appendImages(form, images, resize);
    for (const text of texts) form.append("text", text);
    const body = await this.request("POST", "/embed", form);
    return {
      model: body.model,
      dim: body.dim,
      imageEmbeddings: body.image_embeddings ?? [],
      textEmbeddings: body.text_embeddings ?? [],
    };
  }

  /** One image's L2-normalised vector. */
  async embedImage(image, { resize } = {}) {
    return (await this.embed({ images: [image], resize })).imageEmbeddings[0];
  }

  /** One text's L2-normalised vector (same space as images: a dot product is a cosine). */
  async embedText(text) {
    return (await this.embed({ texts: [text] })).textEmbeddings[0];
  }

  /** Per image, the labels with probabilities, highest first: [[{ label, score }, ...], ...]. */
  async classify(images, labels, { template, topK, resize } = {}) {
    const form = new FormData();
    await this.#appendImages(form, images, resize);
    for (const label of labels) form.append("labels", label);
    if (template != null) form.append("template", template);
    if (topK != null) form.append("top_k", String(topK));
    const body = await this.request("POST", "/classify", form);
    return body.results.map((result) => result.labels);
  }

  /** One image's labels, highest probability first. */
  async classifyImage(image, labels, options) {
    return (await this.classify([image], labels, options))[0];
  }

  /** GET /health: the model, device and batch settings; throws ClipServerError (503) while loading. */
  async health() {
    return this.request("GET", "/health");
  }
}

/** A client configured from CLIP_SERVER_URL and CLIP_SERVER_API_KEY (or the options given). */
export function createClipClient(options = {}) {
  return new ClipClient(options);
}
