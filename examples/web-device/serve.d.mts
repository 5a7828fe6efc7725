/** Types of serve.mjs (the web device example's server). */
export interface WebDeviceConfig {
  coordinatorUrl: string;
  taskId: string;
  enrolmentSecret: string;
  shards?: number;
  examples?: number;
  committee?: { pins: unknown; enrolmentUrl: string; enrolmentSecret: string };
}
export function startWebDeviceServer(options: { config: WebDeviceConfig; port?: number; host?: string; sdkDir?: string }): Promise<{ url: string; close(): Promise<void> }>;
