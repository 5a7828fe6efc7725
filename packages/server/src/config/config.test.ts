import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('configuration', () => {
  it('has laptop defaults: embedded database, local ports', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toBeUndefined();
    expect(c.grpcPort).toBe(50051);
    expect(c.httpPort).toBe(8080);
    expect(c.host).toBe('127.0.0.1');
    expect(c.dataDir.endsWith('.veil')).toBe(true);
  });

  it('rejects invalid values with the variable name', () => {
    expect(() => loadConfig({ VEIL_GRPC_PORT: '99999' })).toThrow(/VEIL_GRPC_PORT/);
    expect(() => loadConfig({ DATABASE_URL: 'mysql://x' })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({ VEIL_ADMIN_TOKEN: 'short' })).toThrow(/VEIL_ADMIN_TOKEN must be at least 16/);
    expect(() => loadConfig({ VEIL_LOG_LEVEL: 'loud' })).toThrow(ConfigError);
  });

  it('requires explicit secrets in production', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/VEIL_ADMIN_TOKEN and VEIL_ENROLMENT_SECRET/);
    const c = loadConfig({ NODE_ENV: 'production', VEIL_ADMIN_TOKEN: 'a'.repeat(32), VEIL_ENROLMENT_SECRET: 'b'.repeat(32) });
    expect(c.production).toBe(true);
  });
});
