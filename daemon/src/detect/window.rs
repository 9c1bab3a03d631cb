//! The fixed-capacity ring buffer behind `gaussian` and `mad`.

/// The last `capacity` values of a series, oldest first when iterated.
///
/// Storage is allocated once, at construction; pushing never allocates.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ring {
    /// The values; `len() < capacity` until the ring is full.
    buf: Vec<f64>,
    /// Once full: the index of the oldest value (the next to be replaced).
    head: usize,
    /// Maximum number of values, at least 1.
    capacity: usize,
}

impl Ring {
    /// An empty ring for `capacity` values (at least 1).
    pub(super) fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(1);
        Ring {
            buf: Vec::with_capacity(capacity),
            head: 0,
            capacity,
        }
    }

    /// A ring for `capacity` values holding the newest of `values` (given
    /// oldest first).
    pub(super) fn from_values(capacity: usize, values: &[f64]) -> Ring {
        let mut ring = Ring::new(capacity);
        let skip = values.len().saturating_sub(ring.capacity);
        for &v in &values[skip..] {
            ring.push(v);
        }
        ring
    }

    /// Append `value`, replacing the oldest value once full.
    pub(super) fn push(&mut self, value: f64) {
        if self.buf.len() < self.capacity {
            self.buf.push(value);
        } else if let Some(slot) = self.buf.get_mut(self.head) {
            *slot = value;
            self.head = (self.head + 1) % self.capacity;
        }
    }

    /// Number of values held.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the ring holds `capacity` values.
    pub(super) fn is_full(&self) -> bool {
        self.buf.len() == self.capacity
    }

    /// The values, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        let (newer, older) = self.buf.split_at(self.head.min(self.buf.len()));
        older.iter().chain(newer).copied()
    }

    /// The values, oldest first, as a new vector (for saving).
    pub(super) fn to_vec(&self) -> Vec<f64> {
        self.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_in_order() {
        let mut r = Ring::new(3);
        assert_eq!(r.to_vec(), Vec::<f64>::new());
        for v in 1..=2 {
            r.push(v as f64);
        }
        assert!(!r.is_full());
        assert_eq!(r.to_vec(), [1.0, 2.0]);
        for v in 3..=7 {
            r.push(v as f64);
        }
        assert!(r.is_full());
        assert_eq!(r.len(), 3);
        assert_eq!(r.to_vec(), [5.0, 6.0, 7.0]);
        assert_eq!(r.buf, [7.0, 5.0, 6.0]);
    }

    #[test]
    fn from_values_truncates_to_the_newest() {
        let r = Ring::from_values(2, &[1.0, 2.0, 3.0]);
        assert_eq!(r.to_vec(), [2.0, 3.0]);
        let r = Ring::from_values(5, &[1.0, 2.0, 3.0]);
        assert_eq!(r.to_vec(), [1.0, 2.0, 3.0]);
        assert!(!r.is_full());
        assert_eq!(Ring::new(0).capacity, 1);
    }
}
