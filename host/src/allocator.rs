//! The process heap (glibc's malloc on Linux), tuned for a host that keeps a few large
//! models and runs many short plugin calls on many threads.
//!
//! Why: glibc gives each thread that allocates its own arena, up to 8 per core, and an
//! arena keeps what was freed in it. Plugin runs hop between tokio workers, generations
//! run on blocking-pool threads and the embedding batcher on its own thread, so sixteen
//! plugins at once left ~25 MiB of freed-but-kept heap spread over a dozen arenas
//! (BENCHMARKS.md, "Memory": peak 1.72x the model files with the default, 1.58x with
//! two arenas). The model work itself allocates little per call (the engines reuse their
//! buffers), so two arenas cost no measurable speed.
//!
//! A program that embeds the host and wants its own setting sets `MALLOC_ARENA_MAX`
//! (respected: the host then leaves the arenas alone) or calls
//! [`HostBuilder::allocator_arenas`](crate::HostBuilder::allocator_arenas)`(None)`.

/// Arenas the host asks for when nobody else chose.
pub const DEFAULT_ARENAS: usize = 2;

/// Caps the number of malloc arenas at `arenas`, once per process, unless the
/// environment already set `MALLOC_ARENA_MAX`. Threads that already have an arena keep
/// it; later threads share the capped set.
pub fn limit_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() || arenas == 0 {
            return;
        }
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes the allocator's tuning; M_ARENA_MAX takes an int.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas.min(i32::MAX as usize) as i32);
            }
        });
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Hands the heap's free pages back to the system. Loading a model frees nearly as much
/// as it keeps (candle's tensors and GGUF blocks, converted into the families' own
/// layouts and dropped), and glibc keeps freed memory in its arenas: without this a
/// loaded MiniLM and SmolLM2 stayed ~60 MiB above their weights (BENCHMARKS.md, "Memory").
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
