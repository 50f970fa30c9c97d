//! Work sharing on candle's persistent barrier pool (its own threads stay hot between
//! ops; spawning per call would cost more than a decode-step matmul).

use std::ops::Range;

/// Runs `f` over `0..items` in chunks spread across candle's pool (the caller works too).
pub fn for_each_chunk<F: Fn(Range<usize>) + Sync>(items: usize, f: F) {
    candle_core::utils::barrier_pool().execute_chunked(items, f)
}

/// A mutable slice that pool workers write disjoint parts of.
pub struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _slice: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: users write disjoint ranges only (documented at each use).
unsafe impl Sync for SharedMut<'_> {}
unsafe impl Send for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub fn new(slice: &'a mut [f32]) -> Self {
        SharedMut { ptr: slice.as_mut_ptr(), len: slice.len(), _slice: std::marker::PhantomData }
    }

    /// # Safety
    /// Callers on different threads must write disjoint elements.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.ptr, self.len)
    }
}
