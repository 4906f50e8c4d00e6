/**
 * hubstate-testing: model-based failover tests of your own device application. The fault model is
 * an XState machine (`faultModel`, drawn in visualizations/fault-model.*); `generateFailoverPaths`
 * lists its paths and `runFailoverPath` replays one against the local cloud (hubstate-cloud) with
 * your device.
 */
export {
  createFaultModel,
  EXPECTED_LEG,
  faultModel,
  faultModelCoverage,
  generateFaultPaths,
  generateFaultSequences,
  isLongPath,
  LONG_FAULTS,
  MAX_CUSTOM_FAULTS,
  MAX_FAULT_DEPTH,
  REFUSING_FAULTS,
  replayCases,
  SHORT_FAULTS,
  type Fault,
  type LongFault,
  type RefusalCode,
  type ReplayCase,
  type ShortFault,
} from './fault-model';
export { deliveryReport, type DeliveryReport } from './delivery';
export { DPS_OUTAGE_MS, FLAP_SESSION_MS, flapWindowMs, policyWindow, type PolicyCurve } from './long-faults';
export { SkipAheadClock } from './skip-ahead-clock';
export {
  generateFailoverPaths,
  runFailoverPath,
  TEST_POLICY,
  type CustomFault,
  type DeviceConnection,
  type FailoverPath,
  type FailoverPathOptions,
  type FailoverReport,
  type Invariant,
  type InvariantContext,
  type RunFailoverOptions,
  type StepReport,
} from './failover-paths';
