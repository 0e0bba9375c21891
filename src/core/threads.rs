//! divest's own rayon pools.
//!
//! The thread count has two levels: a process default (`DIVEST_NUM_THREADS`, else the
//! available parallelism; changed by [`set_num_threads`]) and an optional per-thread
//! override ([`set_thread_override`], what `with divest.threads(n):` sets) that wins in the
//! thread that set it. A small cache keeps one pool per distinct count.
//!
//! Fork safety: the pool cache lives in a heap slot tagged with the process id and
//! published through an atomic pointer. A forked child sees a slot from another pid and
//! installs a fresh one with a compare-and-swap; the parent's slot (whose mutex another
//! parent thread may have held at the moment of the fork, and whose pools have no threads
//! in the child) is leaked, never locked, never dropped. Nothing here blocks in the child.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

use super::error::{invalid, Error, Result};

/// Largest accepted thread count: more would only start threads that compete for cores
/// (and a typo such as 10**6 would try to start a million threads).
pub const MAX_THREADS: usize = 4096;

/// Pools kept at once (one per distinct count, least recently used dropped first).
const MAX_POOLS: usize = 4;

/// Process default; 0 until first read.
static DEFAULT_N: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's override; 0 = none (use the process default).
    static OVERRIDE: Cell<usize> = const { Cell::new(0) };
}

struct Slot {
    pid: u32,
    /// (count, pool), most recently used last.
    pools: Mutex<Vec<(usize, Arc<ThreadPool>)>>,
}

static SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());

fn env_threads() -> usize {
    if let Ok(v) = std::env::var("DIVEST_NUM_THREADS") {
        if let Ok(n) = v.trim().parse::<usize>() {
            if n >= 1 {
                return n.min(MAX_THREADS);
            }
        }
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS)
}

/// The process default thread count.
pub fn default_num_threads() -> usize {
    match DEFAULT_N.load(Ordering::Relaxed) {
        0 => {
            let n = env_threads();
            // Keep a value set concurrently by `set_num_threads`.
            match DEFAULT_N.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => n,
                Err(cur) => cur,
            }
        }
        n => n,
    }
}

/// Number of threads divest computations started from this thread use.
pub fn num_threads() -> usize {
    match thread_override() {
        0 => default_num_threads(),
        n => n,
    }
}

fn check_count(n: usize) -> Result<()> {
    if n == 0 {
        return Err(invalid!("n must be a positive number of threads; got 0"));
    }
    if n > MAX_THREADS {
        return Err(invalid!(
            "n must be at most {MAX_THREADS} threads; got {n} (use a count near the number \
             of cores)"
        ));
    }
    Ok(())
}

/// Sets the process default number of threads (1 ..= [`MAX_THREADS`]). Threads with an
/// override keep it.
pub fn set_num_threads(n: usize) -> Result<()> {
    check_count(n)?;
    DEFAULT_N.store(n, Ordering::Relaxed);
    Ok(())
}

/// This thread's override (0 = none).
pub fn thread_override() -> usize {
    OVERRIDE.with(|c| c.get())
}

/// Sets this thread's override (0 clears it) and returns the previous one.
pub fn set_thread_override(n: usize) -> Result<usize> {
    if n != 0 {
        check_count(n)?;
    }
    Ok(OVERRIDE.with(|c| c.replace(n)))
}

/// Called in a forked child (from an at-fork hook). Lock-free: it only replaces the slot
/// when it belongs to another process; see the module notes.
pub fn forget_pool_after_fork() {
    let _ = slot();
}

/// This process's pool cache, replacing (and leaking) a slot inherited over a fork.
fn slot() -> &'static Slot {
    let pid = std::process::id();
    loop {
        let cur = SLOT.load(Ordering::Acquire);
        // SAFETY: published slots are never freed.
        if let Some(s) = unsafe { cur.as_ref() } {
            if s.pid == pid {
                return s;
            }
        }
        let fresh = Box::into_raw(Box::new(Slot {
            pid,
            pools: Mutex::new(Vec::new()),
        }));
        match SLOT.compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just published, never freed. The replaced slot is leaked on purpose.
            Ok(_) => return unsafe { &*fresh },
            Err(_) => {
                // Another thread published first: ours was never shared.
                // SAFETY: `fresh` came from Box::into_raw above and was not published.
                drop(unsafe { Box::from_raw(fresh) });
            }
        }
    }
}

fn pool(n: usize) -> Result<Arc<ThreadPool>> {
    let s = slot();
    let mut evicted = None;
    let p = {
        // A poisoned lock only means a panic elsewhere; the cache itself stays valid.
        let mut pools = s.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pools.iter().position(|(k, _)| *k == n) {
            let e = pools.remove(i);
            let p = Arc::clone(&e.1);
            pools.push(e);
            p
        } else {
            let p = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("divest-{i}"))
                    .build()
                    .map_err(|e| invalid!("could not start {n} threads: {e}"))?,
            );
            if pools.len() >= MAX_POOLS {
                evicted = Some(pools.remove(0));
            }
            pools.push((n, Arc::clone(&p)));
            p
        }
    };
    // Dropped outside the lock: a pool nobody uses any more lets its threads exit.
    drop(evicted);
    Ok(p)
}

/// Runs `f` inside the pool for this thread's count; parallel iterators inside `f` use
/// it. Inside a pool worker (a nested call) `f` runs directly, in the current pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    if rayon::current_thread_index().is_some() {
        return Ok(f());
    }
    Ok(pool(num_threads())?.install(f))
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
        assert!(set_num_threads(MAX_THREADS + 1).is_err());
        assert!(set_thread_override(MAX_THREADS + 1).is_err());
    }

    #[test]
    fn override_is_per_thread_and_selects_the_pool() {
        let prev = set_thread_override(3).unwrap();
        assert_eq!(num_threads(), 3);
        assert_eq!(install(rayon::current_num_threads).unwrap(), 3);
        let other = std::thread::spawn(|| (thread_override(), num_threads()))
            .join()
            .unwrap();
        assert_eq!(other.0, 0);
        assert_eq!(other.1, default_num_threads());
        set_thread_override(2).unwrap();
        assert_eq!(install(rayon::current_num_threads).unwrap(), 2);
        set_thread_override(prev).unwrap();
    }
}
