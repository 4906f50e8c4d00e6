import { Listeners } from '../../src/listeners';

test('each listener once, in the order added; removal by the returned function or by reference', () => {
  const heard: string[] = [];
  const listeners = new Listeners<[number]>();
  const a = (n: number) => heard.push(`a${n}`);
  const b = (n: number) => heard.push(`b${n}`);
  const removeA = listeners.add(a);
  listeners.add(b);
  listeners.add(a);
  listeners.emit(1);
  expect(heard).toEqual(['a1', 'b1']);
  removeA();
  listeners.emit(2);
  listeners.remove(b);
  listeners.emit(3);
  expect(heard).toEqual(['a1', 'b1', 'b2']);
  expect(listeners.size).toBe(0);
});

test('a listener removed or added during an emit does not disturb that emit; the next one sees the change', () => {
  const heard: string[] = [];
  const listeners = new Listeners();
  const late = () => heard.push('late');
  const second = () => heard.push('second');
  listeners.add(() => {
    heard.push('first');
    listeners.remove(second);
    listeners.add(late);
  });
  listeners.add(second);
  listeners.emit();
  expect(heard).toEqual(['first', 'second']);
  listeners.emit();
  expect(heard).toEqual(['first', 'second', 'first', 'late']);
  listeners.clear();
  listeners.emit();
  expect(heard).toHaveLength(4);
});
