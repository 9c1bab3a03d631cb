//! The global allocator of the `allocator` feature on wasm32: size-class
//! free lists for small blocks in front of a general allocator (dlmalloc).
//!
//! A processor's allocations are mostly small and short-lived: every batch
//! decodes into a few small `String`s and `Vec`s per reading, all freed when
//! the call returns. dlmalloc serves them correctly but expensively under
//! wasmi's fuel metering, which charges the whole straight-line body of a
//! function on every call, whichever branch runs (about 1 000 units per
//! `malloc`, 300 per `free`).
//!
//! So a block of at most [`MAX_SMALL`] bytes with alignment <= 8 comes from
//! one of ten power-of-two size classes (8, 16, …, 4096 bytes): a freed block
//! is pushed on its class's singly linked free list and popped by the next
//! allocation of that class, a handful of instructions each way, and growing
//! within a class keeps the block. New small blocks are carved from 64 KiB
//! chunks taken from the backing allocator. Larger or more aligned blocks go
//! to the backing allocator directly.
//!
//! Small blocks are never given back to the backing allocator; they are
//! reused for later small allocations of their class, so the memory they
//! hold is bounded by the peak of live small blocks (rounded up to their
//! class) plus one chunk.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::null_mut;

/// Number of size classes: `8 << 0 ..= 8 << 9` bytes.
const CLASSES: usize = 10;
/// The largest block served from the size classes.
pub(crate) const MAX_SMALL: usize = 8 << (CLASSES - 1);
/// Bytes requested from the backing allocator at a time for small blocks.
const CHUNK: usize = 64 * 1024;

struct State {
    /// Head of each class's free list; a free block's first word points to
    /// the next one (null ends the list).
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk: `[bump, end)`, 8-aligned.
    bump: usize,
    end: usize,
}

/// Size-class free lists in front of the allocator `B`.
pub(crate) struct SizeClass<B> {
    backing: B,
    state: UnsafeCell<State>,
}

// SAFETY: only constructed through `new`, whose caller promises that the
// allocator is used from one thread at a time (wasm32 without atomics).
unsafe impl<B> Sync for SizeClass<B> {}

/// Whether a block of `size` bytes aligned to `align` is a small one.
#[inline(always)]
fn is_small(size: usize, align: usize) -> bool {
    size <= MAX_SMALL && align <= 8
}

/// The class of a small size: 0 for 0..=8 bytes, 1 for 9..=16, …, 9 for
/// 2049..=4096.
#[inline(always)]
fn class(size: usize) -> usize {
    (usize::BITS - (size.saturating_sub(1) | 7).leading_zeros() - 3) as usize
}

impl<B: GlobalAlloc> SizeClass<B> {
    /// # Safety
    /// The allocator must never be used by two threads at once.
    pub(crate) const unsafe fn new(backing: B) -> Self {
        SizeClass {
            backing,
            state: UnsafeCell::new(State {
                free: [null_mut(); CLASSES],
                bump: 0,
                end: 0,
            }),
        }
    }

    /// The free-list head of class `c`.
    ///
    /// # Safety
    /// `c < CLASSES`.
    #[inline(always)]
    unsafe fn slot(&self, c: usize) -> *mut *mut u8 {
        // SAFETY: in bounds per the contract; the state lives as long as self.
        unsafe { (*self.state.get()).free.as_mut_ptr().add(c) }
    }

    /// Class `c` has no free block: carve one from the current chunk,
    /// starting a new chunk when it is used up.
    #[cold]
    #[inline(never)]
    fn refill(&self, c: usize) -> *mut u8 {
        let size = 8usize << c;
        // SAFETY: single-threaded (see `new`), and no other reference to the
        // state is live during this call.
        let st = unsafe { &mut *self.state.get() };
        if st.end - st.bump < size {
            // SAFETY: valid, non-zero layouts.
            let chunk = unsafe {
                self.backing
                    .alloc(Layout::from_size_align_unchecked(CHUNK, 8))
            };
            if chunk.is_null() {
                // Near the memory limit: try for just this block.
                return unsafe {
                    self.backing
                        .alloc(Layout::from_size_align_unchecked(size, 8))
                };
            }
            // Hand out the rest of the old chunk as free blocks: its length
            // is a multiple of 8, so it splits exactly into classes.
            while st.end - st.bump >= 8 {
                let rest = st.end - st.bump;
                let k = class(rest).min(CLASSES - 1);
                let k = if 8usize << k > rest { k - 1 } else { k };
                let block = st.bump as *mut u8;
                // SAFETY: `block` is 8-aligned, unused and at least `8 << k`
                // bytes long.
                unsafe { block.cast::<*mut u8>().write(st.free[k]) };
                st.free[k] = block;
                st.bump += 8 << k;
            }
            st.bump = chunk as usize;
            st.end = chunk as usize + CHUNK;
        }
        let block = st.bump as *mut u8;
        st.bump += size;
        block
    }

