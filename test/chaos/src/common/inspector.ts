/**
 * Asks a Node process started with --inspect to run a full garbage
 * collection (Chrome DevTools Protocol, HeapProfiler.collectGarbage), so
 * that its RSS is read after a GC rather than whenever V8 next feels like
 * collecting: an idle broker allocates nothing, so it never collects by
 * itself. Also reads process.memoryUsage(), to tell a heap that grew
 * from memory the allocator kept. A minimal WebSocket client: one masked text frame out, frames in
 * until the answer to our id arrives.
 */
import { randomBytes } from "node:crypto";
import net from "node:net";
import { withTimeout } from "./util.js";

const TIMEOUT_MS = 10_000;

export async function collectGarbage(wsUrl: string): Promise<void> {
  await call(wsUrl, "HeapProfiler.collectGarbage", {});
}

/** process.memoryUsage() of the inspected process, in bytes. */
export async function memoryUsage(wsUrl: string): Promise<Record<string, number> | null> {
  const text = await call(wsUrl, "Runtime.evaluate", { expression: "JSON.stringify(process.memoryUsage())", returnByValue: true });
  try {
    const r = JSON.parse(text) as { result?: { result?: { value?: string } } };
    return JSON.parse(r.result?.result?.value ?? "null") as Record<string, number> | null;
  } catch {
    return null;
  }
}

async function call(wsUrl: string, method: string, params: object): Promise<string> {
  const url = new URL(wsUrl);
  const socket = net.connect(Number(url.port), url.hostname);
  try {
    return await withTimeout(exchange(socket, url, JSON.stringify({ id: 1, method, params })), TIMEOUT_MS, method);
  } finally {
    socket.destroy();
  }
}

function exchange(socket: net.Socket, url: URL, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let upgraded = false;
    socket.on("error", reject);
    socket.on("close", () => reject(new Error("inspector closed the connection")));
    socket.on("connect", () => {
      socket.write(
        `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        if (!/^HTTP\/1\.1 101/.test(buf.subarray(0, end).toString())) return reject(new Error("inspector refused the WebSocket upgrade"));
        upgraded = true;
        buf = buf.subarray(end + 4);
        socket.write(frame(request));
      }
      for (;;) {
        const f = readFrame(buf);
        if (!f) return;
        buf = buf.subarray(f.size);
        if (f.text.startsWith('{"id":1,')) return resolve(f.text);
      }
    });
  });
}

/** A client-to-server text frame (clients must mask). */
function frame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x81, 0x80 | len]) : Buffer.from([0x81, 0x80 | 126, len >> 8, len & 0xff]);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i]! ^ mask[i % 4]!;
  return Buffer.concat([head, mask, body]);
}

function readFrame(b: Buffer): { text: string; size: number } | null {
  if (b.length < 2) return null;
  let len = b[1]! & 0x7f;
  let off = 2;
  if (len === 126) {
    if (b.length < 4) return null;
    len = b.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (b.length < 10) return null;
    len = Number(b.readBigUInt64BE(2));
    off = 10;
  }
  if (b.length < off + len) return null;
  return { text: b.subarray(off, off + len).toString("utf8"), size: off + len };
}
