//! The console's ring: bytes written to the console wait here until the serial port takes
//! them (Xen's `serial_txbuf`, drained by the UART's transmit interrupt).
//!
//! The serial port takes a byte every ~87 µs at 115200 baud. Written straight to it, with
//! interrupts off, a guest's console call held its CPU for as long as its text took to go
//! out (`abi::hypercall::CONSOLE_CALL_BYTES`: ~45 ms a call), and the neighbours of that CPU
//! waited as long; with several CPUs writing, each waited for the others' text too. Through
//! the ring, a write costs a copy; the port is fed as it has room, a FIFO's worth at a time,
//! from wherever the hypervisor passes (`kernel/src/console.rs`).
//!
//! Whole lines go in under the ring's lock, so lines from different CPUs never interleave,
//! and they come out in the order they went in.

/// A byte ring of `N` bytes.
pub struct ByteRing<const N: usize> {
    buf: [u8; N],
    /// Where the oldest byte is.
    head: usize,
    /// How many bytes wait.
    len: usize,
}

impl<const N: usize> ByteRing<N> {
    pub const fn new() -> Self {
        ByteRing {
            buf: [0; N],
            head: 0,
            len: 0,
        }
    }

    /// How many bytes wait.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many more bytes fit.
    pub fn room(&self) -> usize {
        N - self.len
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        let tail = (self.head + self.len) % N.max(1);
        let first = n.min(N - tail);
        self.buf[tail..tail + first].copy_from_slice(&bytes[..first]);
        self.buf[..n - first].copy_from_slice(&bytes[first..n]);
        self.len += n;
        n
    }

    /// Takes the oldest bytes into `out`, as many as wait and fit; returns how many.
    pub fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        let first = n.min(N - self.head);
        out[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        self.head = (self.head + n) % N.max(1);
        self.len -= n;
        n
    }
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn drain<const N: usize>(r: &mut ByteRing<N>, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = std::vec![0u8; chunk];
        loop {
            let n = r.pop(&mut buf);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn bytes_come_out_in_order_across_the_wrap() {
        let mut r = ByteRing::<8>::new();
        assert_eq!(r.push(b"abcde"), 5);
        let mut two = [0u8; 3];
        assert_eq!(r.pop(&mut two), 3);
        assert_eq!(&two, b"abc");
        // "de" at 3..5; "fghij" wraps from 5 to 2.
        assert_eq!(r.push(b"fghij"), 5);
        assert_eq!(r.len(), 7);
        assert_eq!(drain(&mut r, 3), b"defghij");
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_ring_takes_what_fits_and_loses_nothing_it_took() {
        let mut r = ByteRing::<4>::new();
        assert_eq!(r.push(b"xy"), 2);
        assert_eq!(r.push(b"12345"), 2);
        assert_eq!(r.room(), 0);
        assert_eq!(r.push(b"z"), 0);
        assert_eq!(drain(&mut r, 16), b"xy12");
    }

    #[test]
    fn many_small_writes_and_reads_keep_the_stream() {
        let mut r = ByteRing::<7>::new();
        let stream: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let (mut fed, mut got) = (0, Vec::new());
        let mut buf = [0u8; 5];
        let mut step = 0;
        while got.len() < stream.len() {
            step += 1;
            let want = (step % 4) + 1;
            fed += r.push(&stream[fed..(fed + want).min(stream.len())]);
            let n = r.pop(&mut buf[..(step % 3) + 1]);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, stream);
    }
}
