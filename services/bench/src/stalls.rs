//! A hiccup meter (after jHiccup): a thread asks to sleep 1 ms, over and
//! over, and records how much later than asked it wakes. With a core to spare
//! it wakes within tens of µs; a longer wait means the machine did not run it,
//! and when the machine is not saturated that is the machine stopping as a
//! whole (on this VM: paused by its host for ~3 ms, a few times, once a
//! second). Every request in flight or due meanwhile waits as long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Overshoots from this long on count as stalls.
const STALL: Duration = Duration::from_millis(2);

pub struct Meter {
    stop: Arc<AtomicBool>,
    started: Instant,
    thread: JoinHandle<Vec<Duration>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stalls {
    /// Stalls per second of the measurement.
    pub per_s: f64,
    /// Milliseconds stalled per second (the overshoots summed).
    pub ms_per_s: f64,
    /// The longest stall, in ms.
    pub max_ms: f64,
}

impl Meter {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut over = Vec::new();
            let tick = Duration::from_millis(1);
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(tick);
                let late = t.elapsed().saturating_sub(tick);
                if late >= STALL {
                    over.push(late);
                }
            }
            over
        });
        Self {
            stop,
            started: Instant::now(),
            thread,
        }
    }

    pub fn finish(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let over = self.thread.join().unwrap_or_default();
        summarise(&over, secs)
    }
}

fn summarise(over: &[Duration], secs: f64) -> Stalls {
    if secs <= 0.0 {
        return Stalls::default();
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    Stalls {
        per_s: over.len() as f64 / secs,
        // A fold from +0.0: an empty float sum is -0.0.
        ms_per_s: over.iter().map(ms).fold(0.0, |a, b| a + b) / secs,
        max_ms: over.iter().map(ms).fold(0.0, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_counted_summed_and_maxed_per_second() {
        let over = [Duration::from_millis(3), Duration::from_millis(5)];
        let s = summarise(&over, 2.0);
        assert_eq!(s.per_s, 1.0);
        assert_eq!(s.ms_per_s, 4.0);
        assert_eq!(s.max_ms, 5.0);
        assert_eq!(summarise(&[], 0.0), Stalls::default());
    }
}
