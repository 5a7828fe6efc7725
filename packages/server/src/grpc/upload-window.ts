/**
 * Receive windows for admitted uploads. The coordinator announces HTTP/2's default stream window
 * (federation-service.ts' SERVER_STREAM_WINDOW_BYTES, 65,535 bytes): what an upload held before its admission to the
 * upload budget may park. Once an upload is admitted, that small window makes the device stop every
 * 32 KiB or so until the coordinator's WINDOW_UPDATE reaches it: a 400 kB update crosses in a dozen
 * round trips, each waking both processes (a raw node:http2 server answering the same gRPC bytes
 * spends ~0.75 ms more CPU per 400 kB upload with the 65,535-byte window than with a 1 MiB one, and
 * its devices ~0.5 ms more: bench/coord-ladder.mjs, 3 pairs).
 *
 * So while a connection carries an admitted upload, its SETTINGS_INITIAL_WINDOW_SIZE is raised to
 * the rest of that upload (at most {@link MAX_UPLOAD_WINDOW_BYTES}): the device sends the rest in one
 * flight. When no admitted upload is left on it, the default comes back. HTTP/2 applies a changed
 * initial window to every stream of the connection (RFC 9113 Sec. 6.9.2), so an upload still held
 * on a raised connection may park up to the raised window: at most one admitted upload's size per
 * connection with an admitted upload, i.e. the memory held stays within the upload budget plus the
 * default window per held upload, twice over at worst.
 *
 * grpc-js (1.14) exposes neither the HTTP/2 stream nor its session of a call; they are read from its
 * call object (`call.call.stream.session`, the intercepting call when no interceptor is set). Should
 * a grpc-js version move them, nothing is raised (slower, nothing else changes), and
 * upload-window.test.ts fails.
 */
import type http2 from 'node:http2';

/** Largest window an admitted upload's connection is raised to, bytes (the protocol's chunk size, 1 MiB). */
export const MAX_UPLOAD_WINDOW_BYTES = 2 ** 20;

/** The HTTP/2 session a grpc-js server call runs on, or null when it cannot be found. */
export function http2SessionOf(call: unknown): http2.Http2Session | null {
  const stream = (call as { call?: { stream?: { session?: unknown } } })?.call?.stream;
  const session = stream?.session as http2.Http2Session | undefined;
  return session !== undefined && typeof session.settings === 'function' ? session : null;
}

export interface UploadWindows {
  /**
   * Raises the receive window of `call`'s connection for an admitted upload with `remainingBytes` to
   * come; the returned (idempotent) function lowers it again once the connection has no admitted upload.
   */
  widen(call: unknown, remainingBytes: number): () => void;
}

/** `defaultWindowBytes`: the stream window the server announces (and comes back to). */
export function createUploadWindows(defaultWindowBytes: number): UploadWindows {
  const raised = new WeakMap<http2.Http2Session, { admitted: number }>();
  const announce = (session: http2.Http2Session, bytes: number): void => {
    if (session.destroyed || session.closed) return;
    try {
      session.settings({ initialWindowSize: bytes });
    } catch {
      // (Too many SETTINGS not acknowledged by the device: it keeps the window it has.)
    }
  };
  return {
    widen(call, remainingBytes) {
      const session = http2SessionOf(call);
      if (session === null) return () => {};
      let entry = raised.get(session);
      if (entry === undefined) raised.set(session, (entry = { admitted: 0 }));
      // gRPC frames the payload (5 bytes per message, a few for the field's tag and length): a little room for them.
      if (entry.admitted++ === 0) announce(session, Math.min(MAX_UPLOAD_WINDOW_BYTES, Math.max(defaultWindowBytes, remainingBytes + 1024)));
      let done = false;
      return () => {
        if (done) return;
        done = true;
        if (--entry.admitted === 0) announce(session, defaultWindowBytes);
      };
    },
  };
}
