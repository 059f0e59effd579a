//! Deleting many files at once.
//!
//! An unlink costs the CPU little but waits on the disk: on ext4 mounted with `discard`
//! (as this project's machines are) the last unlink of a file issues a discard of its
//! blocks and waits for it (`ext4_free_blocks` -> `blkdev_issue_discard` ->
//! `submit_bio_wait`), so one thread deletes at the disk's latency, not its throughput,
//! whatever the number of cores. The kernel holds the folder's lock only while it removes
//! the name; the inode is freed (and the discard waited for) after, so unlinks in one
//! folder overlap as well as unlinks in different folders. Measured on the 2-core
//! development machine: `xargs -P` over `rm` of 100,000 files, 35.6 s with 2 at once,
//! 16.3 s with 8, 7.8 s with 32 (BENCHMARKS.md, Cleanup).
//!
//! [`map`] runs one closure per item on a bounded number of scoped threads and returns the
//! results in the items' order, so what a caller records from them (statuses, figures,
//! messages) is the same whichever thread did which item.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Deletions in flight per SPEC being worked on: measured (see the module docs), far more
/// than the cores because each one waits on the disk, not on the CPU.
pub const DEFAULT_DELETE_THREADS: usize = 16;

/// Applies `f` to every item on up to `threads` threads; results in `items`' order.
///
/// A panic in `f` (the fault tests' stand-in for a crash) stops the other threads from
/// taking further items, then propagates to the caller, as a crash would stop them all.
pub fn map<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let parts: Vec<Vec<(usize, R)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let _flag = StopOnPanic(&stop);
                    let mut done = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (i, r) in parts.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every item taken by a thread that returned"))
        .collect()
}

/// Sets the flag when its thread unwinds, so the others stop taking items.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    #[test]
    fn results_come_back_in_item_order_whatever_the_threads() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [0, 1, 3, 16, 5000] {
            let out = map(&items, threads, |x| x * 2);
            assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        assert!(map(&[] as &[u32], 8, |x| *x).is_empty());
    }

    #[test]
    fn items_really_run_at_the_same_time() {
        // Four items each wait until all four have started: only possible with four
        // running at once. The wait has a bound so a serial run fails instead of hanging.
        let arrived = Mutex::new(0usize);
        let all = Condvar::new();
        let out = map(&[0, 1, 2, 3], 4, |_| {
            let mut n = arrived.lock().unwrap();
            *n += 1;
            all.notify_all();
            let (n, timeout) = all
                .wait_timeout_while(n, Duration::from_secs(30), |n| *n < 4)
                .unwrap();
            !timeout.timed_out() && *n == 4
        });
        assert_eq!(out, [true; 4]);
    }

    #[test]
    fn a_panic_stops_the_other_threads_and_reaches_the_caller() {
        let taken = AtomicUsize::new(0);
        let items: Vec<usize> = (0..40_000).collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map(&items, 4, |i| {
                taken.fetch_add(1, Ordering::SeqCst);
                if *i == 10 {
                    panic!("simulated crash");
                }
                std::thread::sleep(Duration::from_micros(50));
            })
        }));
        assert!(result.is_err(), "the panic propagates");
        assert!(
            taken.load(Ordering::SeqCst) < items.len(),
            "the other threads stopped taking items"
        );
    }
}
