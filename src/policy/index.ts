/** The pure retry policies: classification of SDK errors and backoff. SDK-free by design. */
export * from './types';
export {
  CLASSIFICATION_TABLE,
  classify,
  classifyFacts,
  extractFacts,
  redactSecrets,
  toFailure,
  type ClassificationRule,
  type ClassifyContext,
  type ErrorFacts,
} from './classify';
export {
  curveCapMs,
  DEFAULT_POLICY,
  fleetMaxDelayMs,
  nextDelay,
  nextRandom,
  PRESETS,
  resolvePolicy,
  seedFrom,
  type PresetName,
  type RetryPolicyInput,
} from './backoff';