    /// `realloc` that moves the block: allocate, copy, free. (Also between
    /// two blocks of the backing allocator: its in-place growth would save
    /// little, as `memory.copy` is cheap, and would link more of its code.)
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    #[cold]
    #[inline(never)]
    unsafe fn realloc_moving(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size` with this alignment is a valid layout per
        // realloc's contract.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size per realloc's contract.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the copied length, and distinct.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

// SAFETY: small blocks are `8 << class` bytes (>= the request), 8-aligned
// (chunks are 8-aligned and every class size is a multiple of 8), and each
// is handed out at most once until freed; the rest is forwarded to `B`.
unsafe impl<B: GlobalAlloc> GlobalAlloc for SizeClass<B> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_small(layout.size(), layout.align()) {
            // SAFETY: forwarded.
            return unsafe { self.backing.alloc(layout) };
        }
        let c = class(layout.size());
        // SAFETY: `c < CLASSES` since the size is at most MAX_SMALL; a free
        // block holds the next pointer in its first word.
        unsafe {
            let slot = self.slot(c);
            let block = *slot;
            if block.is_null() {
                return self.refill(c);
            }
            *slot = block.cast::<*mut u8>().read();
            block
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !is_small(layout.size(), layout.align()) {
            // SAFETY: forwarded; a block of B.
            return unsafe { self.backing.dealloc(ptr, layout) };
        }
        // SAFETY: `ptr` is a small block of this class (8-aligned, at least 8
        // bytes) that its owner gave up; `class < CLASSES`.
        unsafe {
            let slot = self.slot(class(layout.size()));
            ptr.cast::<*mut u8>().write(*slot);
            *slot = ptr;
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let size = layout.size();
        if is_small(size, layout.align()) && new_size <= MAX_SMALL && class(size) == class(new_size)
        {
            return ptr; // the block already has room
        }
        // SAFETY: forwarded.
        unsafe { self.realloc_moving(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::vec::Vec;

    #[test]
    fn classes() {
        for (size, c) in [
            (0, 0),
            (1, 0),
            (8, 0),
            (9, 1),
            (16, 1),
            (17, 2),
            (2049, 9),
            (4096, 9),
        ] {
            assert_eq!(class(size), c, "{size}");
        }
    }

    /// Random allocations, frees and reallocs across all classes and the
    /// backing allocator: blocks are aligned, distinct, keep their bytes.
    #[test]
    fn blocks_are_distinct_and_keep_their_contents() {
        // SAFETY: used by this thread only.
        let a = unsafe { SizeClass::new(System) };
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let fill = |p: *mut u8, l: Layout, tag: u8| unsafe { p.write_bytes(tag, l.size()) };
        let check = |p: *mut u8, l: Layout, tag: u8| {
            let bytes = unsafe { core::slice::from_raw_parts(p, l.size()) };
            assert!(
                bytes.iter().all(|&b| b == tag),
                "block {p:?} {l:?} overwritten"
            );
        };
        for step in 0..20_000u32 {
            let r = next();
            let size = match r % 8 {
                0 => 1 + (r >> 8) as usize % 8,
                1..=5 => 1 + (r >> 8) as usize % 200,
                6 => 1 + (r >> 8) as usize % 5000,
                _ => 1 + (r >> 8) as usize % 70_000,
            };
            let align = if r % 97 == 0 {
                16
            } else {
                1 << ((r >> 40) % 4)
            };
            let tag = step as u8;
            match (r >> 32) % 3 {
                0 if !live.is_empty() => {
                    let (p, l, t) = live.swap_remove((r >> 20) as usize % live.len());
                    check(p, l, t);
                    unsafe { a.dealloc(p, l) };
                }
                1 if !live.is_empty() => {
                    let i = (r >> 20) as usize % live.len();
                    let (p, l, t) = live[i];
                    check(p, l, t);
                    let q = unsafe { a.realloc(p, l, size) };
                    assert!(!q.is_null());
                    let kept = Layout::from_size_align(l.size().min(size), l.align()).unwrap();
                    check(q, kept, t);
                    let nl = Layout::from_size_align(size, l.align()).unwrap();
                    fill(q, nl, tag);
                    live[i] = (q, nl, tag);
                }
                _ => {
                    let l = Layout::from_size_align(size, align).unwrap();
                    let p = unsafe { a.alloc(l) };
                    assert!(!p.is_null());
                    assert_eq!(
                        p as usize % align.max(if size <= MAX_SMALL { 8 } else { 1 }),
                        0
                    );
                    fill(p, l, tag);
                    live.push((p, l, tag));
                }
            }
        }
        for (p, l, t) in live {
            check(p, l, t);
            unsafe { a.dealloc(p, l) };
        }
    }
}
