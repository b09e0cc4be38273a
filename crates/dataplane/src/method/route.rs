//! Direct routing (`-g`): the real server holds the VIP and answers the client itself, so
//! the packet reaches it unchanged above Ethernet.

/// Nothing to rewrite above Ethernet.
#[inline]
pub(super) fn to_real(_frame: &mut [u8]) {}
