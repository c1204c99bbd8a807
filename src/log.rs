//! The library's own diagnostics, off by default: the application installs a sink and a level.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// How serious a diagnostic is; a sink set for one level gets that level and the ones above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

/// A log sink. It runs on whichever thread logs (usually a loop thread).
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// The most verbose level wanted: 0 when logging is off, so the check costs one load.
static MAX: AtomicU8 = AtomicU8::new(0);
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Installs `sink` for messages at `level` and above; `None` turns logging off.
pub fn set_logger(sink: Option<Sink>, level: Level) {
    let max = if sink.is_some() { level as u8 } else { 0 };
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = sink;
    MAX.store(max, Ordering::Release);
}

pub(crate) fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Acquire)
}

pub(crate) fn emit(level: Level, msg: &str) {
    let sink = SINK.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(sink) = sink {
        // A panicking sink must not take the loop down with it.
        let _ = crate::panic::guard(|| sink(level, msg));
    }
}

/// Logs a formatted message if its level is enabled; the formatting is skipped otherwise.
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            $crate::log::emit($crate::log::Level::$level, &format!($($arg)*));
        }
    };
}
pub(crate) use log;
