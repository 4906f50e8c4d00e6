export { Fleet, fleetPolicy, shardMemberCount, shardStartOffsets, staggerSchedule, validateShard, type FleetCloud, type FleetCounts, type FleetOptions, type FleetShard } from './fleet';
export { runFleet, type FleetRunOptions, type FleetSummary } from './run';
export { ProgressBar } from './progress';
export { runFleetCommand, formatSummary, type FleetCommandOptions } from './command';
