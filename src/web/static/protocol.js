// The ChatMaster 3000 wire over WebSocket (protocol.md, "WebSocket
// transport"): each binary message is one package, a zlib stream of one
// JSON object. The browser's CompressionStream / DecompressionStream
// ("deflate" is zlib, RFC 1950) do the compression; packages are decoded
// one after another so that their order is kept.

/** Inflated size past which a package is refused, as the server's default cap. */
export const MAX_PACKAGE_BYTES = 262144;
/** Compressed size past which a package is not sent, as the server's frame cap. */
export const MAX_FRAME_BYTES = 65536;

async function readAll(stream, cap) {
  const reader = stream.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > cap) {
      await reader.cancel();
      throw new Error(`package larger than ${cap} bytes`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** One package as the bytes of a zlib stream. */
export async function encodePackage(pkg) {
  const json = new TextEncoder().encode(JSON.stringify(pkg));
  const stream = new Blob([json]).stream().pipeThrough(new CompressionStream("deflate"));
  return readAll(stream, MAX_FRAME_BYTES * 4);
}

/** The package a zlib stream holds, within the inflate cap. */
export async function decodePackage(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const json = await readAll(stream, MAX_PACKAGE_BYTES);
  return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
}

/** Delays between reconnection attempts, in ms; the last one repeats. */
const BACKOFF = [1000, 2000, 4000, 8000, 15000, 30000];

/**
 * A chat connection that reconnects with backoff. Events:
 * "open", "package" (detail: the package), "down" (detail: {retryIn}),
 * "error" (detail: a message for the user).
 */
export class Connection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    // Decoding and encoding are asynchronous: chains keep the order.
    this.inbound = Promise.resolve();
    this.outbound = Promise.resolve();
  }

  connect() {
    clearTimeout(this.timer);
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.attempt = 0;
      this.dispatchEvent(new Event("open"));
    });
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data === "string") return; // the server only sends binary
      const bytes = new Uint8Array(ev.data);
      this.inbound = this.inbound.then(async () => {
        try {
          const pkg = await decodePackage(bytes);
          this.dispatchEvent(new CustomEvent("package", { detail: pkg }));
        } catch (e) {
          this.dispatchEvent(new CustomEvent("error", { detail: `Unreadable package: ${e.message}` }));
        }
      });
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      const retryIn = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
      this.attempt += 1;
      // A little jitter, so that many pages do not all come back at once.
      const delay = retryIn + Math.floor(Math.random() * 250);
      this.dispatchEvent(new CustomEvent("down", { detail: { retryIn: delay } }));
      this.timer = setTimeout(() => this.connect(), delay);
    });
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a package (in order with the ones sent before). */
  send(pkg) {
    const ws = this.ws;
    this.outbound = this.outbound.then(async () => {
      const bytes = await encodePackage(pkg);
      if (bytes.byteLength > MAX_FRAME_BYTES) {
        this.dispatchEvent(new CustomEvent("error", { detail: "That is too long to send." }));
        return;
      }
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
    });
    return this.outbound;
  }

  command(command, parameters) {
    return this.send({ type: "command", data: parameters === undefined ? { command } : { command, parameters } });
  }

  message(text) {
    return this.send({ type: "message", data: { message: text } });
  }
}

/** The WebSocket URL of the page's own server. */
export function defaultUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
