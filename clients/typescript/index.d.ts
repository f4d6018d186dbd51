// Types of clip-server-client (index.js).

/** What an image can be: the bytes of a JPEG, PNG, WebP, GIF, BMP or TIFF file. */
export type ImageInput = Blob | ArrayBuffer | ArrayBufferView;

export interface ClipClientOptions {
  /** The CLIP server's URL; default process.env.CLIP_SERVER_URL (required: throws ClipConfigError when unset). */
  url?: string;
  /** Sent as X-API-Key; default process.env.CLIP_SERVER_API_KEY. */
  apiKey?: string;
  /** How long one request may take, in ms (default 30000). */
  timeoutMs?: number;
  /** Retries on 429/502/503/504 and broken connections (default 1). */
  maxRetries?: number;
  /** Longest Retry-After the client waits out, in ms; a longer one throws (default 5000). */
  maxRetryWaitMs?: number;
  /** A fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
  /**
   * Downscale images larger than the model needs before upload, to the size the server publishes at
   * GET /v1/models (default true; needs the optional peer dependency sharp, without it originals go).
   */
  resize?: boolean;
}

/** How the server shrinks images for its model (GET /v1/models, `data[0].preprocessing`). */
export interface Preprocessing {
  input_size: number;
  /** "shortest_side" or "squash"; another value makes the client send originals. */
  resize: string;
  resize_size: number;
  /** "bicubic", "bilinear", "nearest" or "lanczos". */
  filter: string;
  crop: string;
  /** The largest image that still adds information: { short_side } or { width, height }. */
  max_useful_size: { short_side?: number; width?: number; height?: number };
  [key: string]: unknown;
}

export interface ResizeOption {
  /** false: send this call's images as they are (default: the client's `resize`). */
  resize?: boolean;
}

export interface Embeddings {
  model: string;
  dim: number;
  /** One L2-normalised vector per image, in input order. */
  imageEmbeddings: number[][];
  /** One L2-normalised vector per text, in input order. */
  textEmbeddings: number[][];
}

export interface LabelScore {
  label: string;
  /** Softmax probability over the labels given. */
  score: number;
}

export interface ClassifyOptions extends ResizeOption {
  /** Prompt with {} where the label goes; default "a photo of a {}". */
  template?: string;
  /** Keep only the best k labels. */
  topK?: number;
}

export class ClipClient {
  constructor(options?: ClipClientOptions);
  readonly url: string;
  resize: boolean;
  request(method: string, path: string, body?: FormData): Promise<any>;
  /** The server's published preprocessing, read once and cached (null: unknown, originals are sent). */
  preprocessing(): Promise<Preprocessing | null>;
  embed(inputs: { images?: ImageInput[]; texts?: string[]; resize?: boolean }): Promise<Embeddings>;
  embedImage(image: ImageInput, options?: ResizeOption): Promise<number[]>;
  embedText(text: string): Promise<number[]>;
  classify(images: ImageInput[], labels: string[], options?: ClassifyOptions): Promise<LabelScore[][]>;
  classifyImage(image: ImageInput, labels: string[], options?: ClassifyOptions): Promise<LabelScore[]>;
  health(): Promise<Record<string, unknown>>;
}

export function createClipClient(options?: ClipClientOptions): ClipClient;

/** The server answered with an error; `code` and `serverMessage` are the server's own. */
export class ClipServerError extends Error {
  constructor(status: number, code: string, message: string, extra?: { retryAfter?: number | null; url?: string | null });
  readonly status: number;
  readonly code: string;
  readonly serverMessage: string;
  /** Seconds, from the Retry-After header (429, 503). */
  readonly retryAfter: number | null;
  readonly url: string | null;
}

/** No answer: unreachable (connection_failed) or slower than timeoutMs (client_timeout). */
export class ClipConnectionError extends Error {
  constructor(code: "connection_failed" | "client_timeout", message: string, extra?: { url?: string | null; cause?: unknown });
  readonly code: "connection_failed" | "client_timeout";
  readonly url: string | null;
}

/** CLIP_SERVER_URL is missing or malformed. */
export class ClipConfigError extends Error {
  constructor(message: string);
  readonly code: "not_configured";
}

export function parseRetryAfter(value: string | null | undefined, now?: number): number | null;
export function errorFromResponse(res: Response, url?: string | null): Promise<ClipServerError>;

/** [width, height] to downscale an upright image to under `preprocessing`, or null to send it as it is. */
export function targetSize(width: number, height: number, preprocessing: Preprocessing | null): [number, number] | null;
/** The server's centre crop of an upright image at its resize size, where cropping before upload is exact; else null. */
export function centreCropBox(
  width: number,
  height: number,
  preprocessing: Preprocessing | null,
): { left: number; top: number; width: number; height: number } | null;
/**
 * The image to upload: a smaller JPEG of the size the server would shrink it to, or `image` itself
 * (the same object) when nothing is gained, the preprocessing is unknown, sharp is missing or cannot read it.
 */
export function prepareImage(image: ImageInput, preprocessing: Preprocessing | null): Promise<ImageInput>;
