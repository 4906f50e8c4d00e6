/**
 * The `--ui` page's memory is bounded: transitions, samples and fault marks live in ring buffers,
 * and a page that connects gets what they hold (the replay), newest last, never more than the
 * stated limits. Checked on the server's own event stream, without a browser.
 */
import * as http from 'node:http';
import type { StateChange } from 'hubstate';
import { RingBuffer } from '../../src/cli/ring-buffer';
import { FAULT_HISTORY, SAMPLE_HISTORY, startUi, TRANSITION_HISTORY, type UiBackend, type UiHistory } from '../../src/cli/ui';

/** The first frame of /events: the `history` replay. */
function firstFrame(url: string): Promise<{ event: string; data: UiHistory }> {
  return new Promise((resolve, reject) => {
    const req = http.get(new URL('/events', url), (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        const end = text.indexOf('\n\n');
        if (end < 0) return;
        const frame = text.slice(0, end);
        const event = /^event: (.*)$/m.exec(frame)?.[1] ?? '';
        const data = JSON.parse(/^data: (.*)$/m.exec(frame)?.[1] ?? 'null') as UiHistory;
        req.destroy();
        resolve({ event, data });
      });
    });
    req.on('error', reject);
  });
}

describe('RingBuffer', () => {
  test('keeps the newest `capacity` items, oldest first', () => {
    const ring = new RingBuffer<number>(3);
    expect(ring.toArray()).toEqual([]);
    ring.push(1);
    ring.push(2);
    expect(ring.toArray()).toEqual([1, 2]);
    for (let i = 3; i <= 7; i++) ring.push(i);
    expect(ring.toArray()).toEqual([5, 6, 7]);
    expect(ring.size).toBe(3);
  });

  test('refuses a capacity that could not hold anything', () => {
    expect(() => new RingBuffer(0)).toThrow(RangeError);
    expect(() => new RingBuffer(1.5)).toThrow(RangeError);
  });
});

describe('demo --ui history replay', () => {
  test(`a page that connects gets the last ${TRANSITION_HISTORY} transitions of the fleet, in order, and each device's state`, async () => {
    const listeners: Array<(device: string, change: StateChange) => void> = [];
    const states = new Map([
      ['dev-a', 'Connected'],
      ['dev-b', 'BackingOff'],
    ]);
    const backend: UiBackend = {
      title: 'history test',
      stats: () => ({ state: 'Connected', hub: 'hub-0', sent: 0, delivered: 0, queued: 0, lastErrorClass: null, nextRetryMs: null, devices: 2 }),
      onState: () => () => undefined,
      faults: [],
      fleet: {
        devices: () => [...states].map(([name, state]) => ({ name, state })),
        onState(listener) {
          listeners.push(listener);
          return () => listeners.splice(listeners.indexOf(listener), 1);
        },
      },
    };
    const ui = await startUi(backend, { svg: '<svg xmlns="http://www.w3.org/2000/svg"></svg>' });
    try {
      const extra = 57;
      for (let i = 0; i < TRANSITION_HISTORY + extra; i++) {
        const change: StateChange = { previous: 'Connected', value: 'BackingOff', event: `HUB_LOST#${i}`, errorClass: 'transient', delayMs: i };
        for (const listener of listeners) listener(i % 2 === 0 ? 'dev-a' : 'dev-b', change);
      }
      const { event, data } = await firstFrame(ui.url);
      expect(event).toBe('history');
      expect(data.limits).toEqual({ transitions: TRANSITION_HISTORY, samples: SAMPLE_HISTORY, faults: FAULT_HISTORY });
      expect(data.transitions).toHaveLength(TRANSITION_HISTORY);
      // The oldest ones were dropped: the replay starts at #extra and ends at the newest.
      expect(data.transitions.map((t) => t.event)).toEqual(Array.from({ length: TRANSITION_HISTORY }, (_, i) => `HUB_LOST#${extra + i}`));
      expect(data.transitions[0]).toMatchObject({ device: 'dev-b', previous: 'Connected', value: 'BackingOff', errorClass: 'transient', delayMs: extra });
      expect(data.firstDevice).toBe('dev-a');
      expect(data.devices).toEqual([
        { name: 'dev-a', state: 'Connected' },
        { name: 'dev-b', state: 'BackingOff' },
      ]);
      expect(data.since).toBeLessThanOrEqual(data.now);
    } finally {
      await ui.close();
    }
    // Closing the page server unsubscribes from the devices.
    expect(listeners).toHaveLength(0);
  });
});
