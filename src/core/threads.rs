//! divest's own rayon pool: sized by `DIVEST_NUM_THREADS` or `set_num_threads`, rebuilt
//! after a fork, and bypassed entirely when one thread is asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

use super::error::{invalid, Error, Result};

struct PoolState {
    /// Requested number of threads (always >= 1).
    n: usize,
    /// The pool and the process id that built it; `None` until first use.
    pool: Option<(u32, Arc<ThreadPool>)>,
}

static STATE: Mutex<Option<PoolState>> = Mutex::new(None);

fn default_threads() -> usize {
    if let Ok(v) = std::env::var("DIVEST_NUM_THREADS") {
        if let Ok(n) = v.trim().parse::<usize>() {
            if n >= 1 {
                return n;
            }
        }
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn with_state<R>(f: impl FnOnce(&mut PoolState) -> R) -> R {
    // A poisoned lock only means a panic elsewhere; the state itself stays valid.
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let st = guard.get_or_insert_with(|| PoolState {
        n: default_threads(),
        pool: None,
    });
    f(st)
}

/// Number of threads divest computations use.
pub fn num_threads() -> usize {
    with_state(|s| s.n)
}

/// Sets the number of threads (>= 1). The pool is rebuilt lazily on next use.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(invalid!("n must be a positive number of threads; got 0"));
    }
    with_state(|s| {
        if s.n != n {
            s.n = n;
            s.pool = None;
        }
    });
    Ok(())
}

/// Forgets the pool without joining its threads. Called in a forked child, where the
/// parent's worker threads do not exist: dropping the pool there could block.
pub fn forget_pool_after_fork() {
    with_state(|s| {
        if let Some(p) = s.pool.take() {
            std::mem::forget(p);
        }
    });
}

fn pool() -> Result<Arc<ThreadPool>> {
    let pid = std::process::id();
    with_state(|s| {
        if let Some((owner, _)) = &s.pool {
            if *owner != pid {
                // Built by the parent before a fork: its threads are gone in this process.
                if let Some(p) = s.pool.take() {
                    std::mem::forget(p);
                }
            }
        }
        if s.pool.is_none() {
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(s.n)
                .thread_name(|i| format!("divest-{i}"))
                .build()
                .map_err(|e| invalid!("could not start {} threads: {e}", s.n))?;
            s.pool = Some((pid, Arc::new(p)));
        }
        Ok(Arc::clone(&s.pool.as_ref().expect("built above").1))
    })
}

/// Runs `f` inside divest's pool; parallel iterators inside `f` use the pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    Ok(pool()?.install(f))
}

/// Returns `Err(Cancelled)` when the stop flag is raised. Called between blocks.
#[inline]
pub fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn install_runs_and_counts() {
        let s: u64 = install(|| (0..1000u64).into_par_iter().sum()).unwrap();
        assert_eq!(s, 999 * 1000 / 2);
        assert!(num_threads() >= 1);
        assert!(set_num_threads(0).is_err());
    }
}
