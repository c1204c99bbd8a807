//! The one panic boundary: every call into user code from the loop, and every `extern "C"`
//! function, runs through [`guard`], so a panic becomes [`Error::Panic`] instead of unwinding
//! into C (undefined behaviour) or killing the loop thread.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, Result};

/// Runs `f`, turning a panic into [`Error::Panic`] with the panic message.
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Error::Panic(message(payload).into()))
}

fn message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or("(no message)", |s| s).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        let err = guard(|| -> i32 { panic!("boom {}", 7) }).unwrap_err();
        assert!(matches!(&err, Error::Panic(m) if m == "boom 7"), "{err}");
        assert_eq!(guard(|| 5).unwrap(), 5);
    }
}
