//! [`Global`], a cell for a processor's `static`s (its parsed config, caches).

use core::ops::{Deref, DerefMut};

use crate::{Error, Result};

/// A cell for a processor's instance-wide data, usable in a `static`.
///
/// A wasm instance is single-threaded and the host never re-enters it, so a
/// processor only needs a place that `init` fills and `process` reads:
///
/// ```
/// use wasmgate_sdk::{Config, Global, Reading, Result};
///
/// struct Settings { gain: f64 }
/// static SETTINGS: Global<Settings> = Global::new();
///
/// fn init(config: &Config) -> Result<()> {
///     SETTINGS.set(Settings { gain: config.get_f64("gain")?.unwrap_or(1.0) });
///     Ok(())
/// }
///
/// fn process(mut batch: Vec<Reading>) -> Result<Vec<Reading>> {
///     let settings = SETTINGS.get()?; // Err("not-initialised") if init never ran
///     for r in &mut batch {
///         for (_, v) in &mut r.fields { *v *= settings.gain; }
///     }
///     Ok(batch)
/// }
/// # init(&Config::new().with("gain", 2.0)).unwrap();
/// # assert_eq!(process(vec![Reading::new("s", 0).with_field("x", 1.5)]).unwrap()[0].field("x"), Some(3.0));
/// ```
///
/// Access goes through a guard ([`GlobalRef`], like `RefCell::borrow_mut`):
/// borrowing a cell that is already borrowed panics instead of aliasing.
///
/// **Native tests.** Off wasm32 (`cargo test`), every thread sees its own
/// value, the way every wasm instance has its own memory, so tests running in
/// parallel do not share processor statics; [`testing::reset`] and
/// [`testing::restart`] empty the current thread's cells.
///
/// [`testing::reset`]: crate::testing::reset
/// [`testing::restart`]: crate::testing::restart
pub struct Global<T> {
    inner: imp::Cell<T>,
}

impl<T> Global<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Global {
            inner: imp::Cell::new(),
        }
    }

    /// Store `value`, replacing (and returning) the previous one.
    ///
    /// # Panics
    /// If the cell is borrowed.
    pub fn set(&self, value: T) -> Option<T> {
        self.inner.replace(Some(value))
    }

    /// Empty the cell, returning its value.
    ///
    /// # Panics
    /// If the cell is borrowed.
    pub fn take(&self) -> Option<T> {
        self.inner.replace(None)
    }

    /// Whether the cell holds a value.
    pub fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    /// Borrow the value, or fail with code `"not-initialised"` when the cell
    /// is empty (typically: `process` without a successful `init`).
    ///
    /// # Panics
    /// If the cell is already borrowed.
    pub fn get(&self) -> Result<GlobalRef<'_, T>> {
        match self.inner.borrow() {
            Some(guard) => Ok(GlobalRef { guard }),
            None => Err(Error::new(
                Error::NOT_INITIALISED,
                "processor state used before a successful init",
            )),
        }
    }

    /// Borrow the value, storing `init()` first if the cell is empty.
    ///
    /// # Panics
    /// If the cell is already borrowed.
    pub fn get_or_insert_with(&self, init: impl FnOnce() -> T) -> GlobalRef<'_, T> {
        if !self.inner.is_set() {
            self.inner.replace(Some(init()));
        }
        GlobalRef {
            guard: self.inner.borrow().expect("just filled"),
        }
    }
}

impl<T> Default for Global<T> {
    fn default() -> Self {
        Global::new()
    }
}

/// A borrow of a [`Global`]'s value; the cell is released when it drops.
pub struct GlobalRef<'a, T> {
    guard: imp::Guard<'a, T>,
}

impl<T> Deref for GlobalRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.value()
    }
}

impl<T> DerefMut for GlobalRef<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.value_mut()
    }
}

/// wasm32: a plain cell. `wasm32-unknown-unknown` without the `atomics`
/// feature has no threads, and the host never calls into an instance
/// re-entrantly, so sharing the cell between "threads" cannot happen.
#[cfg(target_arch = "wasm32")]
mod imp {
    use core::cell::{Cell as StdCell, UnsafeCell};

    #[cfg(target_feature = "atomics")]
    compile_error!(
        "wasmgate processors are single-threaded: build without the `atomics` target feature"
    );

    pub struct Cell<T> {
        value: UnsafeCell<Option<T>>,
        borrowed: StdCell<bool>,
    }

    // SAFETY: single-threaded target (see the module comment); the `borrowed`
    // flag rules out aliasing `&mut` within that one thread.
    unsafe impl<T> Sync for Cell<T> {}

    impl<T> Cell<T> {
        pub const fn new() -> Self {
            Cell {
                value: UnsafeCell::new(None),
                borrowed: StdCell::new(false),
            }
        }

        pub fn replace(&self, value: Option<T>) -> Option<T> {
            assert!(!self.borrowed.get(), "Global is borrowed");
            // SAFETY: not borrowed, single thread.
            unsafe { core::mem::replace(&mut *self.value.get(), value) }
        }

