//! Console output: `print!`/`println!` format into a line buffer on the stack and hand it to
//! the hypervisor's `console_write`, one hypercall per call when the text fits.

use core::fmt::{self, Write};

use crate::hypercall;

/// Bytes formatted before a write is issued; longer output goes out in several writes.
pub const LINE_BYTES: usize = 256;

/// A buffer that flushes to the console when full and when dropped.
pub struct Console {
    buf: [u8; LINE_BYTES],
    len: usize,
}

impl Console {
    pub const fn new() -> Self {
        Console {
            buf: [0; LINE_BYTES],
            len: 0,
        }
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 {
            // Nothing useful to do if the console refuses output.
            let _ = hypercall::console_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == LINE_BYTES {
                self.flush();
            }
            let n = rest.len().min(LINE_BYTES - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What `print!` calls.
pub fn print(args: fmt::Arguments<'_>) {
    let mut console = Console::new();
    let _ = console.write_fmt(args);
}
