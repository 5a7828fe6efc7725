export { startCoordinator } from './app.js';
export type { Coordinator, CoordinatorOptions } from './app.js';
export { loadConfig, ConfigError } from './config/config.js';
export type { CoordinatorConfig } from './config/config.js';
export { createLogger } from './logger.js';
export type { Logger, LoggerSettings } from './logger.js';
export { runServer, runMigrate } from './main.js';
export { COORDINATOR_ENVIRONMENT, COORDINATOR_NODE_OPTIONS } from './runtime-options.js';
export { VeilError } from './errors.js';
export type { VeilErrorCode } from './errors.js';
export { RoundEngine } from './rounds/engine.js';
export type { AssignmentResult, Clock, EngineEvents, RoundEngineOptions, Timer } from './rounds/engine.js';
export { createFakeTime } from './rounds/clock.js';
export type { FakeTime } from './rounds/clock.js';
export { createFedAvg, federatedAverage, createFedAvgAggregator, sampleClients } from './aggregation/fedavg.js';
export { BUILTIN_STRATEGIES, createStrategyRegistry } from './aggregation/registry.js';
export type { StrategyRegistry } from './aggregation/registry.js';
export type {
  Aggregator,
  AggregatorInput,
  ConfigValue,
  ConfigureFitInput,
  FinishInput,
  FinishOutput,
  FitConfig,
  FitFailure,
  FitPlan,
  FitResult,
  Rng,
  Strategy,
  StrategyCapabilities,
  StrategyDefinition,
  StrategyParams,
  StrategySpec,
  StrategyState,
  StrategyTaskContext,
} from './aggregation/strategy.js';
export type { TaskInput } from './rounds/task-settings.js';
export type { Round, RoundState, RoundSummary, Task, TaskSettings, TaskStatus, TrainingSettings } from './rounds/model.js';
