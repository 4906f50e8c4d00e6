/**
 * hubstate/internal: what hubstate's own tools (the `hubstate` command, the soak, the benches) use
 * from the device library beyond its public API. No stability promise: an application imports
 * from `hubstate`.
 */
export { MAX_TIMER_MS, systemClock } from './clock';
export { debugEnables, debugModules, debugSecretsWarning, guardDebugOutput, REDACTED_PATHS } from './logger';
// The debug-output scrubber (the public redactSecrets is the classifier's, for error messages).
export { redactSecrets as redactDebugOutput } from './logger';
export { CLASSIFICATION_TABLE, SERVER_BUSY_MIN_DELAY_MS } from './policy/classify';
export { curveCapMs, fleetMaxDelayMs, nextRandom, seedFrom } from './policy/backoff';
export { publishCheckIntervalMs } from './actors/hub';
export { redactProxyUrl, resolveNetworkOptions } from './actors/transport';
export { resolveOptions } from './options';
export { writeFileAtomic } from './store/files';
export { openSqliteOutbox } from './store/sqlite-outbox';
