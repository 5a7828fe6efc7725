import type { StrategyDefinition } from '../strategy.js';
import { fedProxDefinition } from './fedprox.js';
import { bulyanDefinition, fedMedianDefinition, fedTrimmedAvgDefinition, krumDefinition, multiKrumDefinition } from './robust-strategies.js';
import { qFedAvgDefinition } from './qfedavg.js';
import { fedAdagradDefinition, fedAdamDefinition, fedAvgMDefinition, fedYogiDefinition } from './server-optimizer-strategies.js';

/**
 * The strategies beyond FedAvg, registered in `../registry.ts`:
 * - every mode: `fedprox` (the server aggregates like FedAvg);
 * - plaintext aggregate (server optimizers), plaintext and committee tasks: `fedavgm`, `fedadam`, `fedyogi`, `fedadagrad`;
 * - individual updates, plaintext tasks only: `qfedavg` (devices report their loss), `fedmedian`, `fedtrimmedavg`, `krum`, `multikrum`, `bulyan`.
 */
export const STRATEGY_DEFINITIONS: readonly StrategyDefinition[] = [
  fedProxDefinition,
  fedAvgMDefinition,
  fedAdamDefinition,
  fedYogiDefinition,
  fedAdagradDefinition,
  qFedAvgDefinition,
  fedMedianDefinition,
  fedTrimmedAvgDefinition,
  krumDefinition,
  multiKrumDefinition,
  bulyanDefinition,
];