        pub fn is_set(&self) -> bool {
            assert!(!self.borrowed.get(), "Global is borrowed");
            // SAFETY: not borrowed, single thread.
            unsafe { (*self.value.get()).is_some() }
        }

        pub fn borrow(&self) -> Option<Guard<'_, T>> {
            assert!(!self.borrowed.get(), "Global is already borrowed");
            // SAFETY: not borrowed, single thread; the flag keeps it exclusive.
            let value = unsafe { (*self.value.get()).as_mut()? };
            self.borrowed.set(true);
            Some(Guard { cell: self, value })
        }
    }

    pub struct Guard<'a, T> {
        cell: &'a Cell<T>,
        value: &'a mut T,
    }

    impl<T> Guard<'_, T> {
        pub fn value(&self) -> &T {
            self.value
        }
        pub fn value_mut(&mut self) -> &mut T {
            self.value
        }
    }

    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            self.cell.borrowed.set(false);
        }
    }
}

/// Native (tests): one value per thread and instance generation, so parallel
/// tests do not share statics and `testing::restart` empties them.
#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::sync::Mutex;
    use std::thread::{self, ThreadId};
    use std::vec::Vec;

    struct Slot<T> {
        thread: ThreadId,
        generation: u64,
        /// `None` while borrowed.
        value: Option<T>,
        borrowed: bool,
    }

    pub struct Cell<T> {
        slots: Mutex<Vec<Slot<T>>>,
    }

    // SAFETY: a slot's value is only ever touched (moved, borrowed, dropped)
    // by the thread recorded in it, so `T` never crosses threads even though
    // the `Vec` holding the slots is shared.
    unsafe impl<T> Sync for Cell<T> {}

    impl<T> Cell<T> {
        pub const fn new() -> Self {
            Cell {
                slots: Mutex::new(Vec::new()),
            }
        }

        /// Run `f` on this thread's slot (created empty if needed).
        fn with_slot<R>(&self, f: impl FnOnce(&mut Slot<T>) -> R) -> R {
            let me = thread::current().id();
            let generation = crate::testing::generation();
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let i = match slots.iter().position(|s| s.thread == me) {
                Some(i) => i,
                None => {
                    slots.push(Slot {
                        thread: me,
                        generation,
                        value: None,
                        borrowed: false,
                    });
                    slots.len() - 1
                }
            };
            let slot = &mut slots[i];
            if slot.generation != generation {
                assert!(!slot.borrowed, "Global borrowed across testing::restart");
                slot.generation = generation;
                slot.value = None;
            }
            f(slot)
        }

        pub fn replace(&self, value: Option<T>) -> Option<T> {
            self.with_slot(|s| {
                assert!(!s.borrowed, "Global is borrowed");
                core::mem::replace(&mut s.value, value)
            })
        }

        pub fn is_set(&self) -> bool {
            self.with_slot(|s| {
                assert!(!s.borrowed, "Global is borrowed");
                s.value.is_some()
            })
        }

        pub fn borrow(&self) -> Option<Guard<'_, T>> {
            let value = self.with_slot(|s| {
                assert!(!s.borrowed, "Global is already borrowed");
                let v = s.value.take()?;
                s.borrowed = true;
                Some(v)
            })?;
            Some(Guard {
                cell: self,
                value: Some(value),
            })
        }
    }

    pub struct Guard<'a, T> {
        cell: &'a Cell<T>,
        /// Always `Some` until dropped.
        value: Option<T>,
    }

    impl<T> Guard<'_, T> {
        pub fn value(&self) -> &T {
            self.value.as_ref().expect("guard holds the value")
        }
        pub fn value_mut(&mut self) -> &mut T {
            self.value.as_mut().expect("guard holds the value")
        }
    }

    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            let value = self.value.take();
            self.cell.with_slot(|s| {
                s.borrowed = false;
                s.value = value;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    static CELL: Global<u32> = Global::new();

    #[test]
    fn set_get_take() {
        testing::reset();
        assert!(!CELL.is_set());
        assert_eq!(CELL.get().err().unwrap().code, "not-initialised");
        assert_eq!(CELL.set(1), None);
        *CELL.get().unwrap() += 1;
        assert_eq!(*CELL.get().unwrap(), 2);
        assert_eq!(CELL.take(), Some(2));
        assert_eq!(*CELL.get_or_insert_with(|| 7), 7);
    }

    #[test]
    fn restart_empties_cells() {
        testing::reset();
        CELL.set(5);
        testing::restart();
        assert!(!CELL.is_set());
    }

    #[test]
    fn threads_see_their_own_values() {
        testing::reset();
        CELL.set(10);
        std::thread::spawn(|| {
            assert!(!CELL.is_set());
            CELL.set(20);
        })
        .join()
        .unwrap();
        assert_eq!(*CELL.get().unwrap(), 10);
    }

    #[test]
    #[should_panic(expected = "already borrowed")]
    fn double_borrow_panics() {
        testing::reset();
        CELL.set(1);
        let _a = CELL.get().unwrap();
        let _b = CELL.get();
    }
}
