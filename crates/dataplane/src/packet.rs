//! A frame in its buffer: the bytes received, and the room behind them that lets a
//! tunnel's headers be put in front of the packet (and an ICMP error be shorter than the
//! packet it answers).

use std::ops::{Deref, DerefMut};

/// A frame of `*len` bytes at the start of a buffer that may be longer. Dereferences to
/// the frame's bytes, so the engine reads and rewrites it as a slice; only
/// [`Packet::open`] and [`Packet::truncate`] change its length, which they write to
/// `len` (a device keeps it in the frame's token).
#[derive(Debug)]
pub struct Packet<'a> {
    buf: &'a mut [u8],
    len: &'a mut usize,
}

impl<'a> Packet<'a> {
    /// The first `*len` bytes of `buf` are the frame (`*len` is cut to the buffer's
    /// length); the rest is room.
    #[inline]
    pub fn new(buf: &'a mut [u8], len: &'a mut usize) -> Packet<'a> {
        *len = (*len).min(buf.len());
        Packet { buf, len }
    }

    /// The frame's length.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        *self.len
    }

    /// Opens `by` bytes at offset `at`: what follows moves back by `by` within the
    /// buffer (the opened bytes keep what was there). False, with nothing changed, when
    /// the buffer has no such room or `at` is beyond the frame.
    #[inline]
    pub fn open(&mut self, at: usize, by: usize) -> bool {
        let len = *self.len;
        if at > len || len + by > self.buf.len() {
            return false;
        }
        self.buf.copy_within(at..len, at + by);
        *self.len += by;
        true
    }

    /// Shortens the frame to `len` bytes (no-op if it is not longer).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        *self.len = (*self.len).min(len);
    }
}

impl Deref for Packet<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.buf[..*self.len]
    }
}

impl DerefMut for Packet<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..*self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_moves_the_tail_back_and_refuses_what_does_not_fit() {
        let mut buf = [1, 2, 3, 4, 0, 0, 0];
        let mut len = 4;
        let mut p = Packet::new(&mut buf, &mut len);
        assert!(p.open(1, 2));
        assert_eq!(&p[..], &[1, 2, 3, 2, 3, 4]);
        assert!(!p.open(0, 2));
        assert!(!p.open(7, 0));
        assert_eq!(p.len(), 6);
        p.truncate(2);
        assert_eq!(&p[..], &[1, 2]);
        assert_eq!(len, 2);
        let mut whole = [9u8; 3];
        let mut len = 3;
        assert!(!Packet::new(&mut whole, &mut len).open(0, 1));
    }
}
