/** Runs one benchmark scenario (devices in this process, the cloud in another) and prints its JSON. */
import { benchColdBoot } from './fleet-boot';
import { benchFailover } from './failover';
import { benchHerd } from './herd';
import { benchLoad } from './load';
import { benchMemory } from './memory';
import type { ScenarioSpec } from './run';
import { benchThroughput } from './throughput';

async function run(spec: ScenarioSpec): Promise<unknown> {
  const p = spec.params as Record<string, number & boolean>;
  const cloudMode = 'child-process' as const;
  switch (spec.name) {
    case 'failover':
      return benchFailover({ runs: p.runs, seedSampleDevices: p.seedSampleDevices, skipSeedSample: p.skipSeedSample === true, cloudMode });
    case 'coldboot': {
      const ours = await benchColdBoot({ devices: p.devices, dpsRatePerSec: p.dpsRatePerSec, naive: false, cloudMode });
      const naive = await benchColdBoot({ devices: p.devices, dpsRatePerSec: p.dpsRatePerSec, naive: true, cloudMode });
      return { ours, naive };
    }
    case 'herd': {
      const ours = await benchHerd({ devices: p.devices, dpsRatePerSec: p.dpsRatePerSec, naive: false, cloudMode });
      const naive = await benchHerd({ devices: p.devices, dpsRatePerSec: p.dpsRatePerSec, naive: true, cloudMode });
      return { ours, naive };
    }
    case 'throughput':
      return benchThroughput({ messages: p.messages, repeats: p.repeats, cloudMode });
    case 'memory':
      return benchMemory(p.devices);
    case 'load':
      return benchLoad(p.runs);
  }
}

run(JSON.parse(process.argv[2]!) as ScenarioSpec).then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  },
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
