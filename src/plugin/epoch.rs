//! The engine's epoch ticker: it advances the epoch every [`EPOCH_TICK`]
//! while a guarded store lives (a plugin call is running), and sleeps
//! otherwise.
//!
//! Epochs only matter to a store executing guest code, so a ticker that
//! ran all the time woke the process 100 times a second for nothing: on a
//! seed peer serving hits, each wake-up took a core from a connection
//! thread for ~20 µs (`/proc/<pid>/task/*/schedstat`, BENCHMARKS.md).

use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::EngineWeak;

use super::EPOCH_TICK;

/// How long an idle ticker sleeps before it looks whether its engine is
/// gone (the host dropped): its only wake-up while no plugin runs.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// An engine and its ticker: what a guarded store is made from.
#[derive(Clone, Debug)]
pub struct Clocked {
    pub engine: wasmtime::Engine,
    pub ticker: Arc<Ticker>,
}

impl Clocked {
    /// `engine`, with its ticker thread started.
    pub fn start(engine: wasmtime::Engine) -> std::io::Result<Self> {
        let ticker = Ticker::start(engine.weak())?;
        Ok(Self { engine, ticker })
    }
}

/// The count of live guarded stores, and the ticker's wake-up.
#[derive(Debug, Default)]
pub struct Ticker {
    live: parking_lot::Mutex<usize>,
    start: parking_lot::Condvar,
    /// Epochs advanced, for tests.
    #[cfg(test)]
    ticks: AtomicU64,
}

/// Keeps the ticker running while held: a guarded store holds one for its
/// life (in its epoch callback, dropped with the store).
#[derive(Debug)]
pub struct Ticking(Arc<Ticker>);

impl Drop for Ticking {
    fn drop(&mut self) {
        *self.0.live.lock() -= 1;
    }
}

impl Ticker {
    /// Starts the ticker thread of the engine `weak` names; it ends once
    /// the engine is dropped.
    pub fn start(weak: EngineWeak) -> std::io::Result<Arc<Self>> {
        let ticker = Arc::new(Self::default());
        let thread = ticker.clone();
        std::thread::Builder::new()
            .name("seedgate-epoch".into())
            .spawn(move || thread.run(weak))?;
        Ok(ticker)
    }

    /// The ticker runs until the returned guard is dropped (and any other).
    pub fn hold(self: &Arc<Self>) -> Ticking {
        let mut live = self.live.lock();
        *live += 1;
        if *live == 1 {
            self.start.notify_one();
        }
        Ticking(self.clone())
    }

    fn run(&self, weak: EngineWeak) {
        loop {
            {
                let mut live = self.live.lock();
                while *live == 0 {
                    if self.start.wait_for(&mut live, IDLE_CHECK).timed_out()
                        && weak.upgrade().is_none()
                    {
                        return;
                    }
                }
            }
            // A tick after the call began, as an always-running ticker's
            // would come within one: a store's first deadline is one tick.
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
            #[cfg(test)]
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_only_while_a_store_lives() {
        let engine =
            wasmtime::Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        let ticker = Ticker::start(engine.weak()).unwrap();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticker.ticks(), 0, "no store: no tick");

        let held = (ticker.hold(), ticker.hold());
        std::thread::sleep(EPOCH_TICK * 10);
        let running = ticker.ticks();
        assert!(running >= 3, "{running} ticks in 10 ticks' time");

        drop(held.0);
        std::thread::sleep(EPOCH_TICK * 3);
        assert!(ticker.ticks() > running, "one store still lives");
        drop(held.1);
        std::thread::sleep(EPOCH_TICK * 3);
        let stopped = ticker.ticks();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticker.ticks(), stopped, "no store: the ticker sleeps");

        // A store again: it ticks again, at once.
        let _again = ticker.hold();
        std::thread::sleep(EPOCH_TICK * 5);
        assert!(ticker.ticks() > stopped);
    }
}
