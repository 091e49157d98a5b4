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
        // The hypervisor may take fewer bytes than offered (it copies in chunks): send the
        // rest. Nothing useful to do if the console refuses output.
        let mut sent = 0;
        while sent < self.len {
            match hypercall::console_write(&self.buf[sent..self.len]) {
                Ok(n) if n > 0 => sent += n as usize,
                _ => break,
            }
        }
        self.len = 0;
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
