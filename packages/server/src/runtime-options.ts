/**
 * Node.js options the coordinator process is meant to run with: the container image's entry point
 * (Dockerfile) passes them, and so do the benchmarks that time a coordinator process
 * (bench/rounds.ts); run `veil server` by hand as `node <options> $(which veil) server` to get the
 * same (README, "Running the coordinator"). They cannot go through NODE_OPTIONS.
 *
 * `--initial-old-space-size=128` (MiB): V8 derives its first old-generation and global allocation
 * limits from it. At the default, a coordinator holding ~40 MB of live heap sits at V8's soft
 * limit right after every full collection, so it starts concurrent marking again at once: a full
 * mark-compact every 3-6 rounds at 10 clients, each marking the whole heap on V8's helper threads
 * and pausing the event loop 6-20 ms. With 128 MiB the limits start above that working set: per
 * 20-round run at 10 clients one full collection instead of 5-7 (committee) and 1-2 instead of
 * 2-4 (plaintext), about a third fewer at 100 clients, and the same peak RSS at 1,000 clients
 * (figures: README, issue 17). The full collections left are started by external memory pressure
 * (the upload, socket and model ArrayBuffers, which V8 limits apart from the heap: about one every
 * 10 plaintext rounds at 10 clients, --trace-incremental-marking), which this option does not
 * change. The limits still grow and shrink with the live heap as usual: this sets where they
 * start, not a cap.
 */
export const COORDINATOR_NODE_OPTIONS: readonly string[] = ['--initial-old-space-size=128'];
