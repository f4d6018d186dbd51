// Client for the CLIP server: embeddings and zero-shot classification. No dependencies: the global
// fetch, FormData and Blob of Node 18+ (and of Vercel's Node and Edge runtimes).

const RETRYABLE = new Set([429, 502, 503, 504]);

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

function toBlob(image) {
  if (image instanceof Blob) return image;
  if (image instanceof ArrayBuffer || ArrayBuffer.isView(image)) return new Blob([image]);
  throw new TypeError("an image must be a Blob, File, ArrayBuffer, Buffer or Uint8Array");
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

  /** Embed images and texts in one request: { model, dim, imageEmbeddings, textEmbeddings }. */
  async embed({ images = [], texts = [] } = {}) {
    const form = new FormData();
    images.forEach((image, n) => form.append("image", toBlob(image), `image${n}`));
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
  async embedImage(image) {
    return (await this.embed({ images: [image] })).imageEmbeddings[0];
  }

  /** One text's L2-normalised vector (same space as images: a dot product is a cosine). */
  async embedText(text) {
    return (await this.embed({ texts: [text] })).textEmbeddings[0];
  }

  /** Per image, the labels with probabilities, highest first: [[{ label, score }, ...], ...]. */
  async classify(images, labels, { template, topK } = {}) {
    const form = new FormData();
    images.forEach((image, n) => form.append("image", toBlob(image), `image${n}`));
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
