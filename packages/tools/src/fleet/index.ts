export { Fleet, fleetPolicy, staggerSchedule, type FleetCloud, type FleetCounts, type FleetOptions } from './fleet';
export { runFleet, type FleetRunOptions, type FleetSummary } from './run';
export { ProgressBar } from './progress';
export { runFleetCommand, formatSummary, type FleetCommandOptions } from './command';
