/**
 * DEBUG=* and the SAS tokens (issue 13 §5): mqtt-packet traces the MQTT CONNECT password — a SAS
 * token valid for an hour, for DPS and for the hub — through the `debug` module. hubstate redacts
 * it in every namespace (the module's log and its %o/%O formatters) and warns at start. A real
 * device (`hubstate run`, a child process) against the local cloud with DEBUG=*, and the demo
 * (device and broker in one process) with the MQTT namespaces: no token, no key on any output.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { debugEnables, debugSecretsWarning, guardDebugOutput, redactDebugOutput as redactSecrets } from 'hubstate/internal';
import { spawnCli } from '../cli/spawn';

jest.setTimeout(120_000);

interface DebugModule {
  (namespace: string): (...args: unknown[]) => void;
  enable(namespaces: string): void;
  disable(): string;
}

/** What a leaked token looks like in clear, in a sig= value, or as Buffer bytes ("SharedAccessSig" in hex). */
function leaks(text: string): string[] {
  const found: string[] = [];
  for (const pattern of [/SharedAccessSignature sr=/, /sig=(?!\[redacted\])[^&\s]/, /53 68 61 72 65 64 41 63 63 65 73 73 53 69 67/i]) {
    const match = text.match(pattern);
    if (match) found.push(text.slice(Math.max(0, match.index! - 80), match.index! + 80));
  }
  return found;
}

describe('redaction and the warning (units)', () => {
  test.each([
    ['writeString: SharedAccessSignature sr=0ne00%2Fregistrations%2Fd&sig=abc%2Bdef%3D&skn=registration&se=1', 'writeString: SharedAccessSignature [redacted]'],
    ["{ password: 'SharedAccessSignature sr=h%2Fdevices%2Fd&sig=xyz&se=2' }", "{ password: 'SharedAccessSignature [redacted]' }"],
    ['url?sv=1&sig=Zm9v&se=3', 'url?sv=1&sig=[redacted]&se=3'],
    ['HostName=h;DeviceId=d;SharedAccessKey=a2V5a2V5=', 'HostName=h;DeviceId=d;SharedAccessKey=[redacted]'],
    ['nothing secret: sign=1, signal=2', 'nothing secret: sign=1, signal=2'],
  ])('%s', (input, output) => {
    expect(redactSecrets(input)).toBe(output);
  });

  test.each([
    ['*', 'mqtt-packet:writeToStream', true],
    ['mqtt-packet:*', 'mqtt-packet:writeToStream', true],
    ['mqtt*', 'mqttjs:client', true],
    ['azure-iot*', 'mqtt-packet:writeToStream', false],
    ['*,-mqtt-packet:*', 'mqtt-packet:writeToStream', false],
    ['foo bar,mqtt-packet:writeToStream', 'mqtt-packet:writeToStream', true],
    ['', 'mqtt-packet:writeToStream', false],
  ])('DEBUG=%j enables %s: %s', (value, namespace, expected) => {
    expect(debugEnables(value, namespace)).toBe(expected);
  });

  test('the warning: only when a DEBUG value reaches the MQTT traces; loud when nothing could be guarded', () => {
    expect(debugSecretsWarning(undefined, true)).toBeUndefined();
    expect(debugSecretsWarning('express:*', true)).toBeUndefined();
    expect(debugSecretsWarning('*', true)).toMatch(/mqtt-packet:writeToStream.*SAS tokens.*redacts/);
    expect(debugSecretsWarning('mqtt-packet:*', false)).toMatch(/THE TOKENS WILL BE PRINTED/);
  });

  test("the debug module's output: a token in %s, %o and as Buffer bytes is redacted", () => {
    expect(guardDebugOutput()).toBeGreaterThan(0);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const createDebug = require(require.resolve('debug', { paths: [require.resolve('mqtt-packet')] })) as DebugModule;
    const written: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
    const previous = createDebug.disable();
    try {
      createDebug.enable('hubstate-test:*');
      const debug = createDebug('hubstate-test:writeToStream');
      const token = 'SharedAccessSignature sr=h%2Fdevices%2Fd&sig=c2VjcmV0c2VjcmV0c2VjcmV0&se=1796266746';
      debug('writeString: %s', token);
      debug('packet: %o', { cmd: 'connect', password: token });
      debug('bytes: %o', Buffer.from(token));
      debug('bytes: %O', Buffer.from(token));
    } finally {
      createDebug.enable(previous);
      spy.mockRestore();
    }
    const text = written.join('');
    expect(text).toContain('hubstate-test:writeToStream');
    expect(text).toContain('SharedAccessSignature [redacted]');
    expect(text).toContain('[redacted bytes]');
    expect(text).not.toContain('c2VjcmV0c2VjcmV0');
    expect(leaks(text)).toEqual([]);
  });
});

describe('a device with DEBUG=* (child processes against the local cloud)', () => {
  let cloud: LocalCloud;
  let dir: string;
  let caFile: string;
  beforeAll(async () => {
    cloud = await startLocalCloud({ hubs: 1, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
    dir = mkdtempSync(join(tmpdir(), 'hubstate-debug-secrets-'));
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, cloud.ca);
  });
  afterAll(() => cloud?.stop());

  test('hubstate run: a loud warning, the MQTT traces are there, and no SAS token, sig or key in them', async () => {
    const registrationId = 'debug-star-1';
    const deviceKey = cloud.deviceKey(registrationId);
    const cli = spawnCli(['run', '--ca-file', caFile, '--data-dir', join(dir, 'data'), '--interval-ms', '200', '--duration', '6', '--log-level', 'debug'], {
      env: {
        DEBUG: '*',
        HUBSTATE_ID_SCOPE: cloud.idScope,
        HUBSTATE_REGISTRATION_ID: registrationId,
        HUBSTATE_DEVICE_KEY: deviceKey,
        HUBSTATE_PROVISIONING_HOST: cloud.provisioningHost,
      },
    });
    const exit = await cli.exited;
    const output = cli.stdout() + cli.stderr();
    expect(exit.code).toBe(0);
    expect(cli.stderr()).toMatch(/^hubstate: WARNING: DEBUG=\* turns on mqtt-packet:writeToStream.*SAS tokens/m);
    // The traces ran (both CONNECTs: DPS and hub) and the device worked.
    expect(output.match(/writeString: SharedAccessSignature \[redacted\]/g)?.length).toBeGreaterThanOrEqual(2);
    expect(cloud.telemetry({ deviceId: registrationId }).length).toBeGreaterThan(0);
    expect(leaks(output)).toEqual([]);
    for (const secret of [deviceKey, cloud.groupKey, encodeURIComponent(deviceKey)]) expect(output).not.toContain(secret);
  });

  test('hubstate demo (devices and the broker in one process): the broker-side traces carry no token either', async () => {
    const cli = spawnCli(['demo', '--duration', '3', '--log', join(dir, 'demo.log')], { env: { DEBUG: 'mqtt-packet:*,mqttjs*,aedes*' }, cwd: dir });
    const exit = await cli.exited;
    const output = cli.stdout() + cli.stderr();
    expect(cli.stderr()).toMatch(/WARNING: DEBUG=mqtt-packet:\*,mqttjs\*,aedes\* turns on/);
    expect(output).toContain('mqtt-packet:parser');
    expect(output).toContain('SharedAccessSignature [redacted]');
    expect(leaks(output)).toEqual([]);
    expect(exit.code).not.toBeNull();
  });
});
