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

/**
 * Environment the coordinator process is meant to run with: the container image sets it for every
 * process it runs (Dockerfile `ENV`: the coordinator and the compose file's custodians), and so do
 * `scripts/demo.sh` and the benchmarks, for every Veil process they start (bench/rounds.ts:
 * coordinator, custodians and device workers). glibc reads it when a process starts; musl (Alpine)
 * does not read it, and glibc before 2.35 ignores `hugetlb`.
 *
 * GLIBC_TUNABLES for glibc's malloc, where Node.js allocates ArrayBuffer memory: the socket read
 * buffers, each upload and each model message, megabytes per round that are freed again within
 * the round. With glibc's defaults these allocations keep landing on pages the process has not
 * touched yet, faulted in 4 KiB at a time: in bench:rounds each device process took ~90 minor page
 * faults per round and the coordinator a few hundred (`perf record -e page-faults`: most of them in
 * the socket reads). A fault costs ~14 us on the virtual machine this was measured on (a 64 MiB
 * mmap touched page by page), about 1.3 ms per device per round.
 * - `glibc.malloc.hugetlb=1`: malloc marks its memory for transparent huge pages (madvise), so one
 *   fault maps 2 MiB where the kernel has them (`/sys/kernel/mm/transparent_hugepage/enabled`
 *   `always` or `madvise`);
 * - `glibc.malloc.mmap_threshold=33554432`: allocations under 32 MiB come from malloc's heap (and
 *   so its huge pages) rather than from a mapping of their own each;
 * - `glibc.malloc.trim_threshold=67108864`: up to 64 MiB of free heap stays with the process for the
 *   next round rather than going back to the kernel. Setting either threshold turns off glibc's
 *   dynamic ones, which would otherwise keep the trim threshold at twice the mmap threshold; this
 *   keeps that ratio. Without it the trim threshold stays at glibc's 128 KiB default, and committee
 *   rounds gained little (coordinator CPU per client-round 7.79 -> 7.52 ms, against 8.35 -> 6.93 ms
 *   with it).
 * The thresholds alone, without huge pages, left the device processes' faults where they were (88
 * per client-round, one run). The price is memory: the coordinator's peak RSS at 1,000 clients
 * rose by ~9 MiB (medians 531 -> 540 MiB; 6 MiB without the trim threshold, 11 MiB with 256 MiB).
 * Measured effect: the README, "Node.js options" (bench/rounds/ab-glibc-tunables-2026-12-08-s17.json,
 * bench/rounds/ab-glibc-tunables-1000-2026-12-08-s17.json).
 */
export const COORDINATOR_ENVIRONMENT: Readonly<Record<string, string>> = {
  GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864',
};
