import type { EventObject } from 'xstate';

/**
 * What an actor does, as a plain function. The XState logic wraps it (`fromPromise(work)`), and
 * the machine shared by every device of a process (src/shared-machine.ts) calls it directly.
 */
export type PromiseWork<Output, Input> = (args: { input: Input; signal: AbortSignal }) => Promise<Output>;

/** A callback actor's work: started with its input, returns its cleanup. */
export type CallbackWork<Input> = (args: { input: Input; sendBack: (event: EventObject) => void }) => () => void;
