/**
 * A TCP proxy on loopback that records the HTTP/2 frames (RFC 9113 Sec. 4.1) crossing it in each
 * direction, in the order the proxy saw them: what a device and the coordinator really send each
 * other (frame sizes, flow-control updates), which neither end exposes.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

/** HTTP/2 frame types (RFC 9113 Sec. 6). */
export const FRAME = { DATA: 0, HEADERS: 1, SETTINGS: 4, WINDOW_UPDATE: 8 } as const;
export const END_STREAM = 0x1;

export interface RecordedFrame {
  /** `up`: device to coordinator; `down`: coordinator to device. */
  direction: 'up' | 'down';
  type: number;
  flags: number;
  streamId: number;
  /** Payload length, bytes. */
  length: number;
  /** WINDOW_UPDATE only: the window size increment, bytes. */
  increment?: number;
  /** SETTINGS only: its parameters (identifier, value) in order (RFC 9113 Sec. 6.5.1; none in an ACK). */
  settings?: Array<[number, number]>;
}

/** SETTINGS parameter identifiers (RFC 9113 Sec. 6.5.2). */
export const SETTING = { INITIAL_WINDOW_SIZE: 0x4 } as const;

/** Splits one direction's bytes into frames (after the client's 24-byte connection preface). */
function frameParser(direction: 'up' | 'down', onFrame: (frame: RecordedFrame) => void): (chunk: Buffer) => void {
  let pending = Buffer.alloc(0);
  let prefaceLeft = direction === 'up' ? 24 : 0;
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    if (prefaceLeft > 0) {
      const skip = Math.min(prefaceLeft, pending.length);
      pending = pending.subarray(skip);
      prefaceLeft -= skip;
    }
    while (pending.length >= 9) {
      const length = pending.readUIntBE(0, 3);
      if (pending.length < 9 + length) return;
      const type = pending[3]!;
      const frame: RecordedFrame = { direction, type, flags: pending[4]!, streamId: pending.readUInt32BE(5) & 0x7fffffff, length };
      if (type === FRAME.WINDOW_UPDATE) frame.increment = pending.readUInt32BE(9) & 0x7fffffff;
      if (type === FRAME.SETTINGS) {
        frame.settings = [];
        for (let at = 9; at + 6 <= 9 + length; at += 6) frame.settings.push([pending.readUInt16BE(at), pending.readUInt32BE(at + 2)]);
      }
      onFrame(frame);
      pending = pending.subarray(9 + length);
    }
  };
}

export interface FrameRecorder extends AsyncDisposable {
  /** `127.0.0.1:port` of the proxy: give it to the device instead of the coordinator's address. */
  readonly address: string;
  /** Every frame seen so far, in order. */
  readonly frames: RecordedFrame[];
}

/** Starts a recording proxy in front of `target` (`host:port`, cleartext HTTP/2). */
export async function recordFrames(target: string): Promise<FrameRecorder> {
  const url = new URL(`http://${target}`);
  const frames: RecordedFrame[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((device) => {
    const coordinator = net.connect({ host: url.hostname, port: Number(url.port) });
    for (const s of [device, coordinator]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        device.destroy();
        coordinator.destroy();
      });
    }
    const up = frameParser('up', (f) => frames.push(f));
    const down = frameParser('down', (f) => frames.push(f));
    device.on('data', (chunk: Buffer) => {
      up(chunk);
      coordinator.write(chunk);
    });
    coordinator.on('data', (chunk: Buffer) => {
      down(chunk);
      device.write(chunk);
    });
    device.on('end', () => coordinator.end());
    coordinator.on('end', () => device.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    frames,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
