//! The connection tables' memory: anonymous mappings of our own (page aligned, so a
//! 32-byte IPv4 entry or a 64-byte IPv6 entry never straddles two cache lines), in
//! reserved huge pages (1 GiB, else 2 MiB) where the host provides enough of them, else
//! with transparent huge pages advised.

use std::fmt;
use std::ptr::NonNull;

use xdpvs_sched::conn::{Entry, Family, SlotMemory};

/// How a table's memory is backed, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Reserved 1 GiB pages (`vm.nr_hugepages` of hugepages-1048576kB).
    Huge1G,
    /// Reserved 2 MiB pages (`vm.nr_hugepages`).
    Huge2M,
    /// 4 KiB pages with transparent huge pages advised (the kernel may merge them).
    Transparent,
    /// 4 KiB pages (transparent huge pages are off).
    Small,
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backing::Huge1G => "reserved 1 GiB huge pages",
            Backing::Huge2M => "reserved 2 MiB huge pages",
            Backing::Transparent => "4 KiB pages, transparent huge pages advised",
            Backing::Small => "4 KiB pages (transparent huge pages are off)",
        })
    }
}

const GIB: usize = 1 << 30;
const MIB2: usize = 2 << 20;
/// `MAP_HUGE_SHIFT`: the page size's log2 goes in the flags' bits 26..32.
const MAP_HUGE_SHIFT: i32 = 26;

mod sealed {
    /// Types whose all-zero bytes are a valid value. Sealed: only the table's slot types.
    pub trait Zeroed: Sized + Send {}
}
use sealed::Zeroed;
impl Zeroed for u8 {}
// `Entry::EMPTY` is documented to be all zero bytes (every field is an integer).
impl Zeroed for Entry<std::net::Ipv4Addr> {}
impl Zeroed for Entry<std::net::Ipv6Addr> {}

/// `len` values of `T`, zeroed, in a private anonymous mapping we unmap on drop.
struct Mapping<T> {
    ptr: NonNull<T>,
    len: usize,
    /// Bytes mapped (`len` values rounded up to the page size).
    mapped: usize,
}

// SAFETY: the mapping is owned exclusively by this value (like a `Box<[T]>`), and `T`
// is `Send`.
unsafe impl<T: Send> Send for Mapping<T> {}

impl<T: Zeroed> Mapping<T> {
    /// Maps `len` zeroed values; `page` is the size of the pages asked for with
    /// `flags` (`MAP_HUGETLB | ...`, or none); `populate` faults every page in now.
    fn new(len: usize, page: usize, flags: i32, populate: bool) -> std::io::Result<Mapping<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| std::io::Error::other("table size overflows"))?;
        let mapped = bytes.max(1).next_multiple_of(page);
        let populate = if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: an anonymous private mapping at an address the kernel picks: it
        // aliases no memory of ours. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags | populate,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<T>()).ok_or_else(|| std::io::Error::other("mmap gave 0"))?;
        Ok(Mapping { ptr, len, mapped })
    }
}

impl<T> Mapping<T> {
    fn advise_huge(&self) -> bool {
        // SAFETY: the range is exactly our mapping; MADV_HUGEPAGE changes how its pages
        // are backed, never their contents.
        unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.mapped, libc::MADV_HUGEPAGE) == 0 }
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: the mapping holds `len` values of `T` (page aligned, so aligned for
        // `T`), all valid since the kernel zeroes anonymous pages and all-zero bytes are
        // a valid `T` (`Mapping::new` takes only `Zeroed` types); it lives as long as `self`, and `&self` rules out a
        // `&mut` to it meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for Mapping<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of `mapped` bytes, unmapped once; no reference to it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.mapped);
        }
    }
}

/// Free reserved huge pages of `size_kb` KiB (sysfs; 0 if the size is not offered).
pub(crate) fn huge_pages_free(size_kb: usize) -> usize {
    std::fs::read_to_string(format!(
        "/sys/kernel/mm/hugepages/hugepages-{size_kb}kB/free_hugepages"
    ))
    .ok()
    .and_then(|v| v.trim().parse().ok())
    .unwrap_or(0)
}

fn transparent_huge_pages_off() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|v| v.contains("[never]"))
}

/// Maps `len` zeroed values of `T`: in reserved huge pages if `reserved` and enough are
/// free (1 GiB pages for 512 MiB or more, else 2 MiB pages), else in 4 KiB pages with
/// transparent huge pages advised.
fn map<T: Zeroed>(
    len: usize,
    reserved: bool,
    populate: bool,
) -> std::io::Result<(Mapping<T>, Backing)> {
    let bytes = len.saturating_mul(std::mem::size_of::<T>());
    if reserved {
        let tries = [
            (GIB, 30, Backing::Huge1G, bytes >= GIB / 2),
            (MIB2, 21, Backing::Huge2M, true),
        ];
        for (page, log2, backing, worth) in tries {
            if worth && huge_pages_free(page >> 10) * page >= bytes.next_multiple_of(page) {
                let flags = libc::MAP_HUGETLB | (log2 << MAP_HUGE_SHIFT);
                if let Ok(m) = Mapping::new(len, page, flags, populate) {
                    return Ok((m, backing));
                }
            }
        }
    }
    let mut m = Mapping::new(len, 4096, 0, false)?;
    let backing = if !transparent_huge_pages_off() && m.advise_huge() {
        Backing::Transparent
    } else {
        Backing::Small
    };
    if populate {
        // Written after the advice, so that the kernel can back it with huge pages.
        touch(&mut m);
    }
    Ok((m, backing))
}

