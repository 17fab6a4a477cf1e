//! `bizon_id` values.
//!
//! Bizon stamps every record with a random UUIDv4. Drawing 122 random bits per
//! record costs more than the rest of the record's trip, so each run draws one
//! random 128-bit seed and adds a counter: the ids keep the UUIDv4 text layout,
//! are unique within a run by construction and across runs with the odds of
//! random UUIDs. Bizon writes `uuid4().hex`: 32 lowercase hex digits, no dashes.

use uuid::Builder;

pub struct BizonIdGenerator {
    seed: u128,
    counter: u64,
}

impl BizonIdGenerator {
    pub fn new() -> Self {
        let seed = (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(..));
        Self { seed, counter: 0 }
    }

    /// The next id, written as 32 ASCII hex digits.
    pub fn next_id(&mut self) -> [u8; 32] {
        self.counter += 1;
        let bits = self.seed.wrapping_add(u128::from(self.counter));
        let uuid = Builder::from_random_bytes(bits.to_be_bytes()).into_uuid();
        let mut text = [0u8; 32];
        uuid.simple().encode_lower(&mut text);
        text
    }
}

impl Default for BizonIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_uuid_v4_text() {
        let mut ids = BizonIdGenerator::new();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        let text = std::str::from_utf8(&a).unwrap();
        let parsed = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}
