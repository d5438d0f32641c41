//! Proxy worker threads, one single-threaded tokio runtime each.
//!
//! Why not tokio's work-stealing runtime: a proxied login is a handful of tiny reads and
//! writes, and on a box that also runs busy backends the cost that dominates is waking
//! threads. A connection that stays on the thread that accepted it is never handed to
//! another thread, so it costs no cross-thread wake-ups (`futex`) and fewer context
//! switches. Each worker accepts on its own `SO_REUSEPORT` socket, so the kernel spreads
//! new connections over the workers (the model of nginx's and Envoy's workers).

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Starting a worker thread failed.
#[derive(Debug, thiserror::Error)]
#[error("start proxy worker thread {index}: {source}")]
pub struct WorkerError {
    index: usize,
    source: std::io::Error,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The running worker threads.
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

/// How many workers `configured` means: itself, or one per CPU for 0.
pub(crate) fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Workers {
    /// Starts `n` (≥ 1) worker threads named `proxy-0`, `proxy-1`, ...
    pub(crate) fn start(n: usize) -> Result<Workers, WorkerError> {
        let mut workers = Vec::with_capacity(n);
        for index in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| WorkerError { index, source })?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("proxy-{index}"))
                .spawn(move || {
                    // The worker's tasks run while this thread blocks here.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Sessions still open after the drain are dropped with the runtime.
                    runtime.shutdown_background();
                })
                .map_err(|source| WorkerError { index, source })?;
            workers.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// The workers' runtimes, in order.
    pub(crate) fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| &w.handle)
    }

    /// How many workers run.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Stops every worker; tasks still running on them are dropped. `join` waits for the
    /// threads to exit (not from inside one of them).
    pub(crate) fn stop(&mut self, join: bool) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        if join {
            for w in &mut self.workers {
                if let Some(t) = w.thread.take() {
                    if t.join().is_err() {
                        tracing::error!("a proxy worker thread panicked");
                    }
                }
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop(false);
    }
}
