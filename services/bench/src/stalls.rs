//! A hiccup meter (after jHiccup): a thread asks to sleep 1 ms, over and
//! over, and records how much later than asked it wakes. With a core to spare
//! it wakes within tens of µs; a longer wait means the machine did not run it,
//! and when the machine is not saturated that is the machine stopping as a
//! whole (on this VM: paused by its host for ~3 ms, a few times, once a
//! second). Every request in flight or due meanwhile waits as long.
//!
//! Beside it, the host's own account: the share of CPU time it stole from
//! this VM (`steal` in /proc/stat), which tells a host that is busy with
//! other guests from a guest that is overloaded by itself.
//!
//! And a speed probe: every tenth wake-up the thread also does a fixed piece
//! of arithmetic (~15 µs) and times it in its own CPU time, which a
//! preemption by another thread of this machine does not add to. A host can
//! slow the whole VM without pausing it or counting steal: on the eighth
//! session's host, a compute loop on the idle machine ran 3–10 times slower
//! than its median for 20–90 ms, on both vCPUs at once, every 1.5–2 s (about
//! 5% of the time). The sleeper hardly notices (it has almost no work), but
//! a service whose load at the measured rate is more than a third of the
//! machine falls behind for that long (docs/benchmarks.md, "Where we stand").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Overshoots from this long on count as stalls.
const STALL: Duration = Duration::from_millis(2);
/// The speed probe runs on every this many wake-ups (about 100 times a second).
const PROBE_EVERY: u32 = 10;
/// A probe this many times slower than the median probe counts as slow.
const SLOW: u32 = 3;
/// Fewer probes than this give no figure.
const MIN_PROBES: usize = 20;

pub struct Meter {
    stop: Arc<AtomicBool>,
    started: Instant,
    cpu: Option<CpuTimes>,
    thread: JoinHandle<(Vec<Duration>, Vec<Duration>)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stalls {
    /// Stalls per second of the measurement.
    pub per_s: f64,
    /// Milliseconds stalled per second (the overshoots summed).
    pub ms_per_s: f64,
    /// The longest stall, in ms.
    pub max_ms: f64,
    /// The percentage of CPU time the host stole meanwhile (None where
    /// /proc/stat cannot be read).
    pub steal_pct: Option<f64>,
    /// The percentage of speed probes that took [`SLOW`] times their median
    /// CPU time or more: how much of the time the host ran this VM slowly
    /// (None with too few probes).
    pub host_slow_pct: Option<f64>,
}

/// The machine's CPU time so far, all of it and the part stolen by the host
/// (in clock ticks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    pub fn now() -> Option<Self> {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The percentage of the CPU time since `self` that the host stole.
    pub fn steal_pct_since(self) -> Option<f64> {
        let now = Self::now()?;
        let total = now.total.checked_sub(self.total)?;
        let steal = now.steal.checked_sub(self.steal)?;
        (total > 0).then(|| steal as f64 * 100.0 / total as f64)
    }
}

/// The first line of /proc/stat: `cpu user nice system idle iowait irq
/// softirq steal guest guest_nice` (guest time is inside user already).
fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let steal = *fields.get(7)?;
    Some(CpuTimes {
        total: fields.iter().sum(),
        steal,
    })
}

impl Meter {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut over, mut probes) = (Vec::new(), Vec::new());
            let tick = Duration::from_millis(1);
            let mut wakes = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(tick);
                let late = t.elapsed().saturating_sub(tick);
                if late >= STALL {
                    over.push(late);
                }
                wakes = wakes.wrapping_add(1);
                if wakes.is_multiple_of(PROBE_EVERY) {
                    probes.extend(probe());
                }
            }
            (over, probes)
        });
        Self {
            stop,
            started: Instant::now(),
            cpu: CpuTimes::now(),
            thread,
        }
    }

    pub fn finish(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let (over, probes) = self.thread.join().unwrap_or_default();
        Stalls {
            steal_pct: self.cpu.and_then(CpuTimes::steal_pct_since),
            host_slow_pct: slow_pct(probes),
            ..summarise(&over, secs)
        }
    }
}

/// The calling thread's CPU time.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The CPU time of a fixed piece of arithmetic (a xorshift generator, in
/// registers: no memory, no system call); None if the clock went backwards.
fn probe() -> Option<Duration> {
    let start = thread_cpu_time();
    let (mut x, mut sum) = (0x9E37_79B9_7F4A_7C15u64, 0u64);
    for _ in 0..5_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(x.wrapping_mul(x));
    }
    std::hint::black_box(sum);
    thread_cpu_time().checked_sub(start)
}

/// The percentage of `probes` that took [`SLOW`] times the median or more.
fn slow_pct(mut probes: Vec<Duration>) -> Option<f64> {
    if probes.len() < MIN_PROBES {
        return None;
    }
    probes.sort();
    let slow_from = probes[probes.len() / 2] * SLOW;
    let slow = probes.iter().filter(|p| **p >= slow_from).count();
    Some(slow as f64 * 100.0 / probes.len() as f64)
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
        steal_pct: None,
        host_slow_pct: None,
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

    #[test]
    fn a_probe_is_slow_at_three_times_the_median() {
        let us = |n: u64| Duration::from_micros(n);
        // 18 probes at the median's speed, one at 2.9x, one at 3x, one at 10x.
        let mut probes = vec![us(10); 18];
        probes.extend([us(29), us(30), us(100)]);
        let pct = slow_pct(probes).unwrap();
        assert!((pct - 200.0 / 21.0).abs() < 1e-9, "{pct}");
        assert_eq!(slow_pct(vec![us(10); MIN_PROBES]), Some(0.0));
        assert_eq!(slow_pct(vec![us(10); MIN_PROBES - 1]), None);
    }

    #[test]
    fn the_probe_takes_measurable_time() {
        let p = probe().unwrap();
        // 5 000 rounds of arithmetic take µs, not nothing and not a second.
        assert!(
            p > Duration::from_nanos(500) && p < Duration::from_secs(1),
            "{p:?}"
        );
    }

    /// The probe's clock is the thread's CPU time: time the thread spends
    /// off the CPU (here asleep, as when another thread preempts it) does
    /// not count.
    #[test]
    fn the_probes_clock_stands_still_while_the_thread_is_off_the_cpu() {
        let before = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(50));
        let off = thread_cpu_time() - before;
        assert!(off < Duration::from_millis(10), "{off:?}");
    }

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let stat =
            "cpu  6051517 2633 920525 4853789 23795 0 197551 41805 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let t = parse_proc_stat(stat).unwrap();
        assert_eq!(t.steal, 41805);
        assert_eq!(
            t.total,
            6051517 + 2633 + 920525 + 4853789 + 23795 + 197551 + 41805
        );
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 3"), None);
        // The live file parses, and a window's share is a percentage.
        let start = CpuTimes::now().unwrap();
        let pct = start.steal_pct_since().unwrap_or(0.0);
        assert!((0.0..=100.0).contains(&pct), "{pct}");
    }
}
