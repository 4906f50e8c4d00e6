/** hubstate/chaos: the seeded chaos soak shared by `npm run soak` and the test suite. */
export { runSoak } from './soak';
export { SOAK_POLICY, DEFAULT_RSS_TOLERANCE, type SoakOptions } from './options';
export type { SoakReport } from './report';
export type { InvariantResult } from './invariants';
export type { FaultOutcome } from './faults';
export { readRecordedSchedule, sameScheduleAsRecorded, type RecordedSchedule } from './replay';
export {
  FAULT_KINDS,
  LONG_FAULTS,
  generateSchedule,
  scheduleDigest,
  scheduleSeed,
  faultsByKind,
  describeFault,
  maxRetryAfterMs,
  minRetryAfterMs,
  type FaultKind,
  type ScheduledFault,
  type ScheduleOptions,
} from './schedule';
export {
  maxBackoff,
  recoveryBound,
  policyLowerBoundMs,
  shortestWaitMs,
  attemptRateBound,
  checkAttemptRate,
  checkWindow,
  disabledDpsBound,
  fastestHubCycleMs,
  maxInWindow,
  rssVerdict,
  SERVER_ERROR_FLOOR_MS,
  type Bound,
  type DelayFacts,
  type AttemptRateBound,
  type DisabledDpsBound,
  type RssSample,
  type RssTolerance,
} from './bounds';
export { SecretScanner, SECRET_MARKERS, type Secret, type ScanReport, type ScanSource } from './secrets';
export { formatReport } from './format';