/// Faults in every page of `m` by writing a byte of each.
fn touch<T>(m: &mut Mapping<T>) {
    let p = m.ptr.as_ptr().cast::<u8>();
    for off in (0..m.mapped).step_by(4096) {
        // SAFETY: `off` is inside our mapping of `mapped` bytes; writing 0 where the
        // kernel's zero page already reads 0 leaves every value as it was (valid).
        unsafe { p.add(off).write_volatile(0) };
    }
}

/// A connection table's slots in memory of our own (see the module's comment).
pub struct TableMemory<A: Family> {
    entries: Mapping<Entry<A>>,
    tags: Mapping<u8>,
    backing: Backing,
}

impl<A: Family> fmt::Debug for TableMemory<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableMemory")
            .field("slots", &self.entries.len)
            .field("backing", &self.backing)
            .finish()
    }
}

impl<A: Family> TableMemory<A>
where
    Entry<A>: Zeroed,
{
    /// `n` empty slots. `resident`: in reserved huge pages where there are enough, every
    /// page faulted in now, so that the table never takes a page fault on the packet
    /// path; else lazily zeroed 4 KiB pages (transparent huge pages advised) that cost
    /// no memory until written (a table nobody may use).
    pub fn new(n: usize, resident: bool) -> Result<TableMemory<A>, String> {
        let (entries, backing) = map(n, resident, resident).map_err(|e| e.to_string())?;
        // Tags of fewer than 2 Mi slots would waste most of a reserved page.
        let (tags, _) = map(n, resident && n >= MIB2, resident).map_err(|e| e.to_string())?;
        Ok(TableMemory {
            entries,
            tags,
            backing,
        })
    }
}

impl<A: Family> TableMemory<A> {
    /// How the entries are backed.
    pub fn backing(&self) -> Backing {
        self.backing
    }
}

impl<A: Family> SlotMemory<A> for TableMemory<A> {
    #[inline]
    fn entries(&self) -> &[Entry<A>] {
        self.entries.as_slice()
    }
    #[inline]
    fn tags(&self) -> &[u8] {
        self.tags.as_slice()
    }
    #[inline]
    fn split_mut(&mut self) -> (&mut [Entry<A>], &mut [u8]) {
        (self.entries.as_mut_slice(), self.tags.as_mut_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn slots_are_page_aligned_zeroed_and_writable() {
        let mut m = TableMemory::<Ipv4Addr>::new(1000, true).expect("memory");
        assert_eq!(m.entries().as_ptr() as usize % 4096, 0);
        assert_eq!(m.entries().len(), 1000);
        assert!(m.entries().iter().all(|e| *e == Entry::EMPTY));
        assert!(m.tags().iter().all(|&t| t == 0));
        let (e, t) = m.split_mut();
        t[999] = 0x81;
        e[999] = Entry::EMPTY;
        assert_eq!(m.tags()[999], 0x81);
        let lazy = TableMemory::<Ipv6Addr>::new(100_000, false).expect("memory");
        assert_eq!(lazy.entries().as_ptr() as usize % 64, 0);
        assert!(lazy.entries()[99_999] == Entry::EMPTY);
        assert!(matches!(
            lazy.backing(),
            Backing::Transparent | Backing::Small
        ));
    }
}

#[cfg(test)]
mod huge {
    use super::*;
    use std::net::Ipv4Addr;

    /// Where the host has 2 MiB pages reserved (XDPVS_TEST_HUGE_PAGES=1 says it must),
    /// a resident table takes them.
    #[test]
    fn a_resident_table_takes_reserved_huge_pages_when_there_are_enough() {
        let must = std::env::var_os("XDPVS_TEST_HUGE_PAGES").is_some();
        let free = huge_pages_free(2048);
        if free < 4 {
            assert!(
                !must,
                "XDPVS_TEST_HUGE_PAGES is set but {free} 2 MiB pages are free"
            );
            return;
        }
        let m = TableMemory::<Ipv4Addr>::new(100_000, true).expect("memory");
        assert_eq!(m.backing(), Backing::Huge2M);
        assert!(huge_pages_free(2048) < free, "the pages are taken");
        assert!(m.entries().iter().all(|e| *e == Entry::EMPTY));
    }
}
