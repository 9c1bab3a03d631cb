//! wasm32-only glue: the global allocator and the panic handler (each behind
//! a default feature, so a crate can bring its own).

/// `allocator` feature: small blocks from size-class free lists, larger ones
/// from dlmalloc (over `memory.grow`, as Rust's std uses on wasm32); see
/// [`crate::sizeclass`].
#[cfg(feature = "allocator")]
#[global_allocator]
static ALLOCATOR: crate::sizeclass::SizeClass<dlmalloc::GlobalDlmalloc> =
    // SAFETY: wasm32 without atomics is single-threaded (see `global.rs`),
    // and dlmalloc serves any layout.
    unsafe { crate::sizeclass::SizeClass::new(dlmalloc::GlobalDlmalloc) };

/// `panic-handler` feature: log the panic message at error level through the
/// host, then trap. The host discards the instance and re-instantiates the
/// module (calling `init` again) before the next batch.
///
/// The message is formatted into a stack buffer (the host truncates at 1 KiB
/// anyway), so a panic caused by a failed allocation can still be reported.
#[cfg(feature = "panic-handler")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;

    struct Buf {
        bytes: [u8; 1024],
        len: usize,
    }

    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let mut n = s.len().min(self.bytes.len() - self.len);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }

    let mut buf = Buf {
        bytes: [0; 1024],
        len: 0,
    };
    let _ = match info.location() {
        Some(l) => write!(
            buf,
            "panicked at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => write!(buf, "panicked: {}", info.message()),
    };
    // SAFETY: `buf.bytes[..buf.len]` is initialised and readable.
    unsafe {
        crate::host::raw::log(
            crate::host::Level::Error as i32,
            buf.bytes.as_ptr(),
            buf.len,
        )
    };
    core::arch::wasm32::unreachable()
}
