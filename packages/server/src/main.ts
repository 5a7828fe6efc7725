import { ConfigError, loadConfig } from './config/config.js';
import { startCoordinator } from './app.js';
import { createLogger } from './logger.js';

/**
 * `veil server`: starts a coordinator from the environment and shuts it down
 * gracefully on SIGINT/SIGTERM. Returns the process exit code on failure.
 */
export async function runServer(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`veil server: ${error.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  const logger = createLogger({ level: config.logLevel });
  let coordinator;
  try {
    coordinator = await startCoordinator({ config, logger });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'secret_key_material' || code === 'invalid_key_material' || code === 'tls_material') {
      process.stderr.write(`veil server: refusing to start: ${(error as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  const stop = (signal: string): void => {
    logger.info({ signal }, 'shutting down');
    void coordinator.close().then(() => process.exit(0));
  };
  // SIGHUP rereads the TLS certificate and key (the files are also polled): no restart needed.
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading TLS material');
    void coordinator.reloadTls();
  });
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

/** `veil migrate`: applies pending migrations and exits. */
export async function runMigrate(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const config = loadConfig(env);
  const logger = createLogger({ level: config.logLevel });
  const { openDatabase } = await import('./persistence/database.js');
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
  try {
    return await db.migrate();
  } finally {
    await db.close();
  }
}
